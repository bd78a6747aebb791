//! CORS per edge route, with curl as the browser: preflights answered at
//! the edge (never reaching the app), origin allow-lists with host
//! wildcards, credentials, actual requests and the proxy's own refusals
//! carrying the CORS headers, and refusals counted by route on `/metrics`.

use std::net::SocketAddr;

use mesh_tests::{curl, http, Sidecar};

use crate::{refusing_port, rest_app};

/// An edge in front of `app` with a CORS route per case.
fn edge(app: SocketAddr) -> Sidecar {
    let dead = refusing_port();
    Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: private
      match: {{ path_prefix: /private }}
      deny: [127.0.0.0/8]
      to: app
      cors: {{ origins: [\"https://app.example.test\"] }}
    - name: down
      match: {{ path_prefix: /down }}
      to: dead
      cors: {{ origins: [\"https://app.example.test\"] }}
    - name: writes
      match: {{ path_prefix: /writes, methods: [PUT, DELETE] }}
      to: app
      cors: {{ origins: [\"https://app.example.test\"] }}
    - name: public
      match: {{ path_prefix: /public }}
      to: app
      cors: {{ origins: [\"*\"], max_age: 1m }}
    - name: api
      match: {{ path_prefix: / }}
      to: app
      cors:
        origins: [\"https://app.example.test\", \"https://*.apps.example.test\"]
        methods: [GET, PUT]
        expose: [x-request-id]
        credentials: true
        max_age: 10m
  upstreams:
    app:
      discovery: {{ endpoints: [{app}] }}
    dead:
      discovery: {{ endpoints: [127.0.0.1:{dead}] }}
"
    ))
}

/// The status and the response headers (lower-case names) of a curl call.
fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut args = vec![
        "-o".to_string(),
        "/dev/null".to_string(),
        "-D".to_string(),
        "-".to_string(),
        "-X".to_string(),
        method.to_string(),
    ];
    for (name, value) in headers {
        args.push("-H".into());
        args.push(format!("{name}: {value}"));
    }
    args.push(url.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?} ({out:?})"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn cors_headers(headers: &[(String, String)]) -> Vec<&str> {
    headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Requests the app has served (its own `/stats`, which counts itself).
fn app_requests(app: SocketAddr) -> u64 {
    let (status, body) = http(app, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    stats["requests"].as_u64().unwrap()
}

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("Origin", origin),
        ("Access-Control-Request-Method", "PUT"),
        ("Access-Control-Request-Headers", "x-a"),
    ]
}

#[test]
fn preflights_are_answered_at_the_edge_for_allowed_origins_only() {
    let (_app, app) = rest_app();
    let sidecar = edge(app);
    let base = format!("http://{}", sidecar.listener("edge", None));

    // A route that matches only PUT and DELETE still answers the preflight
    // of a PUT (the preflight matches on the method it asks about), with
    // the route's methods.
    let (status, headers) = call(
        "OPTIONS",
        &format!("{base}/writes/1"),
        &preflight("https://app.example.test"),
    );
    assert_eq!(status, 204, "{headers:?}");
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("PUT, DELETE")
    );

    let before = app_requests(app);
    let (status, headers) = call(
        "OPTIONS",
        &format!("{base}/orders/1"),
        &preflight("https://app.example.test"),
    );
    assert_eq!(status, 204, "{headers:?}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header(&headers, "access-control-allow-headers"),
        Some("x-a")
    );
    assert_eq!(
        header(&headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
    assert_eq!(
        header(&headers, "vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );

    // A host wildcard; any origin without credentials.
    let (status, headers) = call(
        "OPTIONS",
        &format!("{base}/x"),
        &preflight("https://team.apps.example.test"),
    );
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://team.apps.example.test")
    );
    let any = [
        ("Origin", "https://anyone.test"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let (status, headers) = call("OPTIONS", &format!("{base}/public"), &any);
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&headers, "access-control-allow-credentials"), None);
    assert_eq!(header(&headers, "access-control-max-age"), Some("60"));

    // Disallowed origins and methods: refused, no CORS headers.
    for origin in [
        "https://evil.test",
        "http://app.example.test",
        "https://apps.example.test",
        "https://app.example.test.evil.test",
    ] {
        let (status, headers) = call("OPTIONS", &format!("{base}/x"), &preflight(origin));
        assert_eq!(status, 403, "{origin}");
        assert!(cors_headers(&headers).is_empty(), "{origin}: {headers:?}");
    }
    let delete = [
        ("Origin", "https://app.example.test"),
        ("Access-Control-Request-Method", "DELETE"),
    ];
    let (status, headers) = call("OPTIONS", &format!("{base}/x"), &delete);
    assert_eq!(status, 403);
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");

    // None of these reached the app: only the /stats call is new.
    assert_eq!(app_requests(app), before + 1);

    // Refused preflights are denials, by route and reason.
    let metrics = http(sidecar.admin, "GET", "/metrics").1;
    for (reason, count) in [("origin", 4), ("method", 1)] {
        let series = format!(
            "mesh_policy_denials_total{{direction=\"edge\",route=\"api\",policy=\"cors\",reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    }
}

#[test]
fn responses_carry_cors_headers_for_allowed_origins_also_on_refusals() {
    let (_app, app) = rest_app();
    let sidecar = edge(app);
    let base = format!("http://{}", sidecar.listener("edge", None));
    let allowed = [("Origin", "https://app.example.test")];

    let (status, headers) = call("GET", &format!("{base}/headers"), &allowed);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(
        header(&headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&headers, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&headers, "vary"), Some("Origin"));

    let (status, headers) = call(
        "GET",
        &format!("{base}/headers"),
        &[("Origin", "https://evil.test")],
    );
    assert_eq!(status, 200);
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");
    assert_eq!(header(&headers, "vary"), Some("Origin"));

    // An OPTIONS that is not a preflight goes to the app.
    let before = app_requests(app);
    let (status, _) = call("OPTIONS", &format!("{base}/headers"), &allowed);
    assert_eq!(status, 404, "demo-rest has no OPTIONS route");
    assert_eq!(app_requests(app), before + 2);

    // The proxy's own refusal below the CORS layer: the page can read it.
    let (status, headers) = call("GET", &format!("{base}/down"), &allowed);
    assert!(status == 502 || status == 503, "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(header(&headers, "vary"), Some("Origin"));
    assert!(header(&headers, "x-mesh-error").is_some(), "{headers:?}");

    // The route's own `deny`: refused with its route on the denials.
    let (status, _) = call("GET", &format!("{base}/private"), &allowed);
    assert_eq!(status, 403);
    let metrics = http(sidecar.admin, "GET", "/metrics").1;
    let series = "mesh_policy_denials_total{direction=\"edge\",route=\"private\",policy=\"edge_route\",reason=\"client_address\"} 1";
    assert!(metrics.contains(series), "{series} not in\n{metrics}");
}

/// A route's `deny` is decided by the edge route layer, above the CORS
/// layer, which decorates its own refusals for a route with `cors`.
#[test]
fn a_routes_deny_carries_cors_headers_for_an_allowed_origin() {
    let (_app, app) = rest_app();
    let sidecar = edge(app);
    let base = format!("http://{}", sidecar.listener("edge", None));
    let allowed = [("Origin", "https://app.example.test")];
    let (status, headers) = call("GET", &format!("{base}/private"), &allowed);
    assert_eq!(status, 403);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example.test"),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "vary"), Some("Origin"));
}
