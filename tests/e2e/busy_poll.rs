//! `sidecar run --busy-poll WINDOW`: the one worker keeps polling for I/O
//! while traffic comes (a core busy), and rests once WINDOW passes without
//! any. What the latency gains is measured in bench/, not here; these tests
//! check what an operator would see in `top`: a busy core under traffic, an
//! idle one after, and a clear refusal where the option cannot work.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, config_file, curl, Sidecar};

use crate::rest_app;

/// CPU seconds (user + system) `pid` has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// CPU seconds `pid` uses while `during` runs.
fn cpu_used(pid: u32, during: impl FnOnce()) -> f64 {
    let before = cpu_seconds(pid);
    during();
    cpu_seconds(pid) - before
}

#[test]
fn busy_polling_keeps_a_core_busy_under_traffic_and_rests_after() {
    let (_app, app) = rest_app();
    let sidecar = Sidecar::start_with(
        &format!("service: web\nadmin: {{ listen: 127.0.0.1:0 }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n"),
        &["--workers", "1", "--busy-poll", "200ms"],
    );
    let url = format!("http://{}/healthz", sidecar.listener("inbound", None));
    let pid = sidecar.proc.pid();
    // A request every 50 ms for 1.5 s: gaps shorter than the window.
    let busy = cpu_used(pid, || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            let out = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]);
            assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Serving ~30 requests takes a few milliseconds of CPU; spinning
    // through the gaps takes most of the 1.5 s.
    assert!(
        busy > 0.3,
        "spinning between requests: {busy:.2} s of CPU in 1.5 s"
    );
    // A keep-alive connection left idle: its timers are no traffic.
    let mut idle = TcpStream::connect(sidecar.listener("inbound", None)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: app\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Past the window with no request, the worker sleeps again.
    std::thread::sleep(Duration::from_millis(400));
    let rest = cpu_used(pid, || std::thread::sleep(Duration::from_millis(1500)));
    assert!(
        rest < 0.1,
        "at rest after the window: {rest:.2} s of CPU in 1.5 s"
    );
    drop(idle);
}

#[test]
fn busy_polling_without_one_worker_is_refused() {
    let (_dir, config) = config_file(
        "service: web\nadmin: { listen: 127.0.0.1:0 }\ninbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n",
    );
    for extra in [
        &["--busy-poll", "1ms"][..],
        &["--busy-poll", "1ms", "--workers", "2"],
    ] {
        let out = Command::new(bin("sidecar"))
            .args(["run", "--config"])
            .arg(&config)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--busy-poll needs --workers 1"), "{stderr}");
    }
}
