//! HTTP/2 abuse against a real inbound h2c listener, one test per attack
//! (`tests/py/h2_attacks.py` writes the frames): each is met with GOAWAY or
//! RST_STREAM and the RFC 9113 code, the proxy's memory stays bounded, and
//! a well-behaved client on another connection is served during and after.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use mesh_tests::{curl, py_service, root, Proc, Sidecar};
use serde_json::Value;

/// RFC 9113 error codes.
const REFUSED_STREAM: u64 = 0x7;
const ENHANCE_YOUR_CALM: u64 = 0xb;

/// Resident memory the proxy may reach under any one attack (generous: a
/// debug build idles near 30 MiB).
const MAX_RSS_KIB: u64 = 256 * 1024;

/// The attack upstream behind an inbound sidecar with short keep-alives.
fn proxy() -> (Proc, Sidecar, SocketAddr) {
    let (upstream_proc, upstream) = py_service("h2_attacks.py", &["upstream"]);
    let sidecar = Sidecar::start(&format!(
        "service: web
admin: {{ listen: 127.0.0.1:0 }}
limits:
  http2:
    max_concurrent_streams: 100
    max_control_frames_per_second: 1000
    keepalive_interval: 1s
    keepalive_timeout: 1s
inbound:
  listen: 127.0.0.1:0
  app: {upstream}
  protocol: http1
"
    ));
    let inbound = sidecar.listener("inbound", None);
    (upstream_proc, sidecar, inbound)
}

/// Starts `attack` against `addr`.
fn start_attack(attack: &str, addr: SocketAddr) -> Child {
    Command::new("python3")
        .arg(root().join("tests/py/h2_attacks.py"))
        .args([attack, "127.0.0.1", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed")
}

/// The attack's report, once it ends.
fn outcome(attack: Child) -> Value {
    let output = attack.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "h2_attacks.py printed {stdout:?}, stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A well-behaved h2 request on its own connection answers 200.
fn served(addr: SocketAddr) -> bool {
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/"),
    ]);
    String::from_utf8_lossy(&out.stdout) == "200"
}

/// The proxy's resident memory in KiB.
fn rss_kib(sidecar: &Sidecar) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.proc.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs `attack`, checking that a second client is served meanwhile and
/// after, and memory stays bounded; returns the attack's report.
fn attacked(attack: &str) -> Value {
    let (_upstream, sidecar, inbound) = proxy();
    assert!(served(inbound), "served before the attack");
    let running = start_attack(attack, inbound);
    assert!(
        served(inbound),
        "another connection is served during {attack}"
    );
    let report = outcome(running);
    assert!(
        served(inbound),
        "another connection is served after {attack}"
    );
    let rss = rss_kib(&sidecar);
    assert!(rss < MAX_RSS_KIB, "{attack}: proxy RSS {rss} KiB");
    assert!(sidecar.proc.log().iter().all(|l| !l.contains("panicked")));
    report
}

fn assert_goaway(report: &Value, code: u64) {
    assert_eq!(report["outcome"], "goaway", "{report}");
    assert_eq!(report["code"], code, "{report}");
}

#[test]
fn rapid_reset_cve_2023_44487_gets_goaway_enhance_your_calm() {
    let report = attacked("rapid_reset");
    assert_goaway(&report, ENHANCE_YOUR_CALM);
}

#[test]
fn continuation_flood_gets_goaway_enhance_your_calm() {
    let report = attacked("continuation_flood");
    // Whichever limit the frames reach first ends it: the frame count
    // (ENHANCE_YOUR_CALM, from the guard or h2) or the header list size,
    // which h2 answers with PROTOCOL_ERROR when the frames arrive batched.
    assert_eq!(report["outcome"], "goaway", "{report}");
    assert!(
        [ENHANCE_YOUR_CALM, 1].contains(&report["code"].as_u64().unwrap_or(0)),
        "{report}"
    );
    assert_eq!(report["responses"], 0, "{report}");
}

#[test]
fn ping_flood_gets_goaway_enhance_your_calm() {
    assert_goaway(&attacked("ping_flood"), ENHANCE_YOUR_CALM);
}

#[test]
fn settings_flood_gets_goaway_enhance_your_calm() {
    assert_goaway(&attacked("settings_flood"), ENHANCE_YOUR_CALM);
}

#[test]
fn empty_data_flood_gets_goaway_enhance_your_calm() {
    assert_goaway(&attacked("empty_data_flood"), ENHANCE_YOUR_CALM);
}

#[test]
fn window_update_flood_gets_goaway_enhance_your_calm() {
    assert_goaway(&attacked("window_update_flood"), ENHANCE_YOUR_CALM);
}

#[test]
fn zero_window_stall_is_closed_by_keepalive() {
    let report = attacked("zero_window_stall");
    // The response head went out, no body could; the unanswered PING ends it.
    assert_eq!(report["responses"], 1, "{report}");
    assert_ne!(report["outcome"], "none", "{report}");
    assert!(report["seconds"].as_f64().unwrap() < 25.0, "{report}");
}

#[test]
fn huge_hpack_table_is_served_with_bounded_memory() {
    let report = attacked("hpack_table");
    assert_eq!(report["responses"], 50, "{report}");
    assert_eq!(report["statuses"], serde_json::json!(["200"]), "{report}");
    assert_eq!(report["outcome"], "none", "{report}");
}

#[test]
fn too_many_concurrent_streams_are_refused() {
    let report = attacked("too_many_streams");
    // Streams past max_concurrent_streams are refused; a client that keeps
    // opening them is told to calm down.
    let codes = report["reset_codes"].as_array().unwrap();
    assert!(codes.contains(&REFUSED_STREAM.into()), "{report}");
    assert_goaway(&report, ENHANCE_YOUR_CALM);
}
