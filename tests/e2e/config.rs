//! Config errors: `sidecar check`, and hot reload that keeps the running
//! config when the new file is bad and applies it when it is good.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{bin, curl, http, wait_until, Sidecar};

const BAD: &str = "service: web\nadmin:\n  listen: 127.0.0.1:0\n  colour: blue\noutbound:\n  upstreams:\n    orders:\n      listen: here\n      discovery: { endpoints: [] }\n";

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD).unwrap();
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.colour (line 4): unknown field `colour`"),
        "{stderr}"
    );
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "service: web\ninbound: { app: 127.0.0.1:8080 }\n").unwrap();
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Semantic errors are listed together once the structure is right.
    std::fs::write(&file, "service: web\nadmin: { listen: nowhere }\noutbound:\n  upstreams:\n    orders:\n      listen: here\n      discovery: { endpoints: [] }\n").unwrap();
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for expected in [
        "admin.listen (line 2): invalid address \"nowhere\"",
        "outbound.upstreams.orders.listen (line 6): invalid address \"here\"",
        "outbound.upstreams.orders.discovery (line 7): no endpoints",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
}

fn web_config(app: std::net::SocketAddr, extra_upstream: &str) -> String {
    format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\nreload: {{ interval: 100ms }}\noutbound:\n  upstreams:\n    a:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{app}] }}\n{extra_upstream}"
    )
}

#[test]
fn bad_reload_keeps_the_running_config_and_says_why() {
    let (_app, app) = crate::rest_app();
    let sidecar = Sidecar::start(&web_config(app, ""));
    let a = sidecar.listener("outbound", Some("a"));
    sidecar.write_config(BAD);
    wait_until(
        Duration::from_secs(10),
        "the failed reload on /config",
        || {
            sidecar.admin_json("/config")["last_error"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        },
    );
    let status = sidecar.admin_json("/config");
    let errors = status["last_error"].to_string();
    assert!(errors.contains("admin.colour (line 4)"), "{errors}");
    assert_eq!(status["generation"], 1, "nothing was applied");
    let out = curl(&[&format!("http://{a}/healthz")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok",
        "old config still serves"
    );
    let (code, body) = http(sidecar.admin, "POST", "/config/reload");
    assert_eq!(code, 400, "{body}");
    assert!(sidecar.metric("mesh_config_reloads_total{result=\"error\"}") >= 2.0);

    // Fixed, and announced by SIGHUP instead of the watcher: applied.
    sidecar.write_config(&web_config(
        app,
        "    b:\n      listen: 127.0.0.1:0\n      discovery: { endpoints: [127.0.0.1:1] }\n",
    ));
    sidecar.proc.signal("HUP");
    wait_until(Duration::from_secs(10), "the good reload", || {
        sidecar.admin_json("/config")["last_error"]
            .as_array()
            .is_none()
    });
    sidecar.listener("outbound", Some("b"));
    assert_eq!(
        sidecar.listener("outbound", Some("a")),
        a,
        "an unchanged listener keeps its port"
    );
}

#[test]
fn reload_adds_a_route_while_a_stream_is_in_flight() {
    let (_app, app) = crate::rest_app();
    let sidecar = Sidecar::start(&web_config(app, ""));
    let a = sidecar.listener("outbound", Some("a"));
    let mut stream = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            &format!("http://{a}/stream?chunks=20&interval_ms=100"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sidecar.write_config(&web_config(
        app,
        &format!("    b:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{app}] }}\n"),
    ));
    wait_until(Duration::from_secs(10), "listener b", || {
        sidecar
            .admin_json("/listeners")
            .to_string()
            .contains("\"upstream\":\"b\"")
    });
    let b = sidecar.listener("outbound", Some("b"));
    let out = curl(&[&format!("http://{b}/healthz")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok",
        "the new route works"
    );
    let mut body = String::new();
    stream
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert!(stream.wait().unwrap().success());
    assert_eq!(
        body.lines().count(),
        20,
        "the stream in flight completed: {body}"
    );
    assert_eq!(body.lines().last(), Some("chunk 19"));
}

#[test]
fn every_example_config_passes_check() {
    let root = mesh_tests::root();
    let mut files = Vec::new();
    for (dir, suffix) in [
        ("examples/configs", ".yaml"),
        ("examples/k8s", ".sidecar.yaml"),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(suffix) {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 6, "examples: {files:?}");
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_config_reference_passes_check() {
    let readme = std::fs::read_to_string(mesh_tests::root().join("README.md")).unwrap();
    let reference = &readme[readme
        .find("## Config reference")
        .expect("a config reference section")..];
    let section = &reference[..reference[3..]
        .find("\n## ")
        .map_or(reference.len(), |end| end + 3)];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, block) in section.split("```yaml\n").skip(1).enumerate() {
        let end = block.find("```").expect("the block ends");
        let file = dir.path().join(format!("reference-{i}.yaml"));
        std::fs::write(&file, &block[..end]).unwrap();
        files.push(file);
    }
    assert!(files.len() >= 2, "a sidecar and an edge block: {files:?}");
    let out = Command::new(bin("sidecar"))
        .arg("check")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
