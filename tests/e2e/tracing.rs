//! Distributed tracing: an edge → sidecar(web) → demo-rest → sidecar(web)
//! outbound → sidecar(orders) → demo-grpc chain on loopback exports its
//! spans to a Python OTLP receiver (gRPC and HTTP), as one trace with each
//! span's parent the previous hop's span.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_tests::{bin, curl, json, root, service, wait_until, Proc, Sidecar};
use serde_json::Value;

use crate::closed_port;

/// The Python OTLP receiver: its process, its gRPC and HTTP addresses and
/// the spans it printed so far.
struct Receiver {
    proc: Proc,
    grpc: SocketAddr,
    http: SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let mut child = Command::new("python3")
            .arg(root().join("tests/py/otlp_receiver.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let proc = Proc::adopt("otlp_receiver", child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let first: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("otlp_receiver printed {line:?}: {e}; {:?}", proc.log()));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(span) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(span);
                }
            }
        });
        Receiver {
            proc,
            grpc: first["listening"].as_str().unwrap().parse().unwrap(),
            http: first["http"].as_str().unwrap().parse().unwrap(),
            spans,
        }
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of `trace`, once at least `count` arrived.
    fn trace(&self, trace: &str, count: usize) -> Vec<Value> {
        let of_trace = || -> Vec<Value> {
            self.spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect()
        };
        wait_until(Duration::from_secs(10), "the trace's spans", || {
            of_trace().len() >= count
        });
        of_trace()
    }

    /// The first span whose attribute `key` is `value`, waiting for it.
    fn span_with(&self, key: &str, value: &str) -> Value {
        let find = || {
            self.spans()
                .into_iter()
                .find(|s| s["attributes"][key] == value)
        };
        wait_until(Duration::from_secs(10), "a span", || find().is_some());
        find().unwrap()
    }
}

/// The `tracing:` block: gRPC or HTTP export to the receiver.
fn tracing_yaml(receiver: &Receiver, http: bool, sampling: f64) -> String {
    let otlp = if http {
        format!(
            "{{ endpoint: \"http://{}/v1/traces\", protocol: http, timeout: 1s }}",
            receiver.http
        )
    } else {
        format!(
            "{{ endpoint: {}, protocol: grpc, timeout: 1s }}",
            receiver.grpc
        )
    };
    format!("tracing:\n  otlp: {otlp}\n  sampling: {sampling}\n  batch: {{ max_spans: 64, interval: 100ms }}\n  queue: 256\n")
}

const COMMON: &str = "admin: { listen: 127.0.0.1:0 }\nreload: { interval: 100ms }\ndrain: { delay: 100ms, deadline: 10s }\n";

fn edge_yaml(web: SocketAddr, tracing: &str) -> String {
    format!(
        "service: edge\nmode: edge\n{COMMON}edge:\n  listeners:\n    - listen: 127.0.0.1:0\n  routes:\n    - name: shop\n      match: {{ path_prefix: / }}\n      to: web\n  upstreams:\n    web:\n      discovery: {{ endpoints: [{web}] }}\n{tracing}"
    )
}

/// `mesh-ctl ca` certificates for `services`; the `identity:` section of each.
fn identities(dir: &Path, services: &[&str]) -> Vec<String> {
    let mesh_ctl = |args: &[&str]| {
        let output = Command::new(bin("mesh-ctl")).args(args).output().unwrap();
        assert!(output.status.success(), "mesh-ctl {args:?}: {output:?}");
    };
    let ca = dir.join("ca").display().to_string();
    mesh_ctl(&["ca", "init", "--trust-domain", "mesh.local", "--out", &ca]);
    services
        .iter()
        .map(|service| {
            let out = dir.join(service).display().to_string();
            mesh_ctl(&["ca", "issue", "--service", service, "--ca", &ca, "--out", &out]);
            format!("identity: {{ trust_domain: mesh.local, cert: {out}/cert.pem, key: {out}/key.pem, bundle: {ca}/bundle.pem }}\n")
        })
        .collect()
}

/// The running chain, mutual TLS between its proxies.
struct Chain {
    edge: Sidecar,
    edge_addr: SocketAddr,
    web: Sidecar,
    _orders: Sidecar,
    _apps: Vec<Proc>,
    /// The edge's `identity:` section, for config rewrites.
    edge_identity: String,
    _certs: tempfile::TempDir,
}

fn chain(receiver: &Receiver) -> Chain {
    let certs = tempfile::tempdir().unwrap();
    let [edge_id, web_id, orders_id] = &identities(certs.path(), &["edge", "web", "orders"])[..]
    else {
        unreachable!("three services")
    };
    let (grpc_app, grpc_addr) = service("demo-grpc", &[]);
    // B: gRPC orders, exports over OTLP/HTTP.
    let orders = Sidecar::start(&format!(
        "service: orders\n{COMMON}{orders_id}inbound:\n  listen: 127.0.0.1:0\n  app: {grpc_addr}\n{}",
        tracing_yaml(receiver, true, 1.0)
    ));
    let orders_inbound = orders.listener("inbound", None);
    // A: web; demo-rest calls orders through A's outbound port.
    let outbound_port = closed_port();
    let orders_url = format!("http://127.0.0.1:{outbound_port}");
    let (rest_app, rest_addr) = service("demo-rest", &["--orders-grpc", &orders_url]);
    let web = Sidecar::start(&format!(
        "service: web\n{COMMON}{web_id}inbound:\n  listen: 127.0.0.1:0\n  app: {rest_addr}\noutbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:{outbound_port}\n      protocol: grpc\n      discovery: {{ endpoints: [{orders_inbound}] }}\n{}",
        tracing_yaml(receiver, false, 1.0)
    ));
    let web_inbound = web.listener("inbound", None);
    let edge = Sidecar::start(&edge_yaml(
        web_inbound,
        &format!("{edge_id}{}", tracing_yaml(receiver, false, 1.0)),
    ));
    let edge_addr = edge.listener("edge", None);
    Chain {
        edge,
        edge_addr,
        web,
        _orders: orders,
        _apps: vec![grpc_app, rest_app],
        edge_identity: edge_id.clone(),
        _certs: certs,
    }
}

fn get(chain: &Chain, path: &str, headers: &[&str]) -> Value {
    let url = format!("http://{}{path}", chain.edge_addr);
    let mut args: Vec<&str> = vec!["--fail-with-body"];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(&url);
    json(&curl(&args))
}

/// The span of `service` in `direction`.
fn hop<'a>(spans: &'a [Value], service: &str, direction: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service && s["attributes"]["mesh.direction"] == direction)
        .unwrap_or_else(|| panic!("no {service} {direction} span in {spans:#?}"))
}

fn reload(sidecar: &Sidecar, yaml: &str) {
    let before = sidecar.admin_json("/config")["generation"]
        .as_u64()
        .unwrap();
    sidecar.write_config(yaml);
    wait_until(Duration::from_secs(10), "the reload", || {
        sidecar.admin_json("/config")["generation"]
            .as_u64()
            .unwrap()
            > before
    });
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

#[test]
fn a_request_through_the_mesh_is_one_trace_with_linked_spans() {
    let receiver = Receiver::start();
    let chain = chain(&receiver);

    let order = get(
        &chain,
        "/orders/3?expand=1",
        &["user-agent: tracing-test/1"],
    );
    assert_eq!(order["id"], "3", "{order}");
    let edge = receiver.span_with("url.path", "/orders/3");
    let trace = edge["trace_id"].as_str().unwrap().to_string();
    let spans = receiver.trace(&trace, 4);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let edge = hop(&spans, "edge", "edge");
    let web_in = hop(&spans, "web", "inbound");
    let web_out = hop(&spans, "web", "outbound");
    let orders_in = hop(&spans, "orders", "inbound");

    // Each hop's parent is the previous hop's span.
    assert_eq!(edge["parent_span_id"], "", "a new trace starts at the edge");
    assert_eq!(web_in["parent_span_id"], edge["span_id"]);
    assert_eq!(web_out["parent_span_id"], web_in["span_id"]);
    assert_eq!(orders_in["parent_span_id"], web_out["span_id"]);
    assert_eq!(
        [
            &edge["kind"],
            &web_in["kind"],
            &web_out["kind"],
            &orders_in["kind"]
        ],
        ["SERVER", "SERVER", "CLIENT", "SERVER"]
    );
    // Both exports: web and the edge over gRPC, orders over HTTP.
    assert_eq!(edge["transport"], "grpc");
    assert_eq!(web_out["transport"], "grpc");
    assert_eq!(orders_in["transport"], "http");
    assert_eq!(edge["resource"]["mesh.mode"], "edge");
    assert_eq!(web_in["resource"]["mesh.mode"], "sidecar");
    assert!(edge["resource"]["service.instance.id"].is_string());

    // HTTP semantic conventions, and the mesh's own.
    let attrs = &edge["attributes"];
    assert_eq!(edge["name"], "GET shop", "{edge}");
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["url.path"], "/orders/3");
    assert_eq!(attrs["url.query"], "expand=1");
    assert_eq!(attrs["url.scheme"], "http");
    assert_eq!(attrs["server.address"], "127.0.0.1");
    assert_eq!(attrs["server.port"], i64::from(chain.edge_addr.port()));
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["network.protocol.version"], "1.1");
    assert_eq!(attrs["user_agent.original"], "tracing-test/1");
    assert_eq!(attrs["client.address"], "127.0.0.1");
    assert_eq!(attrs["http.route"], "shop");
    assert_eq!(attrs["mesh.upstream"], "web");
    assert_eq!(attrs["mesh.attempts"], 1);
    assert!(attrs["mesh.endpoint"].is_string());
    assert_eq!(edge["status"], "UNSET");
    // gRPC: RPC conventions on both sides of the call.
    for span in [web_out, orders_in] {
        let attrs = &span["attributes"];
        assert_eq!(span["name"], "orders.v1.Orders/GetOrder", "{span}");
        assert_eq!(attrs["rpc.system"], "grpc");
        assert_eq!(attrs["rpc.service"], "orders.v1.Orders");
        assert_eq!(attrs["rpc.method"], "GetOrder");
        assert_eq!(attrs["rpc.grpc.status_code"], 0);
        assert_eq!(attrs["network.protocol.version"], "2");
    }
    assert_eq!(web_out["attributes"]["mesh.upstream"], "orders");
    // Each inbound knows its caller by its verified identity.
    assert_eq!(
        web_in["attributes"]["mesh.peer_identity"],
        "spiffe://mesh.local/svc/edge"
    );
    assert_eq!(
        orders_in["attributes"]["mesh.peer_identity"],
        "spiffe://mesh.local/svc/web"
    );

    // A failed gRPC call: ERROR on the client side (NOT_FOUND is not a
    // server error, so the server span stays UNSET).
    let url = format!("http://{}/orders/404", chain.edge_addr);
    let output = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "404");
    let edge_404 = receiver.span_with("url.path", "/orders/404");
    let failed = receiver.trace(edge_404["trace_id"].as_str().unwrap(), 4);
    let client = hop(&failed, "web", "outbound");
    assert_eq!(client["attributes"]["rpc.grpc.status_code"], 5);
    assert_eq!(client["status"], "ERROR");
    assert_eq!(hop(&failed, "orders", "inbound")["status"], "UNSET");

    // A caller's traceparent is continued, its tracestate carried.
    get(
        &chain,
        "/orders/4",
        &[
            &format!("traceparent: 00-{TRACE}-{PARENT}-01"),
            "tracestate: vendor=abc",
        ],
    );
    let spans = receiver.trace(TRACE, 4);
    let edge = hop(&spans, "edge", "edge");
    assert_eq!(edge["parent_span_id"], PARENT);
    assert_eq!(edge["trace_state"], "vendor=abc");
    assert_eq!(
        hop(&spans, "orders", "inbound")["trace_state"],
        "vendor=abc"
    );

    // B3, single header and multi-header (64-bit trace ID), continues the trace.
    let b3_trace = "463ac35c9f6413ad48485a3953bb6124";
    get(
        &chain,
        "/orders/5",
        &[&format!("b3: {b3_trace}-{PARENT}-1")],
    );
    let spans = receiver.trace(b3_trace, 4);
    assert_eq!(hop(&spans, "edge", "edge")["parent_span_id"], PARENT);
    let headers = get(
        &chain,
        "/headers",
        &[
            "x-b3-traceid: 48485a3953bb6124",
            &format!("x-b3-spanid: {PARENT}"),
            "x-b3-sampled: 1",
        ],
    );
    let padded = "000000000000000048485a3953bb6124";
    let sent = headers["traceparent"].as_str().unwrap();
    assert!(sent.starts_with(&format!("00-{padded}-")), "{headers}");
    assert!(headers.get("x-b3-traceid").is_none(), "{headers}");
    let spans = receiver.trace(padded, 2);
    assert_eq!(hop(&spans, "edge", "edge")["parent_span_id"], PARENT);
    // The app's traceparent names web's inbound span as the parent.
    assert_eq!(
        &sent[36..52],
        hop(&spans, "web", "inbound")["span_id"].as_str().unwrap()
    );

    // Sampling 0: no spans, but the context still reaches the app ...
    let mut edge_config = edge_yaml(
        chain.web.listener("inbound", None),
        &format!(
            "{}{}",
            chain.edge_identity,
            tracing_yaml(&receiver, false, 0.0)
        ),
    );
    reload(&chain.edge, &edge_config);
    let headers = get(&chain, "/headers", &[]);
    let sent = headers["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-") && sent.ends_with("-00"),
        "{headers}"
    );
    let unsampled = sent[3..35].to_string();
    // ... while a caller's sampled flag wins over the ratio.
    let honoured = "11111111111111111111111111111111";
    get(
        &chain,
        "/headers",
        &[&format!("traceparent: 00-{honoured}-{PARENT}-01")],
    );
    let spans = receiver.trace(honoured, 2);
    assert_eq!(hop(&spans, "edge", "edge")["parent_span_id"], PARENT);
    hop(&spans, "web", "inbound");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        receiver.spans().iter().all(|s| s["trace_id"] != unsampled),
        "an unsampled trace was exported"
    );

    // Tracing off: traceparent passes through unchanged.
    edge_config = edge_yaml(chain.web.listener("inbound", None), &chain.edge_identity);
    reload(&chain.edge, &edge_config);
    let passed = format!("00-{TRACE}-{PARENT}-00");
    let headers = get(&chain, "/headers", &[&format!("traceparent: {passed}")]);
    // web's inbound (tracing on, not sampled) names its own span as the parent.
    let sent = headers["traceparent"].as_str().unwrap();
    assert!(sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-00"));
}

#[test]
fn a_missing_collector_never_fails_a_request() {
    let mut receiver = Receiver::start();
    let (_app, app) = crate::rest_app();
    // One sidecar exports over gRPC, the other over HTTP.
    let sidecars = [
        crate::inbound_sidecar(app, &tracing_yaml(&receiver, false, 1.0)),
        crate::inbound_sidecar(app, &tracing_yaml(&receiver, true, 1.0)),
    ];
    let request = |sidecar: &Sidecar| {
        let url = format!("http://{}/headers", sidecar.listener("inbound", None));
        json(&curl(&["--fail-with-body", &url]))
    };
    for sidecar in &sidecars {
        request(sidecar);
    }
    let ok = "mesh_trace_exports_total{result=\"ok\"}";
    for sidecar in &sidecars {
        wait_until(Duration::from_secs(10), "an export", || {
            sidecar.metric(ok) >= 1.0
        });
    }
    let exported = receiver.spans().len();
    assert!(exported >= 2, "{:?}", receiver.spans());

    // The collector goes away: requests still succeed; exports fail and
    // their spans are counted as dropped.
    receiver.proc.signal("KILL");
    assert!(receiver.proc.wait_exit(Duration::from_secs(5)).is_some());
    for _ in 0..10 {
        for sidecar in &sidecars {
            let headers = request(sidecar);
            assert!(headers["traceparent"].is_string(), "{headers}");
        }
    }
    let failed = "mesh_trace_exports_total{result=\"failed\"}";
    for sidecar in &sidecars {
        wait_until(Duration::from_secs(10), "a failed export", || {
            sidecar.metric(failed) >= 1.0 && sidecar.metric("mesh_trace_spans_dropped_total") >= 1.0
        });
    }
}
