#!/usr/bin/env python3
"""A burst of failed key verifications, for benches/rss.sh (standard library only).

Sends N `POST /mcp` requests with well-formed keys (valid checksum, random
secret: an unknown prefix, so each costs one argon2id verification of the
dummy hash) from C keep-alive connections at once. Each request carries its
own X-Forwarded-For address (the server must trust 127.0.0.1 as a proxy), so
the failure limiter, which counts per client address, never answers 429 in
place of the argon2 work. Prints one RESULT line with the status counts.
"""
import argparse
import http.client
import json
import secrets
import sys
import threading
import time
import zlib
from collections import Counter

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})


def random_key():
    """`cola_` + 30 random base62 + CRC-32 of the first 35 as 6 base62."""
    body = "cola_" + "".join(secrets.choice(BASE62) for _ in range(30))
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return body + "".join(reversed(digits))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--offset", type=int, default=0,
                        help="first client address number (distinct per burst)")
    args = parser.parse_args()

    statuses = Counter()
    lock = threading.Lock()
    jobs = iter(range(args.offset, args.offset + args.requests))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        while True:
            with lock:
                n = next(jobs, None)
            if n is None:
                break
            # 10.x.y.z from n: one address per request.
            address = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            headers = {
                "Authorization": f"Bearer {random_key()}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25",
                "X-Forwarded-For": address,
            }
            conn.request("POST", "/mcp", body=BODY, headers=headers)
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    counts = " ".join(f"s{status}={count}" for status, count in sorted(statuses.items()))
    print(f"RESULT requests={sum(statuses.values())} seconds={elapsed:.1f} {counts}")
    if sum(statuses.values()) != args.requests:
        sys.exit("some requests got no answer")


if __name__ == "__main__":
    main()
