//! DNS discovery against a real dnsmasq on a loopback port: A records
//! that change under traffic, a DNS outage, SRV priorities and weights, and
//! NXDOMAIN with both `on_nxdomain` policies. Backends are `demo-rest`
//! processes named `b1`, `b2`, ...; `GET /` says which one answered.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{http, service, wait_until, Proc, Sidecar};
use serde_json::Value;

use crate::closed_port;

/// dnsmasq answers with TTL 1 s (`--local-ttl=1`).
const TTL: Duration = Duration::from_secs(1);
/// Polling and process scheduling on a busy machine, on top of TTL + 1 s.
const SLACK: Duration = Duration::from_millis(500);

/// A dnsmasq serving `*.test` from a hosts file it re-reads on SIGHUP
/// (also the UDP backends of `udp.rs`).
pub(crate) struct Dns {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// Starts dnsmasq with `hosts` as its hosts file and `extra` flags
    /// (e.g. `--srv-host=...`). Names under `test` that it does not know
    /// get NXDOMAIN (`--local=/test/`).
    pub(crate) fn start(hosts: &str, extra: &[String]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, hosts).unwrap();
        // A port free for TCP is almost always free for UDP too; retry if not.
        for _ in 0..5 {
            let port = closed_port();
            let mut command = Command::new(dnsmasq());
            command
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--log-facility=-",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--local=/test/",
                    "--local-ttl=1",
                    "--pid-file=",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", file.display()))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if running_as_root() {
                // Stay root: the default drops to `nobody`, which may not read the temp dir.
                command.arg("--user=root");
            }
            let child = command
                .spawn()
                .expect("dnsmasq is installed (scripts/test installs it)");
            let mut proc = Proc::adopt("dnsmasq", child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if proc
                    .log()
                    .iter()
                    .any(|l| l.contains("read ") && l.contains("hosts"))
                {
                    return Dns {
                        proc,
                        port,
                        hosts: file,
                        _dir: dir,
                    };
                }
                if proc.wait_exit(Duration::from_millis(20)).is_some() {
                    break;
                }
            }
            eprintln!(
                "dnsmasq on port {port} did not start:\n{}",
                proc.log().join("\n")
            );
        }
        panic!("dnsmasq did not start");
    }

    /// Replaces the hosts file and tells dnsmasq to read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        self.proc.signal("HUP");
    }
}

/// dnsmasq lives in /usr/sbin, which is not on every user's PATH.
fn dnsmasq() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/dnsmasq");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("dnsmasq")
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port free on 127.0.0.2, to give several loopback addresses the same port.
fn shared_port() -> u16 {
    TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A demo-rest app named `name` on `listen`.
fn backend(name: &str, listen: &str) -> (Proc, SocketAddr) {
    service("demo-rest", &["--name", name, "--listen", listen])
}

/// A sidecar with one upstream `web` (round robin, so shares are exact)
/// discovered by `discovery` (YAML flow mapping) through dnsmasq.
fn sidecar(dns: &Dns, discovery: &str, on_nxdomain: &str) -> (Sidecar, SocketAddr) {
    let sidecar = Sidecar::start(&format!(
        "service: client
admin: {{ listen: 127.0.0.1:0 }}
resolver:
  nameservers: [127.0.0.1:{port}]
  ttl: {{ min: 1s, max: 4s }}
  timeout: 300ms
  on_nxdomain: {on_nxdomain}
outbound:
  upstreams:
    web:
      listen: 127.0.0.1:0
      protocol: http1
      balance: round_robin
      discovery: {discovery}
",
        port = dns.port,
    ));
    let listener = sidecar.listener("outbound", Some("web"));
    (sidecar, listener)
}

/// The `web` cluster on `/clusters`.
fn cluster(sidecar: &Sidecar) -> Value {
    let clusters = sidecar.admin_json("/clusters");
    clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .cloned()
        .unwrap_or_else(|| panic!("no web cluster in {clusters}"))
}

/// The `web` cluster's endpoints as `addr → weight`.
fn endpoints(sidecar: &Sidecar) -> BTreeMap<String, u64> {
    cluster(sidecar)["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["addr"].as_str().unwrap().to_owned(),
                e["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the cluster's endpoint addresses are exactly `expected`.
fn wait_for_endpoints(sidecar: &Sidecar, expected: &[String], within: Duration) {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_until(within, &format!("endpoints {expected:?}"), || {
        endpoints(sidecar).into_keys().collect::<Vec<_>>() == expected
    });
}

/// Sends `n` requests to `GET /` through `listener`; counts answers by backend name.
fn spread(listener: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = http(listener, "GET", "/");
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        *seen
            .entry(body["service"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

#[test]
fn a_records_follow_the_name_as_it_changes() {
    let port = shared_port();
    let at = |ip: &str| format!("{ip}:{port}");
    let (_b1, _) = backend("b1", &at("127.0.0.2"));
    let (_b2, _) = backend("b2", &at("127.0.0.3"));
    let (_b3, _) = backend("b3", &at("127.0.0.4"));
    let dns = Dns::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    let (sidecar, listener) = sidecar(&dns, &format!("{{ dns: web.test:{port} }}"), "clear");

    wait_for_endpoints(
        &sidecar,
        &[at("127.0.0.2"), at("127.0.0.3")],
        Duration::from_secs(5),
    );
    let info = cluster(&sidecar);
    assert_eq!(info["source"], "dns");
    assert_eq!(info["discovery"]["name"], "web.test");
    assert_eq!(info["discovery"]["port"], port);
    assert_eq!(
        info["discovery"]["ttl_seconds"], 1,
        "TTL 1 s, within ttl.min..max"
    );
    assert!(info["discovery"]["last_refresh"].as_u64().unwrap() > 0);
    let before = spread(listener, 10);
    assert_eq!(before.get("b1"), Some(&5), "{before:?}");
    assert_eq!(before.get("b2"), Some(&5), "{before:?}");

    // b3 joins, b1 leaves.
    let changed = Instant::now();
    dns.set_hosts("127.0.0.3 web.test\n127.0.0.4 web.test\n");
    wait_for_endpoints(
        &sidecar,
        &[at("127.0.0.3"), at("127.0.0.4")],
        TTL + Duration::from_secs(1) + SLACK,
    );
    let after = spread(listener, 10);
    assert_eq!(after.get("b1"), None, "{after:?}");
    assert_eq!(after.get("b2"), Some(&5), "{after:?}");
    assert_eq!(after.get("b3"), Some(&5), "{after:?}");
    eprintln!("endpoints followed the change in {:?}", changed.elapsed());
    assert!(
        sidecar.metric("mesh_dns_resolutions_total{upstream=\"web\",result=\"ok\"}") >= 2.0,
        "{}",
        sidecar.metrics()
    );
}

#[test]
fn a_dns_outage_keeps_the_last_known_endpoints() {
    let port = shared_port();
    let at = |ip: &str| format!("{ip}:{port}");
    let (_b1, _) = backend("b1", &at("127.0.0.2"));
    let (_b2, _) = backend("b2", &at("127.0.0.3"));
    let mut dns = Dns::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    let (sidecar, listener) = sidecar(&dns, &format!("{{ dns: web.test:{port} }}"), "clear");
    wait_for_endpoints(
        &sidecar,
        &[at("127.0.0.2"), at("127.0.0.3")],
        Duration::from_secs(5),
    );

    let killed_at = unix_now();
    dns.proc.signal("KILL");
    assert!(dns.proc.wait_exit(Duration::from_secs(5)).is_some());
    wait_until(
        Duration::from_secs(6),
        "a resolution error on /clusters",
        || !cluster(&sidecar)["discovery"]["last_error"].is_null(),
    );
    let info = cluster(&sidecar);
    let discovery = &info["discovery"];
    eprintln!("discovery after the outage: {discovery}");
    assert!(discovery["last_error"]
        .as_str()
        .unwrap()
        .contains("web.test"));
    assert!(discovery["last_error_at"].as_u64().unwrap() >= killed_at);
    assert!(discovery["failures"].as_u64().unwrap() >= 1);
    assert_eq!(info["endpoints"].as_array().unwrap().len(), 2, "{info}");

    let seen = spread(listener, 10);
    assert_eq!(seen.get("b1"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b2"), Some(&5), "{seen:?}");
    assert!(
        sidecar.metric("mesh_dns_resolutions_total{upstream=\"web\",result=\"fallback\"}") >= 1.0,
        "{}",
        sidecar.metrics()
    );
}

#[test]
fn srv_honours_priority_and_weight() {
    let (_b1, b1) = backend("b1", "127.0.0.1:0");
    let (_b2, b2) = backend("b2", "127.0.0.1:0");
    let (_b3, b3) = backend("b3", "127.0.0.1:0");
    let srv = |target: &str, port: u16, priority: u16, weight: u16| {
        format!("--srv-host=_http._tcp.web.test,{target},{port},{priority},{weight}")
    };
    let dns = Dns::start(
        "127.0.0.1 t1.web.test\n127.0.0.1 t2.web.test\n127.0.0.1 t3.web.test\n",
        &[
            srv("t1.web.test", b1.port(), 10, 1),
            srv("t2.web.test", b2.port(), 10, 3),
            srv("t3.web.test", b3.port(), 20, 1),
        ],
    );
    let (sidecar, listener) = sidecar(&dns, "{ srv: _http._tcp.web.test }", "clear");
    wait_for_endpoints(
        &sidecar,
        &[b1.to_string(), b2.to_string()],
        Duration::from_secs(5),
    );
    let info = cluster(&sidecar);
    assert_eq!(info["source"], "srv");
    assert_eq!(info["discovery"]["name"], "_http._tcp.web.test");
    assert_eq!(
        endpoints(&sidecar),
        BTreeMap::from([(b1.to_string(), 1), (b2.to_string(), 3)]),
        "priority 20 is a fallback only; weights from the records"
    );

    let seen = spread(listener, 400);
    assert_eq!(seen.get("b3"), None, "{seen:?}");
    let (one, three) = (seen["b1"], seen["b2"]);
    assert!(
        (80..=120).contains(&one) && (280..=320).contains(&three),
        "weights 1:3 over 400 requests: {seen:?}"
    );
}

#[test]
fn nxdomain_clears_or_keeps_as_configured() {
    let port = shared_port();
    let addr = format!("127.0.0.2:{port}");
    let (_b1, _) = backend("b1", &addr);
    let dns = Dns::start("127.0.0.2 web.test\n", &[]);
    let discovery = format!("{{ dns: web.test:{port} }}");
    let (clearing, clearing_port) = sidecar(&dns, &discovery, "clear");
    let (keeping, keeping_port) = sidecar(&dns, &discovery, "keep_last_known");
    for sidecar in [&clearing, &keeping] {
        wait_for_endpoints(sidecar, std::slice::from_ref(&addr), Duration::from_secs(5));
    }

    dns.set_hosts("");
    wait_for_endpoints(&clearing, &[], TTL + Duration::from_secs(1) + SLACK);
    let (status, body) = http(clearing_port, "GET", "/");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no_healthy_endpoints");
    let last_error = cluster(&clearing)["discovery"]["last_error"].clone();
    assert!(
        last_error.as_str().unwrap().contains("NXDOMAIN"),
        "{last_error}"
    );

    wait_until(
        Duration::from_secs(3),
        "the NXDOMAIN on the keeping sidecar",
        || !cluster(&keeping)["discovery"]["last_error"].is_null(),
    );
    assert_eq!(endpoints(&keeping).len(), 1);
    let seen = spread(keeping_port, 3);
    assert_eq!(seen.get("b1"), Some(&3), "{seen:?}");
    assert!(
        clearing.metric("mesh_dns_resolutions_total{upstream=\"web\",result=\"nxdomain\"}") >= 1.0
    );
}

#[test]
fn a_reload_that_replaces_the_cluster_stops_its_resolver() {
    let port = shared_port();
    let addr = format!("127.0.0.2:{port}");
    let (_b1, _) = backend("b1", &addr);
    let dns = Dns::start("127.0.0.2 web.test\n", &[]);
    let discovery = format!("{{ dns: web.test:{port} }}");
    let (sidecar, _) = sidecar(&dns, &discovery, "clear");
    wait_for_endpoints(
        &sidecar,
        std::slice::from_ref(&addr),
        Duration::from_secs(5),
    );

    let yaml = std::fs::read_to_string(&sidecar.config).unwrap();
    sidecar.write_config(&yaml.replace(&discovery, &format!("{{ endpoints: [{addr}] }}")));
    wait_until(
        Duration::from_secs(5),
        "the reload to a static list",
        || cluster(&sidecar)["source"] == "static",
    );
    let ok = "mesh_dns_resolutions_total{upstream=\"web\",result=\"ok\"}";
    let resolved = sidecar.metric(ok);
    assert!(resolved >= 1.0);
    // The old resolver refreshed every second; it is gone, so nothing is counted.
    std::thread::sleep(TTL * 2 + SLACK);
    assert_eq!(
        sidecar.metric(ok),
        resolved,
        "the old cluster's resolver still runs"
    );
    assert!(cluster(&sidecar)["discovery"].is_null());
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
