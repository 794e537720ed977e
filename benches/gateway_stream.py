"""Resident memory of cola-api over long SSE streams through the gateway
(benches/gateway.sh, part (c)).

Opens STREAMS calls at once of the upstream's `stream_slowly` tool through
Cola's /mcp/{slug} in 2026-07-28 (each answer an SSE stream of progress
every INTERVAL ms for SECONDS), and samples the server's VmRSS from
/proc/<pid>/status: before the first call, at the start (every stream has
its first event), every second, at the end (every stream has its last
progress event, so all are still open), and after all have closed. Each
stream is checked: every progress event in order, then the tool's result.

    python benches/gateway_stream.py --url URL --key KEY --pid PID
        [--seconds N] [--streams N] [--interval-ms N]

Prints SAMPLE lines and one RESULT line (sizes in KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx2

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "gateway-bench", "version": "0"},
}


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Phase:
    """Counts streams that reached a point; set once all have."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.reached = asyncio.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count == self.total:
            self.reached.set()


async def one_stream(
    http: httpx2.AsyncClient, url: str, key: str, n: int, steps: int, interval_ms: int, start: Phase, end: Phase
) -> dict:
    body = {
        "jsonrpc": "2.0",
        "id": n,
        "method": "tools/call",
        "params": {
            "name": "stream_slowly",
            "arguments": {"steps": steps, "interval_ms": interval_ms, "tag": f"bench-{n}"},
            "_meta": {**META, "progressToken": f"bench-{n}"},
        },
    }
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "stream_slowly",
    }
    seen = 0
    result = None
    last = None
    max_gap = 0.0
    data: list[str] = []
    async with http.stream("POST", url, content=json.dumps(body).encode(), headers=headers) as r:
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
            raise RuntimeError(f"stream {n}: {r.status_code} {r.headers.get('content-type')}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                continue
            if line != "" or not data:
                continue
            message = json.loads("\n".join(data))
            data = []
            now = time.monotonic()
            if last is not None:
                max_gap = max(max_gap, now - last)
            last = now
            if message.get("method") == "notifications/progress":
                seen += 1
                if message["params"]["progress"] != seen:
                    raise RuntimeError(f"stream {n}: progress {message['params']['progress']} after {seen - 1}")
                if seen == 1:
                    start.arrive()
                if seen == steps:
                    end.arrive()
            elif "result" in message or "error" in message:
                result = message
    text = ((result or {}).get("result") or {}).get("content", [{}])[0].get("text")
    if text != f"streamed {steps} steps":
        raise RuntimeError(f"stream {n}: ended with {result!r} after {seen} progress events")
    return {"events": seen, "max_gap_s": max_gap}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--interval-ms", type=int, default=100)
    args = parser.parse_args()
    steps = max(2, int(args.seconds * 1000 / args.interval_ms))
    start, end = Phase(args.streams), Phase(args.streams)
    samples: dict[str, int] = {}
    peak = 0

    def sample(label: str) -> int:
        nonlocal peak
        rss = status_kib(args.pid, "VmRSS")
        peak = max(peak, rss)
        samples[label] = rss
        print(f"SAMPLE {label} rss_kib={rss} threads={status_kib(args.pid, 'Threads')}", flush=True)
        return rss

    sample("before")
    began = time.monotonic()
    limits = httpx2.Limits(max_connections=args.streams + 8, max_keepalive_connections=args.streams + 8)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=60.0), limits=limits) as http:
        tasks = [
            asyncio.create_task(one_stream(http, args.url, args.key, n, steps, args.interval_ms, start, end))
            for n in range(args.streams)
        ]

        async def watch() -> None:
            await start.reached.wait()
            sample("start")
            tick = 1
            while not end.reached.is_set():
                try:
                    await asyncio.wait_for(end.reached.wait(), timeout=1.0)
                except TimeoutError:
                    sample(f"t+{tick}s")
                    tick += 1
            sample("end")

        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(*tasks)
        await watcher
    sample("after")
    elapsed = time.monotonic() - began
    events = sum(r["events"] for r in results)
    max_gap = max(r["max_gap_s"] for r in results)
    print(
        f"RESULT streams={args.streams} seconds={elapsed:.1f} steps={steps} events={events} "
        f"max_gap_ms={max_gap * 1000:.0f} rss_before_kib={samples['before']} rss_start_kib={samples['start']} "
        f"rss_end_kib={samples['end']} rss_after_kib={samples['after']} rss_peak_kib={peak} "
        f"hwm_kib={status_kib(args.pid, 'VmHWM')}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
