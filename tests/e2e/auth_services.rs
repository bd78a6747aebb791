//! Token introspection and external authorization end to end: a real edge
//! in front of demo-rest (its `/headers` says what reached the app), with
//! `tests/py/auth_servers.py` as the introspection endpoint and the
//! external authorizer (it counts its calls, so caching shows). Routes are
//! told apart by host: `corp.test` (introspection), `ldap.test` (external
//! authorizer), and the `*-down` / `open` hosts whose service is a closed
//! port (fail closed 503, or fail open with `on_error: allow`).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::{curl, py_service, Proc, Sidecar};
use serde_json::Value;

use crate::{curl_reply, refusing_port, rest_app, Reply};

/// Starts tests/py/auth_servers.py; returns it and its address.
fn auth_servers() -> (Proc, SocketAddr) {
    py_service("auth_servers.py", &[])
}

/// Call counts of the auth servers.
fn calls(servers: SocketAddr) -> Value {
    let out = curl(&[&format!("http://{servers}/calls")]);
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Edge {
    _sidecar: Sidecar,
    addr: SocketAddr,
}

fn edge(app: SocketAddr, servers: SocketAddr) -> Edge {
    let down = refusing_port();
    let yaml = format!(
        r#"service: gateway
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners: [{{ listen: 127.0.0.1:0 }}]
  upstreams:
    app: {{ discovery: {{ endpoints: [{app}] }} }}
  auth:
    introspection:
      corp:
        endpoint: http://{servers}/introspect
        client_id: corp-edge
        client_secret: s3cret
        from: [header:authorization, cookie:session]
        cache: 1m
        forward_claims: {{ sub: x-user-id, scope: x-scopes }}
      corp-down:
        endpoint: http://127.0.0.1:{down}/introspect
        client_id: corp-edge
        client_secret: s3cret
        timeout: 500ms
      corp-badclient:
        endpoint: http://{servers}/introspect
        client_id: corp-edge
        client_secret: wrong
    external:
      ldap:
        url: http://{servers}/authorize
        headers: [x-user, authorization]
        sets: [x-auth-user, x-auth-groups]
      ldap-down:
        url: http://127.0.0.1:{down}/authorize
        timeout: 500ms
      ldap-open:
        url: http://127.0.0.1:{down}/authorize
        timeout: 500ms
        on_error: allow
        sets: [x-auth-user]
  routes:
    - name: corp
      match: {{ host: corp.test }}
      auth: [corp]
      to: app
    - name: corp-down
      match: {{ host: corp-down.test }}
      auth: [corp-down]
      to: app
    - name: corp-badclient
      match: {{ host: corp-badclient.test }}
      auth: [corp-badclient]
      to: app
    - name: ldap
      match: {{ host: ldap.test }}
      auth: [ldap]
      to: app
    - name: ldap-down
      match: {{ host: ldap-down.test }}
      auth: [ldap-down]
      to: app
    - name: ldap-open
      match: {{ host: open.test }}
      auth: [ldap-open]
      to: app
"#
    );
    let sidecar = Sidecar::start(&yaml);
    let mut addr = None;
    mesh_tests::wait_until(Duration::from_secs(10), "the edge listener", || {
        let listeners = sidecar.admin_json("/listeners");
        addr = listeners.as_array().and_then(|all| {
            all.iter()
                .find(|l| l["kind"] == "edge")
                .and_then(|l| l["addr"].as_str())
                .and_then(|a| a.parse().ok())
        });
        addr.is_some()
    });
    Edge {
        _sidecar: sidecar,
        addr: addr.unwrap(),
    }
}

/// The headers the app received (demo-rest `/headers`).
trait Seen {
    fn seen(&self) -> Value;
}

impl Seen for Reply {
    fn seen(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }
}

/// `GET path` on `host` through the edge.
fn get(edge: &Edge, host: &str, path: &str, headers: &[&str]) -> Reply {
    let host = format!("Host: {host}");
    let url = format!("http://{}{path}", edge.addr);
    let mut args = vec!["-i", "-H", host.as_str()];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(&url);
    curl_reply(&args)
}

#[test]
fn introspection_admits_active_tokens_and_caches_answers() {
    let (_app, app) = rest_app();
    let (_servers, servers) = auth_servers();
    let edge = edge(app, servers);

    // An active token: admitted, its claims forwarded as headers.
    let reply = get(
        &edge,
        "corp.test",
        "/headers",
        &["Authorization: Bearer good-token"],
    );
    let seen = reply.seen();
    assert_eq!(seen["x-user-id"], "alice", "{seen}");
    assert_eq!(seen["x-scopes"], "read write", "{seen}");
    assert_eq!(calls(servers)["tokens"]["good-token"], 1);

    // The same token again: answered from the cache, the endpoint not asked.
    for _ in 0..3 {
        let again = get(
            &edge,
            "corp.test",
            "/headers",
            &["Authorization: Bearer good-token"],
        );
        assert_eq!(again.seen()["x-user-id"], "alice");
    }
    assert_eq!(calls(servers)["tokens"]["good-token"], 1);

    // A token from the cookie source; a different token is asked for.
    let cookie = get(
        &edge,
        "corp.test",
        "/headers",
        &["Cookie: a=b; session=other-token"],
    );
    assert_eq!(cookie.seen()["x-user-id"], "bob");
    assert_eq!(calls(servers)["tokens"]["other-token"], 1);

    // Inactive, unknown and expired tokens: 401, and the inactive answer is cached too.
    for token in ["inactive-token", "nobody-knows-this", "expired-token"] {
        let denied = get(
            &edge,
            "corp.test",
            "/headers",
            &[&format!("Authorization: Bearer {token}")],
        );
        assert_eq!(denied.status, 401, "{token}: {}", denied.body);
        assert_eq!(denied.header("x-mesh-error"), Some("unauthenticated"));
    }
    let denied = get(
        &edge,
        "corp.test",
        "/headers",
        &["Authorization: Bearer inactive-token"],
    );
    assert_eq!(denied.status, 401);
    assert_eq!(calls(servers)["tokens"]["inactive-token"], 1);

    // No token at all: 401 without asking.
    let before = calls(servers)["introspect"].as_u64().unwrap();
    let missing = get(&edge, "corp.test", "/headers", &[]);
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(calls(servers)["introspect"].as_u64().unwrap(), before);

    // A client-sent copy of a forwarded header never reaches the app as is.
    let spoof = get(
        &edge,
        "corp.test",
        "/headers",
        &["Authorization: Bearer other-token", "x-user-id: admin"],
    );
    assert_eq!(spoof.seen()["x-user-id"], "bob");
}

#[test]
fn introspection_caches_no_longer_than_exp() {
    let (_app, app) = rest_app();
    let (_servers, servers) = auth_servers();
    let edge = edge(app, servers);
    let soon = ["Authorization: Bearer soon-token"];

    // Active until its `exp` (3 s after the server started), from the cache meanwhile.
    assert_eq!(
        get(&edge, "corp.test", "/headers", &soon).seen()["x-user-id"],
        "dave"
    );
    assert_eq!(get(&edge, "corp.test", "/headers", &soon).status, 200);
    assert_eq!(calls(servers)["tokens"]["soon-token"], 1);

    // Past `exp` (`cache: 1m` notwithstanding): asked again, and refused.
    std::thread::sleep(Duration::from_millis(3500));
    let expired = get(&edge, "corp.test", "/headers", &soon);
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert_eq!(calls(servers)["tokens"]["soon-token"], 2);
}

#[test]
fn introspection_fails_closed() {
    let (_app, app) = rest_app();
    let (_servers, servers) = auth_servers();
    let edge = edge(app, servers);

    // The endpoint cannot be reached: 503, never admitted.
    let down = get(
        &edge,
        "corp-down.test",
        "/headers",
        &["Authorization: Bearer good-token"],
    );
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(!down.body.contains("alice"));

    // The endpoint refuses our client credentials: 503 too.
    let refused = get(
        &edge,
        "corp-badclient.test",
        "/headers",
        &["Authorization: Bearer good-token"],
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
}

#[test]
fn external_authorizer_allows_denies_and_adds_headers() {
    let (_app, app) = rest_app();
    let (_servers, servers) = auth_servers();
    let edge = edge(app, servers);

    // Allowed: the authorizer's headers reach the app.
    let reply = get(
        &edge,
        "ldap.test",
        "/headers?page=2",
        &["x-user: alice", "x-secret: not-for-the-authorizer"],
    );
    let seen = reply.seen();
    assert_eq!(seen["x-auth-user"], "alice", "{seen}");
    assert_eq!(seen["x-auth-groups"], "admins ops", "{seen}");

    // What the authorizer got: method, path, query, only the listed headers, the route.
    let last = &calls(servers)["last"];
    assert_eq!(last["method"], "GET", "{last}");
    assert_eq!(last["path"], "/headers", "{last}");
    assert_eq!(last["query"], "page=2", "{last}");
    assert_eq!(last["route"], "ldap", "{last}");
    assert_eq!(last["client"], "127.0.0.1", "{last}");
    assert_eq!(last["headers"]["x-user"], "alice", "{last}");
    assert!(last["headers"].get("x-secret").is_none(), "{last}");

    // Denied by status (403), by body (200 with allow: false), or not authenticated (401).
    let denied = get(&edge, "ldap.test", "/headers", &["x-user: mallory"]);
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.header("x-mesh-error"), Some("forbidden"));
    let by_body = get(&edge, "ldap.test", "/headers", &["x-user: eve"]);
    assert_eq!(by_body.status, 403, "{}", by_body.body);
    let by_path = get(&edge, "ldap.test", "/deny/headers", &["x-user: alice"]);
    assert_eq!(by_path.status, 403, "{}", by_path.body);
    let anonymous = get(&edge, "ldap.test", "/headers", &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
}

#[test]
fn external_authorizer_down_follows_on_error() {
    let (_app, app) = rest_app();
    let (_servers, servers) = auth_servers();
    let edge = edge(app, servers);

    // on_error: deny (the default): 503.
    let closed = get(&edge, "ldap-down.test", "/headers", &["x-user: alice"]);
    assert_eq!(closed.status, 503, "{}", closed.body);

    // on_error: allow: admitted, with no principal headers, and never the
    // client's own copy of a header the authorizer sets.
    let open = get(
        &edge,
        "open.test",
        "/headers",
        &["x-user: alice", "x-auth-user: mallory"],
    );
    let seen = open.seen();
    assert!(seen.get("x-auth-user").is_none(), "{seen}");
}
