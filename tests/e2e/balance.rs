//! Balancing and resilience through a real sidecar to real demo backends:
//! round robin and weights, latency-aware P2C, retries around a dead
//! endpoint, the retry budget, the circuit breaker and the request deadline.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use mesh_tests::{curl, service, Proc, Sidecar};
use serde_json::Value;

use crate::refusing_port;

/// Named demo-rest backends (`GET /` answers `{"service": NAME}`).
fn backends(names: &[&str], extra: &[&str]) -> Vec<(Proc, SocketAddr)> {
    names
        .iter()
        .map(|name| {
            let mut args = vec!["--name", name];
            args.extend_from_slice(extra);
            service("demo-rest", &args)
        })
        .collect()
}

/// The backends' addresses as YAML flow-list content.
fn endpoint_list(apps: &[(Proc, SocketAddr)]) -> String {
    apps.iter()
        .map(|(_, a)| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A sidecar with one upstream `web` on its own port; `endpoints` is YAML
/// flow list content and `extra` more upstream fields (6-space indent).
pub(crate) fn sidecar(endpoints: &str, extra: &str) -> (Sidecar, SocketAddr) {
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    web:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{endpoints}] }}\n{extra}"
    ));
    let port = sidecar.listener("outbound", Some("web"));
    (sidecar, port)
}

/// The `/clusters` state of the endpoint at `addr` (`healthy`, `unhealthy`, `ejected`).
pub(crate) fn state(sidecar: &Sidecar, addr: SocketAddr) -> String {
    let clusters = sidecar.admin_json("/clusters");
    clusters
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["endpoints"].as_array().unwrap().clone())
        .find(|e| e["addr"] == addr.to_string().as_str())
        .unwrap_or_else(|| panic!("no endpoint {addr} in {clusters}"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs curl with `args` and returns which backend (`GET /` → `service`) answered each request.
fn served_by(args: &[String]) -> Vec<String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = String::from_utf8_lossy(&curl(&refs).stdout).replace("}{", "}\n{");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            value["service"].as_str().unwrap_or("error").to_string()
        })
        .collect()
}

/// `options` then `n` times `GET http://port/`.
fn requests(port: SocketAddr, n: usize, options: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    args.extend(std::iter::repeat_n(format!("http://{port}/"), n));
    args
}

/// Sends `n` GET / (up to `parallel` at once) and counts answers by backend name.
pub(crate) fn spread(port: SocketAddr, n: usize, parallel: usize) -> HashMap<String, usize> {
    let parallel = parallel.to_string();
    let names = served_by(&requests(
        port,
        n,
        &[
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &parallel,
        ],
    ));
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
    counts
}

#[test]
fn round_robin_spreads_evenly_and_weights_split_traffic() {
    let apps = backends(&["b1", "b2", "b3"], &[]);
    let list = endpoint_list(&apps);
    let (_sidecar, port) = sidecar(&list, "      balance: round_robin\n");
    let counts = spread(port, 300, 1);
    for name in ["b1", "b2", "b3"] {
        assert_eq!(counts.get(name), Some(&100), "{counts:?}");
    }
    let weighted = format!(
        "{{ addr: {}, weight: 1 }}, {{ addr: {}, weight: 3 }}",
        apps[0].1, apps[1].1
    );
    let (_sidecar, port) = sidecar(&weighted, "      balance: round_robin\n");
    let counts = spread(port, 2000, 4);
    let heavy = counts.get("b2").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (0.70..=0.80).contains(&heavy),
        "weight 3 of 4 got {heavy}: {counts:?}"
    );
}

#[test]
fn p2c_ewma_sends_little_to_a_slower_backend() {
    let mut apps = backends(&["fast1", "fast2"], &[]);
    apps.extend(backends(&["slow"], &["--delay-ms", "50"]));
    let list = endpoint_list(&apps);
    let (sidecar, port) = sidecar(&list, "");
    let counts = spread(port, 400, 8);
    let slow = counts.get("slow").copied().unwrap_or(0);
    // The estimate the choice is made on is visible on /clusters.
    let clusters = sidecar.admin_json("/clusters");
    let slow_latency = clusters[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr"] == apps[2].1.to_string().as_str())
        .unwrap()["latency_ms"]
        .as_f64()
        .unwrap();
    assert!(
        slow_latency >= 40.0,
        "peak-EWMA of the slow backend: {slow_latency} ms"
    );
    assert!(
        slow * 10 < 400,
        "the 50 ms slower backend got {slow} of 400: {counts:?}"
    );
}

#[test]
fn retries_hide_a_dead_endpoint() {
    let apps = backends(&["alive"], &[]);
    let dead = refusing_port();
    let (sidecar, port) = sidecar(
        &format!("{}, 127.0.0.1:{dead}", apps[0].1),
        "      balance: round_robin\n",
    );
    let counts = spread(port, 100, 4);
    assert_eq!(counts.get("alive"), Some(&100), "{counts:?}");
    assert!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"connect_failure\"}")
            >= 1.0
    );
}

#[test]
fn the_retry_budget_caps_extra_load_on_a_failing_cluster() {
    let apps = backends(&["sick"], &[]);
    let (sidecar, port) = sidecar(
        &apps[0].1.to_string(),
        "      retry: { attempts: 2, on: [\"503\"], budget: { ratio: 0.2, min_per_second: 1 }, backoff: { base: 1ms, max: 2ms } }\n",
    );
    let url = format!("http://{port}/status/503");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}\\n"];
    for _ in 0..200 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&args);
    let failures = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|c| *c == "503")
        .count();
    assert_eq!(failures, 200, "every request still fails");
    let stats: Value =
        serde_json::from_slice(&curl(&[&format!("http://{}/stats", apps[0].1)]).stdout).unwrap();
    let seen = stats["requests"].as_u64().unwrap() - 1;
    // 200 requests, 20% budget, 1/s floor over a 10 s window: at most 250 reach the backend.
    assert!(seen > 200, "some retries happened: {seen}");
    assert!(
        seen <= 250,
        "the budget let {seen} requests through for 200 sent"
    );
    assert!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"budget_exhausted\"}")
            >= 1.0
    );
}

/// `n` GETs of `url`, all at once; each answer's status and seconds taken.
pub(crate) fn timed(url: &str, n: usize) -> Vec<(String, f64)> {
    let parallel = n.to_string();
    let mut args = vec![
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        &parallel,
        "-w",
        "%{http_code} %{time_total}\\n",
    ];
    for _ in 0..n {
        args.extend(["-o", "/dev/null", url]);
    }
    String::from_utf8_lossy(&curl(&args).stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(c, t)| (c.to_string(), t.parse().unwrap_or(99.0)))
        })
        .collect()
}

#[test]
fn the_breaker_sheds_excess_requests_at_once() {
    let apps = backends(&["slow"], &[]);
    let (sidecar, port) = sidecar(
        &apps[0].1.to_string(),
        "      limits: { max_requests: 50 }\n",
    );
    let url = format!("http://{port}/slow?ms=1500");
    // 500 at once, from two curls (one curl runs at most 300 transfers at a time).
    let loads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || timed(&url, 250))
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let asked = std::time::Instant::now();
    let (ready, _) = mesh_tests::http(sidecar.admin, "GET", "/ready");
    let admin_took = asked.elapsed();
    let lines: Vec<(String, f64)> = loads.into_iter().flat_map(|l| l.join().unwrap()).collect();
    assert_eq!(lines.len(), 500, "{lines:?}");
    let served = lines.iter().filter(|(c, _)| c == "200").count();
    let shed: Vec<f64> = lines
        .iter()
        .filter(|(c, _)| c == "503")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(served + shed.len(), 500, "only 200s and 503s");
    assert!(
        (50..=100).contains(&served),
        "about the limit served: {served}"
    );
    assert!(
        shed.iter().all(|t| *t < 0.5),
        "shed at once: the slowest took {:?}",
        shed.iter().cloned().fold(0.0, f64::max)
    );
    assert_eq!(ready, 200);
    assert!(
        admin_took < std::time::Duration::from_millis(500),
        "admin API answered in {admin_took:?} under load"
    );
}

#[test]
fn a_slow_upstream_gets_504_at_the_deadline() {
    let apps = backends(&["slow"], &[]);
    let (_sidecar, port) = sidecar(
        &apps[0].1.to_string(),
        "      timeouts: { request: 300ms }\n",
    );
    let out = curl(&["-i", &format!("http://{port}/slow?ms=3000")]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 504"), "{text}");
    assert!(text.contains("x-mesh-error: upstream_timeout"), "{text}");
}

#[test]
fn a_killed_backend_is_ejected_and_clients_see_no_errors() {
    let mut apps = backends(&["b1", "b2", "b3"], &[]);
    let list = endpoint_list(&apps);
    let (sidecar, port) = sidecar(&list, "      balance: round_robin\n");
    assert_eq!(spread(port, 30, 2).len(), 3, "all three serve at first");
    let victim = apps[0].1;
    apps[0].0.signal("KILL");
    apps[0].0.wait_exit(std::time::Duration::from_secs(5));
    let counts = spread(port, 90, 3);
    assert_eq!(counts.get("b1"), None, "{counts:?}");
    assert_eq!(
        counts.values().sum::<usize>(),
        90,
        "no client-visible errors: {counts:?}"
    );
    assert_eq!(state(&sidecar, victim), "ejected");
    assert!(sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"ejected\"}") >= 1.0);
}

#[test]
fn sticky_sessions_by_cookie_and_by_source_ip() {
    let apps = backends(&["b1", "b2", "b3"], &[]);
    let list = endpoint_list(&apps);
    let (_sidecar, port) = sidecar(
        &list,
        "      balance: { ring_hash: { key: \"cookie:mesh-sticky\" } }\n",
    );
    // The first answer sets the cookie; with it, every request lands on one backend.
    let first = curl(&["-i", &format!("http://{port}/")]);
    let head = String::from_utf8_lossy(&first.stdout).to_ascii_lowercase();
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no sticky cookie set: {head}"))
        .to_string();
    let header = format!("cookie: {cookie}");
    let names: HashSet<String> = served_by(&requests(port, 100, &["-H", &header]))
        .into_iter()
        .collect();
    assert_eq!(names.len(), 1, "100 requests with the cookie hit {names:?}");

    // Source IP: each client address sticks to its backend.
    let (_sidecar, port) = sidecar(&list, "      balance: { ring_hash: { key: source_ip } }\n");
    for source in ["127.0.0.2", "127.0.0.3"] {
        let names: HashSet<String> = served_by(&requests(port, 30, &["--interface", source]))
            .into_iter()
            .collect();
        assert_eq!(names.len(), 1, "client {source} hit {names:?}");
    }
}

#[test]
fn an_endpoint_in_maintenance_gets_no_new_requests() {
    let apps = backends(&["b1", "b2"], &[]);
    let list = endpoint_list(&apps);
    let (sidecar, port) = sidecar(&list, "      balance: round_robin\n");
    let path = format!("/clusters/web/endpoints/{}/maintenance", apps[0].1);
    let (code, body) = mesh_tests::http(sidecar.admin, "POST", &path);
    assert_eq!(code, 200, "{body}");
    assert_eq!(state(&sidecar, apps[0].1), "maintenance");
    assert_eq!(spread(port, 20, 2).get("b2"), Some(&20));
    let (code, _) = mesh_tests::http(sidecar.admin, "DELETE", &path);
    assert_eq!(code, 200);
    assert_eq!(spread(port, 20, 2).get("b1"), Some(&10), "back in rotation");
    let (code, _) = mesh_tests::http(
        sidecar.admin,
        "POST",
        "/clusters/web/endpoints/127.0.0.1:1/maintenance",
    );
    assert_eq!(code, 404, "unknown endpoints are named as such");
}

#[test]
fn the_connection_limit_fails_fast_without_blaming_the_endpoint() {
    let apps = backends(&["slow"], &[]);
    // HTTP/1.1 upstream: one connection per concurrent request.
    let (sidecar, port) = sidecar(
        &apps[0].1.to_string(),
        "      protocol: http1\n      limits: { max_connections: 2 }\n",
    );
    let lines = timed(&format!("http://{port}/slow?ms=2500"), 8);
    let served = lines.iter().filter(|(c, _)| c == "200").count();
    let shed: Vec<f64> = lines
        .iter()
        .filter(|(c, _)| c == "503")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(
        served, 2,
        "two connections, two slow requests served: {lines:?}"
    );
    assert_eq!(shed.len(), 6, "{lines:?}");
    assert!(shed.iter().all(|t| *t < 0.5), "shed at once: {shed:?}");
    assert_eq!(
        state(&sidecar, apps[0].1),
        "healthy",
        "the proxy's own limit ejects nobody"
    );
    assert_eq!(
        sidecar.metric("mesh_upstream_connections_total{upstream=\"web\"}"),
        2.0
    );
    assert_eq!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"pool_overflow\"}"),
        6.0,
        "each request shed by the pool is counted"
    );
}

#[test]
fn locality_keeps_traffic_in_the_zone_and_spills_when_it_empties() {
    let apps = backends(&["a1", "a2", "b1"], &[]);
    let endpoints = format!(
        "{{ addr: {}, zone: a }}, {{ addr: {}, zone: a }}, {{ addr: {}, zone: b }}",
        apps[0].1, apps[1].1, apps[2].1
    );
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\nlocality: {{ zone: a }}\noutbound:\n  upstreams:\n    web:\n      listen: 127.0.0.1:0\n      balance: round_robin\n      discovery: {{ endpoints: [{endpoints}] }}\n"
    ));
    let port = sidecar.listener("outbound", Some("web"));
    let counts = spread(port, 40, 2);
    assert_eq!(
        counts.get("b1"),
        None,
        "zone b idle while zone a serves: {counts:?}"
    );
    for (_, addr) in &apps[..2] {
        let (code, _) = mesh_tests::http(
            sidecar.admin,
            "POST",
            &format!("/clusters/web/endpoints/{addr}/maintenance"),
        );
        assert_eq!(code, 200);
    }
    assert_eq!(
        spread(port, 20, 2).get("b1"),
        Some(&20),
        "zone a drained: zone b takes over"
    );
}
