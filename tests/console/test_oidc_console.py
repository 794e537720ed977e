"""Sign-in to the console with a real OpenID Connect provider
(`oidc-provider-mock`), in a real browser: authorization code with PKCE,
the session cookie's attributes, CSRF refusal, and sign-out."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from consoletest import Process, start_cola, start_provider

ALICE = {"sub": "alice@example.com", "email": "alice@example.com", "tenant_id": "acme", "roles": ["viewer", "cola-admin"]}
BOB = {"sub": "bob", "email": "bob@example.com", "tenant_id": "acme"}


@pytest.fixture(scope="module")
def provider() -> Iterator[Process]:
    provider = start_provider(ALICE, BOB)
    yield provider
    provider.stop()


@pytest.fixture
def cola(provider: Process) -> Iterator[Process]:
    cola = start_cola(
        COLA_OIDC_ISSUER=provider.base,
        COLA_OIDC_CLIENT_ID="cola-console",
        COLA_OIDC_CLIENT_SECRET="a-client-secret-of-at-least-32-bytes",
        COLA_JWT_ROLE_CLAIM="roles",
        COLA_JWT_ADMIN_ROLES="cola-admin",
    )
    yield cola
    cola.stop()


def sign_in_as(page: Page, cola: Process, provider: Process, who: str) -> dict[str, list[str]]:
    page.goto(f"{cola.base}/console")
    with page.expect_request(lambda r: r.url.startswith(f"{provider.base}/oauth2/authorize")) as authorize:
        page.get_by_role("link", name="Sign in").click()
    page.get_by_role("button", name=who).click()
    page.wait_for_url(f"{cola.base}/console**")
    return parse_qs(urlsplit(authorize.value.url).query)


def test_sign_in_uses_pkce_and_sets_a_strict_http_only_session(page: Page, cola: Process, provider: Process) -> None:
    query = sign_in_as(page, cola, provider, "alice@example.com")
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["cola-console"]
    assert query["redirect_uri"] == [f"{cola.base}/console/callback"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0]
    assert "openid" in query["scope"][0].split()

    expect(page.get_by_role("heading", name="Keys of your tenant")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("alice@example.com")
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    session = cookies["cola_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/"
    assert session["secure"] is False, "plain http in the test; Secure behind https"
    assert "cola_sign_in" not in cookies, "the sign-in flow's cookie is gone"

    # The console works through the REST API with that session.
    page.get_by_role("link", name="Create your first key").click()
    page.get_by_label("Name").fill("signed in with the provider")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("dialog", name="Your new key")).to_be_visible()


def test_a_write_without_the_csrf_token_is_refused(page: Page, cola: Process, provider: Process) -> None:
    sign_in_as(page, cola, provider, "alice@example.com")
    expect(page.get_by_role("heading", name="Keys of your tenant")).to_be_visible()
    # The browser's cookies, without the page's token: what a forged
    # cross-site request would carry.
    response = page.request.post(f"{cola.base}/api/mcp/keys", data={"name": "forged"},
                                 headers={"origin": cola.base})
    assert response.status == 403
    assert response.json()["type"] == "urn:cola:problem:csrf"
    listed = page.request.get(f"{cola.base}/api/mcp/keys")
    assert listed.status == 200 and listed.json()["items"] == [], "nothing was created"


def test_a_member_sees_only_their_keys_and_sign_out_ends_the_session(page: Page, cola: Process, provider: Process) -> None:
    sign_in_as(page, cola, provider, "bob")
    expect(page.get_by_role("heading", name="Your keys")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert "cola_session" not in {cookie["name"] for cookie in page.context.cookies()}
    assert page.request.get(f"{cola.base}/api/mcp/keys").status == 401
