//! The client of one proxy's admin API: a minimal HTTP/1.1 client over
//! `std::net::TcpStream`, one request per connection (`Connection: close`),
//! and one typed method per admin endpoint.
//! Reads: the response status line, headers and body, framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or the peer closing.
//! Writes: the request, nothing else.
//! Errors: `ClientError`, whose message names the admin address and what went
//! wrong, e.g. `cannot reach admin API at 127.0.0.1:15000: connection refused`.
//! Every byte from the peer is checked; sizes are bounded; nothing panics.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use mesh_api::admin::{
    CertInfo, ClusterInfo, ConfigStatus, ExplainAnswer, ExplainRequest, ListenerInfo, RoutesInfo,
    StatusInfo, VersionInfo,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest status line + headers accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (a big `/metrics` is a few hundred KiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A response: its status code and its body, de-chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Date` header, if any (`mesh-ctl check` compares clocks with it).
    pub date: Option<String>,
}

/// `GET /ready`: 200 `{"ready":true}`, or 503 `{"ready":false}` once draining.
#[derive(Debug, Deserialize)]
struct Readiness {
    ready: bool,
}

/// `POST /config/reload`: 200 `{"reloaded":true,"generation":N}` or
/// 400 `{"reloaded":false,"errors":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub reloaded: bool,
    /// The generation now running, when reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why the config was rejected, when not reloaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("bad status line {0:?}")]
    StatusLine(String),
    #[error("bad header line {0:?}")]
    Header(String),
    #[error("headers larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    #[error("bad chunk: {0}")]
    Chunk(&'static str),
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("connection closed before the end of the response")]
    Truncated,
}

/// What went wrong talking to one admin API.
#[derive(Debug)]
pub struct ClientError {
    /// The admin address as the user gave it.
    pub addr: String,
    /// `GET /ready`, or empty for a failure before any request.
    pub request: String,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Transport(String),
    #[error("malformed HTTP response: {0}")]
    Malformed(#[from] ParseError),
    #[error("answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl ClientError {
    /// Whether the proxy could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, ErrorKind::Address(_) | ErrorKind::Connect(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unreachable() {
            write!(f, "cannot reach admin API at {}: {}", self.addr, self.kind)
        } else {
            write!(
                f,
                "admin API at {}, {}: {}",
                self.addr, self.request, self.kind
            )
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

/// The admin API of one proxy.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    timeout: Duration,
}

impl AdminClient {
    /// `addr` is `HOST:PORT`; a leading `http://` and a trailing `/` are
    /// tolerated. `timeout` bounds the connect, and separately the exchange.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        let addr = addr.trim();
        let addr = addr.strip_prefix("http://").unwrap_or(addr);
        let addr = addr.strip_suffix('/').unwrap_or(addr);
        Self {
            addr: addr.to_string(),
            timeout,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.get_json("/version")
    }

    /// `true` when ready, `false` when draining.
    pub fn ready(&self) -> Result<bool, ClientError> {
        let response = self.request("GET", "/ready")?;
        let readiness: Readiness = self.decode("GET", "/ready", &response, &[200, 503])?;
        Ok(readiness.ready)
    }

    pub fn config(&self) -> Result<ConfigStatus, ClientError> {
        self.get_json("/config")
    }

    pub fn listeners(&self) -> Result<Vec<ListenerInfo>, ClientError> {
        self.get_json("/listeners")
    }

    pub fn clusters(&self) -> Result<Vec<ClusterInfo>, ClientError> {
        self.get_json("/clusters")
    }

    /// The proxy's workload identity and certificate; `None` when the proxy
    /// has no identity (it answers 404).
    pub fn certs(&self) -> Result<Option<CertInfo>, ClientError> {
        let response = self.request("GET", "/certs")?;
        if response.status == 404 {
            return Ok(None);
        }
        self.decode("GET", "/certs", &response, &[200]).map(Some)
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let response = self.request("GET", "/metrics")?;
        if response.status != 200 {
            return Err(self.status_error("GET", "/metrics", &response));
        }
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// Asks the proxy to re-read its config file now. A rejected config is an
    /// `Ok` outcome with `reloaded: false` and the errors.
    pub fn reload(&self) -> Result<ReloadOutcome, ClientError> {
        let response = self.request("POST", "/config/reload")?;
        self.decode("POST", "/config/reload", &response, &[200, 400])
    }

    /// `GET /status`: mode, service, uptime, config hash, identity, readiness.
    pub fn status(&self) -> Result<StatusInfo, ClientError> {
        self.get_json("/status")
    }

    /// `GET /routes`.
    pub fn routes(&self) -> Result<RoutesInfo, ClientError> {
        self.get_json("/routes")
    }

    /// `POST /explain`: what the proxy would do with `ask`.
    pub fn explain(&self, ask: &ExplainRequest) -> Result<ExplainAnswer, ClientError> {
        let body = serde_json::to_vec(ask).map_err(|e| self.error("POST", "/explain", e.into()))?;
        let response = self.send("POST", "/explain", &body)?;
        self.decode("POST", "/explain", &response, &[200])
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.request("GET", path)?;
        self.decode("GET", path, &response, &[200])
    }

    /// Decodes the JSON body of a response whose status is one of `expected`.
    fn decode<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        response: &Response,
        expected: &[u16],
    ) -> Result<T, ClientError> {
        if !expected.contains(&response.status) {
            return Err(self.status_error(method, path, response));
        }
        serde_json::from_slice(&response.body).map_err(|e| self.error(method, path, e.into()))
    }

    fn status_error(&self, method: &str, path: &str, response: &Response) -> ClientError {
        let body = String::from_utf8_lossy(&response.body);
        let mut body: String = body.trim().chars().take(200).collect();
        if body.is_empty() {
            body = "(empty body)".into();
        }
        let kind = ErrorKind::Status {
            status: response.status,
            body,
        };
        self.error(method, path, kind)
    }

    pub(crate) fn error(&self, method: &str, path: &str, kind: ErrorKind) -> ClientError {
        ClientError {
            addr: self.addr.clone(),
            request: format!("{method} {path}"),
            kind,
        }
    }

    /// Sends one request and reads the whole response.
    pub fn request(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        self.send(method, path, b"")
    }

    /// The head of a request with a body of `body_len` bytes (JSON when any).
    pub(crate) fn head(&self, method: &str, path: &str, body_len: usize) -> String {
        let content_type = if body_len > 0 {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mesh-ctl/{}\r\n\
             Accept: application/json, text/plain\r\n{content_type}Content-Length: {body_len}\r\n\
             Connection: close\r\n\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION"),
        )
    }

    /// Sends one request with `body` and reads the whole response.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<Response, ClientError> {
        let mut stream = self.connect()?;
        let fail = |kind| self.error(method, path, kind);
        let mut request = self.head(method, path, body.len()).into_bytes();
        request.extend_from_slice(body);
        let deadline = Instant::now() + self.timeout;
        stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| stream.write_all(&request))
            .map_err(|e| {
                fail(ErrorKind::Transport(format!(
                    "send failed: {}",
                    self.describe(&e)
                )))
            })?;

        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(fail(ErrorKind::Transport(self.timed_out())));
            }
            let read = stream
                .set_read_timeout(Some(remaining))
                .and_then(|()| stream.read(&mut chunk));
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = format!("read failed: {}", self.describe(&e));
                    return Err(fail(ErrorKind::Transport(reason)));
                }
            };
            buf.extend_from_slice(&chunk[..n]);
            let eof = n == 0;
            if buf.len() > MAX_HEAD + MAX_BODY {
                return Err(fail(ParseError::BodyTooLarge.into()));
            }
            match parse_response(&buf, eof) {
                Ok(Some(response)) => return Ok(response),
                Ok(None) if !eof => {}
                Ok(None) => return Err(fail(ParseError::Truncated.into())),
                Err(e) => return Err(fail(e.into())),
            }
        }
    }

    pub(crate) fn connect(&self) -> Result<TcpStream, ClientError> {
        let fail = |kind| ClientError {
            addr: self.addr.clone(),
            request: String::new(),
            kind,
        };
        if !self.addr.contains(':') {
            return Err(fail(ErrorKind::Address("expected HOST:PORT".into())));
        }
        let addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| fail(ErrorKind::Address(e.to_string())))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(fail(match last {
            Some(e) => ErrorKind::Connect(self.describe(&e)),
            None => ErrorKind::Address("resolves to no address".into()),
        }))
    }

    /// A short, lower-case reason for an I/O error.
    fn describe(&self, err: &io::Error) -> String {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out(),
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
            io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
            io::ErrorKind::BrokenPipe => "connection closed by peer".to_string(),
            _ => err.to_string(),
        }
    }

    fn timed_out(&self) -> String {
        format!("timed out after {:?}", self.timeout)
    }
}

/// Parses one response from the start of `buf`. `Ok(None)`: more bytes are
/// needed, which can only be when `eof` is false. Interim 1xx responses
/// (other than 101) are skipped; bytes after the response are ignored.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, ParseError> {
    let more = || {
        if eof {
            Err(ParseError::Truncated)
        } else {
            Ok(None)
        }
    };
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(ParseError::HeadTooLarge)
        } else {
            more()
        };
    };
    if head_len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let rest = &buf[head_len + 4..];
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;

    let mut content_length: Option<usize> = None;
    let mut date = None;
    let mut transfer_encoding: Option<bool> = None; // Some(is chunked)
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
            .ok_or_else(|| ParseError::Header(line.to_string()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let bad = || ParseError::ContentLength(value.to_string());
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let length: usize = value.parse().map_err(|_| ParseError::BodyTooLarge)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(bad());
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("date") {
            date = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            transfer_encoding = Some(last.eq_ignore_ascii_case("chunked"));
        }
    }

    if (100..200).contains(&status) && status != 101 {
        return parse_response(rest, eof);
    }
    let body = if status == 101 || status == 204 || status == 304 {
        Some(Vec::new())
    } else if let Some(chunked) = transfer_encoding {
        // Transfer-Encoding wins over Content-Length; a final coding other
        // than chunked means the body runs until the peer closes.
        if chunked {
            decode_chunked(rest, eof)?
        } else {
            read_until_close(rest, eof)
        }
    } else if let Some(length) = content_length {
        if length > MAX_BODY {
            return Err(ParseError::BodyTooLarge);
        }
        match rest.get(..length) {
            Some(body) => Some(body.to_vec()),
            None => return more(),
        }
    } else {
        read_until_close(rest, eof)
    };
    Ok(body.map(|body| Response { status, body, date }))
}

fn read_until_close(rest: &[u8], eof: bool) -> Option<Vec<u8>> {
    eof.then(|| rest.to_vec())
}

/// `HTTP/1.1 200 OK` → 200.
pub(crate) fn parse_status_line(line: &str) -> Result<u16, ParseError> {
    let bad = || ParseError::StatusLine(line.chars().take(100).collect());
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    Ok(status)
}

/// Decodes a chunked body: `SIZE[;ext]\r\nDATA\r\n` ... `0\r\n[trailers]\r\n`.
fn decode_chunked(buf: &[u8], eof: bool) -> Result<Option<Vec<u8>>, ParseError> {
    let more = || {
        if eof {
            Err(ParseError::Truncated)
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else {
            return if buf.len() - pos > 1024 {
                Err(ParseError::Chunk("size line too long"))
            } else {
                more()
            };
        };
        let line = &buf[pos..pos + line_len];
        let size_field = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_field = size_field.trim_ascii();
        if size_field.is_empty()
            || size_field.len() > 16
            || !size_field.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(ParseError::Chunk("size is not a hex number"));
        }
        let size_text = std::str::from_utf8(size_field).map_err(|_| ParseError::Chunk("size"))?;
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ParseError::BodyTooLarge)?;
        pos += line_len + 2;

        if size == 0 {
            // Trailer fields, then the empty line that ends the body.
            loop {
                let Some(trailer_len) = find(&buf[pos..], b"\r\n") else {
                    return more();
                };
                pos += trailer_len + 2;
                if trailer_len == 0 {
                    return Ok(Some(body));
                }
            }
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(ParseError::BodyTooLarge);
        }
        let Some(data) = buf.get(pos..pos + size + 2) else {
            return more();
        };
        if !data.ends_with(b"\r\n") {
            return Err(ParseError::Chunk("data not followed by CRLF"));
        }
        body.extend_from_slice(&data[..size]);
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn complete(text: &str) -> Response {
        match parse_response(text.as_bytes(), true) {
            Ok(Some(response)) => response,
            other => panic!("{text:?} did not parse: {other:?}"),
        }
    }

    fn rejects(text: &str) -> ParseError {
        match parse_response(text.as_bytes(), true) {
            Err(e) => e,
            other => panic!("{text:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn content_length_body() {
        let response =
            complete("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"ready\":true}");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"ready\":true}");
        // Complete before the peer closes, once Content-Length bytes are in.
        let text = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_response(text, false),
            Ok(Some(Response {
                status: 503,
                body: b"ok".to_vec(),
                date: None,
            }))
        );
        assert_eq!(parse_response(&text[..text.len() - 1], false), Ok(None));
        assert_eq!(
            parse_response(&text[..text.len() - 1], true),
            Err(ParseError::Truncated)
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;name=value\r\n, world\r\na\r\n0123456789\r\n\
                    0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(complete(text).body, b"hello, world0123456789");
        // Needs more bytes until the final empty line, whatever the split.
        for cut in 0..text.len() {
            assert_eq!(parse_response(&text.as_bytes()[..cut], false), Ok(None));
        }
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let text =
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                    2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(complete(text).body, b"hi");
    }

    #[test]
    fn body_until_close_without_framing() {
        let text = "HTTP/1.0 200 OK\r\n\r\n# TYPE x counter\nx_total 1\n";
        assert_eq!(parse_response(text.as_bytes(), false), Ok(None));
        assert_eq!(complete(text).body, b"# TYPE x counter\nx_total 1\n");
    }

    #[test]
    fn no_body_statuses_and_interim_responses() {
        assert_eq!(complete("HTTP/1.1 204 No Content\r\n\r\n").body, b"");
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(complete(text).status, 200);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(rejects(""), ParseError::Truncated));
        assert!(matches!(
            rejects("HTTP/1.1 200 OK\r\n"),
            ParseError::Truncated
        ));
        assert!(matches!(
            rejects("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            ParseError::StatusLine(_)
        ));
        assert!(matches!(
            rejects("HTTP/1.1 20 OK\r\n\r\n"),
            ParseError::StatusLine(_)
        ));
        assert!(matches!(
            rejects("HTTP/2 200\r\n\r\n"),
            ParseError::StatusLine(_)
        ));
        assert!(matches!(
            rejects("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
            ParseError::Header(_)
        ));
        assert!(matches!(
            rejects("HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx"),
            ParseError::Header(_)
        ));
        for length in ["-1", "+1", "1x", "", "0x10"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nx");
            assert!(
                matches!(rejects(&text), ParseError::ContentLength(_)),
                "{length:?}"
            );
        }
        assert!(matches!(
            rejects("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"),
            ParseError::ContentLength(_)
        ));
        assert_eq!(
            rejects("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            ParseError::BodyTooLarge
        );
        assert_eq!(
            rejects("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"),
            ParseError::BodyTooLarge
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            rejects(&format!("{chunked}zz\r\n")),
            ParseError::Chunk(_)
        ));
        assert!(matches!(
            rejects(&format!("{chunked}\r\n")),
            ParseError::Chunk(_)
        ));
        assert_eq!(
            rejects(&format!("{chunked}ffffffffffffffff\r\n")),
            ParseError::BodyTooLarge
        );
        assert_eq!(
            rejects(&format!("{chunked}3\r\nhello\r\n0\r\n\r\n")),
            ParseError::Chunk("data not followed by CRLF")
        );
        assert_eq!(
            rejects(&format!("{chunked}5\r\nhel")),
            ParseError::Truncated
        );
        assert_eq!(rejects(&format!("{chunked}0\r\n")), ParseError::Truncated);
        let huge_head = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(
            parse_response(huge_head.as_bytes(), false),
            Err(ParseError::HeadTooLarge)
        );
    }

    /// A one-shot server on a real socket: answers `response` (in small
    /// writes, to exercise the read loop) and hands back the request it got.
    fn serve_once(response: impl Into<Vec<u8>>) -> (String, thread::JoinHandle<String>) {
        let response = response.into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 in a test");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept the test client");
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            for piece in response.chunks(7) {
                stream.write_all(piece).expect("write the canned response");
                stream.flush().expect("flush the canned response");
            }
            String::from_utf8_lossy(&request).into_owned()
        });
        (addr.to_string(), server)
    }

    /// A response framed by `Content-Length`.
    fn with_length(status: &str, body: &str) -> String {
        let length = body.len();
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n{body}")
    }

    #[test]
    fn talks_to_a_real_socket() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
              c\r\n{\"version\":\"\r\n7\r\n0.1.0\"}\r\n0\r\n\r\n",
        );
        let client = AdminClient::new(&format!("http://{addr}/"), Duration::from_secs(5));
        let version = client.version().expect("canned /version answer decodes");
        assert_eq!(version.version, "0.1.0");
        let request = server.join().expect("server thread");
        assert!(
            request.starts_with("GET /version HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {addr}\r\n")),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[test]
    fn reload_rejection_is_an_outcome_not_an_error() {
        let (addr, server) = serve_once(with_length(
            "400 Bad Request",
            r#"{"reloaded":false,"errors":["service: empty"]}"#,
        ));
        let client = AdminClient::new(&addr, Duration::from_secs(5));
        let outcome = client.reload().expect("400 with errors decodes");
        assert_eq!(
            outcome,
            ReloadOutcome {
                reloaded: false,
                generation: None,
                errors: vec!["service: empty".into()]
            }
        );
        let request = server.join().expect("server thread");
        assert!(
            request.starts_with("POST /config/reload HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[test]
    fn certs_404_means_no_identity() {
        let (addr, server) = serve_once(with_length("404 Not Found", r#"{"error":"no identity"}"#));
        let client = AdminClient::new(&addr, Duration::from_secs(5));
        assert_eq!(client.certs().expect("404 is an answer"), None);
        let request = server.join().expect("server thread");
        assert!(request.starts_with("GET /certs HTTP/1.1\r\n"), "{request}");

        let body = r#"{"identity":"spiffe://mesh.local/svc/web","serial":"4a","not_before":0,
            "not_after":86400,"expires_in_seconds":3600,"trust_anchors":1,
            "files":{"cert":"c.pem","key":"k.pem","bundle":"b.pem"}}"#;
        let (addr, server) = serve_once(with_length("200 OK", body));
        let cert = AdminClient::new(&addr, Duration::from_secs(5))
            .certs()
            .expect("decodes")
            .expect("an identity");
        assert_eq!(cert.identity, "spiffe://mesh.local/svc/web");
        assert_eq!(cert.last_error, None);
        server.join().expect("server thread");
    }

    #[test]
    fn unexpected_status_names_address_request_and_body() {
        let (addr, server) = serve_once(with_length("404 Not Found", r#"{"error":"not found"}"#));
        let client = AdminClient::new(&addr, Duration::from_secs(5));
        let err = client.clusters().expect_err("404 is an error");
        assert_eq!(
            err.to_string(),
            format!("admin API at {addr}, GET /clusters: answered HTTP 404: {{\"error\":\"not found\"}}")
        );
        server.join().expect("server thread");
    }

    #[test]
    fn garbage_and_early_close_are_errors() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort");
        let client = AdminClient::new(&addr, Duration::from_secs(5));
        let err = client.metrics().expect_err("truncated body");
        assert!(err
            .to_string()
            .ends_with("connection closed before the end of the response"));
        server.join().expect("server thread");
    }

    #[test]
    fn connection_refused_is_reported_plainly() {
        // A port that was just free: bind, note it, close it.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 in a test");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        drop(listener);
        let err = AdminClient::new(&addr.to_string(), Duration::from_secs(5))
            .version()
            .expect_err("nothing listens");
        assert!(err.is_unreachable());
        assert_eq!(
            err.to_string(),
            format!("cannot reach admin API at {addr}: connection refused")
        );
    }

    #[test]
    fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 in a test");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        // Accepted by the kernel backlog, never answered.
        let err = AdminClient::new(&addr.to_string(), Duration::from_millis(200))
            .version()
            .expect_err("no answer");
        assert!(err.to_string().ends_with("timed out after 200ms"), "{err}");
        drop(listener);
    }

    #[test]
    fn address_without_port_is_rejected() {
        let err = AdminClient::new("localhost", Duration::from_secs(1))
            .version()
            .expect_err("no port");
        assert_eq!(
            err.to_string(),
            "cannot reach admin API at localhost: invalid address: expected HOST:PORT"
        );
    }
}
