"""redis-py's ``AfterConnectionReleasedEvent``: dispatched on release when someone listens.

redis-py dispatches it on every release. Its own listener applies a streaming-credential
token that arrived while the connection was busy (re-authentication); users register
their own with ``EventDispatcher.register_listeners``. Building and dispatching the event
costs more than the rest of a return, so each pool decides once what a release must do
(:data:`NEVER`, :data:`RE_AUTH`, :data:`ALWAYS`) and decides again only when listeners
are registered or unregistered on its dispatcher.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from redis.exceptions import RedisError

from ._tracking import CLOSE_ON_RETURN

try:  # redis-py >= 5.3
    from redis.credentials import StreamingCredentialProvider
    from redis.event import AfterConnectionReleasedEvent, EventDispatcher, ReAuthConnectionListener
except ImportError:  # pragma: no cover - depends on the installed redis-py
    AfterConnectionReleasedEvent = None  # type: ignore[assignment,misc]
    EventDispatcher = None  # type: ignore[assignment,misc]
    ReAuthConnectionListener = None  # type: ignore[assignment,misc]
    StreamingCredentialProvider = None  # type: ignore[assignment,misc]

log = logging.getLogger("redispool")

NEVER = 0  # nobody listens: a release does nothing extra
RE_AUTH = 1  # only redis-py's re-auth listener, with a streaming credential provider
ALWAYS = 2  # someone else listens: dispatch on every release

# Pools watching each dispatcher (one dispatcher may serve many pools: a cluster's nodes).
_watchers: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
_watchers_lock = threading.Lock()


def watch(pool: Any) -> int:
    """The release mode of ``pool``; re-evaluated whenever its dispatcher's listeners change.

    The pool's ``_release_events`` attribute receives the new mode on every change.
    """
    dispatcher = getattr(pool, "_event_dispatcher", None)
    if dispatcher is None or AfterConnectionReleasedEvent is None:
        return NEVER
    with _watchers_lock:
        try:
            pools = _watchers.get(dispatcher)
            if pools is None:
                pools = weakref.WeakSet()
                _hook(dispatcher)
                _watchers[dispatcher] = pools
        except (TypeError, AttributeError):  # cannot watch it: never miss an event
            return ALWAYS
        pools.add(pool)
    return mode(pool, dispatcher)


def mode(pool: Any, dispatcher: Any) -> int:
    """What a release of ``pool`` must do with the listeners ``dispatcher`` has now."""
    mapping = getattr(dispatcher, "_event_listeners_mapping", None)
    if not isinstance(mapping, dict) or type(dispatcher).dispatch is not EventDispatcher.dispatch:
        return ALWAYS  # a dispatcher we cannot see into
    listeners = mapping.get(AfterConnectionReleasedEvent) or ()
    if not listeners:
        return NEVER
    if any(type(listener) is not ReAuthConnectionListener for listener in listeners):
        return ALWAYS
    # redis-py's re-auth listener acts only on a token that a streaming credential
    # provider delivered while the connection was borrowed; without one there is none.
    provider = pool.connection_kwargs.get("credential_provider")
    return RE_AUTH if isinstance(provider, StreamingCredentialProvider) else NEVER


def _hook(dispatcher: Any) -> None:
    """Make ``register_listeners``/``unregister_listeners`` re-evaluate the watching pools."""
    for name in ("register_listeners", "unregister_listeners"):
        original = getattr(dispatcher, name, None)
        if original is None:
            continue

        def changed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            try:
                return _original(*args, **kwargs)
            finally:
                _refresh(dispatcher)

        setattr(dispatcher, name, changed)


def _refresh(dispatcher: Any) -> None:
    with _watchers_lock:
        pools = list(_watchers.get(dispatcher, ()))
    for pool in pools:
        pool._release_events = mode(pool, dispatcher)


def before_return(pool: Any, conn: Any, meta: Any) -> None:
    """Dispatch the event for ``conn`` while the releasing thread still holds it.

    Called before the pool takes ``conn`` back, so a listener's I/O (re-authentication
    sends AUTH) never meets another borrower. Not dispatched for a release the pool
    ignores (a second release by the same thread) or for a connection it is about to
    close (disconnected, unread replies, MULTI, pub/sub): nothing will reuse it. A
    listener's exception is logged; a Redis error also closes the connection, whose
    authentication is then unknown.
    """
    real = meta.real or conn
    if pool._release_events == RE_AUTH and getattr(real, "_re_auth_token", None) is None:
        return
    me = threading.get_ident()
    if meta.holder is None or (meta.released_by == me and meta.holder != me):
        return
    if getattr(real, "_sock", True) is None:
        return
    pending: int = getattr(real, "_rp_pending", 0)
    flags: int = getattr(real, "_rp_dirt", 0)
    if pending or flags & CLOSE_ON_RETURN:
        return
    try:
        pool._event_dispatcher.dispatch(AfterConnectionReleasedEvent(conn))  # type: ignore[no-untyped-call]
    except Exception as error:
        log.debug("AfterConnectionReleasedEvent listener failed for %r", conn, exc_info=True)
        if isinstance(error, RedisError):
            try:
                real.disconnect()
            except Exception:
                log.debug("error while closing a connection", exc_info=True)
