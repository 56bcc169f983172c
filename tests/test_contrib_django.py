"""Django's RedisCache and django-redis on redispool.ConnectionPool, against real Redis.

Every test here uses a private redis-server (``cache.clear()`` is FLUSHDB), each test its
own database numbers. Django is configured once for the module, programmatically.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlencode

import django
import pytest
import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

import redispool
from redispool._options import OPTION_NAMES
from redispool._pool import _all_pools
from redispool._server import RedisServer


def session_count(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


urlpatterns = [path("count/", session_count)]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="redispool-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        USE_TZ=True,
    )
    django.setup()

from django.core.cache import caches  # noqa: E402  (needs configured settings)
from django_redis import get_redis_connection  # noqa: E402
from django_redis.pool import ConnectionFactory  # noqa: E402

from tests.support import private_server  # noqa: E402

BUILTIN = "django.core.cache.backends.redis.RedisCache"
DJANGO_REDIS = "django_redis.cache.RedisCache"
PASSWORD = "django-Secret-pw"


class WarmPool(redispool.ConnectionPool):
    """Opens ``min_idle`` connections inside ``from_url``, before django-redis sets the
    password and calls ``reset()``, and remembers them (or the error) for the test."""

    warmed: ClassVar[list[Any]] = []
    warm_error: ClassVar[BaseException | None] = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> WarmPool:  # type: ignore[override]
        pool = super().from_url(url, **kwargs)
        try:
            pool.wait_ready(5)
        except redis.AuthenticationError as error:  # no password yet on a server that wants one
            WarmPool.warm_error = error
        WarmPool.warmed = pool._available_connections
        return pool


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with private_server() as own:
        yield own


def _location(server: RedisServer, db: int, password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{server.port}/{db}"


@contextlib.contextmanager
def cache_settings(caches_setting: dict[str, Any], **more: Any) -> Iterator[None]:
    """Switch CACHES; afterwards shut down every pool created meanwhile."""
    before = set(_all_pools)
    try:
        with override_settings(CACHES=caches_setting, **more):
            yield
    finally:
        for pool in set(_all_pools) - before:
            pool.shutdown()
        ConnectionFactory._pools.clear()  # django-redis caches pools process-wide by URL


def _builtin(location: str, **options: Any) -> dict[str, Any]:
    options = {"pool_class": "redispool.ConnectionPool", **options}
    return {"default": {"BACKEND": BUILTIN, "LOCATION": location, "OPTIONS": options}}


def _builtin_pool() -> redispool.ConnectionPool:
    pool = caches["default"]._cache.get_client(write=True).connection_pool
    assert type(pool) is redispool.ConnectionPool
    return pool


def _hammer(operation: Callable[[int, int], None], threads: int = 8, rounds: int = 40) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(n: int) -> None:
        start.wait()
        for i in range(rounds):
            try:
                operation(n, i)
            except BaseException as error:
                errors.append(error)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []


def test_builtin_redis_cache_api(server: RedisServer) -> None:
    raw = redis.Redis(port=server.port, db=3)
    bystander = redis.Redis(port=server.port, db=4)
    bystander.set("bystander", "stays")
    with cache_settings(_builtin(_location(server, 3), max_connections=4, timeout=5)):
        cache = caches["default"]
        pool = _builtin_pool()
        assert pool.options.max_connections == 4 and pool.options.timeout == 5

        assert cache.get("missing") is None and cache.get("missing", "fallback") == "fallback"
        cache.set("a", {"x": [1, 2]})
        assert cache.get("a") == {"x": [1, 2]}
        assert cache.add("a", "other") is False and cache.get("a") == {"x": [1, 2]}
        assert cache.add("b", 2) is True
        assert cache.has_key("b") and not cache.has_key("nope")
        assert cache.set_many({"m1": 1, "m2": "two"}) == []
        assert cache.get_many(["m1", "m2", "m3"]) == {"m1": 1, "m2": "two"}
        assert cache.incr("b") == 3 and cache.incr("b", 10) == 13 and cache.decr("b", 3) == 10
        with pytest.raises(ValueError):
            cache.incr("nope")
        assert cache.delete("b") is True and cache.delete("b") is False
        cache.delete_many(["m1", "m2"])
        assert cache.get_many(["m1", "m2"]) == {}
        assert cache.get_or_set("computed", lambda: "value") == "value"
        assert cache.get_or_set("computed", lambda: "ignored") == "value"

        # Timeouts are real TTLs on the server.
        cache.set("t", 1, timeout=100)
        assert 0 < raw.ttl(cache.make_key("t")) <= 100
        cache.set("forever", 1, timeout=None)
        assert raw.ttl(cache.make_key("forever")) == -1
        cache.set("default", 1)
        assert 0 < raw.ttl(cache.make_key("default")) <= 300
        cache.set("gone", 1, timeout=0)
        assert cache.get("gone") is None
        assert cache.touch("t", None) is True and raw.ttl(cache.make_key("t")) == -1
        assert cache.touch("forever", 50) is True and 0 < raw.ttl(cache.make_key("forever")) <= 50
        assert cache.touch("nope", 10) is False

        # Versions.
        cache.set("v", "one", version=1)
        cache.set("v", "two", version=2)
        assert cache.get("v") == "one" and cache.get("v", version=2) == "two"
        assert cache.incr_version("v", version=2) == 3
        assert cache.get("v", version=3) == "two" and cache.get("v", version=2) is None

        # Many threads through a pool of 4.
        def operation(n: int, i: int) -> None:
            cache.set(f"thread:{n}", i)
            assert cache.get(f"thread:{n}") == i
            cache.incr("b2") if cache.has_key("b2") else cache.add("b2", 1)

        _hammer(operation)
        stats = pool.stats()
        assert stats["size"] <= 4 and stats["in_use"] == 0 and stats["timeouts"] == 0
        assert stats["borrows"] == stats["returns"]

        # clear() is FLUSHDB of this cache's database only.
        assert cache.clear() is True
        assert raw.dbsize() == 0
    assert bystander.get("bystander") == b"stays"


def test_sessions_on_the_cache_backend(server: RedisServer) -> None:
    raw = redis.Redis(port=server.port, db=5)
    with cache_settings(_builtin(_location(server, 5), max_connections=2)):
        from django.contrib.sessions.backends.cache import SessionStore

        session = SessionStore()
        session["user"] = 42
        session.save()
        key = session.session_key
        assert key and raw.exists(caches["default"].make_key(session.cache_key))
        loaded = SessionStore(session_key=key)
        assert loaded["user"] == 42
        loaded.cycle_key()
        assert loaded.session_key != key
        assert not SessionStore().exists(key)
        assert SessionStore(session_key=loaded.session_key)["user"] == 42
        new_key = loaded.session_key
        loaded.delete()
        assert not SessionStore().exists(new_key)

        # Through Django's request cycle and SessionMiddleware.
        browser = Client()
        assert [browser.get("/count/").content for _ in range(3)] == [b"1", b"2", b"3"]
        cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
        assert SessionStore(session_key=cookie)["n"] == 3
        assert Client().get("/count/").content == b"1"  # another browser, another session
        stats = _builtin_pool().stats()
        assert stats["size"] <= 2 and stats["connects"] <= 2  # kept between requests


ALL_OPTIONS: dict[str, Any] = {
    "max_connections": 7,
    "timeout": 1.5,
    "max_waiting": 9,
    "min_idle": 1,
    "max_idle": 120.0,
    "max_lifetime": 900.0,
    "ping_after_idle": 0.5,
    "ping_timeout": 0.25,
    "keepalive_interval": 30.0,
    "fail_fast_after": 2.0,
    "leak_warning_after": 60.0,
    "idle_order": "fifo",
    "name": "django-cache",
}


@pytest.mark.parametrize("where", ["OPTIONS", "URL"])
def test_every_pool_option_passes_through(server: RedisServer, where: str) -> None:
    assert set(ALL_OPTIONS) == OPTION_NAMES  # a new option must be added here too
    if where == "OPTIONS":
        setting = _builtin(_location(server, 6), **ALL_OPTIONS)
    else:
        setting = _builtin(_location(server, 6) + "?" + urlencode(ALL_OPTIONS))
    with cache_settings(setting):
        cache = caches["default"]
        cache.set("k", "v")
        assert cache.get("k") == "v"
        pool = _builtin_pool()
        assert pool.options == redispool.PoolOptions(**ALL_OPTIONS)
        assert pool.name == "django-cache"
        pool.wait_ready(5)  # min_idle=1 is honoured
        assert pool.stats()["idle"] >= 1


def _django_redis(location: str | list[str], **options: Any) -> dict[str, Any]:
    options.setdefault("CONNECTION_POOL_CLASS", "redispool.ConnectionPool")
    return {"default": {"BACKEND": DJANGO_REDIS, "LOCATION": location, "OPTIONS": options}}


def test_django_redis_default_client(server: RedisServer) -> None:
    raw = redis.Redis(port=server.port, db=7)
    kwargs = {"max_connections": 4, "min_idle": 1, "name": "django-redis"}
    with cache_settings(_django_redis(_location(server, 7), CONNECTION_POOL_KWARGS=kwargs)):
        cache = caches["default"]
        pool = get_redis_connection("default").connection_pool
        assert type(pool) is redispool.ConnectionPool
        assert pool.options.max_connections == 4 and pool.options.min_idle == 1
        assert pool.name == "django-redis"

        cache.set("a", {"x": 1}, timeout=100)
        assert cache.get("a") == {"x": 1}
        assert 0 < cache.ttl("a") <= 100
        assert cache.persist("a") and cache.ttl("a") is None
        assert cache.expire("a", 60) and 0 < cache.ttl("a") <= 60
        assert cache.touch("a", 30) and 0 < raw.ttl(cache.make_key("a")) <= 30
        assert cache.add("a", 2) is False and cache.add("n", 1) is True
        assert cache.set("a", "nx", nx=True) is False
        assert cache.incr("n", 5) == 6 and cache.decr("n") == 5
        assert cache.has_key("n") and not cache.has_key("zz")
        cache.set_many({"m1": 1, "m2": 2})
        assert cache.get_many(["m1", "m2", "m3"]) == {"m1": 1, "m2": 2}
        assert sorted(cache.keys("m*")) == ["m1", "m2"]
        assert sorted(cache.iter_keys("m*")) == ["m1", "m2"]
        assert cache.delete_pattern("m*") == 2
        assert cache.delete("n") and cache.get("n") is None
        with cache.lock("lock-name", timeout=5):
            assert raw.exists(cache.make_key("lock-name"))
        cache.set("v", "one")
        assert cache.incr_version("v") == 2 and cache.get("v", version=2) == "one"

        def operation(n: int, i: int) -> None:
            cache.set(f"thread:{n}", i)
            assert cache.get(f"thread:{n}") == i

        _hammer(operation)
        stats = pool.stats()
        assert stats["size"] <= 4 and stats["in_use"] == 0 and stats["timeouts"] == 0

        cache.clear()
        assert raw.dbsize() == 0


def _other_clients(admin: redis.Redis) -> list[dict[str, Any]]:
    """CLIENT LIST without the admin's own connection, once closed sockets are gone."""
    own = str(admin.client_id())
    return [c for c in admin.client_list() if c["id"] != own]


def test_django_redis_reset_drops_connections_opened_before_it(server: RedisServer) -> None:
    # django-redis builds the pool, finds connection_kwargs["password"] is None, sets it
    # (to None here) and calls pool.reset(): connections opened before must not survive.
    options = {
        "CONNECTION_POOL_CLASS": f"{__name__}.WarmPool",
        "CONNECTION_POOL_KWARGS": {"min_idle": 2, "max_connections": 3},
    }
    admin = redis.Redis(port=server.port, db=11)
    with cache_settings(_django_redis(_location(server, 11), **options)):
        cache = caches["default"]
        pool = get_redis_connection("default").connection_pool
        assert isinstance(pool, WarmPool) and len(WarmPool.warmed) == 2
        assert all(conn._sock is None for conn in WarmPool.warmed)  # closed by reset()
        cache.set("k", "v")
        assert cache.get("k") == "v"
        live = set(pool._available_connections) | set(pool._in_use_connections)
        assert not live & set(WarmPool.warmed)
        pool.wait_ready(5)  # min_idle refills with fresh connections
        deadline = time.monotonic() + 5
        while len(_other_clients(admin)) != pool.stats()["size"] and time.monotonic() < deadline:
            time.sleep(0.01)  # the server notices closed sockets asynchronously
        assert len(_other_clients(admin)) == pool.stats()["size"] <= 3
        cache.clear()


def test_django_redis_password_set_after_construction_is_used() -> None:
    locked = private_server("--requirepass", PASSWORD)
    # CONNECTION_POOL_KWARGS wins over django-redis's own PASSWORD, so the pool is built
    # without one; django-redis then writes PASSWORD into connection_kwargs and resets.
    options = {
        "CONNECTION_POOL_CLASS": f"{__name__}.WarmPool",
        "CONNECTION_POOL_KWARGS": {"password": None, "min_idle": 2},
        "PASSWORD": PASSWORD,
    }
    WarmPool.warm_error = None
    with locked, cache_settings(_django_redis(_location(locked, 1), **options)):
        cache = caches["default"]
        pool = get_redis_connection("default").connection_pool
        assert isinstance(WarmPool.warm_error, redis.AuthenticationError)  # no password yet
        assert pool.connection_kwargs["password"] == PASSWORD
        cache.set("k", "v")
        assert cache.get("k") == "v"
        pool.wait_ready(5)
        assert pool.stats()["idle"] >= 2 and not pool.stats()["failing_fast"]
        admin = redis.Redis(port=locked.port, password=PASSWORD)
        assert len(_other_clients(admin)) == pool.stats()["size"]
        assert PASSWORD not in repr(pool) and PASSWORD not in repr(pool.stats())


def test_django_redis_herd_client(server: RedisServer) -> None:
    options = {
        "CLIENT_CLASS": "django_redis.client.HerdClient",
        "CONNECTION_POOL_KWARGS": {"max_connections": 3},
    }
    with cache_settings(_django_redis(_location(server, 8), **options)):
        cache = caches["default"]
        pool = get_redis_connection("default").connection_pool
        assert type(pool) is redispool.ConnectionPool and pool.options.max_connections == 3
        cache.set("h", "herd", timeout=100)
        assert cache.get("h") == "herd"
        cache.set_many({"h1": 1, "h2": 2}, timeout=100)
        assert cache.get_many(["h1", "h2", "h3"]) == {"h1": 1, "h2": 2}
        assert cache.touch("h", 200) and cache.get("h") == "herd"
        assert cache.delete("h") and cache.get("h") is None

        def operation(n: int, i: int) -> None:
            cache.set(f"herd:{n}", i, timeout=100)
            assert cache.get(f"herd:{n}") == i

        _hammer(operation)
        assert pool.stats()["size"] <= 3
        cache.clear()


# django-redis 7.0's own cache facade passes client=None to ShardClient.get/delete, which warn.
@pytest.mark.filterwarnings("ignore:.* on sharded client should not specify client:UserWarning")
def test_django_redis_sharded_client(server: RedisServer) -> None:
    shards = [_location(server, 9), _location(server, 10)]
    options = {
        "CLIENT_CLASS": "django_redis.client.ShardClient",
        "CONNECTION_POOL_KWARGS": {"max_connections": 2},
    }
    with cache_settings(_django_redis(shards, **options)):
        cache = caches["default"]
        pools = [client.connection_pool for client in cache.client._serverdict.values()]
        assert len(pools) == 2 and pools[0] is not pools[1]
        assert all(type(p) is redispool.ConnectionPool for p in pools)
        data = {f"key{i}": i for i in range(40)}
        for key, value in data.items():
            cache.set(key, value)
        sizes = [redis.Redis(port=server.port, db=db).dbsize() for db in (9, 10)]
        assert sum(sizes) == 40 and min(sizes) > 0  # both shards hold keys
        assert cache.get_many(list(data)) == data
        assert cache.incr("key1", 10) == 11
        cache.delete_many(["key1", "key2"])
        assert cache.get("key1") is None and cache.get("key3") == 3

        def operation(n: int, i: int) -> None:
            cache.set(f"shard:{n}:{i}", i)
            assert cache.get(f"shard:{n}:{i}") == i

        _hammer(operation, rounds=10)
        assert all(p.stats()["size"] <= 2 for p in pools)
        cache.clear()
        assert [redis.Redis(port=server.port, db=db).dbsize() for db in (9, 10)] == [0, 0]


def test_django_redis_sentinel_client() -> None:
    # django-redis's SentinelClient insists on a redis.sentinel.SentinelConnectionPool.
    from redis.sentinel import SentinelConnectionPool

    from tests.deployments import SERVICE, sentinel_deployment

    with sentinel_deployment() as deployment:
        options = {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": deployment.sentinel_addresses,
            "CONNECTION_POOL_CLASS": "redispool.SentinelConnectionPool",
            "CONNECTION_POOL_KWARGS": {"max_connections": 3},
        }
        with cache_settings(_django_redis(f"redis://{SERVICE}/0", **options)):
            cache = caches["default"]
            primary = cache.client.get_client(write=True)
            replica = cache.client.get_client(write=False)
            for client in (primary, replica):
                pool = client.connection_pool
                assert isinstance(pool, redispool.ConnectionPool) and isinstance(pool, SentinelConnectionPool)
                assert pool.options.max_connections == 3
            assert primary.connection_pool is not replica.connection_pool
            cache.set("sentinel", {"via": "master"})
            assert primary.wait(1, 2000) == 1  # replicated before reading from the replica
            assert cache.get("sentinel") == {"via": "master"}
            assert primary.execute_command("ROLE")[0] == b"master"
            assert replica.execute_command("ROLE")[0] == b"slave"
            assert cache.delete("sentinel")
