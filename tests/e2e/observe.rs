//! Observing the mesh with `mesh-ctl` against real proxies: `status`,
//! `endpoints`, `routes`, `tap`, `check` and `explain` (their `-o json`
//! output), proxies found from an inventory file and a DNS SRV name
//! (dnsmasq on a loopback port), and a tap that reads nothing while
//! traffic flows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, curl, http, wait_until, Proc, Sidecar};
use serde_json::Value;

use crate::discovery::Dns;
use crate::{refusing_port, rest_app};

/// Runs mesh-ctl; its exit success and stdout parsed as JSON.
fn ctl(args: &[&str]) -> (bool, Value) {
    let output = Command::new(bin("mesh-ctl"))
        .args(args)
        .output()
        .expect("run mesh-ctl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "mesh-ctl {args:?}: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), value)
}

/// A sidecar: inbound in front of `app`, and `orders` (also `app`)
/// behind the forward proxy as orders.mesh.local.
fn sidecar_yaml(app: SocketAddr) -> String {
    format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\nreload: {{ interval: 100ms }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\noutbound:\n  proxy: 127.0.0.1:0\n  upstreams:\n    orders:\n      hosts: [orders.mesh.local]\n      discovery: {{ endpoints: [{app}] }}\n"
    )
}

/// An edge whose first route needs a header, the second refuses
/// loopback clients, and the last takes everything.
fn edge_yaml(app: SocketAddr) -> String {
    format!(
        r#"service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners: [{{ listen: 127.0.0.1:0 }}]
  upstreams:
    app: {{ discovery: {{ endpoints: [{app}] }} }}
    v2: {{ discovery: {{ endpoints: [{app}] }} }}
  routes:
    - name: api-v2
      match: {{ host: api.example.test, path_prefix: /api, headers: {{ x-api-version: "2" }} }}
      rewrite: {{ prefix: /echo-request }}
      to: v2
    - name: admin
      match: {{ path_prefix: /admin }}
      deny: [127.0.0.0/8]
      to: app
    - name: default
      match: {{ path_prefix: / }}
      to: app
"#
    )
}

fn admin(sidecar: &Sidecar) -> String {
    sidecar.admin.to_string()
}

#[test]
fn status_endpoints_and_routes_of_a_sidecar_and_an_edge() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&sidecar_yaml(app));
    let edge = Sidecar::start(&edge_yaml(app));
    let (s, e) = (admin(&sidecar), admin(&edge));

    let (ok, status) = ctl(&["status", "--admin", &s, "--admin", &e, "-o", "json"]);
    assert!(ok, "{status}");
    assert_eq!(status[0]["admin"], s.as_str());
    assert_eq!(status[0]["mode"], "sidecar");
    assert_eq!(status[0]["service"], "web");
    assert_eq!(status[0]["ready"], true);
    assert_eq!(status[0]["generation"], 1);
    assert!(status[0]["uptime_seconds"].as_u64().is_some());
    assert!(status[0]["identity"].is_null(), "no identity: {status}");
    let hash = status[0]["config_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(status[1]["mode"], "edge");
    assert_eq!(status[1]["service"], "edge");
    assert_ne!(status[1]["config_hash"], status[0]["config_hash"]);

    // A reload of the same content: a new generation, the same hash.
    let (code, body) = http(sidecar.admin, "POST", "/config/reload");
    assert_eq!(code, 200, "{body}");
    let (_, again) = ctl(&["status", "--admin", &s, "-o", "json"]);
    assert_eq!(again[0]["generation"], 2);
    assert_eq!(again[0]["config_hash"], hash.as_str());

    let (ok, endpoints) = ctl(&["endpoints", "orders", "--admin", &s, "-o", "json"]);
    assert!(ok, "{endpoints}");
    assert_eq!(endpoints[0]["cluster"], "orders");
    let first = &endpoints[0]["endpoints"][0];
    assert_eq!(first["addr"], app.to_string());
    assert_eq!(first["state"], "healthy");
    assert_eq!(first["weight"], 1);
    assert!(first["latency_ms"].is_number());
    let (ok, _) = ctl(&["endpoints", "nothing", "--admin", &s, "-o", "json"]);
    assert!(!ok, "no proxy has that upstream");

    let (ok, routes) = ctl(&["routes", "--admin", &s, "--admin", &e, "-o", "json"]);
    assert!(ok, "{routes}");
    let sidecar_routes = routes[0]["routes"].as_array().unwrap();
    assert_eq!(routes[0]["mode"], "sidecar");
    assert_eq!(sidecar_routes[0]["name"], "inbound");
    let proxy = sidecar_routes
        .iter()
        .find(|r| r["name"] == "proxy")
        .unwrap();
    let proxy_match = proxy["match"].as_str().unwrap();
    assert!(proxy_match.contains("orders.mesh.local"), "{proxy_match}");
    let inbound = sidecar.listener("inbound", None);
    assert_eq!(sidecar_routes[0]["match"], format!("* on {inbound}"));
    assert_eq!(proxy["action"], "to orders");
    assert_eq!(routes[1]["mode"], "edge");
    let edge_routes: Vec<&str> = routes[1]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(edge_routes, ["api-v2", "admin", "default"]);
    assert_eq!(
        routes[1]["routes"][0]["match"],
        "host=api.example.test path_prefix=/api header:x-api-version=2"
    );
    assert_eq!(routes[1]["routes"][0]["action"], "to v2");
}

#[test]
fn explain_names_route_cluster_and_normalised_path() {
    let (_app, app) = rest_app();
    let edge = Sidecar::start(&edge_yaml(app));
    let e = admin(&edge);
    let explain = |args: &[&str]| {
        let mut all = vec!["explain", "--admin", e.as_str(), "-o", "json"];
        all.extend_from_slice(args);
        let (ok, answer) = ctl(&all);
        assert!(ok, "{answer}");
        answer
    };

    let matched = explain(&[
        "GET",
        "https://api.example.test/api/orders/3",
        "-H",
        "x-api-version: 2",
    ]);
    assert_eq!(matched["listener"], "edge:0");
    assert_eq!(matched["route"], "api-v2");
    assert_eq!(matched["cluster"], "v2");
    assert_eq!(matched["upstream_path"], "/echo-request/orders/3");
    assert!(matched.get("skipped_routes").is_none(), "{matched}");
    assert_eq!(matched["endpoints"][0]["addr"], app.to_string());
    assert_eq!(matched["preferred_endpoint"], app.to_string());

    let fell_through = explain(&["GET", "https://api.example.test/api/orders/3"]);
    assert_eq!(fell_through["route"], "default");
    assert_eq!(fell_through["cluster"], "app");
    assert_eq!(
        fell_through["skipped_routes"],
        serde_json::json!([
            { "name": "api-v2", "reason": "header x-api-version" },
            { "name": "admin", "reason": "path" },
        ])
    );

    let dotted = explain(&["GET", "http://www.example.test/a/../admin"]);
    assert_eq!(dotted["normalized_path"], "/admin");
    assert_eq!(dotted["route"], "admin");
    assert_eq!(dotted["cluster"], "app");
    let refused = explain(&[
        "GET",
        "http://www.example.test/a/../admin",
        "--client",
        "127.0.0.1",
    ]);
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["error"], "forbidden");
    let access = refused["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "route_access")
        .unwrap();
    assert_eq!(access["outcome"], "deny");
    assert!(
        refused.get("cluster").is_none(),
        "nothing routed: {refused}"
    );

    let bad = explain(&["GET", "http://www.example.test/a%00b"]);
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["error"], "bad_request");
    assert_eq!(bad["policies"][0]["policy"], "hygiene");
    assert_eq!(bad["policies"][0]["outcome"], "reject");

    // A sidecar: by authority to an upstream, else inbound.
    let sidecar = Sidecar::start(&sidecar_yaml(app));
    let s = admin(&sidecar);
    let (ok, outbound) = ctl(&[
        "explain",
        "--admin",
        &s,
        "-o",
        "json",
        "POST",
        "http://orders.mesh.local/orders/1",
    ]);
    assert!(ok, "{outbound}");
    assert_eq!(outbound["listener"], "proxy");
    assert_eq!(outbound["direction"], "outbound");
    assert_eq!(outbound["cluster"], "orders");
    let (_, inbound) = ctl(&[
        "explain",
        "--admin",
        &s,
        "-o",
        "json",
        "GET",
        "web.test/x//y",
    ]);
    assert_eq!(inbound["listener"], "inbound");
    assert_eq!(inbound["normalized_path"], "/x/y");
    assert_eq!(inbound["cluster"], "inbound");
}

#[test]
fn tap_streams_the_matching_requests_only() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&sidecar_yaml(app));
    let inbound = sidecar.listener("inbound", None);
    let mut child = Command::new(bin("mesh-ctl"))
        .args(["tap", "--admin", &admin(&sidecar), "-o", "json"])
        .args(["--limit", "3", "--path-prefix", "/headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mesh-ctl tap");
    let mut stdout = child.stdout.take().unwrap();
    let mut tap = Proc::adopt("mesh-ctl tap", child);
    // The tap may connect after the first requests: send until it has three.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut round = 0;
    let exit = loop {
        round += 1;
        for path in ["/stats".to_string(), format!("/headers?round={round}")] {
            let out = curl(&[&format!("http://{inbound}{path}"), "-o", "/dev/null"]);
            assert!(out.status.success());
        }
        if let Some(exit) = tap.wait_exit(Duration::from_millis(50)) {
            break exit;
        }
        assert!(Instant::now() < deadline, "the tap did not see 3 requests");
    };
    assert!(exit.success(), "{:?}", tap.log());
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    for event in &events {
        assert!(event["path"]
            .as_str()
            .unwrap()
            .starts_with("/headers?round="));
        assert_eq!(event["method"], "GET");
        assert_eq!(event["status"], 200);
        assert_eq!(event["direction"], "inbound");
        assert_eq!(event["listener"], "inbound");
        assert_eq!(event["endpoint"], app.to_string());
        assert_eq!(event["attempts"], 1);
        assert!(event["duration_ms"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn a_tap_that_reads_nothing_does_not_hold_requests_back() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&sidecar_yaml(app));
    let inbound = sidecar.listener("inbound", None);
    // A tap client that sends its request and then reads nothing for a while.
    let mut tap = TcpStream::connect(sidecar.admin).unwrap();
    write!(
        tap,
        "GET /tap?path_prefix=/headers&rate=10 HTTP/1.1\r\nHost: admin\r\n\r\n"
    )
    .unwrap();
    // The response head says the tap is subscribed; read it byte by byte, then stop reading.
    tap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tap.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let url = format!("http://{inbound}/headers");
    let mut args = vec!["-w", "%{http_code}\\n"];
    for _ in 0..200 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&args);
    assert!(out.status.success());
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().count(), 200);
    assert!(codes.lines().all(|c| c == "200"), "{codes}");

    // Now read: every request is an event or counted as skipped.
    tap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(tap);
    let (mut events, mut skipped) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = String::new();
    while events + skipped < 200 && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let Ok(value) = serde_json::from_str::<Value>(line.trim()) else {
            continue; // the response head and chunk sizes
        };
        if let Some(n) = value["skipped"].as_u64() {
            skipped += n;
        } else if value["path"] == "/headers" {
            events += 1;
        }
    }
    assert!(skipped > 0, "over the tap's rate: some were skipped");
    assert!(events > 0);
    assert_eq!(events + skipped, 200, "{events} events, {skipped} skipped");
}

#[test]
fn check_passes_then_fails_on_a_bad_reload_and_an_unreachable_admin() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&sidecar_yaml(app));
    let s = admin(&sidecar);
    let (ok, report) = ctl(&["check", "--admin", &s, "-o", "json"]);
    assert!(ok, "{report}");
    assert_eq!(report[0]["ok"], true);
    let checks: Vec<&str> = report[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["admin", "config", "clock", "certs"]);

    sidecar.write_config("service: web\ninbound: { listen: nope }\n");
    wait_until(Duration::from_secs(10), "the failed reload", || {
        sidecar.admin_json("/config")["last_error"].is_array()
    });
    let gone = format!("127.0.0.1:{}", refusing_port());
    let (ok, report) = ctl(&["check", "--admin", &s, "--admin", &gone, "-o", "json"]);
    assert!(!ok, "{report}");
    assert_eq!(report[0]["ok"], false);
    let config = report[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "config")
        .unwrap();
    assert_eq!(config["ok"], false);
    assert!(config["detail"]
        .as_str()
        .unwrap()
        .contains("last reload failed"));
    assert_eq!(report[1]["admin"], gone.as_str());
    assert_eq!(report[1]["checks"][0]["check"], "admin");
    assert_eq!(report[1]["checks"][0]["ok"], false);
}

#[test]
fn proxies_come_from_an_inventory_file_and_a_dns_srv_name() {
    let (_app, app) = rest_app();
    let web = Sidecar::start(&sidecar_yaml(app));
    let edge = Sidecar::start(&edge_yaml(app));
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory");
    std::fs::write(
        &inventory,
        format!("# name  admin\nweb  {}\nedge {}\n", web.admin, edge.admin),
    )
    .unwrap();
    let (ok, status) = ctl(&[
        "status",
        "--inventory",
        inventory.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(ok, "{status}");
    assert_eq!(status[0]["admin"], admin(&web).as_str());
    assert_eq!(status[0]["service"], "web");
    assert_eq!(status[1]["service"], "edge");

    let srv = |sidecar: &Sidecar, target: &str, priority: u16| {
        format!(
            "--srv-host=_admin._tcp.mesh.test,{target},{},{priority},10",
            sidecar.admin.port()
        )
    };
    let dns = Dns::start(
        "127.0.0.1 web.mesh.test\n127.0.0.1 edge.mesh.test\n",
        &[
            srv(&web, "web.mesh.test", 1),
            srv(&edge, "edge.mesh.test", 2),
        ],
    );
    let server = format!("127.0.0.1:{}", dns.port);
    let (ok, routes) = ctl(&[
        "routes",
        "--srv",
        "_admin._tcp.mesh.test",
        "--dns",
        &server,
        "-o",
        "json",
    ]);
    assert!(ok, "{routes}");
    assert_eq!(routes[0]["admin"], admin(&web).as_str());
    assert_eq!(routes[0]["mode"], "sidecar");
    assert_eq!(routes[1]["admin"], admin(&edge).as_str());
    assert_eq!(routes[1]["mode"], "edge");

    let unknown = Command::new(bin("mesh-ctl"))
        .args([
            "status",
            "--srv",
            "_nothing._tcp.mesh.test",
            "--dns",
            &server,
        ])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("_nothing._tcp.mesh.test"));
}

#[test]
fn identity_shows_in_status_and_certs_and_check_warns_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, web) = (dir.path().join("ca"), dir.path().join("web"));
    let run = |args: &[&str]| {
        let output = Command::new(bin("mesh-ctl")).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let (ca_dir, web_dir) = (ca.to_str().unwrap(), web.to_str().unwrap());
    run(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        ca_dir,
    ]);
    run(&[
        "ca",
        "issue",
        "--service",
        "web",
        "--ttl",
        "1h",
        "--ca",
        ca_dir,
        "--out",
        web_dir,
    ]);
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "{}identity:\n  trust_domain: mesh.local\n  cert: {web_dir}/cert.pem\n  key: {web_dir}/key.pem\n  bundle: {web_dir}/bundle.pem\n",
        sidecar_yaml(app)
    ));
    let s = admin(&sidecar);

    let (ok, status) = ctl(&["status", "--admin", &s, "-o", "json"]);
    assert!(ok, "{status}");
    assert_eq!(status[0]["identity"], "spiffe://mesh.local/svc/web");
    let left = status[0]["cert_expires_in_seconds"].as_i64().unwrap();
    assert!((1..=3600).contains(&left), "{left}");

    let (ok, certs) = ctl(&["certs", "--admin", &s, "-o", "json"]);
    assert!(ok, "{certs}");
    assert_eq!(certs[0]["cert"]["identity"], "spiffe://mesh.local/svc/web");

    let (ok, report) = ctl(&["check", "--admin", &s, "-o", "json"]);
    assert!(!ok, "1h left is within the default 24h: {report}");
    let certs_check = report[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "certs")
        .unwrap();
    assert_eq!(certs_check["ok"], false);
    let (ok, report) = ctl(&["check", "--admin", &s, "--warn-expiry", "30m", "-o", "json"]);
    assert!(ok, "{report}");
}
