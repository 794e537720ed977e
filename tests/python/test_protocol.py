"""The MCP wire protocol at `/mcp` over raw HTTP: both eras, the
2026-07-28 header and `_meta` rules, result shapes and malformed input
(docs/mcp.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from colatest import (
    ALL_TOOLS,
    LEGACY,
    META_CAPABILITIES,
    META_VERSION,
    MODERN,
    ColaServer,
    Owner,
    auth,
    mcp_request,
    rpc_error,
    without_usage,
)


@pytest.fixture
def key(owner: Owner) -> dict[str, Any]:
    return owner.create_key(permissions={"read": True, "write": True})


def b64_header(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def assert_works(cola: ColaServer, key: dict[str, Any]) -> None:
    """A valid call right after: the server kept serving."""
    r = cola.call_tool(key["key"], "whoami")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["structuredContent"]["key_id"] == key["id"]


# --------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------


def test_get_and_delete_are_405(cola: ColaServer, key: dict[str, Any]) -> None:
    for method in ("GET", "DELETE", "PUT", "PATCH"):
        for headers in ({}, auth(key["key"])):
            r = cola.http.request(method, "/mcp", headers={"Accept": "text/event-stream", **headers})
            assert r.status_code == 405, (method, r.status_code, r.text)
            assert "POST" in r.headers.get("allow", ""), r.headers


def test_no_session_is_minted_and_answers_are_json(cola: ColaServer, key: dict[str, Any]) -> None:
    for era, method, params in (
        ("legacy", "initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
        ("legacy", "tools/list", None),
        ("modern", "server/discover", None),
        ("modern", "tools/call", {"name": "whoami", "arguments": {}}),
    ):
        r = cola.mcp(key["key"], method, params, era=era)
        assert r.status_code == 200, r.text
        assert "mcp-session-id" not in r.headers
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["id"] == 1


def test_session_ids_from_clients_are_ignored(cola: ColaServer, key: dict[str, Any]) -> None:
    for era in ("legacy", "modern"):
        r = cola.mcp(key["key"], "tools/list", era=era, headers={"Mcp-Session-Id": "made-up-session"})
        assert r.status_code == 200, r.text
        assert "mcp-session-id" not in r.headers


def test_handshake_era(cola: ColaServer, key: dict[str, Any]) -> None:
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    # The SDK sends no MCP-Protocol-Version on initialize.
    r = cola.mcp(key["key"], "initialize", init, era="legacy", headers={"MCP-Protocol-Version": None})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["capabilities"]["tools"] == {} and result["capabilities"]["resources"] == {}
    assert result["serverInfo"]["name"]
    # An unknown version gets the newest handshake-era one.
    r = cola.mcp(key["key"], "initialize", {**init, "protocolVersion": "2099-01-01"}, era="legacy")
    assert r.json()["result"]["protocolVersion"] == LEGACY

    r = cola.mcp(key["key"], "notifications/initialized", era="legacy", notification=True)
    assert r.status_code == 202
    assert r.content == b""
    r = cola.mcp(key["key"], "notifications/cancelled", {"requestId": 1}, era="legacy", notification=True)
    assert r.status_code == 202 and r.content == b""

    r = cola.mcp(key["key"], "ping", era="legacy")
    assert r.status_code == 200 and r.json()["result"] == {}

    r = cola.mcp(key["key"], "tools/list", era="legacy")
    assert [t["name"] for t in r.json()["result"]["tools"]] == ALL_TOOLS
    assert "resultType" not in r.json()["result"] or r.json()["result"]["resultType"] == "complete"

    r = cola.mcp(key["key"], "resources/templates/list", era="legacy")
    assert r.status_code == 200 and r.json()["result"]["resourceTemplates"] == []

    r = cola.mcp(key["key"], "no/such/method", era="legacy")
    assert r.status_code == 200
    assert rpc_error(r)["code"] == -32601
    assert r.json()["id"] == 1


def test_legacy_unsupported_protocol_version_header_is_400(cola: ColaServer, key: dict[str, Any]) -> None:
    r = cola.mcp(key["key"], "tools/list", era="legacy", headers={"MCP-Protocol-Version": "1999-01-01"})
    assert r.status_code == 400, r.text


def test_tools_have_descriptions_and_schemas(cola: ColaServer, key: dict[str, Any]) -> None:
    for era in ("legacy", "modern"):
        r = cola.mcp(key["key"], "tools/list", era=era)
        tools = r.json()["result"]["tools"]
        assert [t["name"] for t in tools] == ALL_TOOLS
        for tool in tools:
            assert isinstance(tool["description"], str) and tool["description"]
            assert tool["inputSchema"]["type"] == "object"
        # Stable order.
        assert cola.mcp(key["key"], "tools/list", era=era).json()["result"]["tools"] == tools


# --------------------------------------------------------------------------
# The 2026-07-28 rules
# --------------------------------------------------------------------------


def test_modern_without_meta_version_is_400_invalid_params(cola: ColaServer, key: dict[str, Any]) -> None:
    headers, body = mcp_request("tools/list")
    del body["params"]["_meta"][META_VERSION]
    r = cola.http.post("/mcp", content=json.dumps(body), headers={**headers, **auth(key["key"])})
    assert r.status_code == 400, r.text
    assert rpc_error(r)["code"] == -32602

    # No params at all, with the modern header.
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = cola.http.post("/mcp", content=json.dumps(body), headers={**headers, **auth(key["key"])})
    assert r.status_code == 400, r.text
    assert rpc_error(r)["code"] == -32602


def test_modern_without_client_capabilities_is_400_invalid_params(cola: ColaServer, key: dict[str, Any]) -> None:
    headers, body = mcp_request("tools/list")
    del body["params"]["_meta"][META_CAPABILITIES]
    r = cola.http.post("/mcp", content=json.dumps(body), headers={**headers, **auth(key["key"])})
    assert r.status_code == 400, r.text
    assert rpc_error(r)["code"] == -32602


def test_modern_unsupported_version_is_400_with_supported_list(cola: ColaServer, key: dict[str, Any]) -> None:
    r = cola.mcp(
        key["key"],
        "tools/list",
        {"_meta": {META_VERSION: "1900-01-01"}},
        headers={"MCP-Protocol-Version": "1900-01-01"},
    )
    assert r.status_code == 400, r.text
    error = rpc_error(r)
    assert error["code"] == -32022
    assert MODERN in error["data"]["supported"]
    assert error["data"]["requested"] == "1900-01-01"
    # Also when only `_meta` carries it.
    r = cola.mcp(key["key"], "tools/list", {"_meta": {META_VERSION: "1900-01-01"}}, headers={"MCP-Protocol-Version": None})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32022


def test_version_header_unlike_an_unsupported_meta_version_is_a_header_mismatch(
    cola: ColaServer, key: dict[str, Any], owner: Owner
) -> None:
    # The request contradicts itself, so it is a header mismatch, not an
    # unsupported version (the conformance suite's
    # sep-2575-http-server-header-mismatch-400 sends exactly this).
    r = cola.mcp(key["key"], "server/discover", {"_meta": {META_VERSION: "v999.0.0"}}, id="probe")
    assert r.status_code == 400, r.text
    assert rpc_error(r)["code"] == -32020
    assert r.json()["id"] == "probe"
    # Roles swapped: the header names the unknown version.
    r = cola.mcp(key["key"], "server/discover", headers={"MCP-Protocol-Version": "v999.0.0"})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    # A call refused this way runs nothing.
    target = owner.create_key()
    params = {"name": "revoke_api_key", "arguments": {"id": target["id"]}, "_meta": {META_VERSION: "1900-01-01"}}
    r = cola.mcp(key["key"], "tools/call", params)
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    assert owner.get_key(target["id"])["status"] == "active"


def test_modern_protocol_version_header_mismatch(cola: ColaServer, key: dict[str, Any]) -> None:
    r = cola.mcp(key["key"], "tools/list", headers={"MCP-Protocol-Version": None})
    assert r.status_code == 400, r.text
    assert rpc_error(r)["code"] == -32020


def test_mcp_method_header_must_match(cola: ColaServer, key: dict[str, Any]) -> None:
    for value in ("resources/list", None, "", "TOOLS/LIST"):
        r = cola.mcp(key["key"], "tools/list", headers={"Mcp-Method": value})
        assert r.status_code == 400, (value, r.text)
        assert rpc_error(r)["code"] == -32020, value
    # Header names are case-insensitive.
    r = cola.mcp(key["key"], "tools/list", headers={"MCP-METHOD": "tools/list"})
    assert r.status_code == 200, r.text


def test_mcp_name_header_must_match(cola: ColaServer, key: dict[str, Any]) -> None:
    for value in ("list_api_keys", None, "whoami2"):
        r = cola.call_tool(key["key"], "whoami", {}, headers={"Mcp-Name": value})
        assert r.status_code == 400, (value, r.text)
        assert rpc_error(r)["code"] == -32020, value
    uri = f"cola://keys/{key['id']}"
    r = cola.mcp(key["key"], "resources/read", {"uri": uri}, headers={"Mcp-Name": uri + "x"})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    r = cola.mcp(key["key"], "resources/read", {"uri": uri}, headers={"Mcp-Name": None})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020

def test_a_mismatched_call_runs_nothing(cola: ColaServer, key: dict[str, Any], owner: Owner) -> None:
    target = owner.create_key()
    r = cola.call_tool(key["key"], "revoke_api_key", {"id": target["id"]}, headers={"Mcp-Name": "whoami"})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    r = cola.call_tool(key["key"], "revoke_api_key", {"id": target["id"]}, headers={"Mcp-Method": "tools/list"})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    assert owner.get_key(target["id"])["status"] == "active"


def test_mcp_name_header_in_base64(cola: ColaServer, key: dict[str, Any]) -> None:
    r = cola.call_tool(key["key"], "whoami", {}, headers={"Mcp-Name": b64_header("whoami")})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["structuredContent"]["key_id"] == key["id"]
    uri = f"cola://keys/{key['id']}"
    r = cola.mcp(key["key"], "resources/read", {"uri": uri}, headers={"Mcp-Name": b64_header(uri)})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["result"]["contents"][0]["text"])["id"] == key["id"]
    # A base64 value that decodes to something else is a mismatch.
    r = cola.call_tool(key["key"], "whoami", {}, headers={"Mcp-Name": b64_header("list_api_keys")})
    assert r.status_code == 400 and rpc_error(r)["code"] == -32020
    # A non-ASCII URI can only travel in base64.
    odd = "cola://keys/é"
    r = cola.mcp(key["key"], "resources/read", {"uri": odd}, headers={"Mcp-Name": b64_header(odd)})
    assert r.status_code == 200, r.text
    assert rpc_error(r)["code"] == -32602
    assert rpc_error(r)["data"]["uri"] == odd


def test_modern_unknown_and_removed_methods_are_404(cola: ColaServer, key: dict[str, Any]) -> None:
    for method in ("no/such/method", "ping", "initialize", "logging/setLevel", "resources/subscribe", "prompts/list"):
        r = cola.mcp(key["key"], method)
        assert r.status_code == 404, (method, r.status_code, r.text)
        error = rpc_error(r)
        assert error["code"] == -32601, method
        assert r.json()["id"] == 1


def test_modern_notification_is_202(cola: ColaServer, key: dict[str, Any]) -> None:
    r = cola.mcp(key["key"], "notifications/cancelled", {"requestId": 1}, notification=True)
    assert r.status_code == 202 and r.content == b""


def test_resource_not_found_codes_per_era(cola: ColaServer, key: dict[str, Any], owner: Owner) -> None:
    stranger = cola.owner().create_key()
    for uri in (
        "cola://keys/00000000-0000-4000-8000-000000000000",
        f"cola://keys/{stranger['id']}",  # exists, but not the owner's
        "cola://elsewhere",
    ):
        legacy = cola.mcp(key["key"], "resources/read", {"uri": uri}, era="legacy")
        assert legacy.status_code == 200
        assert rpc_error(legacy)["code"] == -32002, uri
        assert rpc_error(legacy)["data"]["uri"] == uri
        modern = cola.mcp(key["key"], "resources/read", {"uri": uri})
        assert modern.status_code == 200, modern.text
        assert rpc_error(modern)["code"] == -32602, uri
        assert rpc_error(modern)["data"]["uri"] == uri
        # A denied resource answers exactly as a missing one.
        assert {k: v for k, v in rpc_error(modern).items() if k != "data"} == {
            k: v for k, v in rpc_error(cola.mcp(key["key"], "resources/read", {"uri": "cola://elsewhere"})).items() if k != "data"
        }


def test_every_modern_result_has_its_fields(cola: ColaServer, key: dict[str, Any], owner: Owner) -> None:
    uri = f"cola://keys/{key['id']}"
    calls: list[tuple[str, dict[str, Any] | None, bool]] = [
        ("server/discover", None, True),
        ("tools/list", None, True),
        ("resources/list", None, True),
        ("resources/read", {"uri": uri}, True),
        ("resources/templates/list", None, True),
        ("tools/call", {"name": "whoami", "arguments": {}}, False),
        ("tools/call", {"name": "list_api_keys", "arguments": {}}, False),
        ("tools/call", {"name": "revoke_api_key", "arguments": {"id": "not-a-uuid"}}, False),
    ]
    for method, params, cacheable in calls:
        r = cola.mcp(key["key"], method, params)
        assert r.status_code == 200, (method, r.text)
        result = r.json()["result"]
        assert result["resultType"] == "complete", method
        if cacheable:
            assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0, method
            assert result["cacheScope"] == "private", method

    discover = cola.mcp(key["key"], "server/discover").json()["result"]
    assert MODERN in discover["supportedVersions"]
    assert "tools" in discover["capabilities"] and "resources" in discover["capabilities"]
    assert discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
    assert cola.mcp(key["key"], "resources/templates/list").json()["result"]["resourceTemplates"] == []

    read = cola.mcp(key["key"], "resources/read", {"uri": uri}).json()["result"]
    assert len(read["contents"]) == 1
    content = read["contents"][0]
    assert content["uri"] == uri and content["mimeType"] == "application/json"
    assert without_usage(json.loads(content["text"])) == without_usage(owner.get_key(key["id"]))

    failed = cola.call_tool(key["key"], "revoke_api_key", {"id": "not-a-uuid"}).json()["result"]
    assert failed["isError"] is True
    assert owner.get_key(key["id"])["status"] == "active"


def test_id_is_echoed(cola: ColaServer, key: dict[str, Any]) -> None:
    for era in ("legacy", "modern"):
        for request_id in ("abc-1", 42, 0):
            r = cola.mcp(key["key"], "tools/list", era=era, id=request_id)
            assert r.json()["id"] == request_id


# --------------------------------------------------------------------------
# Garbage in, 4xx out, and the server keeps serving
# --------------------------------------------------------------------------


def post_raw(cola: ColaServer, key: dict[str, Any], content: bytes, content_type: str | None = "application/json"):  # type: ignore[no-untyped-def]
    headers = {**auth(key["key"]), "Accept": "application/json, text/event-stream"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return cola.http.post("/mcp", content=content, headers=headers)


@pytest.mark.parametrize(
    ("name", "content", "content_type", "status"),
    [
        ("invalid json", b'{"jsonrpc": "2.0", "id": 1, "method": ', "application/json", 400),
        ("not utf-8", b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}', "application/json", 400),
        ("empty", b"", "application/json", 400),
        ("batch", json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]).encode(), "application/json", 400),
        ("number", b"42", "application/json", 400),
        ("string", b'"tools/list"', "application/json", 400),
        ("null", b"null", "application/json", 400),
        ("wrong jsonrpc", json.dumps({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}).encode(), "application/json", 400),
        ("no jsonrpc", json.dumps({"id": 1, "method": "tools/list"}).encode(), "application/json", 400),
        ("params not object", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}).encode(), "application/json", 400),
        ("method not string", json.dumps({"jsonrpc": "2.0", "id": 1, "method": 7}).encode(), "application/json", 400),
        ("object id", json.dumps({"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}).encode(), "application/json", 400),
        (
            "70 KiB",
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * 70 * 1024}}).encode(),
            "application/json",
            413,
        ),
        ("text/plain", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(), "text/plain", 415),
        ("no content type", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(), None, 415),
        ("form", b"jsonrpc=2.0&id=1&method=tools/list", "application/x-www-form-urlencoded", 415),
    ],
)
def test_garbage_bodies_get_4xx(
    cola: ColaServer, key: dict[str, Any], name: str, content: bytes, content_type: str | None, status: int
) -> None:
    r = post_raw(cola, key, content, content_type)
    assert r.status_code == status, (name, r.status_code, r.text)
    if r.content:
        body = r.json()
        assert "result" not in body, name
    assert_works(cola, key)


def test_a_client_response_is_accepted_without_answer(cola: ColaServer, key: dict[str, Any]) -> None:
    r = post_raw(cola, key, json.dumps({"jsonrpc": "2.0", "id": 7, "result": {}}).encode())
    assert r.status_code == 202 and r.content == b""


def test_oversized_body_without_a_key_is_still_401(cola_proxy: ColaServer, client_ip: str) -> None:
    # Authentication comes first: an anonymous caller learns nothing about body handling.
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * 70 * 1024}})
    r = cola_proxy.http.post(
        "/mcp", content=big, headers={"Content-Type": "application/json", "X-Forwarded-For": client_ip}
    )
    assert r.status_code == 401
