//! The access log: one JSON line per HTTP request and per opaque TCP
//! connection, written to a file, read back and checked field by field;
//! `access_fields` picks the fields; reloads move the log to another file
//! or turn it off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use mesh_tests::{curl, wait_until, Sidecar};
use serde_json::Value;

use crate::{refusing_port, rest_app};

/// Echoes what it reads until the client closes, for every connection.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A sidecar logging to `access` with upstreams `rest` (the demo app),
/// `dead` (nothing listens) and `echo` (opaque TCP); `extra` goes under `log:`.
fn sidecar(app: SocketAddr, echo: SocketAddr, log: &str) -> Sidecar {
    Sidecar::start(&config(app, echo, log))
}

fn config(app: SocketAddr, echo: SocketAddr, log: &str) -> String {
    let dead = refusing_port();
    format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\nreload: {{ interval: 100ms }}\nlog: {log}\noutbound:\n  upstreams:\n    rest:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{app}] }}\n    dead:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [127.0.0.1:{dead}] }}\n    echo:\n      listen: 127.0.0.1:0\n      protocol: tcp\n      discovery: {{ endpoints: [{echo}] }}\n"
    )
}

/// Every line of the file, each parsed as JSON (an unparsable line fails).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn wait_lines(path: &Path, count: usize) -> Vec<Value> {
    wait_until(Duration::from_secs(10), "access log lines", || {
        lines(path).len() >= count
    });
    lines(path)
}

/// One round trip through the opaque `echo` port.
fn tcp_round_trip(sidecar: &Sidecar) {
    let port = sidecar.listener("outbound", Some("echo"));
    let mut stream = TcpStream::connect(port).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"ping").unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"ping");
}

fn find<'a>(lines: &'a [Value], what: &str, test: impl Fn(&Value) -> bool) -> &'a Value {
    lines
        .iter()
        .find(|l| test(l))
        .unwrap_or_else(|| panic!("no {what} line in {lines:#?}"))
}

#[test]
fn http_requests_and_tcp_connections_are_logged_with_their_fields() {
    let (_app, app) = rest_app();
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let sidecar = sidecar(app, echo, &format!("{{ access: {} }}", file.display()));
    let rest = sidecar.listener("outbound", Some("rest"));
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "x-request-id: req-42",
        "-H",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "-d",
        "hello world",
        &format!("http://{rest}/echo?x=1"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let dead = sidecar.listener("outbound", Some("dead"));
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{dead}/gone"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    tcp_round_trip(&sidecar);

    let lines = wait_lines(&file, 3);
    for line in &lines {
        let object = line.as_object().unwrap();
        assert_eq!(object.len(), 25, "every field: {line}");
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        assert_eq!(line["client"], "127.0.0.1");
        assert!(line["listener"].is_string(), "{line}");
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(line["attempts"].as_u64().unwrap() >= 1, "{line}");
        assert!(line["consumer"].is_null());
    }

    let ok = find(&lines, "200", |l| l["status"] == 200);
    assert_eq!(ok["kind"], "http");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["scheme"], "http");
    assert_eq!(ok["authority"], rest.to_string());
    assert_eq!(ok["path"], "/echo?x=1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["upstream"], "rest");
    assert_eq!(ok["endpoint"], app.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["request_id"], "req-42");
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["bytes_received"], 11);
    assert!(ok["bytes_sent"].as_u64().unwrap() > 0, "{ok}");
    assert!(ok["upstream_ms"].as_f64().is_some(), "{ok}");
    assert!(ok["error"].is_null());
    assert!(ok["grpc_status"].is_null());
    assert!(ok["user_agent"].as_str().unwrap().starts_with("curl/"));

    let failed = find(&lines, "502", |l| l["status"] == 502);
    assert_eq!(failed["error"], "upstream_connect_failed");
    assert_eq!(failed["upstream"], "dead");
    assert_eq!(failed["path"], "/gone");
    assert_eq!(failed["method"], "GET");
    assert!(failed["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(failed["bytes_sent"].as_u64().unwrap() > 0, "the error body");

    let tcp = find(&lines, "tcp", |l| l["kind"] == "tcp");
    assert_eq!(tcp["upstream"], "echo");
    assert_eq!(tcp["endpoint"], echo.to_string());
    assert_eq!(tcp["attempts"], 1);
    assert_eq!(tcp["bytes_received"], 4);
    assert_eq!(tcp["bytes_sent"], 4);
    assert!(tcp["status"].is_null() && tcp["method"].is_null());
    assert!(tcp["error"].is_null());
}

#[test]
fn only_the_chosen_fields_are_written() {
    let (_app, app) = rest_app();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let sidecar = sidecar(
        app,
        echo_server(),
        &format!(
            "{{ access: {}, access_fields: [path, status] }}",
            file.display()
        ),
    );
    let rest = sidecar.listener("outbound", Some("rest"));
    curl(&["-o", "/dev/null", &format!("http://{rest}/healthz")]);
    tcp_round_trip(&sidecar);
    let lines = wait_lines(&file, 2);
    // In ACCESS_FIELDS order, whatever order the config lists them in.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().all(|l| l.starts_with("{\"path\":")), "{text}");
    for line in &lines {
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "{line}");
        assert!(line.get("status").is_some() && line.get("path").is_some());
    }
    find(&lines, "200", |l| {
        l["status"] == 200 && l["path"] == "/healthz"
    });
}

#[test]
fn a_reload_moves_the_log_and_off_writes_nothing() {
    let (_app, app) = rest_app();
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    let sidecar = sidecar(app, echo, &format!("{{ access: {} }}", first.display()));
    let rest = sidecar.listener("outbound", Some("rest"));
    let get = |path: &str| {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{rest}{path}"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    };
    let generation = |n: u64| {
        wait_until(Duration::from_secs(10), "reload", || {
            sidecar.admin_json("/config")["generation"] == n
        });
    };
    get("/healthz");
    wait_lines(&first, 1);

    sidecar.write_config(&config(
        app,
        echo,
        &format!("{{ access: {} }}", second.display()),
    ));
    generation(2);
    get("/?to=second");
    let moved = wait_lines(&second, 1);
    assert_eq!(moved[0]["path"], "/?to=second");

    sidecar.write_config(&config(app, echo, "{ access: off }"));
    generation(3);
    get("/?to=nowhere");
    tcp_round_trip(&sidecar);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(lines(&first).len(), 1, "{:?}", lines(&first));
    assert_eq!(lines(&second).len(), 1, "{:?}", lines(&second));
}
