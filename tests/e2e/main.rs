//! End-to-end tests: the real `sidecar` between real clients and the demo
//! services, all on loopback. See `harness` for how processes are started
//! and always stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_log;
mod auth_jwt;
mod auth_services;
mod balance;
mod config;
mod cors;
mod dashboard;
mod demo;
mod discovery;
mod drain;
mod edge_front;
mod edge_routes;
mod edge_tls;
mod grpc;
mod health;
mod http;
mod hygiene;
mod metrics;
mod mtls;
mod observe;
mod rate_limits;
mod tcp;
mod tracing;
mod transparent;
mod udp;
mod upstream_tls;
mod websocket;

use std::net::{SocketAddr, TcpListener};

use mesh_tests::{service, Proc, Sidecar};

/// A port that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
