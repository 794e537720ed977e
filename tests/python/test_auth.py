"""Admission at `/mcp` over raw HTTP: credentials, revocation, expiry,
permission changes, IP allow-lists, Origin and failure rate limiting
(README.md and docs/mcp.md).

Tests that provoke failed authentications run against `cola_proxy` with a
client address of their own (`X-Forwarded-For` from the trusted 127.0.0.1),
so that no test can push another into the failure rate limit.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx2

from colatest import (
    ALL_TOOLS,
    WWW_AUTHENTICATE,
    ColaServer,
    Owner,
    key_is_well_formed,
    make_key,
    poll,
    random_base62,
)


def assert_invalid_credential(r: httpx2.Response, reference: bytes | None = None) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers.get("www-authenticate") == WWW_AUTHENTICATE
    assert "resource_metadata" not in r.headers.get("www-authenticate", "")
    assert r.headers.get("content-type", "").startswith("application/json")
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "error" in body and "result" not in body
    if reference is not None:
        assert r.content == reference


def flipped_checksum(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


def test_issued_keys_follow_the_format(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key()
    assert key_is_well_formed(key["key"]), key["key"]
    assert key["key_prefix"] == key["key"][:17]
    # The secret is shown once.
    again = owner.get_key(key["id"])
    assert "key" not in again
    assert again["key_prefix"] == key["key_prefix"]
    # Our own generator agrees with the server's checksum (and so with the contract).
    assert make_key(key["key"][5:35]) == key["key"]


def test_every_bad_credential_gets_one_identical_401(cola_proxy: ColaServer, client_ip: str) -> None:
    server = cola_proxy
    xff = {"X-Forwarded-For": client_ip}
    owner = server.owner()
    live = owner.create_key()
    revoked = owner.create_key()
    expiring = owner.create_key(expires_at=(datetime.now(UTC) + timedelta(seconds=3)).isoformat())
    # Used once, so each is verified and warm in the auth cache before it goes bad.
    for key in (live, revoked, expiring):
        assert server.mcp(key["key"], "tools/list", headers=xff).status_code == 200
    owner.revoke(revoked["id"])

    assert key_is_well_formed(make_key())
    unknown = make_key()
    wrong_secret = make_key(live["key"][5:17] + random_base62(18))
    assert wrong_secret[:17] == live["key_prefix"] and wrong_secret != live["key"]
    assert key_is_well_formed(wrong_secret)
    bad_checksum = flipped_checksum(live["key"])
    assert not key_is_well_formed(bad_checksum)

    cases: dict[str, dict[str, str | None]] = {
        "no credential": {},
        "bare scheme": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-cola-key"},
        "truncated": {"Authorization": f"Bearer {live['key'][:30]}"},
        "other scheme": {"Authorization": "Basic " + base64.b64encode(f"x:{live['key']}".encode()).decode()},
        "bad checksum": {"Authorization": f"Bearer {bad_checksum}"},
        "unknown prefix": {"Authorization": f"Bearer {unknown}"},
        "wrong secret": {"Authorization": f"Bearer {wrong_secret}"},
        "revoked": {"Authorization": f"Bearer {revoked['key']}"},
        "management jwt": {"Authorization": f"Bearer {owner.token}"},
        "x-api-key malformed": {"X-API-Key": "nonsense"},
        "x-api-key revoked": {"X-API-Key": revoked["key"]},
    }
    bodies = {}
    for name, headers in cases.items():
        r = server.mcp(None, "tools/list", headers={**xff, **headers})
        assert_invalid_credential(r)
        bodies[name] = r.content
    # Also in the handshake era.
    legacy = server.mcp(None, "initialize", {"protocolVersion": "2025-11-25"}, era="legacy", headers=xff)
    assert_invalid_credential(legacy)
    bodies["legacy initialize"] = legacy.content

    # Expiry: answered until the moment passes, then refused like the rest.
    r = poll(
        lambda: server.mcp(expiring["key"], "tools/list", headers=xff),
        until=lambda r: r.status_code != 200,
        deadline_s=20,
        interval_s=0.1,
        what="the expiring key to be refused",
    )
    assert_invalid_credential(r)
    bodies["expired"] = r.content
    assert owner.get_key(expiring["id"])["status"] == "expired"

    assert len(set(bodies.values())) == 1, bodies
    # The refusal names nothing of the key.
    for secret in (live["key"], live["key_prefix"], revoked["key_prefix"], owner.token):
        assert secret.encode() not in bodies["revoked"]

    # And the live key is unaffected by all of this.
    assert server.mcp(live["key"], "tools/list", headers=xff).status_code == 200


def test_x_api_key_header_is_accepted(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key()
    r = cola.call_tool(None, "whoami", headers={"X-API-Key": key["key"]})  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.json()["result"]["structuredContent"]["key_id"] == key["id"]
    # Bearer scheme names are case-insensitive.
    r = cola.call_tool(None, "whoami", headers={"Authorization": f"bearer {key['key']}"})  # type: ignore[arg-type]
    assert r.status_code == 200, r.text


def test_a_key_cannot_manage_keys(cola_proxy: ColaServer, client_ip: str) -> None:
    owner = cola_proxy.owner()
    key = owner.create_key()
    xff = {"X-Forwarded-For": client_ip}
    for method, path in (("GET", "/api/mcp/keys"), ("GET", f"/api/mcp/keys/{key['id']}")):
        r = cola_proxy.http.request(method, path, headers={"Authorization": f"Bearer {key['key']}", **xff})
        assert r.status_code == 401, r.text
    r = cola_proxy.http.post(
        "/api/mcp/keys", json={"name": "by a key"}, headers={"Authorization": f"Bearer {key['key']}", **xff}
    )
    assert r.status_code == 401, r.text
    # Nothing was created.
    listed = cola_proxy.http.get("/api/mcp/keys", headers=owner.headers).json()["items"]
    assert [k["id"] for k in listed] == [key["id"]]


def test_revocation_applies_to_the_next_request(cola_proxy: ColaServer, client_ip: str) -> None:
    server = cola_proxy
    xff = {"X-Forwarded-For": client_ip}
    owner = server.owner()
    key = owner.create_key()
    for _ in range(3):
        assert server.mcp(key["key"], "tools/list", headers=xff).status_code == 200
    owner.revoke(key["id"])
    assert_invalid_credential(server.mcp(key["key"], "tools/list", headers=xff))
    # Idempotent, and still refused.
    owner.revoke(key["id"])
    assert_invalid_credential(server.mcp(key["key"], "tools/list", headers=xff))

    # Revoked through MCP by a sibling key: refused on the next request too.
    writer = owner.create_key(permissions={"read": True, "write": True})
    victim = owner.create_key()
    assert server.mcp(victim["key"], "tools/list", headers=xff).status_code == 200
    r = server.call_tool(writer["key"], "revoke_api_key", {"id": victim["id"]}, headers=xff)
    assert r.status_code == 200 and r.json()["result"]["isError"] is False, r.text
    assert_invalid_credential(server.mcp(victim["key"], "tools/list", headers=xff))
    assert server.mcp(writer["key"], "tools/list", headers=xff).status_code == 200


def test_permission_change_applies_to_the_next_request(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    assert cola.tool_names(key["key"]) == ALL_TOOLS
    owner.patch_permissions(key["id"], permissions={"read": True, "write": False})
    assert cola.tool_names(key["key"]) == ["whoami", "list_api_keys"]
    owner.patch_permissions(key["id"], permissions={"read": True, "allowed_tools": ["whoami"]})
    assert cola.tool_names(key["key"]) == ["whoami"]
    r = cola.call_tool(key["key"], "list_api_keys", {})
    assert r.status_code == 200 and r.json()["error"]["code"] == -32602
    # A field left out keeps its value (docs/decisions.md, decision 127): the tool list goes
    # only when given as null.
    owner.patch_permissions(key["id"], permissions={"read": False, "write": True})
    assert cola.tool_names(key["key"]) == []
    owner.patch_permissions(key["id"], permissions={"allowed_tools": None})
    assert cola.tool_names(key["key"]) == ["revoke_api_key"]
    assert cola.tool_names(key["key"], era="legacy") == ["revoke_api_key"]
    # whoami reports the permissions in force.
    owner.patch_permissions(key["id"], permissions={"read": True, "write": True})
    r = cola.call_tool(key["key"], "whoami", {})
    assert r.json()["result"]["structuredContent"]["permissions"] == owner.get_key(key["id"])["permissions"]

    # An IP allow-list change, too.
    owner.patch_permissions(key["id"], ip_whitelist=["10.9.9.9"])
    assert cola.mcp(key["key"], "tools/list").status_code == 403
    owner.patch_permissions(key["id"], ip_whitelist=[])
    assert cola.mcp(key["key"], "tools/list").status_code == 200


def assert_ip_denied(r: httpx2.Response) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json")
    assert isinstance(r.json(), dict)
    # Nothing that would send an OAuth client into a login flow.
    assert "resource_metadata" not in r.headers.get("www-authenticate", "")
    assert "insufficient_scope" not in r.headers.get("www-authenticate", "")


def test_ip_allow_list_on_a_direct_connection(cola: ColaServer, owner: Owner) -> None:
    elsewhere = owner.create_key(ip_whitelist=["10.9.9.9"])
    assert elsewhere["ip_whitelist"] == ["10.9.9.9/32"]
    assert_ip_denied(cola.mcp(elsewhere["key"], "tools/list"))
    # Without trusted proxies, a spoofed X-Forwarded-For changes nothing.
    assert_ip_denied(cola.mcp(elsewhere["key"], "tools/list", headers={"X-Forwarded-For": "10.9.9.9"}))
    assert_ip_denied(cola.mcp(elsewhere["key"], "tools/list", era="legacy", headers={"X-Forwarded-For": "10.9.9.9"}))

    here = owner.create_key(ip_whitelist=["127.0.0.1"])
    assert here["ip_whitelist"] == ["127.0.0.1/32"]
    assert cola.mcp(here["key"], "tools/list").status_code == 200
    net = owner.create_key(ip_whitelist=["10.0.0.0/8", "127.0.0.0/8"])
    assert cola.mcp(net["key"], "tools/list").status_code == 200
    assert cola.mcp(net["key"], "tools/list", headers={"X-Forwarded-For": "8.8.8.8"}).status_code == 200

    # A 403 is no failed authentication: the key is not rate limited or revoked.
    assert owner.get_key(elsewhere["id"])["status"] == "active"


def test_ip_allow_list_behind_a_trusted_proxy(cola_proxy: ColaServer) -> None:
    owner = cola_proxy.owner()
    key = owner.create_key(ip_whitelist=["10.9.9.9"])
    ok = cola_proxy.call_tool(key["key"], "whoami", headers={"X-Forwarded-For": "10.9.9.9"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["structuredContent"]["key_id"] == key["id"]
    # The proxy chain is walked from the right: a trusted hop is skipped...
    assert cola_proxy.mcp(key["key"], "tools/list", headers={"X-Forwarded-For": "10.9.9.9, 127.0.0.1"}).status_code == 200
    # ...but what the client itself wrote on the left is not believed.
    assert_ip_denied(cola_proxy.mcp(key["key"], "tools/list", headers={"X-Forwarded-For": "10.9.9.9, 10.1.1.1"}))
    assert_ip_denied(cola_proxy.mcp(key["key"], "tools/list", headers={"X-Forwarded-For": "10.9.9.8"}))
    # No header: the client is the proxy itself (127.0.0.1).
    assert_ip_denied(cola_proxy.mcp(key["key"], "tools/list"))


def test_origin_is_checked_against_the_allowed_list(cola_origins: ColaServer) -> None:
    owner = cola_origins.owner()
    key = owner.create_key()
    r = cola_origins.mcp(key["key"], "tools/list", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403, r.text
    assert "resource_metadata" not in r.headers.get("www-authenticate", "")
    # Refused before the key is even looked at.
    assert cola_origins.mcp(None, "tools/list", headers={"Origin": "http://evil.example"}).status_code == 403
    # Same host, other scheme or port: another origin.
    for origin in ("https://good.example", "http://good.example:8080", "http://good.example.evil.example", "null"):
        assert cola_origins.mcp(key["key"], "tools/list", headers={"Origin": origin}).status_code == 403, origin
    for headers in ({"Origin": "http://good.example"}, {}):
        r = cola_origins.mcp(key["key"], "tools/list", headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert [t["name"] for t in r.json()["result"]["tools"]] == ["whoami", "list_api_keys"]


def test_no_origin_is_allowed_by_default(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key()
    assert cola.mcp(key["key"], "tools/list", headers={"Origin": "http://localhost"}).status_code == 403
    assert cola.mcp(key["key"], "tools/list").status_code == 200


def test_failed_attempts_are_rate_limited_per_address(cola_proxy: ColaServer, client_ip: str) -> None:
    owner = cola_proxy.owner()
    good = owner.create_key()
    xff = {"X-Forwarded-For": client_ip}
    # Successful requests are never counted.
    for _ in range(30):
        assert cola_proxy.mcp(good["key"], "tools/list", headers=xff).status_code == 200
    statuses = []
    limited = None
    for _ in range(100):
        r = cola_proxy.mcp(make_key(), "tools/list", headers=xff)
        statuses.append(r.status_code)
        if r.status_code == 429:
            limited = r
            break
        assert_invalid_credential(r)
    assert statuses[:20] == [401] * 20, statuses
    assert limited is not None, f"no 429 within 100 failures: {statuses}"
    assert int(limited.headers["retry-after"]) > 0
    # Another address is unaffected.
    other = "10.250.0.1"
    assert_invalid_credential(cola_proxy.mcp(make_key(), "tools/list", headers={"X-Forwarded-For": other}))
    assert cola_proxy.mcp(good["key"], "tools/list", headers={"X-Forwarded-For": other}).status_code == 200
