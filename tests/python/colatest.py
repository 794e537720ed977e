"""Helpers for the end-to-end tests: run a real `cola-api`, mint management
JWTs with its own `dev-token` subcommand, manage keys over REST and speak
raw MCP over HTTP.

Everything here talks to the binary over 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

REPO = Path(__file__).resolve().parents[2]
COLA_BIN = Path(os.environ.get("COLA_BIN", REPO / "target" / "debug" / "cola-api"))

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"

WWW_AUTHENTICATE = 'Bearer realm="cola", error="invalid_token"'
ALL_TOOLS = ["whoami", "list_api_keys", "revoke_api_key"]
# Fields of a key that legitimately change between two reads of it.
USAGE_FIELDS = ("usage_count", "last_used_at")

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------
# Polling (the only way these tests wait for anything)
# --------------------------------------------------------------------------


def poll(
    probe: Callable[[], Any],
    *,
    until: Callable[[Any], bool],
    deadline_s: float,
    interval_s: float = 0.05,
    what: str = "condition",
) -> Any:
    """Calls `probe` until `until(value)` holds; fails after `deadline_s`
    with the last value seen. Returns the first value that satisfied it."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while True:
        last = probe()
        if until(last):
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last value: {last!r}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------
# Key format (docs/operations.md, "Recognising Cola keys: the pattern")
# --------------------------------------------------------------------------


def base62(n: int, width: int) -> str:
    digits = []
    while n:
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    text = "".join(reversed(digits)) or "0"
    return text.rjust(width, "0")


def checksum(body: str) -> str:
    """The 6-character base62 CRC-32 (IEEE) of `cola_` + 30 random chars."""
    return base62(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, 6)


def random_base62(n: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(n))


def make_key(random_part: str | None = None) -> str:
    """A syntactically valid key (correct checksum) that was never issued."""
    random_part = random_part if random_part is not None else random_base62(30)
    assert len(random_part) == 30
    body = "cola_" + random_part
    return body + checksum(body)


def key_is_well_formed(key: str) -> bool:
    return (
        len(key) == 41
        and key.startswith("cola_")
        and all(c in BASE62 for c in key[5:])
        and checksum(key[:35]) == key[35:]
    )


# --------------------------------------------------------------------------
# Raw MCP requests
# --------------------------------------------------------------------------


def modern_meta() -> dict[str, Any]:
    return {
        META_VERSION: MODERN,
        META_CAPABILITIES: {},
        META_CLIENT_INFO: {"name": "cola-e2e", "version": "0"},
    }


def mcp_request(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    era: str = "modern",
    id: Any = 1,
    notification: bool = False,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of a well-formed request in the given era
    (`modern` = 2026-07-28 with `_meta` and the standard headers, `legacy`
    = handshake-era with `MCP-Protocol-Version: 2025-11-25`)."""
    params = dict(params or {})
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if era == "modern":
        params["_meta"] = {**modern_meta(), **params.get("_meta", {})}
        headers["MCP-Protocol-Version"] = MODERN
        headers["Mcp-Method"] = method
        if method in ("tools/call", "prompts/get") and isinstance(params.get("name"), str):
            headers["Mcp-Name"] = params["name"]
        if method == "resources/read" and isinstance(params.get("uri"), str):
            headers["Mcp-Name"] = params["uri"]
    elif era == "legacy":
        headers["MCP-Protocol-Version"] = LEGACY
    else:
        raise ValueError(era)
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        body["params"] = params
    if not notification:
        body["id"] = id
    return headers, body


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------
# A running server
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Owner:
    """A tenant user with a management JWT minted by `cola-api dev-token`."""

    server: ColaServer
    tenant_id: str
    user_id: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def create_key(self, expect: int = 201, **body: Any) -> dict[str, Any]:
        body.setdefault("name", f"e2e {uuid.uuid4().hex[:8]}")
        r = self.server.http.post("/api/mcp/keys", json=body, headers=self.headers)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def get_key(self, key_id: str) -> dict[str, Any]:
        r = self.server.http.get(f"/api/mcp/keys/{key_id}", headers=self.headers)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def patch_permissions(self, key_id: str, **body: Any) -> dict[str, Any]:
        r = self.server.http.patch(f"/api/mcp/keys/{key_id}/permissions", json=body, headers=self.headers)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def revoke(self, key_id: str) -> None:
        r = self.server.http.delete(f"/api/mcp/keys/{key_id}", headers=self.headers)
        assert r.status_code == 204, (r.status_code, r.text)


@dataclass
class ColaServer:
    """One `cola-api` process with its own SQLite file and JWT secret."""

    extra_env: dict[str, str] = field(default_factory=dict)
    bin_path: Path = COLA_BIN
    workdir: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    port: int = field(init=False, default=0)
    process: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _http: httpx2.Client | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="cola-e2e-"))
        base = {k: v for k, v in os.environ.items() if not k.startswith("COLA_")}
        self.env = {
            **base,
            "COLA_DATABASE_URL": f"sqlite://{self.workdir / 'cola.db'}?mode=rwc",
            "COLA_JWT_SECRET": secrets.token_hex(32),
            "COLA_USAGE_FLUSH_INTERVAL_MS": "100",
            "COLA_LOG_FORMAT": "json",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            **self.extra_env,
        }

    # -- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, deadline_s: float = 60.0) -> ColaServer:
        if not self.bin_path.exists():
            raise RuntimeError(f"{self.bin_path} does not exist; run `cargo build -p cola-api` or set COLA_BIN")
        for _attempt in range(5):
            self.port = free_port()
            self.env["COLA_LISTEN"] = f"127.0.0.1:{self.port}"
            log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
            self.process = subprocess.Popen(
                [str(self.bin_path)],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_healthy(deadline_s):
                self._http = httpx2.Client(base_url=self.base_url, timeout=30.0)
                return self
            # The port was taken between choosing and binding: try another.
            if "cannot listen" not in self.log_tail():
                break
        raise RuntimeError(f"cola-api did not become healthy:\n{self.log_tail()}")

    def _wait_healthy(self, deadline_s: float) -> bool:
        assert self.process is not None
        end = time.monotonic() + deadline_s
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < end:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        # Our process answered, not something else on the port.
                        return self.process.poll() is None and self._listening_line_seen()
                except httpx2.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        return False

    def _listening_line_seen(self) -> bool:
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "cola-api listening" and record.get("address") == f"127.0.0.1:{self.port}":
                return True
        return False

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients -----------------------------------------------------------

    @property
    def http(self) -> httpx2.Client:
        assert self._http is not None, "server not started"
        return self._http

    def dev_token(self, tenant: str, user: str, role: str = "member") -> str:
        """A management JWT from `cola-api dev-token`, run with this server's
        environment (so with its secret)."""
        out = subprocess.run(
            [str(self.bin_path), "dev-token", "--tenant", tenant, "--user", user, "--role", role],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip().splitlines()[-1].strip()
        assert token.count(".") == 2, f"dev-token printed no JWT: {out.stdout!r}"
        return token

    def owner(self, role: str = "member", tenant: str | None = None) -> Owner:
        tenant = tenant or str(uuid.uuid4())
        user = str(uuid.uuid4())
        return Owner(self, tenant, user, role, self.dev_token(tenant, user, role))

    def mcp(
        self,
        key: str | None,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        era: str = "modern",
        headers: dict[str, str] | None = None,
        id: Any = 1,
        notification: bool = False,
    ) -> httpx2.Response:
        """One raw MCP POST; `headers` are applied last (a value of None
        removes a header)."""
        h, body = mcp_request(method, params, era=era, id=id, notification=notification)
        if key is not None:
            h.update(auth(key))
        for name, value in (headers or {}).items():
            for existing in [k for k in h if k.lower() == name.lower()]:
                del h[existing]
            if value is not None:
                h[name] = value
        return self.http.post("/mcp", content=json.dumps(body).encode(), headers=h)

    def call_tool(self, key: str, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> httpx2.Response:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        return self.mcp(key, "tools/call", params, **kw)

    def tool_names(self, key: str, **kw: Any) -> list[str]:
        r = self.mcp(key, "tools/list", **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return [t["name"] for t in r.json()["result"]["tools"]]

    def usage_count(self, owner: Owner, key_id: str) -> int:
        return owner.get_key(key_id)["usage_count"]


def without_usage(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k not in USAGE_FIELDS}


def rpc_error(r: httpx2.Response) -> dict[str, Any]:
    body = r.json()
    assert "error" in body, body
    assert body.get("jsonrpc") == "2.0", body
    return body["error"]
