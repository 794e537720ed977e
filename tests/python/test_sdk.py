"""The official MCP Python SDK client (`mcp` 2.x) against the real server,
in each connection mode, with nothing but a header (docs/mcp.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from colatest import ALL_TOOLS, LEGACY, MODERN, ColaServer, Owner, without_usage

pytestmark = pytest.mark.anyio

MODES = ["legacy", MODERN, "auto"]


class Wire:
    """What the SDK put on the wire: (HTTP method, JSON-RPC method, headers)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, dict[str, str]]] = []

    async def on_request(self, request: httpx2.Request) -> None:
        rpc_method = None
        if request.method == "POST":
            try:
                rpc_method = json.loads(request.content).get("method")
            except ValueError:
                pass
        self.requests.append((request.method, rpc_method, {k.lower(): v for k, v in request.headers.items()}))

    @property
    def rpc_methods(self) -> list[str | None]:
        return [m for _, m, _ in self.requests]


@asynccontextmanager
async def sdk_client(
    server: ColaServer,
    key: str,
    mode: str,
    *,
    wire: Wire | None = None,
    header: str = "Authorization",
    extra_headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    value = f"Bearer {key}" if header == "Authorization" else key
    hooks = {"request": [wire.on_request]} if wire else {}
    async with httpx2.AsyncClient(
        headers={header: value, **(extra_headers or {})}, timeout=30.0, event_hooks=hooks
    ) as http:
        transport = streamable_http_client(server.mcp_url, http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


def expected_version(mode: str) -> str:
    return LEGACY if mode == "legacy" else MODERN


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_full_tour(cola: ColaServer, owner: Owner, mode: str) -> None:
    main = owner.create_key(permissions={"read": True, "write": True})
    other = owner.create_key(name="the other one")
    # A key of another user in the same tenant and one of another tenant:
    # neither may show up anywhere.
    neighbour = cola.owner(tenant=owner.tenant_id).create_key()
    stranger = cola.owner().create_key()
    wire = Wire()

    async with sdk_client(cola, main["key"], mode, wire=wire) as client:
        assert client.protocol_version == expected_version(mode)

        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ALL_TOOLS
        for tool in tools:
            assert tool.description
            assert tool.input_schema.get("type") == "object"

        who = await client.call_tool("whoami", {})
        assert not who.is_error
        me = who.structured_content
        assert me["tenant_id"] == owner.tenant_id
        assert me["user_id"] == owner.user_id
        assert me["key_id"] == main["id"]
        assert me["key_prefix"] == main["key_prefix"]
        assert main["key"].startswith(me["key_prefix"])
        assert me["permissions"] == main["permissions"]
        assert json.loads(who.content[0].text) == me

        uris = [r.uri for r in (await client.list_resources()).resources]
        assert sorted(uris) == sorted([f"cola://keys/{main['id']}", f"cola://keys/{other['id']}"])
        for foreign in (neighbour, stranger):
            assert f"cola://keys/{foreign['id']}" not in uris

        read = await client.read_resource(f"cola://keys/{other['id']}")
        assert len(read.contents) == 1
        content = read.contents[0]
        assert content.mime_type == "application/json"
        assert str(content.uri) == f"cola://keys/{other['id']}"
        assert without_usage(json.loads(content.text)) == without_usage(owner.get_key(other["id"]))
        assert "key" not in json.loads(content.text)

        listed = await client.call_tool("list_api_keys", {})
        assert not listed.is_error
        items = listed.structured_content["items"]
        assert sorted(i["id"] for i in items) == sorted([main["id"], other["id"]])
        assert all("key" not in i for i in items)

        # Another user's key, even in the same tenant, is not "yours".
        foreign = await client.call_tool("revoke_api_key", {"id": neighbour["id"]})
        assert foreign.is_error
        assert cola.owner(tenant=owner.tenant_id, role="admin").get_key(neighbour["id"])["status"] == "active"

        revoked = await client.call_tool("revoke_api_key", {"id": other["id"]})
        assert not revoked.is_error, revoked
        assert revoked.structured_content == {"id": other["id"], "revoked": True}

    after = owner.get_key(other["id"])
    assert after["status"] == "revoked"
    assert after["revoked_by"] == owner.user_id
    assert owner.get_key(main["id"])["status"] == "active"

    # The mode really was what it claims to be on the wire.
    methods = wire.rpc_methods
    if mode == "legacy":
        assert methods[0] == "initialize"
        assert "server/discover" not in methods
    elif mode == "auto":
        assert methods[0] == "server/discover"
        assert "initialize" not in methods
    else:
        assert "initialize" not in methods and "server/discover" not in methods
        for http_method, rpc, headers in wire.requests:
            assert http_method == "POST"
            assert headers.get("mcp-method") == rpc
            assert headers.get("mcp-protocol-version") == MODERN
    # Stateless: never a GET stream or a DELETE, since no session was minted.
    assert {m for m, _, _ in wire.requests} == {"POST"}


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_with_x_api_key_header(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key()
    async with sdk_client(cola, key["key"], mode, header="X-API-Key") as client:
        who = await client.call_tool("whoami", {})
        assert who.structured_content["key_id"] == key["id"]


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_refused_with_a_bad_key(cola_proxy: ColaServer, client_ip: str, mode: str) -> None:
    owner = cola_proxy.owner()
    key = owner.create_key()
    bad = key["key"][:-1] + ("0" if key["key"][-1] != "0" else "1")
    xff = {"X-Forwarded-For": client_ip}
    raw = cola_proxy.mcp(bad, "tools/list", headers=xff)
    assert raw.status_code == 401
    refusal = raw.json()["error"]

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - the SDK wraps it in task-group exception groups
        async with sdk_client(cola_proxy, bad, mode, extra_headers=xff) as client:
            await client.list_tools()
    errors = [e for e in leaf_exceptions(caught.value) if isinstance(e, MCPError)]
    assert errors, caught.value
    # The SDK surfaces the server's JSON-RPC refusal as-is.
    assert errors[0].code == refusal["code"]
    assert errors[0].message == refusal["message"]

    # The good key from the same address still works.
    async with sdk_client(cola_proxy, key["key"], mode, extra_headers=xff) as client:
        assert (await client.call_tool("whoami", {})).structured_content["key_id"] == key["id"]


# --------------------------------------------------------------------------
# Permission shapes, through the SDK
# --------------------------------------------------------------------------

SDK_MODES = ["legacy", MODERN]


def resource_not_found_code(mode: str) -> int:
    return -32002 if mode == "legacy" else -32602


async def tool_names(client: Client) -> list[str]:
    return [t.name for t in (await client.list_tools()).tools]


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_read_only_key(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key(permissions={"read": True, "write": False})
    target = owner.create_key()
    async with sdk_client(cola, key["key"], mode) as client:
        assert await tool_names(client) == ["whoami", "list_api_keys"]
        with pytest.raises(MCPError) as caught:
            await client.call_tool("revoke_api_key", {"id": target["id"]})
        assert caught.value.code == -32602
        # Exactly as for a tool that does not exist.
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_tool", {"id": target["id"]})
        assert unknown.value.code == -32602
        # Reading is allowed.
        uris = {r.uri for r in (await client.list_resources()).resources}
        assert uris == {f"cola://keys/{key['id']}", f"cola://keys/{target['id']}"}
        read = await client.read_resource(f"cola://keys/{target['id']}")
        assert json.loads(read.contents[0].text)["id"] == target["id"]
    assert owner.get_key(target["id"])["status"] == "active"


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_write_only_key(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key(permissions={"read": False, "write": True})
    target = owner.create_key()
    async with sdk_client(cola, key["key"], mode) as client:
        assert await tool_names(client) == ["revoke_api_key"]
        assert (await client.list_resources()).resources == []
        with pytest.raises(MCPError) as caught:
            await client.read_resource(f"cola://keys/{target['id']}")
        assert caught.value.code == resource_not_found_code(mode)
        for name in ("whoami", "list_api_keys"):
            with pytest.raises(MCPError) as denied:
                await client.call_tool(name, {})
            assert denied.value.code == -32602
        assert owner.get_key(target["id"])["status"] == "active"
        result = await client.call_tool("revoke_api_key", {"id": target["id"]})
        assert not result.is_error
    assert owner.get_key(target["id"])["status"] == "revoked"


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_read_write_key(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key(permissions={"read": True, "write": True})
    async with sdk_client(cola, key["key"], mode) as client:
        assert await tool_names(client) == ALL_TOOLS
        assert [r.uri for r in (await client.list_resources()).resources] == [f"cola://keys/{key['id']}"]
        # A tool failing while it runs is a result with isError, not a protocol error.
        failed = await client.call_tool("revoke_api_key", {"id": "00000000-0000-4000-8000-000000000000"})
        assert failed.is_error
        failed = await client.call_tool("revoke_api_key", {})
        assert failed.is_error
    assert owner.get_key(key["id"])["status"] == "active"


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_tool_allow_list(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key(permissions={"read": True, "write": True, "allowed_tools": ["whoami"]})
    target = owner.create_key()
    async with sdk_client(cola, key["key"], mode) as client:
        assert await tool_names(client) == ["whoami"]
        assert (await client.call_tool("whoami", {})).structured_content["key_id"] == key["id"]
        for name, args in (("list_api_keys", {}), ("revoke_api_key", {"id": target["id"]})):
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, args)
            assert caught.value.code == -32602
    assert owner.get_key(target["id"])["status"] == "active"


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_empty_tool_allow_list(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key(permissions={"read": True, "write": True, "allowed_tools": []})
    async with sdk_client(cola, key["key"], mode) as client:
        assert await tool_names(client) == []
        with pytest.raises(MCPError) as caught:
            await client.call_tool("whoami", {})
        assert caught.value.code == -32602
        # Resources are not tools: still readable.
        assert [r.uri for r in (await client.list_resources()).resources] == [f"cola://keys/{key['id']}"]


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_resource_allow_list_exact(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key()
    allowed = owner.create_key(name="allowed")
    hidden = owner.create_key(name="hidden")
    owner.patch_permissions(
        key["id"], permissions={"read": True, "allowed_resources": [f"cola://keys/{allowed['id']}"]}
    )
    async with sdk_client(cola, key["key"], mode) as client:
        assert [r.uri for r in (await client.list_resources()).resources] == [f"cola://keys/{allowed['id']}"]
        read = await client.read_resource(f"cola://keys/{allowed['id']}")
        assert json.loads(read.contents[0].text)["id"] == allowed["id"]
        for uri in (f"cola://keys/{hidden['id']}", f"cola://keys/{key['id']}"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            assert caught.value.code == resource_not_found_code(mode)
        # Tools are not governed by the resource list.
        assert await tool_names(client) == ["whoami", "list_api_keys"]


@pytest.mark.parametrize("mode", SDK_MODES)
async def test_resource_allow_list_prefix(cola: ColaServer, owner: Owner, mode: str) -> None:
    key = owner.create_key()
    target = owner.create_key(name="target")
    # UUIDv7 ids of keys made in the same millisecond share their start; 30
    # characters include random bits, so this prefix names `target` only.
    prefix = f"cola://keys/{target['id'][:30]}*"
    owner.patch_permissions(key["id"], permissions={"read": True, "allowed_resources": [prefix]})
    async with sdk_client(cola, key["key"], mode) as client:
        assert [r.uri for r in (await client.list_resources()).resources] == [f"cola://keys/{target['id']}"]
        read = await client.read_resource(f"cola://keys/{target['id']}")
        assert json.loads(read.contents[0].text)["id"] == target["id"]
        with pytest.raises(MCPError) as caught:
            await client.read_resource(f"cola://keys/{key['id']}")
        assert caught.value.code == resource_not_found_code(mode)

    owner.patch_permissions(key["id"], permissions={"read": True, "allowed_resources": ["cola://keys/*"]})
    async with sdk_client(cola, key["key"], mode) as client:
        uris = sorted(r.uri for r in (await client.list_resources()).resources)
        assert uris == sorted([f"cola://keys/{key['id']}", f"cola://keys/{target['id']}"])

    owner.patch_permissions(key["id"], permissions={"read": True, "allowed_resources": ["cola://other/*"]})
    async with sdk_client(cola, key["key"], mode) as client:
        assert (await client.list_resources()).resources == []


async def test_unknown_resource(cola: ColaServer, owner: Owner) -> None:
    key = owner.create_key()
    for mode in SDK_MODES:
        async with sdk_client(cola, key["key"], mode) as client:
            for uri in ("cola://keys/00000000-0000-4000-8000-000000000000", "cola://keys/nope", "file:///etc/passwd"):
                with pytest.raises(MCPError) as caught:
                    await client.read_resource(uri)
                assert caught.value.code == resource_not_found_code(mode)
                data: Any = caught.value.data
                assert isinstance(data, dict) and data.get("uri") == uri
