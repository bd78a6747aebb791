#!/usr/bin/env python3
"""Latency at a fixed request rate: the small, bounded rate-limited client of bench/run.

    ratelat.py --addr 127.0.0.1:8080 --rate 2000 --duration 10 [--path /healthz]

HTTP/1.1 GET on CONNECTIONS keep-alive connections (default 1), one request
at a time on each, sent on a fixed schedule (request i at start + i/rate,
round-robin over the connections). A request's latency runs from its
scheduled send time to the last byte of its answer, so a stall delays the
requests behind it and shows in the percentiles (no coordinated omission).
Prints one JSON object: sent, ok, errors, late (sent >1 ms after their
slot), p50/p90/p99/p99.9/max in microseconds. Standard library only.

wrk2 (which does the same) is not packaged in Debian, and `h2load --rate`
paces connections, not requests; hence this client. Its own cost (a few
tens of µs per request in Python) is in every target's numbers alike, so
bench/run reports latency *added* as target minus direct at each percentile.
"""

import argparse
import json
import socket
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock, buf):
    """Reads one response (Content-Length framed); returns (status, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        rest += chunk
    return status, rest[length:]


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))
    return sorted_values[idx]


def run(args):
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n\r\n").encode()
    socks = [connect(args.addr) for _ in range(args.connections)]
    bufs = [b""] * len(socks)
    interval = 1.0 / args.rate
    total = int(args.rate * args.duration)
    latencies, errors, late = [], 0, 0
    start = time.perf_counter() + 0.05
    for i in range(total):
        slot = start + i * interval
        now = time.perf_counter()
        if slot > now:
            time.sleep(slot - now)
        elif now - slot > 1e-3:
            late += 1
        c = i % len(socks)
        try:
            socks[c].sendall(request)
            status, bufs[c] = read_response(socks[c], bufs[c])
        except (OSError, ValueError):
            errors += 1
            socks[c].close()
            socks[c], bufs[c] = connect(args.addr), b""
            continue
        if status != 200:
            errors += 1
            continue
        latencies.append((time.perf_counter() - slot) * 1e6)
    for s in socks:
        s.close()
    latencies.sort()
    out = {"rate": args.rate, "duration_s": args.duration, "sent": total,
           "ok": len(latencies), "errors": errors, "late": late}
    for name, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100)):
        v = percentile(latencies, pct)
        out[f"{name}_us"] = round(v, 1) if v is not None else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--path", default="/healthz")
    ap.add_argument("--host", default="bench")
    ap.add_argument("--connections", type=int, default=1)
    args = ap.parse_args()
    json.dump(run(args), sys.stdout)
    print()


if __name__ == "__main__":
    main()
