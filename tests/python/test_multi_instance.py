"""Two `cola-api` instances sharing one database (docs/operations.md,
"Running several instances": a revocation, expiry or permission change applies
to the next request on the instance that made it, and on every other instance
within 2 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from colatest import ColaServer, poll

# Generous next to the promised 2 s, far below the 30 s auth-cache TTL that
# an instance which is never told about a change would serve from.
PROPAGATION_DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ColaServer, ColaServer]]:
    first = ColaServer().start()
    second = None
    try:
        second = ColaServer(
            extra_env={
                "COLA_DATABASE_URL": first.env["COLA_DATABASE_URL"],
                "COLA_JWT_SECRET": first.env["COLA_JWT_SECRET"],
            }
        ).start()
        yield first, second
    finally:
        if second is not None:
            second.cleanup()
        first.cleanup()


def test_both_instances_serve_the_same_keys(pair: tuple[ColaServer, ColaServer]) -> None:
    first, second = pair
    owner = first.owner()
    key = owner.create_key()
    # A key created on one instance is admitted by the other, and the
    # usage of both instances adds up in the shared database.
    for server in (first, second, second):
        r = server.call_tool(key["key"], "whoami")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["structuredContent"]["key_id"] == key["id"]
    poll(
        lambda: owner.get_key(key["id"])["usage_count"],
        until=lambda n: n >= 3,
        deadline_s=15,
        what="usage from both instances",
    )
    assert owner.get_key(key["id"])["usage_count"] == 3


def test_changes_reach_the_other_instance(pair: tuple[ColaServer, ColaServer]) -> None:
    first, second = pair
    owner = first.owner()
    key = owner.create_key(permissions={"read": True, "write": True})
    # Warm both instances' caches.
    for server in (first, second):
        assert server.tool_names(key["key"]) == ["whoami", "list_api_keys", "revoke_api_key"]

    owner.patch_permissions(key["id"], permissions={"read": True, "write": False})
    assert first.tool_names(key["key"]) == ["whoami", "list_api_keys"]
    poll(
        lambda: second.tool_names(key["key"]),
        until=lambda names: names == ["whoami", "list_api_keys"],
        deadline_s=PROPAGATION_DEADLINE_S,
        interval_s=0.1,
        what="the permission change to reach the other instance",
    )

    owner.revoke(key["id"])
    assert first.mcp(key["key"], "tools/list").status_code == 401
    poll(
        lambda: second.mcp(key["key"], "tools/list").status_code,
        until=lambda status: status == 401,
        deadline_s=PROPAGATION_DEADLINE_S,
        interval_s=0.1,
        what="the revocation to reach the other instance",
    )
