"""What the built-in tools and resources do, over raw HTTP: every call acts
as the key's owner (even an admin's key sees only its owner's keys) and
answers as the REST API does (docs/mcp.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from colatest import ColaServer, Owner, without_usage


def structured(r: Any) -> Any:
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["isError"] is False, result
    # The text content carries the same JSON.
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


def rest_list(owner: Owner, **query: Any) -> dict[str, Any]:
    r = owner.server.http.get("/api/mcp/keys", params=query, headers=owner.headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_whoami_matches_the_key(cola: ColaServer, owner: Owner, era: str) -> None:
    key = owner.create_key(
        permissions={"read": True, "write": False, "allowed_tools": ["whoami", "list_api_keys"]},
        expires_in_days=7,
    )
    me = structured(cola.call_tool(key["key"], "whoami", {}, era=era))
    assert me == {
        "tenant_id": owner.tenant_id,
        "user_id": owner.user_id,
        "key_id": key["id"],
        "key_prefix": key["key_prefix"],
        "permissions": key["permissions"],
        "expires_at": key["expires_at"],
    }


def test_list_api_keys_is_the_rest_list(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    others = [owner.create_key(name=f"k{i}") for i in range(4)]
    owner.revoke(others[0]["id"])

    def same(mcp_page: dict[str, Any], rest_page: dict[str, Any]) -> None:
        assert [without_usage(k) for k in mcp_page["items"]] == [without_usage(k) for k in rest_page["items"]]
        assert mcp_page.get("next_cursor") == rest_page.get("next_cursor")

    page = structured(cola.call_tool(key["key"], "list_api_keys", {}))
    same(page, rest_list(owner))
    assert len(page["items"]) == 5
    assert all("key" not in item for item in page["items"])

    revoked = structured(cola.call_tool(key["key"], "list_api_keys", {"status": "revoked"}))
    same(revoked, rest_list(owner, status="revoked"))
    assert [k["id"] for k in revoked["items"]] == [others[0]["id"]]

    # Paging by cursor walks the same pages as REST.
    first = structured(cola.call_tool(key["key"], "list_api_keys", {"limit": 2}))
    same(first, rest_list(owner, limit=2))
    assert first["next_cursor"]
    second = structured(cola.call_tool(key["key"], "list_api_keys", {"limit": 2, "cursor": first["next_cursor"]}))
    same(second, rest_list(owner, limit=2, cursor=first["next_cursor"]))
    assert not {k["id"] for k in first["items"]} & {k["id"] for k in second["items"]}

    # Bad arguments are tool failures the model can read, not protocol errors.
    for arguments in ({"limit": 0}, {"status": "sleeping"}, {"bogus": 1}, {"limit": "many"}):
        r = cola.call_tool(key["key"], "list_api_keys", arguments)
        assert r.status_code == 200
        result = r.json()["result"]
        assert result["isError"] is True, arguments
        assert result["content"][0]["text"]


def test_an_admins_key_acts_only_as_its_owner(cola: ColaServer) -> None:
    admin = cola.owner(role="admin")
    member = cola.owner(tenant=admin.tenant_id)
    admin_key = admin.create_key(permissions={"read": True, "write": True})
    member_key = member.create_key()
    # Through REST, the admin sees the member's key...
    assert admin.get_key(member_key["id"])["id"] == member_key["id"]
    # ...but a key acts as its owner only, never with the owner's role.
    listed = structured(cola.call_tool(admin_key["key"], "list_api_keys", {}))
    assert [k["id"] for k in listed["items"]] == [admin_key["id"]]
    resources = cola.mcp(admin_key["key"], "resources/list").json()["result"]["resources"]
    assert [r["uri"] for r in resources] == [f"cola://keys/{admin_key['id']}"]
    r = cola.mcp(admin_key["key"], "resources/read", {"uri": f"cola://keys/{member_key['id']}"})
    assert r.json()["error"]["code"] == -32602
    r = cola.call_tool(admin_key["key"], "revoke_api_key", {"id": member_key["id"]})
    assert r.json()["result"]["isError"] is True
    assert member.get_key(member_key["id"])["status"] == "active"


def test_revoking_through_mcp_is_audited_and_idempotent(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    target = owner.create_key()
    for _ in range(2):
        assert structured(cola.call_tool(key["key"], "revoke_api_key", {"id": target["id"]})) == {
            "id": target["id"],
            "revoked": True,
        }
    r = owner.server.http.get(f"/api/mcp/keys/{target['id']}/events", headers=owner.headers)
    assert r.status_code == 200, r.text
    types = [e["type"] for e in r.json()["items"]]
    assert types == ["api_key.created", "api_key.revoked"]
    revoked_event = r.json()["items"][1]
    assert revoked_event["actor_user_id"] == owner.user_id
    assert revoked_event["key_id"] == target["id"]


def test_a_key_can_revoke_itself(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    assert structured(cola.call_tool(key["key"], "revoke_api_key", {"id": key["id"]}))["revoked"] is True
    assert cola.mcp(key["key"], "tools/list").status_code == 401
