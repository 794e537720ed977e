"""Every control of the console has an accessible name that contains its
visible text (WCAG 2.5.3, docs/console.md): a person using speech input says
what they see ("click Copy"), and a screen-reader user hears it. Chromium
computes the names; the test visits every page and dialog of the console
with `--dev`, in each state its buttons can take."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from consoletest import Process, start_cola


@pytest.fixture
def cola() -> Iterator[Process]:
    cola = start_cola("--dev")
    yield cola
    cola.stop()


def names_hold_their_visible_text(scope: Page | Locator) -> list[str]:
    """Asserts it of every visible button and link in `scope`; returns the
    visible texts checked."""
    checked = []
    for role in ("button", "link"):
        for control in scope.get_by_role(role).all():  # type: ignore[arg-type]
            if not control.is_visible():
                continue
            visible = " ".join(control.inner_text().split())
            assert visible, f"a {role} with no visible text: {control}"
            expect(control).to_have_accessible_name(re.compile(re.escape(visible)))
            checked.append(visible)
    return checked


def test_every_button_and_link_is_named_by_what_it_shows(page: Page, cola: Process) -> None:
    page.goto(f"{cola.base}/console")
    assert "Sign in as the demo admin" in names_hold_their_visible_text(page)
    page.get_by_role("link", name="Sign in as the demo admin").click()
    expect(page.get_by_role("heading", name="Keys of your tenant")).to_be_visible()
    assert "Sign out" in names_hold_their_visible_text(page)

    page.get_by_role("link", name="Create your first key").click()
    expect(page.get_by_role("heading", name="New key")).to_be_visible()
    assert "Create key" in names_hold_their_visible_text(page)
    page.get_by_label("Name").fill("named controls")
    page.get_by_role("button", name="Create key").click()

    # The secret's dialog: the key's and each snippet's copy button, before
    # and after a click (copied, or "select and copy" without a clipboard).
    dialog = page.get_by_role("dialog", name="Your new key")
    expect(dialog).to_be_visible()
    copies = [text for text in names_hold_their_visible_text(dialog) if text == "Copy"]
    assert len(copies) == 4, copies
    expect(dialog.get_by_role("button", name="Copy the key")).to_be_visible()
    for snippet in ("Claude Code", "Cursor", "VS Code"):
        expect(dialog.get_by_role("button", name=re.compile(f"^Copy the {snippet}"))).to_be_visible()
    dialog.get_by_role("button", name="Copy the key").click()
    expect(dialog.get_by_role("button", name="Copy the key")).to_have_count(0)
    names_hold_their_visible_text(dialog)
    page.get_by_role("button", name="I have copied it — close").click()

    expect(page.get_by_role("heading", name="named controls")).to_be_visible()
    checked = names_hold_their_visible_text(page)
    assert {"Revoke key", "Save changes", "Rotate key"} <= set(checked), checked
    page.get_by_role("button", name="Revoke key").click()
    confirm = page.get_by_role("dialog", name="Revoke this key?")
    assert {"Cancel", "Revoke"} <= set(names_hold_their_visible_text(confirm))
    confirm.get_by_role("button", name="Cancel").click()

    page.get_by_role("link", name="Servers").click()
    expect(page.get_by_role("heading", name="Servers")).to_be_visible()
    page.get_by_label("Slug").fill("named")
    page.get_by_label("Name", exact=True).fill("A verify-only server")
    page.get_by_role("button", name="Register server").click()
    expect(page.get_by_role("cell", name="named", exact=True)).to_be_visible()
    assert "Delete" in names_hold_their_visible_text(page)

    page.get_by_role("link", name="Offboard").click()
    expect(page.get_by_role("heading", name="Offboard a user")).to_be_visible()
    assert "Offboard user" in names_hold_their_visible_text(page)

    page.get_by_role("link", name="Keys").click()
    expect(page.get_by_role("heading", name="Keys of your tenant")).to_be_visible()
    assert "Offboard this user" in names_hold_their_visible_text(page)
