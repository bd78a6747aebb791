//! Request hygiene on a real inbound listener, over raw TCP: request
//! smuggling shapes refused with 400 and the connection closed, bypass
//! spellings of a denied path still denied, the request limits with their
//! status, and slowloris clients cut off while others are served.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mesh_tests::{curl, Proc, Sidecar};

use crate::rest_app;

/// How long the proxy gives a client to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The REST app behind an inbound sidecar whose authz leaves `/admin` out
/// (callers without identity match `*`), with small limits.
fn proxy() -> (Proc, Sidecar, SocketAddr) {
    let (app_proc, app) = rest_app();
    let sidecar = Sidecar::start(&format!(
        "service: web
admin: {{ listen: 127.0.0.1:0 }}
limits:
  max_header_bytes: 8KiB
  max_headers: 20
  max_uri: 512B
  max_body: 1KiB
  header_timeout: 2s
inbound:
  listen: 127.0.0.1:0
  app: {app}
  authz:
    - allow: [\"*\"]
      paths: [/healthz, /headers*, /public/*, /echo, /sha256]
"
    ));
    let inbound = sidecar.listener("inbound", None);
    (app_proc, sidecar, inbound)
}

/// One response read off the wire, and whether the proxy closed the
/// connection after it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
    closed: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn reason(&self) -> Option<&str> {
        self.header("x-mesh-error")
    }
}

/// Writes `raw` on a new connection and reads until the proxy closes it
/// (or 10 s of silence: `closed` is then false).
fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            // A reset after the response still closes the connection.
            Err(_) => break true,
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
        closed,
    }
}

/// A GET that asks the proxy to close after answering.
fn get(addr: SocketAddr, target: &str, extra: &str) -> Reply {
    send(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: app\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn smuggling_shapes_get_400_and_a_closed_connection() {
    let (_app, _sidecar, inbound) = proxy();
    // Sanity: well-formed requests share a kept-alive connection.
    let ok = send(
        inbound,
        b"GET /healthz HTTP/1.1\r\nHost: app\r\n\r\nGET /healthz HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.starts_with("okHTTP/1.1 200"), "{ok:?}");
    // Bodies of both framings are stepped over to find the next head.
    let ok = send(
        inbound,
        b"POST /sha256 HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n\
          POST /sha256 HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello\
          GET /healthz HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.body.matches("HTTP/1.1 200").count(), 2, "{ok:?}");
    assert_eq!(ok.body.matches("\"bytes\":5").count(), 2, "{ok:?}");
    assert!(ok.body.ends_with("ok"), "{ok:?}");

    // (shape, request, answered by the proxy's own check rather than by
    // hyper's parser, so it carries `x-mesh-error`)
    let cases: &[(&str, &str, bool)] = &[
        (
            "Content-Length then Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            true,
        ),
        (
            "Transfer-Encoding then Content-Length",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            true,
        ),
        (
            "two equal Content-Length",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            true,
        ),
        (
            "two different Content-Length",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            false,
        ),
        (
            "Content-Length comma list",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello",
            false,
        ),
        (
            "signed Content-Length",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: +5\r\n\r\nhello",
            false,
        ),
        (
            "Content-Length with junk",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5x\r\n\r\nhello",
            false,
        ),
        (
            "negative Content-Length",
            "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: -1\r\n\r\n",
            false,
        ),
        (
            "unknown coding",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: identity\r\n\r\n",
            false,
        ),
        (
            "gzip, chunked",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            true,
        ),
        (
            "chunked, chunked",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            true,
        ),
        (
            "two Transfer-Encoding lines",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            true,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST /echo HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            false,
        ),
        (
            "obs-fold",
            "GET /healthz HTTP/1.1\r\nHost: app\r\nX-Folded: a\r\n b\r\n\r\n",
            false,
        ),
        (
            "obs-fold on Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            false,
        ),
        (
            "no Host on HTTP/1.1",
            "GET /healthz HTTP/1.1\r\n\r\n",
            true,
        ),
        (
            "two Host",
            "GET /healthz HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n",
            true,
        ),
        (
            "Host against an absolute-form target",
            "GET http://app/healthz HTTP/1.1\r\nHost: other\r\n\r\n",
            true,
        ),
        (
            "bare CR in a value",
            "GET /healthz HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n",
            false,
        ),
        (
            "NUL in a value",
            "GET /healthz HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n",
            false,
        ),
        (
            "space before the colon",
            "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        ("NUL in the path", "GET /healthz%00 HTTP/1.1\r\nHost: app\r\n\r\n", true),
        (
            "invalid percent-encoding",
            "GET /he%zzalthz HTTP/1.1\r\nHost: app\r\n\r\n",
            true,
        ),
    ];
    let mut wrong = Vec::new();
    for (shape, raw, by_proxy) in cases {
        let reply = send(inbound, raw.as_bytes());
        let reason_ok = if *by_proxy {
            reply.reason() == Some("bad_request")
        } else {
            true
        };
        if reply.status != 400 || !reply.closed || !reason_ok {
            wrong.push(format!("{shape}: {reply:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as expected:\n{}",
        wrong.join("\n")
    );

    // A smuggling shape after a good request on the same connection: the
    // good one is served, the bad one refused, the connection closed.
    let reply = send(
        inbound,
        b"POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello\
          POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("hello"), "{reply:?}");
    assert!(
        reply.body.contains("HTTP/1.1 400") && reply.body.contains("x-mesh-error: bad_request"),
        "{reply:?}"
    );
    assert!(reply.closed, "{reply:?}");
}

#[test]
fn bypass_spellings_of_a_denied_path_are_still_denied() {
    let (_app, _sidecar, inbound) = proxy();
    assert_eq!(get(inbound, "/admin", "").status, 403);
    let variants = [
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%2e%2e/admin",
        "/%2E/admin",
        "/.%2e/admin",
        "/%61dmin",
        "/admin;foo",
        "/admin;x=1/",
        "/admin/.",
        "/admin/",
        "/x/..%2fadmin",
        "/x/..%5cadmin",
        "/%5cadmin",
        "/admin%2f..",
        // Spellings that start like an allowed path.
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/..;/admin",
        "/public;x/../admin",
        "/public/x/../../admin",
        "/public/%2e%2e%2fadmin",
        "/headers/../admin",
        "/headers%2f..%2fadmin",
        "/healthz/../admin",
        "/public/.%2e/admin?x=1",
        "/public\\..\\admin",
        "/x\\..\\admin",
    ];
    let mut wrong = Vec::new();
    for path in variants {
        let reply = get(inbound, path, "");
        if reply.status != 403 || reply.reason() != Some("forbidden") {
            wrong.push(format!("{path}: {} {:?}", reply.status, reply.reason()));
        }
    }
    assert!(
        wrong.is_empty(),
        "bypassed or mis-refused:\n{}",
        wrong.join("\n")
    );

    // `\` is not a valid first byte of a request target: hyper refuses it.
    let reply = get(inbound, "\\admin", "");
    assert_eq!(reply.status, 400, "{reply:?}");

    // The app sees the normalised path: these reach allowed routes.
    for path in [
        "/public/../healthz",
        "/%68ealthz",
        "//healthz",
        "/x/..%2fhealthz",
    ] {
        let reply = get(inbound, path, "");
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.body, "ok", "{path}");
    }
}

#[test]
fn the_default_header_count_limit_is_100() {
    // No `limits:` at all: 100 header fields (Host and Connection included).
    let (_app, app) = rest_app();
    let sidecar = crate::inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    let fits = get(inbound, "/healthz", &fields(98));
    assert_eq!(fits.status, 200, "{fits:?}");
    let over = get(inbound, "/healthz", &fields(99));
    assert_eq!(over.status, 431, "{over:?}");
}

#[test]
fn limits_answer_431_414_413() {
    let (_app, _sidecar, inbound) = proxy();

    // Header bytes (request line + headers): 8 KiB.
    let fits = get(
        inbound,
        "/healthz",
        &format!("X-Pad: {}\r\n", "a".repeat(7900)),
    );
    assert_eq!(fits.status, 200, "{fits:?}");
    let over = get(
        inbound,
        "/healthz",
        &format!("X-Pad: {}\r\n", "a".repeat(8300)),
    );
    assert_eq!(over.status, 431, "{over:?}");

    // Header count: 20 (Host and Connection included).
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    let fits = get(inbound, "/healthz", &fields(18));
    assert_eq!(fits.status, 200, "{fits:?}");
    let over = get(inbound, "/healthz", &fields(25));
    assert_eq!(over.status, 431, "{over:?}");

    // Request target: 512 bytes.
    let target = |len: usize| format!("/healthz?q={}", "a".repeat(len - "/healthz?q=".len()));
    let fits = get(inbound, &target(512), "");
    assert_eq!(fits.status, 200, "{fits:?}");
    let over = get(inbound, &target(513), "");
    assert_eq!(over.status, 414, "{over:?}");
    assert_eq!(over.reason(), Some("uri_too_long"));

    // Body: 1 KiB. A declared length over it is refused before any byte.
    let post = |headers: &str, body: &str| {
        send(
            inbound,
            format!(
                "POST /sha256 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n{headers}\r\n{body}"
            )
            .as_bytes(),
        )
    };
    let fits = post("Content-Length: 1024\r\n", &"b".repeat(1024));
    assert_eq!(fits.status, 200, "{fits:?}");
    assert!(fits.body.contains("\"bytes\":1024"), "{fits:?}");
    let over = post("Content-Length: 1025\r\n", "");
    assert_eq!(over.status, 413, "{over:?}");
    assert_eq!(over.reason(), Some("body_too_large"));

    // A chunked body is cut once it grows past the limit.
    let chunked = |sizes: &[usize]| {
        sizes
            .iter()
            .map(|n| format!("{n:x}\r\n{}\r\n", "c".repeat(*n)))
            .chain(["0\r\n\r\n".to_string()])
            .collect::<String>()
    };
    let fits = post("Transfer-Encoding: chunked\r\n", &chunked(&[500, 524]));
    assert_eq!(fits.status, 200, "{fits:?}");
    assert!(fits.body.contains("\"bytes\":1024"), "{fits:?}");
    let over = post("Transfer-Encoding: chunked\r\n", &chunked(&[600, 600]));
    assert_eq!(over.status, 413, "{over:?}");
    assert_eq!(over.reason(), Some("body_too_large"));
}

#[test]
fn slowloris_is_cut_off_while_others_are_served() {
    let (_app, _sidecar, inbound) = proxy();
    let mut slow = TcpStream::connect(inbound).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: app\r\nX-Slow: ")
        .unwrap();
    let mut served_meanwhile = 0;
    let cut_off = loop {
        assert!(
            start.elapsed() < HEADER_TIMEOUT + Duration::from_secs(8),
            "a client trickling its head was not cut off"
        );
        // Trickle one byte; a write or read failing, or EOF, is the cut.
        if slow.write_all(b"a").is_err() {
            break start.elapsed();
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
        // Meanwhile others are served, on their own connections.
        if start.elapsed() < HEADER_TIMEOUT {
            let reply = get(inbound, "/healthz", "");
            assert_eq!(reply.status, 200, "{reply:?}");
            served_meanwhile += 1;
        }
    };
    assert!(served_meanwhile > 0);
    assert!(
        cut_off >= HEADER_TIMEOUT - Duration::from_millis(500),
        "cut off after {cut_off:?}, before the header timeout"
    );
    // And the proxy still serves afterwards.
    assert_eq!(get(inbound, "/healthz", "").status, 200);
}

#[test]
fn hop_by_hop_headers_do_not_reach_the_app() {
    let (_app, _sidecar, inbound) = proxy();
    let reply = get(
        inbound,
        "/headers",
        "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Secret: 1\r\nX-Kept: 1\r\nConnection: x-secret\r\n",
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = reply.body.to_ascii_lowercase();
    assert!(seen.contains("x-kept"), "{seen}");
    for name in ["keep-alive", "proxy-connection", "x-secret"] {
        assert!(
            !seen.contains(&format!("\"{name}\"")),
            "{name} reached the app: {seen}"
        );
    }
}

#[test]
fn http2_requests_get_the_same_hygiene() {
    let (_app, _sidecar, inbound) = proxy();
    let h2 = |args: &[&str], target: &str| {
        let url = format!("http://{inbound}{target}");
        let mut all = vec![
            "--http2-prior-knowledge",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ];
        all.extend_from_slice(args);
        all.push(&url);
        let out = curl(&all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(h2(&[], "/healthz"), "2 200");
    for path in [
        "/public/../admin",
        "/public/..%2fadmin",
        "/%61dmin",
        "//admin;x",
    ] {
        assert_eq!(h2(&[], path), "2 403", "{path}");
    }
    assert_eq!(h2(&[], &format!("/healthz?q={}", "a".repeat(600))), "2 414");
    let big = format!("X-Pad: {}", "a".repeat(9000));
    assert_eq!(h2(&["-H", &big], "/healthz"), "2 431");
    let body = "b".repeat(2000);
    assert_eq!(h2(&["--data-binary", &body], "/sha256"), "2 413");
    let body = "b".repeat(1000);
    assert_eq!(h2(&["--data-binary", &body], "/sha256"), "2 200");
}
