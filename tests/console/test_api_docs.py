"""The API reference at /api/docs, in Chromium: reached from the console,
every documented operation on it, and nothing fetched from anywhere but
Cola itself (docs/decisions.md, 143)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from consoletest import Process, start_cola


@pytest.fixture
def cola() -> Iterator[Process]:
    cola = start_cola("--dev")
    yield cola
    cola.stop()


def test_the_reference_is_linked_from_the_console_complete_and_self_contained(
    page: Page, cola: Process
) -> None:
    page.goto(f"{cola.base}/console")
    page.get_by_role("link", name="API reference").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Cola management API")

    with urllib.request.urlopen(f"{cola.base}/api/openapi.json") as response:
        document = json.load(response)
    text = page.locator("main").inner_text()
    operations = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in ("get", "post", "put", "patch", "delete")
        if method in item
    ]
    assert len(operations) >= 15
    for operation in operations:
        assert operation in text, operation

    origin = urlsplit(cola.base).netloc
    foreign = [url for url in page.requests if urlsplit(url).netloc != origin]  # type: ignore[attr-defined]
    assert foreign == []
    # The page's own policy forbids scripts and anything from elsewhere.
    policy = page.request.get(f"{cola.base}/api/docs").headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert page.locator("script").count() == 0
