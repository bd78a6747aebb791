//! Connection abuse defences and overload shedding (issue #14), each test
//! naming the attack: a client holding more connections than its address
//! may (per-IP limit on the sidecar inbound listener), an idle keep-alive
//! connection left open (closed after `limits.header_timeout`), a burst of
//! TLS handshakes (rate limit), and more requests in flight than
//! `overload.max_active_requests` (503 `overloaded`, then recovery).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{curl, http, sidecar_check_yaml, wait_until, Sidecar};

use crate::edge_tls::{edge_addrs, edge_yaml, TestPki};
use crate::{curl_reply, rest_app};

/// Whether the proxy closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// One keep-alive HTTP/1.1 GET on `stream`; the status line.
fn get_on(stream: &mut TcpStream, path: &str) -> String {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: app\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn per_ip_limit_closes_the_extra_connection_on_the_inbound_listener() {
    // Attack: one client address opening more connections than allowed.
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\nlimits: {{ max_connections_per_ip: 2 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n"
    ));
    let inbound = sidecar.listener("inbound", None);
    let mut first = TcpStream::connect(inbound).unwrap();
    let mut second = TcpStream::connect(inbound).unwrap();
    assert!(get_on(&mut first, "/healthz").contains("200"));
    let mut third = TcpStream::connect(inbound).unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(3)),
        "the third connection from one address stays open"
    );
    assert_eq!(
        sidecar.metric("mesh_connections_refused_total{listener=\"inbound\",reason=\"ip_limit\"}"),
        1.0
    );
    // The admitted connections are unaffected; a slot frees when one closes.
    assert!(get_on(&mut second, "/healthz").contains("200"));
    drop(first);
    wait_until(
        Duration::from_secs(5),
        "a freed slot to admit again",
        || {
            let mut again = TcpStream::connect(inbound).unwrap();
            !closed_within(&mut again, Duration::from_millis(300))
        },
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    // Attack: connections opened, used once, then held idle forever.
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\nlimits: {{ header_timeout: 1s }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n"
    ));
    let inbound = sidecar.listener("inbound", None);
    let mut stream = TcpStream::connect(inbound).unwrap();
    assert!(get_on(&mut stream, "/healthz").contains("200"));
    let idle = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)),
        "an idle keep-alive connection is held open"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed before the header timeout"
    );
}

#[test]
fn tls_handshakes_over_the_rate_are_closed_and_counted() {
    // Attack: a burst of TLS handshakes (CPU exhaustion).
    let (_app, app) = rest_app();
    let pki = TestPki::new();
    pki.issue("a", "a.example.test", &["a.example.test"], 201);
    let listener = format!(
        "    - listen: 127.0.0.1:0\n      tls:\n        certs:\n          - {}\n",
        pki.cert_yaml("a", &["a.example.test"])
    );
    let sidecar = Sidecar::start(&format!(
        "{}limits: {{ tls_handshakes_per_second: 2 }}\n",
        edge_yaml(app, &listener)
    ));
    let addr = edge_addrs(&sidecar)[0];
    let resolve = format!("a.example.test:{}:127.0.0.1", addr.port());
    let url = format!("https://a.example.test:{}/healthz", addr.port());
    let codes: Vec<String> = (0..8)
        .map(|_| {
            let out = curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &pki.ca(),
                "--resolve",
                &resolve,
                &url,
            ]);
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .collect();
    let ok = codes.iter().filter(|c| *c == "200").count();
    assert!(ok >= 2, "the allowed burst is served: {codes:?}");
    assert!(ok < 8, "no handshake was refused: {codes:?}");
    let refused = sidecar.metric(
        "mesh_connections_refused_total{listener=\"edge:0\",reason=\"tls_handshake_rate\"}",
    );
    assert_eq!(refused as usize, 8 - ok);
    // The bucket refills: after a second, handshakes succeed again.
    std::thread::sleep(Duration::from_millis(1100));
    let reply = curl_reply(&["-i", "--cacert", &pki.ca(), "--resolve", &resolve, &url]);
    assert_eq!(reply.status, 200);
}

#[test]
fn requests_over_max_active_requests_get_503_overloaded_then_recover() {
    // Attack: more concurrent slow requests than the proxy will hold.
    // The limit arrives by a reload: with none set the watch sleeps until one.
    let (_app, app) = rest_app();
    let config = |overload: &str| {
        format!("service: web\nadmin: {{ listen: 127.0.0.1:0 }}\n{overload}inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n")
    };
    let sidecar = Sidecar::start(&config(""));
    let inbound = sidecar.listener("inbound", None);
    sidecar.write_config(&config(
        "overload: { max_active_requests: 2, shed_at: 1.0 }\n",
    ));
    let (status, body) = http(sidecar.admin, "POST", "/config/reload");
    assert_eq!(status, 200, "{body}");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{inbound}/slow?ms=3000"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until(Duration::from_secs(5), "2 requests in flight", || {
        sidecar.admin_json("/clusters")[0]["endpoints"][0]["active_requests"] == 2
    });
    let shed = curl_reply(&["-i", &format!("http://{inbound}/healthz")]);
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("x-mesh-error"), Some("overloaded"));
    assert_eq!(shed.header("connection"), Some("close"));
    assert_eq!(shed.json()["error"], "overloaded");
    assert_eq!(sidecar.metric("mesh_overload_shed_total"), 1.0);
    wait_until(Duration::from_secs(2), "mesh_overload_active 1", || {
        sidecar.metric("mesh_overload_active") == 1.0
    });
    for client in slow {
        let out = client.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "a held request was cut"
        );
    }
    let after = curl_reply(&["-i", &format!("http://{inbound}/healthz")]);
    assert_eq!(after.status, 200, "no recovery after the load went");
    wait_until(Duration::from_secs(2), "mesh_overload_active 0", || {
        sidecar.metric("mesh_overload_active") == 0.0
    });
}

#[test]
fn overload_config_errors_name_their_paths() {
    let (code, text) = sidecar_check_yaml("service: web\noverload: { shed_at: 1.5, max_active_requests: 0 }\nlimits: { max_connections_per_ip: 0 }\n");
    assert_ne!(code, Some(0), "{text}");
    for path in [
        "overload.shed_at",
        "overload.max_active_requests",
        "limits.max_connections_per_ip",
    ] {
        assert!(text.contains(path), "{path} not named in: {text}");
    }
}
