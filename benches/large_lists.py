"""What a gateway list answer of just under 4 MiB costs Cola: resident memory
(VmRSS after each round, VmHWM at the end) and CPU per answer, while ten
such `tools/list` answers are filtered at once, round after round.

    .venv/bin/python benches/large_lists.py --bin target/release/cola-api [--rounds 5] [--concurrent 10]

The upstream is `tests/python/raw_upstream.py` (`/mcp/large`: 41 000 small
tools, every other one read-only, about 4.0 MB); the key reads, so half the
list is filtered away. Cola runs on a fresh SQLite file. Figures go to
docs/performance.md; they depend on the machine, so compare binaries in one
run (`--bin` twice, one after the other).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))

from colatest import ColaServer, free_port, mcp_request, poll  # noqa: E402


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=10)
    args = parser.parse_args()

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(REPO / "tests/python/raw_upstream.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert upstream.stdout is not None and upstream.stdout.readline().startswith("READY")
    poll(
        lambda: httpx2.get(f"http://127.0.0.1:{port}/record", timeout=2).status_code,
        until=lambda status: status == 200,
        deadline_s=30,
        what="the upstream",
    )
    cola = ColaServer(
        extra_env={
            "COLA_GATEWAY_ALLOWED_NETWORKS": "127.0.0.0/8",
            "COLA_SECRETS_KEY": "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=",
        },
        bin_path=Path(args.bin).resolve(),
    ).start()
    try:
        admin = cola.owner(role="admin")
        slug = f"large-{uuid.uuid4().hex[:6]}"
        r = cola.http.post(
            "/api/mcp/servers",
            json={"slug": slug, "name": "large lists", "url": f"http://127.0.0.1:{port}/mcp/large"},
            headers=admin.headers,
        )
        assert r.status_code == 201, r.text
        key = admin.create_key(
            permissions={"read": True, "write": False, "servers": {slug: {"allowed_tools": None, "allowed_resources": None, "allowed_prompts": None}}}
        )["key"]
        h, body = mcp_request("tools/list", era="modern")
        h["Authorization"] = f"Bearer {key}"
        payload = json.dumps(body).encode()

        def one(_: int) -> int:
            with httpx2.Client(timeout=120) as http:
                response = http.post(f"{cola.base_url}/mcp/{slug}", content=payload, headers=h)
                assert response.status_code == 200, response.text[:200]
                return len(response.json()["result"]["tools"])

        assert cola.process is not None
        pid = cola.process.pid
        print(f"binary {args.bin}")
        print(f"before: VmRSS {status_kib(pid, 'VmRSS') / 1024:.1f} MiB")
        cpu_before, answers = cpu_seconds(pid), 0
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
            for round_ in range(1, args.rounds + 1):
                shown = list(pool.map(one, range(args.concurrent)))
                answers += len(shown)
                print(
                    f"round {round_}: {args.concurrent} answers of {shown[0]} tools each; "
                    f"VmRSS {status_kib(pid, 'VmRSS') / 1024:.1f} MiB"
                )
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
        print(f"peak: VmHWM {status_kib(pid, 'VmHWM') / 1024:.1f} MiB")
        print(f"cola CPU per answer: {cpu / answers * 1000:.1f} ms; {answers / elapsed:.1f} answers/s")
    finally:
        cola.cleanup()
    upstream.terminate()
    upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
