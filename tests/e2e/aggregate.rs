//! Aggregation routes end to end: one client request fans out to several
//! upstream calls (a recording Python upstream, `tests/py/aggregate_upstream.py`)
//! whose JSON answers come back merged: values from JWT claims, path
//! captures, query and headers substituted (percent-encoded), a part
//! chained on another's result, a slow part cut at its timeout (partial
//! answer, or 504 in `fail` mode), non-2xx and oversized parts, and an
//! unknown part reference refused by `sidecar check`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_tests::{curl, py_service, sidecar_check_yaml, Proc, Sidecar};
use serde_json::{json, Value};

use crate::edge_tls::edge_addrs;
use crate::{curl_reply, Reply};

/// Starts the recording upstream; returns it and its address.
fn upstream() -> (Proc, SocketAddr) {
    py_service("aggregate_upstream.py", &[])
}

/// The calls the upstream recorded: `{path, method, headers}`.
fn calls(upstream: SocketAddr) -> Vec<Value> {
    let out = curl(&[&format!("http://{upstream}/_calls")]);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The recorded call whose path starts with `prefix`.
fn call_to(upstream: SocketAddr, prefix: &str) -> Value {
    calls(upstream)
        .into_iter()
        .find(|c| c["path"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no call to {prefix} in {:?}", calls(upstream)))
}

/// An edge whose routes aggregate over `app` (every upstream name is the
/// same recording server); JWT keys in `keys`.
fn edge(app: SocketAddr, keys: &Path) -> Sidecar {
    Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  auth:
    jwt:
      users:
        jwks: {{ file: {jwks} }}
        issuers: [https://issuer.test]
        audiences: [mesh-api]
        forward_claims: {{ sub: x-user }}
  routes:
    - name: me
      match: {{ path: /me }}
      auth: [users]
      aggregate:
        parts:
          profile: {{ to: users, path: \"/users/{{claim.sub}}\" }}
          account: {{ to: billing, path: \"/accounts/{{profile.account.id}}\" }}
          orders:  {{ to: orders, path: \"/orders?user={{claim.sub}}&tag={{query.tag}}\", headers: [x-tenant] }}
          greeting: {{ to: users, path: /text }}
    - name: dash
      match: {{ path_template: \"/dash/{{id}}\" }}
      aggregate:
        parts:
          profile: {{ to: users, path: \"/users/{{path.id}}\" }}
          tenant: {{ to: users, path: \"/users/{{header.x-tenant}}\" }}
    - name: partial
      match: {{ path: /partial }}
      aggregate:
        parts:
          fast: {{ to: users, path: /users/fast }}
          slow: {{ to: slow, path: /slow/partial }}
          after_slow: {{ to: users, path: \"/users/{{slow.id}}\" }}
          missing: {{ to: users, path: /status/404 }}
          big: {{ to: users, path: /big }}
        timeout: 200ms
        max_part_body: 1KiB
    - name: strict
      match: {{ path: /strict }}
      aggregate:
        parts:
          fast: {{ to: users, path: /users/fast }}
          slow: {{ to: slow, path: /slow/strict }}
        timeout: 200ms
        on_part_failure: fail
    - name: strict-optional
      match: {{ path: /strict-optional }}
      aggregate:
        parts:
          fast: {{ to: users, path: /users/fast }}
          extra: {{ to: users, path: /status/500, optional: true }}
        on_part_failure: fail
    - name: strict-status
      match: {{ path: /strict-status }}
      aggregate:
        parts:
          fast: {{ to: users, path: /users/fast }}
          broken: {{ to: users, path: /status/503 }}
        on_part_failure: fail
  upstreams:
    users: {{ discovery: {{ endpoints: [{app}] }} }}
    billing: {{ discovery: {{ endpoints: [{app}] }} }}
    orders: {{ discovery: {{ endpoints: [{app}] }} }}
    slow: {{ discovery: {{ endpoints: [{app}] }} }}
",
        jwks = keys.join("jwks.json").display(),
    ))
}

/// A GET through the edge, with the response head.
fn get(edge: SocketAddr, path: &str, headers: &[String]) -> Reply {
    let url = format!("http://{edge}{path}");
    let mut args = vec!["-i", url.as_str()];
    for header in headers {
        args.extend(["-H", header.as_str()]);
    }
    curl_reply(&args)
}

#[test]
fn parts_are_merged_chained_and_fed_from_the_request() {
    let keys = mesh_tests::jwt_keys();
    let token = mesh_tests::jwt_tokens(keys.path())["rs256"]
        .as_str()
        .unwrap()
        .to_string();
    let (_app_proc, app) = upstream();
    let sidecar = edge(app, keys.path());
    let addr = edge_addrs(&sidecar)[0];

    // No token: the route's authentication refuses before any part runs.
    assert_eq!(get(addr, "/me", &[]).status, 401);
    assert!(calls(app).is_empty());

    let reply = get(
        addr,
        "/me?tag=a%20b%26c",
        &[
            format!("Authorization: Bearer {token}"),
            "X-Tenant: acme".into(),
            "X-Request-Id: req-42".into(),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-mesh-partial"), None);
    let body = reply.json();
    // Each part's JSON under its name; text that is not JSON as a string.
    assert_eq!(
        body["profile"],
        json!({"id": "alice", "name": "Alice", "account": {"id": "acc-alice"}})
    );
    assert_eq!(
        body["account"],
        json!({"account": "acc-alice", "balance": 42})
    );
    assert_eq!(
        body["orders"],
        json!([{"id": 1, "user": "alice"}, {"id": 2, "user": "alice"}])
    );
    assert_eq!(body["greeting"], json!("hello"));
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");

    // The claim went into the path; the chained part got the first part's
    // field; the query value arrived percent-encoded.
    assert_eq!(call_to(app, "/users/")["path"], "/users/alice");
    assert_eq!(call_to(app, "/accounts/")["path"], "/accounts/acc-alice");
    let orders = call_to(app, "/orders");
    assert_eq!(orders["path"], "/orders?user=alice&tag=a%20b%26c");
    // Forwarded: the request ID, the claim header authentication set and
    // the part's own `headers:`; never the client's credentials.
    assert_eq!(orders["headers"]["x-request-id"], "req-42");
    assert_eq!(orders["headers"]["x-user"], "alice");
    assert_eq!(orders["headers"]["x-tenant"], "acme");
    assert!(orders["headers"].get("authorization").is_none(), "{orders}");
    let profile = call_to(app, "/users/alice");
    assert!(profile["headers"].get("x-tenant").is_none(), "{profile}");
    assert_eq!(calls(app).len(), 4);

    // Path template captures and headers (encoded) as sources.
    let reply = get(addr, "/dash/bob", &["X-Tenant: big corp".into()]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["profile"]["id"], "bob");
    assert_eq!(body["tenant"]["id"], "big corp");
    assert!(calls(app).iter().any(|c| c["path"] == "/users/big%20corp"));
    // A capture is sent encoded once, whatever the client encoded.
    let reply = get(addr, "/dash/b%20b+c", &["X-Tenant: t".into()]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["profile"]["id"], "b b+c");
    assert!(calls(app).iter().any(|c| c["path"] == "/users/b%20b%2Bc"));
    // A header the part needs is missing: that part fails, the other answers.
    let reply = get(addr, "/dash/bob", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["profile"]["id"], "bob");
    assert_eq!(
        body["_errors"]["tenant"],
        json!({"status": 400, "reason": "missing_value"})
    );
    assert_eq!(reply.header("x-mesh-partial"), Some("tenant"));
}

#[test]
fn failed_parts_are_listed_or_fail_the_whole() {
    let keys = mesh_tests::jwt_keys();
    let (_app_proc, app) = upstream();
    let sidecar = edge(app, keys.path());
    let addr = edge_addrs(&sidecar)[0];

    // Partial: the slow part (2 s upstream, 200 ms timeout) is cut, the
    // answer comes back long before the upstream would have finished.
    let started = Instant::now();
    let reply = get(addr, "/partial", &[]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["fast"]["id"], "fast");
    let errors = &body["_errors"];
    assert_eq!(errors["slow"], json!({"status": 504, "reason": "timeout"}));
    assert_eq!(
        errors["after_slow"],
        json!({"status": 424, "reason": "dependency"})
    );
    assert_eq!(
        errors["missing"],
        json!({"status": 404, "reason": "upstream_status"})
    );
    assert_eq!(errors["big"], json!({"status": 502, "reason": "too_large"}));
    for failed in ["slow", "after_slow", "missing", "big"] {
        assert!(body.get(failed).is_none(), "{failed} in {body}");
    }
    let mut partial: Vec<&str> = reply.header("x-mesh-partial").unwrap().split(',').collect();
    partial.sort_unstable();
    assert_eq!(partial, ["after_slow", "big", "missing", "slow"]);
    // The dependent part never called its upstream.
    assert!(!calls(app)
        .iter()
        .any(|c| c["path"].as_str().unwrap().starts_with("/users/") && c["path"] != "/users/fast"));

    // Fail mode: a timed-out part is a 504 naming it, again without
    // waiting for the slow upstream.
    let started = Instant::now();
    let reply = get(addr, "/strict", &[]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("part_timeout"));
    let body = reply.json();
    assert_eq!(body["error"], "part_timeout");
    assert!(
        body["message"].as_str().unwrap().contains("\"slow\""),
        "{body}"
    );

    // Fail mode: another failure is a 502 naming the part.
    let reply = get(addr, "/strict-status", &[]);
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("part_failed"));
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("\"broken\""),
        "{}",
        reply.body
    );

    // Fail mode: an optional part's failure is listed, the rest answers.
    let reply = get(addr, "/strict-optional", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["fast"]["id"], "fast");
    assert_eq!(
        body["_errors"]["extra"],
        json!({"status": 500, "reason": "upstream_status"})
    );
    assert_eq!(reply.header("x-mesh-partial"), Some("extra"));
}

#[test]
fn an_unknown_part_reference_is_a_config_error() {
    let (code, text) = sidecar_check_yaml("service: edge\nmode: edge\nedge:\n  listeners:\n    - listen: 127.0.0.1:0\n  routes:\n    - match: { path: /me }\n      aggregate:\n        parts:\n          profile: { to: users, path: \"/users/{query.id}\" }\n          account: { to: users, path: \"/accounts/{profil.account_id}\" }\n          loop_a: { to: users, path: \"/a/{loop_b.x}\" }\n          loop_b: { to: users, path: \"/b/{loop_a.x}\" }\n  upstreams:\n    users:\n      discovery: { endpoints: [127.0.0.1:1] }\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("edge.routes[0].aggregate.parts.account.path")
            && text.contains("unknown part \"profil\""),
        "{text}"
    );
    assert!(
        text.contains("edge.routes[0].aggregate.parts") && text.contains("cycle: loop_a, loop_b"),
        "{text}"
    );
}
