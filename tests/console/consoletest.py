"""Helpers for the console's browser tests: a real `cola-api` (with `--dev`,
or pointed at an OpenID Connect provider), a real provider
(`oidc-provider-mock`), and Debian's chromium driven by Playwright.

Everything listens on 127.0.0.1; nothing waits by sleeping: readiness is
polled with a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COLA_BIN = Path(os.environ.get("COLA_BIN", REPO / "target" / "debug" / "cola-api"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def poll(probe: Callable[[], Any], *, until: Callable[[Any], bool], deadline_s: float, what: str) -> Any:
    end = time.monotonic() + deadline_s
    last: Any = None
    while True:
        last = probe()
        if until(last):
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last: {last!r}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else None
        except ValueError:
            return error.code, raw.decode(errors="replace")
    except (urllib.error.URLError, ConnectionError):
        return 0, None


@dataclass
class Process:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_cola(*args: str, **env: str) -> Process:
    """`cola-api` on a free port with a fresh SQLite file in a directory of
    its own (where `--dev` keeps its secret)."""
    workdir = Path(tempfile.mkdtemp(prefix="cola-console-"))
    port = free_port()
    log_path = workdir / "cola.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "COLA_LISTEN": f"127.0.0.1:{port}",
        "COLA_DATABASE_URL": f"sqlite://{workdir}/cola.db?mode=rwc",
        "COLA_LOG_FORMAT": "json",
        "COLA_USAGE_FLUSH_INTERVAL_MS": "100",
        **env,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(COLA_BIN), *args], cwd=workdir, env=environment, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    cola = Process(base, process, log_path)
    try:
        poll(lambda: http("GET", f"{base}/health")[0], until=lambda s: s == 200 or process.poll() is not None,
             deadline_s=30, what="cola-api /health")
    except AssertionError:
        cola.stop()
        raise
    if process.poll() is not None:
        raise AssertionError(f"cola-api exited: {cola.log()}")
    return cola


def start_provider(*users: dict[str, Any]) -> Process:
    """`oidc-provider-mock` with `users` (each a claims object with `sub`)
    offered on its sign-in page."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="cola-oidc-")) / "provider.log"
    args = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port)]
    for user in users:
        args += ["--user-claims", json.dumps(user)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    provider = Process(base, process, log_path)
    discovery = f"{base}/.well-known/openid-configuration"
    try:
        poll(lambda: http("GET", discovery)[0], until=lambda s: s == 200 or process.poll() is not None,
             deadline_s=30, what="the provider's discovery document")
    except AssertionError:
        provider.stop()
        raise
    return provider


def whoami(base: str, key: str) -> int:
    status, _ = http("POST", f"{base}/mcp", headers={
        "authorization": f"Bearer {key}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }, body={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
    return status
