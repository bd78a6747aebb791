//! HTTP/1.1 and HTTP/2 through the sidecar with curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{curl, json, Sidecar};

use crate::{inbound_sidecar, refusing_port, rest_app};

#[test]
fn http1_and_h2c_reach_the_app_through_inbound() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let h1 = json(&curl(&[&format!("http://{inbound}/headers")]));
    assert_eq!(h1["_version"], "HTTP/1.1");
    assert_eq!(
        h1["host"],
        inbound.to_string(),
        "the caller's Host reaches the app"
    );
    let h2 = json(&curl(&[
        "--http2-prior-knowledge",
        &format!("http://{inbound}/headers"),
    ]));
    assert_eq!(
        h2["_version"], "HTTP/2.0",
        "auto keeps the caller's HTTP version"
    );
    assert_eq!(
        sidecar.metric(
            "mesh_requests_total{direction=\"inbound\",upstream=\"inbound\",caller=\"unknown\",status=\"200\",status_class=\"2xx\"}"
        ),
        2.0
    );
}

#[test]
fn a_10mb_upload_streams_through_unchanged_chunked_or_with_a_length() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let mut data = vec![0u8; 10 * 1024 * 1024];
    // A cheap deterministic pattern that is not all zeros.
    let mut x: u32 = 0x9e37_79b9;
    for byte in &mut data {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    std::fs::write(&input, &data).unwrap();
    let expected = sha256(&input);
    let file = format!("@{}", input.display());
    // Chunked (hyper's server reads it) and with a length (the proxy's own).
    for framing in ["Transfer-Encoding: chunked", "X-Framing: content-length"] {
        let summary = json(&curl(&[
            "-H",
            framing,
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &file,
            &format!("http://{inbound}/sha256"),
        ]));
        assert_eq!(summary["bytes"], 10 * 1024 * 1024, "{framing}");
        assert_eq!(summary["sha256"], expected.as_str(), "{framing}");
        let echoed = curl(&[
            "-H",
            framing,
            "--data-binary",
            &file,
            "-o",
            output.to_str().unwrap(),
            &format!("http://{inbound}/echo"),
        ]);
        assert!(echoed.status.success());
        assert_eq!(sha256(&output), expected, "echoed body differs ({framing})");
    }
    // Larger than the proxy reads ahead, smaller than the socket holds: all
    // of it waits in the socket while the upstream is sent the first part.
    std::fs::write(&input, &data[..200_000]).unwrap();
    let summary = json(&curl(&[
        "--max-time",
        "10",
        "--data-binary",
        &file,
        &format!("http://{inbound}/sha256"),
    ]));
    assert_eq!(summary["bytes"], 200_000);
    assert_eq!(summary["sha256"], sha256(&input).as_str());
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    assert_eq!(
        ok_answers(&format!("http://{inbound}/healthz"), 100, &[]),
        100
    );
    assert_eq!(
        sidecar.metric("mesh_upstream_connections_total{upstream=\"inbound\"}"),
        1.0
    );
    let stats = json(&curl(&[&format!("http://{inbound}/stats")]));
    assert_eq!(
        stats["connections_accepted"], 1,
        "the app saw one connection: {stats}"
    );
    assert_eq!(stats["requests"], 101);
}

/// How many of `count` GETs of `url` in one curl run (one keep-alive
/// connection unless `extra` says otherwise) were answered 200.
fn ok_answers(url: &str, count: usize, extra: &[&str]) -> usize {
    let mut args = extra.to_vec();
    args.extend(["-w", "%{http_code}\\n"]);
    for _ in 0..count {
        args.extend(["-o", "/dev/null", url]);
    }
    let out = curl(&args);
    let codes = String::from_utf8_lossy(&out.stdout);
    codes.lines().filter(|c| *c == "200").count()
}

#[test]
fn upstream_connections_left_by_a_burst_are_closed_within_seconds() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    // 16 requests at once: 16 upstream connections, then all idle.
    let url = format!("http://{inbound}/slow?ms=400");
    assert_eq!(ok_answers(&url, 16, &["-Z", "--parallel-max", "16"]), 16);
    let open = "mesh_upstream_connections_open{upstream=\"inbound\"}";
    let burst = sidecar.metric(open);
    assert!(burst >= 8.0, "the burst opened {burst} connections");
    // Halved every second once idle for 2 s: one or two left within ~7 s,
    // long before the 60 s idle timeout.
    mesh_tests::wait_until(Duration::from_secs(12), "the surplus to close", || {
        sidecar.metric(open) <= 2.0
    });
    // Never the last: the next request reuses a kept connection.
    let opened = sidecar.metric("mesh_upstream_connections_total{upstream=\"inbound\"}");
    assert_eq!(curl(&[&format!("http://{inbound}/healthz")]).stdout, b"ok");
    assert!(sidecar.metric(open) >= 1.0, "one connection kept");
    assert_eq!(
        sidecar.metric("mesh_upstream_connections_total{upstream=\"inbound\"}"),
        opened,
        "no new connection for the next request"
    );
}

#[test]
fn forward_proxy_routes_by_authority_and_tunnels_connect() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  proxy: 127.0.0.1:0\n  upstreams:\n    web:\n      hosts: [web.mesh.local]\n      discovery: {{ endpoints: [{app}] }}\n"
    ));
    let proxy = format!("http://{}", sidecar.listener("proxy", None));
    for url in ["http://web/healthz", "http://web.mesh.local:8080/healthz"] {
        let out = curl(&["-x", &proxy, url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "{url}");
    }
    let tunneled = curl(&["-p", "-x", &proxy, "http://web:80/healthz"]);
    assert_eq!(
        String::from_utf8_lossy(&tunneled.stdout),
        "ok",
        "CONNECT tunnel: {tunneled:?}"
    );
    let unknown = curl(&["-i", "-x", &proxy, "http://unknown.example/"]);
    let text = String::from_utf8_lossy(&unknown.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 502"), "{text}");
    assert!(text.contains("x-mesh-error: no_route"), "{text}");
}

#[test]
fn passthrough_sends_unknown_authorities_direct() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(
        "service: client\nadmin: { listen: 127.0.0.1:0 }\noutbound:\n  proxy: 127.0.0.1:0\n  passthrough: true\n",
    );
    let proxy = format!("http://{}", sidecar.listener("proxy", None));
    let out = curl(&["-x", &proxy, &format!("http://{app}/healthz")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
}

#[test]
fn proxy_errors_carry_a_reason_and_hide_addresses() {
    let dead = refusing_port();
    let sidecar = inbound_sidecar(format!("127.0.0.1:{dead}").parse().unwrap(), "");
    let inbound = sidecar.listener("inbound", None);
    let out = curl(&["-i", &format!("http://{inbound}/")]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 502"), "{text}");
    assert!(
        text.contains("x-mesh-error: upstream_connect_failed"),
        "{text}"
    );
    assert!(
        text.contains("\"error\":\"upstream_connect_failed\""),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1"),
        "error body reveals an address: {text}"
    );
}

#[test]
fn malformed_requests_get_400_with_a_reason() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    // curl will not send two Host headers: write the request by hand.
    for request in [
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(inbound).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 512];
        let n = stream.read(&mut head).unwrap();
        let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 400"), "{request:?}: {text}");
        assert!(
            text.contains("x-mesh-error: bad_request"),
            "{request:?}: {text}"
        );
    }
}

/// Streams a slow response, kills the app after the first chunk, and
/// returns curl's exit status.
fn kill_app_mid_stream(http2: bool) -> std::process::ExitStatus {
    let (mut app_proc, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-N", "--max-time", "20"]);
    if http2 {
        cmd.arg("--http2-prior-knowledge");
    }
    let mut client = cmd
        .arg(format!("http://{inbound}/stream?chunks=100&interval_ms=50"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "chunk 0\n");
    app_proc.signal("KILL");
    app_proc.wait_exit(Duration::from_secs(5));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
    assert!(
        rest.lines().count() < 99,
        "the stream went on after the app died"
    );
    client.wait().unwrap()
}

#[test]
fn upstream_killed_mid_response_is_not_a_clean_end_http1() {
    let status = kill_app_mid_stream(false);
    assert!(!status.success(), "curl saw a complete response");
}

#[test]
fn upstream_killed_mid_response_is_not_a_clean_end_http2() {
    let status = kill_app_mid_stream(true);
    assert!(!status.success(), "curl saw a complete response");
}

#[test]
fn expect_100_continue_is_answered_and_the_body_follows() {
    let (_app, app) = rest_app();
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let body = "x".repeat(4096);
    let out = curl(&[
        "-v",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "10",
        "--data-binary",
        &body,
        &format!("http://{inbound}/sha256"),
    ]);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains("HTTP/1.1 100 Continue"),
        "no interim 100: {trace}"
    );
    let summary = json(&out);
    assert_eq!(summary["bytes"], 4096);
}

#[test]
fn http1_callers_reach_an_http2_upstream() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    web:\n      listen: 127.0.0.1:0\n      protocol: http2\n      discovery: {{ endpoints: [{app}] }}\n"
    ));
    let port = sidecar.listener("outbound", Some("web"));
    let mut args = vec![];
    let url = format!("http://{port}/headers");
    for _ in 0..5 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    args.push(url.as_str());
    let seen = json(&curl(&args));
    assert_eq!(seen["_version"], "HTTP/2.0", "{seen}");
    assert_eq!(
        seen["_uri"],
        format!("http://{port}/headers"),
        "authority carried as :authority"
    );
    assert_eq!(
        sidecar.metric("mesh_upstream_connections_total{upstream=\"web\"}"),
        1.0,
        "one multiplexed connection"
    );
}
