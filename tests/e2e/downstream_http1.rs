//! The proxy's HTTP/1.1 server, seen by a client on a raw socket: plain
//! requests, requests with a body and one only hyper serves (`Expect`)
//! pipelined on one connection, each answered in order and framed as sent;
//! a caller that leaves mid-request takes the upstream call with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mesh_tests::py_service;

use crate::{curl_reply, inbound_sidecar};

/// One response read off the wire.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
    trailers: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads responses from a connection, one at a time.
struct Wire {
    conn: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn connect(addr: SocketAddr) -> Self {
        let conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Wire {
            conn,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.conn.write_all(bytes.as_bytes()).unwrap();
    }

    /// Reads until `buf` holds at least `n` bytes; false at the end of stream.
    fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            match self.conn.read(&mut chunk) {
                Ok(0) => return false,
                Ok(read) => self.buf.extend_from_slice(&chunk[..read]),
                Err(err) => panic!("read: {err}"),
            }
        }
        true
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill(self.buf.len() + 1), "closed mid-line");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        assert!(self.fill(n), "closed mid-body");
        self.buf.drain(..n).collect()
    }

    /// The next final response (interim ones skipped); `head_request`
    /// says it answers a HEAD.
    fn response(&mut self, head_request: bool) -> Response {
        loop {
            let response = self.one_response(head_request);
            if !(100..200).contains(&response.status) {
                return response;
            }
        }
    }

    fn one_response(&mut self, head_request: bool) -> Response {
        let mut head = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            head.push_str(&line);
            head.push('\n');
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut response = Response {
            status,
            head,
            body: Vec::new(),
            trailers: String::new(),
        };
        if head_request || (100..200).contains(&status) {
            return response;
        }
        if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = self.line();
                let size = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16).unwrap();
                if size == 0 {
                    break;
                }
                let data = self.take(size);
                response.body.extend_from_slice(&data);
                assert_eq!(self.line(), "");
            }
            loop {
                let line = self.line();
                if line.is_empty() {
                    break;
                }
                response.trailers.push_str(&line);
            }
        } else {
            let length = response
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            response.body = self.take(length);
        }
        response
    }

    fn closed(&mut self) -> bool {
        !self.fill(self.buf.len() + 1)
    }
}

#[test]
fn pipelined_requests_of_every_kind_are_answered_in_order_on_one_connection() {
    let (_app, app) = py_service("h1_upstream.py", &[]);
    let sidecar = inbound_sidecar(app, "");
    let mut wire = Wire::connect(sidecar.listener("inbound", None));

    // Plain requests, one with a body, then one hyper serves, in one write.
    wire.send(concat!(
        "GET /length HTTP/1.1\r\nHost: web\r\n\r\n",
        "HEAD /length HTTP/1.1\r\nHost: web\r\n\r\n",
        "POST /conns HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc",
        "POST /conns HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nxyz",
    ));
    let first = wire.response(false);
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    assert_eq!(first.header("x-kind"), Some("length"));
    let head = wire.response(true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("100"),
        "HEAD keeps the length"
    );
    let posted = wire.response(false);
    assert_eq!(posted.status, 200);
    assert!(
        posted.text().contains(r#""bodies": ["abc"]"#),
        "{}",
        posted.text()
    );
    let expected = wire.response(false);
    assert_eq!(expected.status, 200);
    assert!(
        expected.text().contains(r#""bodies": ["abc", "xyz"]"#),
        "{}",
        expected.text()
    );

    // Quiet long enough to park, then plain requests again.
    std::thread::sleep(Duration::from_millis(600));
    wire.send(concat!(
        "GET /chunked HTTP/1.1\r\nHost: web\r\nTE: trailers\r\n\r\n",
        "GET /length HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    ));
    let chunked = wire.response(false);
    assert_eq!(chunked.text(), "one two three");
    assert_eq!(chunked.trailers, "x-checksum: abc", "{}", chunked.head);
    let last = wire.response(false);
    assert_eq!(last.text(), "hello");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(wire.closed(), "Connection: close ends the connection");
}

#[test]
fn a_caller_leaving_mid_request_cancels_the_upstream_call() {
    let (_app, app) = py_service("h1_upstream.py", &[]);
    let sidecar = inbound_sidecar(app, "");
    let inbound = sidecar.listener("inbound", None);
    let mut wire = Wire::connect(inbound);
    wire.send("GET /hold HTTP/1.1\r\nHost: web\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    drop(wire);
    // The upstream holds the request 5 s unless its connection closes.
    let start = Instant::now();
    let abandoned = loop {
        let stats = curl_reply(&["-i", &format!("http://{inbound}/conns")]).json();
        let abandoned = stats["abandoned"].as_u64().unwrap_or_default();
        if abandoned > 0 || start.elapsed() > Duration::from_secs(4) {
            break abandoned;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(abandoned, 1, "the upstream call outlived its caller");
}
