//! Edge routes end to end: a real edge (`mode: edge`, plain HTTP listener)
//! in front of demo-rest instances, driven with curl. Every route sets an
//! `x-route` response header so a test sees which one matched; the app's
//! `/echo-request` answer says what it received (service name, method,
//! path, query, headers).

use std::net::SocketAddr;

use mesh_tests::{curl, service, Proc, Sidecar};
use serde_json::Value;

use crate::{curl_reply, Reply};

const ROUTES: &str = r#"
    - name: denied
      match: { path_prefix: /echo-request/denied }
      deny: [127.0.0.0/8]
      to: v1
    - name: host-exact
      match: { host: exact.test }
      headers: { response: { set: { x-route: host-exact } } }
      to: v1
    - name: host-wild
      match: { host: "*.wild.test" }
      headers: { response: { set: { x-route: host-wild } } }
      to: v2
    - name: path-exact
      match: { host: paths.test, path: /echo-request/exact }
      headers: { response: { set: { x-route: path-exact } } }
      to: v1
    - name: path-prefix
      match: { host: paths.test, path_prefix: /echo-request/pre }
      headers: { response: { set: { x-route: path-prefix } } }
      to: v1
    - name: path-regex
      match: { host: paths.test, path_regex: "/echo-request/re/[0-9]+" }
      headers: { response: { set: { x-route: path-regex } } }
      to: v1
    - name: path-template
      match: { host: paths.test, path_template: "/echo-request/users/{id}" }
      headers: { response: { set: { x-route: path-template } } }
      to: v1
    - name: method-post
      match: { host: paths.test, path: /echo-request/method, methods: [POST, PUT] }
      headers: { response: { set: { x-route: method-post } } }
      to: v2
    - name: paths-default
      match: { host: paths.test }
      headers: { response: { set: { x-route: paths-default } } }
      to: v1
    - name: api-header
      match: { host: api.test, headers: { x-api-version: "2" } }
      headers: { response: { set: { x-route: api-header } } }
      to: v2
    - name: api-path
      match: { host: api.test, path_prefix: /v2 }
      rewrite: { prefix: /echo-request }
      headers: { response: { set: { x-route: api-path } } }
      to: v2
    - name: api-cookie
      match: { host: api.test, cookies: { beta: "yes" } }
      headers: { response: { set: { x-route: api-cookie } } }
      to: v2
    - name: api-query
      match: { host: api.test, query: { debug: { present: true }, user: "a b" } }
      headers: { response: { set: { x-route: api-query } } }
      to: v2
    - name: api-default
      match: { host: api.test }
      headers: { response: { set: { x-route: api-default } } }
      to: v1
    - name: rw-strip
      match: { host: rw.test, path_prefix: /strip }
      rewrite: { prefix: "" }
      to: v1
    - name: rw-prefix
      match: { host: rw.test, path_prefix: /old-api }
      rewrite: { prefix: /echo-request/new-api }
      to: v1
    - name: rw-regex
      match: { host: rw.test, path_regex: "/regex/.*" }
      rewrite: { regex: { pattern: "^/regex/(?P<first>[^/]+)/(.*)$", replace: "/echo-request/${2}/${first}" } }
      to: v1
    - name: rw-template
      match: { host: rw.test, path_template: "/tpl/{user}/{rest=**}" }
      rewrite: { path: "/echo-request/u/{user}/files/{rest}", host: "internal.test:9000" }
      to: v1
    - name: rw-query
      match: { host: rw.test, path_prefix: /q }
      rewrite: { prefix: /echo-request }
      query: { remove: [secret], set: { page: "1" }, add: { tag: "a b&c" } }
      headers:
        request: { remove: [x-drop], set: { x-set: set }, add: { x-add: added } }
        response: { remove: [x-service], set: { cache-control: no-store }, add: { x-added: "yes" } }
      to: v1
    - name: rw-server
      match: { host: rw.test, path_prefix: /server }
      rewrite: { prefix: /echo-request }
      headers: { response: { set: { server: edge } } }
      to: v1
    - name: redirect-prefix
      match: { host: redirect.test, path_prefix: /old }
      redirect: { prefix: /new, status: 308 }
    - name: redirect-template
      match: { host: redirect.test, path_template: "/u/{id}" }
      redirect: { scheme: https, host: secure.test, path: "/users/{id}", strip_query: true }
    - name: redirect-to
      match: { host: redirect.test, path: /away }
      redirect: { to: "https://example.test/landing", status: 302 }
    - name: canary
      match: { host: canary.test }
      split: [{ to: v1, weight: 90 }, { to: v2, weight: 10 }]
    - name: forwarded
      match: { host: fwd.test }
      to: v1
    - name: slashes-reject
      match: { host: slashes.test, path_prefix: /echo-request/strict }
      encoded_slashes: reject
      to: v1
    - name: slashes-keep
      match: { host: slashes.test, path_prefix: /echo-request/keep }
      encoded_slashes: keep
      to: v1
    - name: slashes-decode
      match: { host: slashes.test }
      to: v1
    - name: by-address
      match: { host: 127.0.0.1 }
      to: v1
"#;

struct Edge {
    sidecar: Sidecar,
    addr: SocketAddr,
}

/// An edge in front of `v1` and `v2`; `trusted` lists `edge.trusted_proxies`.
fn edge(v1: SocketAddr, v2: SocketAddr, trusted: &str) -> Edge {
    let yaml = format!(
        "service: gateway\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\nedge:\n  listeners: [{{ listen: 127.0.0.1:0 }}]\n  trusted_proxies: [{trusted}]\n  upstreams:\n    v1: {{ discovery: {{ endpoints: [{v1}] }} }}\n    v2: {{ discovery: {{ endpoints: [{v2}] }} }}\n  routes:{ROUTES}"
    );
    let sidecar = Sidecar::start(&yaml);
    let mut addr = None;
    mesh_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the edge listener",
        || {
            let listeners = sidecar.admin_json("/listeners");
            addr = listeners.as_array().and_then(|all| {
                all.iter()
                    .find(|l| l["kind"] == "edge")
                    .and_then(|l| l["addr"].as_str())
                    .and_then(|a| a.parse().ok())
            });
            addr.is_some()
        },
    );
    Edge {
        sidecar,
        addr: addr.unwrap(),
    }
}

fn apps() -> ((Proc, SocketAddr), (Proc, SocketAddr)) {
    (
        service("demo-rest", &["--name", "v1"]),
        service("demo-rest", &["--name", "v2"]),
    )
}

/// What the app received: (service, path, query, headers).
trait Seen {
    fn seen(&self) -> (String, String, Option<String>, Value);
}

impl Seen for Reply {
    fn seen(&self) -> (String, String, Option<String>, Value) {
        assert_eq!(self.status, 200, "{}", self.body);
        let body = self.json();
        (
            body["service"].as_str().unwrap().to_string(),
            body["path"].as_str().unwrap().to_string(),
            body["query"].as_str().map(str::to_string),
            body["headers"].clone(),
        )
    }
}

/// curl `path` on the edge as `host`, with extra curl arguments.
fn send(edge: &Edge, host: &str, path: &str, extra: &[&str]) -> Reply {
    let url = format!("http://{}{path}", edge.addr);
    let host_header = format!("host: {host}");
    let mut args = vec!["-D", "-", "-H", &host_header];
    args.extend_from_slice(extra);
    args.push(&url);
    curl_reply(&args)
}

fn route_of(reply: &Reply) -> &str {
    reply.header("x-route").unwrap_or("<none>")
}

#[test]
fn routes_match_rewrite_redirect_and_split() {
    let ((_a, v1), (_b, v2)) = apps();
    let edge = edge(v1, v2, "");

    // Hosts: exact (any case, port ignored) and wildcard (one or more labels).
    let reply = send(&edge, "EXACT.test:8080", "/echo-request", &[]);
    assert_eq!(route_of(&reply), "host-exact");
    assert_eq!(reply.seen().0, "v1");
    for host in ["a.wild.test", "a.b.wild.test"] {
        let reply = send(&edge, host, "/echo-request", &[]);
        assert_eq!(route_of(&reply), "host-wild", "{host}");
        assert_eq!(reply.seen().0, "v2");
    }
    // `wild.test` itself is not under `*.wild.test`: nothing else matches it.
    let reply = send(&edge, "wild.test", "/echo-request", &[]);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-mesh-error"), Some("no_route"));
    assert_eq!(send(&edge, "nothing.test", "/", &[]).status, 404);

    // Path kinds, in order; the prefix matches on segment boundaries only.
    for (path, route) in [
        ("/echo-request/exact", "path-exact"),
        ("/echo-request/exact/more", "paths-default"),
        ("/echo-request/pre", "path-prefix"),
        ("/echo-request/pre/x/y", "path-prefix"),
        ("/echo-request/prefix", "paths-default"),
        ("/echo-request/re/123", "path-regex"),
        ("/echo-request/re/12a", "paths-default"),
        ("/echo-request/users/42", "path-template"),
        ("/echo-request/users/42/x", "paths-default"),
        ("/echo-request/method", "paths-default"),
    ] {
        assert_eq!(
            route_of(&send(&edge, "paths.test", path, &[])),
            route,
            "{path}"
        );
    }
    for method in ["POST", "PUT"] {
        let reply = send(&edge, "paths.test", "/echo-request/method", &["-X", method]);
        assert_eq!(route_of(&reply), "method-post");
        assert_eq!(reply.json()["method"], method);
    }

    // API version by header and by path; cookie; query (decoded); first match wins.
    let reply = send(&edge, "api.test", "/v2/items", &["-H", "x-api-version: 2"]);
    assert_eq!(
        route_of(&reply),
        "api-header",
        "the header route comes first"
    );
    assert_eq!(
        reply.status, 404,
        "no rewrite on the header route: the app has no /v2"
    );
    let reply = send(
        &edge,
        "api.test",
        "/echo-request/items",
        &["-H", "X-Api-Version: 2"],
    );
    assert_eq!(route_of(&reply), "api-header");
    assert_eq!(reply.seen().0, "v2");
    let reply = send(&edge, "api.test", "/v2/items?x=1", &[]);
    assert_eq!(route_of(&reply), "api-path");
    let (service, path, query, _) = reply.seen();
    assert_eq!(
        (service.as_str(), path.as_str()),
        ("v2", "/echo-request/items")
    );
    assert_eq!(query.as_deref(), Some("x=1"));
    let reply = send(
        &edge,
        "api.test",
        "/echo-request",
        &["-H", "cookie: a=1; beta=yes"],
    );
    assert_eq!(route_of(&reply), "api-cookie");
    let reply = send(
        &edge,
        "api.test",
        "/echo-request",
        &["-H", "cookie: beta=no"],
    );
    assert_eq!(route_of(&reply), "api-default");
    let reply = send(&edge, "api.test", "/echo-request?debug&user=a%20b", &[]);
    assert_eq!(route_of(&reply), "api-query");
    let reply = send(&edge, "api.test", "/echo-request?debug&user=a+b", &[]);
    assert_eq!(route_of(&reply), "api-query");
    let reply = send(&edge, "api.test", "/echo-request?user=a%20b", &[]);
    assert_eq!(route_of(&reply), "api-default");
    assert_eq!(reply.seen().0, "v1");

    // Rewrites.
    let (_, path, query, _) = send(&edge, "rw.test", "/strip/echo-request/x?k=v", &[]).seen();
    assert_eq!(
        (path.as_str(), query.as_deref()),
        ("/echo-request/x", Some("k=v"))
    );
    let (_, path, _, _) = send(&edge, "rw.test", "/old-api/a/b", &[]).seen();
    assert_eq!(path, "/echo-request/new-api/a/b");
    let (_, path, _, _) = send(&edge, "rw.test", "/old-api", &[]).seen();
    assert_eq!(path, "/echo-request/new-api");
    assert_eq!(send(&edge, "rw.test", "/old-apix", &[]).status, 404);
    let (_, path, _, _) = send(&edge, "rw.test", "/regex/one/two", &[]).seen();
    assert_eq!(path, "/echo-request/two/one");
    let (_, path, _, headers) = send(&edge, "rw.test", "/tpl/ann/a/b.txt", &[]).seen();
    assert_eq!(path, "/echo-request/u/ann/files/a/b.txt");
    assert_eq!(headers["host"], "internal.test:9000", "Host rewrite");
    assert_eq!(headers["x-forwarded-host"], "rw.test", "the original Host");

    // Query and header changes both ways.
    let reply = send(
        &edge,
        "rw.test",
        "/q?secret=1&keep=x%20y&page=7&tag=z",
        &["-H", "x-drop: 1", "-H", "x-set: old", "-H", "x-add: first"],
    );
    assert_eq!(reply.header("x-service"), None, "response remove");
    assert_eq!(reply.header("x-added"), Some("yes"), "response add");
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "response set"
    );
    let (_, path, query, headers) = reply.seen();
    assert_eq!(path, "/echo-request");
    assert_eq!(
        query.as_deref(),
        Some("keep=x%20y&tag=z&page=1&tag=a%20b%26c")
    );
    assert!(headers.get("x-drop").is_none(), "{headers}");
    assert_eq!(headers["x-set"], "set");
    assert_eq!(headers["x-add"], "first, added");

    // Server / X-Powered-By are stripped from every upstream answer; a
    // route may set its own after that.
    let reply = send(&edge, "rw.test", "/strip/echo-request", &[]);
    assert_eq!(reply.header("x-service"), Some("v1"));
    assert_eq!(reply.header("server"), None);
    assert_eq!(reply.header("x-powered-by"), None);
    let reply = send(&edge, "rw.test", "/server", &[]);
    assert_eq!(reply.header("server"), Some("edge"));
    assert_eq!(reply.header("x-powered-by"), None);

    // Redirects: status and Location.
    let reply = send(&edge, "redirect.test:8080", "/old/a/b?x=1", &[]);
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some("http://redirect.test:8080/new/a/b?x=1")
    );
    let reply = send(&edge, "redirect.test", "/u/7?x=1", &[]);
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://secure.test/users/7")
    );
    let reply = send(&edge, "redirect.test", "/away", &[]);
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("https://example.test/landing")
    );

    // Percent-encoded slashes: refused, kept encoded, or decoded, per route.
    let reply = send(
        &edge,
        "slashes.test",
        "/echo-request/strict/a%2Fb",
        &["--path-as-is"],
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let (_, path, _, _) = send(&edge, "slashes.test", "/echo-request/keep/a%2Fb", &[]).seen();
    assert_eq!(path, "/echo-request/keep/a%2Fb");
    let (_, path, _, _) = send(&edge, "slashes.test", "/echo-request/other/a%2Fb", &[]).seen();
    assert_eq!(path, "/echo-request/other/a/b");

    // Route deny: the client (127.0.0.1) is refused.
    let reply = send(&edge, "any.test", "/echo-request/denied", &[]);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-mesh-error"), Some("forbidden"));

    // Canary: 90/10 over 2000 requests on kept-alive connections.
    let url = format!("http://{}/echo-request", edge.addr);
    let mut args = vec!["-H", "host: canary.test", "-w", "\n"];
    let urls = vec![url.as_str(); 2000];
    args.extend(urls.iter().copied());
    let output = curl(&args);
    let text = String::from_utf8_lossy(&output.stdout);
    let (mut ones, mut twos) = (0, 0);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let body: Value = serde_json::from_str(line).unwrap();
        match body["service"].as_str() {
            Some("v1") => ones += 1,
            Some("v2") => twos += 1,
            other => panic!("answer from {other:?}: {line}"),
        }
    }
    assert_eq!(ones + twos, 2000);
    let share = f64::from(twos) / 2000.0;
    assert!((0.05..=0.15).contains(&share), "v2 got {twos} of 2000");
    drop(edge.sidecar);
}

#[test]
fn forwarding_headers_with_and_without_a_trusted_proxy() {
    let ((_a, v1), (_b, v2)) = apps();

    // 127.0.0.1 is not trusted: what the client says about the chain is replaced.
    let untrusted = edge(v1, v2, "");
    let reply = send(
        &untrusted,
        "fwd.test",
        "/echo-request",
        &[
            "-H",
            "x-forwarded-for: 203.0.113.7",
            "-H",
            "x-forwarded-proto: https",
            "-H",
            "x-forwarded-host: evil.test",
            "-H",
            "forwarded: for=203.0.113.7;proto=https",
            "-H",
            "x-request-id: client-id-1",
        ],
    );
    assert_eq!(reply.header("x-request-id"), Some("client-id-1"), "echoed");
    let (_, _, _, headers) = reply.seen();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "fwd.test");
    assert_eq!(
        headers["forwarded"],
        "for=127.0.0.1;proto=http;host=fwd.test"
    );
    assert_eq!(headers["x-request-id"], "client-id-1", "a valid id is kept");

    // No id, or an invalid one: a new UUID, the same one up and back.
    for extra in [&[][..], &["-H", "x-request-id: has space"][..]] {
        let reply = send(&untrusted, "fwd.test", "/echo-request", extra);
        let echoed = reply.header("x-request-id").unwrap().to_string();
        let (_, _, _, headers) = reply.seen();
        assert_eq!(headers["x-request-id"], echoed.as_str());
        assert_eq!(echoed.len(), 36, "{echoed}");
        assert_eq!(&echoed[14..15], "4", "UUID v4: {echoed}");
    }
    // HTTP/2 (h2c) names the host in `:authority`, not `Host`.
    let h2 = mesh_tests::json(&curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/echo-request", untrusted.addr),
    ]));
    let authority = untrusted.addr.to_string();
    assert_eq!(h2["headers"]["x-forwarded-host"], authority.as_str());
    assert_eq!(
        h2["headers"]["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{authority}\"").as_str()
    );
    // The proxy's own answers carry the id too.
    let reply = send(
        &untrusted,
        "nothing.test",
        "/",
        &["-H", "x-request-id: r-404"],
    );
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-request-id"), Some("r-404"));
    // The route deny sees 127.0.0.1 whatever X-Forwarded-For says.
    let reply = send(
        &untrusted,
        "fwd.test",
        "/echo-request/denied",
        &["-H", "x-forwarded-for: 198.51.100.1"],
    );
    assert_eq!(reply.status, 403);

    // 127.0.0.1 trusted: its chain is believed and extended.
    let trusted = edge(v1, v2, "127.0.0.1");
    let reply = send(
        &trusted,
        "fwd.test:8443",
        "/echo-request",
        &[
            "-H",
            "x-forwarded-for: 198.51.100.1, 203.0.113.7",
            "-H",
            "x-forwarded-proto: https",
            "-H",
            "x-forwarded-host: shop.test",
            "-H",
            "forwarded: for=203.0.113.7;proto=https;host=shop.test",
        ],
    );
    let (_, _, _, headers) = reply.seen();
    assert_eq!(
        headers["x-forwarded-for"],
        "198.51.100.1, 203.0.113.7, 127.0.0.1"
    );
    assert_eq!(
        headers["x-forwarded-proto"], "https",
        "a trusted proxy's proto"
    );
    assert_eq!(headers["x-forwarded-host"], "shop.test");
    assert_eq!(
        headers["forwarded"],
        "for=203.0.113.7;proto=https;host=shop.test, for=127.0.0.1;proto=http;host=\"fwd.test:8443\""
    );
    // The client is the first untrusted address from the right: 203.0.113.7,
    // not in 127.0.0.0/8, so the deny route lets it through...
    let reply = send(
        &trusted,
        "fwd.test",
        "/echo-request/denied",
        &["-H", "x-forwarded-for: 203.0.113.7"],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    // ...while a request with no chain is the proxy itself.
    let reply = send(&trusted, "fwd.test", "/echo-request/denied", &[]);
    assert_eq!(reply.status, 403);
    let (_, _, _, headers) = send(&trusted, "fwd.test", "/echo-request", &[]).seen();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        headers["forwarded"],
        "for=127.0.0.1;proto=http;host=fwd.test"
    );
}
