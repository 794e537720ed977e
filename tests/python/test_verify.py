"""Tenant servers know who is calling (docs/verify.md) end to end, against the
real binary:

- `POST /api/mcp/verify` as a server sees it: every answer code, the
  `read_only` extension, the server token's life;
- the drop-in verifier of the Python SDK (`examples/python-verifier`) run as
  its own process and reached by the official Python SDK client;
- the identity assertion (`X-Cola-Identity`) checked here with PyJWT against
  `/.well-known/jwks.json`, for an Ed25519 and a P-256 key, through a key
  rotation, and by the example upstream (`examples/identity-upstream`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from colatest import LEGACY, MODERN, ColaServer, Owner, auth, free_port, make_key, mcp_request, poll, random_base62

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES / "python-verifier"))
import cola_verifier  # noqa: E402  (the example module under test)

MODES = ["legacy", MODERN, "auto"]
ALG = {"ed25519": "EdDSA", "p256": "ES256"}
IDENTITY_CLAIMS = ["iss", "aud", "sub", "tenant_id", "key_id", "key_prefix", "iat", "exp", "jti"]
GATEWAY_ENV = {"COLA_GATEWAY_ALLOWED_NETWORKS": "127.0.0.0/8"}


# --------------------------------------------------------------------------
# Processes: Cola instances of this module, the examples, a recording upstream
# --------------------------------------------------------------------------


@dataclass
class Process:
    """A child process listening on `port` of 127.0.0.1, with its log."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_process(args: list[str], *, port: int, env: dict[str, str], log: Path, probe: str = "/") -> Process:
    """Starts `args` and polls until it answers HTTP on `port` (any status)."""
    with open(log, "ab") as out:
        child = subprocess.Popen(
            args, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    started = Process(child, port, log)

    def answers() -> bool:
        if child.poll() is not None:
            raise AssertionError(f"{args[-1]} exited ({child.returncode}):\n{started.log_tail()}")
        try:
            httpx2.get(f"http://127.0.0.1:{port}{probe}", timeout=2)
            return True
        except httpx2.TransportError:
            return False

    try:
        poll(answers, until=bool, deadline_s=30, what=f"{args[-1]} to listen")
    except BaseException:
        started.stop()
        raise
    return started


def start_example(name: str, tmp: Path, **env: str) -> Process:
    port = free_port()
    script = EXAMPLES / name / "server.py"
    return start_process([sys.executable, str(script)], port=port, env={**env, "PORT": str(port)}, log=tmp / f"{name}.log")


def start_recording_upstream(tmp: Path) -> Process:
    """tests/python/upstream_server.py: records the headers of every request."""
    port = free_port()
    return start_process(
        [sys.executable, str(HERE / "upstream_server.py"), str(port)],
        port=port,
        env={},
        log=tmp / f"upstream-{port}.log",
        probe="/record",
    )


def record(upstream: Process) -> list[dict[str, Any]]:
    return httpx2.get(f"http://127.0.0.1:{upstream.port}/record", timeout=10).json()


def clear(upstream: Process) -> None:
    httpx2.delete(f"http://127.0.0.1:{upstream.port}/record", timeout=10)


@pytest.fixture(scope="module")
def vcola() -> Iterator[ColaServer]:
    """A Cola of this module's own, so failures counted per client address
    here never meet those of other modules."""
    server = ColaServer(extra_env=dict(GATEWAY_ENV)).start()
    yield server
    server.cleanup()


@pytest.fixture
def admin(vcola: ColaServer) -> Owner:
    return vcola.owner(role="admin")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verify")


# --------------------------------------------------------------------------
# REST helpers
# --------------------------------------------------------------------------


def register(owner: Owner, url: str | None, **body: Any) -> dict[str, Any]:
    body.setdefault("slug", f"v-{uuid.uuid4().hex[:10]}")
    body.setdefault("name", "server under test")
    r = owner.server.http.post("/api/mcp/servers", json={"url": url, **body}, headers=owner.headers)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


def mint_token(owner: Owner, server_id: str) -> str:
    r = owner.server.http.post(f"/api/mcp/servers/{server_id}/token", headers=owner.headers)
    assert r.status_code == 201, (r.status_code, r.text)
    token = r.json()["token"]
    assert token.startswith("colasrv_") and len(token) == 44, token
    return token


def grant(slug: str, **lists: Any) -> dict[str, Any]:
    return {slug: {"allowed_tools": None, "allowed_resources": None, "allowed_prompts": None, **lists}}


def granted_key(owner: Owner, slug: str, *, read: bool = True, write: bool = False, **key: Any) -> dict[str, Any]:
    lists = key.pop("lists", {})
    return owner.create_key(permissions={"read": read, "write": write, "servers": grant(slug, **lists)}, **key)


def verify(server: ColaServer, token: str | None, **body: Any) -> httpx2.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return server.http.post("/api/mcp/verify", json=body, headers=headers)


def jwks_of(server: ColaServer) -> list[dict[str, Any]]:
    r = server.http.get("/.well-known/jwks.json")
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["keys"]


# --------------------------------------------------------------------------
# POST /api/mcp/verify as a tenant's server sees it
# --------------------------------------------------------------------------


@pytest.fixture
def verify_only(admin: Owner) -> tuple[str, str]:
    """A verify-only server (`url: null`) of the admin's tenant: (slug, token)."""
    server = register(admin, None)
    return server["slug"], mint_token(admin, server["id"])


def test_a_granted_key_is_valid_with_its_owner_grant_and_a_short_cache(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]
) -> None:
    slug, token = verify_only
    created = granted_key(admin, slug, lists={"allowed_tools": ["search*"]})
    r = verify(vcola, token, key=created["key"], client_ip="203.0.113.7")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["valid"] is True and answer["code"] == "VALID"
    assert answer["key_id"] == created["id"]
    assert answer["key_prefix"] == created["key_prefix"]
    assert answer["tenant_id"] == admin.tenant_id
    assert answer["user_id"] == admin.user_id
    assert answer["permissions"] == {
        "read": True,
        "write": False,
        "allowed_tools": ["search*"],
        "allowed_resources": None,
        "allowed_prompts": None,
    }
    assert answer["expires_at"] == created["expires_at"]
    assert 0 < answer["cache_ttl_ms"] <= 2000


def test_a_valid_answer_counts_one_use_of_the_key(vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]) -> None:
    slug, token = verify_only
    created = granted_key(admin, slug)
    for _ in range(3):
        assert verify(vcola, token, key=created["key"]).json()["code"] == "VALID"
    poll(lambda: admin.get_key(created["id"])["usage_count"], until=lambda n: n == 3, deadline_s=10, what="3 uses")


def test_each_refusal_has_its_code(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str], client_ip: str
) -> None:
    slug, token = verify_only

    def code(**body: Any) -> str:
        # Failures count against the end client's address: this test's own
        # (`client_ip=None` sends none).
        body.setdefault("client_ip", client_ip)
        r = verify(vcola, token, **{k: v for k, v in body.items() if v is not None})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["valid"] is (answer["code"] == "VALID"), answer
        if answer["code"] != "VALID":
            assert set(answer) == {"valid", "code"}, answer
        return answer["code"]

    assert code(key=make_key()) == "NOT_FOUND"
    assert code(key="cola_not-even-a-key") == "NOT_FOUND"
    real = granted_key(admin, slug)["key"]
    assert code(key=real[:-1] + ("A" if real[-1] != "A" else "B")) == "NOT_FOUND"  # bad checksum
    wrong_secret = make_key(real[5:17] + random_base62(18))  # the real prefix, another secret
    assert wrong_secret != real
    assert code(key=wrong_secret) == "NOT_FOUND"

    revoked = granted_key(admin, slug)
    admin.revoke(revoked["id"])
    assert code(key=revoked["key"]) == "REVOKED"

    # A key rotated with no grace period is refused as an expired key.
    rotated = granted_key(admin, slug)
    r = vcola.http.post(f"/api/mcp/keys/{rotated['id']}/rotate", json={"grace_period_secs": 0}, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert code(key=rotated["key"]) == "EXPIRED"
    assert code(key=r.json()["key"]) == "VALID"

    fenced = granted_key(admin, slug, ip_whitelist=["203.0.113.0/24"])["key"]
    assert code(key=fenced, client_ip="203.0.113.9") == "VALID"
    assert code(key=fenced, client_ip="198.51.100.1") == "IP_DENIED"
    assert code(key=fenced, client_ip=None) == "IP_DENIED"

    ungranted = admin.create_key(permissions={"read": True, "servers": {}})["key"]
    assert code(key=ungranted) == "NOT_GRANTED"
    other = register(admin, None)
    elsewhere = granted_key(admin, other["slug"])["key"]
    assert code(key=elsewhere) == "NOT_GRANTED"

    # Another tenant's key is unknown to this tenant's server.
    stranger = vcola.owner(role="admin")
    theirs = register(stranger, None, slug=slug)
    assert theirs["slug"] == slug
    assert code(key=granted_key(stranger, slug)["key"]) == "NOT_FOUND"


def test_tools_resources_and_prompts_are_checked_against_the_grant(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]
) -> None:
    slug, token = verify_only
    key = granted_key(
        admin,
        slug,
        lists={"allowed_tools": ["search_*", "get_issue"], "allowed_resources": ["docs://public/*"], "allowed_prompts": []},
    )["key"]

    def code(**body: Any) -> str:
        return verify(vcola, token, key=key, **body).json()["code"]

    assert code(tool="search_code") == "VALID"
    assert code(tool="get_issue") == "VALID"
    assert code(tool="create_issue") == "NOT_GRANTED"
    assert code(resource="docs://public/readme") == "VALID"
    assert code(resource="docs://secret/plan") == "NOT_GRANTED"
    assert code(prompt="greet") == "NOT_GRANTED"


def test_read_only_applies_the_keys_flags_to_the_tool(vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]) -> None:
    slug, token = verify_only
    reader = granted_key(admin, slug)["key"]
    writer = granted_key(admin, slug, read=False, write=True)["key"]

    def code(key: str, **body: Any) -> str:
        return verify(vcola, token, key=key, **body).json()["code"]

    assert code(reader, tool="search", read_only=True) == "VALID"
    assert code(reader, tool="create_issue", read_only=False) == "NOT_GRANTED"
    assert code(writer, tool="create_issue", read_only=False) == "VALID"
    assert code(writer, tool="search", read_only=True) == "NOT_GRANTED"
    # Without the extension only the name is checked against the grant.
    assert code(reader, tool="create_issue") == "VALID"


def test_a_bad_server_token_is_a_401_problem(vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]) -> None:
    slug, token = verify_only
    key = granted_key(admin, slug)["key"]
    for bad in (None, "colasrv_" + "A" * 36, token[:-1] + ("A" if token[-1] != "A" else "B"), admin.token, key):
        r = verify(vcola, bad, key=key)
        assert r.status_code == 401, (bad, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert verify(vcola, token, key=key).json()["code"] == "VALID"


def test_minting_again_replaces_the_token_and_only_admins_of_the_tenant_mint(vcola: ColaServer, admin: Owner) -> None:
    server = register(admin, None)
    first = mint_token(admin, server["id"])
    key = granted_key(admin, server["slug"])["key"]
    assert verify(vcola, first, key=key).json()["code"] == "VALID"
    second = mint_token(admin, server["id"])
    assert second != first
    assert verify(vcola, first, key=key).status_code == 401
    assert verify(vcola, second, key=key).json()["code"] == "VALID"

    member = vcola.owner(role="member", tenant=admin.tenant_id)
    r = vcola.http.post(f"/api/mcp/servers/{server['id']}/token", headers=member.headers)
    assert r.status_code == 403, r.text
    stranger = vcola.owner(role="admin")
    r = vcola.http.post(f"/api/mcp/servers/{server['id']}/token", headers=stranger.headers)
    assert r.status_code == 404, r.text
    assert verify(vcola, second, key=key).json()["code"] == "VALID"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unknown": 1}, "unknown"),
        ({"client_ip": "not-an-address"}, "client_ip"),
        ({"tool": "a", "resource": "b"}, None),
        ({"tool": "a", "prompt": "b"}, None),
        ({"read_only": True}, "read_only"),
        ({"resource": "docs://x", "read_only": True}, "read_only"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str], body: dict[str, Any], field: str | None
) -> None:
    slug, token = verify_only
    key = granted_key(admin, slug)
    r = verify(vcola, token, key=key["key"], **body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    if field is not None:
        assert field in problem.get("errors", {}), problem
    # A refused body is no use of the key: after one VALID the count is 1.
    assert verify(vcola, token, key=key["key"]).json()["code"] == "VALID"
    used = poll(lambda: admin.get_key(key["id"])["usage_count"], until=lambda n: n >= 1, deadline_s=10, what="a use")
    assert used == 1


def test_a_key_over_its_rate_limit_is_a_429_with_retry_after(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]
) -> None:
    slug, token = verify_only
    key = granted_key(admin, slug, rate_limit={"requests": 2, "per_secs": 3600})["key"]
    assert [verify(vcola, token, key=key).json()["code"] for _ in range(2)] == ["VALID", "VALID"]
    r = verify(vcola, token, key=key)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["code"] == "RATE_LIMITED" and r.json()["valid"] is False


def test_failures_are_charged_to_the_server_whatever_client_ip_it_names(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str], client_ip: str
) -> None:
    slug, token = verify_only
    codes = []
    for n in range(100):
        # A new end client every time does not escape the limit.
        r = verify(vcola, token, key=make_key(), client_ip=f"198.51.100.{n}")
        codes.append(r.json()["code"])
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) > 0
            assert r.json()["valid"] is False
            break
    assert codes[:20] == ["NOT_FOUND"] * 20, codes
    assert codes[-1] == "RATE_LIMITED", codes
    # The server is refused for its good keys too, whatever address it
    # names; the addresses it named were never charged, and neither is
    # another server of the tenant.
    key = granted_key(admin, slug)["key"]
    assert verify(vcola, token, key=key, client_ip=client_ip).status_code == 429
    assert verify(vcola, token, key=key, client_ip="192.0.2.77").status_code == 429
    other = register(admin, None)
    other_token = mint_token(admin, other["id"])
    other_key = granted_key(admin, other["slug"])["key"]
    assert verify(vcola, other_token, key=other_key, client_ip=client_ip).json()["code"] == "VALID"


# --------------------------------------------------------------------------
# The Python SDK verifier, in process: what it asks and what it keeps
# --------------------------------------------------------------------------


class Counted:
    """An httpx2 client that counts the requests it sends."""

    def __init__(self) -> None:
        self.sent = 0

        async def count(_request: httpx2.Request) -> None:
            self.sent += 1

        self.client = httpx2.AsyncClient(timeout=10, event_hooks={"request": [count]})


@pytest.mark.anyio
async def test_the_verifier_keeps_a_valid_answer_for_its_cache_ttl_only(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]
) -> None:
    slug, token = verify_only
    created = granted_key(admin, slug, read=True, write=True)
    now = [1000.0]
    http = Counted()
    verifier = cola_verifier.ColaTokenVerifier(vcola.base_url, token, http=http.client, clock=lambda: now[0])
    first = await verifier.verify_token(created["key"])
    assert first is not None
    assert first.client_id == created["key_prefix"]
    assert first.subject == admin.user_id
    assert sorted(first.scopes) == ["read", "write"]
    assert first.expires_at is not None and abs(first.expires_at - _epoch(created["expires_at"])) <= 1
    assert first.claims is not None and first.claims["key_id"] == created["id"]
    assert first.claims["tenant_id"] == admin.tenant_id
    assert http.sent == 1

    now[0] += 0.5
    assert await verifier.verify_token(created["key"]) == first
    assert http.sent == 1

    # Past the TTL Cola is asked again, and a revocation is seen.
    now[0] += 2.0
    admin.revoke(created["id"])
    assert await verifier.verify_token(created["key"]) is None
    assert http.sent == 2
    await http.client.aclose()


@pytest.mark.anyio
async def test_the_verifier_never_keeps_a_refusal_and_caches_per_client_address(
    vcola: ColaServer, admin: Owner, verify_only: tuple[str, str]
) -> None:
    slug, token = verify_only
    fenced = granted_key(admin, slug, ip_whitelist=["203.0.113.0/24"])["key"]
    http = Counted()
    verifier = cola_verifier.ColaTokenVerifier(vcola.base_url, token, http=http.client, clock=lambda: 1000.0)

    async def as_client(ip: str | None) -> Any:
        reset = cola_verifier.client_address.set(ip)
        try:
            return await verifier.verify_token(fenced)
        finally:
            cola_verifier.client_address.reset(reset)

    assert await as_client(None) is None  # the key has an allow-list: no address, no entry
    assert await as_client("198.51.100.1") is None
    assert await as_client("198.51.100.1") is None
    assert http.sent == 3
    assert await as_client("203.0.113.9") is not None
    assert await as_client("203.0.113.9") is not None
    assert http.sent == 4
    # The VALID kept for one address does not admit another.
    assert await as_client("198.51.100.1") is None
    assert http.sent == 5
    # Not a Cola key: Cola is not even asked.
    assert await verifier.verify_token("eyJhbGciOiJIUzI1NiJ9.e30.x") is None
    assert http.sent == 5
    await http.client.aclose()


def _epoch(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


# --------------------------------------------------------------------------
# The Python SDK example server, end to end
# --------------------------------------------------------------------------


@dataclass
class Verified:
    """The example server and the Cola server it is registered as."""

    process: Process
    slug: str
    admin: Owner


@pytest.fixture(scope="module")
def notes_server(vcola: ColaServer, tmp: Path) -> Iterator[Verified]:
    owner = vcola.owner(role="admin")
    registered = register(owner, None, slug="notes")
    token = mint_token(owner, registered["id"])
    process = start_example("python-verifier", tmp, COLA_URL=vcola.base_url, COLA_SERVER_TOKEN=token)
    yield Verified(process, registered["slug"], owner)
    process.stop()


@asynccontextmanager
async def sdk(url: str, key: str, mode: str, **headers: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **headers}, timeout=30.0) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def initialize(url: str, key: str | None) -> httpx2.Response:
    headers, body = mcp_request(
        "initialize",
        {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
        era="legacy",
    )
    if key is not None:
        headers.update(auth(key))
    return httpx2.post(url, content=json.dumps(body).encode(), headers=headers, timeout=30)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_granted_key_lists_and_calls_the_example_servers_tools(notes_server: Verified, mode: str) -> None:
    owner = notes_server.admin
    created = granted_key(owner, notes_server.slug)
    async with sdk(notes_server.process.url, created["key"], mode) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        assert tools == ["add_note", "list_notes", "whoami"]
        who = json.loads((await client.call_tool("whoami", {})).content[0].text)
        assert who["key_id"] == created["id"]
        assert who["key_prefix"] == created["key_prefix"]
        assert who["user_id"] == owner.user_id
        assert who["tenant_id"] == owner.tenant_id
        listed = await client.call_tool("list_notes", {})
        assert not listed.is_error
        # The key reads only: the write tool refuses it.
        added = await client.call_tool("add_note", {"text": "from a reader"})
        assert added.is_error
        assert "may not use add_note" in added.content[0].text


@pytest.mark.anyio
async def test_a_key_with_write_and_a_grant_naming_the_tool_writes(notes_server: Verified) -> None:
    owner = notes_server.admin
    writer = granted_key(owner, notes_server.slug, write=True, lists={"allowed_tools": ["add_*"]})["key"]
    note = f"note {uuid.uuid4().hex[:8]}"
    async with sdk(notes_server.process.url, writer, "auto") as client:
        added = await client.call_tool("add_note", {"text": note})
        assert not added.is_error, added
        assert added.content[0].text == f"noted: {note}"
        # list_notes is not in the grant.
        assert (await client.call_tool("list_notes", {})).is_error
    reader = granted_key(owner, notes_server.slug)["key"]
    async with sdk(notes_server.process.url, reader, "auto") as client:
        assert note in (await client.call_tool("list_notes", {})).content[0].text


def test_a_revoked_key_gets_401_from_the_example_server(notes_server: Verified) -> None:
    owner = notes_server.admin
    created = granted_key(owner, notes_server.slug)
    owner.revoke(created["id"])  # before its first use: nothing can be cached
    r = initialize(notes_server.process.url, created["key"])
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "resource_metadata" not in r.headers["www-authenticate"]


@pytest.mark.anyio
async def test_the_sdk_client_cannot_connect_with_a_revoked_key(notes_server: Verified) -> None:
    owner = notes_server.admin
    created = granted_key(owner, notes_server.slug)
    owner.revoke(created["id"])
    with pytest.raises(BaseException) as refused:  # noqa: PT011 - the SDK wraps it in task-group exception groups
        async with sdk(notes_server.process.url, created["key"], "auto") as client:
            await client.list_tools()
    assert any(isinstance(e, MCPError) for e in leaves(refused.value)), refused.value


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def test_an_allow_list_excluding_the_client_gets_401_and_one_including_it_is_admitted(notes_server: Verified) -> None:
    owner = notes_server.admin
    elsewhere = granted_key(owner, notes_server.slug, ip_whitelist=["203.0.113.0/24"])["key"]
    assert initialize(notes_server.process.url, elsewhere).status_code == 401
    # Admitted only if the verifier sent 127.0.0.1 as client_ip.
    here = granted_key(owner, notes_server.slug, ip_whitelist=["127.0.0.0/8"])["key"]
    r = initialize(notes_server.process.url, here)
    assert r.status_code == 200, r.text


def test_keys_cola_does_not_answer_valid_for_get_401(notes_server: Verified, vcola: ColaServer) -> None:
    owner = notes_server.admin
    url = notes_server.process.url
    assert initialize(url, None).status_code == 401
    assert initialize(url, make_key()).status_code == 401
    ungranted = owner.create_key(permissions={"read": True, "servers": {}})["key"]
    assert initialize(url, ungranted).status_code == 401
    # A key of another tenant that names the same slug: unknown to this server.
    stranger = vcola.owner(role="admin")
    register(stranger, None, slug=notes_server.slug)
    assert initialize(url, granted_key(stranger, notes_server.slug)["key"]).status_code == 401
    assert initialize(url, granted_key(owner, notes_server.slug)["key"]).status_code == 200


# --------------------------------------------------------------------------
# Identity assertions
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class IdentityKey:
    kind: str
    pem: bytes
    public: dict[str, str]  # the public JWK members of RFC 7638 (kty, crv, x[, y])

    @property
    def alg(self) -> str:
        return ALG[self.kind]

    @property
    def kid(self) -> str:
        """The RFC 7638 SHA-256 thumbprint, computed here from the key."""
        canonical = json.dumps(self.public, sort_keys=True, separators=(",", ":")).encode()
        return b64url(hashlib.sha256(canonical).digest())

    def write(self, directory: Path) -> Path:
        path = directory / f"identity-{self.kind}-{uuid.uuid4().hex[:6]}.pem"
        path.write_bytes(self.pem)
        return path


def generate(kind: str) -> IdentityKey:
    pkcs8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return IdentityKey(kind, private.private_bytes(*pkcs8), {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)})
    private_ec = ec.generate_private_key(ec.SECP256R1())
    numbers = private_ec.public_key().public_numbers()
    return IdentityKey(
        kind,
        private_ec.private_bytes(*pkcs8),
        {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))},
    )


@pytest.fixture(scope="module")
def recorder(tmp: Path) -> Iterator[Process]:
    upstream = start_recording_upstream(tmp)
    yield upstream
    upstream.stop()


@dataclass
class IdentityCola:
    cola: ColaServer
    key: IdentityKey


@pytest.fixture(scope="module", params=["ed25519", "p256"])
def identity_cola(request: pytest.FixtureRequest, tmp: Path) -> Iterator[IdentityCola]:
    key = generate(request.param)
    cola = ColaServer(extra_env={**GATEWAY_ENV, "COLA_IDENTITY_KEY_FILE": str(key.write(tmp))}).start()
    yield IdentityCola(cola, key)
    cola.cleanup()


def gateway_call(server: ColaServer, slug: str, key: str, method: str = "tools/list", **params: Any) -> httpx2.Response:
    headers, body = mcp_request(method, params or None, era="modern")
    headers.update(auth(key))
    return server.http.post(f"/mcp/{slug}", content=json.dumps(body).encode(), headers=headers)


def assertions_received(upstream: Process) -> list[str | None]:
    return [entry["headers"].get("x-cola-identity") for entry in record(upstream)]


def last_assertion(upstream: Process) -> str:
    """The assertion of the last request the upstream received (each test
    clears the record first)."""
    tokens = assertions_received(upstream)
    assert tokens and all(tokens), tokens
    token = tokens[-1]
    assert token is not None
    return token


def check_assertion(
    token: str, jwks: list[dict[str, Any]], *, issuer: str, audience: str, alg: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verifies `token` as a server must: `alg` from the allowed set and the
    key's own, `kid` in the JWKS, signature, `iss`, `aud`, `exp`. Returns
    (header, claims)."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg, header
    assert header["typ"] == "JWT", header
    by_kid = {k["kid"]: k for k in jwks}
    assert header["kid"] in by_kid, (header, list(by_kid))
    key = jwt.PyJWK(by_kid[header["kid"]])
    claims = jwt.decode(
        token, key, algorithms=["EdDSA", "ES256"], issuer=issuer, audience=audience, options={"require": IDENTITY_CLAIMS}
    )
    return header, claims


def test_the_jwks_publishes_the_configured_key_with_its_thumbprint(identity_cola: IdentityCola) -> None:
    keys = jwks_of(identity_cola.cola)
    assert len(keys) == 1, keys
    jwk = keys[0]
    ours = identity_cola.key
    assert {k: jwk[k] for k in ours.public} == ours.public
    assert jwk["alg"] == ours.alg
    assert jwk["use"] == "sig"
    assert jwk["kid"] == ours.kid
    assert "d" not in jwk


def test_every_upstream_request_carries_a_fresh_verifiable_identity(
    identity_cola: IdentityCola, recorder: Process
) -> None:
    cola = identity_cola.cola
    owner = cola.owner(role="admin")
    registered = register(owner, recorder.url, forward_identity=True)
    slug = registered["slug"]
    created = granted_key(owner, slug)
    clear(recorder)
    before = int(time.time())
    for _ in range(2):
        r = gateway_call(cola, slug, created["key"])
        assert r.status_code == 200, r.text
    after = int(time.time())
    tokens = assertions_received(recorder)
    assert len(tokens) >= 2 and all(tokens), tokens

    jwks = jwks_of(cola)
    jtis = []
    for token in tokens:
        assert token is not None
        header, claims = check_assertion(
            token, jwks, issuer=cola.base_url, audience=f"{cola.base_url}/mcp/{slug}", alg=identity_cola.key.alg
        )
        assert header["kid"] == identity_cola.key.kid
        assert claims["iss"] == cola.base_url
        assert claims["aud"] == f"{cola.base_url}/mcp/{slug}"
        assert claims["sub"] == owner.user_id
        assert claims["tenant_id"] == owner.tenant_id
        # Slugs repeat across tenants: the server's own id says which one.
        assert claims["server_id"] == registered["id"]
        assert claims["key_id"] == created["id"]
        assert claims["key_prefix"] == created["key_prefix"]
        assert before - 5 <= claims["iat"] <= after + 5
        assert 0 < claims["exp"] - claims["iat"] <= 60
        jtis.append(str(uuid.UUID(claims["jti"])))
    assert len(set(jtis)) == len(jtis), jtis


def test_an_assertion_is_refused_by_another_key_and_for_another_server(
    identity_cola: IdentityCola, recorder: Process
) -> None:
    cola = identity_cola.cola
    owner = cola.owner(role="admin")
    slug = register(owner, recorder.url, forward_identity=True)["slug"]
    clear(recorder)
    assert gateway_call(cola, slug, granted_key(owner, slug)["key"]).status_code == 200
    token = last_assertion(recorder)
    jwks = jwks_of(cola)
    with pytest.raises(jwt.InvalidAudienceError):
        check_assertion(token, jwks, issuer=cola.base_url, audience=f"{cola.base_url}/mcp/other", alg=identity_cola.key.alg)
    stranger = generate(identity_cola.key.kind)
    forged_jwks = [{**stranger.public, "alg": stranger.alg, "use": "sig", "kid": identity_cola.key.kid}]
    with pytest.raises(jwt.InvalidSignatureError):
        check_assertion(token, forged_jwks, issuer=cola.base_url, audience=f"{cola.base_url}/mcp/{slug}", alg=identity_cola.key.alg)


def test_a_server_without_forward_identity_gets_no_assertion(identity_cola: IdentityCola, recorder: Process) -> None:
    cola = identity_cola.cola
    owner = cola.owner(role="admin")
    slug = register(owner, recorder.url)["slug"]  # forward_identity defaults to false
    key = granted_key(owner, slug)["key"]
    clear(recorder)
    for _ in range(2):
        assert gateway_call(cola, slug, key).status_code == 200
    received = record(recorder)
    assert len(received) >= 2, received
    assert all("x-cola-identity" not in entry["headers"] for entry in received), received


def load_identity_example() -> Any:
    """examples/identity-upstream/server.py as a module (its name would
    clash with the other example's `server`)."""
    spec = importlib.util.spec_from_file_location("identity_upstream", EXAMPLES / "identity-upstream" / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_the_identity_upstream_example_knows_the_caller(
    identity_cola: IdentityCola, tmp: Path, mode: str
) -> None:
    cola = identity_cola.cola
    owner = cola.owner(role="admin")
    slug = f"id-{uuid.uuid4().hex[:8]}"
    upstream = start_example(
        "identity-upstream", tmp, COLA_URL=cola.base_url, COLA_TENANT_ID=owner.tenant_id, COLA_SLUG=slug
    )
    try:
        registered = register(owner, upstream.url, slug=slug, forward_identity=True)
        created = granted_key(owner, slug)
        async with sdk(f"{cola.base_url}/mcp/{slug}", created["key"], mode) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["whoami"]
            who = json.loads((await client.call_tool("whoami", {})).content[0].text)
        assert who["sub"] == owner.user_id
        assert who["tenant_id"] == owner.tenant_id
        assert who["key_id"] == created["id"]
        assert who["key_prefix"] == created["key_prefix"]
        assert who["server_id"] == registered["id"]
        assert who["aud"] == f"{cola.base_url}/mcp/{slug}"
    finally:
        upstream.stop()


def test_the_identity_upstream_example_refuses_what_is_not_a_fresh_assertion_for_it(
    identity_cola: IdentityCola, tmp: Path, recorder: Process
) -> None:
    cola = identity_cola.cola
    owner = cola.owner(role="admin")
    slug = f"id-{uuid.uuid4().hex[:8]}"
    upstream = start_example(
        "identity-upstream", tmp, COLA_URL=cola.base_url, COLA_TENANT_ID=owner.tenant_id, COLA_SLUG=slug
    )
    try:
        register(owner, upstream.url, slug=slug, forward_identity=True)
        key = granted_key(owner, slug)["key"]
        assert gateway_call(cola, slug, key).status_code == 200  # through Cola: admitted
        assert initialize(upstream.url, None).status_code == 401  # straight to it: no assertion

        # An assertion for another server of the tenant: another audience.
        other = register(owner, recorder.url, forward_identity=True)["slug"]
        clear(recorder)
        assert gateway_call(cola, other, granted_key(owner, other)["key"]).status_code == 200
        assert initialize_with_identity(upstream.url, last_assertion(recorder)).status_code == 401

        # Another tenant's server under the same slug: the very same `aud`,
        # a valid signature, and still not a caller of this tenant.
        stranger = cola.owner(role="admin")
        register(stranger, recorder.url, slug=slug, forward_identity=True)
        clear(recorder)
        assert gateway_call(cola, slug, granted_key(stranger, slug)["key"]).status_code == 200
        theirs = last_assertion(recorder)
        assert jwt.decode(theirs, options={"verify_signature": False})["aud"] == f"{cola.base_url}/mcp/{slug}"
        assert initialize_with_identity(upstream.url, theirs).status_code == 401

        # The same check in process, as the stranger's own server: accepted
        # once, refused when replayed.
        identity = load_identity_example().ColaIdentity(cola.base_url, f"{cola.base_url}/mcp/{slug}", stranger.tenant_id)
        assert identity.verify(theirs)["sub"] == stranger.user_id
        with pytest.raises(jwt.InvalidTokenError, match="replayed"):
            identity.verify(theirs)
    finally:
        upstream.stop()


def initialize_with_identity(url: str, assertion: str) -> httpx2.Response:
    headers, body = mcp_request(
        "initialize",
        {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
        era="legacy",
    )
    headers["X-Cola-Identity"] = assertion
    return httpx2.post(url, content=json.dumps(body).encode(), headers=headers, timeout=30)


@pytest.mark.parametrize(("old_kind", "new_kind"), [("ed25519", "ed25519"), ("ed25519", "p256")])
def test_a_key_rotation_publishes_both_keys_and_signs_with_the_new_one(
    tmp: Path, recorder: Process, old_kind: str, new_kind: str
) -> None:
    """Restart on the same database with the new key current and the old one
    previous: assertions signed before the switch still verify against the
    JWKS, new ones carry the new kid."""
    old, new = generate(old_kind), generate(new_kind)
    public = f"http://cola-{uuid.uuid4().hex[:6]}.test"  # the same issuer before and after
    before = ColaServer(extra_env={**GATEWAY_ENV, "COLA_PUBLIC_URL": public, "COLA_IDENTITY_KEY_FILE": str(old.write(tmp))})
    after: ColaServer | None = None
    try:
        before.start()
        owner = before.owner(role="admin")
        slug = register(owner, recorder.url, forward_identity=True)["slug"]
        key = granted_key(owner, slug)["key"]
        clear(recorder)
        assert gateway_call(before, slug, key).status_code == 200
        signed_before = last_assertion(recorder)
        assert [k["kid"] for k in jwks_of(before)] == [old.kid]
        before.stop()

        after = ColaServer(
            extra_env={
                **GATEWAY_ENV,
                "COLA_DATABASE_URL": before.env["COLA_DATABASE_URL"],
                "COLA_JWT_SECRET": before.env["COLA_JWT_SECRET"],
                "COLA_PUBLIC_URL": public,
                "COLA_IDENTITY_KEY_FILE": str(new.write(tmp)),
                "COLA_IDENTITY_PREVIOUS_KEY_FILE": str(old.write(tmp)),
            }
        ).start()
        jwks = jwks_of(after)
        assert [k["kid"] for k in jwks] == [new.kid, old.kid]
        assert [k["alg"] for k in jwks] == [new.alg, old.alg]
        clear(recorder)
        assert gateway_call(after, slug, key).status_code == 200
        signed_after = last_assertion(recorder)
        audience = f"{public}/mcp/{slug}"
        old_header, _ = check_assertion(signed_before, jwks, issuer=public, audience=audience, alg=old.alg)
        assert old_header["kid"] == old.kid
        new_header, claims = check_assertion(signed_after, jwks, issuer=public, audience=audience, alg=new.alg)
        assert new_header["kid"] == new.kid
        assert claims["sub"] == owner.user_id
    finally:
        if after is not None:
            after.cleanup()
        before.cleanup()


def test_without_a_configured_key_one_ephemeral_ed25519_key_is_published(vcola: ColaServer) -> None:
    keys = jwks_of(vcola)
    assert len(keys) == 1, keys
    assert (keys[0]["kty"], keys[0]["crv"], keys[0]["alg"], keys[0]["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    public = {k: keys[0][k] for k in ("kty", "crv", "x")}
    canonical = json.dumps(public, sort_keys=True, separators=(",", ":")).encode()
    assert keys[0]["kid"] == b64url(hashlib.sha256(canonical).digest())
