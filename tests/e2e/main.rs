//! End-to-end tests: the real `sidecar` between real clients and the demo
//! services, all on loopback. See `harness` for how processes are started
//! and always stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_log;
mod aggregate;
mod auth_jwt;
mod auth_services;
mod balance;
mod busy_poll;
mod cache;
mod compress;
mod config;
mod cors;
mod dashboard;
mod demo;
mod discovery;
mod downstream_http1;
mod drain;
mod edge_front;
mod edge_routes;
mod edge_tls;
mod faults;
mod grpc;
mod grpc_bridge;
mod grpc_json;
mod grpc_web;
mod h2_abuse;
mod h2_conformance;
mod health;
mod http;
mod hygiene;
mod metrics;
mod mtls;
mod observe;
mod overload;
mod rate_limits;
mod rest_ws;
mod tcp;
mod tracing;
mod transform;
mod transparent;
mod udp;
mod upstream_http1;
mod upstream_tls;
mod websocket;
mod ws_bridge;

use std::collections::HashMap;
use std::net::SocketAddr;

use mesh_tests::{curl, service, Proc, Sidecar};
use serde_json::Value;

/// A free port, bound then released: for a server a test starts on it later.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port that refuses connections for the rest of the run: bound, never
/// listening, so no other test's listener can take it mid-test.
pub fn refusing_port() -> u16 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    std::mem::forget(socket);
    port
}

/// The REST demo app.
pub fn rest_app() -> (Proc, SocketAddr) {
    service("demo-rest", &[])
}

/// A sidecar whose inbound listener fronts `app`, with `extra` YAML appended
/// under `inbound:` (indented two spaces).
pub fn inbound_sidecar(app: SocketAddr, extra: &str) -> Sidecar {
    Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain: {{ delay: 100ms, deadline: 10s }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n{extra}"
    ))
}

/// One HTTP answer as curl saw it: status, headers (lower-case names;
/// repeated ones joined by ", ") and body.
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }
}

/// Runs curl with `args` (which must make it print the response head, `-i`
/// or `-D -`) and splits its output into a [`Reply`].
pub fn curl_reply(args: &[&str]) -> Reply {
    let output = curl(args);
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        headers
            .entry(name.trim().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value.trim());
            })
            .or_insert_with(|| value.trim().to_string());
    }
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
