//! Edge connection admission: the PROXY protocol (v1 and v2 headers built
//! by hand) giving the client address the app sees in `X-Forwarded-For`,
//! `allow` / `deny` on that address, and connection limits per client
//! address, per listener and across edge listeners (clients bound to
//! 127.0.0.2 / 127.0.0.3 with socket2).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use mesh_tests::{wait_until, Sidecar};
use serde_json::Value;

use crate::edge_tls::{edge_addrs, edge_sidecar, edge_yaml};
use crate::rest_app;

/// A PROXY protocol v2 header: TCP over IPv4 from `client` to `dst`.
fn v2_header(client: Ipv4Addr, client_port: u16, dst: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(dst_ip) = dst.ip() else {
        panic!("IPv4 listener expected")
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // AF_INET, STREAM
    header.extend_from_slice(&12u16.to_be_bytes());
    header.extend_from_slice(&client.octets());
    header.extend_from_slice(&dst_ip.octets());
    header.extend_from_slice(&client_port.to_be_bytes());
    header.extend_from_slice(&dst.port().to_be_bytes());
    header
}

/// A PROXY protocol v1 header from `client` to `dst`.
fn v1_header(client: &str, dst: SocketAddr) -> Vec<u8> {
    format!("PROXY TCP4 {client} {} 40001 {}\r\n", dst.ip(), dst.port()).into_bytes()
}

/// A connection from `source` (an address on loopback) to `addr`.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `prefix`, then a keep-alive GET for `path`; the status and body,
/// or `None` when the proxy closed the connection instead of answering.
fn get(stream: &mut TcpStream, prefix: &[u8], path: &str) -> Option<(u16, String)> {
    let mut request = prefix.to_vec();
    request.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n").as_bytes(),
    );
    stream.write_all(&request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return None,
            Err(err) => panic!("reading the response: {err}"),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = buf[head_end..].to_vec();
    loop {
        let done = if chunked {
            body.ends_with(b"0\r\n\r\n")
        } else {
            body.len() >= length
        };
        if done {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(err) => panic!("reading the body: {err}"),
        }
    }
    let body = String::from_utf8_lossy(&body).to_string();
    let body = if chunked { dechunk(&body) } else { body };
    Some((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// One request on a fresh connection from 127.0.0.1 after `prefix`.
fn once(addr: SocketAddr, prefix: &[u8], path: &str) -> Option<(u16, String)> {
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, addr);
    get(&mut stream, prefix, path)
}

fn forwarded_for(answer: &(u16, String)) -> String {
    assert_eq!(answer.0, 200, "{}", answer.1);
    let headers: Value = serde_json::from_str(&answer.1).unwrap();
    headers["x-forwarded-for"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `listener` counted at least `at_least` refusals for `reason`
/// (a refused client may see the close before the count).
fn assert_refused(sidecar: &Sidecar, listener: &str, reason: &str, at_least: f64) {
    let series =
        format!("mesh_connections_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}");
    wait_until(Duration::from_secs(5), &series, || {
        sidecar.metric(&series) >= at_least
    });
}

#[test]
fn proxy_protocol_gives_the_client_address() {
    let (_app, app) = rest_app();
    let log_dir = tempfile::tempdir().unwrap();
    let access_log = log_dir.path().join("access.log");
    let yaml = edge_yaml(
        app,
        "    - listen: 127.0.0.1:0\n      proxy_protocol: true\n",
    );
    let sidecar = Sidecar::start(&format!(
        "{yaml}log: {{ access: {} }}\n",
        access_log.display()
    ));
    let addr = edge_addrs(&sidecar)[0];

    let v2 = once(
        addr,
        &v2_header(Ipv4Addr::new(203, 0, 113, 7), 40000, addr),
        "/headers",
    );
    let v1 = once(addr, &v1_header("198.51.100.9", addr), "/headers");
    // LOCAL (a balancer's health check): the TCP peer stays the client.
    let local = once(addr, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", "/headers");
    assert!(v2.is_some(), "a v2 header is accepted");
    assert!(v1.is_some(), "a v1 header is accepted");
    assert!(local.is_some(), "a v2 LOCAL header is accepted");
    // No header, or a broken one: closed without an answer.
    assert_eq!(once(addr, b"", "/headers"), None);
    assert_eq!(
        once(addr, b"PROXY TCP4 999.0.0.1 1.2.3.4 1 2\r\n", "/headers"),
        None
    );
    assert_refused(&sidecar, "edge:0", "proxy_protocol", 2.0);

    // The app sees the address from the header.
    assert_eq!(forwarded_for(&v2.unwrap()), "203.0.113.7");
    assert_eq!(forwarded_for(&v1.unwrap()), "198.51.100.9");
    assert_eq!(forwarded_for(&local.unwrap()), "127.0.0.1");

    // So does the access log.
    wait_until(Duration::from_secs(5), "three access log lines", || {
        std::fs::read_to_string(&access_log).is_ok_and(|text| text.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&access_log).unwrap();
    let clients: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|line| line["client"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        clients,
        ["203.0.113.7", "198.51.100.9", "127.0.0.1"],
        "{text}"
    );
}

#[test]
fn admission_follows_a_reload_without_restarting_the_listener() {
    let (_app, app) = rest_app();
    let listener = "    - listen: 127.0.0.1:0\n      proxy_protocol: true\n";
    let sidecar = edge_sidecar(app, listener);
    let addr = edge_addrs(&sidecar)[0];
    let from = |ip: [u8; 4]| {
        once(
            addr,
            &v2_header(Ipv4Addr::from(ip), 40000, addr),
            "/healthz",
        )
    };
    assert!(from([203, 0, 113, 7]).is_some());

    sidecar.write_config(&edge_yaml(
        app,
        &format!("{listener}      deny: [203.0.113.0/24]\n"),
    ));
    wait_until(Duration::from_secs(10), "the new deny list", || {
        from([203, 0, 113, 7]).is_none()
    });
    assert!(from([198, 51, 100, 1]).is_some());
    assert_eq!(edge_addrs(&sidecar), [addr], "the same listener");
}

#[test]
fn allow_and_deny_close_connections_from_refused_networks() {
    let (_app, app) = rest_app();
    let sidecar = edge_sidecar(
        app,
        "    - listen: 127.0.0.1:0\n      proxy_protocol: true\n      deny: [203.0.113.0/24]\n    - listen: 127.0.0.1:0\n      proxy_protocol: true\n      allow: [198.51.100.0/24]\n      deny: [198.51.100.66]\n",
    );
    let addrs = edge_addrs(&sidecar);
    let from = |listener: usize, ip: [u8; 4]| {
        let addr = addrs[listener];
        once(
            addr,
            &v2_header(Ipv4Addr::from(ip), 40000, addr),
            "/headers",
        )
    };

    assert_eq!(from(0, [203, 0, 113, 7]), None, "denied network");
    let admitted = from(0, [198, 51, 100, 1]);
    assert!(admitted.is_some(), "another network gets through");
    assert_eq!(from(1, [192, 0, 2, 1]), None, "not in allow");
    assert_eq!(from(1, [198, 51, 100, 66]), None, "in allow, but denied");
    let allowed = from(1, [198, 51, 100, 2]);
    assert!(allowed.is_some(), "in allow");
    assert_refused(&sidecar, "edge:0", "deny", 1.0);
    assert_refused(&sidecar, "edge:1", "deny", 2.0);

    assert_eq!(forwarded_for(&admitted.unwrap()), "198.51.100.1");
    assert_eq!(forwarded_for(&allowed.unwrap()), "198.51.100.2");
}

#[test]
fn connections_per_client_address_are_limited() {
    let (_app, app) = rest_app();
    let sidecar = edge_sidecar(
        app,
        "    - listen: 127.0.0.1:0\n      max_connections_per_ip: 2\n",
    );
    let addr = edge_addrs(&sidecar)[0];
    let client = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 3);

    // Two idle keep-alive connections from one address...
    let mut first = connect_from(client, addr);
    let mut second = connect_from(client, addr);
    let answers = [
        get(&mut first, b"", "/healthz"),
        get(&mut second, b"", "/healthz"),
    ];
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
    // ...then a third from it is closed, while another address is served.
    let mut third = connect_from(client, addr);
    assert_eq!(get(&mut third, b"", "/healthz"), None);
    let mut elsewhere = connect_from(other, addr);
    let served = get(&mut elsewhere, b"", "/healthz");
    assert!(served.is_some());
    assert_refused(&sidecar, "edge:0", "ip_limit", 1.0);

    // One closed: the address connects again.
    drop(first);
    let mut again = None;
    wait_until(Duration::from_secs(10), "a connection slot freed", || {
        let mut stream = connect_from(client, addr);
        let answer = get(&mut stream, b"", "/healthz");
        let ok = answer.is_some();
        again = Some((stream, answer));
        ok
    });
    drop(second);

    assert_eq!(served.unwrap().0, 200);
    assert_eq!(again.unwrap().1.unwrap().0, 200);
    assert!(answers.iter().all(|a| a.as_ref().unwrap().0 == 200));
}

#[test]
fn listener_and_global_connection_limits() {
    let (_app, app) = rest_app();
    let listeners =
        "    - listen: 127.0.0.1:0\n      max_connections: 1\n    - listen: 127.0.0.1:0\n";
    let yaml = edge_yaml(app, listeners).replace("edge:\n", "edge:\n  max_connections: 2\n");
    let sidecar = Sidecar::start(&yaml);
    let addrs = edge_addrs(&sidecar);

    let mut first = connect_from(Ipv4Addr::LOCALHOST, addrs[0]);
    assert!(get(&mut first, b"", "/healthz").is_some());
    let mut over_listener = connect_from(Ipv4Addr::LOCALHOST, addrs[0]);
    assert_eq!(get(&mut over_listener, b"", "/healthz"), None);
    let mut second = connect_from(Ipv4Addr::LOCALHOST, addrs[1]);
    assert!(get(&mut second, b"", "/healthz").is_some());
    let mut over_global = connect_from(Ipv4Addr::LOCALHOST, addrs[1]);
    assert_eq!(get(&mut over_global, b"", "/healthz"), None);
    assert_refused(&sidecar, "edge:0", "listener_limit", 1.0);
    assert_refused(&sidecar, "edge:1", "global_limit", 1.0);

    drop(first);
    wait_until(Duration::from_secs(10), "a global slot freed", || {
        let mut stream = connect_from(Ipv4Addr::LOCALHOST, addrs[1]);
        get(&mut stream, b"", "/healthz").is_some()
    });
}
