#!/usr/bin/env python3
"""Turns the raw output of bench/run into tables (stdout) and a JSON file.

bench/run leaves, per measurement, PREFIX.env (key=value: section, target,
tool, cpu_ticks, rss_*_kib, ...) and PREFIX.out (the tool's output: wrk
--latency, h2load, or one JSON line from ratelat.py / idleconns.py).
Sections: h1, h2c, grpc, tcp (saturation), latency (fixed rate), idle
(10k idle connections), workers (sidecar --workers 1..N). Ratios are taken
against targets measured in the same section of the same run.
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
SATURATION = ("h1", "h2c", "grpc", "tcp", "workers")
TITLES = {
    "h1": "HTTP/1.1 keep-alive at saturation (wrk)",
    "h2c": "h2c at saturation (h2load)",
    "grpc": "gRPC unary GetOrder over h2c at saturation (h2load)",
    "tcp": "opaque TCP: wrk's HTTP/1.1 through a TCP proxy",
    "workers": "sidecar throughput by worker threads (wrk, HTTP/1.1)",
    "latency": "latency at a fixed request rate (ratelat.py, 1 connection); added = target - direct",
    "idle": "memory holding idle keep-alive connections (idleconns.py)",
}


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


def parse_h2load(text):
    """Requests, req/s, mean latency and errors from h2load output."""
    out = {"requests": None, "rps": None, "latency_ms": {}, "errors": {}}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        out["requests"] = int(m.group(3))
        for k, v in zip(("failed", "errored", "timeout"), m.groups()[4:]):
            if int(v):
                out["errors"][k] = int(v)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m and sum(int(x) for x in m.groups()[1:]):
        out["errors"]["non_2xx"] = sum(int(x) for x in m.groups()[1:])
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        out["latency_ms"]["mean"] = round(to_ms(m.group(3)), 3)
    return out


def saturation_result(env, text, clk_tck):
    load = parse_wrk(text) if env["tool"] == "wrk" else parse_h2load(text)
    res = {"section": env["section"], "target": env["target"], "tool": env["tool"],
           "addr": env["addr"], **load}
    reqs = load["requests"] or 0

    def us_per_req(ticks):
        return round(int(ticks) / clk_tck * 1e6 / reqs, 2) if reqs else None

    res["cpu_us_per_req"] = us_per_req(env["cpu_ticks"]) if "cpu_ticks" in env else None
    res["upstream_cpu_us_per_req"] = us_per_req(env["upstream_cpu_ticks"])
    res["proxy_cpu_pct"] = (round(res["cpu_us_per_req"] * load["rps"] / 1e4)
                            if res["cpu_us_per_req"] is not None and load["rps"] else None)
    res["proxy_core_busy_pct"] = int(env["proxy_core_busy_pct"])
    res["load_core_busy_pct"] = int(env["load_core_busy_pct"])
    for key in ("rss_idle", "rss_after", "anon_idle", "anon_after"):
        kib = env.get(key + "_kib")
        res[key + "_mib"] = round(int(kib) / 1024, 1) if kib else None
    if "workers" in env:
        res["workers"] = int(env["workers"])
    for key in ("upstream_conns", "upstream_new_conns"):
        if key in env:
            res[key] = int(env[key])
    return res


def latency_result(env, text):
    data = json.loads(text.strip().splitlines()[-1])
    return {"section": "latency", "target": env["target"], "via": env["via"],
            "rate": float(env["rate"]), "addr": env["addr"], **data}


def idle_result(env, text):
    data = json.loads(text.strip().splitlines()[0]) if text.strip() else {"open": 0, "failed": None}
    before, held = int(env["rss_before_kib"]), int(env["rss_held_kib"])
    opened = data.get("open") or 0
    return {"section": "idle", "target": env["target"], "addr": env["addr"],
            "connections": int(env["connections"]), **data,
            "rss_before_mib": round(before / 1024, 1), "rss_held_mib": round(held / 1024, 1),
            "anon_held_mib": round(int(env["anon_held_kib"]) / 1024, 1) if env.get("anon_held_kib") else None,
            "kib_per_connection": round((held - before) / opened, 2) if opened else None,
            "fds_held": int(env["fds_held"])}


def load_result(prefix, clk_tck):
    env = read_env(prefix + ".env")
    with open(prefix + ".out") as f:
        text = f.read()
    if env["tool"] == "rate":
        return latency_result(env, text)
    if env["tool"] == "idle":
        return idle_result(env, text)
    return saturation_result(env, text, clk_tck)


def add_ratios(results):
    """vs_direct / vs_haproxy / vs_nginx (req/s) and cpu_vs_haproxy, per section."""
    for section in SATURATION:
        rows = [r for r in results if r["section"] == section]
        by_name = {r["target"]: r for r in rows}
        if section == "workers":
            by_name = {"direct": by_name.get("w1", {})}
        for base in ("direct", "haproxy", "nginx"):
            ref = by_name.get(base, {}).get("rps")
            for r in rows:
                r[f"vs_{base}"] = round(r["rps"] / ref, 3) if ref and r["rps"] else None
        ref_cpu = by_name.get("haproxy", {}).get("cpu_us_per_req")
        for r in rows:
            cpu = r.get("cpu_us_per_req")
            r["cpu_vs_haproxy"] = round(cpu / ref_cpu, 3) if cpu and ref_cpu else None
    rows = [r for r in results if r["section"] == "latency"]
    direct = {r["rate"]: r for r in rows if r["via"] == "direct"}
    for r in rows:
        base = direct.get(r["rate"])
        for p in ("p50", "p90", "p99", "p99.9"):
            v, b = r.get(f"{p}_us"), base and base.get(f"{p}_us")
            r[f"added_{p}_us"] = round(v - b, 1) if v is not None and b is not None else None


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


def table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def errors_cell(errors):
    return ", ".join(f"{k} {v}" for k, v in errors.items()) or "0"


def print_saturation(section, rows):
    wrk = rows[0]["tool"] == "wrk"
    head = ["target", "req/s", "vs direct", "vs haproxy", "vs nginx",
            "p50 ms" if wrk else "mean ms", "p99 ms" if wrk else "", "CPU µs/req",
            "CPU vs haproxy", "RSS idle/after MiB", "anon idle/after MiB", "busy proxy/load core", "errors"]
    if section == "workers":
        head[0], head[2] = "workers", "vs 1 worker"
    out = []
    for r in rows:
        lat = r["latency_ms"]
        rss = (f"{fmt(r['rss_idle_mib'], '.1f')} / {fmt(r['rss_after_mib'], '.1f')}"
               if r["rss_idle_mib"] is not None else "n/a")
        anon = (f"{fmt(r.get('anon_idle_mib'), '.1f')} / {fmt(r.get('anon_after_mib'), '.1f')}"
                if r.get("anon_idle_mib") is not None else "n/a")
        out.append([r["target"], fmt(r["rps"], ",.0f"), fmt(r.get("vs_direct"), ".2f"),
                    fmt(r.get("vs_haproxy"), ".2f"), fmt(r.get("vs_nginx"), ".2f"),
                    fmt(lat.get("p50" if wrk else "mean"), ".2f"),
                    fmt(lat.get("p99"), ".2f") if wrk else "",
                    fmt(r["cpu_us_per_req"], ".1f"), fmt(r.get("cpu_vs_haproxy"), ".2f"), rss, anon,
                    f"{r['proxy_core_busy_pct']}% / {r['load_core_busy_pct']}%",
                    errors_cell(r["errors"])])
    if not wrk:
        for row in [head] + out:
            del row[6]
    if section == "workers":
        for row in [head] + out:
            del row[3:5]
    table(head, out)


def print_latency(rows):
    head = ["target", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "added p50", "added p99",
            "added p99.9", "late", "errors"]
    out = [[r["target"], fmt(r["rate"], ".0f"), fmt(r["p50_us"], ".0f"), fmt(r["p99_us"], ".0f"),
            fmt(r["p99.9_us"], ".0f"), fmt(r["added_p50_us"], ".0f"), fmt(r["added_p99_us"], ".0f"),
            fmt(r["added_p99.9_us"], ".0f"), r["late"], r["errors"]] for r in rows]
    table(head, out)


def print_idle(rows):
    head = ["target", "connections open", "failed", "open in s", "RSS before MiB",
            "RSS holding MiB", "anon holding MiB", "KiB/connection", "fds"]
    out = [[r["target"], r["open"], fmt(r["failed"]), fmt(r.get("open_s")), fmt(r["rss_before_mib"], ".1f"),
            fmt(r["rss_held_mib"], ".1f"), fmt(r.get("anon_held_mib"), ".1f"),
            fmt(r["kib_per_connection"], ".2f"), r["fds_held"]]
           for r in rows]
    table(head, out)


def print_tables(results, meta):
    m = meta["machine"]
    print(f"{meta['date']}  {m['cpu_model']}, {m['nproc']} cores, kernel {m['kernel']}, "
          f"git {meta['versions'].get('git', '?')}{' (--quick)' if meta['quick'] else ''}")
    print(f"saturation: {meta['duration']} after {meta['warmup']} warm-up; wrk -t1 -c{meta['connections']}; "
          f"h2load -t1 -c{meta['h2_clients']} -m{meta['h2_streams']}; proxies pinned to core "
          f"{meta['proxy_core']}, 1 worker; load generators AND upstreams share core {meta['load_core']}")
    for section in ("h1", "h2c", "grpc", "tcp", "latency", "idle", "workers"):
        rows = [r for r in results if r["section"] == section]
        if not rows:
            continue
        print(f"\n{section}: {TITLES[section]}")
        if section == "latency":
            print_latency(rows)
        elif section == "idle":
            print_idle(rows)
        else:
            print_saturation(section, rows)


def find(results, section, target):
    return next((r for r in results if r["section"] == section and r["target"] == target), None)


def check_targets(results):
    """The issue's targets, each as (text, value, ok); skipped when not measured."""
    checks = []

    def add(text, row, key, ok):
        if row is not None and row.get(key) is not None:
            checks.append((text, row[key], ok(row[key])))

    h1 = find(results, "h1", "sidecar")
    add("h1 req/s vs haproxy >= 1.0", h1, "vs_haproxy", lambda v: v >= 1.0)
    add("h1 req/s vs direct >= 0.45", h1, "vs_direct", lambda v: v >= 0.45)
    add("h1 CPU/req vs haproxy <= 1.0", h1, "cpu_vs_haproxy", lambda v: v <= 1.0)
    lat = find(results, "latency", "sidecar@2000")
    add("added p50 at 2000 req/s <= 80 µs", lat, "added_p50_us", lambda v: v <= 80)
    add("added p99 at 2000 req/s <= 150 µs", lat, "added_p99_us", lambda v: v <= 150)
    add("two-hop mTLS added p99 at 1000 req/s <= 500 µs",
        find(results, "latency", "two-hop-mtls@1000"), "added_p99_us", lambda v: v <= 500)
    # The same targets with the sidecar's `--busy-poll` (off by default).
    lat = find(results, "latency", "sidecar-busy-poll@2000")
    add("added p50 at 2000 req/s <= 80 µs, --busy-poll", lat, "added_p50_us", lambda v: v <= 80)
    add("added p99 at 2000 req/s <= 150 µs, --busy-poll", lat, "added_p99_us", lambda v: v <= 150)

    add("h2c req/s vs direct >= 0.80", find(results, "h2c", "sidecar"), "vs_direct", lambda v: v >= 0.8)
    # Steady keep-alive load reuses the pool: connections opened during the
    # measured run (after the warm-up), HTTP/1.1 and HTTP/2.
    add("new upstream connections in steady h1 load == 0", h1, "upstream_new_conns", lambda v: v == 0)
    add("new upstream connections in steady h2c load == 0", find(results, "h2c", "sidecar"),
        "upstream_new_conns", lambda v: v == 0)
    add("RSS idle <= 8 MiB", h1, "rss_idle_mib", lambda v: v <= 8)
    add("RSS after load <= 12 MiB", h1, "rss_after_mib", lambda v: v <= 12)
    add("RSS holding 10k idle connections <= 40 MiB", find(results, "idle", "sidecar"),
        "rss_held_mib", lambda v: v <= 40)
    sat = [r for r in results if r["section"] in SATURATION or r["section"] == "latency"]
    errs = sum(1 for r in sat if r.get("errors"))
    checks.append(("runs with errors == 0", errs, errs == 0))
    return checks


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clk-tck", type=int, required=True)
    ap.add_argument("--nproc", type=int, required=True)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--h2", type=int, nargs=2, metavar=("CLIENTS", "STREAMS"), required=True)
    ap.add_argument("--proxy-core", type=int, required=True)
    ap.add_argument("--load-core", type=int, required=True)
    ap.add_argument("--busy-before", type=int, required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("prefixes", nargs="+", help="measurement paths without .env/.out")
    args = ap.parse_args()

    results = [load_result(p, args.clk_tck) for p in args.prefixes]
    add_ratios(results)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(args.nproc),
        "versions": read_env(args.versions),
        "quick": bool(args.quick),
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "h2_clients": args.h2[0],
        "h2_streams": args.h2[1],
        "path": "/healthz",
        "proxy_core": args.proxy_core,
        "load_core": args.load_core,
        "machine_busy_before_pct": args.busy_before,
        "note": "load generators and the upstreams share the load core; loopback only",
    }
    print_tables(results, meta)
    checks = check_targets(results)
    print("\nissue #13 targets (this run):")
    for text, value, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}: {value}")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({**meta, "results": results,
                   "targets": [{"target": t, "value": v, "ok": ok} for t, v, ok in checks]}, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    for r in results:
        if r["section"] not in SATURATION:
            continue
        other = r["proxy_core_busy_pct"] - (r["proxy_cpu_pct"] or 0)
        if r["target"] != "direct" and other > 10 and r["section"] != "workers":
            print(f"warning: {r['section']}/{r['target']}: {other}% of the proxy core went to other "
                  "work (softirq, other processes); its numbers may be noisy", file=sys.stderr)
    if any(r.get("rps") is None and r["section"] in SATURATION or r.get("errors") for r in results):
        print("warning: some runs had errors or no result; see the errors columns", file=sys.stderr)


if __name__ == "__main__":
    main()
