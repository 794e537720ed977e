"""The gateway's streams (docs/gateway.md) end to end, against the real binary in
front of `upstream_server.py` (the official Python SDK's server, answering
with SSE and keeping handshake-era sessions):

- a 2026-07-28 client that disconnects from a streaming answer cancels the
  upstream's call (the upstream records the cancellation of its task); in
  the handshake era a disconnect cancels nothing, and the client cancels
  with `notifications/cancelled`, which Cola forwards in the session;
- the upstream's own requests (`sampling/createMessage`,
  `elicitation/create`) reach the official Python SDK client through Cola,
  and the client's answers reach the upstream, within the session;
- the GET listen stream and DELETE of a handshake-era session: the stream
  opens and carries the upstream's notifications (filtered), DELETE ends the
  session at the upstream, and neither works with another key or on another
  server;
- concurrent first calls of a granted tool wait for the one catalogue fetch.

Nothing here waits by sleeping: what happens elsewhere is awaited by polling
(the upstream's record, or a stream) against a deadline."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from colatest import LEGACY, ColaServer, Owner, auth, mcp_request, poll
from test_gateway import UPSTREAM_SECRET, Session, Upstream, answer_of, grant, register, start_upstream

PUBLIC = "docs://public/readme"
SECRET = "docs://secret/plan"
# How long anything that happens elsewhere (in Cola, in the upstream) may take.
DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    started = start_upstream("--require-header", f"Authorization={UPSTREAM_SECRET}")
    yield started
    started.process.terminate()
    started.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    # The same settings as test_gateway.py's server, so both share one.
    return cola_factory(COLA_GATEWAY_ALLOWED_NETWORKS="127.0.0.0/8", COLA_SECRETS_KEY="YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=")


@pytest.fixture
def admin(gateway: ColaServer) -> Owner:
    return gateway.owner(role="admin")


def reader_key(owner: Owner, *slugs: str, **lists: Any) -> str:
    """A key that may read (not write) on each of `slugs`."""
    servers: dict[str, Any] = {}
    for slug in slugs:
        servers.update(grant(slug, **lists))
    return owner.create_key(permissions={"read": True, "write": False, "servers": servers})["key"]


async def sse_messages(response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, one per event, as they
    arrive (comments and events without data are skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            text = "\n".join(data)
            data = []
            if text.strip():
                yield json.loads(text)


def listen_headers(key: str, session_id: str) -> dict[str, str]:
    return {**auth(key), "Accept": "text/event-stream", "Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}


async def post_in_session(
    http: httpx2.AsyncClient,
    server: ColaServer,
    slug: str,
    key: str,
    session_id: str,
    method: str,
    params: dict[str, Any],
    *,
    notification: bool = False,
) -> httpx2.Response:
    h, body = mcp_request(method, params, era="legacy", notification=notification)
    h.update({**auth(key), "Mcp-Session-Id": session_id})
    return await http.post(f"{server.base_url}/mcp/{slug}", content=json.dumps(body).encode(), headers=h)


def upstream_session_of(session: Session) -> str:
    """The upstream's own session id behind a Cola session, as the upstream
    reports it (the client never sees it)."""
    r = session.post("tools/call", {"name": "echo_headers", "arguments": {}})
    assert r.status_code == 200, r.text
    received = json.loads(answer_of(r)["result"]["content"][0]["text"])
    assert received["mcp-session-id"] != session.id
    return received["mcp-session-id"]


def stream_call(tag: str, steps: int, era: str, id: int = 1) -> tuple[dict[str, str], bytes]:
    """A tools/call of `stream_slowly` (progress every 100 ms for `steps`)."""
    arguments = {"steps": steps, "interval_ms": 100, "tag": tag}
    h, body = mcp_request("tools/call", {"name": "stream_slowly", "arguments": arguments, "_meta": {"progressToken": tag}}, era=era, id=id)
    return h, json.dumps(body).encode()


# --------------------------------------------------------------------------
# Cancellation: closing the stream in 2026-07-28, a notification in the
# handshake era
# --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_2026_client_that_disconnects_from_a_stream_cancels_the_upstream_call(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    tag = uuid.uuid4().hex
    # 600 steps of 100 ms: a minute of progress, unless the call is cancelled.
    h, body = stream_call(tag, steps=600, era="modern")
    h.update(auth(key))
    progress: list[dict[str, Any]] = []
    async with httpx2.AsyncClient(timeout=30.0) as http:
        async with http.stream("POST", f"{gateway.base_url}/mcp/{slug}", content=body, headers=h) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async with aclosing(sse_messages(r)) as messages:
                async for message in messages:
                    progress.append(message)
                    if len(progress) == 2:
                        break
        # Leaving the block closes the response unread: the client is gone.
    # The stream was relayed as it came, not after the call ended.
    assert [(m["method"], m["params"]["progressToken"], m["params"]["progress"]) for m in progress] == [
        ("notifications/progress", tag, 1),
        ("notifications/progress", tag, 2),
    ]
    cancelled = poll(
        lambda: upstream.received(event="stream_cancelled", tag=tag),
        until=bool,
        deadline_s=DEADLINE_S,
        what="the upstream to see its call cancelled",
    )
    assert cancelled[0]["step"] < 600
    assert not upstream.received(event="stream_finished", tag=tag)


@pytest.mark.anyio
async def test_a_handshake_era_client_that_disconnects_leaves_the_upstream_call_running(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    # In the handshake era a disconnect is not a cancellation (the client
    # may resume): Cola must not make one of it.
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    session = Session(gateway, slug, key)
    upstream_id = upstream_session_of(session)
    tag = uuid.uuid4().hex
    h, body = stream_call(tag, steps=20, era="legacy")
    h.update({**auth(key), "Mcp-Session-Id": session.id})
    async with httpx2.AsyncClient(timeout=30.0) as http:
        async with http.stream("POST", f"{gateway.base_url}/mcp/{slug}", content=body, headers=h) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async with aclosing(sse_messages(r)) as messages:
                async for message in messages:
                    assert message.get("method") == "notifications/progress", message
                    break
    poll(
        lambda: upstream.received(event="stream_finished", tag=tag),
        until=bool,
        deadline_s=DEADLINE_S,
        what="the upstream's call to run to its end",
    )
    assert not upstream.received(event="stream_cancelled", tag=tag)
    cancels = [e for e in upstream.received(method="notifications/cancelled") if e["headers"]["mcp-session-id"] == upstream_id]
    assert not cancels, cancels


@pytest.mark.anyio
async def test_a_cancellation_notification_in_a_session_reaches_the_upstream(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    session = Session(gateway, slug, key)
    upstream_id = upstream_session_of(session)
    tag = uuid.uuid4().hex
    h, body = stream_call(tag, steps=600, era="legacy", id=7)
    h.update({**auth(key), "Mcp-Session-Id": session.id})
    async with httpx2.AsyncClient(timeout=30.0) as http:
        async with http.stream("POST", f"{gateway.base_url}/mcp/{slug}", content=body, headers=h) as r:
            assert r.status_code == 200
            async with aclosing(sse_messages(r)) as messages:
                first = await anext(messages)
                assert first.get("method") == "notifications/progress", first
                cancel = await post_in_session(
                    http, gateway, slug, key, session.id, "notifications/cancelled", {"requestId": 7, "reason": "enough"}, notification=True
                )
                assert cancel.status_code == 202, cancel.text
                # The call's stream then ends, long before its minute is up.
                with anyio.fail_after(DEADLINE_S):
                    async for _ in messages:
                        pass
    cancelled = poll(
        lambda: upstream.received(event="stream_cancelled", tag=tag),
        until=bool,
        deadline_s=DEADLINE_S,
        what="the upstream to cancel its call",
    )
    assert cancelled[0]["step"] < 600
    # Forwarded in the upstream's own session.
    notified = [e for e in upstream.received(method="notifications/cancelled") if e["headers"]["mcp-session-id"] == upstream_id]
    assert len(notified) == 1, upstream.received(method="notifications/cancelled")


# --------------------------------------------------------------------------
# The upstream's requests to the client, answered through Cola
# --------------------------------------------------------------------------


@asynccontextmanager
async def legacy_client(
    server: ColaServer, slug: str, key: str, **callbacks: Any
) -> AsyncIterator[tuple[Client, list[str]]]:
    """The official SDK client in the handshake era through the gateway,
    and the session ids Cola gave it."""
    session_ids: list[str] = []

    async def note_session(response: httpx2.Response) -> None:
        if session_id := response.headers.get("mcp-session-id"):
            session_ids.append(session_id)

    async with httpx2.AsyncClient(headers=auth(key), timeout=30.0, event_hooks={"response": [note_session]}) as http:
        transport = streamable_http_client(f"{server.base_url}/mcp/{slug}", http_client=http)
        async with Client(transport, mode="legacy", **callbacks) as client:
            yield client, session_ids


def answers_reaching(upstream: Upstream, tool: str) -> tuple[list[dict[str, Any]], str]:
    """The responses POSTed to the upstream in the session that called
    `tool`, and that session's (upstream) id."""
    record = upstream.record()
    calls = [e for e in record if e.get("method") == "tools/call" and e.get("name") == tool]
    assert len(calls) == 1, calls
    upstream_session = calls[0]["headers"]["mcp-session-id"]
    answers = [e for e in record if "response_to" in e and e["headers"].get("mcp-session-id") == upstream_session]
    return answers, upstream_session


def assert_forwarded_as_colas(entry: dict[str, Any], key: str, cola_sessions: list[str]) -> None:
    """A request the upstream got carries its own credential and session,
    nothing of the client's."""
    assert entry["headers"]["authorization"] == UPSTREAM_SECRET
    assert entry["headers"]["mcp-session-id"] not in cola_sessions
    assert key not in json.dumps(entry["headers"])


@pytest.mark.anyio
async def test_a_sampling_request_reaches_the_client_and_its_answer_the_upstream(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    asked: list[mcp_types.CreateMessageRequestParams] = []

    async def sampling(context: Any, params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        asked.append(params)
        return mcp_types.CreateMessageResult(
            role="assistant",
            content=mcp_types.TextContent(type="text", text="an API-key service"),
            model="client-model-7",
        )

    upstream.clear()
    async with legacy_client(gateway, slug, key, sampling_callback=sampling) as (client, cola_sessions):
        result = await client.call_tool("ask_model", {"prompt": "what is cola?"})
    assert not result.is_error, result
    assert result.content[0].text == "model client-model-7 answered: an API-key service"
    assert len(asked) == 1
    assert [m.content.text for m in asked[0].messages] == ["what is cola?"]
    assert asked[0].max_tokens == 64
    answers, _ = answers_reaching(upstream, "ask_model")
    assert len(answers) == 1, answers
    assert cola_sessions, "Cola gave the client no session"
    assert_forwarded_as_colas(answers[0], key, cola_sessions)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "content", "expected"),
    [("accept", {"answer": "blue"}, "user answered: blue"), ("decline", None, "user chose decline")],
    ids=["accept", "decline"],
)
async def test_an_elicitation_reaches_the_client_and_its_answer_the_upstream(
    gateway: ColaServer, admin: Owner, upstream: Upstream, action: str, content: dict[str, Any] | None, expected: str
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    asked: list[Any] = []

    async def elicitation(context: Any, params: Any) -> mcp_types.ElicitResult:
        asked.append(params)
        return mcp_types.ElicitResult(action=action, content=content)

    upstream.clear()
    async with legacy_client(gateway, slug, key, elicitation_callback=elicitation) as (client, cola_sessions):
        result = await client.call_tool("ask_user", {"question": "your favourite colour?"})
    assert not result.is_error, result
    assert result.content[0].text == expected
    assert len(asked) == 1
    assert asked[0].message == "your favourite colour?"
    assert "answer" in asked[0].requested_schema["properties"]
    answers, _ = answers_reaching(upstream, "ask_user")
    assert len(answers) == 1, answers
    assert_forwarded_as_colas(answers[0], key, cola_sessions)


# --------------------------------------------------------------------------
# The GET listen stream and DELETE of a handshake-era session
# --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_listen_stream_opens_and_carries_the_upstreams_notifications_filtered(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug, allowed_resources=["docs://public/*"])
    session = Session(gateway, slug, key)
    heard: list[dict[str, Any]] = []
    public_heard = anyio.Event()
    url = f"{gateway.base_url}/mcp/{slug}"
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None)) as http:
        async with http.stream("GET", url, headers=listen_headers(key, session.id)) as listen:
            assert listen.status_code == 200
            assert listen.headers["content-type"].startswith("text/event-stream")

            async def read() -> None:
                async with aclosing(sse_messages(listen)) as messages:
                    async for message in messages:
                        heard.append(message)
                        params = message.get("params") or {}
                        if message.get("method") == "notifications/resources/updated" and params.get("uri") == PUBLIC:
                            public_heard.set()
                            return

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read)
                # The upstream sets up its end of the stream while it answers
                # the GET, so the first announcement may find none yet (and
                # be dropped there): announce until one arrives.
                with anyio.fail_after(DEADLINE_S):
                    while not public_heard.is_set():
                        # The hidden resource first: on one ordered stream,
                        # hearing the public one proves the hidden one dropped.
                        arguments = {"uris": [SECRET, PUBLIC]}
                        r = await post_in_session(http, gateway, slug, key, session.id, "tools/call", {"name": "announce", "arguments": arguments})
                        assert r.status_code == 200, r.text
                        assert answer_of(r)["result"]["content"][0]["text"] == "announced 2"
                        # Standalone notifications are not on the call's answer.
                        assert "notifications/resources/updated" not in r.text
                        with anyio.move_on_after(0.5):
                            await public_heard.wait()
    updates = [m["params"]["uri"] for m in heard if m.get("method") == "notifications/resources/updated"]
    assert updates == [PUBLIC], heard
    # No answer to a POST was duplicated onto the listen stream.
    assert not [m for m in heard if "result" in m or "error" in m], heard


@pytest.mark.anyio
async def test_the_sdk_client_hears_the_upstreams_notifications_on_its_listen_stream(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug, allowed_resources=["docs://public/*"])
    updates: list[str] = []
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            heard.set()

    upstream.clear()
    async with legacy_client(gateway, slug, key, message_handler=on_message) as (client, _):
        with anyio.fail_after(DEADLINE_S):
            while not heard.is_set():
                result = await client.call_tool("announce", {"uris": [SECRET, PUBLIC]})
                assert result.content[0].text == "announced 2"
                with anyio.move_on_after(0.5):
                    await heard.wait()
    assert updates and set(updates) == {PUBLIC}, updates
    # The client opened its listen stream through Cola, which opened the upstream's.
    assert [e for e in upstream.record() if e["http_method"] == "GET"], upstream.record()


@pytest.mark.anyio
async def test_delete_ends_the_session_at_the_upstream_and_closes_its_listen_stream(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    key = reader_key(admin, slug)
    session = Session(gateway, slug, key)
    upstream_id = upstream_session_of(session)
    url = f"{gateway.base_url}/mcp/{slug}"
    closed = anyio.Event()
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None)) as http:
        async with http.stream("GET", url, headers=listen_headers(key, session.id)) as listen:
            assert listen.status_code == 200

            async def drain() -> None:
                async for _ in listen.aiter_bytes():
                    pass
                closed.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(drain)
                r = await http.delete(url, headers={**auth(key), "Mcp-Session-Id": session.id, "MCP-Protocol-Version": LEGACY})
                assert r.status_code == 200, (r.status_code, r.text)
                # The session's listen stream ends with it.
                with anyio.fail_after(DEADLINE_S):
                    await closed.wait()
    deletes = [e for e in upstream.record() if e["http_method"] == "DELETE" and e["headers"].get("mcp-session-id") == upstream_id]
    assert len(deletes) == 1, upstream.record()
    assert deletes[0]["headers"]["authorization"] == UPSTREAM_SECRET
    # The session is over: the client is told to start a new one.
    after = session.post("tools/list")
    assert after.status_code == 404, after.text
    assert "error" in after.json()
    with gateway.http.stream("GET", f"/mcp/{slug}", headers=listen_headers(key, session.id)) as listen_again:
        assert listen_again.status_code == 404


def test_get_and_delete_with_another_key_or_on_another_server_are_404_and_reach_no_upstream(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    first = register(admin, upstream.url)["slug"]
    second = register(admin, upstream.url)["slug"]
    key = reader_key(admin, first, second)
    other_key = reader_key(admin, first, second)
    session = Session(gateway, first, key)
    upstream_id = upstream_session_of(session)

    def status(method: str, slug: str, with_key: str) -> int:
        # Streamed, so that a listen stream opened by mistake cannot hang the test.
        with gateway.http.stream(method, f"/mcp/{slug}", headers=listen_headers(with_key, session.id)) as r:
            return r.status_code

    upstream.clear()
    for method in ("GET", "DELETE"):
        assert status(method, first, other_key) == 404, method
        assert status(method, second, key) == 404, method
    reached = [e for e in upstream.record() if e["http_method"] in ("GET", "DELETE")]
    assert not reached, reached
    # The session itself is untouched: it still works for its key on its server.
    r = session.post("tools/list")
    assert r.status_code == 200, r.text
    assert upstream.received(method="tools/list")[-1]["headers"]["mcp-session-id"] == upstream_id


# --------------------------------------------------------------------------
# Found while benchmarking
# --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_first_calls_of_a_granted_tool_are_all_answered(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    slug = register(admin, upstream.url)["slug"]
    # Read-only: whether `search` may be called depends on its readOnlyHint,
    # which Cola learns from the upstream's tools/list.
    key = reader_key(admin, slug)
    h, body = mcp_request("tools/call", {"name": "search", "arguments": {"query": "cola"}})
    h.update(auth(key))
    answers: list[dict[str, Any]] = []
    async with httpx2.AsyncClient(timeout=30.0, limits=httpx2.Limits(max_connections=20)) as http:

        async def call() -> None:
            r = await http.post(f"{gateway.base_url}/mcp/{slug}", content=json.dumps(body).encode(), headers=h)
            assert r.status_code == 200, r.text
            answers.append(r.json())

        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(call)
    refused = [a["error"] for a in answers if "error" in a]
    assert not refused, f"{len(refused)} of 10 refused: {refused[0]}"
    assert all(a["result"]["content"][0]["text"] == "results for cola" for a in answers)


# --------------------------------------------------------------------------
# A stream lives no longer than its key stays as it was admitted
# --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["narrowed", "revoked"])
async def test_a_listen_stream_tells_the_lists_changed_and_ends_when_its_key_changes(
    gateway: ColaServer, admin: Owner, upstream: Upstream, change: str
) -> None:
    slug = register(admin, upstream.url)["slug"]
    created = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})
    key = created["key"]
    session = Session(gateway, slug, key)
    assert "search_archive" in [t["name"] for t in answer_of(session.post("tools/list"))["result"]["tools"]]
    heard: list[dict[str, Any]] = []
    ended = anyio.Event()
    url = f"{gateway.base_url}/mcp/{slug}"
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None)) as http:
        async with http.stream("GET", url, headers=listen_headers(key, session.id)) as listen:
            assert listen.status_code == 200

            async def read() -> None:
                async with aclosing(sse_messages(listen)) as messages:
                    async for message in messages:
                        heard.append(message)
                ended.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read)
                if change == "narrowed":
                    narrowed = {"read": True, "write": False, "servers": grant(slug, allowed_tools=["search"])}
                    await anyio.to_thread.run_sync(lambda: admin.patch_permissions(created["id"], permissions=narrowed))
                else:
                    await anyio.to_thread.run_sync(admin.revoke, created["id"])
                with anyio.fail_after(DEADLINE_S):
                    await ended.wait()
    methods = [m.get("method") for m in heard]
    assert "notifications/tools/list_changed" in methods, heard
    if change == "narrowed":
        # The client's next request is decided on the key as it is now.
        tools = [t["name"] for t in answer_of(session.post("tools/list"))["result"]["tools"]]
        assert tools == ["search"], tools
        with gateway.http.stream("GET", f"/mcp/{slug}", headers=listen_headers(key, session.id)) as again:
            assert again.status_code == 200
    else:
        with gateway.http.stream("GET", f"/mcp/{slug}", headers=listen_headers(key, session.id)) as again:
            assert again.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["narrowed", "revoked"])
async def test_a_2026_listen_stream_hears_the_lists_changed_and_closes_gracefully_when_its_key_changes(
    gateway: ColaServer, admin: Owner, upstream: Upstream, change: str
) -> None:
    from mcp.shared.subscriptions import ToolsListChanged

    from test_gateway import sdk

    slug = register(admin, upstream.url)["slug"]
    created = admin.create_key(permissions={"read": True, "write": False, "servers": grant(slug)})
    events: list[Any] = []
    async with sdk(gateway, slug, created["key"], "2026-07-28") as client:
        async with client.listen(tools_list_changed=True) as subscription:
            if change == "narrowed":
                narrowed = {"read": True, "write": False, "servers": grant(slug, allowed_tools=["search"])}
                await anyio.to_thread.run_sync(lambda: admin.patch_permissions(created["id"], permissions=narrowed))
            else:
                await anyio.to_thread.run_sync(admin.revoke, created["id"])
            # The loop ends with the server's graceful close: a lost
            # subscription would raise SubscriptionLost instead.
            with anyio.fail_after(DEADLINE_S):
                async for event in subscription:
                    events.append(event)
        if change == "narrowed":
            # The client lists again, and sees the key as it is now.
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            assert tools == ["search"], tools
    assert any(isinstance(event, ToolsListChanged) for event in events), events


@pytest.mark.anyio
async def test_a_listen_stream_tells_the_lists_changed_before_it_ends_with_its_keys_expiry(
    gateway: ColaServer, admin: Owner, upstream: Upstream
) -> None:
    import datetime

    slug = register(admin, upstream.url)["slug"]
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=6)
    created = admin.create_key(
        permissions={"read": True, "write": False, "servers": grant(slug)},
        expires_at=expires_at.isoformat().replace("+00:00", "Z"),
    )
    key = created["key"]
    session = Session(gateway, slug, key)
    heard: list[dict[str, Any]] = []
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None)) as http:
        url = f"{gateway.base_url}/mcp/{slug}"
        async with http.stream("GET", url, headers=listen_headers(key, session.id)) as listen:
            assert listen.status_code == 200
            with anyio.fail_after(DEADLINE_S + 6):
                async with aclosing(sse_messages(listen)) as messages:
                    async for message in messages:
                        heard.append(message)
    methods = [m.get("method") for m in heard]
    assert "notifications/tools/list_changed" in methods, heard
    # And the expired key is refused from then on.
    with gateway.http.stream("GET", f"/mcp/{slug}", headers=listen_headers(key, session.id)) as again:
        assert again.status_code == 401
