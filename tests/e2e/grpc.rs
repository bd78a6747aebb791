//! gRPC (Python grpcio) through an outbound sidecar and an inbound sidecar
//! to the demo orders service: all four call kinds, statuses, resets.

use std::time::Duration;

use mesh_tests::{python, service, Proc, Sidecar};

/// orders app ← orders sidecar (inbound) ← web sidecar (outbound port).
/// Returns the processes and the outbound address the client calls.
fn mesh() -> (Proc, Sidecar, Sidecar, String) {
    let (app_proc, app) = service("demo-grpc", &[]);
    let orders = Sidecar::start(&format!(
        "service: orders\nadmin: {{ listen: 127.0.0.1:0 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n  protocol: grpc\n"
    ));
    let orders_inbound = orders.listener("inbound", None);
    let web = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:0\n      protocol: grpc\n      discovery: {{ endpoints: [{orders_inbound}] }}\n"
    ));
    let target = web.listener("outbound", Some("orders")).to_string();
    (app_proc, orders, web, target)
}

#[test]
fn grpc_all_four_call_kinds_through_outbound_and_inbound() {
    let (_app, orders, web, target) = mesh();
    let unary = python("grpc_orders.py", &[&target, "unary", "3"]);
    assert_eq!(unary["order"]["id"], "3", "{unary}");
    assert_eq!(unary["order"]["quantity"], 3, "{unary}");

    let missing = python("grpc_orders.py", &[&target, "unary", "42"]);
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");
    assert_eq!(
        missing["details"], "order 42 not found",
        "status message arrives unchanged"
    );

    let stream = python("grpc_orders.py", &[&target, "server", "5", "300"]);
    assert_eq!(stream["count"], 5, "{stream}");
    let first = stream["first_at_ms"].as_f64().unwrap();
    let total = stream["total_ms"].as_f64().unwrap();
    // Messages are 300 ms apart: the first one must not wait for the last.
    assert!(
        first + 900.0 < total,
        "first message at {first} ms, stream ended at {total} ms"
    );

    let upload = python("grpc_orders.py", &[&target, "client", "10"]);
    assert_eq!(upload["count"], 10, "{upload}");
    assert_eq!(upload["total_cents"], 1000, "{upload}");

    let chat = python("grpc_orders.py", &[&target, "bidi", "a", "b", "c"]);
    assert_eq!(
        chat["replies"],
        serde_json::json!(["echo: a", "echo: b", "echo: c"]),
        "{chat}"
    );

    // One multiplexed HTTP/2 connection each hop, whatever the number of calls.
    assert_eq!(
        web.metric("mesh_upstream_connections_total{upstream=\"orders\"}"),
        1.0
    );
    assert_eq!(
        orders.metric("mesh_upstream_connections_total{upstream=\"inbound\"}"),
        1.0
    );
}

#[test]
fn grpc_upstream_killed_mid_stream_is_unavailable() {
    let (app, _orders, _web, target) = mesh();
    let client =
        std::thread::spawn(move || python("grpc_orders.py", &[&target, "server", "40", "100"]));
    std::thread::sleep(Duration::from_millis(800));
    app.signal("KILL");
    let result = client.join().unwrap();
    assert_eq!(result["code"], "UNAVAILABLE", "{result}");
}

#[test]
fn grpc_deadlines_shrink_on_the_way_and_a_dead_endpoint_is_unavailable() {
    let (_app, app) = service("demo-rest", &[]);
    let dead = crate::refusing_port();
    let web = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    rest:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{app}] }}\n    orders:\n      listen: 127.0.0.1:0\n      protocol: grpc\n      discovery: {{ endpoints: [127.0.0.1:{dead}] }}\n"
    ));
    // The app sees the caller's deadline minus the time already spent, in ms.
    let rest = web.listener("outbound", Some("rest"));
    let out = mesh_tests::curl(&["-H", "grpc-timeout: 5S", &format!("http://{rest}/headers")]);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let left = seen["grpc-timeout"].as_str().unwrap_or_default();
    let millis: u64 = left
        .strip_suffix('m')
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=5000).contains(&millis),
        "upstream saw grpc-timeout {left:?}"
    );
    // No endpoint answers: the gRPC client gets UNAVAILABLE, not a transport error.
    let target = web.listener("outbound", Some("orders")).to_string();
    let result = python("grpc_orders.py", &[&target, "unary", "1"]);
    assert_eq!(result["code"], "UNAVAILABLE", "{result}");
}

#[test]
fn unavailable_grpc_calls_are_retried_elsewhere_with_their_body() {
    let (_app, app) = service("demo-grpc", &[]);
    // An endpoint that answers every call with UNAVAILABLE: a sidecar whose app is gone.
    let dead = crate::refusing_port();
    let broken = Sidecar::start(&format!(
        "service: orders\nadmin: {{ listen: 127.0.0.1:0 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:{dead}\n  protocol: grpc\n"
    ));
    let broken_inbound = broken.listener("inbound", None);
    let web = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:0\n      protocol: grpc\n      balance: round_robin\n      outlier: {{ consecutive_5xx: 0 }}\n      discovery: {{ endpoints: [{broken_inbound}, {app}] }}\n"
    ));
    let target = web.listener("outbound", Some("orders")).to_string();
    for id in ["1", "2", "3", "4"] {
        let result = python("grpc_orders.py", &[&target, "unary", id]);
        assert_eq!(result["order"]["id"], id, "call {id}: {result}");
    }
    // Half the calls met the broken endpoint first: their bodies (no
    // content-length in gRPC) were recorded and sent again.
    assert!(
        web.metric("mesh_resilience_total{upstream=\"orders\",decision=\"grpc_status\"}") >= 1.0
    );
}
