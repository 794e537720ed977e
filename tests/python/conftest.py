"""Fixtures: real `cola-api` processes, each with a fresh SQLite file and
a random JWT secret, started on a free 127.0.0.1 port and awaited by
polling `GET /health`.

- `cola`          the default server (no trusted proxies, no allowed origins)
- `cola_proxy`    COLA_TRUSTED_PROXIES=127.0.0.1: `X-Forwarded-For` is believed,
                  which also lets a test pick its own client address (and so its
                  own failure-rate-limit bucket)
- `cola_origins`  COLA_ALLOWED_ORIGINS=http://good.example
- `cola_factory`  start(**env) -> a server with other settings (shared per setting)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from colatest import ColaServer, Owner

_ip_counter = itertools.count(1)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def cola_factory() -> Iterator[Callable[..., ColaServer]]:
    servers: dict[tuple[tuple[str, str], ...], ColaServer] = {}

    def start(**env: str) -> ColaServer:
        signature = tuple(sorted(env.items()))
        if signature not in servers:
            servers[signature] = ColaServer(extra_env=dict(env)).start()
        return servers[signature]

    yield start
    for server in servers.values():
        server.cleanup()


@pytest.fixture(scope="session")
def cola(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    return cola_factory()


@pytest.fixture(scope="session")
def cola_proxy(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    return cola_factory(COLA_TRUSTED_PROXIES="127.0.0.1")


@pytest.fixture(scope="session")
def cola_origins(cola_factory: Callable[..., ColaServer]) -> ColaServer:
    return cola_factory(COLA_ALLOWED_ORIGINS="http://good.example")


@pytest.fixture
def owner(cola: ColaServer) -> Owner:
    """A fresh member of a fresh tenant on the default server."""
    return cola.owner()


@pytest.fixture
def client_ip() -> str:
    """A client address of its own for this test (used with `cola_proxy`
    through `X-Forwarded-For`), so failure counting never spills over
    between tests."""
    n = next(_ip_counter)
    return f"10.{100 + n // 65536}.{(n // 256) % 256}.{n % 256}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, attach the tail of each server's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("cola", "cola_proxy", "cola_origins"):
            server = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(server, ColaServer):
                report.sections.append((f"{name} log tail", server.log_tail()))
