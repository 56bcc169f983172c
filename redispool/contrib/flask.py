"""Flask integration: one redispool pool per app, configured from ``app.config``.

::

    from redispool.contrib.flask import FlaskRedisPool

    redis_pool = FlaskRedisPool()

    def create_app():
        app = Flask(__name__)
        app.config["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        app.config["REDISPOOL_MAX_CONNECTIONS"] = 20
        redis_pool.init_app(app)
        app.add_url_rule("/healthz", view_func=redis_pool.healthz)
        return app

    # in a view
    redis_pool.client.incr("hits")

Configuration keys (read once, by :meth:`FlaskRedisPool.init_app`):

- ``REDIS_URL``: where to connect (default ``redis://localhost:6379/0``). redispool
  options may also sit in its query string; those win over the keys below.
- ``REDISPOOL_<OPTION>``: any pool option in upper case, e.g. ``REDISPOOL_MAX_CONNECTIONS``,
  ``REDISPOOL_TIMEOUT``, ``REDISPOOL_MIN_IDLE``, ``REDISPOOL_NAME`` (see the README's options
  table). An unknown ``REDISPOOL_*`` key raises ``ValueError`` so a typo is not ignored.
- ``REDISPOOL_CONNECTION_KWARGS``: a dict of extra redis-py connection keywords, such as
  ``{"decode_responses": True, "client_name": "web"}``.

The pool lives as long as the app: requests borrow and return connections through
:attr:`FlaskRedisPool.client` and nothing is closed per request or per app context. It is
closed when the interpreter exits. It is created in :meth:`init_app`, so under gunicorn
``--preload`` it exists before the fork; each worker then starts with a fresh pool state of
its own (see the README's gunicorn section).
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, current_app, has_app_context

from .._client import Client
from .._health import ping
from .._options import OPTION_NAMES
from .._pool import ConnectionPool

__all__ = ["DEFAULT_URL", "FlaskRedisPool", "PoolState"]

log = logging.getLogger("redispool")

DEFAULT_URL = "redis://localhost:6379/0"
_CONNECTION_KWARGS = "CONNECTION_KWARGS"


@dataclasses.dataclass(frozen=True)
class PoolState:
    """What :meth:`FlaskRedisPool.init_app` stores in ``app.extensions``."""

    pool: ConnectionPool
    client: redis.Redis
    extension: FlaskRedisPool


class FlaskRedisPool:
    """A redispool pool and client per Flask app, app-factory friendly.

    ``FlaskRedisPool(app)`` initialises at once; ``FlaskRedisPool()`` plus
    ``init_app(app)`` later serves any number of apps, each with its own pool.
    ``pool_options`` are defaults that ``REDISPOOL_*`` config keys override. For a
    second Redis in the same app, give a second instance other keys, e.g.
    ``FlaskRedisPool(url_key="CACHE_URL", config_prefix="CACHE_POOL_", extension_key="cache_pool")``.
    ``health_timeout`` bounds the :meth:`healthz` view's check, in seconds.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        url_key: str = "REDIS_URL",
        config_prefix: str = "REDISPOOL_",
        extension_key: str = "redispool",
        health_timeout: float = 1.0,
        **pool_options: Any,
    ) -> None:
        self.health_timeout = health_timeout
        self.url_key = url_key
        self.config_prefix = config_prefix
        self.extension_key = extension_key
        self.pool_options = pool_options
        self._app = app  # used outside an app context when given here
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the app's pool and client from ``app.config`` and register them.

        Raises ``RuntimeError`` if this extension was already initialised on ``app``,
        ``ValueError``/``TypeError`` for a bad or unknown ``REDISPOOL_*`` key. Connects
        lazily: an unreachable Redis does not stop the app from starting.
        """
        if self.extension_key in app.extensions:
            raise RuntimeError(f"{self.extension_key!r} is already initialised on app {app.name!r}")
        url = app.config.get(self.url_key) or DEFAULT_URL
        kwargs = {**self.pool_options, **self._config_options(app.config)}
        pool = ConnectionPool.from_url(url, **kwargs)
        state = PoolState(pool=pool, client=Client(connection_pool=pool), extension=self)
        app.extensions[self.extension_key] = state
        atexit.register(_close_at_exit, weakref.ref(pool))
        log.debug("Flask app %r uses pool %s", app.name, pool.name)

    def _config_options(self, config: Mapping[str, Any]) -> dict[str, Any]:
        prefix = self.config_prefix
        options: dict[str, Any] = {}
        for key, value in config.items():
            if not key.startswith(prefix) or key == self.url_key:
                continue
            name = key[len(prefix) :]
            if name == _CONNECTION_KWARGS:
                if not isinstance(value, Mapping):
                    raise TypeError(f"{key} must be a dict, not {type(value).__name__}")
                options = {**value, **options}  # explicit option keys win
            elif name.lower() in OPTION_NAMES:
                options[name.lower()] = value
            else:
                known = [prefix + o.upper() for o in sorted(OPTION_NAMES)] + [prefix + _CONNECTION_KWARGS]
                hint = difflib.get_close_matches(key, known, n=1)
                raise ValueError(
                    f"unknown config key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                )
        return options

    # ------------------------------------------------------------------ access

    def state(self, app: Flask | None = None) -> PoolState:
        """The pool and client of ``app``, else of the current app.

        Raises ``RuntimeError`` outside an app context (unless the extension was built
        with ``FlaskRedisPool(app)``) and for an app :meth:`init_app` never saw.
        """
        if app is None:
            if has_app_context():
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            elif self._app is not None:
                app = self._app
            else:
                raise RuntimeError(
                    "working outside of an application context: use `with app.app_context():` "
                    "or pass app= explicitly"
                )
        assert app is not None
        state = app.extensions.get(self.extension_key)
        if not isinstance(state, PoolState):
            raise RuntimeError(f"{self.extension_key!r} is not initialised on app {app.name!r}")
        return state

    @property
    def pool(self) -> ConnectionPool:
        """The current app's :class:`redispool.ConnectionPool`."""
        return self.state().pool

    @property
    def client(self) -> redis.Redis:
        """The current app's client: a ``redispool.Client`` when available, else a
        ``redis.Redis`` on the app's pool. Thread-safe; share it, do not close it."""
        return self.state().client

    # ------------------------------------------------------------------ health

    def health(self, timeout: float = 1.0, *, app: Flask | None = None) -> dict[str, Any]:
        """PING Redis through the pool and report it with the pool's stats. Never raises.

        ``timeout`` bounds borrowing and the PING together. Returns ``{"status": "ok" or
        "error", "latency_ms": ..., "pool": pool.stats()}`` plus ``"error"`` (the
        exception's class and message, which never carry credentials) on failure.
        """
        pool = self.state(app).pool
        started = time.monotonic()
        deadline = started + timeout
        report: dict[str, Any] = {"status": "ok"}
        try:
            with pool.connection(timeout=timeout) as conn:
                ping(conn, max(deadline - time.monotonic(), 0.001))
        except Exception as error:  # a health check reports failures, it does not raise them
            report = {"status": "error", "error": f"{type(error).__name__}: {error}"}
        report["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        report["pool"] = pool.stats()
        return report

    def healthz(self) -> tuple[dict[str, Any], int]:
        """A view for ``app.add_url_rule("/healthz", view_func=ext.healthz)``: the
        :meth:`health` report as JSON, with status 200 when Redis answers, else 503."""
        report = self.health(self.health_timeout)
        return report, 200 if report["status"] == "ok" else 503


def _close_at_exit(pool_ref: weakref.ref[ConnectionPool]) -> None:
    # A weak reference, so the atexit registry never keeps a discarded app's pool alive.
    pool = pool_ref()
    if pool is not None:
        pool.close()
