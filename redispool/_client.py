"""The façade: redis-py's whole command API over a redispool pool, one connection per command.

:class:`Client` is a ``redis.Redis``: every command method, scripts, ``lock()``,
``pubsub()``, ``monitor()``, response decoding and RESP2/RESP3 come from redis-py
unchanged. What it changes is how a command meets a connection:

* a plain command borrows a connection for exactly one round trip and gives it back;
* ``pipeline()`` and ``transaction()`` hold one connection for the whole execute, and
  ``pinned()`` holds one for a ``with`` block, handing it back clean;
* a blocking command (``BLPOP``, ``XREAD BLOCK``, ``WAIT``, ...) may stay silent for its
  block time on top of ``socket_timeout`` before the read times out;
* a read-only command that fails with a connection or timeout error is run again on a
  fresh connection (see :class:`~redispool.RetryPolicy`); nothing else is repeated.

redis-py's own per-connection ``Retry`` repeats *every* command, writes included, on the
same connection object. The client therefore runs plain commands without it, and refuses
it (``retry_on_timeout``, ``retry_on_error``) on pools it builds itself. A pool you build
and pass in keeps whatever connection-level retry you gave it, and redis-py applies that
to pipelines.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis
from redis.client import Pipeline
from redis.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _commands, _lean, _retry
from ._health import socket_of
from ._pool import ConnectionPool
from ._retry import RetryPolicy
from ._tracking import inner

__all__ = ["Client", "ClientPipeline"]

_C = TypeVar("_C", bound="Client")

_BLOCKING = _commands.BLOCKING

# States of a pinned client; None on every other client.
_HELD = "held"
_LOST = "lost"
_RELEASED = "released"

# redis-py's connection-level retries: they repeat writes, so an owned pool never gets them.
_CONNECTION_RETRIES = ("retry_on_timeout", "retry_on_error")


class Client(redis.Redis):
    """A thread-safe Redis client that borrows a pooled connection per command.

    Build it from a URL (``Client.from_url(url, max_connections=5, timeout=2.0)``), from
    connection and pool keywords (``Client(host=..., port=..., max_connections=...)``, the
    keywords of :class:`redispool.ConnectionPool` plus redis-py's ``unix_socket_path``
    and ``ssl``), or around a pool (``Client(connection_pool=pool)``). Several clients
    may share one pool; a client closes only a pool it built (``close()``, ``with``,
    garbage collection), and a closed pool reopens connections on demand, as in redis-py.

    ``retry`` is ``True`` (the default :class:`RetryPolicy`), a :class:`RetryPolicy`, a
    ``tenacity.Retrying``, or ``None``/``False`` to never retry. Errors reaching the
    caller are redis-py's own (``redis.ConnectionError``, ``redis.TimeoutError``, ...) or
    the pool's (:class:`PoolTimeout` when no connection frees up in time).
    """

    def __init__(
        self,
        *,
        connection_pool: ConnectionPool | None = None,
        retry: Any = True,
        single_connection_client: bool = False,
        **kwargs: Any,
    ) -> None:
        self._retry_policy = _retry.coerce(retry)
        self._pin: str | None = None
        owned = connection_pool is None
        if connection_pool is None:
            _refuse_connection_retries(kwargs)
            connection_pool = ConnectionPool(**_pool_keywords(kwargs))
        elif kwargs:
            raise TypeError(
                f"connection keywords ({', '.join(sorted(kwargs))}) cannot be combined with "
                "connection_pool: give them to the pool"
            )
        elif not isinstance(connection_pool, ConnectionPool):
            raise TypeError(
                f"connection_pool must be a redispool.ConnectionPool, not {type(connection_pool).__name__}; "
                "redispool.ConnectionPool takes the same keywords and from_url()"
            )
        try:
            super().__init__(
                connection_pool=connection_pool, single_connection_client=single_connection_client
            )
        except BaseException:
            if owned:  # e.g. single_connection_client could not connect: leave nothing behind
                connection_pool.shutdown()
            raise
        self.auto_close_connection_pool = owned
        if not hasattr(self, "single_connection_lock"):  # redis-py < 5.0.2 has none
            self.single_connection_lock = threading.RLock()
        # Decided once: may plain commands skip redis-py's layers? (see _lean)
        refusal = _lean.eligible(self, connection_pool, Client)
        self._lean_refusal = "single_connection_client" if single_connection_client else refusal
        self._lean = self._lean_refusal is None

    @classmethod
    def from_url(cls: type[_C], url: str, **kwargs: Any) -> _C:
        """Build a client and its own pool from a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Keywords and query parameters are those of :meth:`ConnectionPool.from_url`; ``retry``
        and ``single_connection_client`` go to the client. The pool is closed with the client.
        """
        policy = _retry.coerce(kwargs.pop("retry", True))
        single = kwargs.pop("single_connection_client", False)
        pool = ConnectionPool.from_url(url, **kwargs)
        try:
            _refuse_connection_retries(pool.connection_kwargs)
            client = cls(connection_pool=pool, retry=policy, single_connection_client=single)
        except BaseException:
            pool.shutdown()
            raise
        client.auto_close_connection_pool = True
        return client

    @property
    def pool(self) -> ConnectionPool:
        """The pool this client borrows from: ``client.pool.connections()``, ``stats()``, ..."""
        return cast(ConnectionPool, self.connection_pool)

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The policy in force, or None when retries are off (always None when pinned)."""
        return self._retry_policy

    # ------------------------------------------------------------------ commands

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command on a borrowed connection; retry it if it is safe to.

        The connection goes back to the pool before this returns or raises; after a
        connection or timeout error it is closed instead. Read-only commands are then
        run again on another connection as the retry policy allows.
        """
        started = time.monotonic()
        try:
            return self._attempt(args, options)
        except (RedisConnectionError, RedisTimeoutError) as error:
            policy = self._retry_policy
            if policy is None or self.connection is not None or not policy.allows(args, error):
                raise
            deadline = _deadline(policy, started, args)
            return policy.run(lambda: self._attempt(args, options), error, deadline)

    # redis-py >= 5.1 routes execute_command through here; keep one implementation.
    _execute_command = execute_command

    def _attempt(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        if self.connection is not None or self._pin is not None:
            return self._attempt_held(args, options)
        pool: Any = self.connection_pool
        try:
            lean = _lean.ROUTES[args[0]] if self._lean else _lean.FULL
        except (KeyError, TypeError):
            lean = _lean.route(args[0])
        conn = pool.get_connection()
        try:
            if lean and conn._sock is not None:
                return _lean.run(self, conn, args, options, lean)
            return self._send_command_parse_response(conn, args[0], *args, **options)
        except (RedisConnectionError, RedisTimeoutError):
            # redis-py usually closed it already; make sure it is never pooled half-read.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _attempt_held(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Run on the one connection of a pinned or single-connection client."""
        with self.single_connection_lock:
            conn = self._held_connection()
            try:
                return self._send_command_parse_response(conn, args[0], *args, **options)
            except (RedisConnectionError, RedisTimeoutError):
                conn.disconnect()
                if self._pin is not None:
                    self._pin = _LOST
                raise

    def _held_connection(self) -> Any:
        conn = self.connection
        if self._pin is None:
            return conn  # single_connection_client: reconnects on demand, as in redis-py
        if self._pin == _HELD and conn is not None and socket_of(conn) is not None:
            return conn
        if self._pin == _HELD and conn is not None:
            self._pin = _LOST  # closed by a pipeline error or by the server
        if self._pin == _LOST:
            raise RedisConnectionError(
                "the pinned connection was lost, and its session state (SELECT, WATCH, "
                "CLIENT SETNAME, MULTI) with it; leave the pinned() block and start again"
            )
        raise RedisConnectionError(
            "this pinned client was used after its `with client.pinned()` block ended; use the outer client"
        )

    def _send_command_parse_response(self, conn: Any, command_name: Any, *args: Any, **options: Any) -> Any:
        # One set lookup on the hot path; only blocking commands pay for parsing their args.
        block = _commands.block_seconds(args) if command_name in _BLOCKING else None
        if block is None:
            return super()._send_command_parse_response(  # type: ignore[no-untyped-call]
                conn, command_name, *args, **options
            )
        return _send_blocking(self, conn, command_name, args, options, block)

    # ------------------------------------------------------------------ pinning

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> ClientPipeline:  # type: ignore[override]
        """A pipeline (``transaction=True``: MULTI/EXEC) that holds one connection per execute.

        On a pinned client it runs on the pinned connection. Pipelines are never retried:
        they may hold writes.
        """
        pool: Any = self.connection_pool
        if self._pin is not None:
            pool = _PinnedPool(pool, self._held_connection())
        pipe = _ClientPipeline(pool, self.response_callbacks, transaction, shard_hint)
        pipe._lean = self._lean
        return cast(ClientPipeline, pipe)

    @contextlib.contextmanager
    def pinned(self: _C, timeout: float | None = ...) -> Iterator[_C]:  # type: ignore[assignment]
        """``with client.pinned() as c:`` run every command of the block on one connection.

        For session state: ``SELECT``, ``CLIENT SETNAME``, ``WATCH`` and ``MULTI`` by hand;
        ``c.pipeline()`` uses the same connection. ``timeout`` overrides the pool's acquire
        timeout. Nothing is retried inside (a fresh connection would not have the session):
        if the connection breaks, every later command of ``c`` raises
        ``redis.ConnectionError``. At the end the connection goes back to the pool, which
        undoes ``SELECT``/``WATCH``/``CLIENT SETNAME`` before its next use and closes it if
        it is inside ``MULTI``, subscribed or owes replies. ``c`` is meant for one thread.
        """
        pool = self.pool
        conn = pool.acquire(timeout)  # `...` means the pool's own timeout
        try:
            client = type(self)(connection_pool=pool, retry=None)
            client.response_callbacks = self.response_callbacks
            client.connection = conn
            client._single_connection_client = True
            client._pin = _HELD
        except BaseException:
            pool.release(conn)
            raise
        try:
            yield client
        finally:
            held, client.connection = client.connection, None
            client._pin = _RELEASED
            if held is not None:  # None when the block already called client.close()
                pool.release(held)


class _ClientPipeline(Pipeline):
    """redis-py's pipeline, made aware of blocking commands' block time.

    Without MULTI, on a client that takes the lean path, plain commands are packed and
    read by :func:`redispool._lean.run_pipeline`; anything else runs as in redis-py.
    """

    _lean = False

    def _send_command_parse_response(self, conn: Any, command_name: Any, *args: Any, **options: Any) -> Any:
        # Commands run at once while WATCHing (pipe.get(...) before pipe.multi()).
        block = _commands.block_seconds(args)
        if block is None:
            return super()._send_command_parse_response(  # type: ignore[no-untyped-call]
                conn, command_name, *args, **options
            )
        return _send_blocking(self, conn, command_name, args, options, block)

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        # Inside MULTI blocking commands do not block, so only plain pipelines need this.
        block = _total_block(args for args, _options in commands)
        if block is None:
            if self._lean and connection._sock is not None:
                result = _lean.run_pipeline(self, connection, commands, raise_on_error)
                if result is not _lean.NOT_SERVED:
                    return result
            return super()._execute_pipeline(connection, commands, raise_on_error)  # type: ignore[no-untyped-call]
        with _read_timeout_extended(connection, block):
            return super()._execute_pipeline(connection, commands, raise_on_error)  # type: ignore[no-untyped-call]


_ClientPipeline.__name__ = _ClientPipeline.__qualname__ = "ClientPipeline"

if TYPE_CHECKING:

    class ClientPipeline:
        """What type checkers see: every queued command returns the pipeline, so
        ``pipe.incr("n").incr("n")`` checks. (redis-py types its pipeline's commands
        with the client's return types.) At run time this is ``_ClientPipeline``."""

        command_stack: list[tuple[tuple[Any, ...], dict[str, Any]]]
        transaction: bool
        watching: bool

        def __enter__(self) -> ClientPipeline: ...
        def __exit__(self, *exc_info: object) -> None: ...
        def __len__(self) -> int: ...
        def __bool__(self) -> bool: ...
        def execute(self, raise_on_error: bool = True) -> list[Any]: ...
        def multi(self) -> None: ...
        def watch(self, *names: Any) -> bool: ...
        def unwatch(self) -> bool: ...
        def reset(self) -> None: ...
        def discard(self) -> None: ...
        def execute_command(self, *args: Any, **options: Any) -> Any: ...
        def __getattr__(self, name: str) -> Callable[..., ClientPipeline]: ...

else:
    ClientPipeline = _ClientPipeline


class _PinnedPool:
    """The pool a pinned client's pipelines see: always the pinned connection, never returned."""

    def __init__(self, pool: ConnectionPool, conn: Any) -> None:
        self._pool = pool
        self._conn = conn

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn

    def release(self, connection: Any) -> None:
        pass  # the pinned() block returns it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _send_blocking(
    client: Any, conn: Any, command_name: Any, args: Sequence[Any], options: dict[str, Any], block: float
) -> Any:
    conn.send_command(*args, **options)  # connects first if needed, which sets the socket timeout
    with _read_timeout_extended(conn, block):
        return client.parse_response(conn, command_name, **options)


@contextlib.contextmanager
def _read_timeout_extended(conn: Any, block: float) -> Iterator[None]:
    """Let the server stay silent ``block`` seconds longer than ``socket_timeout`` allows.

    ``math.inf`` (a block time of 0) removes the read timeout. The connection's own timeout
    is restored afterwards unless the socket was replaced or closed meanwhile. Without a
    ``socket_timeout`` there is nothing to extend.
    """
    base = getattr(inner(conn), "socket_timeout", None)
    sock = socket_of(conn)
    if base is None or sock is None:
        yield
        return
    sock.settimeout(None if math.isinf(block) else base + block)
    try:
        yield
    finally:
        if socket_of(conn) is sock:
            with contextlib.suppress(OSError):
                sock.settimeout(base)


def _total_block(commands: Iterable[Sequence[Any]]) -> float | None:
    total: float | None = None
    for args in commands:
        block = _commands.block_seconds(args)
        if block is not None:
            total = block if total is None else total + block
    return total


def _deadline(policy: RetryPolicy, started: float, args: Sequence[Any]) -> float | None:
    """When retries must stop: ``deadline`` after the start, plus the block time of a
    blocking read; a read that blocks forever counts from its failure."""
    if policy.deadline is None:
        return None
    block = _commands.block_seconds(args) or 0.0
    if math.isinf(block):
        return time.monotonic() + policy.deadline
    return started + policy.deadline + block


def _pool_keywords(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Translate redis.Redis's ``unix_socket_path`` and ``ssl`` into pool keywords."""
    keywords = dict(kwargs)
    path = keywords.pop("unix_socket_path", None)
    ssl = keywords.pop("ssl", False)
    if path is not None:
        keywords["path"] = path
        keywords.setdefault("connection_class", UnixDomainSocketConnection)
    elif ssl:
        keywords.setdefault("connection_class", SSLConnection)
    return keywords


def _refuse_connection_retries(kwargs: Mapping[str, Any]) -> None:
    for name in _CONNECTION_RETRIES:
        if kwargs.get(name):
            raise TypeError(
                f"{name} turns on redis-py's connection-level retry, which repeats writes "
                "such as INCR after a lost reply; Client retries read-only commands itself "
                "(retry=). To have it anyway, build redispool.ConnectionPool(..., "
                f"{name}=...) and pass connection_pool="
            )


Client.__module__ = "redispool"
