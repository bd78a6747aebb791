#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to ADDR and holds them idle.

    idleconns.py --addr 127.0.0.1:8080 --count 10000 --hold 10

Each connection sends one GET (so the proxy has parsed a request on it and
pooled its upstream side) and reads the answer; at most --parallel
connections are being opened at a time. When all are open it prints one
JSON line {"open": N, "failed": F, "open_s": seconds} to stdout (bench/run
samples the proxy's RSS then), holds them for --hold seconds, closes them,
and exits. Needs `ulimit -n` above N (bench/run raises it). Stdlib only.
"""

import argparse
import asyncio
import json
import sys
import time


async def open_one(host, port, request, sem, held):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await asyncio.wait_for(reader.readexactly(length), 10)
            if head[9:12] != b"200":
                writer.close()
                return False
            held.append(writer)
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False


async def run(args):
    host, port = args.addr.rsplit(":", 1)
    request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    sem = asyncio.Semaphore(args.parallel)
    held = []
    t0 = time.monotonic()
    results = await asyncio.gather(*(open_one(host, int(port), request, sem, held)
                                     for _ in range(args.count)))
    ok = sum(results)
    print(json.dumps({"open": ok, "failed": args.count - ok,
                      "open_s": round(time.monotonic() - t0, 2)}), flush=True)
    await asyncio.sleep(args.hold)
    for w in held:
        w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--path", default="/healthz")
    args = ap.parse_args()
    asyncio.run(run(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
