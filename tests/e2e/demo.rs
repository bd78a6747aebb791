//! The README's first command: the demo mesh comes up and works end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{bin, curl, Proc};

#[test]
fn demo_mesh_passes_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports from a base, below the ephemeral range (32768+) that the
    // other tests' port-0 listeners draw from; varied so parallel runs rarely collide.
    let base = 20_000 + (std::process::id() % 1_100) * 10;
    let out = Command::new(bin("mesh-demo"))
        .args(["--check", "--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mesh-demo --check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains("/orders/3"),
        "the check covers web → orders over gRPC: {stdout}"
    );
}

/// The README's first command left running: mesh-ctl sees the whole mesh,
/// its golden signals and who calls whom, from the proxies' admin APIs.
#[test]
fn mesh_ctl_reads_the_running_demo_mesh() {
    let dir = tempfile::tempdir().unwrap();
    // Offset by 5 from the other demo test: their ports never meet.
    let base = 20_000 + (std::process::id() % 1_100) * 10 + 5;
    let mut child = Command::new(bin("mesh-demo"))
        .args(["--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut demo = Proc::adopt("mesh-demo", child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    while !banner.contains("Ctrl-C stops everything") {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no banner: {banner}\n{:?}", demo.log()));
        banner.push_str(&line);
        banner.push('\n');
    }
    let port = |offset: u16| format!("127.0.0.1:{}", base as u16 + offset);
    let admins: Vec<String> = [800, 801, 802, 803]
        .iter()
        .flat_map(|offset| ["--admin".to_string(), port(*offset)])
        .collect();
    let mesh_ctl = |args: &[&str]| {
        let out = Command::new(bin("mesh-ctl"))
            .args(args)
            .args(&admins)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mesh-ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    let status: serde_json::Value =
        serde_json::from_str(&mesh_ctl(&["status", "-o", "json"])).unwrap();
    let text = status.to_string();
    for service in ["edge", "web", "orders", "chat"] {
        assert!(
            text.contains(&format!("\"{service}\"")),
            "{service} in {text}"
        );
    }
    assert!(text.contains("\"edge\""), "{text}");
    assert!(!text.contains("\"ready\":false"), "{text}");

    // Traffic through the edge and web, then the graph shows who called whom.
    let ca = dir.path().join("certs/public-ca/bundle.pem");
    let resolve = format!("api.demo.test:{}:127.0.0.1", base as u16 + 443);
    for _ in 0..5 {
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            &format!("https://api.demo.test:{}/api/orders/3", base as u16 + 443),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let graph = mesh_ctl(&["graph", "--format", "dot"]);
    assert!(graph.contains("\"edge\" -> \"web\""), "{graph}");
    assert!(graph.contains("\"web\" -> \"orders\""), "{graph}");
    let stat = mesh_ctl(&["stat", "-o", "json", "--window", "1s"]);
    assert!(stat.contains("\"orders\""), "{stat}");

    demo.signal("TERM");
    let exited = demo.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "mesh-demo stops on SIGTERM"
    );
}
