//! REST → WebSocket end to end: curl calls an edge route whose upstream
//! only speaks WebSocket (`tests/py/rest_ws_upstream.py`, which replies to
//! each message with its correlation id, after a delay the request asks
//! for, and reports the connections it saw). The reply comes back field by
//! field (envelope and body messages, an envelope reply's status and
//! headers); 20 concurrent requests over a pool of 2 each get their own
//! reply although replies come out of order, and the upstream sees 2
//! connections; a silent upstream is a 504; a closed connection fails its
//! request and the next one reconnects; an idle connection is closed and
//! reopened on demand; a plain HTTP upstream is a 502; bodies over
//! `max_body` are a 413.

use std::net::SocketAddr;

use std::time::Duration;

use mesh_tests::{curl, py_service, wait_until, Proc, Sidecar};
use serde_json::{json, Value};

use crate::edge_tls::edge_addrs;
use crate::{curl_reply, Reply};

/// The WebSocket upstream, its correlation field `cid`.
fn upstream() -> (Proc, SocketAddr) {
    py_service("rest_ws_upstream.py", &["cid"])
}

/// What the upstream reports: connections, open, max_open, messages, out_of_order.
fn stats(upstream: SocketAddr) -> Value {
    let out = curl(&[&format!("http://{upstream}/_stats")]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An edge with REST → WebSocket routes to `ws` (and `/plain` to `plain`).
fn edge(ws: SocketAddr, plain: SocketAddr) -> (Sidecar, SocketAddr) {
    let sidecar = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: bodies
      match: {{ path_prefix: /bodies }}
      to: ws
      rest_to_websocket:
        path: /socket
        correlation: cid
        message: body
        max_body: 1KiB
    - name: quick
      match: {{ path_prefix: /quick }}
      to: ws
      rest_to_websocket:
        path: /socket
        correlation: cid
        timeout: 500ms
        pool: {{ size: 1 }}
    - name: brief
      match: {{ path_prefix: /brief }}
      to: ws
      rest_to_websocket:
        path: /socket
        correlation: cid
        pool: {{ size: 1, idle: 300ms }}
    - name: plain
      match: {{ path_prefix: /plain }}
      to: plain
      rest_to_websocket: {{ path: /socket }}
    - name: api
      match: {{ path_prefix: / }}
      to: ws
      rest_to_websocket:
        path: /socket
        correlation: cid
        timeout: 10s
        pool: {{ size: 2, idle: 60s }}
        message: envelope
        max_body: 64KiB
  upstreams:
    ws:
      discovery: {{ endpoints: [{ws}] }}
    plain:
      discovery: {{ endpoints: [{plain}] }}
"
    ));
    let addr = edge_addrs(&sidecar)[0];
    (sidecar, addr)
}

/// POST `body` (JSON) to `path` on the edge, with extra curl `args`.
fn post(edge: SocketAddr, path: &str, body: &Value, args: &[&str]) -> Reply {
    let url = format!("http://{edge}{path}");
    let body = body.to_string();
    let mut all = vec!["-i", "-X", "POST", "-H", "content-type: application/json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-binary", &body, &url]);
    curl_reply(&all)
}

#[test]
fn a_post_gets_the_correlated_reply() {
    let (_ws, ws) = upstream();
    let (_sidecar, edge) = edge(ws, ws);

    let reply = post(
        edge,
        "/api/orders?x=1&x=2&y=z",
        &json!({"item": "book", "qty": 2}),
        &["-H", "x-tag: t1"],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let value = reply.json();
    let id = value["cid"].as_str().unwrap();
    let echo = &value["echo"];
    assert_eq!(echo["cid"], id, "the reply carries the message's id");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/orders");
    assert_eq!(echo["query"], json!({"x": ["1", "2"], "y": "z"}));
    assert_eq!(echo["headers"]["x-tag"], "t1");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(echo["body"], json!({"item": "book", "qty": 2}));

    // An envelope reply with a status is unwrapped.
    let reply = post(edge, "/api/created", &json!({"status": 201}), &[]);
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("x-upstream"), Some("ws"));
    assert_eq!(reply.json()["path"], "/api/created");

    // Body messages: the JSON body with the id added, the reply as it came.
    let reply = post(edge, "/bodies", &json!({"a": 1}), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let value = reply.json();
    assert_eq!(value["echo"]["a"], 1);
    assert_eq!(value["echo"]["cid"], value["cid"]);
    assert!(value["echo"].get("method").is_none(), "{value}");

    // A body that is not a JSON object, and one over max_body.
    let reply = post(edge, "/bodies", &json!([1, 2]), &[]);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let big = json!({"pad": "x".repeat(2048)});
    let reply = post(edge, "/bodies", &big, &[]);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("body_too_large"));
}

#[test]
fn concurrent_requests_share_the_pool_and_get_their_own_replies() {
    let (_ws, ws) = upstream();
    let (sidecar, edge) = edge(ws, ws);

    // Earlier requests wait longer upstream, so replies come back out of order.
    let calls: Vec<_> = (0..20)
        .map(|n| {
            std::thread::spawn(move || {
                let delay = f64::from(20 - n) * 0.05;
                let reply = post(edge, "/api/n", &json!({"n": n, "delay": delay}), &[]);
                (n, reply)
            })
        })
        .collect();
    for call in calls {
        let (n, reply) = call.join().unwrap();
        assert_eq!(reply.status, 200, "request {n}: {}", reply.body);
        assert_eq!(
            reply.json()["echo"]["body"]["n"],
            n,
            "request {n} got another's reply"
        );
    }
    let seen = stats(ws);
    assert_eq!(seen["messages"], 20, "{seen}");
    assert_eq!(
        seen["connections"], 2,
        "the pool holds 2 connections: {seen}"
    );
    assert_eq!(seen["max_open"], 2, "{seen}");
    assert!(
        seen["out_of_order"].as_u64().unwrap() > 0,
        "replies came in order, the test proves nothing: {seen}"
    );

    // A second wave reuses the same connections.
    for n in 0..5 {
        let reply = post(edge, "/api/again", &json!({"n": n}), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(stats(ws)["connections"], 2);
    assert_eq!(sidecar.metric("mesh_rest_ws_connections_open "), 2.0);
    assert_eq!(
        sidecar.metric("mesh_rest_ws_connections_opened_total "),
        2.0
    );
    assert_eq!(
        sidecar.metric("mesh_rest_ws_requests_total{outcome=\"reply\"} "),
        25.0
    );
}

#[test]
fn no_reply_in_time_is_a_504_and_the_connection_stays() {
    let (_ws, ws) = upstream();
    let (_sidecar, edge) = edge(ws, ws);

    let reply = post(edge, "/quick", &json!({"silent": true}), &[]);
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("upstream_timeout"));

    let reply = post(edge, "/quick", &json!({"n": 1}), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["echo"]["body"]["n"], 1);
    assert_eq!(
        stats(ws)["connections"],
        1,
        "the timeout kept the connection"
    );
}

#[test]
fn a_closed_connection_fails_its_request_and_the_next_one_reconnects() {
    let (_ws, ws) = upstream();
    let (_sidecar, edge) = edge(ws, ws);

    let reply = post(edge, "/quick", &json!({"n": 1}), &[]);
    assert_eq!(reply.json()["connection"], 1);

    let reply = post(edge, "/quick", &json!({"close": true}), &[]);
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("upstream_reset"));

    let reply = post(edge, "/quick", &json!({"n": 2}), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["echo"]["body"]["n"], 2);
    assert_eq!(reply.json()["connection"], 2, "a new connection was opened");
    assert_eq!(stats(ws)["connections"], 2);
}

#[test]
fn an_upstream_that_is_not_a_websocket_server_is_a_502() {
    let (_ws, ws) = upstream();
    let (_plain, plain) = py_service("aggregate_upstream.py", &[]);
    let (_sidecar, edge) = edge(ws, plain);

    let reply = post(edge, "/plain", &json!({"n": 1}), &[]);
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(
        reply.header("x-mesh-error"),
        Some("upstream_upgrade_refused")
    );
}

#[test]
fn an_idle_connection_is_closed_and_reopened_on_demand() {
    let (_ws, ws) = upstream();
    let (sidecar, edge) = edge(ws, ws);

    let reply = post(edge, "/brief", &json!({"n": 1}), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["connection"], 1);
    wait_until(Duration::from_secs(5), "the idle connection closes", || {
        stats(ws)["open"] == 0
    });
    assert_eq!(sidecar.metric("mesh_rest_ws_connections_open "), 0.0);

    let reply = post(edge, "/brief", &json!({"n": 2}), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["connection"], 2, "a new connection was opened");
}
