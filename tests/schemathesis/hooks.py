"""Schemathesis hooks: every request is sent by a user of its own.

Management writes are limited per tenant user (a burst of 20, then 10 a
second), and a fuzzer sends thousands: with one token, nearly every write
would be answered 429 and the handlers behind the limit would go untested.
Each case is therefore signed for a fresh admin of one tenant of this run, so
the stateful phase still finds the keys that earlier cases created (an admin
sees every key of the tenant). The JWT is HS256 with `COLA_JWT_SECRET`, as
`cola-api dev-token` would sign it.
"""

import base64
import hashlib
import hmac
import json
import os
import time
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


@schemathesis.hook
def before_call(context, case, **kwargs):
    # On every request, as a static `--header` would be: the fuzzer is here
    # to exercise the handlers, and refused JWTs are tested elsewhere.
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {_token()}"
