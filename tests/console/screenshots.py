"""Writes docs/screenshots/*.png of the console's main pages, driving the
same browser as the tests against the real binary in --dev mode. Run through
scripts/screenshots."""

from __future__ import annotations

from playwright.sync_api import sync_playwright

from consoletest import CHROMIUM, REPO, start_cola

OUT = REPO / "docs" / "screenshots"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cola = start_cola("--dev", COLA_PUBLIC_URL="http://127.0.0.1:8080")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"{cola.base}/console")
            page.screenshot(path=OUT / "sign-in.png")
            page.get_by_role("link", name="Sign in as the demo admin").click()
            page.get_by_role("heading", name="Keys of your tenant").wait_for()
            page.screenshot(path=OUT / "empty.png")
            for name, tools in [("CI deploy bot", "whoami, list_api_keys"), ("Cursor on my desktop", "")]:
                page.goto(f"{cola.base}/console#/keys/new")
                page.get_by_label("Name").fill(name)
                page.get_by_label("Allowed tools").fill(tools)
                page.get_by_role("button", name="Create key").click()
                page.get_by_role("button", name="I have copied it — close").click()
                page.get_by_role("heading", name=name).wait_for()
            page.goto(f"{cola.base}/console#/keys/new")
            page.get_by_label("Name").fill("Claude Code on my laptop")
            page.get_by_label("Description").fill("Work laptop")
            page.screenshot(path=OUT / "new-key.png", full_page=True)
            page.get_by_role("button", name="Create key").click()
            page.get_by_role("dialog", name="Your new key").wait_for()
            page.screenshot(path=OUT / "secret.png")
            page.get_by_role("button", name="I have copied it — close").click()
            page.get_by_role("heading", name="Claude Code on my laptop").wait_for()
            page.screenshot(path=OUT / "key.png", full_page=True)
            page.goto(f"{cola.base}/console#/keys")
            page.get_by_role("heading", name="Keys of your tenant").wait_for()
            page.get_by_role("link", name="Claude Code on my laptop").wait_for()
            page.screenshot(path=OUT / "keys.png", full_page=True)
            browser.close()
    finally:
        cola.stop()
    print(f"screenshots written to {OUT}")


if __name__ == "__main__":
    main()
