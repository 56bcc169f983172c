"""Type-checked, never run: what ``mypy --strict`` must accept and infer for Client users.

CI checks it with ``mypy --strict tests/typecheck/check_client_types.py``; a wrong type
here fails the build. ``assert_type`` makes each inferred type part of the check.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import redispool
from redispool._client import ClientPipeline


class Tenant(redispool.Client):
    """A subclass: pinned() gives back the subclass, not the base."""


def pipelines(client: redispool.Client) -> list[Any]:
    with client.pipeline() as pipe:
        assert_type(pipe, ClientPipeline)
        chained = pipe.incr("n").incr("n").set("k", "v").get("k")  # the README's chaining
        assert_type(chained, ClientPipeline)
        replies = pipe.execute()
        assert_type(replies, list[Any])
    plain = client.pipeline(transaction=False)
    assert_type(plain.hset("h", "f", "v"), ClientPipeline)
    return replies + plain.execute(raise_on_error=False)


def pinned(client: redispool.Client, tenant: Tenant) -> None:
    with client.pinned() as c:
        assert_type(c, redispool.Client)
        assert_type(c.pipeline(), ClientPipeline)
    with tenant.pinned(timeout=1.0) as t:
        assert_type(t, Tenant)
