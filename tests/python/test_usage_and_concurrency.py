"""Usage accounting and tenant isolation under concurrent load
(docs/architecture.md, "Batched usage counting": each admitted request adds
one to the key's usage_count)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import httpx2
import pytest

from colatest import ColaServer, Owner, auth, mcp_request, poll

FLUSH_DEADLINE_S = 15.0


def wait_for_usage(owner: Owner, key_id: str, at_least: int) -> dict[str, Any]:
    return poll(
        lambda: owner.get_key(key_id),
        until=lambda k: k["usage_count"] >= at_least,
        deadline_s=FLUSH_DEADLINE_S,
        what=f"usage_count of {key_id} to reach {at_least}",
    )


def flush_barrier(cola: ColaServer) -> None:
    """Returns once a flush has happened after this call: a fresh key's
    first use must show up, so everything counted before it was flushed too."""
    owner = cola.owner()
    probe = owner.create_key()
    assert cola.mcp(probe["key"], "tools/list").status_code == 200
    wait_for_usage(owner, probe["id"], 1)


def test_usage_count_is_exact(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    assert key["usage_count"] == 0 and key["last_used_at"] is None
    uri = f"cola://keys/{key['id']}"
    admitted = [
        ("modern", "server/discover", None),
        ("modern", "tools/list", None),
        ("modern", "tools/call", {"name": "whoami", "arguments": {}}),
        ("modern", "tools/call", {"name": "list_api_keys", "arguments": {}}),
        ("modern", "resources/list", None),
        ("modern", "resources/read", {"uri": uri}),
        ("legacy", "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
        ("legacy", "tools/list", None),
        ("legacy", "tools/call", {"name": "whoami"}),
        ("legacy", "resources/read", {"uri": uri}),
        ("legacy", "ping", None),
    ]
    for era, method, params in admitted:
        r = cola.mcp(key["key"], method, params, era=era)
        assert r.status_code == 200, (method, r.text)
    # Not admitted, so not counted: a refused Origin, and management calls.
    assert cola.mcp(key["key"], "tools/list", headers={"Origin": "http://evil.example"}).status_code == 403
    owner.get_key(key["id"])

    n = len(admitted)
    seen = wait_for_usage(owner, key["id"], n)
    assert seen["usage_count"] == n
    flush_barrier(cola)
    final = owner.get_key(key["id"])
    assert final["usage_count"] == n
    assert final["last_used_at"] is not None
    assert datetime.fromisoformat(final["last_used_at"]) >= datetime.fromisoformat(final["created_at"])
    # Only this key was touched.
    assert owner.create_key()["usage_count"] == 0


async def hammer(
    http: httpx2.AsyncClient, url: str, key: str, i: int, limit: asyncio.Semaphore
) -> tuple[str, dict[str, Any]]:
    tool = "whoami" if i % 2 == 0 else "list_api_keys"
    era = "legacy" if i % 4 == 1 else "modern"
    headers, body = mcp_request("tools/call", {"name": tool, "arguments": {}}, era=era, id=i)
    async with limit:
        r = await http.post(url, content=json.dumps(body), headers={**headers, **auth(key)})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["id"] == i
    assert answer["result"]["isError"] is False, answer
    return tool, answer["result"]["structuredContent"]


@pytest.mark.anyio
async def test_two_tenants_never_see_each_other(cola: ColaServer) -> None:
    owners = [cola.owner(), cola.owner()]
    assert owners[0].tenant_id != owners[1].tenant_id
    keys = [o.create_key() for o in owners]
    per_key = 200
    limit = asyncio.Semaphore(16)
    async with httpx2.AsyncClient(timeout=60.0, limits=httpx2.Limits(max_connections=16)) as http:
        jobs = []
        expected = []
        for i in range(per_key):
            for side in (0, 1):
                jobs.append(hammer(http, cola.mcp_url, keys[side]["key"], len(jobs), limit))
                expected.append(side)
        results = await asyncio.gather(*jobs)

    for side, (tool, structured) in zip(expected, results, strict=True):
        owner, key = owners[side], keys[side]
        if tool == "whoami":
            assert structured["tenant_id"] == owner.tenant_id
            assert structured["user_id"] == owner.user_id
            assert structured["key_id"] == key["id"]
        else:
            assert [item["id"] for item in structured["items"]] == [key["id"]]
            assert {item["tenant_id"] for item in structured["items"]} == {owner.tenant_id}

    for owner, key in zip(owners, keys, strict=True):
        assert wait_for_usage(owner, key["id"], per_key)["usage_count"] == per_key
    flush_barrier(cola)
    for owner, key in zip(owners, keys, strict=True):
        assert owner.get_key(key["id"])["usage_count"] == per_key
