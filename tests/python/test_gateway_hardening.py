"""What the gateway never trusts an upstream (or a client) to do
(docs/gateway.md): echo ids, stay small, finish, describe its tools, carry
headers the body does not back, keep tasks apart. Each test reproduces a way
around the gateway's filter or bounds that once worked, against
`raw_upstream.py` (which misbehaves on purpose) or the SDK upstream."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx2
import pytest

from colatest import ColaServer, Owner, auth, free_port, mcp_request, poll
from test_gateway import UPSTREAM_SECRET, answer_of, gateway_post, grant, register
from test_gateway_streams import sse_messages, stream_call

HERE = Path(__file__).resolve().parent
# 2^53 + 1: JavaScript's JSON.parse reads it as 2^53.
BIG_ID = 9007199254740993


class RawUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "raw_upstream.py"), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().startswith("READY")

        def answers() -> bool:
            try:
                return httpx2.get(f"{self.base}/record", timeout=2).status_code == 200
            except httpx2.TransportError:
                return False

        poll(answers, until=bool, deadline_s=30, what="the raw upstream to listen")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, behaviour: str) -> str:
        return f"{self.base}/mcp/{behaviour}"

    def record(self) -> list[dict[str, Any]]:
        return httpx2.get(f"{self.base}/record", timeout=10).json()


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.process.terminate()
    upstream.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    # The same settings as the other gateway suites' server, so all share one.
    return cola_factory(COLA_GATEWAY_ALLOWED_NETWORKS="127.0.0.0/8", COLA_SECRETS_KEY="YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=")


@pytest.fixture
def admin(gateway: ColaServer) -> Owner:
    return gateway.owner(role="admin")


def reader(owner: Owner, slug: str, **lists: Any) -> str:
    return owner.create_key(permissions={"read": True, "write": False, "servers": grant(slug, **lists)})["key"]


def raw_post(server: ColaServer, slug: str, key: str, body: str, headers: dict[str, str]) -> httpx2.Response:
    return server.http.post(f"/mcp/{slug}", content=body.encode(), headers={**headers, **auth(key)})


# --------------------------------------------------------------------------
# Echo ids: an upstream that re-serialises ids never gets past the filter
# --------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("mode", ["json", "sse"])
def test_an_upstream_that_reads_ids_as_javascript_does_still_gets_its_list_filtered(
    gateway: ColaServer, admin: Owner, raw: RawUpstream, era: str, mode: str
) -> None:
    slug = register(admin, raw.url(f"js/{mode}"))["slug"]
    key = reader(admin, slug)
    h, body = mcp_request("tools/list", era=era, id=0)
    # The id written as text: Python's own JSON would keep it exact anyway.
    text = json.dumps(body).replace('"id": 0', f'"id": {BIG_ID}')
    r = raw_post(gateway, slug, key, text, h)
    assert r.status_code == 200, r.text
    # The read-only key sees the read-only tool only, and its own id back,
    # digit for digit.
    answer = answer_of(r)
    assert [tool["name"] for tool in answer["result"]["tools"]] == ["search"]
    assert answer["result"]["cacheScope"] == "private"
    assert f'"id":{BIG_ID}' in r.text.replace(" ", "")
    # The upstream never saw the client's id: one of Cola's, as a string,
    # which no JSON parser rewrites.
    sent = [e for e in raw.record() if e["method"] == "tools/list"][-1]
    assert isinstance(sent["id"], str) and sent["id"] != str(BIG_ID)


@pytest.mark.parametrize("mode", ["json", "sse"])
def test_an_answer_under_an_id_cola_never_sent_is_dropped(
    gateway: ColaServer, admin: Owner, raw: RawUpstream, mode: str
) -> None:
    slug = register(admin, raw.url(f"wrong-id/{mode}"))["slug"]
    key = reader(admin, slug)
    r = gateway_post(gateway, slug, key, "tools/list")
    assert "delete_repo" not in r.text and "create_issue" not in r.text
    if mode == "json":
        assert r.status_code == 502, r.text
        assert r.json()["error"]["data"] == {"server": slug}
    else:
        # The stream carries nothing the client asked for.
        assert r.status_code == 200
        assert "search" not in r.text


def test_a_json_array_answer_is_refused_not_relayed(gateway: ColaServer, admin: Owner, raw: RawUpstream) -> None:
    slug = register(admin, raw.url("array"))["slug"]
    key = reader(admin, slug)
    r = gateway_post(gateway, slug, key, "tools/list")
    assert r.status_code == 502, r.text
    assert "delete_repo" not in r.text


# --------------------------------------------------------------------------
# Stay small, finish
# --------------------------------------------------------------------------


def test_a_list_answer_over_4_mib_is_a_502(gateway: ColaServer, admin: Owner, raw: RawUpstream) -> None:
    slug = register(admin, raw.url("big"))["slug"]
    key = reader(admin, slug, allowed_tools=["tool_1"])
    r = gateway_post(gateway, slug, key, "tools/list")
    assert r.status_code == 502, r.text[:200]
    assert r.json()["error"]["data"] == {"server": slug}


def test_a_json_answer_that_never_finishes_is_a_504(gateway: ColaServer, admin: Owner, raw: RawUpstream) -> None:
    slug = register(admin, raw.url("hang"), timeout_secs=1)["slug"]
    key = reader(admin, slug)
    r = gateway_post(gateway, slug, key, "ping")
    assert r.status_code == 504, r.text
    assert r.json()["error"]["data"] == {"server": slug}


# --------------------------------------------------------------------------
# Describe its tools: only Cola's own complete reads build the catalogue
# --------------------------------------------------------------------------


def test_listing_a_later_page_does_not_make_earlier_tools_unknown(
    gateway: ColaServer, admin: Owner, raw: RawUpstream
) -> None:
    slug = register(admin, raw.url("paged"))["slug"]
    key = reader(admin, slug)
    # Another key of the tenant lists the last page, again and again.
    other = reader(admin, slug)
    for _ in range(3):
        r = gateway_post(gateway, slug, other, "tools/list", {"cursor": "2"})
        assert r.status_code == 200, r.text
    # The read-only tool of the first page is still known as read-only.
    r = gateway_post(gateway, slug, key, "tools/call", {"name": "search", "arguments": {}})
    assert r.status_code == 200, r.text
    assert answer_of(r)["result"]["content"][0]["text"] == "called search"
    # And the writing one of the second page is still refused.
    r = gateway_post(gateway, slug, key, "tools/call", {"name": "create_issue", "arguments": {}})
    assert answer_of(r)["error"]["code"] == -32602


# --------------------------------------------------------------------------
# Carry headers the body does not back
# --------------------------------------------------------------------------


def test_a_mirrored_parameter_header_passes_only_when_marked_and_equal_to_the_body(
    gateway: ColaServer, admin: Owner, raw: RawUpstream
) -> None:
    slug = register(admin, raw.url("params"))["slug"]
    key = reader(admin, slug)
    arguments = {"region": "eu-west", "sql": "select 1"}
    cases = [
        ({"Mcp-Param-Region": "eu-west"}, {"mcp-param-region": "eu-west"}),
        ({"Mcp-Param-Region": "us-east"}, {}),
        ({"Mcp-Param-Sql": "select 1"}, {}),
        ({"Mcp-Param-Other": "x"}, {}),
    ]
    for sent, forwarded in cases:
        r = gateway_post(gateway, slug, key, "tools/call", {"name": "query", "arguments": arguments}, headers=sent)
        assert r.status_code == 200, r.text
        received = [e for e in raw.record() if e["method"] == "tools/call"][-1]["headers"]
        params = {k: v for k, v in received.items() if k.startswith("mcp-param-")}
        assert params == forwarded, (sent, params)


# --------------------------------------------------------------------------
# Keep tasks apart
# --------------------------------------------------------------------------


def test_a_task_id_works_only_for_the_key_and_server_it_was_given_to(
    gateway: ColaServer, admin: Owner, raw: RawUpstream
) -> None:
    slug = register(admin, raw.url("tasks"))["slug"]
    key = reader(admin, slug)
    r = gateway_post(gateway, slug, key, "tools/call", {"name": "search", "arguments": {}, "task": {"ttl": 60000}}, era="legacy")
    assert r.status_code == 200, r.text
    task_id = answer_of(r)["result"]["task"]["taskId"]
    upstream_id = [e for e in raw.record() if e["method"] == "tools/call"][-1]
    assert not task_id.startswith("task-"), "the upstream's own task id reached the client"
    # The same key polls it: the upstream gets its own id back.
    r = gateway_post(gateway, slug, key, "tasks/get", {"taskId": task_id}, era="legacy")
    assert r.status_code == 200, r.text
    assert answer_of(r)["result"]["taskId"] == task_id
    polled = [e for e in raw.record() if e["method"] == "tasks/get"][-1]
    assert polled["params"]["taskId"].startswith("task-"), polled
    # Another key granted the same server gets the unknown-task error, and
    # nothing reaches the upstream; so does the upstream's raw id.
    other = reader(admin, slug)
    before = len(raw.record())
    for who, presented in [(other, task_id), (key, polled["params"]["taskId"])]:
        r = gateway_post(gateway, slug, who, "tasks/get", {"taskId": presented}, era="legacy")
        assert answer_of(r)["error"]["code"] == -32602, r.text
    assert len(raw.record()) == before
    assert upstream_id["params"]["task"] == {"ttl": 60000}


# --------------------------------------------------------------------------
# In flight per tenant
# --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_tenant_past_its_requests_in_flight_gets_503_and_others_do_not(
    cola_factory: Callable[..., ColaServer],
) -> None:
    from test_gateway import start_upstream

    upstream = start_upstream("--require-header", f"Authorization={UPSTREAM_SECRET}")
    try:
        server = cola_factory(
            COLA_GATEWAY_ALLOWED_NETWORKS="127.0.0.0/8",
            COLA_SECRETS_KEY="YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=",
            COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT="2",
        )
        busy, calm = server.owner(role="admin"), server.owner(role="admin")
        busy_slug = register(busy, upstream.url)["slug"]
        calm_slug = register(calm, upstream.url)["slug"]
        busy_key = reader(busy, busy_slug)
        calm_key = reader(calm, calm_slug)
        tag = uuid.uuid4().hex
        async with httpx2.AsyncClient(timeout=30.0) as http:
            streams = []
            for n in range(2):
                h, body = stream_call(f"{tag}-{n}", steps=100, era="modern")
                h.update(auth(busy_key))
                streams.append(http.stream("POST", f"{server.base_url}/mcp/{busy_slug}", content=body, headers=h))
            opened = [await stream.__aenter__() for stream in streams]
            try:
                for response in opened:
                    assert response.status_code == 200
                # Both of the tenant's places are taken: a third request waits.
                third = gateway_post(server, busy_slug, busy_key, "tools/list")
                assert third.status_code == 503, third.text
                assert third.headers["retry-after"] == "1"
                # Another tenant is not held up.
                assert gateway_post(server, calm_slug, calm_key, "tools/list").status_code == 200
            finally:
                for stream in streams:
                    await stream.__aexit__(None, None, None)
        # Places come back once the streams end.
        poll(
            lambda: gateway_post(server, busy_slug, busy_key, "tools/list").status_code,
            until=lambda status: status == 200,
            deadline_s=15,
            what="the tenant's places to come back",
        )
    finally:
        upstream.process.terminate()
        upstream.process.wait(timeout=10)


# --------------------------------------------------------------------------
# A 2026-07-28 client that leaves cancels at once
# --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_2026_client_that_leaves_a_quiet_stream_cancels_the_upstream_call_at_once(
    gateway: ColaServer, admin: Owner
) -> None:
    from test_gateway import start_upstream

    upstream = start_upstream("--require-header", f"Authorization={UPSTREAM_SECRET}")
    try:
        slug = register(admin, upstream.url)["slug"]
        key = reader(admin, slug)
        tag = uuid.uuid4().hex
        # One progress event, then an hour of silence: nothing is written to
        # the client after it leaves, so only noticing the closed connection
        # itself can cancel the call before Cola's 15 s keep-alive.
        arguments = {"steps": 2, "interval_ms": 3_600_000, "tag": tag}
        h, body = mcp_request("tools/call", {"name": "stream_slowly", "arguments": arguments, "_meta": {"progressToken": tag}}, era="modern")
        h.update(auth(key))
        async with httpx2.AsyncClient(timeout=30.0) as http:
            async with http.stream("POST", f"{gateway.base_url}/mcp/{slug}", content=json.dumps(body).encode(), headers=h) as r:
                assert r.status_code == 200
                async with aclosing(sse_messages(r)) as messages:
                    first = await anext(messages)
                    assert first["method"] == "notifications/progress", first
        cancelled = poll(
            lambda: upstream.received(event="stream_cancelled", tag=tag),
            until=bool,
            deadline_s=10,
            what="the upstream to see its call cancelled",
        )
        assert cancelled[0]["step"] == 1
    finally:
        upstream.process.terminate()
        upstream.process.wait(timeout=10)
