//! Fault drills (issue #14): the proxy under load while something breaks.
//! Each drill counts every request (`tests/py/fault_load.py`): it either
//! succeeds with the full, correct body or fails visibly (an error status,
//! a cut or reset connection); a response cut mid-body must never look
//! complete (`truncated` / `bad_body` stay 0). Misbehaving upstreams come
//! from `tests/py/fault_upstream.py`.
//!
//! Already covered elsewhere, so only the load aspect is drilled here:
//! `drain::sigterm_lets_20_slow_requests_finish_then_exits_0` (drain of
//! plain slow requests; here 50 streaming bodies), `balance` (retries
//! around a dead endpoint, one request at a time; here a SIGKILL under
//! concurrent streaming load), and drill 6, a certificate rotated under
//! load, is `mtls::rotation_under_traffic_fails_nothing_and_new_connections_get_the_new_cert`
//! (zero failed requests, new connections see the new serial): not repeated.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{curl, py_service, python, service, wait_until, Sidecar};
use serde_json::Value;

use crate::{curl_reply, rest_app};

/// What `/stream?chunks=5&interval_ms=20` answers in full.
const STREAM_BODY: &str = "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n";
const STREAM_PATH: &str = "/stream?chunks=5&interval_ms=20";

/// A sidecar with one outbound upstream `web` on its own port, `endpoints`
/// (YAML flow-list content), `upstream` more fields of it (6-space indent)
/// and `top` more top-level YAML.
fn outbound(endpoints: &str, upstream: &str, top: &str) -> (Sidecar, SocketAddr) {
    let sidecar = Sidecar::start(&outbound_yaml(endpoints, upstream, top));
    let port = sidecar.listener("outbound", Some("web"));
    (sidecar, port)
}

fn outbound_yaml(endpoints: &str, upstream: &str, top: &str) -> String {
    format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\nreload: {{ interval: 100ms }}\ndrain: {{ delay: 100ms, deadline: 20s }}\n{top}outbound:\n  upstreams:\n    web:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{endpoints}] }}\n{upstream}"
    )
}

/// Runs `fault_load.py` against `url` in the background.
fn load(url: String, seconds: f64, workers: usize, body: &str) -> std::thread::JoinHandle<Value> {
    let body = body.replace('\n', "\\n");
    std::thread::spawn(move || {
        python(
            "fault_load.py",
            &[&url, &seconds.to_string(), &workers.to_string(), &body],
        )
    })
}

/// No answer looked complete while it was not.
fn assert_nothing_falsely_complete(result: &Value) {
    assert_eq!(
        result["truncated"], 0,
        "a cut body looked complete: {result}"
    );
    assert_eq!(result["bad_body"], 0, "a wrong body was served: {result}");
    assert!(
        result["ok"].as_u64().unwrap() > 0,
        "nothing succeeded: {result}"
    );
}

/// Every attempt succeeded.
fn assert_no_failures(result: &Value) {
    assert_nothing_falsely_complete(result);
    assert_eq!(result["error"], 0, "transport failures: {result}");
    assert_eq!(
        result["status"],
        serde_json::json!({}),
        "error statuses: {result}"
    );
}

#[test]
fn an_endpoint_killed_under_load_fails_visibly_then_all_succeed() {
    // Drill 1: SIGKILL one of two endpoints while streaming bodies are in flight.
    let (_a, a) = service("demo-rest", &["--name", "a"]);
    let (b_proc, b) = service("demo-rest", &["--name", "b"]);
    let (_sidecar, port) = outbound(&format!("{a}, {b}"), "", "");
    let url = format!("http://{port}{STREAM_PATH}");
    let started = Instant::now();
    let running = load(url.clone(), 5.0, 6, STREAM_BODY);
    std::thread::sleep(Duration::from_millis(1500));
    b_proc.signal("KILL");
    let killed_at = started.elapsed().as_secs_f64();
    let result = running.join().unwrap();
    eprintln!("load across the kill at {killed_at:.2}s: {result}");
    assert_nothing_falsely_complete(&result);
    if let Some(last) = result["last_failure"].as_f64() {
        assert!(
            last < killed_at + 2.5,
            "failures went on long after the kill at {killed_at:.1}s: {result}"
        );
    }
    // After the transition every request succeeds, in full.
    let after = load(url, 1.5, 4, STREAM_BODY).join().unwrap();
    assert_no_failures(&after);
    drop(b_proc);
}

#[test]
fn config_reloaded_every_second_under_load_loses_nothing() {
    // Drill 4: the file rewritten every second for 5 s while requests flow.
    let (_app, app) = rest_app();
    let (sidecar, port) = outbound(&app.to_string(), "", "");
    let running = load(format!("http://{port}{STREAM_PATH}"), 6.0, 4, STREAM_BODY);
    for i in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let timeout = format!("      timeouts: {{ request: {}s }}\n", 10 + i);
        sidecar.write_config(&outbound_yaml(&app.to_string(), &timeout, ""));
    }
    let result = running.join().unwrap();
    assert_no_failures(&result);
    assert!(
        sidecar.metric("mesh_config_reloads_total{result=\"ok\"}") >= 4.0,
        "the config was not reloaded: {}",
        sidecar.metrics()
    );
}

#[test]
fn sigterm_with_50_streaming_bodies_in_flight_completes_them_all() {
    // Drill 5: drain with 50 slow chunked responses open.
    let (_app, app) = rest_app();
    let (mut sidecar, port) = outbound(&app.to_string(), "", "");
    let url = format!("http://{port}/stream?chunks=10&interval_ms=300");
    let clients: Vec<_> = (0..50)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "--max-time", "30", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until(Duration::from_secs(10), "50 streams in flight", || {
        sidecar.admin_json("/clusters")[0]["endpoints"][0]["active_requests"] == 50
    });
    sidecar.proc.signal("TERM");
    let full: String = (0..10).map(|i| format!("chunk {i}\n")).collect();
    let mut complete = 0;
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a stream was cut by the drain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), full);
        complete += 1;
    }
    assert_eq!(complete, 50);
    let status = sidecar
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("sidecar exits after draining");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn an_upstream_reset_mid_body_reaches_the_client_as_a_cut() {
    // Drill 7: headers and part of the body sent, then a TCP reset.
    let (_up, up) = py_service("fault_upstream.py", &[]);
    let (_sidecar, port) = outbound(&up.to_string(), "      protocol: http1\n", "");
    for http in ["--http1.1", "--http2-prior-knowledge"] {
        let out = curl(&[http, "-o", "-", &format!("http://{port}/reset")]);
        let code = out.status.code();
        assert!(
            !out.status.success(),
            "{http}: a cut response looked complete ({} bytes)",
            out.stdout.len()
        );
        assert!(out.stdout.len() < 100_000, "{http}: body complete?");
        // 18: partial file, 56: receive failure, 92: HTTP/2 stream error.
        assert!(
            matches!(code, Some(18 | 56 | 92)),
            "{http}: curl exit {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_upstream_reset_mid_body_reaches_a_grpc_caller_as_a_reset_or_unavailable() {
    // Drill 7, gRPC caller: the stream is reset, or ends with grpc-status 14.
    let (_up, up) = py_service("fault_upstream.py", &[]);
    let (_sidecar, port) = outbound(&up.to_string(), "      protocol: http1\n", "");
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.txt");
    let out = curl(&[
        "--http2-prior-knowledge",
        "-D",
        head.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        "",
        &format!("http://{port}/reset"),
    ]);
    let head = std::fs::read_to_string(head).unwrap_or_default();
    let unavailable = head.to_ascii_lowercase().contains("grpc-status: 14");
    assert!(
        out.status.code() == Some(92) || unavailable,
        "neither a reset nor UNAVAILABLE: curl exit {:?}, head {head}",
        out.status.code()
    );
}

#[test]
fn an_upstream_that_never_answers_times_out_with_504_and_the_proxy_stays_up() {
    // Drill 8: the upstream accepts and reads the request, then says nothing.
    let (_up, up) = py_service("fault_upstream.py", &[]);
    let (_sidecar, port) = outbound(
        &up.to_string(),
        "      timeouts: { request: 1s }\n      retry: { attempts: 0 }\n",
        "",
    );
    let hung: Vec<_> = (0..5)
        .map(|_| {
            let url = format!("http://{port}/hang");
            std::thread::spawn(move || {
                let started = Instant::now();
                let reply = curl_reply(&["-i", &url]);
                (
                    reply.status,
                    reply.header("x-mesh-error").map(str::to_string),
                    started.elapsed(),
                )
            })
        })
        .collect();
    // While they hang, the proxy answers other requests at once.
    std::thread::sleep(Duration::from_millis(300));
    let reply = curl_reply(&["-i", &format!("http://{port}/other")]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    for request in hung {
        let (status, reason, elapsed) = request.join().unwrap();
        assert_eq!(status, 504);
        assert_eq!(reason.as_deref(), Some("upstream_timeout"));
        assert!(
            elapsed >= Duration::from_millis(900),
            "timed out early: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(10), "no timeout: {elapsed:?}");
    }
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_client_gone_mid_upload_leaves_an_incomplete_body_and_no_leak() {
    // Drill 9: a client sends part of a declared body, then disappears.
    let (_up, up) = py_service("fault_upstream.py", &[]);
    let (sidecar, port) = outbound(&up.to_string(), "", "");
    // Warm up the pool so the fd count is steady.
    assert_eq!(
        curl_reply(&["-i", &format!("http://{port}/uploads")]).status,
        200
    );
    let fds_before = open_fds(sidecar.proc.pid());
    for _ in 0..5 {
        let mut client = TcpStream::connect(port).unwrap();
        write!(
            client,
            "POST /upload HTTP/1.1\r\nhost: web\r\ncontent-length: 1000000\r\n\r\n"
        )
        .unwrap();
        client.write_all(&[b'x'; 20_000]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(client);
    }
    let uploads = || -> Value {
        let reply = curl_reply(&["-i", &format!("http://{up}/uploads")]);
        serde_json::from_str(&reply.body).unwrap()
    };
    wait_until(Duration::from_secs(10), "5 uploads seen ended", || {
        uploads().as_array().unwrap().len() == 5
    });
    for upload in uploads().as_array().unwrap() {
        assert_eq!(
            upload["complete"], false,
            "an incomplete upload looked complete: {upload}"
        );
        assert!(upload["received"].as_u64().unwrap() < 1_000_000);
    }
    wait_until(Duration::from_secs(10), "connections and fds freed", || {
        sidecar.metric("mesh_connections_open{listener=\"outbound:web\"}") == 0.0
            && open_fds(sidecar.proc.pid()) <= fds_before
    });
}

#[test]
fn a_dns_outage_under_load_keeps_serving_the_last_known_endpoints() {
    // Drill 2 (`discovery::a_dns_outage_keeps_the_last_known_endpoints`
    // checks the state; here: under load, through re-resolutions).
    let (_app, app) = rest_app();
    let dns = crate::discovery::Dns::start("127.0.0.1 web.test\n", &[]);
    let resolver = format!(
        "resolver:\n  nameservers: [127.0.0.1:{}]\n  ttl: {{ min: 1s, max: 1s }}\n  timeout: 300ms\n",
        dns.port
    );
    let discovery = format!("web.test:{}", app.port());
    let yaml = outbound_yaml(&discovery, "", &resolver).replace(
        &format!("discovery: {{ endpoints: [{discovery}] }}"),
        &format!("discovery: {{ dns: {discovery} }}"),
    );
    let sidecar = Sidecar::start(&yaml);
    let port = sidecar.listener("outbound", Some("web"));
    wait_until(Duration::from_secs(5), "the name resolved", || {
        sidecar.admin_json("/clusters")[0]["endpoints"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    });
    let running = load(format!("http://{port}{STREAM_PATH}"), 4.0, 4, STREAM_BODY);
    std::thread::sleep(Duration::from_millis(500));
    dns.proc.signal("KILL");
    let result = running.join().unwrap();
    assert_no_failures(&result);
    assert!(
        sidecar.metric("mesh_dns_resolutions_total{upstream=\"web\",result=\"fallback\"}") >= 1.0,
        "no resolution failed during the outage: {}",
        sidecar.metrics()
    );
}

#[test]
fn redis_stopped_and_restarted_under_load_follows_on_redis_down_then_recovers() {
    // Drill 3 (`rate_limits::a_global_limit_is_shared_through_redis_and_falls_back_when_it_is_down`
    // checks the counting; here: steady load through the outage).
    let (_app, app) = rest_app();
    let redis_port = crate::closed_port();
    let mut redis = mesh_tests::start_redis(redis_port);
    let sidecar = Sidecar::start(&format!(
        "service: edge\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\nedge:\n  listeners:\n    - listen: 127.0.0.1:0\n  redis: redis://127.0.0.1:{redis_port}\n  rate_limits:\n    local:\n      rate: 100000/10s\n      scope: global\n      on_redis_down: local\n    deny:\n      rate: 100000/10s\n      scope: global\n      on_redis_down: deny\n  routes:\n    - match: {{ path_prefix: /local/ }}\n      rate_limit: [local]\n      rewrite: {{ prefix: / }}\n      to: app\n    - match: {{ path_prefix: /deny/ }}\n      rate_limit: [deny]\n      rewrite: {{ prefix: / }}\n      to: app\n  upstreams:\n    app:\n      discovery: {{ endpoints: [{app}] }}\n"
    ));
    let addr = crate::edge_tls::edge_addrs(&sidecar)[0];
    wait_until(Duration::from_secs(10), "redis connected", || {
        sidecar.metric("mesh_rate_limit_redis_up") == 1.0
    });
    let local = load(
        format!("http://{addr}/local{STREAM_PATH}"),
        6.0,
        2,
        STREAM_BODY,
    );
    let deny = load(
        format!("http://{addr}/deny{STREAM_PATH}"),
        6.0,
        2,
        STREAM_BODY,
    );
    std::thread::sleep(Duration::from_secs(1));
    redis.signal("KILL");
    let _ = redis.wait_exit(Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "redis seen down", || {
        sidecar.metric("mesh_rate_limit_redis_up") == 0.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let _redis = mesh_tests::start_redis(redis_port);
    let (local, deny) = (local.join().unwrap(), deny.join().unwrap());
    eprintln!("on_redis_down: local: {local}\non_redis_down: deny: {deny}");
    // `local`: counted in this proxy meanwhile, nothing refused.
    assert_no_failures(&local);
    // `deny`: fails closed, visibly, and only that way.
    assert_nothing_falsely_complete(&deny);
    assert_eq!(deny["error"], 0, "{deny}");
    assert!(deny["status"]["503"].as_u64().unwrap_or(0) > 0, "{deny}");
    assert_eq!(
        deny["reasons"],
        serde_json::json!({ "rate_limit_unavailable": deny["status"]["503"] }),
        "{deny}"
    );
    // Redis back: global limiting resumes and every request passes again.
    wait_until(Duration::from_secs(20), "redis reconnected", || {
        sidecar.metric("mesh_rate_limit_redis_up") == 1.0
    });
    let after = load(
        format!("http://{addr}/deny{STREAM_PATH}"),
        1.0,
        2,
        STREAM_BODY,
    );
    assert_no_failures(&after.join().unwrap());
}
