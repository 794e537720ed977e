"""An MCP server (official Python SDK) behind Cola's gateway that knows who
is calling: every request must carry Cola's `X-Cola-Identity` assertion, and
the server checks it against Cola's published keys before the SDK sees the
request. Register it in Cola with `"forward_identity": true`, then run

    COLA_URL=https://cola.example.com COLA_TENANT_ID=… COLA_SLUG=notes python server.py

COLA_URL is Cola's COLA_PUBLIC_URL (the assertion's issuer), COLA_TENANT_ID
your tenant, COLA_SLUG the slug the server is registered under (the audience
is COLA_URL/mcp/COLA_SLUG). PORT and HOST choose where it listens (default
127.0.0.1:8000). Needs `mcp` and `PyJWT[crypto]`.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from typing import Any

import anyio.to_thread
import jwt
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations

# What Cola signs with: Ed25519 or P-256. Never HS*, never `none`.
ALGORITHMS = ("EdDSA", "ES256")
MAX_LIFETIME_S = 60

caller: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("cola_caller", default=None)


class ColaIdentity:
    """Checks one `X-Cola-Identity` JWT: signature by a key in Cola's JWKS
    (looked up by `kid`, refetched when an unknown `kid` appears, which is
    how a key rotation arrives), `alg` one of ALGORITHMS and the key's own,
    `iss`, `aud`, `exp`, a lifetime of at most 60 s, `tenant_id` and, once
    known, `server_id` (the audience names a slug, and another tenant may
    use the same slug), and a `jti` not seen before (a copied header cannot
    be replayed to this process)."""

    def __init__(
        self, cola_url: str, audience: str, tenant_id: str, server_id: str | None = None, *, leeway_s: int = 5
    ) -> None:
        self.issuer = cola_url.rstrip("/")
        self.audience = audience
        self.tenant_id = tenant_id
        self.server_id = server_id
        self.leeway_s = leeway_s
        self.jwks = jwt.PyJWKClient(self.issuer + "/.well-known/jwks.json", lifespan=300, timeout=5)
        self._seen: dict[str, float] = {}  # jti -> exp
        self._lock = threading.Lock()

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; raises `jwt.InvalidTokenError` (or
        `jwt.PyJWKClientError`) for anything that is not a fresh assertion
        from this Cola for this server."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise jwt.InvalidAlgorithmError(f"alg {header.get('alg')!r} is not accepted")
        if not isinstance(header.get("kid"), str):
            raise jwt.InvalidTokenError("no kid")
        key = self.jwks.get_signing_key(header["kid"])
        claims = jwt.decode(
            token,
            key,
            algorithms=list(ALGORITHMS),
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway_s,
            options={"require": ["iss", "aud", "sub", "iat", "exp", "jti", "tenant_id"]},
        )
        if claims["exp"] - claims["iat"] > MAX_LIFETIME_S:
            raise jwt.InvalidTokenError("lifetime over 60 s")
        if claims.get("tenant_id") != self.tenant_id:
            raise jwt.InvalidTokenError("another tenant's caller")
        if self.server_id is not None and claims.get("server_id") != self.server_id:
            raise jwt.InvalidTokenError("an assertion for another server")
        with self._lock:
            now = time.time()
            for jti, exp in list(self._seen.items()):
                if exp + self.leeway_s < now:
                    del self._seen[jti]
            if claims["jti"] in self._seen:
                raise jwt.InvalidTokenError("replayed jti")
            self._seen[claims["jti"]] = claims["exp"]
        return claims


class RequireColaIdentity:
    """ASGI middleware: a request without a valid assertion is answered 401
    and never reaches the MCP server; a valid one's claims are in `caller`."""

    def __init__(self, app: Any, identity: ColaIdentity) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [v for k, v in scope["headers"] if k.lower() == b"x-cola-identity"]
        claims = None
        if len(headers) == 1:
            try:
                # PyJWKClient fetches with urllib: keep it off the event loop.
                claims = await anyio.to_thread.run_sync(self.identity.verify, headers[0].decode("ascii"))
            except (jwt.InvalidTokenError, jwt.PyJWKClientError, UnicodeDecodeError):
                claims = None
        if claims is None:
            body = b'{"error": "invalid_token", "error_description": "a valid X-Cola-Identity is required"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        reset = caller.set(claims)
        try:
            await self.app(scope, receive, send)
        finally:
            caller.reset(reset)


server = MCPServer("identity-upstream", instructions="Knows who is calling through Cola.")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def whoami() -> str:
    """The caller as Cola asserted it: user (sub), tenant, key."""
    return json.dumps(caller.get())


def main() -> None:
    cola_url = os.environ["COLA_URL"].rstrip("/")
    audience = f"{cola_url}/mcp/{os.environ['COLA_SLUG']}"
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    # Cola reaches this server by whatever host name it was registered
    # with; the assertion, not the Host header, is what admits a request.
    mcp_app = server.streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    # COLA_SERVER_ID: the id Cola gave this server when it was registered
    # (`POST /api/mcp/servers` answers it); set it once known.
    identity = ColaIdentity(cola_url, audience, os.environ["COLA_TENANT_ID"], os.environ.get("COLA_SERVER_ID"))
    app = RequireColaIdentity(mcp_app, identity)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
