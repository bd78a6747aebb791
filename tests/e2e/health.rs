//! Active health checks through a real sidecar to real demo backends: a
//! killed backend turns unhealthy and gets no traffic, and is healthy
//! again once restarted on its address; a failing check with no healthy
//! endpoint left (panic mode); gRPC checks against a dead port and a gRPC
//! server without the health service.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::{service, wait_until, Proc, Sidecar};

use crate::balance::{sidecar, spread, state};
use crate::refusing_port;

/// Waits until the endpoint at `addr` shows `wanted`; returns how long that took.
fn wait_state(sidecar: &Sidecar, addr: SocketAddr, wanted: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_until(timeout, &format!("{addr} {wanted}"), || {
        state(sidecar, addr) == wanted
    });
    start.elapsed()
}

const FAST_CHECKS: &str = "interval: 200ms, timeout: 200ms, healthy: 1, unhealthy: 2";

#[test]
fn a_killed_backend_turns_unhealthy_and_returns_when_restarted() {
    let mut apps: Vec<(Proc, SocketAddr)> = ["b1", "b2", "b3"]
        .iter()
        .map(|name| service("demo-rest", &["--name", name]))
        .collect();
    let list = apps
        .iter()
        .map(|(_, a)| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (sidecar, port) = sidecar(
        &list,
        &format!("      balance: round_robin\n      health: {{ http: /healthz, {FAST_CHECKS} }}\n"),
    );
    assert_eq!(spread(port, 30, 3).len(), 3, "all three serve at first");
    let victim = apps[0].1;
    assert_eq!(state(&sidecar, victim), "healthy");

    // No traffic while the checks notice: only the health checker sees it die.
    apps[0].0.signal("KILL");
    apps[0].0.wait_exit(Duration::from_secs(5));
    let took = wait_state(&sidecar, victim, "unhealthy", Duration::from_millis(1500));
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let line = sidecar
        .proc
        .wait_log("endpoint unhealthy", Duration::from_secs(1));
    assert!(line.contains(&victim.to_string()), "{line}");
    assert!(line.contains("\"upstream\":\"web\""), "{line}");
    let counts = spread(port, 60, 3);
    assert_eq!(counts.get("b1"), None, "{counts:?}");
    assert_eq!(
        counts.get("error"),
        None,
        "every request answered: {counts:?}"
    );
    assert!(
        counts.get("b2") > Some(&0) && counts.get("b3") > Some(&0),
        "{counts:?}"
    );
    assert!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"health_down\"}") >= 1.0
    );

    // Back on the same address: healthy after one good check, then served.
    let listen = victim.to_string();
    let restarted = service("demo-rest", &["--listen", &listen, "--name", "b1"]);
    assert_eq!(restarted.1, victim);
    apps[0] = restarted;
    wait_state(&sidecar, victim, "healthy", Duration::from_millis(1500));
    sidecar
        .proc
        .wait_log("endpoint healthy", Duration::from_secs(1));
    let counts = spread(port, 60, 3);
    assert!(counts.get("b1") > Some(&0), "{counts:?}");
    assert_eq!(counts.get("error"), None, "{counts:?}");
    assert!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"health_up\"}") >= 1.0
    );
}

#[test]
fn a_failing_check_marks_the_endpoint_unhealthy_and_panic_mode_still_sends() {
    let (_app, addr) = service("demo-rest", &["--name", "solo"]);
    let (sidecar, port) = sidecar(
        &addr.to_string(),
        &format!("      health: {{ http: /status/503, {FAST_CHECKS} }}\n"),
    );
    wait_state(&sidecar, addr, "unhealthy", Duration::from_secs(2));
    let line = sidecar
        .proc
        .wait_log("endpoint unhealthy", Duration::from_secs(1));
    assert!(line.contains("status 503"), "{line}");
    // Every endpoint is unhealthy: fewer than 50% available puts the
    // balancer in panic mode, which uses all of them rather than none.
    let counts = spread(port, 10, 3);
    assert_eq!(counts.get("solo"), Some(&10), "{counts:?}");
    assert_eq!(
        state(&sidecar, addr),
        "unhealthy",
        "traffic does not heal it"
    );
}

#[test]
fn grpc_checks_follow_grpc_health_v1() {
    // demo-grpc serves grpc.health.v1: "" and "orders.v1.Orders" are SERVING,
    // any other service name is NOT_FOUND.
    let (_app, grpc) = service("demo-grpc", &[]);
    let dead: SocketAddr = ([127, 0, 0, 1], refusing_port()).into();
    let (proxy, _port) = sidecar(
        &format!("{grpc}, {dead}"),
        &format!(
            "      protocol: grpc\n      health: {{ grpc: orders.v1.Orders, {FAST_CHECKS} }}\n"
        ),
    );
    wait_state(&proxy, dead, "unhealthy", Duration::from_secs(2));
    // Several rounds later the serving endpoint is still healthy.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(state(&proxy, grpc), "healthy");
    let (unknown, _port) = sidecar(
        &grpc.to_string(),
        &format!(
            "      protocol: grpc\n      health: {{ grpc: nope.v1.Nothing, {FAST_CHECKS} }}\n"
        ),
    );
    wait_state(&unknown, grpc, "unhealthy", Duration::from_secs(2));
}
