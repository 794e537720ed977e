"""The console with `--dev`, in a real browser: sign in as the demo admin,
create a key (its secret shown once), use it at /mcp, revoke it with a
confirmation, and read the audit trail — with no request leaving Cola's
origin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from consoletest import Process, poll, start_cola, whoami


@pytest.fixture
def cola() -> Iterator[Process]:
    cola = start_cola("--dev")
    yield cola
    cola.stop()


def sign_in(page: Page, cola: Process) -> None:
    page.goto(f"{cola.base}/console")
    page.get_by_role("link", name="Sign in as the demo admin").click()
    expect(page.get_by_role("heading", name="Keys of your tenant")).to_be_visible()


def test_a_key_is_created_shown_once_used_revoked_and_audited(page: Page, cola: Process) -> None:
    sign_in(page, cola)
    expect(page.get_by_text("No keys yet.")).to_be_visible()

    page.get_by_role("link", name="Create your first key").click()
    page.get_by_label("Name").fill("Claude Code on my laptop")
    page.get_by_role("button", name="Create key").click()

    dialog = page.get_by_role("dialog", name="Your new key")
    expect(dialog).to_be_visible()
    key = dialog.get_by_label("The new key").text_content() or ""
    assert key.startswith("cola_") and len(key) == 41, key
    snippets = dialog.locator("pre").all_text_contents()
    assert any(s == f'claude mcp add --transport http cola {cola.base}/mcp --header "Authorization: Bearer {key}"'
               for s in snippets), snippets
    assert len(snippets) == 3 and all(key in s and f"{cola.base}/mcp" in s for s in snippets)

    page.get_by_role("button", name="I have copied it — close").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", name="Claude Code on my laptop")).to_be_visible()
    assert key not in page.content(), "the secret is gone once the dialog is closed"

    assert whoami(cola.base, key) == 200, "the key works at /mcp"

    page.get_by_role("button", name="Revoke key").click()
    confirm = page.get_by_role("dialog", name="Revoke this key?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("revoked", exact=True).first).to_be_visible()

    poll(lambda: whoami(cola.base, key), until=lambda s: s == 401, deadline_s=5, what="the key refused")

    audit = page.get_by_role("table", name="Audit trail")
    expect(audit.get_by_text("api_key.created")).to_be_visible()
    expect(audit.get_by_text("api_key.revoked")).to_be_visible()

    foreign = [url for url in page.requests if not url.startswith(f"{cola.base}/")]  # type: ignore[attr-defined]
    assert foreign == [], f"requests left Cola's origin: {foreign}"


def test_a_refused_revocation_is_cancelled_and_errors_show_the_problem_detail(page: Page, cola: Process) -> None:
    sign_in(page, cola)
    page.get_by_role("link", name="New key").click()
    # An empty name: the REST API's problem detail names the field.
    page.get_by_role("button", name="Create key").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("invalid input")
    expect(alert).to_contain_text("name")

    page.get_by_label("Name").fill("kept")
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("button", name="I have copied it — close").click()
    page.get_by_role("button", name="Revoke key").click()
    page.get_by_role("dialog", name="Revoke this key?").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Revoke key")).to_be_visible()
    expect(page.get_by_text("active", exact=True).first).to_be_visible()


def test_the_page_is_usable_by_keyboard_alone(page: Page, cola: Process) -> None:
    sign_in(page, cola)
    # Each page moves the focus to its content, where Tab goes on.
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Show")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="New key")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("typed by keyboard")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="Your new key")).to_be_visible()
    expect(page.get_by_role("button", name="I have copied it — close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("heading", name="typed by keyboard")).to_be_visible()


def test_unchecking_a_keys_last_grant_takes_it_away(page: Page, cola: Process) -> None:
    sign_in(page, cola)
    # A verify-only server to grant (no upstream needed).
    page.get_by_role("link", name="Servers").click()
    page.get_by_label("Slug").fill("notes")
    page.get_by_label("Name", exact=True).fill("Notes")
    page.get_by_role("button", name="Register server").click()
    expect(page.get_by_role("cell", name="notes").first).to_be_visible()

    page.get_by_role("link", name="Keys").click()
    page.get_by_role("link", name="Create your first key").click()
    page.get_by_label("Name").first.fill("granted on notes")
    page.get_by_label("Grant Notes (notes)").check()
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("button", name="I have copied it — close").click()
    grant = page.get_by_label("Grant Notes (notes)")
    expect(grant).to_be_checked()

    grant.uncheck()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Changes saved.")).to_be_visible()
    # The page is drawn again from the key as stored: no grant left.
    expect(page.get_by_label("Grant Notes (notes)")).not_to_be_checked()
    audit = page.get_by_role("table", name="Audit trail")
    expect(audit.get_by_text("api_key.permissions_updated")).to_be_visible()
