//! The proxy's HTTP/1.1 client against an upstream that writes exact bytes
//! (`tests/py/h1_upstream.py`): every way RFC 9112 frames a response body,
//! what it refuses, and when an upstream connection is reused.

use std::net::SocketAddr;

use mesh_tests::{curl, py_service, Sidecar};
use serde_json::Value;

use crate::{curl_reply, inbound_sidecar, Reply};

fn get(inbound: SocketAddr, path: &str, extra: &[&str]) -> Reply {
    let url = format!("http://{inbound}{path}");
    let mut args = vec!["-i"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl_reply(&args)
}

/// Connections the upstream accepted so far (asking takes a request on
/// one of them, reused if one is idle).
fn accepted(inbound: SocketAddr) -> (u64, Value) {
    let stats = get(inbound, "/conns", &[]).json();
    (stats["accepted"].as_u64().unwrap_or_default(), stats)
}

fn upstream() -> (mesh_tests::Proc, Sidecar, SocketAddr) {
    let (app_proc, app) = py_service("h1_upstream.py", &[]);
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    (app_proc, sidecar, inbound)
}

#[test]
fn every_body_framing_arrives_whole_on_one_reused_connection() {
    let (_app, _sidecar, inbound) = upstream();
    let (first, _) = accepted(inbound);

    let length = get(inbound, "/length", &[]);
    assert_eq!((length.status, length.body.as_str()), (200, "hello"));
    assert_eq!(length.header("x-kind"), Some("length"));

    let chunked = get(inbound, "/chunked", &[]);
    assert_eq!(
        (chunked.status, chunked.body.as_str()),
        (200, "one two three")
    );

    // Trailers reach a caller that accepts them.
    let raw = curl(&[
        "--raw",
        "-H",
        "TE: trailers",
        &format!("http://{inbound}/chunked"),
    ]);
    let raw = String::from_utf8_lossy(&raw.stdout).to_ascii_lowercase();
    assert!(raw.contains("x-checksum: abc"), "{raw:?}");

    let slow = get(inbound, "/chunked-slow", &[]);
    assert_eq!(slow.body, "slow and steady", "chunks split across reads");

    let hints = get(inbound, "/early-hints", &[]);
    assert_eq!((hints.status, hints.body.as_str()), (200, "ok"));

    let empty = get(inbound, "/no-content", &[]);
    assert_eq!((empty.status, empty.body.as_str()), (204, ""));
    let unchanged = get(inbound, "/not-modified", &[]);
    assert_eq!((unchanged.status, unchanged.body.as_str()), (304, ""));
    assert_eq!(unchanged.header("etag"), Some("\"v1\""));
    let head = get(inbound, "/length", &["-I"]);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("100"))
    );

    // 1 MiB, byte for byte.
    let large = curl(&[&format!("http://{inbound}/large")]);
    assert!(large.status.success());
    let expected: Vec<u8> = (0..1usize << 20).map(|i| ((i * 7) % 251) as u8).collect();
    assert!(large.stdout == expected, "1 MiB body differs");

    // A request with a body takes the connection too, and leaves it reusable.
    let post = get(inbound, "/length", &["--data-binary", "abc"]);
    assert_eq!(post.body, "hello");
    let again = get(inbound, "/length", &[]);
    assert_eq!(again.body, "hello");

    let (last, stats) = accepted(inbound);
    assert_eq!(last, first, "one connection served all of them: {stats}");
    assert_eq!(stats["bodies"], serde_json::json!(["abc"]));
}

#[test]
fn connections_the_upstream_ends_are_not_reused() {
    let (_app, _sidecar, inbound) = upstream();
    let (start, _) = accepted(inbound);

    // Close-delimited: read to the close, then a new connection.
    let until = get(inbound, "/until-close", &[]);
    assert_eq!(until.body, "read me to the end");
    let bye = get(inbound, "/conn-close", &[]);
    assert_eq!(bye.body, "bye!");
    // Answered, then closed while idle: the next request must not fail on it.
    let idle = get(inbound, "/idle-close", &[]);
    assert_eq!(idle.body, "ok");
    std::thread::sleep(std::time::Duration::from_millis(600));
    for _ in 0..3 {
        let ok = get(inbound, "/length", &[]);
        assert_eq!((ok.status, ok.body.as_str()), (200, "hello"));
    }
    let (end, stats) = accepted(inbound);
    assert_eq!(
        end,
        start + 3,
        "a new connection after each of the three closes: {stats}"
    );
}

#[test]
fn responses_that_are_not_http_get_502_and_a_cut_body_is_not_a_clean_end() {
    let (_app, sidecar, inbound) = upstream();
    for path in ["/bad-length", "/not-http"] {
        let reply = get(inbound, path, &[]);
        assert_eq!(reply.status, 502, "{path}: {}", reply.body);
        assert_eq!(
            reply.header("x-mesh-error"),
            Some("upstream_protocol_error"),
            "{path}"
        );
    }
    // 10 of 100 bytes, then the close: curl must see a failure, not a
    // short body passed off as complete (18: cut short; 52: the head was
    // not flushed before the close either).
    let cut = curl(&[&format!("http://{inbound}/cut")]);
    assert!(matches!(cut.status.code(), Some(18 | 52)), "{cut:?}");
    // The proxy is fine, and counted both refusals as 502s.
    let ok = get(inbound, "/length", &[]);
    assert_eq!(ok.body, "hello");
    assert_eq!(
        sidecar.metric(
            "mesh_requests_total{direction=\"inbound\",upstream=\"inbound\",caller=\"unknown\",status=\"502\",status_class=\"5xx\"}"
        ),
        2.0
    );
}

#[test]
fn a_connection_closed_before_the_answer_is_retried_on_another_endpoint() {
    let (_steady, steady) = py_service("h1_upstream.py", &[]);
    let (_dropping, dropping) = py_service("h1_upstream.py", &["--drop"]);
    let (sidecar, port) = crate::balance::sidecar(
        &format!("{steady}, {dropping}"),
        "      balance: round_robin\n",
    );
    for _ in 0..20 {
        let reply = get(port, "/flaky", &[]);
        assert_eq!((reply.status, reply.body.as_str()), (200, "steady"));
    }
    assert!(
        sidecar.metric("mesh_resilience_total{upstream=\"web\",decision=\"reset\"}") >= 1.0,
        "no request went to the endpoint that drops it"
    );
}
