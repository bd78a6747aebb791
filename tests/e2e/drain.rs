//! SIGTERM: readiness drops at once, in-flight requests finish, exit 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_tests::{http, wait_until, Sidecar};

#[test]
fn sigterm_lets_20_slow_requests_finish_then_exits_0() {
    let (_app, app) = crate::rest_app();
    let mut sidecar = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain: {{ delay: 500ms, deadline: 20s }}\ninbound:\n  listen: 127.0.0.1:0\n  app: {app}\n"
    ));
    let inbound = sidecar.listener("inbound", None);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "30",
                ])
                .arg(format!("http://{inbound}/slow?ms=2500"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until(Duration::from_secs(10), "20 requests in flight", || {
        sidecar.admin_json("/clusters")[0]["endpoints"][0]["active_requests"] == 20
    });
    sidecar.proc.signal("TERM");
    // Within the drain delay (500 ms), while listeners still accept.
    wait_until(Duration::from_millis(400), "/ready to turn 503", || {
        http(sidecar.admin, "GET", "/ready").0 == 503
    });
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "an in-flight request was cut"
        );
    }
    let status = sidecar
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("sidecar exits after draining");
    assert_eq!(status.code(), Some(0));
}
