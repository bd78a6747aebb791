//! `mesh-ctl dashboard`: the dashboard page for several proxies, served
//! by a small HTTP/1.1 server on `std::net` (one thread per connection, a
//! bounded number at once, one request per connection).
//! `GET /dashboard` (and `/`) is the page the proxies serve themselves
//! (`mesh_api::golden::DASHBOARD_PAGE`); `GET /dashboard/data` scrapes
//! every proxy and answers the golden signals and service graph of all of
//! them, rates over about the last 10 s of polls.
//! Reads: requests from the browser (head only, bounded), the proxies'
//! admin APIs. Writes: responses; the page's URL on stdout at start.
//! Errors: a listen address that cannot be bound is a problem (exit 1);
//! a malformed request is answered 400 and closed; proxies that cannot be
//! read are listed in the data (`proxies[].error`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mesh_api::golden::{Dashboard, History, ProxyState, Scrape, DASHBOARD_PAGE};

use crate::commands::Report;
use crate::signals::{pairs, scrape_all};

/// How far back the rates look.
const WINDOW: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Time a browser has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    admins: Vec<String>,
    timeout: Duration,
    history: Mutex<History<BTreeMap<String, Scrape>>>,
    open: AtomicUsize,
}

/// `mesh-ctl dashboard`: serves until the process is stopped.
pub fn dashboard(listen: &str, admins: &[String], timeout: Duration) -> Report {
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(err) => return failed(format!("cannot listen on {listen}: {err}")),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => return failed(format!("cannot listen on {listen}: {err}")),
    };
    let mut stdout = io::stdout().lock();
    let announced =
        writeln!(stdout, "dashboard: http://{addr}/dashboard").and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(err) = announced {
        return failed(format!("cannot write output: {err}"));
    }
    let server = Arc::new(Server {
        admins: admins.to_vec(),
        timeout,
        history: Mutex::new(History::new(WINDOW)),
        open: AtomicUsize::new(0),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if server.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            server.open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let server = server.clone();
        std::thread::spawn(move || {
            // Errors writing to a browser that went away are its business.
            let _ = serve(&server, stream);
            server.open.fetch_sub(1, Ordering::AcqRel);
        });
    }
    Report::default()
}

fn failed(problem: String) -> Report {
    Report {
        stdout: String::new(),
        problems: vec![problem],
    }
}

/// Answers one request on `stream`.
fn serve(server: &Server, mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
        );
    };
    let mut request_line = head.split("\r\n").next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next(), request_line.next());
    let path = target
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    match (method, path) {
        (Some("GET"), "/" | "/dashboard" | "/dashboard/") => respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            DASHBOARD_PAGE.as_bytes(),
        ),
        (Some("GET"), "/dashboard/data") => {
            let body = serde_json::to_vec(&data(server)).unwrap_or_else(|_| b"{}".to_vec());
            respond(&mut stream, "200 OK", "application/json", &body)
        }
        (Some("GET"), _) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n"),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"method not allowed\n",
        ),
    }
}

/// The request head up to its blank line; `None` when it is not HTTP or too large.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8(head).ok())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Every proxy now, against the history kept across polls.
fn data(server: &Server) -> Dashboard {
    let answers = scrape_all(&server.admins, server.timeout);
    let mut proxies = Vec::new();
    let mut scrapes = BTreeMap::new();
    for (admin, answer) in answers {
        match answer {
            Ok(scrape) => {
                proxies.push(ProxyState {
                    admin: admin.clone(),
                    service: Some(scrape.service.clone()),
                    error: None,
                });
                scrapes.insert(admin, scrape);
            }
            Err(error) => proxies.push(ProxyState {
                admin,
                service: None,
                error: Some(error),
            }),
        }
    }
    let mut history = server
        .history
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let baseline = history.record(Instant::now(), scrapes.clone());
    let window = baseline.map(|(_, age)| age);
    Dashboard::new(proxies, &pairs(baseline.map(|(b, _)| b), &scrapes), window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_client::AdminClient;

    fn start(admins: Vec<String>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = Arc::new(Server {
            admins,
            timeout: Duration::from_millis(500),
            history: Mutex::new(History::new(WINDOW)),
            open: AtomicUsize::new(0),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(&server, stream);
            }
        });
        addr
    }

    #[test]
    fn serves_the_page_and_data_and_refuses_the_rest() {
        let addr = start(vec!["127.0.0.1:1".into()]);
        let client = AdminClient::new(&addr, Duration::from_secs(5));
        let page = client.request("GET", "/dashboard").expect("page");
        assert_eq!(page.status, 200);
        assert_eq!(page.body, DASHBOARD_PAGE.as_bytes());
        let data = client.request("GET", "/dashboard/data").expect("data");
        assert_eq!(data.status, 200);
        let data: serde_json::Value = serde_json::from_slice(&data.body).expect("json");
        assert_eq!(data["proxies"][0]["admin"], "127.0.0.1:1");
        assert!(data["proxies"][0]["error"].is_string(), "{data}");
        assert_eq!(data["signals"], serde_json::json!([]));
        assert_eq!(client.request("GET", "/nope").expect("404").status, 404);
        assert_eq!(
            client.request("POST", "/dashboard").expect("405").status,
            405
        );
    }

    #[test]
    fn the_page_is_self_contained() {
        // No resource from elsewhere: the only URL is the SVG namespace.
        let without_ns = DASHBOARD_PAGE.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "src=", "<link", "@import"] {
            assert!(!without_ns.contains(needle), "{needle} in the page");
        }
        assert!(DASHBOARD_PAGE.contains("/dashboard/data"));
    }
}
