//! `mesh-ctl tap`: streams one proxy's `GET /tap` (NDJSON over a chunked
//! response) and prints a line per event as it comes: aligned fields, or
//! the proxy's JSON lines as they are with `--output json`.
//! Stops after `--limit` events, after `--duration`, when the proxy ends the
//! stream (its limit, its drain), or on Ctrl-C.
//! Reads: the stream, framed by chunked encoding, checked and bounded.
//! Writes: stdout, a line at a time, flushed.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mesh_api::admin::{TapEvent, TapSkipped};

use crate::admin_client::{parse_response, parse_status_line, AdminClient, ErrorKind, ParseError};
use crate::commands::{Options, Output, Report};

/// Longest line accepted from the stream.
const MAX_LINE: usize = 1024 * 1024;

/// The filters and limits of a tap, as query parameters of `GET /tap`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TapArgs {
    pub filters: Vec<(&'static str, String)>,
    pub limit: Option<u64>,
    pub rate: Option<u32>,
    pub duration: Option<Duration>,
}

impl TapArgs {
    /// `/tap?name=value&...`, values percent-encoded.
    pub fn path(&self) -> String {
        let mut params: Vec<(&str, String)> = self.filters.clone();
        if let Some(limit) = self.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(rate) = self.rate {
            params.push(("rate", rate.to_string()));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={}", encode(value)))
            .collect();
        if query.is_empty() {
            "/tap".into()
        } else {
            format!("/tap?{}", query.join("&"))
        }
    }
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `mesh-ctl tap`.
pub fn tap(admin: &str, args: &TapArgs, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if opts.output == Output::Table {
        let _ = writeln!(out, "{}", header());
    }
    let mut seen = 0u64;
    let result = stream(&client, args, |line| {
        let text = match opts.output {
            Output::Json => line.to_string(),
            Output::Table => render(line),
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return false; // the reader went away
        }
        if serde_json::from_str::<TapEvent>(line).is_ok() {
            seen += 1;
        }
        args.limit.is_none_or(|limit| seen < limit)
    });
    match result {
        Ok(()) => Report::default(),
        Err(problem) => Report {
            stdout: String::new(),
            problems: vec![problem],
        },
    }
}

/// Reads the tap of `client`, handing each line to `line` until it says
/// stop, the stream ends or `args.duration` passes.
fn stream(
    client: &AdminClient,
    args: &TapArgs,
    mut line: impl FnMut(&str) -> bool,
) -> Result<(), String> {
    let path = args.path();
    let fail = |kind: ErrorKind| client.error("GET", &path, kind).to_string();
    let mut socket = client.connect().map_err(|e| e.to_string())?;
    socket
        .set_write_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| socket.write_all(client.head("GET", &path, 0).as_bytes()))
        .map_err(|e| fail(ErrorKind::Transport(format!("send failed: {e}"))))?;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut read = |buf: &mut Vec<u8>| -> Result<bool, String> {
        let timeout = match deadline {
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Ok(false),
            },
            None => None,
        };
        let _ = socket.set_read_timeout(timeout);
        match socket.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(fail(ErrorKind::Transport(format!("read failed: {e}")))),
        }
    };
    // The head: an error answer is whole; 200 starts the stream.
    let body_start = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = parse_status_line(head.lines().next().unwrap_or_default())
                .map_err(|e| fail(e.into()))?;
            if status == 200 {
                break end + 4;
            }
            match parse_response(&buf, false) {
                Ok(Some(response)) => {
                    let body = String::from_utf8_lossy(&response.body).trim().to_string();
                    return Err(fail(ErrorKind::Status { status, body }));
                }
                Ok(None) => {}
                Err(e) => return Err(fail(e.into())),
            }
        } else if buf.len() > 64 * 1024 {
            return Err(fail(ParseError::HeadTooLarge.into()));
        }
        if !read(&mut buf)? {
            return Err(fail(ParseError::Truncated.into()));
        }
    };
    buf.drain(..body_start);
    let mut chunks = Dechunk::default();
    let mut pending = Vec::new();
    loop {
        let ended = chunks
            .feed(&mut buf, &mut pending)
            .map_err(|e| fail(e.into()))?;
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let text: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&text);
            let text = text.trim();
            if !text.is_empty() && !line(text) {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE {
            return Err(fail(ParseError::BodyTooLarge.into()));
        }
        if ended || !read(&mut buf)? {
            return Ok(());
        }
    }
}

/// Incremental chunked decoding.
#[derive(Debug, Default)]
struct Dechunk {
    /// Data bytes left in the current chunk (then its CRLF).
    left: Option<usize>,
}

impl Dechunk {
    /// Moves the data of `buf` to `out`; `true` at the last chunk.
    fn feed(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, ParseError> {
        loop {
            match self.left {
                None => {
                    let Some(end) = find(buf, b"\r\n") else {
                        return if buf.len() > 1024 {
                            Err(ParseError::Chunk("size line too long"))
                        } else {
                            Ok(false)
                        };
                    };
                    let line = String::from_utf8_lossy(&buf[..end]);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| ParseError::Chunk("bad size"))?;
                    buf.drain(..end + 2);
                    if size == 0 {
                        return Ok(true);
                    }
                    self.left = Some(size);
                }
                Some(left) => {
                    if buf.len() < left + 2 {
                        let take = buf.len().min(left);
                        out.extend(buf.drain(..take));
                        self.left = Some(left - take);
                        if left - take > 0 || buf.len() < 2 {
                            return Ok(false);
                        }
                        continue;
                    }
                    out.extend(buf.drain(..left));
                    if &buf[..2] != b"\r\n" {
                        return Err(ParseError::Chunk("no CRLF after the data"));
                    }
                    buf.drain(..2);
                    self.left = None;
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header() -> String {
    format!(
        "{:<24} {:<8} {:<6} {:<7} {:>9}  {:<14} {:<21}  AUTHORITY PATH",
        "TIME", "DIR", "STATUS", "METHOD", "DURATION", "UPSTREAM", "ENDPOINT"
    )
}

/// One event as an aligned line; a skip notice as a `#` line.
fn render(line: &str) -> String {
    if let Ok(event) = serde_json::from_str::<TapEvent>(line) {
        let mut status = event.status.to_string();
        if let Some(error) = &event.error {
            status.push(' ');
            status.push_str(error);
        }
        return format!(
            "{:<24} {:<8} {:<6} {:<7} {:>7.1}ms  {:<14} {:<21}  {} {}",
            event.time,
            event.direction,
            status,
            event.method,
            event.duration_ms,
            event.upstream.as_deref().unwrap_or("-"),
            event.endpoint.as_deref().unwrap_or("-"),
            event.authority.as_deref().unwrap_or("-"),
            event.path,
        );
    }
    if let Ok(skipped) = serde_json::from_str::<TapSkipped>(line) {
        return format!("# {} events skipped ({})", skipped.skipped, skipped.reason);
    }
    format!("# {line}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query() {
        let args = TapArgs {
            filters: vec![("path_prefix", "/a b".into()), ("status", "5xx".into())],
            limit: Some(3),
            rate: None,
            duration: None,
        };
        assert_eq!(args.path(), "/tap?path_prefix=/a%20b&status=5xx&limit=3");
        assert_eq!(TapArgs::default().path(), "/tap");
    }

    #[test]
    fn chunks_are_decoded_whatever_the_reads() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n world\n\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut dechunk = Dechunk::default();
            let (mut buf, mut out) = (body[..split].to_vec(), Vec::new());
            let first = dechunk.feed(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&body[split..]);
            let ended = first || dechunk.feed(&mut buf, &mut out).unwrap();
            assert!(ended, "split at {split}");
            assert_eq!(out, b"hello world\n", "split at {split}");
        }
        let mut dechunk = Dechunk::default();
        assert!(dechunk
            .feed(&mut b"zz\r\n".to_vec(), &mut Vec::new())
            .is_err());
    }

    #[test]
    fn events_render_as_one_line() {
        let line = r#"{"time":"2026-01-01T00:00:00.000Z","direction":"edge","method":"GET","authority":"a.test","path":"/x","status":503,"error":"no_healthy_endpoints","attempts":0,"duration_ms":1.25}"#;
        let text = render(line);
        assert!(text.contains("503 no_healthy_endpoints"), "{text}");
        assert!(text.ends_with("a.test /x"), "{text}");
        assert_eq!(
            render(r#"{"skipped":4,"reason":"rate"}"#),
            "# 4 events skipped (rate)"
        );
    }
}
