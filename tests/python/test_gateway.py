"""The gateway `/mcp/{slug}` (docs/gateway.md) end to end: the real binary in
front of real upstream MCP servers built with the official Python SDK
(`upstream_server.py`), reached by the official Python SDK client in every
mode and by raw HTTP. Each upstream records what it received, so a test
proves what never reached it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from colatest import LEGACY, MODERN, ColaServer, Owner, auth, free_port, mcp_request, poll, rpc_error

HERE = Path(__file__).resolve().parent
UPSTREAM_SECRET = "Bearer upstream-" + uuid.uuid4().hex
MODES = ["legacy", MODERN, "auto"]


@dataclass
class Upstream:
    port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def record(self) -> list[dict[str, Any]]:
        return httpx2.get(f"http://127.0.0.1:{self.port}/record", timeout=10).json()

    def clear(self) -> None:
        httpx2.delete(f"http://127.0.0.1:{self.port}/record", timeout=10)

    def received(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.record() if all(e.get(k) == v for k, v in match.items())]


def start_upstream(*args: str) -> Upstream:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "upstream_server.py"), str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("READY"), "the upstream did not start"

    def answers() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/record", timeout=2).status_code == 200
        except httpx2.TransportError:
            return False

    poll(answers, until=bool, deadline_s=30, what="the upstream to listen")
    return Upstream(port, process)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    started = {
        "sse": start_upstream("--require-header", f"Authorization={UPSTREAM_SECRET}"),
        "json": start_upstream("--json", "--require-header", f"Authorization={UPSTREAM_SECRET}"),
    }
    yield started
    for upstream in started.values():
        upstream.process.terminate()
        upstream.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    return cola_factory(COLA_GATEWAY_ALLOWED_NETWORKS="127.0.0.0/8", COLA_SECRETS_KEY="YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=")


@pytest.fixture
def admin(gateway: ColaServer) -> Owner:
    return gateway.owner(role="admin")


def register(owner: Owner, url: str, **body: Any) -> dict[str, Any]:
    body.setdefault("slug", f"s-{uuid.uuid4().hex[:10]}")
    body.setdefault("name", "upstream under test")
    body.setdefault("headers", {"Authorization": UPSTREAM_SECRET})
    r = owner.server.http.post("/api/mcp/servers", json={"url": url, **body}, headers=owner.headers)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


def grant(slug: str, **lists: Any) -> dict[str, Any]:
    return {slug: {"allowed_tools": None, "allowed_resources": None, "allowed_prompts": None, **lists}}


def gateway_post(
    server: ColaServer,
    slug: str,
    key: str | None,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    era: str = "modern",
    id: Any = 1,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    h, body = mcp_request(method, params, era=era, id=id)
    if key is not None:
        h.update(auth(key))
    h.update(headers or {})
    return server.http.post(f"/mcp/{slug}", content=json.dumps(body).encode(), headers=h)


def answer_of(r: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, from a JSON body or the last message
    of an SSE one."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        answers = [m for m in messages if "result" in m or "error" in m]
        assert answers, r.text
        return answers[-1]
    return r.json()


class Session:
    """A raw handshake-era session through the gateway."""

    def __init__(self, server: ColaServer, slug: str, key: str) -> None:
        self.server, self.slug, self.key = server, slug, key
        r = gateway_post(
            server,
            slug,
            key,
            "initialize",
            {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
            era="legacy",
        )
        assert r.status_code == 200, (r.status_code, r.text)
        self.id = r.headers["mcp-session-id"]
        initialized = self.post("notifications/initialized", notification=True)
        assert initialized.status_code == 202, initialized.text

    def post(self, method: str, params: dict[str, Any] | None = None, *, notification: bool = False, key: str | None = None, slug: str | None = None, session: str | None = None) -> httpx2.Response:
        h, body = mcp_request(method, params, era="legacy", notification=notification)
        h.update(auth(key or self.key))
        h["Mcp-Session-Id"] = session or self.id
        return self.server.http.post(f"/mcp/{slug or self.slug}", content=json.dumps(body).encode(), headers=h)


@asynccontextmanager
async def sdk(server: ColaServer, slug: str, key: str, mode: str, **headers: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **headers}, timeout=30.0) as http:
        transport = streamable_http_client(f"{server.base_url}/mcp/{slug}", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


# --------------------------------------------------------------------------
# Real clients see exactly what the grant allows
# --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["sse", "json"])
async def test_the_sdk_client_sees_and_calls_exactly_the_granted_tools(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream], mode: str, kind: str
) -> None:
    upstream = upstreams[kind]
    server = register(admin, upstream.url)
    slug = server["slug"]
    key = admin.create_key(
        permissions={"read": True, "write": False, "servers": grant(slug, allowed_tools=["search*", "create_issue"])}
    )["key"]
    upstream.clear()
    async with sdk(gateway, slug, key, mode) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        # create_issue is granted by name but writes, and the key only reads.
        assert tools == ["search", "search_archive"]
        result = await client.call_tool("search", {"query": "cola"})
        assert result.content[0].text == "results for cola"
        for hidden in ("create_issue", "delete_repo", "echo_headers"):
            with pytest.raises(MCPError) as refused:
                await client.call_tool(hidden, {"title": "x", "name": "x"})
            assert refused.value.code == -32602
    calls = {e.get("name") for e in upstream.received(method="tools/call")}
    assert calls == {"search"}


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts_are_filtered_and_hidden_ones_refused(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream], mode: str
) -> None:
    upstream = upstreams["sse"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(
        permissions={
            "read": True,
            "write": False,
            "servers": grant(slug, allowed_resources=["docs://public/*"], allowed_prompts=["greet"]),
        }
    )["key"]
    upstream.clear()
    async with sdk(gateway, slug, key, mode) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        assert resources == ["docs://public/readme"]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert templates == ["docs://public/pages/{name}"]
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        assert prompts == ["greet"]
        read = await client.read_resource("docs://public/readme")
        assert read.contents[0].text == "public readme"
        with pytest.raises(MCPError):
            await client.read_resource("docs://secret/plan")
        with pytest.raises(MCPError) as refused:
            await client.get_prompt("secret_prompt")
        assert refused.value.code == -32602
    assert not upstream.received(method="resources/read", uri="docs://secret/plan")
    assert not upstream.received(method="prompts/get", name="secret_prompt")


# --------------------------------------------------------------------------
# Every method that names something × both eras × a hidden item
# --------------------------------------------------------------------------

HIDDEN_CALLS = [
    ("tools/call", {"name": "delete_repo", "arguments": {"name": "x"}}, -32602, -32602),
    ("resources/read", {"uri": "docs://secret/plan"}, -32002, -32602),
    ("prompts/get", {"name": "secret_prompt"}, -32602, -32602),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "secret_prompt"}, "argument": {"name": "a", "value": "b"}}, -32602, -32602),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "docs://secret/pages/{name}"}, "argument": {"name": "name", "value": "b"}}, -32002, -32602),
]


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize(("method", "params", "legacy_code", "modern_code"), HIDDEN_CALLS)
def test_a_message_naming_a_hidden_item_gets_the_unknown_name_error_and_never_arrives(
    gateway: ColaServer,
    admin: Owner,
    upstreams: dict[str, Upstream],
    era: str,
    method: str,
    params: dict[str, Any],
    legacy_code: int,
    modern_code: int,
) -> None:
    upstream = upstreams["json"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(
        permissions={
            "read": True,
            "write": True,
            "servers": grant(slug, allowed_tools=["search"], allowed_resources=["docs://public/*"], allowed_prompts=["greet"]),
        }
    )["key"]
    upstream.clear()
    if era == "legacy":
        session = Session(gateway, slug, key)
        r = session.post(method, params)
    else:
        r = gateway_post(gateway, slug, key, method, params)
    assert r.status_code == 200, r.text
    error = rpc_error(r)
    assert error["code"] == (legacy_code if era == "legacy" else modern_code), error
    assert not upstream.received(method=method), upstream.record()


def test_a_case_variant_or_duplicate_key_is_refused_before_any_policy(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    upstream = upstreams["json"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": True, "servers": grant(slug, allowed_tools=["search"])})["key"]
    upstream.clear()
    h, _ = mcp_request("tools/call", {"name": "search"}, era="modern")
    h.update(auth(key))
    meta = json.dumps({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}})
    for body in (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","Name":"delete_repo","_meta":%s}}' % meta,
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_repo","_meta":%s}}' % meta,
    ):
        r = gateway.http.post(f"/mcp/{slug}", content=body.encode(), headers=h)
        assert r.status_code == 400, r.text
        assert rpc_error(r)["code"] == -32700
    assert not upstream.received(method="tools/call")


def test_modern_headers_must_match_the_body_before_any_policy(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    upstream = upstreams["json"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": True, "servers": grant(slug, allowed_tools=["search"])})["key"]
    upstream.clear()
    r = gateway_post(gateway, slug, key, "tools/call", {"name": "search", "arguments": {"query": "q"}}, headers={"Mcp-Name": "delete_repo"})
    assert r.status_code == 400
    assert rpc_error(r)["code"] == -32020
    assert not upstream.received(method="tools/call")


@pytest.mark.parametrize("kind", ["sse", "json"])
@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_lists_are_filtered_in_json_and_sse_answers_and_private(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream], kind: str, era: str
) -> None:
    slug = register(admin, upstreams[kind].url)["slug"]
    key = admin.create_key(
        permissions={"read": True, "write": False, "servers": grant(slug, allowed_tools=["search", "create_issue"])}
    )["key"]
    if era == "legacy":
        r = Session(gateway, slug, key).post("tools/list")
    else:
        r = gateway_post(gateway, slug, key, "tools/list")
    assert r.status_code == 200, r.text
    # The SDK's server streams handshake-era answers when asked to; in
    # 2026-07-28 it answers a list as JSON whatever its mode.
    expected_type = "text/event-stream" if kind == "sse" and era == "legacy" else "application/json"
    assert r.headers["content-type"].startswith(expected_type)
    result = answer_of(r)["result"]
    assert [t["name"] for t in result["tools"]] == ["search"]
    assert result["cacheScope"] == "private"


def test_an_answer_that_needs_no_filtering_reaches_the_client_as_the_upstream_wrote_it(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    upstream = upstreams["json"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    params = {"name": "search", "arguments": {"query": "cola"}}
    through = gateway_post(gateway, slug, key, "tools/call", params)
    h, body = mcp_request("tools/call", params, era="modern")
    h["Authorization"] = UPSTREAM_SECRET
    direct = httpx2.post(upstream.url, content=json.dumps(body).encode(), headers=h, timeout=10)
    assert direct.status_code == through.status_code == 200, (direct.text, through.text)
    assert through.headers["content-type"].startswith("application/json")
    assert "results for cola" in through.text
    # Byte for byte: parsing and writing it again would have sorted its keys.
    assert through.content == direct.content


# --------------------------------------------------------------------------
# Credentials: the client's never reach the upstream; the server's do
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_the_upstream_gets_its_own_credential_and_none_of_the_clients(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream], era: str
) -> None:
    upstream = upstreams["sse"]
    slug = register(admin, upstream.url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    extra = {"X-API-Key": key, "Cookie": "session=client-cookie", "X-Client-Only": "1"}
    if era == "legacy":
        session = Session(gateway, slug, key)
        h, body = mcp_request("tools/call", {"name": "echo_headers", "arguments": {}}, era="legacy")
        h.update({**auth(key), **extra, "Mcp-Session-Id": session.id})
        r = gateway.http.post(f"/mcp/{slug}", content=json.dumps(body).encode(), headers=h)
    else:
        r = gateway_post(gateway, slug, key, "tools/call", {"name": "echo_headers", "arguments": {}}, headers=extra)
        session = None
    assert r.status_code == 200, r.text
    received = json.loads(answer_of(r)["result"]["content"][0]["text"])
    assert received["authorization"] == UPSTREAM_SECRET
    for header in ("x-api-key", "cookie", "x-client-only"):
        assert header not in received, received
    assert key not in json.dumps(received)
    if session is not None:
        # The upstream got its own session id, never Cola's.
        assert received["mcp-session-id"] != session.id


def test_server_headers_are_never_shown(gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]) -> None:
    server = register(admin, upstreams["sse"].url)
    assert UPSTREAM_SECRET not in json.dumps(server)
    listed = admin.server.http.get("/api/mcp/servers", headers=admin.headers).text
    assert UPSTREAM_SECRET not in listed


# --------------------------------------------------------------------------
# Sessions are bound to the key and the server
# --------------------------------------------------------------------------


def test_a_session_replayed_with_another_key_or_on_another_server_is_unknown(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    upstream = upstreams["sse"]
    first = register(admin, upstream.url)["slug"]
    second = register(admin, upstream.url)["slug"]
    servers = {**grant(first), **grant(second)}
    key = admin.create_key(permissions={"read": True, "write": False, "servers": servers})["key"]
    other_key = admin.create_key(permissions={"read": True, "write": False, "servers": servers})["key"]
    session = Session(gateway, first, key)
    assert session.post("tools/list").status_code == 200
    assert session.post("tools/list", key=other_key).status_code == 404
    assert session.post("tools/list", slug=second).status_code == 404
    forged = session.id[:-2] + ("AA" if not session.id.endswith("AA") else "BB")
    assert session.post("tools/list", session=forged).status_code == 404
    # The session itself still works for its own key and server.
    assert session.post("tools/list").status_code == 200


def test_a_key_revoked_mid_session_is_refused_on_the_next_request(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    slug = register(admin, upstreams["sse"].url)["slug"]
    created = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})
    session = Session(gateway, slug, created["key"])
    assert session.post("tools/list").status_code == 200
    admin.revoke(created["id"])
    assert session.post("tools/list").status_code == 401


def test_a_deleted_server_answers_404_and_its_slug_reused_is_not_granted(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    server = register(admin, upstreams["sse"].url)
    slug = server["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    assert gateway_post(gateway, slug, key, "tools/list").status_code == 200
    r = gateway.http.delete(f"/api/mcp/servers/{server['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert gateway_post(gateway, slug, key, "tools/list").status_code == 404
    register(admin, upstreams["sse"].url, slug=slug)
    assert gateway_post(gateway, slug, key, "tools/list").status_code == 404


def test_an_unknown_slug_and_an_ungranted_server_answer_the_same_404(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    slug = register(admin, upstreams["sse"].url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": True})["key"]
    ungranted = gateway_post(gateway, slug, key, "tools/list")
    unknown = gateway_post(gateway, "no-such-server", key, "tools/list")
    assert ungranted.status_code == unknown.status_code == 404
    assert ungranted.json() == unknown.json()


def test_the_gateway_needs_a_key_on_every_method(gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]) -> None:
    slug = register(admin, upstreams["sse"].url)["slug"]
    for method in ("POST", "GET", "DELETE"):
        r = gateway.http.request(method, f"/mcp/{slug}", headers={"Content-Type": "application/json"}, content=b"{}")
        assert r.status_code == 401, (method, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")


# --------------------------------------------------------------------------
# Streaming: progress flows through as it comes
# --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_progress_notifications_reach_the_client(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream], mode: str
) -> None:
    slug = register(admin, upstreams["sse"].url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with sdk(gateway, slug, key, mode) as client:
        result = await client.call_tool("count_slowly", {"steps": 3}, progress_callback=on_progress)
        assert result.content[0].text == "counted to 3"
    assert seen == [1, 2, 3]


# --------------------------------------------------------------------------
# Usage and failures
# --------------------------------------------------------------------------


def test_each_admitted_gateway_request_counts_one_use(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    slug = register(admin, upstreams["json"].url)["slug"]
    created = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})
    for _ in range(3):
        assert gateway_post(gateway, slug, created["key"], "tools/list").status_code == 200
    poll(lambda: admin.get_key(created["id"])["usage_count"], until=lambda n: n == 3, deadline_s=10, what="usage 3")


def test_an_upstream_that_is_down_is_a_502_naming_only_the_slug(gateway: ColaServer, admin: Owner) -> None:
    closed = free_port()
    url = f"http://127.0.0.1:{closed}/mcp"
    slug = register(admin, url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    r = gateway_post(gateway, slug, key, "tools/list")
    assert r.status_code == 502
    assert slug in rpc_error(r)["message"]
    assert str(closed) not in r.text and "127.0.0.1" not in r.text and "upstream-" not in r.text
    assert "www-authenticate" not in r.headers


def test_an_upstream_refusing_colas_credential_is_a_502_without_its_challenge(
    gateway: ColaServer, admin: Owner, upstreams: dict[str, Upstream]
) -> None:
    slug = register(admin, upstreams["json"].url, headers={"Authorization": "Bearer wrong"})["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    r = gateway_post(gateway, slug, key, "tools/list")
    assert r.status_code == 502
    assert "www-authenticate" not in r.headers
    assert "upstream-secret" not in r.text and "wrong" not in r.text


def test_an_upstream_slower_than_its_timeout_is_a_504(gateway: ColaServer, admin: Owner) -> None:
    # A listener that accepts and never answers.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        slug = register(admin, f"http://127.0.0.1:{port}/mcp", timeout_secs=1)["slug"]
        key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
        r = gateway_post(gateway, slug, key, "tools/list")
        assert r.status_code == 504
        assert slug in rpc_error(r)["message"]
        assert str(port) not in r.text
    finally:
        silent.close()


def test_an_upstream_event_that_never_ends_is_cut_at_the_limit(gateway: ColaServer, admin: Owner) -> None:
    """A hostile upstream: one small event, then one that grows past
    Cola's 8 MiB limit without ever ending, on a connection it keeps open.
    Cola relays the first, ends the client's stream and hangs up on the
    upstream; without the limit it would hold the event for as long as the
    upstream kept it open, and tell the quiet client so with a keep-alive."""
    import re
    import socket
    import threading

    first = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "first"}}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    finished = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            while match and len(body) < int(match.group(1)):
                body += connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                + f"data: {json.dumps(first)}\n\n".encode()
                + b"data: "
            )
            try:
                for _ in range(9 * 16):  # 9 MiB of one event's data
                    connection.sendall(b"x" * 65536)
            except OSError:
                pass  # Cola hung up, as it should
            finished.wait()  # open until the test ends: only Cola can end the stream

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        port = listener.getsockname()[1]
        slug = register(admin, f"http://127.0.0.1:{port}/mcp")["slug"]
        key = admin.create_key(permissions={"read": True, "write": True, "servers": grant(slug)})["key"]
        h, body = mcp_request("ping", era="modern")
        h.update(auth(key))
        with gateway.http.stream(
            "POST", f"/mcp/{slug}", content=json.dumps(body).encode(), headers=h, timeout=60
        ) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            relayed = b""
            for chunk in r.iter_bytes():
                relayed += chunk
                if b": keep-alive" in relayed:
                    break  # the stream went quiet and Cola kept it open
        assert b": keep-alive" not in relayed, "Cola held the unfinished event instead of ending the stream"
        messages = [json.loads(line[5:]) for line in relayed.decode().splitlines() if line.startswith("data:")]
        assert messages == [first]
        assert b"xxxx" not in relayed
    finally:
        finished.set()
        listener.close()


# --------------------------------------------------------------------------
# Two instances on one PostgreSQL database
# --------------------------------------------------------------------------

# Generous next to the promised 2 s; far below any cache lifetime that an
# instance never told of a change would serve from.
PROPAGATION_DEADLINE_S = 10.0
POSTGRES = "postgres://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[tuple[ColaServer, ColaServer]]:
    database = f"cola_gateway_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", f"{POSTGRES}/postgres", "-qc", f'CREATE DATABASE "{database}"'], check=True)
    shared = {
        "COLA_DATABASE_URL": f"{POSTGRES}/{database}",
        "COLA_GATEWAY_ALLOWED_NETWORKS": "127.0.0.0/8",
        "COLA_SECRETS_KEY": "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M=",
    }
    first = ColaServer(extra_env=shared).start()
    second = None
    try:
        second = ColaServer(extra_env={**shared, "COLA_JWT_SECRET": first.env["COLA_JWT_SECRET"]}).start()
        yield first, second
    finally:
        if second is not None:
            second.cleanup()
        first.cleanup()
        subprocess.run(
            ["psql", f"{POSTGRES}/postgres", "-qc", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False
        )


def test_a_session_opened_on_one_instance_works_on_the_other(
    pg_pair: tuple[ColaServer, ColaServer], upstreams: dict[str, Upstream]
) -> None:
    first, second = pg_pair
    admin = first.owner(role="admin")
    slug = register(admin, upstreams["sse"].url)["slug"]
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})["key"]
    session = Session(first, slug, key)
    elsewhere = Session.__new__(Session)
    elsewhere.server, elsewhere.slug, elsewhere.key, elsewhere.id = second, slug, key, session.id
    r = elsewhere.post("tools/list")
    assert r.status_code == 200, r.text
    assert "tools" in answer_of(r)["result"]


def test_a_grant_removed_on_one_instance_is_enforced_on_the_other(
    pg_pair: tuple[ColaServer, ColaServer], upstreams: dict[str, Upstream]
) -> None:
    first, second = pg_pair
    admin = first.owner(role="admin")
    slug = register(admin, upstreams["json"].url)["slug"]
    created = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})
    # Warm the second instance's cache with the grant.
    assert gateway_post(second, slug, created["key"], "tools/list").status_code == 200
    admin.patch_permissions(created["id"], permissions={"read": True, "write": False, "servers": {}})
    poll(
        lambda: gateway_post(second, slug, created["key"], "tools/list").status_code,
        until=lambda status: status == 404,
        deadline_s=PROPAGATION_DEADLINE_S,
        what="the second instance to drop the grant",
    )


def test_a_server_deleted_on_one_instance_is_gone_on_the_other(
    pg_pair: tuple[ColaServer, ColaServer], upstreams: dict[str, Upstream]
) -> None:
    first, second = pg_pair
    admin = first.owner(role="admin")
    server = register(admin, upstreams["json"].url)
    key = admin.create_key(permissions={"read": True, "write": False, "servers": grant(server["slug"])})["key"]
    assert gateway_post(second, server["slug"], key, "tools/list").status_code == 200
    assert first.http.delete(f"/api/mcp/servers/{server['id']}", headers=admin.headers).status_code == 204
    poll(
        lambda: gateway_post(second, server["slug"], key, "tools/list").status_code,
        until=lambda status: status == 404,
        deadline_s=PROPAGATION_DEADLINE_S,
        what="the second instance to forget the server",
    )
