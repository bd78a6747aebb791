//! `/metrics` as an operator's Prometheus reads it: the exposition parses
//! with the Python Prometheus client (classic and strict OpenMetrics), and
//! its series move as requests, retries, gRPC statuses and policy denials
//! happen; endpoint state and process metrics are there and plausible.

use std::net::SocketAddr;

use mesh_tests::{curl, http, python, service, Sidecar};
use serde_json::{Map, Value};

use crate::{refusing_port, rest_app};

/// One scrape, parsed by `tests/py/metrics_check.py`.
struct Scrape {
    families: Map<String, Value>,
    samples: Vec<(String, Map<String, Value>, f64)>,
}

impl Scrape {
    fn take(sidecar: &Sidecar) -> Scrape {
        let parsed = python("metrics_check.py", &[&sidecar.admin.to_string()]);
        assert!(parsed.get("error").is_none(), "{parsed}");
        assert!(
            parsed["content_type"]
                .as_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{}",
            parsed["content_type"]
        );
        assert!(parsed["classic_families"].as_u64().unwrap() > 0);
        let samples = parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_str().unwrap().to_string(),
                    s[1].as_object().unwrap().clone(),
                    s[2].as_f64().unwrap(),
                )
            })
            .collect();
        Scrape {
            families: parsed["families"].as_object().unwrap().clone(),
            samples,
        }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    /// The one sample named `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    fn family(&self, name: &str) -> &str {
        self.families
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no family {name}: {:?}", self.families.keys()))
    }
}

/// `n` GETs of `url`; each answer's status code.
fn get(url: &str, n: usize) -> Vec<String> {
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}\\n"];
    for _ in 1..n {
        args.extend(["-o", "/dev/null", url]);
    }
    args.push(url);
    let out = curl(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_parse_and_move_with_traffic_retries_and_denials() {
    let (_app, app) = rest_app();
    let (_grpc, grpc_app) = service("demo-grpc", &[]);
    let dead: SocketAddr = format!("127.0.0.1:{}", refusing_port()).parse().unwrap();
    let sidecar = Sidecar::start(&format!(
        "service: shop
admin: {{ listen: 127.0.0.1:0 }}
inbound:
  listen: 127.0.0.1:0
  app: {app}
  authz:
    - allow: [\"*\"]
      paths: [/healthz]
outbound:
  upstreams:
    web:
      listen: 127.0.0.1:0
      balance: round_robin
      discovery: {{ endpoints: [{dead}, {app}] }}
    orders:
      listen: 127.0.0.1:0
      protocol: grpc
      discovery: {{ endpoints: [{grpc_app}] }}
"
    ));
    let web = sidecar.listener("outbound", Some("web"));
    let orders = sidecar.listener("outbound", Some("orders"));
    let inbound = sidecar.listener("inbound", None);

    let before = Scrape::take(&sidecar);
    assert_eq!(before.family("process_cpu_seconds"), "counter");
    let outbound_ok = [
        ("direction", "outbound"),
        ("upstream", "web"),
        ("status", "200"),
        ("status_class", "2xx"),
    ];
    let retries = [("upstream", "web"), ("decision", "connect_failure")];
    let authz = [
        ("direction", "inbound"),
        ("policy", "authz"),
        ("reason", "forbidden"),
    ];
    assert_eq!(before.sum("mesh_requests_total", &outbound_ok), 0.0);

    // Outbound: round robin sends half the first attempts to the dead
    // endpoint; connect failures are retried on the live one.
    let codes = get(&format!("http://{web}/healthz"), 10);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    let codes = get(&format!("http://{web}/status/503"), 3);
    assert!(codes.iter().all(|c| c == "503"), "{codes:?}");
    // Inbound: authz lets /healthz through and refuses the rest; a NUL in
    // the path is refused by hygiene before authz.
    assert_eq!(get(&format!("http://{inbound}/healthz"), 2), ["200", "200"]);
    assert_eq!(get(&format!("http://{inbound}/headers"), 3), ["403"; 3]);
    let nul = curl(&[
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{inbound}/a%00b"),
    ]);
    assert_eq!(String::from_utf8_lossy(&nul.stdout), "400");
    // gRPC: an OK call and a NOT_FOUND one (status 5 in trailers).
    let target = orders.to_string();
    let found = python("grpc_orders.py", &[&target, "unary", "3"]);
    assert_eq!(found["order"]["id"], "3", "{found}");
    let missing = python("grpc_orders.py", &[&target, "unary", "42"]);
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");

    let after = Scrape::take(&sidecar);
    assert_eq!(after.family("mesh_requests"), "counter");
    assert_eq!(after.family("mesh_request_duration_seconds"), "histogram");
    assert_eq!(after.family("mesh_policy_denials"), "counter");
    // Requests by direction, upstream, status and class.
    assert_eq!(after.sum("mesh_requests_total", &outbound_ok), 10.0);
    assert_eq!(
        after.sum(
            "mesh_requests_total",
            &[
                ("upstream", "web"),
                ("status", "503"),
                ("status_class", "5xx")
            ]
        ),
        3.0
    );
    assert_eq!(
        after.value(
            "mesh_requests_total",
            &[
                ("direction", "inbound"),
                ("upstream", "inbound"),
                ("caller", "unknown"),
                ("status", "200"),
                ("status_class", "2xx"),
            ]
        ),
        Some(2.0),
        "inbound requests name their caller"
    );
    assert_eq!(
        after.sum(
            "mesh_requests_total",
            &[
                ("direction", "inbound"),
                ("status", "403"),
                ("status_class", "4xx")
            ]
        ),
        3.0
    );
    for (code, calls) in [("0", 1.0), ("5", 1.0)] {
        assert_eq!(
            after.sum(
                "mesh_requests_total",
                &[("upstream", "orders"), ("grpc_status", code)]
            ),
            calls,
            "grpc_status {code}"
        );
    }
    assert_eq!(
        after.sum(
            "mesh_request_duration_seconds_count",
            &[
                ("direction", "outbound"),
                ("upstream", "web"),
                ("status_class", "2xx")
            ]
        ),
        10.0
    );
    // Retries and denials, by reason.
    assert!(
        after.sum("mesh_resilience_total", &retries) >= 1.0,
        "connect failures were retried"
    );
    assert_eq!(after.sum("mesh_policy_denials_total", &authz), 3.0);
    assert_eq!(
        after.sum(
            "mesh_policy_denials_total",
            &[("policy", "hygiene"), ("reason", "nul_in_path")]
        ),
        1.0
    );

    // Endpoint state, read at scrape time: the drained endpoint says so.
    let drained = format!("/clusters/web/endpoints/{dead}/maintenance");
    assert_eq!(http(sidecar.admin, "POST", &drained).0, 200);
    let now = Scrape::take(&sidecar);
    assert_eq!(now.family("mesh_endpoint_state"), "gauge");
    let state = |endpoint: &SocketAddr, state: &str| {
        now.value(
            "mesh_endpoint_state",
            &[
                ("upstream", "web"),
                ("endpoint", &endpoint.to_string()),
                ("state", state),
            ],
        )
    };
    assert_eq!(state(&dead, "maintenance"), Some(1.0));
    assert_eq!(state(&dead, "healthy"), Some(0.0));
    assert_eq!(state(&app, "healthy"), Some(1.0));
    assert_eq!(state(&app, "ejected"), Some(0.0));
    let ewma = now
        .value(
            "mesh_endpoint_latency_ewma_seconds",
            &[("upstream", "web"), ("endpoint", &app.to_string())],
        )
        .unwrap();
    assert!(ewma > 0.0 && ewma < 1.0, "latency estimate {ewma}");
    assert_eq!(
        now.value(
            "mesh_endpoint_active_requests",
            &[("upstream", "web"), ("endpoint", &app.to_string())]
        ),
        Some(0.0)
    );
    assert_eq!(
        now.value("mesh_upstream_circuit_open", &[("upstream", "web")]),
        Some(0.0)
    );

    // Process metrics, from /proc.
    let rss = now.value("process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 1024.0 * 1024.0, "resident memory {rss}");
    let fds = now.value("process_open_fds", &[]).unwrap();
    assert!(fds > 3.0, "open fds {fds}");
    assert!(now.value("process_max_fds", &[]).unwrap() >= fds);
    assert!(now.value("process_cpu_seconds_total", &[]).unwrap() > 0.0);
    let start = now.value("process_start_time_seconds", &[]).unwrap();
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= unix_now + 1.0 && start > unix_now - 600.0,
        "start time {start}, now {unix_now}"
    );
}

#[test]
fn edge_metrics_show_certificate_expiry_and_route_denials() {
    let (_app, app) = rest_app();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=shop.example.test"])
        .args(["-addext", "subjectAltName=DNS:shop.example.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let sidecar = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
      tls:
        certs:
          - {{ hosts: [shop.example.test], cert: {}, key: {} }}
  routes:
    - name: private
      match: {{ path_prefix: /private }}
      deny: [127.0.0.0/8]
      to: app
    - name: shop
      match: {{ path_prefix: /healthz }}
      to: app
  upstreams:
    app:
      discovery: {{ endpoints: [{app}] }}
",
        cert.display(),
        key.display()
    ));
    let addr = sidecar.listener("edge", None);
    let resolve = format!("shop.example.test:{}:127.0.0.1", addr.port());
    let base = format!("https://shop.example.test:{}", addr.port());
    let out = curl(&[
        "-k",
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\\n",
        &format!("{base}/healthz"),
        "-o",
        "/dev/null",
        &format!("{base}/private"),
        "-o",
        "/dev/null",
        &format!("{base}/elsewhere"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n403\n404\n");

    let scrape = Scrape::take(&sidecar);
    let expiry = scrape
        .value(
            "mesh_edge_cert_expiry_seconds",
            &[("cert", &cert.display().to_string())],
        )
        .unwrap();
    let thirty_days = 30.0 * 86_400.0;
    assert!(
        expiry <= thirty_days && expiry > thirty_days - 3600.0,
        "expiry {expiry}"
    );
    assert_eq!(
        scrape.sum(
            "mesh_requests_total",
            &[
                ("direction", "edge"),
                ("route", "shop"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    // Denials by route; a request no route matched has no route label.
    assert_eq!(
        scrape.value(
            "mesh_policy_denials_total",
            &[
                ("direction", "edge"),
                ("route", "private"),
                ("policy", "edge_route"),
                ("reason", "client_address")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            "mesh_policy_denials_total",
            &[
                ("direction", "edge"),
                ("policy", "edge_route"),
                ("reason", "no_route")
            ]
        ),
        Some(1.0)
    );
}
