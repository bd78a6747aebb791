#!/usr/bin/env python3
"""Summarises a bench/soak run: soak_summary.py CSV HTTP1_JSON NAME="RUNS FAILS"...

Prints the RSS and fd curve (every sample), then the verdicts: RSS after
the warm-up (the first fifth of the run, at most 300 s) within ±10% of its
median, no fd growth from the end of the warm-up to the end (a margin of 8
for connections in flight), the probe's p50/p99 spread, and each traffic
loop's runs and failures. Standard library only.
"""

import csv
import json
import statistics
import sys


def main():
    path, http1_path, counts = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(path) as f:
        rows = [r for r in csv.DictReader(f)]
    if len(rows) < 3:
        print("too few samples for a verdict")
        return
    end = int(rows[-1]["seconds"])
    warm = min(300, end // 5)
    steady = [r for r in rows if int(r["seconds"]) >= warm]
    rss = [int(r["rss_kib"]) / 1024 for r in steady]
    fds = [int(r["fds"]) for r in steady]
    median = statistics.median(rss)
    low, high = min(rss) / median - 1, max(rss) / median - 1
    p50 = [float(r["probe_p50_us"]) for r in rows if r["probe_p50_us"] not in ("", "None")]
    p99 = [float(r["probe_p99_us"]) for r in rows if r["probe_p99_us"] not in ("", "None")]
    probe_errors = sum(int(r["probe_errors"]) for r in rows if r["probe_errors"] not in ("", "None"))

    print(f"\nsoak: {end} s, {len(rows)} samples, warm-up {warm} s")
    print("curve (s: RSS MiB, fds):", ", ".join(
        f"{r['seconds']}: {int(r['rss_kib']) / 1024:.1f}, {r['fds']}" for r in rows))
    rss_ok = -0.10 <= low and high <= 0.10
    print(f"{'PASS' if rss_ok else 'MISS'}  RSS after warm-up: median {median:.1f} MiB, "
          f"min {low:+.1%}, max {high:+.1%} (within ±10%)")
    growth = fds[-1] - fds[0]
    print(f"{'PASS' if growth <= 8 else 'MISS'}  fds after warm-up: {fds[0]} -> {fds[-1]} "
          f"(max {max(fds)}; growth {growth:+d}, margin 8)")
    if p50 and p99:
        print(f"probe latency: p50 {min(p50):.0f}-{statistics.median(p50):.0f}-{max(p50):.0f} µs, "
              f"p99 {min(p99):.0f}-{statistics.median(p99):.0f}-{max(p99):.0f} µs (min-median-max); "
              f"probe errors {probe_errors}")
    try:
        with open(http1_path) as f:
            h1 = json.loads(f.read().strip().splitlines()[-1])
        print(f"http1 (ratelat, 300 req/s): {h1['ok']} ok, {h1['errors']} errors, "
              f"p50 {h1['p50_us']} µs, p99 {h1['p99_us']} µs")
    except (OSError, ValueError, IndexError, KeyError):
        print("http1: no result (still running or failed)")
    for item in counts:
        name, _, value = item.partition("=")
        runs, fails = (value.split() + ["0", "0"])[:2]
        print(f"{name}: {runs} runs, {fails} failed")


if __name__ == "__main__":
    main()
