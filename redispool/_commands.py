"""What the client needs to know about a command before running it or running it again.

Two questions, both answered from the arguments redis-py passes to ``execute_command``:

* :func:`is_read_only`: may the command run twice without changing the outcome? The
  answer comes from Redis's own ``readonly`` command flag (a table generated from
  ``COMMAND`` on Redis 7.0, see ``tools/generate_command_table.py``) plus a short,
  hand-checked list of commands that touch no key and change nothing (``PING``,
  ``INFO``, ``CONFIG GET``, ...). Anything else, including every command the table does
  not know (newer than the table, or from a module), counts as a write.
* :func:`block_seconds`: how long may the server legitimately stay silent? ``BLPOP``,
  ``XREAD BLOCK``, ``WAIT`` and friends carry their block time in their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from ._command_table import READONLY

# Commands Redis does not flag ``readonly`` because they touch no key, yet which change
# nothing on the server or the connection: running one twice is harmless.
KEYLESS_SAFE = frozenset(
    {
        "PING",
        "ECHO",
        "TIME",
        "LASTSAVE",
        "INFO",
        "ROLE",
        "COMMAND",
        "COMMAND|COUNT",
        "COMMAND|DOCS",
        "COMMAND|GETKEYS",
        "COMMAND|GETKEYSANDFLAGS",
        "COMMAND|INFO",
        "COMMAND|LIST",
        "CONFIG|GET",
        "SLOWLOG|GET",
        "SLOWLOG|LEN",
        "PUBSUB|CHANNELS",
        "PUBSUB|NUMPAT",
        "PUBSUB|NUMSUB",
        "PUBSUB|SHARDCHANNELS",
        "PUBSUB|SHARDNUMSUB",
        "SCRIPT|EXISTS",
        "FUNCTION|LIST",
        "FUNCTION|DUMP",
        "MEMORY|STATS",
    }
)

# Flagged ``readonly`` by Redis releases newer than the generated table (7.4 hash-field
# expiry). Listed by hand so a 7.4+ server gets them retried too.
NEWER_READONLY = frozenset({"HTTL", "HPTTL", "HEXPIRETIME", "HPEXPIRETIME"})

SAFE = READONLY | KEYLESS_SAFE | NEWER_READONLY

# Commands whose second word names a subcommand ("CLIENT LIST", "OBJECT ENCODING").
_CONTAINERS = frozenset(name.split("|", 1)[0] for name in SAFE if "|" in name) | {
    "ACL",
    "CLIENT",
    "CLUSTER",
    "FUNCTION",
    "LATENCY",
    "MODULE",
    "SCRIPT",
    "XGROUP",
}


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def command_name(args: Sequence[Any]) -> str:
    """Redis's name for the command in ``args``: ``"GET"``, ``"CLIENT|LIST"``.

    redis-py writes subcommands either in the first argument (``"CLIENT LIST"``) or as
    the second (``"OBJECT", "ENCODING", key``); both give the same name.
    """
    if not args:
        return ""
    words = _text(args[0]).upper().split()
    if not words:
        return ""
    head = words[0]
    if head not in _CONTAINERS:
        return head
    if len(words) > 1:
        sub = words[1]
    elif len(args) > 1:
        sub = _text(args[1]).upper()
    else:
        return head
    return f"{head}|{sub}"


def normalise(names: Iterable[str]) -> frozenset[str]:
    """Accept ``"set"``, ``"client setname"`` or ``"CLIENT|SETNAME"`` for a name set."""
    return frozenset(command_name(name.replace("|", " ").split()) for name in names)


def is_read_only(args: Sequence[Any], extra: AbstractSet[str] = frozenset()) -> bool:
    """True when Redis flags the command read-only, or it is in ``extra``.

    ``extra`` holds names from :func:`normalise` that the caller declared safe to repeat.
    An empty ``args`` or an unknown command is not read-only.
    """
    name = command_name(args)
    return name in SAFE or name in extra


# Where each blocking command keeps its block time.
_SECONDS_LAST = frozenset({"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BRPOPLPUSH", "BLMOVE"})
_SECONDS_FIRST = frozenset({"BLMPOP", "BZMPOP"})  # BLMPOP timeout numkeys key ...
_MS_AT = {"WAIT": 2, "WAITAOF": 3}  # WAIT numreplicas timeout; WAITAOF numlocal numreplicas timeout
_MS_OPTION = frozenset({"XREAD", "XREADGROUP"})  # ... BLOCK ms ... STREAMS ...

# Every spelling redis-py or a caller is likely to use, so the hot path is one dict lookup.
BLOCKING: frozenset[Any] = frozenset(
    spelling
    for name in (*_SECONDS_LAST, *_SECONDS_FIRST, *_MS_AT, *_MS_OPTION)
    for spelling in (name, name.lower(), name.encode(), name.lower().encode())
)


def block_seconds(args: Sequence[Any]) -> float | None:
    """How long the server may wait before replying to ``args``, in seconds.

    ``None``: not a blocking call (including ``XREAD`` without ``BLOCK``, and arguments
    that do not parse: the server will reject them). ``math.inf``: blocks until
    something happens (a block time of 0).
    """
    try:
        if not args or args[0] not in BLOCKING:
            return None
    except TypeError:  # an unhashable first argument is no command name we know
        return None
    name = _text(args[0]).upper()
    try:
        if name in _SECONDS_LAST:
            value = float(_text(args[-1]))
        elif name in _SECONDS_FIRST:
            value = float(_text(args[1]))
        elif name in _MS_AT:
            value = float(_text(args[_MS_AT[name]])) / 1000
        else:
            option = _block_option(args)
            if option is None:
                return None
            value = option
    except (IndexError, ValueError):
        return None
    if value < 0 or math.isnan(value):
        return None
    return math.inf if value == 0 else value


def _block_option(args: Sequence[Any]) -> float | None:
    for i in range(1, len(args) - 1):
        word = _text(args[i]).upper()
        if word == "STREAMS":
            return None  # options end here; what follows are stream names and ids
        if word == "BLOCK":
            return float(_text(args[i + 1])) / 1000
    return None
