//! gRPC-Web to the demo orders service (demo-grpc) through an edge route
//! and through an inbound sidecar: raw frames from a Python client
//! (`+proto` and `-text`, unary, server streaming, error statuses in the
//! trailer frame, proxy errors and a mid-stream failure), the CORS
//! preflight a browser sends, and headless Chromium running the npm
//! `grpc-web` client from a page of another origin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mesh_tests::{py_service, python, root, service, Proc, Sidecar};
use serde_json::Value;

use crate::{curl_reply, inbound_sidecar, refusing_port};

/// An edge with the orders route (CORS for `origin`) and a route to a
/// dead upstream under `/dead`; upstreams use `protocol: auto`, so the
/// HTTP/1.1 caller's call must still go upstream as HTTP/2.
fn edge(app: SocketAddr, origin: &str) -> Sidecar {
    let dead = refusing_port();
    Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: dead
      match: {{ path_prefix: /dead/ }}
      to: dead
    - name: orders
      match: {{ path_prefix: /orders.v1.Orders/ }}
      to: orders
      cors:
        origins: [\"{origin}\"]
        methods: [POST]
        headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout]
        expose: [grpc-status, grpc-message]
  upstreams:
    orders:
      discovery: {{ endpoints: [{app}] }}
    dead:
      discovery: {{ endpoints: [127.0.0.1:{dead}] }}
"
    ))
}

/// The edge's public address as a base URL.
fn edge_url(edge: &Sidecar) -> String {
    format!("http://{}", edge.listener("edge", None))
}

/// One call of the raw gRPC-Web client; panics on a client failure.
fn web_call(base: &str, format: &str, args: &[&str]) -> Value {
    let mut all = vec![base, format];
    all.extend_from_slice(args);
    let result = python("grpc_web_client.py", &all);
    assert!(result.get("error").is_none(), "{all:?}: {result}");
    result
}

/// The frames of a call's answer.
fn frames(result: &Value) -> &Vec<Value> {
    result["frames"].as_array().unwrap()
}

/// The trailers of the last frame, which must be the trailer frame.
fn trailers(result: &Value) -> &Value {
    let last = frames(result).last().unwrap_or_else(|| panic!("{result}"));
    assert_eq!(
        last["type"], "trailers",
        "last frame is the trailers: {result}"
    );
    assert_eq!(
        result["leftover"], 0,
        "nothing after the trailer frame: {result}"
    );
    &last["trailers"]
}

/// Unary, not found, server streaming and a bad text body through `base`.
fn check_calls(base: &str) {
    for (format, content_type) in [
        ("proto", "application/grpc-web+proto"),
        ("text", "application/grpc-web-text"),
        ("web", "application/grpc-web"),
    ] {
        let found = web_call(base, format, &["get", "3"]);
        assert_eq!(found["status"], 200, "{found}");
        assert_eq!(found["headers"]["content-type"], content_type, "{found}");
        let frames_seen = frames(&found);
        assert_eq!(frames_seen.len(), 2, "one message, then trailers: {found}");
        assert_eq!(
            frames_seen[0]["order"],
            serde_json::json!({"id": "3", "item": "widget-3", "quantity": 3, "price_cents": 300}),
            "{found}"
        );
        assert_eq!(trailers(&found)["grpc-status"], "0", "{found}");

        // The service's error status arrives in the trailer frame (tonic
        // answers it trailers-only: in the headers as well).
        let missing = web_call(base, format, &["get", "42"]);
        assert_eq!(missing["status"], 200, "{missing}");
        assert_eq!(frames(&missing).len(), 1, "{missing}");
        let status = trailers(&missing);
        assert_eq!(status["grpc-status"], "5", "NOT_FOUND: {missing}");
        let message = status["grpc-message"].as_str().unwrap();
        assert_eq!(message.replace("%20", " "), "order 42 not found");
        assert_eq!(missing["headers"]["grpc-status"], "5", "{missing}");
        assert_eq!(missing["headers"]["content-type"], content_type);
    }

    for format in ["proto", "text"] {
        // Three orders 400 ms apart: each arrives as it is sent.
        let stream = web_call(base, format, &["list", "3", "400"]);
        let seen = frames(&stream);
        let ids: Vec<&str> = seen[..seen.len() - 1]
            .iter()
            .map(|f| f["order"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["1", "2", "3"], "{stream}");
        assert_eq!(trailers(&stream)["grpc-status"], "0", "{stream}");
        let first = seen[0]["at_ms"].as_f64().unwrap();
        let total = stream["total_ms"].as_f64().unwrap();
        assert!(
            first + 600.0 < total,
            "{format}: first order at {first} ms, stream ended at {total} ms"
        );
    }

    // A text body that is not base64 is the caller's error, in gRPC-Web.
    let bad = web_call(base, "text", &["badtext"]);
    assert_eq!(bad["headers"]["x-mesh-error"], "bad_request", "{bad}");
    assert_eq!(bad["headers"]["grpc-status"], "13", "INTERNAL: {bad}");
    assert_eq!(trailers(&bad)["grpc-status"], "13", "{bad}");
}

#[test]
fn grpc_web_calls_reach_grpc_through_the_edge() {
    let (_app, app) = service("demo-grpc", &[]);
    let edge = edge(app, "http://page.example.test");
    check_calls(&edge_url(&edge));

    // An HTTP/2 caller gets the trailers in the body too, never as HTTP/2
    // trailers; `-text` answers are base64 per chunk, each padded.
    let h2 = curl_reply(&[
        "-s",
        "-i",
        "--http2-prior-knowledge",
        "-H",
        "Content-Type: application/grpc-web-text",
        "--data-binary",
        "AAAAAAMKATI=", // GetOrder { id: "2" }
        &format!("{}/orders.v1.Orders/GetOrder", edge_url(&edge)),
    ]);
    assert_eq!(h2.status, 200);
    assert_eq!(h2.header("content-type"), Some("application/grpc-web-text"));
    // The Order message (widget-2), then the frame `0x80` + "grpc-status: 0\r\n".
    assert_eq!(
        h2.body, "AAAAABIKATISCHdpZGdldC0yGAIgyAE=gAAAABBncnBjLXN0YXR1czogMA0K",
        "{:?}",
        h2.headers
    );

    // The proxy's own refusal reaches a gRPC-Web caller as gRPC-Web.
    let refused = web_call(&format!("{}/dead", edge_url(&edge)), "text", &["get", "1"]);
    assert_eq!(refused["status"], 200, "{refused}");
    assert_eq!(
        refused["headers"]["content-type"],
        "application/grpc-web-text"
    );
    assert_eq!(refused["headers"]["grpc-status"], "14", "{refused}");
    assert_eq!(trailers(&refused)["grpc-status"], "14", "{refused}");
}

#[test]
fn grpc_web_calls_reach_grpc_through_an_inbound_sidecar() {
    let (_app, app) = service("demo-grpc", &[]);
    let sidecar = inbound_sidecar(app, "");
    check_calls(&format!("http://{}", sidecar.listener("inbound", None)));
}

#[test]
fn grpc_web_stream_cut_by_the_upstream_ends_with_unavailable() {
    let (app_proc, app) = service("demo-grpc", &[]);
    let edge = edge(app, "http://page.example.test");
    let base = edge_url(&edge);
    let client = std::thread::spawn(move || web_call(&base, "proto", &["list", "40", "100"]));
    std::thread::sleep(Duration::from_millis(800));
    app_proc.signal("KILL");
    let cut = client.join().unwrap();
    let orders = frames(&cut).len() - 1;
    assert!(orders >= 1, "orders arrived before the cut: {cut}");
    assert_eq!(
        trailers(&cut)["grpc-status"],
        "14",
        "never a clean end: {cut}"
    );
}

#[test]
fn grpc_web_preflight_is_answered_by_the_edge() {
    let (_app, app) = service("demo-grpc", &[]);
    let origin = "http://page.example.test";
    let edge = edge(app, origin);
    let url = format!("{}/orders.v1.Orders/GetOrder", edge_url(&edge));
    let preflight = curl_reply(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "OPTIONS",
        "-H",
        &format!("Origin: {origin}"),
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: content-type,x-grpc-web,x-user-agent",
        &url,
    ]);
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(origin)
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for name in ["content-type", "x-grpc-web", "x-user-agent"] {
        assert!(allowed.contains(name), "{name} not in {allowed:?}");
    }
    // The call itself: the browser may read the status headers.
    let frame = "AAAAAAMKATI="; // GetOrder { id: "2" }, base64
    let call = curl_reply(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Origin: {origin}"),
        "-H",
        "Content-Type: application/grpc-web-text",
        "-H",
        "X-Grpc-Web: 1",
        "--data-binary",
        frame,
        &url,
    ]);
    assert_eq!(call.status, 200);
    assert_eq!(call.header("access-control-allow-origin"), Some(origin));
    let exposed = call
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{exposed:?}");
    assert_eq!(
        call.header("content-type"),
        Some("application/grpc-web-text")
    );
}

/// The test page's directory, with its script bundled from npm packages.
fn bundled_page() -> PathBuf {
    let web = root().join("tests/web");
    assert!(
        web.join("node_modules/grpc-web").exists()
            && web.join("node_modules/.bin/esbuild").exists(),
        "tests/web/node_modules is missing: run `npm ci --prefix tests/web` (scripts/test does)"
    );
    let out = Command::new("npm")
        .args(["run", "build", "--silent", "--prefix"])
        .arg(&web)
        .output()
        .expect("npm is installed");
    assert!(
        out.status.success(),
        "bundling tests/web/app.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    web
}

/// Serves `tests/web` on 127.0.0.1:0; returns it and its origin.
fn page_server() -> (Proc, String) {
    let (proc, addr) = py_service("grpc_web_page.py", &[]);
    (proc, format!("http://{addr}"))
}

/// The JSON an element `<pre id="id">` of the DOM holds.
fn element_json(dom: &str, id: &str) -> Value {
    let open = format!("<pre id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {dom}"))
        + open.len();
    let text = &dom[start..];
    let text = &text[..text.find("</pre>").unwrap()];
    let text = text.replace("&quot;", "\"").replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("#{id}: {e}: {text}"))
}

#[test]
fn grpc_web_page_in_chromium_calls_the_service_through_the_edge() {
    let web = bundled_page();
    let (_page, origin) = page_server();
    let (_app, app) = service("demo-grpc", &[]);
    let edge = edge(app, &origin);
    let url = format!("{origin}/index.html?edge={}", edge_url(&edge));
    assert!(web.join("dist/app.js").exists());
    let dom = dump_dom_of(&url);

    let text = element_json(&dom, "text-unary");
    assert_eq!(
        text["order"],
        serde_json::json!({"id": "3", "item": "widget-3", "quantity": 3, "price_cents": 300}),
        "{dom}"
    );
    let binary = element_json(&dom, "binary-unary");
    assert_eq!(binary["order"]["item"], "widget-7", "{dom}");
    assert_eq!(binary["order"]["price_cents"], 700, "{dom}");
    let missing = element_json(&dom, "not-found");
    assert_eq!(missing["code"], 5, "NOT_FOUND: {dom}");
    assert_eq!(missing["message"], "order 42 not found", "{dom}");
    let stream = element_json(&dom, "stream");
    assert_eq!(stream["code"], 0, "{dom}");
    let ids: Vec<&str> = stream["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "{dom}");
}

#[test]
fn grpc_web_calls_are_counted_with_the_status_of_their_trailer_frame() {
    let (_app, app) = service("demo-grpc", &[]);
    let edge = edge(app, "http://127.0.0.1:1");
    let base = edge_url(&edge);
    let found = web_call(&base, "proto", &["get", "3"]);
    // The status travels in the body's trailer frame, not in HTTP trailers.
    assert_eq!(trailers(&found)["grpc-status"], "0", "{found}");
    assert!(found["headers"].get("grpc-status").is_none(), "{found}");
    let text = web_call(&base, "text", &["list", "2", "10"]);
    assert_eq!(trailers(&text)["grpc-status"], "0", "{text}");
    let ok_series = || {
        edge.metrics()
            .lines()
            .filter(|l| l.starts_with("mesh_requests_total{"))
            .filter(|l| l.contains("route=\"orders\"") && l.contains("grpc_status=\"0\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    mesh_tests::wait_until(
        Duration::from_secs(5),
        "gRPC-Web calls counted with grpc_status 0",
        || ok_series() >= 2.0,
    );
}

/// The DOM of `url` once the page is ready.
fn dump_dom_of(url: &str) -> String {
    mesh_tests::dump_dom(url, 15000, "id=\"state\">done<")
}
