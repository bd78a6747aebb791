//! Golden signals and the service graph: `mesh-ctl stat`, `graph` and
//! `top` (in tmux) against a two-proxy chain, and the dashboard page
//! (the admin API's `/dashboard` and `mesh-ctl dashboard`) rendered by
//! headless Chromium, its numbers checked against `/metrics`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, curl, http, Proc, Sidecar};
use serde_json::Value;

use crate::rest_app;

/// web's sidecar (outbound upstream `orders`) → orders' sidecar (inbound) → the app.
struct Chain {
    _app: Proc,
    web: Sidecar,
    orders: Sidecar,
    /// web's outbound port for `orders`.
    port: SocketAddr,
}

impl Chain {
    fn start() -> Chain {
        let (app_proc, app) = rest_app();
        let orders = Sidecar::start(&format!(
            "service: orders\nadmin: {{ listen: 127.0.0.1:0 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n"
        ));
        let inbound = orders.listener("inbound", None);
        let web = Sidecar::start(&format!(
            "service: web\nadmin: {{ listen: 127.0.0.1:0, dashboard: true }}\noutbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{inbound}] }}\n"
        ));
        let port = web.listener("outbound", Some("orders"));
        Chain {
            _app: app_proc,
            web,
            orders,
            port,
        }
    }

    fn admins(&self) -> Vec<String> {
        vec![self.web.admin.to_string(), self.orders.admin.to_string()]
    }

    /// `ok` requests answered 200 and `failed` answered 500, interleaved
    /// (never five 5xx in a row), through web's outbound port; one curl.
    fn send(&self, ok: usize, failed: usize) {
        assert!(
            failed * 5 <= ok + failed,
            "at most one request in five fails"
        );
        let urls: Vec<String> = (0..ok + failed)
            .map(|i| {
                let code = if i % 5 == 4 && i / 5 < failed {
                    500
                } else {
                    200
                };
                format!("http://{}/status/{code}", self.port)
            })
            .collect();
        // One connection; every body discarded, every status printed.
        let mut args = vec!["-w", "%{http_code}\\n"];
        for url in &urls {
            args.extend(["-o", "/dev/null", url.as_str()]);
        }
        let out = curl(&args);
        let codes = String::from_utf8_lossy(&out.stdout);
        assert_eq!(codes.lines().filter(|c| *c == "200").count(), ok, "{codes}");
        assert_eq!(
            codes.lines().filter(|c| *c == "500").count(),
            failed,
            "{codes}"
        );
    }
}

fn mesh_ctl(args: &[&str]) -> Output {
    Command::new(bin("mesh-ctl"))
        .args(args)
        .output()
        .expect("run mesh-ctl")
}

fn with_admins<'a>(args: &[&'a str], admins: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for admin in admins {
        all.extend(["--admin", admin.as_str()]);
    }
    all
}

/// Sum of `mesh_requests_total` series with every one of `labels`.
fn requests_in_metrics(metrics: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("mesh_requests_total{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| {
            l.rsplit_once('}')?
                .1
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

fn row<'a>(rows: &'a Value, service: &str, direction: &str, upstream: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["service"] == service && r["direction"] == direction && r["upstream"] == upstream
        })
        .unwrap_or_else(|| panic!("no {service} {direction} {upstream} row in {rows:#}"))
}

#[test]
fn stat_and_graph_show_rates_success_and_the_edge() {
    let chain = Chain::start();
    let admins = chain.admins();
    let args = with_admins(&["stat", "-o", "json", "--window", "2s"], &admins);
    let stat = Command::new(bin("mesh-ctl"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first scrape is mesh-ctl's first act; traffic comes after it.
    std::thread::sleep(Duration::from_millis(400));
    chain.send(16, 4);
    let out = stat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (service, direction, upstream) in [
        ("web", "outbound", "orders"),
        ("orders", "inbound", "inbound"),
    ] {
        let r = row(&rows, service, direction, upstream);
        assert_eq!(r["requests"], 20, "{r}");
        let rps = r["rps"].as_f64().unwrap();
        assert!(rps > 5.0 && rps < 20.0, "20 requests in about 2 s: {r}");
        assert_eq!(r["success_rate"].as_f64(), Some(0.8), "{r}");
        let p = |q: &str| r[q].as_f64().unwrap_or_else(|| panic!("{q} in {r}"));
        assert!(
            p("p50_ms") > 0.0 && p("p50_ms") <= p("p95_ms") && p("p95_ms") <= p("p99_ms"),
            "{r}"
        );
        assert!(p("p99_ms") < 10_000.0, "{r}");
    }
    let web = chain.web.metrics();
    let total = requests_in_metrics(&web, &["direction=\"outbound\"", "upstream=\"orders\""]);
    assert_eq!(
        row(&rows, "web", "outbound", "orders")["total"].as_f64(),
        Some(total)
    );

    let table = mesh_ctl(&with_admins(&["stat", "--window", "200ms"], &admins));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.starts_with("SERVICE"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("web") && l.contains("orders")),
        "{text}"
    );

    let dot = mesh_ctl(&with_admins(&["graph", "--format", "dot"], &admins));
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(
        dot.contains("\"web\" -> \"orders\" [label=\"20 requests, 80.00%\"]"),
        "{dot}"
    );
    let mermaid = mesh_ctl(&with_admins(&["graph", "--format", "mermaid"], &admins));
    let mermaid = String::from_utf8_lossy(&mermaid.stdout);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    // Nodes are sorted: n0 orders, n1 web.
    assert!(
        mermaid.contains("n0[\"orders\"]") && mermaid.contains("n1[\"web\"]"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("n1 -->|\"20 requests, 80.00%\"| n0"),
        "{mermaid}"
    );

    // Off a terminal, top prints one table per refresh.
    let plain = mesh_ctl(&with_admins(
        &["top", "--iterations", "2", "--interval", "200ms"],
        &admins,
    ));
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.status.success(), "{text}");
    assert_eq!(text.matches("mesh-ctl top:").count(), 2, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("web") && l.contains("orders")),
        "{text}"
    );

    // A proxy that cannot be read is a problem, not a crash.
    let bad = mesh_ctl(&["stat", "--window", "100ms", "--admin", "127.0.0.1:1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot reach admin API"));
}

/// A mesh CA with `web` and `orders` certificates (`mesh-ctl ca`); returns
/// its directory and the `identity:` section of a service.
fn pki() -> (tempfile::TempDir, impl Fn(&str) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ca = root.join("ca").display().to_string();
    let run = |args: &[&str]| {
        let out = mesh_ctl(args);
        assert!(out.status.success(), "mesh-ctl {args:?}: {out:?}");
    };
    run(&["ca", "init", "--trust-domain", "mesh.local", "--out", &ca]);
    for service in ["web", "orders"] {
        let out = root.join(service).display().to_string();
        run(&[
            "ca",
            "issue",
            "--service",
            service,
            "--ca",
            &ca,
            "--out",
            &out,
        ]);
    }
    let identity = move |service: &str| {
        let certs = root.join(service).display().to_string();
        format!(
            "identity: {{ trust_domain: mesh.local, cert: {certs}/cert.pem, key: {certs}/key.pem, bundle: {certs}/bundle.pem }}\n"
        )
    };
    (dir, identity)
}

#[test]
fn graph_names_callers_by_identity_and_counts_each_edge_once() {
    let (_pki, identity) = pki();
    let (_app, app) = rest_app();
    let orders = Sidecar::start(&format!(
        "service: orders\n{}admin: {{ listen: 127.0.0.1:0 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n",
        identity("orders")
    ));
    let inbound = orders.listener("inbound", None);
    // The upstream's name is not the service's: its identity names it.
    let web = Sidecar::start(&format!(
        "service: web\n{}admin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    orders-api:\n      listen: 127.0.0.1:0\n      identity: spiffe://mesh.local/svc/orders\n      discovery: {{ endpoints: [{inbound}] }}\n",
        identity("web")
    ));
    let port = web.listener("outbound", Some("orders-api"));
    let urls: Vec<String> = (0..6)
        .map(|_| format!("http://{port}/status/200"))
        .collect();
    let mut args = vec!["-w", "%{http_code}\\n"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let codes = String::from_utf8_lossy(&curl(&args).stdout).into_owned();
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), 6, "{codes}");

    let edge = "\"web\" -> \"orders\" [label=\"6 requests, 100.00%\"]";
    let (web, orders) = (web.admin.to_string(), orders.admin.to_string());
    for admins in [vec![web.clone()], vec![orders.clone()], vec![web, orders]] {
        let dot = mesh_ctl(&with_admins(&["graph"], &admins));
        let dot = String::from_utf8_lossy(&dot.stdout);
        assert!(dot.contains(edge), "{admins:?}: {dot}");
        assert_eq!(dot.matches(" -> ").count(), 1, "{admins:?}: {dot}");
    }
}

/// A tmux server of its own (its socket named for this process), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- tmux screen ---\n{}", self.screen());
        }
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_the_busiest_routes_and_quits_on_q() {
    let chain = Chain::start();
    let admins = chain.admins();
    let tmux = Tmux {
        socket: format!("mesh-top-{}", std::process::id()),
    };
    let command = format!(
        "{} top --duration 30s --admin {} --admin {}",
        bin("mesh-ctl").display(),
        admins[0],
        admins[1]
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let deadline = Instant::now() + Duration::from_secs(12);
    let busy_line = loop {
        chain.send(10, 0);
        let screen = tmux.screen();
        // SERVICE DIRECTION ROUTE UPSTREAM RPS SUCCESS P50 P99
        let busy = screen.lines().find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() >= 8
                && cells[0] == "web"
                && cells[1] == "outbound"
                && cells[3] == "orders"
                && cells[4].parse::<f64>().is_ok_and(|rps| rps > 0.0)
        });
        if let Some(line) = busy {
            break (line.to_string(), screen);
        }
        assert!(
            Instant::now() < deadline,
            "no busy route on screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let (line, screen) = busy_line;
    assert!(screen.contains("mesh-ctl top"), "{screen}");
    assert!(
        screen.contains("SERVICE") && screen.contains("RPS"),
        "{screen}"
    );
    assert!(line.contains("100.00%"), "{line}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("orders") && l.contains("inbound")),
        "{screen}"
    );

    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.run(&["has-session", "-t", "top"]).status.success() {
        assert!(Instant::now() < deadline, "q did not quit top");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every start tag `<tag ...>` of the DOM with `class="class"`.
fn tags<'a>(dom: &'a str, tag: &str, class: &str) -> Vec<&'a str> {
    let open = format!("<{tag} class=\"{class}\"");
    dom.match_indices(&open)
        .filter_map(|(at, _)| dom[at..].split_once('>').map(|(t, _)| t))
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split_once('"').map(|(v, _)| v)
}

/// The table row of the page for `service`, `direction`, `upstream`.
fn signal_row<'a>(dom: &'a str, service: &str, direction: &str, upstream: &str) -> &'a str {
    tags(dom, "tr", "signal")
        .into_iter()
        .find(|t| {
            attr(t, "data-service") == Some(service)
                && attr(t, "data-direction") == Some(direction)
                && attr(t, "data-upstream") == Some(upstream)
        })
        .unwrap_or_else(|| panic!("no {service} {direction} {upstream} row in {dom}"))
}

fn number(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {tag}"))
}

#[test]
fn dashboard_page_renders_the_graph_and_the_numbers_of_metrics() {
    let chain = Chain::start();
    chain.send(10, 2);

    // The admin API serves it only when asked to.
    let (status, _) = http(chain.orders.admin, "GET", "/dashboard");
    assert_eq!(status, 404, "admin.dashboard is off by default");
    let (status, page) = http(chain.web.admin, "GET", "/dashboard");
    assert_eq!(status, 200);
    assert!(page.contains("<svg id=\"graph\""));

    let dom = dump_dom_of(&format!("http://{}/dashboard", chain.web.admin));
    let metrics = chain.web.metrics();
    let nodes: Vec<&str> = tags(&dom, "g", "node")
        .into_iter()
        .filter_map(|t| attr(t, "data-service"))
        .collect();
    assert!(
        nodes.contains(&"web") && nodes.contains(&"orders"),
        "{nodes:?}"
    );
    let edge = tags(&dom, "g", "edge")
        .into_iter()
        .chain(tags(&dom, "g", "edge failing"))
        .find(|t| attr(t, "data-from") == Some("web") && attr(t, "data-to") == Some("orders"))
        .unwrap_or_else(|| panic!("no web -> orders edge in {dom}"));
    assert_eq!(number(edge, "data-total"), 12.0, "{edge}");
    let r = signal_row(&dom, "web", "outbound", "orders");
    let total = requests_in_metrics(&metrics, &["direction=\"outbound\"", "upstream=\"orders\""]);
    assert_eq!(number(r, "data-total"), total, "{r}");
    assert_eq!(total, 12.0);
    assert!(!dom.contains("data-polls=\"0\""), "the page polled: {dom}");

    // mesh-ctl dashboard: the same page over every proxy.
    let mut child = Command::new(bin("mesh-ctl"))
        .args(with_admins(
            &["dashboard", "--listen", "127.0.0.1:0"],
            &chain.admins(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Proc::adopt("mesh-ctl dashboard", child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("dashboard: ")
        .unwrap_or_else(|| panic!("mesh-ctl dashboard printed {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/dashboard"),
        "{url}"
    );
    let dom = dump_dom_of(&url);
    drop(server);
    let proxies = tags(&dom, "li", "up");
    assert_eq!(proxies.len(), 2, "{dom}");
    let inbound = signal_row(&dom, "orders", "inbound", "inbound");
    let total = requests_in_metrics(&chain.orders.metrics(), &["direction=\"inbound\""]);
    assert_eq!(number(inbound, "data-total"), total, "{inbound}");
    assert_eq!(total, 12.0);
    let outbound = signal_row(&dom, "web", "outbound", "orders");
    assert_eq!(number(outbound, "data-total"), 12.0);
    let nodes: Vec<&str> = tags(&dom, "g", "node")
        .into_iter()
        .filter_map(|t| attr(t, "data-service"))
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

/// The DOM of `url` once the page is ready.
fn dump_dom_of(url: &str) -> String {
    mesh_tests::dump_dom(url, 5000, "id=\"signals\"")
}
