#!/usr/bin/env python3
"""Turns the raw output of bench/run into a table (stdout) and a JSON file.

For each target, bench/run leaves TARGET.wrk (wrk --latency output) and
TARGET.env (key=value: cpu_ticks, rss_idle_kib, rss_after_kib, ...).
Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}  # -> milliseconds


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                out[key] = value
    return out


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unknown latency '{text}'")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    """Requests, req/s, latency percentiles (ms) and errors from wrk output."""
    out = {"requests": None, "rps": None, "latency_ms": {}, "errors": {}}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for pct, value in re.findall(r"^\s+(\d+)%\s+(\S+)", dist[1], re.M):
            out["latency_ms"][f"p{pct}"] = round(to_ms(value), 3)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                out["errors"][k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["errors"]["non_2xx"] = int(m.group(1))
    return out


def target_result(prefix, clk_tck):
    env = read_env(prefix + ".env")
    with open(prefix + ".wrk") as f:
        wrk = parse_wrk(f.read())
    res = {"target": env["target"], "addr": env["addr"], **wrk}
    reqs = wrk["requests"] or 0

    def us_per_req(ticks):
        return round(int(ticks) / clk_tck * 1e6 / reqs, 2) if reqs else None

    res["cpu_us_per_req"] = us_per_req(env["cpu_ticks"]) if "cpu_ticks" in env else None
    res["upstream_cpu_us_per_req"] = us_per_req(env["upstream_cpu_ticks"])
    res["proxy_cpu_pct"] = (round(res["cpu_us_per_req"] * wrk["rps"] / 1e4)
                            if res["cpu_us_per_req"] is not None and wrk["rps"] else None)
    res["proxy_core_busy_pct"] = int(env["proxy_core_busy_pct"])
    res["load_core_busy_pct"] = int(env["load_core_busy_pct"])
    for key in ("rss_idle", "rss_after"):
        kib = env.get(key + "_kib")
        res[key + "_mib"] = round(int(kib) / 1024, 1) if kib else None
    return res


def add_ratios(results):
    by_name = {r["target"]: r for r in results}
    for base in ("direct", "haproxy"):
        ref = by_name.get(base, {}).get("rps")
        for r in results:
            r[f"vs_{base}"] = round(r["rps"] / ref, 3) if ref and r["rps"] else None


def machine_info(nproc):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": nproc, "kernel": platform.release(), "cpu_model": model}


def fmt(value, spec="", none="n/a"):
    return none if value is None else format(value, spec)


def print_table(results, meta):
    head = ["target", "req/s", "vs direct", "vs haproxy", "p50 ms", "p99 ms",
            "CPU µs/req", "proxy CPU", "RSS idle/after MiB", "busy proxy/load core", "errors"]
    rows = []
    for r in results:
        lat = r["latency_ms"]
        rss = (f"{fmt(r['rss_idle_mib'], '.1f')} / {fmt(r['rss_after_mib'], '.1f')}"
               if r["rss_idle_mib"] is not None else "n/a")
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        rows.append([r["target"], fmt(r["rps"], ",.0f"), fmt(r["vs_direct"], ".2f"),
                     fmt(r["vs_haproxy"], ".2f"), fmt(lat.get("p50"), ".2f"),
                     fmt(lat.get("p99"), ".2f"), fmt(r["cpu_us_per_req"], ".1f"),
                     fmt(r["proxy_cpu_pct"], "d") + ("%" if r["proxy_cpu_pct"] is not None else ""), rss,
                     f"{r['proxy_core_busy_pct']}% / {r['load_core_busy_pct']}%", errors])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    m = meta["machine"]
    print(f"{meta['date']}  {m['cpu_model']}, {m['nproc']} cores, kernel {m['kernel']}")
    print(f"wrk -t1 -c{meta['connections']} -d{meta['duration']} (after {meta['warmup']} warm-up); "
          f"proxies pinned to core {meta['proxy_core']}, 1 worker; "
          f"wrk AND the upstream share core {meta['load_core']}")
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clk-tck", type=int, required=True)
    ap.add_argument("--nproc", type=int, required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--proxy-core", type=int, required=True)
    ap.add_argument("--load-core", type=int, required=True)
    ap.add_argument("--busy-before", type=int, required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("prefixes", nargs="+", help="TARGET paths without .wrk/.env")
    args = ap.parse_args()

    results = [target_result(p, args.clk_tck) for p in args.prefixes]
    add_ratios(results)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(args.nproc),
        "versions": read_env(args.versions),
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "threads": 1,
        "path": "/healthz",
        "proxy_core": args.proxy_core,
        "load_core": args.load_core,
        "machine_busy_before_pct": args.busy_before,
        "note": "wrk and the upstream share the load core; loopback only",
    }
    print_table(results, meta)
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({**meta, "results": results}, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    for r in results:
        other = r["proxy_core_busy_pct"] - (r["proxy_cpu_pct"] or 0)
        if other > 10:
            print(f"warning: {r['target']}: {other}% of the proxy core went to other work "
                  "(softirq, other processes); its numbers may be noisy", file=sys.stderr)
    if any(r["rps"] is None or r["errors"] for r in results):
        print("warning: some targets had errors or no result; see the errors column",
              file=sys.stderr)


if __name__ == "__main__":
    main()
