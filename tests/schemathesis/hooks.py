"""Schemathesis hooks: every request is sent by a user of its own.

Management writes are limited per tenant user (a burst of 20, then 10 a
second), and a fuzzer sends thousands: with one token, nearly every write
would be answered 429 and the handlers behind the limit would go untested.
Each case is therefore signed for a fresh admin of one tenant of this run, so
the stateful phase still finds the keys that earlier cases created (an admin
sees every key of the tenant). The JWT is HS256 with `COLA_JWT_SECRET`, as
`cola-api dev-token` would sign it.

`POST /api/mcp/verify` takes a server's verification token instead: one is
minted, for a verify-only server of that tenant, before its first case.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.request
import uuid

import schemathesis

TENANT = str(uuid.uuid4())


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token() -> str:
    header = _segment(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _segment(
        json.dumps(
            {
                "sub": str(uuid.uuid4()),
                "tenant_id": TENANT,
                "role": "admin",
                "exp": int(time.time()) + 3600,
            }
        ).encode()
    )
    signing_input = f"{header}.{claims}".encode()
    secret = os.environ["COLA_JWT_SECRET"].encode()
    signature = _segment(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


_server_token: str | None = None


def _post(path: str, body: dict | None) -> dict:
    request = urllib.request.Request(
        os.environ["COLA_SCHEMATHESIS_BASE"] + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {_token()}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _verification_token() -> str:
    global _server_token
    if _server_token is None:
        slug = f"fuzz-{uuid.uuid4().hex[:12]}"
        server = _post("/api/mcp/servers", {"slug": slug, "name": slug, "url": None})
        _server_token = _post(f"/api/mcp/servers/{server['id']}/token", None)["token"]
    return _server_token


@schemathesis.hook
def before_call(context, case, **kwargs):
    # On every request, as a static `--header` would be: the fuzzer is here
    # to exercise the handlers, and refused JWTs are tested elsewhere.
    case.headers = case.headers or {}
    if case.path == "/api/mcp/verify":
        case.headers["Authorization"] = f"Bearer {_verification_token()}"
    else:
        case.headers["Authorization"] = f"Bearer {_token()}"
