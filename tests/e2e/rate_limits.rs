//! Edge rate limits: a local GCRA limit with its burst and the 429
//! headers, throttling within its queue bound, a global limit shared by
//! two edge processes through a real redis-server (stopped and restarted
//! under them: the configured fallbacks, then global counting again), and
//! the remaining quota of a consumer on the admin API and `mesh-ctl quota`.
//! Requests go out from plain threads, one connection each.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mesh_tests::{bin, wait_until, Sidecar};

use crate::edge_tls::edge_addrs;
use crate::{closed_port, rest_app};

/// A response's status and headers (names lower case).
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
}

/// One GET on a fresh connection.
fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers }
}

/// `n` requests, each on its own thread, released together; request `i`
/// waits `i × spacing` first.
fn burst(addr: SocketAddr, path: &str, n: usize, spacing: Duration) -> Vec<Answer> {
    let start = Arc::new(Barrier::new(n));
    let path = Arc::new(path.to_string());
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (start, path) = (start.clone(), path.clone());
            std::thread::spawn(move || {
                start.wait();
                std::thread::sleep(spacing * u32::try_from(i).unwrap());
                get(addr, &path, &[])
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

/// An edge on a plain HTTP listener with `limits` (under `edge:`) and
/// `routes` (each `(name, limit names)`: path prefix `/echo-request/<name>`,
/// which the app answers) to `app`.
fn edge_yaml(app: SocketAddr, redis: Option<u16>, limits: &str, routes: &[(&str, &str)]) -> String {
    let redis = redis.map_or(String::new(), |port| {
        format!("  redis: redis://127.0.0.1:{port}\n")
    });
    let mut yaml = format!(
        "service: edge\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain: {{ delay: 100ms, deadline: 10s }}\nedge:\n  listeners:\n    - listen: 127.0.0.1:0\n{redis}  rate_limits:\n{limits}  routes:\n"
    );
    for (name, names) in routes {
        yaml.push_str(&format!(
            "    - name: {name}\n      match: {{ path_prefix: /echo-request/{name} }}\n      rate_limit: [{names}]\n      to: app\n"
        ));
    }
    yaml.push_str(&format!(
        "    - name: open\n      match: {{ path_prefix: / }}\n      to: app\n  upstreams:\n    app:\n      discovery: {{ endpoints: [{app}] }}\n"
    ));
    yaml
}

#[test]
fn a_local_limit_admits_its_burst_and_rate_then_429_with_headers() {
    let (_app, app) = rest_app();
    let limits = "    ten:\n      rate: 10/s\n      burst: 5\n";
    let edge = Sidecar::start(&edge_yaml(app, None, limits, &[("limited", "ten")]));
    let addr = edge_addrs(&edge)[0];

    // Unlimited routes carry no headers.
    let open = get(addr, "/healthz", &[]);
    assert_eq!(open.status, 200);
    assert!(!open.headers.contains_key("ratelimit-limit"));

    let started = Instant::now();
    let answers = burst(
        addr,
        "/echo-request/limited",
        100,
        Duration::from_millis(10),
    );
    let took = started.elapsed();
    let passed = count(&answers, 200);
    let limited = count(&answers, 429);
    assert_eq!(passed + limited, 100, "only 200 and 429");
    // About 1 s of requests: 6 at once, then one per 100 ms (more if the
    // machine stretched the second).
    let most = 20.max(8 + (took.as_secs_f64() * 10.0).ceil() as usize);
    assert!(
        (10..=most).contains(&passed),
        "burst 5 + 1 and ~10 more in {took:?}: {passed} passed"
    );
    for answer in answers.iter().filter(|a| a.status == 429) {
        let h = &answer.headers;
        assert_eq!(
            h.get("x-mesh-error").map(String::as_str),
            Some("rate_limited")
        );
        let retry: u64 = h["retry-after"].parse().unwrap();
        assert!((1..=1).contains(&retry), "rounded up to a second: {retry}");
        assert_eq!(h["ratelimit-limit"], "6");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert!(h.contains_key("ratelimit-reset"));
    }
    let ok = answers.iter().find(|a| a.status == 200).unwrap();
    assert_eq!(ok.headers["ratelimit-limit"], "6");
    assert!(ok.headers.contains_key("ratelimit-remaining"));

    let denied = edge.metric(
        "mesh_rate_limit_denials_total{route=\"limited\",limit=\"ten\",reason=\"rate_limited\"}",
    );
    assert_eq!(denied as usize, limited);
    let by_policy = edge.metric(
        "mesh_policy_denials_total{direction=\"edge\",route=\"limited\",policy=\"rate_limit\",reason=\"rate_limited\"}",
    );
    assert_eq!(by_policy as usize, limited);
}

#[test]
fn throttling_delays_requests_until_they_fit_within_the_queue_bound() {
    let (_app, app) = rest_app();
    let limits = concat!(
        "    paced:\n      rate: 10/s\n      mode: throttle\n      max_delay: 5s\n      queue: 40\n",
        "    short_queue:\n      rate: 10/s\n      mode: throttle\n      max_delay: 5s\n      queue: 5\n",
    );
    let edge = Sidecar::start(&edge_yaml(
        app,
        None,
        limits,
        &[("paced", "paced"), ("short", "short_queue")],
    ));
    let addr = edge_addrs(&edge)[0];

    let started = Instant::now();
    let answers = burst(addr, "/echo-request/paced", 30, Duration::ZERO);
    let took = started.elapsed();
    assert_eq!(count(&answers, 200), 30, "none rejected");
    assert!(took >= Duration::from_millis(1500), "spread out: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let answers = burst(addr, "/echo-request/short", 30, Duration::ZERO);
    let passed = count(&answers, 200);
    assert_eq!(passed + count(&answers, 429), 30);
    assert!(
        (5..=9).contains(&passed),
        "one at once, five queued: {passed}"
    );
}

#[test]
fn a_global_limit_is_shared_through_redis_and_falls_back_when_it_is_down() {
    let (_app, app) = rest_app();
    let port = closed_port();
    let mut redis = mesh_tests::start_redis(port);
    let limits = concat!(
        "    shared:\n      rate: 100/10s\n      scope: global\n      on_redis_down: local\n",
        "    strict:\n      rate: 100000/10s\n      scope: global\n      on_redis_down: deny\n",
    );
    let yaml = edge_yaml(
        app,
        Some(port),
        limits,
        &[("shared", "shared"), ("strict", "strict")],
    );
    let (a, b) = (Sidecar::start(&yaml), Sidecar::start(&yaml));
    let (addr_a, addr_b) = (edge_addrs(&a)[0], edge_addrs(&b)[0]);
    for edge in [&a, &b] {
        wait_until(Duration::from_secs(10), "redis connected", || {
            edge.metric("mesh_rate_limit_redis_up") == 1.0
        });
    }

    let hammer = || {
        let from_a =
            std::thread::spawn(move || burst(addr_a, "/echo-request/shared", 150, Duration::ZERO));
        let from_b = burst(addr_b, "/echo-request/shared", 150, Duration::ZERO);
        let mut answers = from_a.join().unwrap();
        answers.extend(from_b);
        answers
    };
    let started = Instant::now();
    let answers = hammer();
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "within the window"
    );
    let passed = count(&answers, 200);
    assert_eq!(passed + count(&answers, 429), 300);
    assert!(
        (100..=102).contains(&passed),
        "one window for both: {passed}"
    );
    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    assert_eq!(refused.headers["ratelimit-limit"], "100");
    assert!(refused.headers["retry-after"].parse::<u64>().unwrap() <= 10);

    // Redis gone: `local` counts here, `deny` fails closed.
    let errors_before = a.metric("mesh_rate_limit_redis_errors_total");
    redis.signal("KILL");
    let _ = redis.wait_exit(Duration::from_secs(5));
    wait_until(Duration::from_secs(10), "redis down", || {
        a.metric("mesh_rate_limit_redis_up") == 0.0
    });
    let denied = get(addr_a, "/echo-request/strict", &[]);
    assert_eq!(denied.status, 503);
    assert_eq!(
        denied.headers.get("x-mesh-error").map(String::as_str),
        Some("rate_limit_unavailable")
    );
    let answers = burst(addr_a, "/echo-request/shared", 150, Duration::ZERO);
    let passed = count(&answers, 200);
    assert!(
        (100..=110).contains(&passed),
        "the same rate, counted in this edge: {passed}"
    );
    assert!(a.metric("mesh_rate_limit_redis_errors_total") > errors_before);

    // Redis back on the same port: both edges reconnect by themselves.
    let _redis = mesh_tests::start_redis(port);
    for (edge, addr) in [(&a, addr_a), (&b, addr_b)] {
        wait_until(Duration::from_secs(20), "global limiting resumes", || {
            get(addr, "/echo-request/strict", &[]).status == 200
        });
        assert_eq!(edge.metric("mesh_rate_limit_redis_up"), 1.0);
    }
    let answers = hammer();
    let passed = count(&answers, 200);
    assert!((100..=102).contains(&passed), "shared again: {passed}");
}

#[test]
fn a_consumers_quota_is_readable_on_the_admin_api_and_with_mesh_ctl() {
    let (_app, app) = rest_app();
    let port = closed_port();
    let _redis = mesh_tests::start_redis(port);
    let limits = concat!(
        "    monthly:\n      rate: 1000/month\n      scope: global\n      key: [header:x-consumer]\n",
        "    per_minute:\n      rate: 10/min\n      burst: 9\n      key: [header:x-consumer]\n",
    );
    let edge = Sidecar::start(&edge_yaml(
        app,
        Some(port),
        limits,
        &[("api", "monthly, per_minute")],
    ));
    let addr = edge_addrs(&edge)[0];
    wait_until(Duration::from_secs(10), "redis connected", || {
        edge.metric("mesh_rate_limit_redis_up") == 1.0
    });
    for _ in 0..3 {
        let answer = get(addr, "/echo-request/api/items", &[("x-consumer", "alice")]);
        assert_eq!(answer.status, 200);
    }

    let view = edge.admin_json("/quotas?consumer=alice");
    let limit = |name: &str| {
        view["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let monthly = limit("monthly");
    assert_eq!(monthly["scope"], "global");
    assert_eq!(monthly["bucket"]["source"], "redis");
    assert_eq!(monthly["bucket"]["limit"], 1000);
    assert_eq!(monthly["bucket"]["remaining"], 997);
    let per_minute = limit("per_minute");
    assert_eq!(per_minute["scope"], "local");
    assert_eq!(per_minute["bucket"]["remaining"], 7);
    // Reading counts nothing; another consumer has the whole quota.
    let again = edge.admin_json("/rate_limits?key=alice");
    assert_eq!(again["limits"][0]["bucket"]["remaining"], 997);
    let bob = edge.admin_json("/quotas?consumer=bob");
    assert_eq!(bob["limits"][0]["bucket"]["remaining"], 1000);

    let out = Command::new(bin("mesh-ctl"))
        .args([
            "quota",
            "--admin",
            &edge.admin.to_string(),
            "--consumer",
            "alice",
        ])
        .output()
        .expect("run mesh-ctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("monthly"), "{stdout}");
    assert!(stdout.contains("997/1000"), "{stdout}");
    assert!(stdout.contains("redis: up"), "{stdout}");
}
