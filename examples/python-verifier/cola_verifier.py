"""Cola keys for an MCP server built with the official Python SDK (`mcp` 2.x).

`ColaTokenVerifier` is the SDK's `TokenVerifier`: it asks Cola's
`POST /api/mcp/verify` about each bearer key and answers an `AccessToken` for
a VALID key, `None` (so the SDK answers 401) for anything else. `ClientAddress`
is the ASGI middleware that lets it tell Cola the end client's address.
Copy this file next to your server; it needs only `mcp` (which brings httpx2).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx2
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

log = logging.getLogger("cola_verifier")

# The address of the client whose request is being authenticated. The SDK
# calls `verify_token(token)` with the token only, so the peer travels here.
client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("cola_client_address", default=None)


class ClientAddress:
    """ASGI middleware around the SDK's app: remembers the TCP peer of each
    request for `ColaTokenVerifier`. Behind your own reverse proxy, set
    `client_address` from its forwarding header instead, and only when the
    peer is that proxy: a client must not choose its own address."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        reset = client_address.set(peer[0] if peer else None)
        try:
            await self.app(scope, receive, send)
        finally:
            client_address.reset(reset)


class ColaTokenVerifier:
    """Verifies `cola_` keys with Cola, on behalf of one registered server.

    `cola_url` is Cola's base URL, `server_token` the `colasrv_` token minted
    for this server (`POST /api/mcp/servers/{id}/token`). A VALID answer is
    reused for at most its `cache_ttl_ms`; any other answer is never kept,
    so a revoked key is refused as soon as Cola says so."""

    def __init__(
        self,
        cola_url: str,
        server_token: str,
        *,
        http: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
    ) -> None:
        self._verify_url = cola_url.rstrip("/") + "/api/mcp/verify"
        self._issuer = cola_url.rstrip("/")
        self._server_token = server_token
        self._http = http or httpx2.AsyncClient(timeout=5.0)
        self._clock = clock
        self._max_cached = max_cached
        # sha256(client address, key) -> (monotonic deadline, answer)
        self._cache: dict[bytes, tuple[float, AccessToken]] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token.startswith("cola_"):
            return None
        ip = client_address.get()
        # The answer depends on the address (the key's allow-list), so both
        # make the cache key; hashing keeps the raw key out of the dict.
        slot = hashlib.sha256(f"{ip}\n{token}".encode()).digest()
        now = self._clock()
        cached = self._cache.get(slot)
        if cached is not None and cached[0] > now:
            return cached[1]
        self._cache.pop(slot, None)

        answer = await self._ask(token, ip)
        if answer is None or answer.get("code") != "VALID":
            return None
        access = self._access_token(token, answer)
        ttl_s = max(0, int(answer.get("cache_ttl_ms", 0))) / 1000
        if ttl_s > 0:
            self._remember(slot, now + ttl_s, access)
        return access

    async def _ask(self, key: str, ip: str | None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"key": key}
        if ip is not None:
            body["client_ip"] = ip
        try:
            r = await self._http.post(
                self._verify_url, json=body, headers={"Authorization": f"Bearer {self._server_token}"}
            )
        except httpx2.HTTPError as e:
            # Fail closed: no answer from Cola admits nobody.
            log.warning("Cola verify unreachable: %s", type(e).__name__)
            return None
        if r.status_code == 200:
            return r.json()
        # 429 (the key's rate limit, or too many failures from this client),
        # 401 (our server token), 400, 503: the key is not admitted either way.
        try:
            code = r.json().get("code", "")
        except ValueError:
            code = ""
        log.warning("Cola verify answered %s %s", r.status_code, code)
        return None

    def _access_token(self, token: str, answer: dict[str, Any]) -> AccessToken:
        permissions = answer["permissions"]
        scopes = [flag for flag in ("read", "write") if permissions.get(flag)]
        return AccessToken(
            token=token,
            client_id=answer.get("key_prefix") or answer["key_id"],
            subject=answer["user_id"],
            scopes=scopes,
            expires_at=int(datetime.fromisoformat(answer["expires_at"]).timestamp()),
            claims={
                "iss": self._issuer,
                "tenant_id": answer["tenant_id"],
                "user_id": answer["user_id"],
                "key_id": answer["key_id"],
                "key_prefix": answer["key_prefix"],
                "permissions": permissions,
            },
        )

    def _remember(self, slot: bytes, deadline: float, access: AccessToken) -> None:
        if len(self._cache) >= self._max_cached:
            now = self._clock()
            for stale in [s for s, (until, _) in self._cache.items() if until <= now]:
                del self._cache[stale]
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
        self._cache[slot] = (deadline, access)


def may_use_tool(name: str, *, read_only: bool) -> bool:
    """Whether the key of the current request may call tool `name`, by the
    rule Cola applies at its gateway: a read-only tool needs `read`, any other
    `write`, and the server's grant (`allowed_tools`: null = all, a trailing
    `*` matches a prefix) must name it. Call it from inside a tool."""
    access = get_access_token()
    if access is None:
        return False
    if ("read" if read_only else "write") not in access.scopes:
        return False
    allowed = (access.claims or {}).get("permissions", {}).get("allowed_tools")
    if allowed is None:
        return True
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in allowed)
