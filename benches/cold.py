#!/usr/bin/env python3
"""Cold path of key verification, for benches/load.sh (standard library only).

Creates N keys through the management API, then times the first authenticated
MCP request of each (one argon2id verification each), one at a time on one
keep-alive connection, and a second request of each (a cache hit) for
contrast. Prints CREATE, COLD and HOT lines.
"""
import argparse
import http.client
import json
import statistics
import sys
import time

WHOAMI = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
     "params": {"name": "whoami", "arguments": {}}}
)


def quantile(samples, q):
    ordered = sorted(samples)
    return ordered[round((len(ordered) - 1) * q)]


def summary(label, samples):
    return (f"{label} n={len(samples)} p50_ms={quantile(samples, 0.5):.2f} "
            f"p90_ms={quantile(samples, 0.9):.2f} p99_ms={quantile(samples, 0.99):.2f} "
            f"mean_ms={statistics.fmean(samples):.2f} min_ms={min(samples):.2f}")


def request(conn, method, path, body, headers):
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, payload, (time.perf_counter() - started) * 1000.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--keys", type=int, default=200)
    args = parser.parse_args()

    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    admin = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    secrets, create_ms = [], []
    for i in range(args.keys):
        status, payload, ms = request(
            conn, "POST", "/api/mcp/keys", json.dumps({"name": f"cold {i}"}), admin)
        while status == 429:
            # The per-user write limit (a burst, then 10 a second): wait for
            # it to refill. Creation times are not what this measures.
            conn.close()
            time.sleep(1)
            status, payload, ms = request(
                conn, "POST", "/api/mcp/keys", json.dumps({"name": f"cold {i}"}), admin)
        if status not in (200, 201):
            sys.exit(f"creating key {i}: HTTP {status}: {payload[:300]!r}")
        secrets.append(json.loads(payload)["key"])
        create_ms.append(ms)
    print(summary("CREATE", create_ms), flush=True)

    def use(secret):
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-11-25"}
        status, payload, ms = request(conn, "POST", "/mcp", WHOAMI, headers)
        if status != 200 or b'"error"' in payload[:200]:
            sys.exit(f"whoami: HTTP {status}: {payload[:300]!r}")
        return ms

    cold = [use(secret) for secret in secrets]
    hot = [use(secret) for secret in secrets]
    print(summary("COLD", cold))
    print(summary("HOT", hot))


if __name__ == "__main__":
    main()
