//! Upstreams outside the mesh over TLS: a real HTTPS server (Python's
//! `http.server` in `ssl`) with a test CA made by `openssl`, reached
//! through a sidecar outbound port in plain HTTP. The right CA and name
//! answer 200; a wrong CA or a wrong name is a 502 `upstream_tls`; a CA
//! file that cannot be read is a config error naming its YAML path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_tests::{announced, bin, curl, wait_until, Proc, Sidecar};

use crate::balance::state;
use crate::edge_tls::TestPki;

/// The name the server's certificate is for.
const NAME: &str = "ext.example.test";

/// A CA and a server certificate for [`NAME`] signed by it, plus an
/// unrelated second CA (`other-ca.pem`).
struct Certs {
    pki: TestPki,
    other: TestPki,
}

impl Certs {
    fn new() -> Certs {
        let pki = TestPki::new();
        pki.issue("server", NAME, &[NAME], 1);
        Certs {
            pki,
            other: TestPki::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        match name {
            "other-ca.pem" => self.other.path("ca.pem"),
            name => self.pki.path(name),
        }
    }
}

/// An HTTPS server answering every GET with its path and Host as JSON.
const SERVER: &str = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"tls": True, "path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(json.dumps({"listening": "127.0.0.1:%d" % server.server_address[1]}), flush=True)
server.serve_forever()
"#;

/// Starts the HTTPS server with `cert` / `key`; returns it and its address.
fn https_server(cert: &Path, key: &Path) -> (Proc, SocketAddr) {
    announced(
        "https-server",
        Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(cert)
            .arg(key),
    )
}

/// A sidecar with one outbound upstream `ext` at `server` over TLS (`tls` is the YAML flow map).
fn sidecar(server: SocketAddr, tls: &str) -> Sidecar {
    Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    ext:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{server}] }}\n      tls: {tls}\n"
    ))
}

/// Status, `x-mesh-error` and body of `GET path` through the outbound port.
fn get(sidecar: &Sidecar, path: &str) -> (u16, String, String) {
    let port = sidecar.listener("outbound", Some("ext"));
    let out = curl(&["-i", "--http1.1", &format!("http://{port}{path}")]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-mesh-error: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    (status, reason, body.to_string())
}

#[test]
fn an_https_upstream_is_verified_against_its_ca_and_name() {
    let certs = Certs::new();
    let (_server, addr) = https_server(&certs.path("server.pem"), &certs.path("server.key"));
    let ca = certs.path("ca.pem");
    let good = sidecar(addr, &format!("{{ ca: {}, sni: {NAME} }}", ca.display()));
    let (status, reason, body) = get(&good, "/hello?x=1");
    assert_eq!(status, 200, "{reason} {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["tls"], true);
    assert_eq!(answer["path"], "/hello?x=1");
    // Connections are pooled: a second request works too.
    assert_eq!(get(&good, "/again").0, 200);

    let other_ca = certs.path("other-ca.pem");
    let untrusted = sidecar(
        addr,
        &format!("{{ ca: {}, sni: {NAME} }}", other_ca.display()),
    );
    let (status, reason, body) = get(&untrusted, "/");
    assert_eq!((status, reason.as_str()), (502, "upstream_tls"), "{body}");
    assert!(body.contains("upstream_tls"), "{body}");

    let wrong_name = sidecar(
        addr,
        &format!("{{ ca: {}, sni: other.example.test }}", ca.display()),
    );
    let (status, reason, _) = get(&wrong_name, "/");
    assert_eq!((status, reason.as_str()), (502, "upstream_tls"));

    // verify: false accepts the certificate whatever its CA and name.
    let unverified = sidecar(
        addr,
        &format!(
            "{{ ca: {}, sni: other.example.test, verify: false }}",
            other_ca.display()
        ),
    );
    assert_eq!(get(&unverified, "/").0, 200);
    unverified
        .proc
        .wait_log("tls.verify is false", std::time::Duration::from_secs(5));
}

#[test]
fn an_unreadable_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.yaml");
    std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").unwrap();
    std::fs::write(
        &file,
        "service: web\noutbound:\n  upstreams:\n    ext:\n      listen: 127.0.0.1:0\n      discovery: { endpoints: [127.0.0.1:443] }\n      tls: { ca: missing.pem }\n    ext2:\n      listen: 127.0.0.1:0\n      discovery: { endpoints: [127.0.0.1:443] }\n      tls: { ca: empty.pem }\n",
    )
    .unwrap();
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("outbound.upstreams.ext.tls.ca") && stderr.contains("cannot read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("outbound.upstreams.ext2.tls.ca") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn health_checks_reach_an_https_upstream_over_tls() {
    let certs = Certs::new();
    let (_server, addr) = https_server(&certs.path("server.pem"), &certs.path("server.key"));
    let checked = |ca: &str| {
        sidecar(
            addr,
            &format!(
                "{{ ca: {}, sni: {NAME} }}\n      health: {{ http: /healthz, interval: 200ms, timeout: 200ms, healthy: 1, unhealthy: 2 }}",
                certs.path(ca).display()
            ),
        )
    };
    let trusted = checked("ca.pem");
    let untrusted = checked("other-ca.pem");
    wait_until(
        Duration::from_secs(5),
        "the untrusted endpoint unhealthy",
        || state(&untrusted, addr) == "unhealthy",
    );
    // Checks over plaintext would fail too: passing ones went over TLS.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&trusted, addr), "healthy");
    assert_eq!(get(&trusted, "/").0, 200);
}

#[test]
fn the_edge_reaches_an_https_upstream_and_refuses_a_wrong_ca() {
    let certs = Certs::new();
    let (_server, addr) = https_server(&certs.path("server.pem"), &certs.path("server.key"));
    let edge = |ca: &str| {
        Sidecar::start(&format!(
            "service: edge\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\nedge:\n  listeners: [{{ listen: 127.0.0.1:0 }}]\n  routes:\n    - {{ match: {{ path_prefix: /partner }}, rewrite: {{ prefix: /v1 }}, to: partner }}\n  upstreams:\n    partner:\n      discovery: {{ endpoints: [{addr}] }}\n      tls: {{ ca: {}, sni: {NAME} }}\n",
            certs.path(ca).display()
        ))
    };
    let get = |edge: &Sidecar| {
        let port = edge.listener("edge", None);
        let out = curl(&[
            "-s",
            "-D",
            "-",
            &format!("http://{port}/partner/quotes?x=1"),
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let trusted = edge("ca.pem");
    let answer = get(&trusted);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"tls\": true"), "{answer}");
    assert!(answer.contains("\"path\": \"/v1/quotes?x=1\""), "{answer}");

    let untrusted = edge("other-ca.pem");
    let answer = get(&untrusted);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("x-mesh-error: upstream_tls"), "{answer}");
}
