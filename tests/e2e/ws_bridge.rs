//! The WebSocket bridge end to end: Python `websockets` clients
//! (`tests/py/ws_bridge_client.py`) on a `websocket_bridge` route whose
//! backend is a recording REST server (`tests/py/ws_bridge_backend.py`):
//! `$connect` accepting and refusing (403 seen by the client), routing by
//! `action`, `$default`, two-way replies, error messages, `$disconnect`
//! with the close code; backend pushes, info and closes through
//! `/@connections/{id}` (401 / 403 / 410), also across two edge processes
//! sharing a redis-server; 1009 over the message size, idle clients closed
//! unless they answer pings, a slow reader closed with 1013 with the
//! proxy's memory bounded, and a reload under 100 open connections.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use mesh_tests::{bin, curl, py_service, python, root, sidecar_check, wait_until, Proc, Sidecar};
use serde_json::Value;

use crate::closed_port;
use crate::edge_tls::edge_addrs;

const TOKEN: &str = "s3cret";

/// The edge config: a bridge route over `backend`, optional Redis.
fn yaml(backend: SocketAddr, redis: Option<u16>, idle: &str, extra_route: bool) -> String {
    let redis = redis.map_or(String::new(), |port| {
        format!("  redis: redis://127.0.0.1:{port}\n")
    });
    let extra = if extra_route {
        "    - name: extra\n      match: { path_prefix: /extra }\n      to: web\n"
    } else {
        ""
    };
    format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
{redis}  routes:
{extra}    - name: ws
      match: {{ path: /ws }}
      websocket_bridge:
        route_selection: $request.body.action
        connect:    {{ to: web, path: /ws/connect }}
        disconnect: {{ to: web, path: /ws/disconnect }}
        routes:
          sendMessage: {{ to: web, path: /ws/messages, reply: true }}
          fail:        {{ to: web, path: /ws/fail }}
          $default:    {{ to: web, path: /ws/default }}
        limits: {{ frame: 32KiB, message: 128KiB, idle: {idle}, ping: 300ms, max_duration: 1h, send_queue: 16 }}
        connections_api: {{ tokens: [{TOKEN}] }}
  upstreams:
    web:
      discovery: {{ endpoints: [{backend}] }}
"
    )
}

/// A recording backend and an edge in front of it.
fn setup(idle: &str) -> (Proc, SocketAddr, Sidecar, SocketAddr) {
    let (backend_proc, backend) = py_service("ws_bridge_backend.py", &[]);
    let edge = Sidecar::start(&yaml(backend, None, idle, false));
    let addr = edge_addrs(&edge)[0];
    (backend_proc, backend, edge, addr)
}

fn calls(backend: SocketAddr) -> Vec<Value> {
    let out = curl(&[&format!("http://{backend}/_calls")]);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn calls_to(backend: SocketAddr, path: &str) -> Vec<Value> {
    calls(backend)
        .into_iter()
        .filter(|c| c["path"].as_str().unwrap().starts_with(path))
        .collect()
}

/// A client scenario running in the background; its first line read.
struct Background {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Background {
    fn start(args: &[&str]) -> (Background, Value) {
        let mut child = Command::new("python3")
            .arg(root().join("tests/py/ws_bridge_client.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let first = read_json(&mut stdout);
        (Background { child, stdout }, first)
    }

    fn finish(mut self) -> Value {
        let value = read_json(&mut self.stdout);
        self.child.wait().unwrap();
        value
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A connections API call: status and body.
fn api(addr: SocketAddr, method: &str, path: &str, args: &[&str]) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let mut all = vec!["-X", method, "-w", "\n%{http_code}", &url];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

fn bearer() -> String {
    format!("authorization: Bearer {TOKEN}")
}

#[test]
fn messages_are_routed_answered_and_the_lifecycle_reaches_the_backend() {
    let (_b, backend, edge, addr) = setup("1m");
    let session = python(
        "ws_bridge_client.py",
        &["session", &format!("ws://{addr}/ws?room=7")],
    );
    assert!(session["id"].is_string(), "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(
        session["reply"]["echo"],
        serde_json::json!({"action": "sendMessage", "text": "hi"})
    );
    assert_eq!(session["error"]["error"]["status"], 500, "{session}");
    assert_eq!(session["error"]["error"]["route"], "fail");
    assert_eq!(
        session["quiet"]["echo"]["n"], 2,
        "one-way routes answer nothing"
    );

    wait_until(Duration::from_secs(10), "$disconnect", || {
        !calls_to(backend, "/ws/disconnect").is_empty()
    });
    let connect = &calls_to(backend, "/ws/connect")[0];
    assert_eq!(
        connect["path"], "/ws/connect?room=7",
        "the handshake's query"
    );
    assert_eq!(connect["headers"]["x-mesh-route-key"], "$connect");
    let defaults = calls_to(backend, "/ws/default");
    assert_eq!(defaults.len(), 3, "{defaults:?}");
    let other: Value = serde_json::from_str(defaults[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(other["action"], "other");
    assert_eq!(defaults[1]["body"], "not json");
    assert!(defaults[1]["headers"]["content-type"]
        .as_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        defaults[2]["body"], r#"{"base64":"AAEC"}"#,
        "binary as base64"
    );
    assert_eq!(defaults[2]["headers"]["x-mesh-route-key"], "$default");
    let disconnect = &calls_to(backend, "/ws/disconnect")[0];
    assert_eq!(disconnect["headers"]["x-mesh-close-code"], "4001");
    assert_eq!(disconnect["headers"]["x-mesh-close-reason"], "bye");
    assert_eq!(
        serde_json::from_str::<Value>(disconnect["body"].as_str().unwrap()).unwrap()["code"],
        4001
    );
    for call in calls(backend) {
        assert_eq!(
            call["headers"]["x-mesh-connection-id"],
            id.as_str(),
            "{call}"
        );
    }
    let metrics = edge.metrics();
    assert!(
        metrics.contains("mesh_ws_bridge_closes_total{code=\"4001\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mesh_ws_bridge_messages_total{direction=\"in\"} 6"));
    assert_eq!(edge.metric("mesh_ws_bridge_connections_open"), 0.0);
}

#[test]
fn messages_over_the_rate_get_an_error_message() {
    let (_b, backend) = py_service("ws_bridge_backend.py", &[]);
    let limited = yaml(backend, None, "1m", false)
        .replace("max_duration: 1h", "max_duration: 1h, rate: 3/min");
    let edge = Sidecar::start(&limited);
    let addr = edge_addrs(&edge)[0];
    let burst = python(
        "ws_bridge_client.py",
        &["burst", &format!("ws://{addr}/ws"), "5"],
    );
    let replies = burst["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("{burst}"));
    let limited = replies
        .iter()
        .filter(|r| r["error"]["reason"] == "rate_limited")
        .count();
    let echoed = replies.iter().filter(|r| r["echo"].is_object()).count();
    assert_eq!((echoed, limited), (3, 2), "{burst}");
    assert_eq!(calls_to(backend, "/ws/messages").len(), 3);
}

#[test]
fn a_refused_connect_is_the_status_the_client_sees() {
    let (_b, backend, _edge, addr) = setup("1m");
    let refused = python(
        "ws_bridge_client.py",
        &["refused", &format!("ws://{addr}/ws?deny=1")],
    );
    assert_eq!(refused["status"], 403, "{refused}");
    assert!(calls_to(backend, "/ws/messages").is_empty());
}

#[test]
fn backends_push_read_and_close_through_the_connections_api() {
    let (_b, _backend, edge, addr) = setup("1m");
    let (client, first) = Background::start(&["hold", &format!("ws://{addr}/ws"), "20"]);
    let id = first["id"].as_str().unwrap().to_string();
    let path = format!("/@connections/{id}");

    let (status, _) = api(addr, "POST", &path, &["-d", "hello"]);
    assert_eq!(status, 401, "no credentials");
    let (status, _) = api(
        addr,
        "POST",
        &path,
        &["-H", "authorization: Bearer nope", "-d", "x"],
    );
    assert_eq!(status, 403, "a token no bridge route accepts");
    let auth = bearer();
    let (status, body) = api(
        addr,
        "POST",
        &path,
        &["-H", &auth, "-H", "content-type: text/plain", "-d", "hello"],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(addr, "GET", &path, &["-H", &auth]);
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["route"], "ws");
    assert_eq!(info["source_ip"], "127.0.0.1");
    assert!(info["connected_at"].as_str().unwrap().ends_with('Z'));
    assert!(info["last_active"].is_string());
    let listed = edge.admin_json("/connections");
    assert_eq!(listed["connections"][0]["id"], id.as_str(), "{listed}");
    let admin = edge.admin.to_string();
    let output = Command::new(bin("mesh-ctl"))
        .args(["connections", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        table.contains(&id) && table.contains("127.0.0.1"),
        "{table}"
    );
    let (status, _) = api(
        addr,
        "GET",
        "/@connections/0123456789abcdef",
        &["-H", &auth],
    );
    assert_eq!(status, 410, "an unknown id");

    let (status, _) = api(
        addr,
        "DELETE",
        &format!("{path}?code=4000&reason=done"),
        &["-H", &auth],
    );
    assert_eq!(status, 200);
    let end = client.finish();
    assert_eq!(end["messages"][0], "hello", "{end}");
    assert_eq!(end["close_code"], 4000, "{end}");
    assert_eq!(end["close_reason"], "done");
    let (status, _) = api(addr, "POST", &path, &["-H", &auth, "-d", "late"]);
    assert_eq!(status, 410, "a closed id");
}

#[test]
fn a_push_to_one_replica_reaches_a_client_on_another() {
    let port = closed_port();
    let _redis = mesh_tests::start_redis(port);
    let (_b, backend) = py_service("ws_bridge_backend.py", &[]);
    let one = Sidecar::start(&yaml(backend, Some(port), "1m", false));
    let two = Sidecar::start(&yaml(backend, Some(port), "1m", false));
    let (a, b) = (edge_addrs(&one)[0], edge_addrs(&two)[0]);
    let (client, first) = Background::start(&["hold", &format!("ws://{a}/ws"), "20"]);
    let id = first["id"].as_str().unwrap().to_string();
    let path = format!("/@connections/{id}");
    let auth = bearer();

    let mut info = (0, String::new());
    wait_until(Duration::from_secs(10), "the registry entry", || {
        info = api(b, "GET", &path, &["-H", &auth]);
        info.0 == 200
    });
    assert!(info.1.contains("\"route\":\"ws\""), "{}", info.1);
    let (status, body) = api(
        b,
        "POST",
        &path,
        &[
            "-H",
            &auth,
            "-d",
            "{\"via\":\"two\"}",
            "-H",
            "content-type: application/json",
        ],
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = api(b, "DELETE", &format!("{path}?code=4002"), &["-H", &auth]);
    assert_eq!(status, 200);
    let end = client.finish();
    assert_eq!(end["messages"][0], "{\"via\":\"two\"}", "{end}");
    assert_eq!(end["close_code"], 4002, "{end}");
    wait_until(Duration::from_secs(10), "the entry removed", || {
        api(b, "GET", &path, &["-H", &auth]).0 == 410
    });
}

#[test]
fn an_oversized_message_closes_with_1009() {
    let (_b, _backend, edge, addr) = setup("1m");
    let big = python(
        "ws_bridge_client.py",
        &["big", &format!("ws://{addr}/ws"), &(2 << 20).to_string()],
    );
    assert_eq!(big["close_code"], 1009, "{big}");
    wait_until(Duration::from_secs(5), "the close counted", || {
        edge.metric("mesh_ws_bridge_closes_total{code=\"1009\"}") == 1.0
    });
}

#[test]
fn idle_clients_are_closed_unless_they_answer_pings() {
    let (_b, _backend, _edge, addr) = setup("1s");
    let answering = python(
        "ws_bridge_client.py",
        &["answering", &format!("ws://{addr}/ws"), "3"],
    );
    assert_eq!(answering["open"], true, "{answering}");
    let silent = python(
        "ws_bridge_client.py",
        &["silent", &addr.to_string(), "/ws", "3"],
    );
    assert_eq!(silent["close_code"], 1001, "{silent}");
    assert!(silent["pings"].as_u64().unwrap() >= 1, "{silent}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_slow_reader_is_closed_with_1013_and_memory_stays_bounded() {
    let (_b, _backend, edge, addr) = setup("1m");
    let before = rss_kib(edge.proc.pid());
    let slow = python(
        "ws_bridge_client.py",
        &[
            "slow",
            &format!("ws://{addr}/ws"),
            &addr.to_string(),
            TOKEN,
            "10000",
            "4096",
        ],
    );
    assert_eq!(slow["close_code"], 1013, "{slow}");
    assert_eq!(slow["last_status"], 410, "pushes after the close: {slow}");
    let after = rss_kib(edge.proc.pid());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(edge.metric("mesh_ws_bridge_slow_readers_total"), 1.0);
}

#[test]
fn a_reload_during_100_open_connections_closes_none() {
    let (_b, backend, edge, addr) = setup("1m");
    let (mut client, ready) = Background::start(&["many", &format!("ws://{addr}/ws"), "100"]);
    assert_eq!(ready["ready"], 100);
    wait_until(Duration::from_secs(10), "100 open", || {
        edge.metric("mesh_ws_bridge_connections_open") == 100.0
    });
    edge.write_config(&yaml(backend, None, "1m", true));
    wait_until(Duration::from_secs(10), "the reload", || {
        edge.admin_json("/config")["generation"] == 2
    });
    let stdin = client.child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let end = client.finish();
    assert_eq!(end["open"], 100, "{end}");
    let closes: f64 = edge
        .metrics()
        .lines()
        .filter(|l| l.starts_with("mesh_ws_bridge_closes_total{code=\"1001\"}"))
        .count() as f64;
    assert_eq!(closes, 0.0);
}

#[test]
fn check_names_a_bridge_route_with_an_unknown_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.yaml");
    let text = yaml("127.0.0.1:1".parse().unwrap(), None, "1m", false)
        .replace("sendMessage: { to: web", "sendMessage: { to: nowhere");
    std::fs::write(&config, text).unwrap();
    let (code, text) = sidecar_check(&config);
    assert!(code != Some(0));
    assert!(
        text.contains("edge.routes[0].websocket_bridge.routes.sendMessage.to"),
        "{text}"
    );
}

#[test]
fn with_redis_down_local_clients_work_and_remote_ids_answer_503() {
    let (_b, backend) = py_service("ws_bridge_backend.py", &[]);
    let edge = Sidecar::start(&yaml(backend, Some(closed_port()), "1m", false));
    let addr = edge_addrs(&edge)[0];
    let (client, first) = Background::start(&["hold", &format!("ws://{addr}/ws"), "20"]);
    let id = first["id"].as_str().unwrap().to_string();
    let auth = bearer();
    let (status, body) = api(
        addr,
        "POST",
        &format!("/@connections/{id}"),
        &["-H", &auth, "-d", "local", "-H", "content-type: text/plain"],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(
        addr,
        "GET",
        "/@connections/0123456789abcdef",
        &["-H", &auth],
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("registry_unavailable"), "{body}");
    let (status, _) = api(
        addr,
        "DELETE",
        &format!("/@connections/{id}"),
        &["-H", &auth],
    );
    assert_eq!(status, 200);
    let end = client.finish();
    assert_eq!(end["messages"][0], "local", "{end}");
    assert_eq!(end["close_code"], 1000, "{end}");
}

#[test]
fn raw_binary_routes_and_the_maximum_duration() {
    let (_b, backend) = py_service("ws_bridge_backend.py", &[]);
    let text = yaml(backend, None, "1m", false)
        .replace("max_duration: 1h", "max_duration: 2s")
        .replace(
            "$default:    { to: web, path: /ws/default }",
            "$default:    { to: web, path: /ws/default, binary: bytes }",
        );
    assert!(text.contains("binary: bytes") && text.contains("max_duration: 2s"));
    let edge = Sidecar::start(&text);
    let addr = edge_addrs(&edge)[0];
    let session = python(
        "ws_bridge_client.py",
        &["session", &format!("ws://{addr}/ws")],
    );
    assert!(session["id"].is_string(), "{session}");
    wait_until(Duration::from_secs(10), "three $default calls", || {
        calls_to(backend, "/ws/default").len() == 3
    });
    let binary = &calls_to(backend, "/ws/default")[2];
    assert_eq!(binary["body"], "\u{0}\u{1}\u{2}", "raw bytes: {binary}");
    assert_eq!(
        binary["headers"]["content-type"], "application/octet-stream",
        "{binary}"
    );

    // A client that stays past max_duration is closed by the proxy.
    let started = std::time::Instant::now();
    let held = python(
        "ws_bridge_client.py",
        &["hold", &format!("ws://{addr}/ws"), "8"],
    );
    assert_eq!(held["close_code"], 1001, "{held}");
    assert_eq!(
        held["close_reason"], "maximum connection duration reached",
        "{held}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "closed at 2 s, not at the client's 8 s"
    );
}
