//! Opaque TCP: redis-server with redis-cli, half-close, and a
//! server-speaks-first service that must not wait for detection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{wait_until, Proc, Sidecar};

use crate::{closed_port, inbound_sidecar};

#[test]
fn redis_through_the_sidecar() {
    let port = closed_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let _redis = Proc::adopt("redis-server", child);
    wait_until(Duration::from_secs(10), "redis-server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let sidecar = inbound_sidecar(format!("127.0.0.1:{port}").parse().unwrap(), "");
    let inbound = sidecar.listener("inbound", None);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &inbound.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "mesh", "opaque"]), "OK");
    assert_eq!(cli(&["GET", "mesh"]), "opaque");
    assert!(sidecar.metric("mesh_connections_total{listener=\"inbound\",protocol=\"tcp\"}") >= 2.0);
}

/// Reads everything until the client half-closes, then answers and closes.
fn spawn_half_close_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            let _ = write!(stream, "received {} bytes", got.len());
        }
    });
    addr
}

#[test]
fn opaque_tcp_passes_half_close() {
    let server = spawn_half_close_server();
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    raw:\n      listen: 127.0.0.1:0\n      protocol: tcp\n      discovery: {{ endpoints: [{server}] }}\n"
    ));
    let mut stream = TcpStream::connect(sidecar.listener("outbound", Some("raw"))).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&[7u8; 100_000]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "received 100000 bytes");
}

#[test]
fn server_speaks_first_on_an_opaque_port_without_waiting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"220 mail.test ESMTP ready\r\n");
        }
    });
    // Detection would wait 10 s for a client that says nothing first.
    let sidecar = inbound_sidecar(
        app,
        &format!("  detect_timeout: 10s\n  opaque_ports: [{}]\n", app.port()),
    );
    let start = Instant::now();
    let mut stream = TcpStream::connect(sidecar.listener("inbound", None)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut banner = [0u8; 27];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"220 mail.test ESMTP ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "banner waited for detection: {:?}",
        start.elapsed()
    );
}

/// An echo server that answers every connection until the returned flag is set.
fn spawn_echo(
    reply: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                // Closing the listener: the port refuses from now on.
                return;
            }
            if let Ok(mut stream) = stream {
                let _ = stream.write_all(reply.as_bytes());
            }
        }
    });
    (addr, stop)
}

#[test]
fn a_tcp_cluster_survives_one_endpoint_dying() {
    let (a, stop_a) = spawn_echo("a");
    let (b, _stop_b) = spawn_echo("b");
    let sidecar = Sidecar::start(&format!(
        "service: client\nadmin: {{ listen: 127.0.0.1:0 }}\noutbound:\n  upstreams:\n    echo:\n      listen: 127.0.0.1:0\n      protocol: tcp\n      balance: round_robin\n      discovery: {{ endpoints: [{a}, {b}] }}\n"
    ));
    let port = sidecar.listener("outbound", Some("echo"));
    let read = || {
        let mut stream = TcpStream::connect(port).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let before: Vec<String> = (0..4).map(|_| read()).collect();
    assert!(
        before.contains(&"a".to_string()) && before.contains(&"b".to_string()),
        "{before:?}"
    );
    // Stop a: the next accept sees the flag and drops the listener.
    stop_a.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = TcpStream::connect(a);
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<String> = (0..10).map(|_| read()).collect();
    assert!(
        after.iter().all(|r| r == "b"),
        "every connection reaches the survivor: {after:?}"
    );
}
