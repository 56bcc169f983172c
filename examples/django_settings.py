"""Django settings for redispool: the built-in RedisCache, django-redis, and sessions.

Copy ``CACHES`` and ``SESSION_ENGINE`` into your settings.py. Run as a script with no
arguments, it configures Django with these same settings (pointed at ``REDIS_URL`` if
set, else at a private redis-server), uses both caches and a session, prints what it
did and exits. It only touches keys under its own prefix and never clears a database.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from _common import redis_url

# --- copy from here -------------------------------------------------------------------

CACHES: dict[str, Any] = {
    # Django's built-in backend: every OPTIONS key except pool_class, parser_class and
    # serializer goes to redispool.ConnectionPool.from_url, so all pool options work here.
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
        "KEY_PREFIX": "redispool-example",
        "OPTIONS": {
            "pool_class": "redispool.ConnectionPool",
            "max_connections": 20,
            "timeout": 2,
            "name": "django-cache",
        },
    },
    # django-redis: the pool class and its keyword arguments.
    "django_redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
        "KEY_PREFIX": "redispool-example",
        "OPTIONS": {
            "CONNECTION_POOL_CLASS": "redispool.ConnectionPool",
            "CONNECTION_POOL_KWARGS": {"max_connections": 20, "min_idle": 2, "name": "django-redis"},
        },
    },
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"  # sessions in the "default" cache

# --- to here ----------------------------------------------------------------------------


def caches_for(url: str) -> dict[str, Any]:
    """``CACHES`` pointed at ``url`` (its database is kept); without django-redis if absent."""
    caches = {alias: {**config, "LOCATION": url} for alias, config in CACHES.items()}
    if importlib.util.find_spec("django_redis") is None:
        del caches["django_redis"]
    return caches


def main() -> int:
    with redis_url() as url:
        import django
        from django.conf import settings

        settings.configure(
            SECRET_KEY="example-only",
            INSTALLED_APPS=[],
            CACHES=caches_for(url),
            SESSION_ENGINE=SESSION_ENGINE,
            USE_TZ=True,
        )
        django.setup()
        from django.contrib.sessions.backends.cache import SessionStore
        from django.core.cache import caches

        cache = caches["default"]
        cache.set("greeting", {"hello": "world"}, timeout=60)
        cache.set("visits", 0, timeout=60)
        print("default cache:", cache.get("greeting"), "visits:", cache.incr("visits"))
        pool = cache._cache.get_client(write=True).connection_pool
        print("  pool:", pool.name, type(pool).__module__ + "." + type(pool).__name__)

        if "django_redis" in settings.CACHES:
            other = caches["django_redis"]
            other.set("answer", 42, timeout=60)
            print("django-redis cache:", other.get("answer"), "ttl:", other.ttl("answer"))
            from django_redis import get_redis_connection

            print("  pool:", get_redis_connection("django_redis").connection_pool.name)
            other.delete("answer")

        session = SessionStore()
        session["user_id"] = 7
        session.save()
        print(
            "session", session.session_key[:8] + "...", "->", dict(SessionStore(session.session_key).items())
        )
        session.delete()
        cache.delete_many(["greeting", "visits"])
        stats = pool.stats()
        print(f"default pool: connects={stats['connects']} borrows={stats['borrows']} idle={stats['idle']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
