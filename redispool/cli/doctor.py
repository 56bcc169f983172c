"""``redispool doctor URL``: can this process reach Redis, and do its pool settings fit?

It opens one plain connection (TLS for ``rediss://``, AUTH from the URL), measures the
round trip with a few PINGs, reads INFO and CONFIG, and checks the pool options (from
the URL's query string, overridden by flags) against what the server does:

* server ``timeout`` shorter than the pool's ``max_idle``: the server closes idle
  connections first, so the pool hands out dead ones and pays a reconnect;
* ``tcp-keepalive 0``: the server never notices clients that vanished;
* ``maxclients`` headroom smaller than ``max_connections`` times the process count;
* a round trip slower than half of ``ping_timeout``: health PINGs would time out;
* slow commands (``SLOWLOG GET``, ``INFO commandstats``, see ``slow.py``) that hold
  connections long enough to need more of them than ``max_connections``.

It also shows the *effective* connection settings: what a connection built by the pool
really uses (redis-py 8 defaults ``socket_timeout`` to 5 s, 5.x to none), read from a
connection object the pool's class builds from its kwargs, never connected.

It only reads (PING, INFO, CONFIG GET, SLOWLOG GET); it never writes to the server.
``CONFIG`` and ``SLOWLOG`` may be renamed or forbidden by ACL: that is reported and the
check skipped, not an error.
Unreachable servers and failed AUTH raise :class:`DoctorFailure` with one sentence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import redispool

from .._options import PoolOptions
from . import slow as _slow
from . import table as _table
from .candidates import split_url

CONNECT_TIMEOUT = 5.0


class DoctorFailure(Exception):
    """The server could not be diagnosed; the message is one sentence for the user."""


@dataclasses.dataclass
class Finding:
    level: str  # "ok", "warn" or "note"
    text: str


@dataclasses.dataclass
class Facts:
    """What the server told us; None where it would not say."""

    connect: float = 0.0
    rtts: list[float] = dataclasses.field(default_factory=list)
    version: str = "unknown"
    mode: str = "unknown"
    connected_clients: int | None = None
    maxclients: int | None = None
    timeout: int | None = None
    tcp_keepalive: int | None = None
    config_error: str | None = None
    load: _slow.Load = dataclasses.field(default_factory=_slow.Load)


# Connection attributes worth showing, as redis-py names them.
EFFECTIVE = (
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "health_check_interval",
    "protocol",
)


def effective_settings(base: str, options: PoolOptions) -> dict[str, Any]:
    """What a connection of this pool really uses, defaults of the installed redis-py included.

    The pool's ``connection_class`` is instantiated from its ``connection_kwargs`` (no
    socket is opened) and its attributes are read.
    """
    pool = redispool.ConnectionPool.from_url(base, **dataclasses.asdict(options))
    try:
        connection = pool.connection_class(**pool.connection_kwargs)
        try:
            return {name: getattr(connection, name, None) for name in EFFECTIVE}
        finally:
            connection.disconnect()
    finally:
        pool.shutdown()


def pool_options(url: str, overrides: Mapping[str, Any]) -> tuple[str, PoolOptions]:
    """The URL without redispool's options, and the options from its query and flags.

    Raises ``ValueError``/``TypeError`` for an invalid option, naming it. The whole URL
    is also checked by building (not connecting) a redispool pool from it.
    """
    base, own = split_url(url)
    own.update({k: v for k, v in overrides.items() if v is not None})
    options = PoolOptions.from_kwargs(own)
    redispool.ConnectionPool.from_url(base, **dataclasses.asdict(options)).shutdown()
    return base, options


def _client(url: str) -> redis.Redis:
    # No retries: doctor reports the first failure instead of hiding it behind backoff.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


@contextlib.contextmanager
def explained(where: str) -> Iterator[None]:
    """Turn connect, AUTH and TLS errors into :class:`DoctorFailure` with one sentence."""
    try:
        yield
    except redis.AuthenticationError as error:
        raise DoctorFailure(
            f"authentication failed at {where}: {_reason(error)}; check the username and password in the URL"
        ) from None
    except redis.ResponseError as error:
        if str(error).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise DoctorFailure(
                f"Redis at {where} refused us: {_reason(error)}; check the credentials in the URL"
            ) from None
        raise DoctorFailure(f"Redis at {where} answered with an error: {_reason(error)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        raise DoctorFailure(f"cannot reach Redis at {where}: {_reason(error)}") from None


def reach(url: str) -> None:
    """PING ``url`` once. Raises :class:`DoctorFailure` when that fails."""
    client = _client(url)
    try:
        with explained(_where(client)):
            client.ping()
    finally:
        client.close()


def examine(url: str, pings: int = 10) -> Facts:
    """Connect and read what the checks need. Raises :class:`DoctorFailure`."""
    client = _client(url)
    facts = Facts()
    try:
        with explained(_where(client)):
            start = time.perf_counter()
            client.ping()
            facts.connect = time.perf_counter() - start
            for _ in range(pings):
                start = time.perf_counter()
                client.ping()
                facts.rtts.append(time.perf_counter() - start)
            server = client.info("server")
            clients = client.info("clients")
            facts.version = str(server.get("redis_version", "unknown"))
            facts.mode = str(server.get("redis_mode", "unknown"))
            facts.connected_clients = _int(clients.get("connected_clients"))
            facts.maxclients = _int(clients.get("maxclients"))
            _read_config(client, facts)
            facts.load = _slow.read(client)
    finally:
        client.close()
    return facts


def _read_config(client: redis.Redis, facts: Facts) -> None:
    config: dict[str, str] = {}
    try:
        # One name per call: CONFIG GET with several names needs Redis 7.
        for name in ("timeout", "tcp-keepalive", "maxclients"):
            config.update(client.config_get(name))  # type: ignore[arg-type]
    except redis.ResponseError as error:
        facts.config_error = str(error)  # CONFIG renamed (managed Redis) or denied by ACL
        return
    facts.timeout = _int(config.get("timeout"))
    facts.tcp_keepalive = _int(config.get("tcp-keepalive"))
    if facts.maxclients is None:
        facts.maxclients = _int(config.get("maxclients"))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _where(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    # redis-py's messages repeat the address ("Error 111 connecting to h:p. Connection refused.").
    return text.rstrip(".")


def check(
    facts: Facts,
    options: PoolOptions,
    processes: int,
    connection_kwargs: Mapping[str, Any],
    effective: Mapping[str, Any] | None = None,
    rate: float | None = None,
) -> list[Finding]:
    """Compare the pool options with what the server does; one finding per topic."""
    findings: list[Finding] = []
    add = findings.append
    if facts.timeout is None:
        add(
            Finding("note", "server timeout unknown (CONFIG GET not allowed); make sure max_idle is below it")
        )
    elif facts.timeout == 0:
        add(Finding("ok", "server timeout is 0: it never closes idle connections"))
    elif options.max_idle is None or options.max_idle >= facts.timeout:
        kept = "forever" if options.max_idle is None else f"up to {options.max_idle:g}s"
        add(
            Finding(
                "warn",
                f"server timeout is {facts.timeout}s but the pool keeps idle connections {kept}: the server "
                f"closes them first and the pool pays a reconnect; set max_idle below {facts.timeout} "
                f"(e.g. max_idle={max(1, int(facts.timeout * 0.8))})",
            )
        )
    else:
        add(Finding("ok", f"max_idle {options.max_idle:g}s is below the server timeout ({facts.timeout}s)"))
    if facts.tcp_keepalive == 0:
        add(
            Finding(
                "warn",
                "server tcp-keepalive is 0: it never notices clients that vanished, whose connections "
                "then count against maxclients; ask for tcp-keepalive 300",
            )
        )
    elif facts.tcp_keepalive is not None:
        add(Finding("ok", f"server tcp-keepalive is {facts.tcp_keepalive}s"))
    if facts.maxclients is not None and facts.connected_clients is not None:
        room = facts.maxclients - facts.connected_clients
        need = options.max_connections * processes
        who = "this pool" if processes == 1 else f"{processes} processes with this pool"
        if need > room:
            add(
                Finding(
                    "warn",
                    f"{who} may open {need} connections but the server has room for {room} more "
                    f"(maxclients {facts.maxclients}, {facts.connected_clients} connected); "
                    "lower max_connections or raise maxclients",
                )
            )
        else:
            add(Finding("ok", f"{who} may open {need} connections; the server has room for {room} more"))
    if facts.rtts:
        worst = max(facts.rtts)
        if worst > options.ping_timeout / 2:
            add(
                Finding(
                    "warn",
                    f"round trips reach {_table.duration(worst)}, more than half of ping_timeout "
                    f"({options.ping_timeout:g}s): health PINGs may time out; raise ping_timeout",
                )
            )
        else:
            add(Finding("ok", f"ping_timeout {options.ping_timeout:g}s is well above the round trip"))
    timeout = (effective or {}).get("socket_timeout", connection_kwargs.get("socket_timeout"))
    if timeout is None:
        add(
            Finding(
                "note",
                "socket_timeout is not set: a command to a server that stops answering waits until TCP "
                "gives up; consider ?socket_timeout=5 in the URL",
            )
        )
    elif "socket_timeout" not in connection_kwargs:
        add(
            Finding(
                "ok",
                f"socket_timeout is {float(timeout):g}s, redis-py {redis.__version__}'s default (the URL "
                "does not set it): a server that stops answering is noticed within that",
            )
        )
    rtt = statistics.median(facts.rtts) if facts.rtts else facts.connect
    for level, text in _slow.sizing(facts.load, options.max_connections, processes, rtt, rate):
        add(Finding(level, text))
    return findings


def run(
    url: str,
    base: str,
    options: PoolOptions,
    processes: int,
    pings: int,
    write: Callable[[str], None],
    rate: float | None = None,
) -> list[Finding]:
    """Diagnose ``base`` (``url`` without redispool's options, from :func:`pool_options`)
    and print the report with ``write``; return the findings.

    Raises :class:`DoctorFailure` when the server cannot be reached or refuses us.
    """
    connection_kwargs = redis.connection.parse_url(base)  # type: ignore[no-untyped-call]
    facts = examine(base, pings)
    tls = base.lower().startswith("rediss://")
    auth = bool(connection_kwargs.get("password") or connection_kwargs.get("username"))
    rtts = facts.rtts or [facts.connect]
    write(f"redispool doctor: {redact_url(url)}")
    rows = [
        [
            "connect",
            f"{_table.duration(facts.connect)} (TLS {_yes(tls)}, AUTH {_yes(auth)})",
        ],
        [
            "round trip",
            f"min {_table.duration(min(rtts))}, median {_table.duration(statistics.median(rtts))}, "
            f"max {_table.duration(max(rtts))} over {len(facts.rtts)} PINGs",
        ],
        ["server", f"Redis {facts.version} ({facts.mode})"],
        ["clients", f"{_show(facts.connected_clients)} connected, maxclients {_show(facts.maxclients)}"],
        [
            "timeout",
            "unknown"
            if facts.timeout is None
            else f"{facts.timeout}s" + (" (never)" if facts.timeout == 0 else ""),
        ],
        ["tcp-keepalive", "unknown" if facts.tcp_keepalive is None else f"{facts.tcp_keepalive}s"],
    ]
    if facts.config_error:
        rows.append(["CONFIG GET", f"not allowed ({facts.config_error})"])
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        write(f"  {name.ljust(width)}  {value}")
    write(
        f"pool settings: max_connections={options.max_connections}, max_idle={_secs(options.max_idle)}, "
        f"ping_after_idle={_secs(options.ping_after_idle)}, ping_timeout={options.ping_timeout:g}s, "
        f"timeout={_secs(options.timeout)}" + (f", {processes} processes" if processes != 1 else "")
    )
    effective = effective_settings(base, options)
    write(
        f"effective connection settings (redis-py {redis.__version__}; * = its default, not in the URL): "
        + ", ".join(_setting(name, value, name in connection_kwargs) for name, value in effective.items())
    )
    for line in _slow.report(facts.load):
        write(line)
    findings = check(facts, options, processes, connection_kwargs, effective, rate)
    for finding in findings:
        write(f"  {finding.level:<4}  {finding.text}")
    warnings = sum(1 for f in findings if f.level == "warn")
    if warnings:
        write(f"verdict: {warnings} warning{'s' if warnings != 1 else ''}; see above")
    else:
        write("verdict: the pool settings fit this server")
    return findings


def _setting(name: str, value: Any, given: bool) -> str:
    if name == "protocol":
        shown = f"RESP{value or 2}"
    elif isinstance(value, bool) or value is None:
        shown = {True: "on", False: "off", None: "none"}[value]
    elif name == "health_check_interval" and not value:
        shown = "off"
    else:
        shown = f"{float(value):g}s" if isinstance(value, (int, float)) else str(value)
    return f"{name}={shown}{'' if given else '*'}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _show(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _secs(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
