//! Transparent interception in real network namespaces: an app namespace
//! (curl, the sidecar as uid 1337, the rules of `sidecar iptables apply`)
//! and a backend namespace joined by a veth pair. Needs root (`ip netns`);
//! without it the test fails saying so.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, Proc};

/// The proxy's uid and gid inside the app namespace.
const PROXY_UID: &str = "1337";

/// Two namespaces, deleted (with their veth pair) when dropped.
struct Namespaces {
    app: String,
    backend: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let pid = std::process::id();
        let ns = Namespaces {
            app: format!("mesh-t-{pid}-app"),
            backend: format!("mesh-t-{pid}-be"),
        };
        for name in [&ns.app, &ns.backend] {
            let out = Command::new("ip").args(["netns", "add", name]).output();
            match out {
                Ok(out) if out.status.success() => {}
                Ok(out) => panic!(
                    "cannot create network namespace {name} (this test needs root and `ip netns`): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(err) => panic!("cannot run `ip netns add` (iproute2 missing?): {err}"),
            }
        }
        let (a, b) = (format!("mt{pid}a"), format!("mt{pid}b"));
        run(&[
            "ip",
            "link",
            "add",
            &a,
            "netns",
            &ns.app,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &ns.backend,
        ]);
        for (name, dev, v4, v6) in [
            (&ns.app, &a, "10.231.0.1/30", "fd00:231::1/64"),
            (&ns.backend, &b, "10.231.0.2/30", "fd00:231::2/64"),
        ] {
            ns_run(name, &["ip", "link", "set", "lo", "up"]);
            ns_run(name, &["ip", "addr", "add", v4, "dev", dev]);
            ns_run(name, &["ip", "addr", "add", v6, "dev", dev, "nodad"]);
            ns_run(name, &["ip", "link", "set", dev, "up"]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair in it too.
        for name in [&self.app, &self.backend] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs a command; panics with its stderr unless it succeeds.
fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run`] inside namespace `ns`.
fn ns_run(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend(args);
    run(&full)
}

/// `curl` inside `ns`: (status, body).
fn ns_curl(ns: &str, url: &str) -> (String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
        ])
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        status.to_string(),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// A demo-rest backend in `ns` on `addr`, once it is listening.
fn backend(ns: &str, addr: &str) -> Proc {
    demo("demo-rest", ns, addr)
}

/// A demo service `name` in `ns` on `addr`, once it is listening.
fn demo(name: &str, ns: &str, addr: &str) -> Proc {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin(name))
        .args(["--listen", addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{name} on {addr}: {line:?}");
    Proc::adopt(name, child)
}

/// One series of the sidecar's `/metrics`, read inside the app namespace.
fn metric(ns: &str, series: &str) -> f64 {
    let out = ns_run(
        ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:15000/metrics",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The nat table as `*-save` prints it, without comments and counters.
fn nat_rules(ns: &str, save: &str) -> Vec<String> {
    let out = ns_run(ns, &[save, "-t", "nat"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            Some((chain, _counters)) if l.starts_with(':') => chain.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn requests(ns: &str, upstream: &str) -> f64 {
    metric(
        ns,
        &format!(
            "mesh_requests_total{{direction=\"outbound\",upstream=\"{upstream}\",status=\"200\",status_class=\"2xx\"}}"
        ),
    )
}

#[test]
fn transparent_interception_in_network_namespaces() {
    let started = Instant::now();
    let ns = Namespaces::create();
    // Declared after `ns`: dropped (killed by PID) before the namespaces go.
    let mut procs = vec![
        backend(&ns.backend, "10.231.0.2:8080"),
        backend(&ns.backend, "10.231.0.2:8081"),
        backend(&ns.backend, "[fd00:231::2]:8080"),
        demo("demo-grpc", &ns.backend, "10.231.0.2:9090"),
        // The app behind the inbound listener: loopback only, so callers
        // from the backend namespace reach it through the redirect or not at all.
        backend(&ns.app, "127.0.0.1:8080"),
    ];

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(
        &config,
        "service: app\nadmin: { listen: 127.0.0.1:15000 }\ndrain: { delay: 0s, deadline: 1s }\n\
         inbound: { listen: \"[::]:15006\", app: 127.0.0.1:8080 }\n\
         outbound:\n  transparent: \"[::]:15002\"\n  upstreams:\n\
         \x20   backend:\n      discovery: { endpoints: [10.231.0.2:8080] }\n\
         \x20   backend6:\n      discovery: { endpoints: [\"[fd00:231::2]:8080\"] }\n\
         \x20   orders:\n      protocol: grpc\n      discovery: { endpoints: [10.231.0.2:9090] }\n\
         interception: { proxy_uid: 1337, proxy_gid: 1337 }\n",
    )
    .unwrap();
    // The sidecar runs as uid 1337: let it read its config.
    run(&["chmod", "0755", &dir.path().to_string_lossy()]);
    run(&["chmod", "0644", &config.to_string_lossy()]);
    let config = config.to_string_lossy().to_string();

    let sidecar = Command::new("ip")
        .args(["netns", "exec", &ns.app, "setpriv"])
        .args([
            &format!("--reuid={PROXY_UID}"),
            &format!("--regid={PROXY_UID}"),
            "--clear-groups",
        ])
        .arg(bin("sidecar"))
        .args(["run", "--log-format", "json", "--config", &config])
        .env("MESH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sidecar");
    procs.push(Proc::adopt("sidecar", sidecar));
    procs
        .last()
        .unwrap()
        .wait_log("\"message\":\"listening\"", Duration::from_secs(10));

    // The table as it was; listing it first instantiates the nat table, so
    // the comparison is about rules, not whether the kernel module was loaded.
    let sidecar_bin = bin("sidecar").to_string_lossy().to_string();
    let _ = nat_rules(&ns.app, "iptables-save");
    let _ = nat_rules(&ns.app, "ip6tables-save");
    // Someone else's rules, which apply and remove must leave alone.
    for tables in ["iptables", "ip6tables"] {
        ns_run(
            &ns.app,
            &[
                tables, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN",
            ],
        );
    }
    let before = (
        nat_rules(&ns.app, "iptables-save"),
        nat_rules(&ns.app, "ip6tables-save"),
    );

    // Twice: idempotent, one jump.
    for _ in 0..2 {
        ns_run(
            &ns.app,
            &[&sidecar_bin, "iptables", "apply", "--config", &config],
        );
    }
    let output = ns_run(&ns.app, &["iptables", "-t", "nat", "-S", "OUTPUT"]);
    let output = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.matches("-j MESH_OUTBOUND").count(), 1, "{output}");
    let chain = ns_run(&ns.app, &["iptables", "-t", "nat", "-S", "MESH_OUTBOUND"]);
    let chain = String::from_utf8_lossy(&chain.stdout).to_string();
    assert_eq!(chain.matches("REDIRECT").count(), 1, "{chain}");

    // Captured: curl knows nothing of the proxy, the upstream's metrics count it.
    let (status, body) = ns_curl(&ns.app, "http://10.231.0.2:8080/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok"));
    assert_eq!(requests(&ns.app, "backend"), 1.0);

    // No upstream has 10.231.0.2:8081: straight on, still through the proxy.
    let (status, body) = ns_curl(&ns.app, "http://10.231.0.2:8081/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok"));
    assert_eq!(requests(&ns.app, "passthrough"), 1.0);

    // Opaque bytes to an unknown address: relayed to the original destination, counted.
    let opaque = ns_run(
        &ns.app,
        &[
            "python3",
            "-c",
            "import socket,sys\ns=socket.create_connection(('10.231.0.2',8081),timeout=5)\ns.sendall(b'\\x00\\x01 not http\\r\\n\\r\\n')\nsys.stdout.write(s.recv(100).decode(errors='replace'))",
        ],
    );
    let opaque = String::from_utf8_lossy(&opaque.stdout).to_string();
    assert!(opaque.starts_with("HTTP/1.1 400"), "{opaque:?}");
    assert_eq!(metric(&ns.app, "mesh_transparent_passthrough_total"), 1.0);

    // A gRPC client that knows nothing of the proxy: h2 detected, routed by
    // the original destination to the `orders` upstream.
    let script = mesh_tests::root().join("tests/py/grpc_orders.py");
    let grpc = ns_run(
        &ns.app,
        &[
            "python3",
            &script.to_string_lossy(),
            "10.231.0.2:9090",
            "unary",
            "3",
        ],
    );
    let grpc = String::from_utf8_lossy(&grpc.stdout).to_string();
    assert!(
        grpc.contains("\"id\": \"3\""),
        "grpcio through interception: {grpc}"
    );
    let grpc_ok = "mesh_requests_total{direction=\"outbound\",upstream=\"orders\",status=\"200\",status_class=\"2xx\",grpc_status=\"0\"}";
    assert_eq!(metric(&ns.app, grpc_ok), 1.0);

    // IPv6, through ip6tables and IP6T_SO_ORIGINAL_DST.
    let (status, body) = ns_curl(&ns.app, "http://[fd00:231::2]:8080/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok"));
    assert_eq!(requests(&ns.app, "backend6"), 1.0);

    // Straight to the transparent listener (loopback is never redirected):
    // its "original destination" is itself, so it is closed, not relayed.
    let (status, _) = ns_curl(&ns.app, "http://127.0.0.1:15002/healthz");
    assert_eq!(
        status, "000",
        "a direct connection to the transparent listener"
    );

    // The proxy's own upstream connections were not captured again: a loop
    // would have shown as more transparent connections than the clients made (5),
    // or no answer at all.
    let accepted: f64 = ["http1", "http2", "tcp"]
        .iter()
        .map(|p| {
            metric(
                &ns.app,
                &format!("mesh_connections_total{{listener=\"transparent\",protocol=\"{p}\"}}"),
            )
        })
        .sum();
    assert_eq!(accepted, 5.0, "transparent connections accepted");

    // Inbound: a caller from the backend namespace reaches the app (bound to
    // loopback only) through PREROUTING's redirect to the inbound listener.
    let (status, body) = ns_curl(&ns.backend, "http://10.231.0.1:8080/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok"));
    let inbound = "mesh_requests_total{direction=\"inbound\",upstream=\"inbound\",caller=\"unknown\",status=\"200\",status_class=\"2xx\"}";
    assert_eq!(metric(&ns.app, inbound), 1.0);

    // Removed: the path is direct again, the table as it was.
    ns_run(
        &ns.app,
        &[&sidecar_bin, "iptables", "remove", "--config", &config],
    );
    let (status, body) = ns_curl(&ns.app, "http://10.231.0.2:8080/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok"));
    assert_eq!(
        requests(&ns.app, "backend"),
        1.0,
        "not captured after remove"
    );
    let (status, _) = ns_curl(&ns.backend, "http://10.231.0.1:8080/healthz");
    assert_eq!(status, "000", "inbound not redirected after remove");
    let after = (
        nat_rules(&ns.app, "iptables-save"),
        nat_rules(&ns.app, "ip6tables-save"),
    );
    assert_eq!(before, after, "remove restores the nat table");

    drop(procs);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
