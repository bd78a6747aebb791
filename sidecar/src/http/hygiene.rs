//! Request hygiene, right below the errors layer on every listener, before
//! policy, routing and anything else that reads the request: request
//! smuggling shapes refused, paths normalised so no route or policy can be
//! bypassed, and the request limits.
//!
//! Reads: `limits` from the running settings, per request; on HTTP/1, the
//! framing headers of the request head as sent ([`RawHead`], recorded by
//! [`WatchHeads`] under `http::serve`), since hyper keeps only one of several
//! equal `Content-Length` lines and drops `Content-Length` next to
//! `Transfer-Encoding`.
//! Writes: the request URI's path, normalised (query kept), so every layer
//! below and the upstream see one spelling; [`OriginalPath`], the path as
//! received; a request body that fails with [`HygieneError::BodyTooLarge`]
//! once over `limits.max_body`.
//! Errors: [`HygieneError`]: 400 (smuggling shapes, bad paths), 431, 414,
//! 413. A refused HTTP/1 request closes its connection (`connection: close`).
//!
//! hyper refuses on its own, before this layer: malformed `Content-Length`,
//! differing `Content-Length` lines, `Transfer-Encoding` on HTTP/1.0 or not
//! ending in `chunked`, obs-fold, CR / LF / NUL in header values, heads over
//! `max_header_bytes` or `max_headers` (431). Slow heads are cut by the
//! connection's parking stream: [`WatchHeads`] knows when a head began,
//! and past `header_timeout` the connection is closed.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use mesh_api::config::EncodedSlashes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::Layer;

use super::{Body, BodyError, HttpService};
use crate::config::{LimitSettings, Settings};
use crate::telemetry::RequestInfo;
use crate::{errors, lock, BoxError};

/// A request this layer refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HygieneError {
    /// Two framings at once: the classic request smuggling shape.
    #[error("request has both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` line, or a comma list in one.
    #[error("request has more than one Content-Length")]
    MultipleContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    #[error("request has an invalid Content-Length")]
    InvalidContentLength,
    /// Any `Transfer-Encoding` but exactly `chunked` on HTTP/1.1.
    #[error("request has a Transfer-Encoding other than chunked")]
    UnsupportedTransferEncoding,
    /// HTTP/1.1 without `Host`.
    #[error("request has no Host header")]
    MissingHost,
    /// More than one `Host`.
    #[error("request has more than one Host header")]
    MultipleHost,
    /// `Host` names another authority than the absolute-form target or
    /// HTTP/2 `:authority`.
    #[error("request Host header does not match its target")]
    HostMismatch,
    /// A header value holding CR, LF or NUL.
    #[error("request header value contains a forbidden character")]
    InvalidHeaderValue,
    /// `%` not followed by two hex digits.
    #[error("request path has invalid percent-encoding")]
    InvalidPercentEncoding,
    /// NUL in the path, raw or `%00`.
    #[error("request path contains NUL")]
    NulInPath,
    /// `%2F` / `%5C` where the route refuses them.
    #[error("request path contains an encoded slash")]
    EncodedSlash,
    /// The normalised path is not a valid request target.
    #[error("request path is invalid")]
    InvalidPath,
    /// Request line and headers over `limits.max_header_bytes`.
    #[error("request header section is too large")]
    HeaderTooLarge,
    /// More header fields than `limits.max_headers`.
    #[error("request has too many header fields")]
    TooManyHeaders,
    /// Request target over `limits.max_uri`.
    #[error("request target is too long")]
    UriTooLong,
    /// Request body over `limits.max_body` (or a route's `max_body`).
    #[error("request body is too large")]
    BodyTooLarge,
}

impl HygieneError {
    /// The refusal's reason on `mesh_policy_denials_total{policy="hygiene"}`.
    pub fn label(&self) -> &'static str {
        match self {
            HygieneError::ContentLengthWithTransferEncoding => {
                "content_length_with_transfer_encoding"
            }
            HygieneError::MultipleContentLength => "multiple_content_length",
            HygieneError::InvalidContentLength => "invalid_content_length",
            HygieneError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            HygieneError::MissingHost => "missing_host",
            HygieneError::MultipleHost => "multiple_host",
            HygieneError::HostMismatch => "host_mismatch",
            HygieneError::InvalidHeaderValue => "invalid_header_value",
            HygieneError::InvalidPercentEncoding => "invalid_percent_encoding",
            HygieneError::NulInPath => "nul_in_path",
            HygieneError::EncodedSlash => "encoded_slash",
            HygieneError::InvalidPath => "invalid_path",
            HygieneError::HeaderTooLarge => "header_too_large",
            HygieneError::TooManyHeaders => "too_many_headers",
            HygieneError::UriTooLong => "uri_too_long",
            HygieneError::BodyTooLarge => "body_too_large",
        }
    }
}

/// The request path exactly as the client sent it, before normalisation;
/// in the extensions of every request below this layer whose path
/// normalisation changed (absent: the path is as sent, so it has no
/// encoded slash, which normalisation decodes). A route that refuses
/// encoded slashes checks it with [`normalize_path`] and
/// [`EncodedSlashes::Reject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalPath(pub String);

/// The hygiene layer; reads `limits` from the running settings per request.
pub fn layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let settings = settings.clone();
        crate::http::direct_fn(move |mut req: Request<Body>| {
            let limits = &settings.load().limits;
            match check_head(&mut req, limits) {
                Ok(body_limit) => inner.call_ref(limit_body(req, body_limit)),
                Err(err) => {
                    if let Some(info) = req.extensions().get::<RequestInfo>() {
                        info.set_denied("hygiene", err.label());
                    }
                    let grpc = super::is_grpc(req.headers());
                    super::ready(Ok(refusal(err, req.version(), grpc)))
                }
            }
        })
    })
}

/// The error's response; on HTTP/1 the connection closes after it, since
/// what follows a refused head cannot be trusted to be framed as it says.
fn refusal(err: HygieneError, version: Version, grpc: bool) -> Response<Body> {
    let mut response = errors::response(&BoxError::from(err), grpc);
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Every check, in the order of the status a client should see first.
pub(crate) fn check(
    mut req: Request<Body>,
    limits: &LimitSettings,
) -> Result<Request<Body>, HygieneError> {
    let body_limit = check_head(&mut req, limits)?;
    Ok(limit_body(req, body_limit))
}

/// Every check of the head, which is normalised; the limit its body still
/// needs, if any.
fn check_head(req: &mut Request<Body>, limits: &LimitSettings) -> Result<BodyLimit, HygieneError> {
    let fields = Fields::of(req.headers());
    check_sizes(req, &fields, limits)?;
    check_framing(req, &fields)?;
    check_host(req, &fields)?;
    if fields.bad_value {
        return Err(HygieneError::InvalidHeaderValue);
    }
    // Decided before the target is rewritten, told after its errors.
    let limit = body_limit(req, &fields, limits.max_body);
    normalize_target(req)?;
    limit
}

/// What the checks need of the header fields, gathered in one pass
/// rather than a lookup per question.
#[derive(Default)]
struct Fields<'a> {
    /// `name:value\n` summed over the fields.
    bytes: usize,
    /// Values across the `Content-Length` lines (commas separate them), and the first line.
    content_lengths: usize,
    content_length: Option<&'a HeaderValue>,
    /// `Transfer-Encoding` lines, and the first.
    transfer_encodings: usize,
    transfer_encoding: Option<&'a HeaderValue>,
    /// `Host` lines, and the first.
    hosts: usize,
    host: Option<&'a HeaderValue>,
    /// CR, LF or NUL in a value: they never belong there (RFC 9110 §5.5).
    bad_value: bool,
}

impl<'a> Fields<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut fields = Fields::default();
        for (name, value) in headers {
            let bytes = value.as_bytes();
            fields.bytes += name.as_str().len() + bytes.len() + 2;
            fields.bad_value |= memchr::memchr3(b'\r', b'\n', 0, bytes).is_some();
            if *name == header::CONTENT_LENGTH {
                fields.content_lengths += bytes.split(|b| *b == b',').count();
                fields.content_length.get_or_insert(value);
            } else if *name == header::TRANSFER_ENCODING {
                fields.transfer_encodings += 1;
                fields.transfer_encoding.get_or_insert(value);
            } else if *name == header::HOST {
                fields.hosts += 1;
                fields.host.get_or_insert(value);
            }
        }
        fields
    }
}

/// 431 and 414. hyper enforces the exact HTTP/1 limits itself; these hold
/// for HTTP/2 and, as a lower bound of the bytes sent, for HTTP/1.
fn check_sizes(
    req: &Request<Body>,
    fields: &Fields<'_>,
    limits: &LimitSettings,
) -> Result<(), HygieneError> {
    if req.headers().len() > limits.max_headers {
        return Err(HygieneError::TooManyHeaders);
    }
    let target = target_len(req.uri(), req.version());
    if target > limits.max_uri {
        return Err(HygieneError::UriTooLong);
    }
    // `METHOD target HTTP/1.1\n`, then `name:value\n` per field.
    let line = req.method().as_str().len() + target + 11;
    if line + fields.bytes > limits.max_header_bytes {
        return Err(HygieneError::HeaderTooLarge);
    }
    Ok(())
}

/// The request target's length as sent: absolute-form and authority-form
/// count their authority; HTTP/2 sends the authority apart from `:path`.
fn target_len(uri: &Uri, version: Version) -> usize {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if version >= Version::HTTP_2 {
        return path;
    }
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            scheme.as_str().len() + 3 + authority.as_str().len() + path
        }
        (None, Some(authority)) => authority.as_str().len() + path,
        _ => path,
    }
}

/// Exactly one way to find where the body ends.
fn check_framing(req: &Request<Body>, fields: &Fields<'_>) -> Result<(), HygieneError> {
    // Absent: a plain head (HTTP/2, or an HTTP/1 head with no framing lines).
    let raw = req
        .extensions()
        .get::<RawHead>()
        .copied()
        .unwrap_or_default();
    let lengths = fields.content_lengths.max(raw.content_lengths);
    let chunked = raw.transfer_encoding || fields.transfer_encodings > 0;
    if lengths > 0 && chunked {
        return Err(HygieneError::ContentLengthWithTransferEncoding);
    }
    if lengths > 1 {
        return Err(HygieneError::MultipleContentLength);
    }
    if let Some(length) = fields.content_length {
        if digits(length.as_bytes()).is_none() {
            return Err(HygieneError::InvalidContentLength);
        }
    }
    if chunked {
        let only_chunked = match (fields.transfer_encoding, fields.transfer_encodings) {
            (Some(coding), 1) => coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked"),
            _ => false,
        };
        if !only_chunked || req.version() != Version::HTTP_11 {
            return Err(HygieneError::UnsupportedTransferEncoding);
        }
    }
    Ok(())
}

/// A plain decimal number, no sign, no spaces (a `Content-Length` value).
pub(crate) fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// One unambiguous target: `Host` once (required on HTTP/1.1), and equal to
/// the absolute-form target's or HTTP/2 `:authority` when both are sent.
fn check_host(req: &Request<Body>, fields: &Fields<'_>) -> Result<(), HygieneError> {
    if fields.hosts > 1 {
        return Err(HygieneError::MultipleHost);
    }
    match (fields.host, req.uri().authority()) {
        (None, _) if req.version() == Version::HTTP_11 => Err(HygieneError::MissingHost),
        (Some(host), Some(authority)) if !same_authority(host, authority, req.uri()) => {
            Err(HygieneError::HostMismatch)
        }
        _ => Ok(()),
    }
}

/// Equal ignoring case and the scheme's default port.
fn same_authority(host: &HeaderValue, authority: &Authority, uri: &Uri) -> bool {
    let default_port: &[u8] = match uri.scheme_str() {
        Some("https") => b":443",
        Some("http") => b":80",
        _ => b"",
    };
    let host = without_default_port(host.as_bytes(), default_port);
    let authority = without_default_port(authority.as_str().as_bytes(), default_port);
    host.eq_ignore_ascii_case(authority)
}

/// `authority` trimmed, without a trailing `default_port` (`:443`, or empty).
fn without_default_port<'a>(authority: &'a [u8], default_port: &[u8]) -> &'a [u8] {
    let authority = authority.trim_ascii();
    if default_port.is_empty() {
        return authority;
    }
    authority.strip_suffix(default_port).unwrap_or(authority)
}

/// Rewrites the URI's path to its normal form and records the original.
/// `*` (OPTIONS) and authority-form (CONNECT) targets have no path.
fn normalize_target(req: &mut Request<Body>) -> Result<(), HygieneError> {
    if !req.uri().path().starts_with('/') {
        return Ok(());
    }
    let Cow::Owned(path) = normalize(req.uri().path(), EncodedSlashes::Decode)? else {
        return Ok(());
    };
    let original = OriginalPath(req.uri().path().to_owned());
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| HygieneError::InvalidPath)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| HygieneError::InvalidPath)?;
    req.extensions_mut().insert(original);
    Ok(())
}

/// A limit a body must be held to as it streams, if it needs one.
type BodyLimit = Option<u64>;

/// 413 at once for a declared length over `max`; a body that may be
/// longer than `max` is to be cut once over it ([`limit_body`]).
fn body_limit(
    req: &Request<Body>,
    fields: &Fields<'_>,
    max: Option<u64>,
) -> Result<BodyLimit, HygieneError> {
    let Some(max) = max else {
        return Ok(None);
    };
    let declared = fields.content_length.and_then(|v| digits(v.as_bytes()));
    if declared.is_some_and(|n| n > max) {
        return Err(HygieneError::BodyTooLarge);
    }
    if req.body().size_hint().upper().is_some_and(|n| n <= max) {
        return Ok(None);
    }
    Ok(Some(max))
}

/// `req` with its body cut once over `limit`.
fn limit_body(req: Request<Body>, limit: BodyLimit) -> Request<Body> {
    match limit {
        Some(max) => req.map(|body| limited(body, max)),
        None => req,
    }
}

/// `body`, failing with [`HygieneError::BodyTooLarge`] before it yields more
/// than `max` bytes in all.
pub fn limited(body: Body, max: u64) -> Body {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    Limited::new(body, max)
        .map_err(|err: BoxError| {
            if err.is::<LengthLimitError>() {
                return BodyError(Box::new(HygieneError::BodyTooLarge));
            }
            match err.downcast::<BodyError>() {
                Ok(err) => *err,
                Err(err) => BodyError(err),
            }
        })
        .boxed_unsync()
}

/// The normal form of `path` as a new string; see [`normalize`].
pub fn normalize_path(path: &str, slashes: EncodedSlashes) -> Result<String, HygieneError> {
    normalize(path, slashes).map(Cow::into_owned)
}

/// The normal form of a request path, borrowed when `path` already is:
/// unreserved characters percent-decoded (other escapes kept, hex in upper
/// case), `\` taken as `/`, `;params` dropped from every segment, empty and
/// `.` segments removed, `..` removing the segment before it (never above
/// the root); a trailing slash is kept. Encoded slashes (`%2F`, `%5C`) are
/// separators, refused, or kept encoded inside their segment, as `slashes`
/// says. NUL (raw or `%00`) and `%` without two hex digits are refused.
pub fn normalize(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, HygieneError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 1);
    // Where each kept segment's `/` starts in `out`, for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut segment: Vec<u8> = Vec::new();
    let mut in_params = false;
    let mut i = 0;
    loop {
        let unit = match bytes.get(i) {
            None => Unit::End,
            Some(b'/' | b'\\') => Unit::Separator,
            Some(0) => return Err(HygieneError::NulInPath),
            Some(b';') => Unit::Params,
            Some(b'%') => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or(HygieneError::InvalidPercentEncoding)?;
                i += 2;
                match byte {
                    0 => return Err(HygieneError::NulInPath),
                    b'/' | b'\\' => match slashes {
                        EncodedSlashes::Decode => Unit::Separator,
                        EncodedSlashes::Reject => return Err(HygieneError::EncodedSlash),
                        EncodedSlashes::Keep => Unit::Encoded(byte),
                    },
                    b if is_unreserved(b) => Unit::Byte(b),
                    b => Unit::Encoded(b),
                }
            }
            Some(&b) => Unit::Byte(b),
        };
        i += 1;
        match unit {
            Unit::Separator | Unit::End => {
                push_segment(&mut out, &mut starts, &segment);
                in_params = false;
                if matches!(unit, Unit::End) {
                    // A path ending in a directory (`/a/`, `/a/.`, `/a/b/..`) keeps its slash.
                    if matches!(segment.as_slice(), b"" | b"." | b"..") && out.last() != Some(&b'/')
                    {
                        out.push(b'/');
                    }
                    break;
                }
                segment.clear();
            }
            _ if in_params => {}
            Unit::Params => in_params = true,
            Unit::Byte(b) => segment.push(b),
            Unit::Encoded(b) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                segment.extend_from_slice(&[
                    b'%',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    if out == bytes {
        return Ok(Cow::Borrowed(path));
    }
    // Only whole input characters and ASCII were copied: still UTF-8.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| HygieneError::InvalidPath)
}

/// One step of reading a path.
#[derive(Clone, Copy)]
enum Unit {
    Separator,
    Params,
    Byte(u8),
    Encoded(u8),
    End,
}

fn push_segment(out: &mut Vec<u8>, starts: &mut Vec<usize>, segment: &[u8]) {
    match segment {
        b"" | b"." => {}
        b".." => {
            if let Some(start) = starts.pop() {
                out.truncate(start);
            }
        }
        _ => {
            starts.push(out.len());
            out.push(b'/');
            out.extend_from_slice(segment);
        }
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The common case, checked without allocating: a rooted path with nothing
/// to decode, no `\` or `;`, and no empty, `.` or `..` segment (a trailing
/// slash aside).
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.bytes().any(|b| matches!(b, b'%' | b'\\' | b';' | 0)) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// What an HTTP/1 request head carried about its framing, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHead {
    /// `Content-Length` values: lines, and the items of comma lists.
    pub content_lengths: usize,
    /// A `Transfer-Encoding` line was present.
    pub transfer_encoding: bool,
}

/// The request heads read on one HTTP/1 connection, oldest first, each
/// waiting for hyper to hand over its request (in the same order).
#[derive(Debug, Clone, Default)]
pub struct RawHeads(Arc<Mutex<VecDeque<RawHead>>>);

/// Heads read ahead of their requests (pipelining) before recording stops.
const MAX_QUEUED_HEADS: usize = 32;

impl RawHeads {
    /// The head of the next request hyper hands over; `None` once the
    /// connection stopped being watched (an upgrade, framing it could not
    /// follow).
    pub fn next(&self) -> Option<RawHead> {
        lock(&self.0).pop_front()
    }

    /// Records a head; false when too many wait.
    fn push(&self, head: RawHead) -> bool {
        let mut queue = lock(&self.0);
        if queue.len() >= MAX_QUEUED_HEADS {
            return false;
        }
        queue.push_back(head);
        true
    }
}

/// An HTTP/1 connection's reads, watched for request heads: follows the
/// message framing (`Content-Length`, chunked) to find each head, records
/// its [`RawHead`], and steps aside for good on a tunnel (CONNECT,
/// `Upgrade`) or anything hyper would refuse.
/// Its writes pass through, a response of a few small buffers joined into
/// one ([`super::poll_write_coalesced`]): every HTTP/1 response goes through
/// this wrapper and no other of its own.
pub struct WatchHeads<I> {
    io: I,
    heads: RawHeads,
    state: Framing,
    line: Vec<u8>,
    max_line: usize,
    head: HeadFacts,
    /// When the head being read began to arrive: read only when a read
    /// ends inside a head, so a head that comes whole costs no clock read.
    began: Option<Instant>,
}

/// Where the watcher is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Off,
}

/// What the head being read said so far.
#[derive(Debug, Default)]
struct HeadFacts {
    raw: RawHead,
    started: bool,
    length: Option<u64>,
    bad_length: bool,
    chunked: bool,
    tunnel: bool,
}

impl<I> WatchHeads<I> {
    /// Watches `io`, recording into `heads`; a line over `max_line` bytes
    /// stops the watch (hyper refuses such a head).
    pub fn new(io: I, heads: RawHeads, max_line: usize) -> Self {
        Self {
            io,
            heads,
            state: Framing::Head,
            line: Vec::new(),
            max_line,
            head: HeadFacts::default(),
            began: None,
        }
    }

    /// The stream watched.
    pub fn into_inner(self) -> I {
        self.io
    }

    /// Inside a request head: part of it read, not all.
    fn mid_head(&self) -> bool {
        self.state == Framing::Head && (self.head.started || !self.line.is_empty())
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                Framing::Off => return,
                Framing::Body(left) | Framing::ChunkData(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (Framing::Body(_), 0) => Framing::Head,
                        (Framing::Body(_), n) => Framing::Body(n),
                        (_, 0) => Framing::ChunkEnd,
                        (_, n) => Framing::ChunkData(n),
                    };
                }
                Framing::Head | Framing::ChunkSize | Framing::ChunkEnd | Framing::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', bytes) else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > self.max_line {
                            self.stop();
                        }
                        return;
                    };
                    let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
                    bytes = rest;
                    if self.line.is_empty() {
                        // The whole line is in this read: looked at in place.
                        if !self.end_line(line) {
                            return;
                        }
                    } else {
                        let mut carried = std::mem::take(&mut self.line);
                        carried.extend_from_slice(line);
                        let more = self.end_line(&carried);
                        carried.clear();
                        if self.state != Framing::Off {
                            self.line = carried;
                        }
                        if !more {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A line ended (`line` without its `\n`); false when the watch stopped.
    fn end_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_line {
            self.stop();
            return false;
        }
        self.on_line(line);
        true
    }

    fn stop(&mut self) {
        self.state = Framing::Off;
        self.line = Vec::new();
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            Framing::Head => self.on_head_line(line),
            Framing::ChunkSize => {
                let size = line
                    .split(|b| *b == b';')
                    .next()
                    .map(<[u8]>::trim_ascii)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                self.state = match size {
                    Some(0) => Framing::Trailers,
                    Some(n) => Framing::ChunkData(n),
                    None => Framing::Off,
                };
            }
            Framing::ChunkEnd if line.is_empty() => self.state = Framing::ChunkSize,
            Framing::Trailers if line.is_empty() => self.state = Framing::Head,
            Framing::Trailers => {}
            _ => self.stop(),
        }
    }

    fn on_head_line(&mut self, line: &[u8]) {
        let head = &mut self.head;
        if !head.started {
            // Empty lines before a request line are skipped (RFC 9112 §2.2).
            if !line.is_empty() {
                head.started = true;
                head.tunnel = line.starts_with(b"CONNECT ");
            }
            return;
        }
        if !line.is_empty() {
            let Some(colon) = memchr::memchr(b':', line) else {
                return;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                head.raw.content_lengths += value.split(|b| *b == b',').count();
                match digits(value) {
                    Some(n) if head.length.is_none_or(|prev| prev == n) => head.length = Some(n),
                    _ => head.bad_length = true,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                head.raw.transfer_encoding = true;
                // hyper goes by the last coding of the last line.
                head.chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                head.tunnel = true;
            }
            return;
        }
        let head = std::mem::take(&mut self.head);
        self.began = None;
        if !self.heads.push(head.raw) {
            return self.stop();
        }
        self.state = if head.tunnel {
            Framing::Off
        } else if head.raw.transfer_encoding {
            if head.chunked {
                Framing::ChunkSize
            } else {
                Framing::Off
            }
        } else if head.bad_length {
            Framing::Off
        } else {
            match head.length {
                Some(n) if n > 0 => Framing::Body(n),
                _ => Framing::Head,
            }
        };
        if self.state == Framing::Off {
            self.stop();
        }
    }
}

impl<I> super::park::Boundary for WatchHeads<I> {
    fn between_messages(&self) -> bool {
        self.state == Framing::Head && !self.head.started && self.line.is_empty()
    }

    fn head_began(&self) -> Option<Instant> {
        self.began.filter(|_| self.mid_head())
    }

    fn release(&mut self) {
        self.line = Vec::new();
        let mut queued = crate::lock(&self.heads.0);
        if queued.is_empty() {
            *queued = VecDeque::new();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchHeads<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.scan(&buf.filled()[before..]);
            if self.began.is_none() && self.mid_head() {
                self.began = Some(Instant::now());
            }
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchHeads<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        super::poll_write_coalesced(Pin::new(&mut self.io), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{empty, full};

    fn norm(path: &str) -> Result<String, HygieneError> {
        normalize_path(path, EncodedSlashes::Decode)
    }

    #[test]
    fn bypass_variants_of_admin_normalise_to_admin() {
        let table = [
            ("/admin", "/admin"),
            ("//admin", "/admin"),
            ("///admin//", "/admin/"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/x/y/../../admin", "/admin"),
            ("/../admin", "/admin"),
            ("/../../../admin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E/admin", "/admin"),
            ("/.%2e/admin", "/admin"),
            ("/x/..%2fadmin", "/admin"),
            ("/x/..%2Fadmin", "/admin"),
            ("/x/..%5cadmin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%61%64%6D%69%6e", "/admin"),
            ("/admin;foo", "/admin"),
            ("/admin;x=1/", "/admin/"),
            ("/x;a=b/..;/admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/", "/admin/"),
            ("\\admin", "/admin"),
            ("/x\\..\\admin", "/admin"),
            ("/%5cadmin", "/admin"),
            ("/admin%2f..", "/"),
            ("/admin/x/..", "/admin/"),
        ];
        for (raw, want) in table {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
        // Case is kept: `/Admin` is another path.
        assert_eq!(norm("/Admin").as_deref(), Ok("/Admin"));
    }

    #[test]
    fn other_escapes_stay_encoded_in_upper_case() {
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/a%c3%bc").as_deref(), Ok("/a%C3%BC"));
        assert_eq!(norm("/a%3bb").as_deref(), Ok("/a%3Bb"), "encoded ; is data");
        assert_eq!(norm("/a%3F").as_deref(), Ok("/a%3F"));
    }

    #[test]
    fn nul_and_bad_escapes_are_refused() {
        for raw in ["/a%00b", "/a\0b"] {
            assert_eq!(norm(raw), Err(HygieneError::NulInPath), "{raw:?}");
        }
        for raw in ["/a%", "/a%2", "/a%zz", "/%g0admin", "/a%%41"] {
            assert_eq!(
                norm(raw),
                Err(HygieneError::InvalidPercentEncoding),
                "{raw}"
            );
        }
    }

    #[test]
    fn encoded_slashes_follow_the_route() {
        let keep = |p| normalize_path(p, EncodedSlashes::Keep);
        assert_eq!(keep("/x/..%2fadmin").as_deref(), Ok("/x/..%2Fadmin"));
        assert_eq!(keep("/a%2Fb/../c").as_deref(), Ok("/c"));
        assert_eq!(keep("/a%5cb").as_deref(), Ok("/a%5Cb"));
        assert_eq!(keep("/%2e%2e/admin").as_deref(), Ok("/admin"));
        let reject = |p| normalize_path(p, EncodedSlashes::Reject);
        assert_eq!(reject("/a%2fb"), Err(HygieneError::EncodedSlash));
        assert_eq!(reject("/a%5Cb"), Err(HygieneError::EncodedSlash));
        assert_eq!(reject("/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(reject("/a/./b").as_deref(), Ok("/a/b"));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/a", "/a/b/", "/a.b/.c/..d", "/a%20b", "/a%C3%BC"] {
            assert!(
                matches!(normalize(path, EncodedSlashes::Decode), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        assert!(matches!(
            normalize("//a", EncodedSlashes::Decode),
            Ok(Cow::Owned(_))
        ));
    }

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(empty()).unwrap()
    }

    fn limits() -> LimitSettings {
        LimitSettings {
            max_header_bytes: 8192,
            max_headers: 20,
            max_uri: 256,
            max_body: Some(100),
            ..LimitSettings::default()
        }
    }

    fn refused(req: Request<Body>) -> Option<HygieneError> {
        check(req, &limits()).err()
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        use HygieneError::*;
        let h11 = Version::HTTP_11;
        let host = ("host", "app");
        let cases: Vec<(Request<Body>, HygieneError)> = vec![
            (
                request(
                    h11,
                    "/",
                    &[
                        host,
                        ("content-length", "5"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                ContentLengthWithTransferEncoding,
            ),
            (
                request(
                    h11,
                    "/",
                    &[host, ("content-length", "5"), ("content-length", "5")],
                ),
                MultipleContentLength,
            ),
            (
                request(h11, "/", &[host, ("content-length", "5, 5")]),
                MultipleContentLength,
            ),
            (
                request(h11, "/", &[host, ("content-length", "+5")]),
                InvalidContentLength,
            ),
            (
                request(h11, "/", &[host, ("transfer-encoding", "gzip, chunked")]),
                UnsupportedTransferEncoding,
            ),
            (
                request(h11, "/", &[host, ("transfer-encoding", "chunked, chunked")]),
                UnsupportedTransferEncoding,
            ),
            (
                request(
                    h11,
                    "/",
                    &[
                        host,
                        ("transfer-encoding", "chunked"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                UnsupportedTransferEncoding,
            ),
            (
                request(h11, "/", &[host, ("transfer-encoding", "identity")]),
                UnsupportedTransferEncoding,
            ),
            (
                request(Version::HTTP_10, "/", &[("transfer-encoding", "chunked")]),
                UnsupportedTransferEncoding,
            ),
            (request(h11, "/", &[]), MissingHost),
            (request(h11, "/", &[host, ("host", "other")]), MultipleHost),
            (
                request(h11, "http://app/", &[("host", "evil")]),
                HostMismatch,
            ),
            (
                request(Version::HTTP_2, "http://app/", &[("host", "evil")]),
                HostMismatch,
            ),
            (request(h11, "/a%00", &[host]), NulInPath),
            (request(h11, "/a%zz", &[host]), InvalidPercentEncoding),
        ];
        for (req, want) in cases {
            let shape = format!("{:?} {} {:?}", req.version(), req.uri(), req.headers());
            assert_eq!(refused(req), Some(want), "{shape}");
        }
        // What hyper leaves of a head that had both framings still counts.
        let mut req = request(h11, "/", &[host, ("transfer-encoding", "chunked")]);
        req.extensions_mut().insert(RawHead {
            content_lengths: 1,
            transfer_encoding: true,
        });
        assert_eq!(refused(req), Some(ContentLengthWithTransferEncoding));
        let mut req = request(h11, "/", &[host, ("content-length", "5")]);
        req.extensions_mut().insert(RawHead {
            content_lengths: 2,
            transfer_encoding: false,
        });
        assert_eq!(refused(req), Some(MultipleContentLength));
    }

    #[test]
    fn ordinary_requests_pass() {
        let ok = [
            request(Version::HTTP_11, "/x?q=1", &[("host", "app")]),
            request(
                Version::HTTP_11,
                "/",
                &[("host", "app"), ("content-length", "5")],
            ),
            request(
                Version::HTTP_11,
                "/",
                &[("host", "app"), ("transfer-encoding", "Chunked")],
            ),
            request(Version::HTTP_10, "/", &[]),
            request(Version::HTTP_11, "http://app:80/", &[("host", "APP")]),
            request(Version::HTTP_2, "http://app/", &[]),
            request(Version::HTTP_2, "https://app/", &[("host", "app:443")]),
            request(Version::HTTP_11, "*", &[("host", "app")]),
        ];
        for req in ok {
            let shape = format!("{:?} {}", req.version(), req.uri());
            assert!(check(req, &limits()).is_ok(), "{shape}");
        }
    }

    #[test]
    fn the_target_is_rewritten_and_the_original_kept() {
        let req = request(
            Version::HTTP_11,
            "/x/..%2fadmin;v=1?a=%2e%2e",
            &[("host", "app")],
        );
        let req = check(req, &limits()).unwrap();
        assert_eq!(req.uri(), "/admin?a=%2e%2e");
        assert_eq!(
            req.extensions().get::<OriginalPath>(),
            Some(&OriginalPath("/x/..%2fadmin;v=1".into()))
        );
        let req = request(Version::HTTP_2, "https://app/a//b", &[]);
        let req = check(req, &limits()).unwrap();
        assert_eq!(req.uri(), "https://app/a/b");
    }

    #[test]
    fn limits_have_their_status() {
        let long = format!("/{}", "a".repeat(300));
        assert_eq!(
            refused(request(Version::HTTP_11, &long, &[("host", "app")])),
            Some(HygieneError::UriTooLong)
        );
        let many: Vec<(String, String)> = (0..21).map(|i| (format!("x-{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            refused(request(Version::HTTP_2, "http://app/", &many)),
            Some(HygieneError::TooManyHeaders)
        );
        let big = "v".repeat(9000);
        assert_eq!(
            refused(request(Version::HTTP_2, "http://app/", &[("x-big", &big)])),
            Some(HygieneError::HeaderTooLarge)
        );
        assert_eq!(
            refused(request(
                Version::HTTP_11,
                "/",
                &[("host", "app"), ("content-length", "101")]
            )),
            Some(HygieneError::BodyTooLarge)
        );
    }

    #[tokio::test]
    async fn a_body_growing_past_the_limit_fails_typed() {
        let small = limited(full("x".repeat(100)), 100);
        assert_eq!(small.collect().await.unwrap().to_bytes().len(), 100);
        let big = limited(full("x".repeat(101)), 100);
        let err = big.collect().await.unwrap_err();
        assert!(matches!(
            err.0.downcast_ref::<HygieneError>(),
            Some(HygieneError::BodyTooLarge)
        ));
    }

    #[tokio::test]
    async fn refusals_close_http1_connections() {
        let res = refusal(HygieneError::MissingHost, Version::HTTP_11, false);
        assert_eq!(res.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[header::CONNECTION], "close");
        assert_eq!(res.headers()[errors::REASON_HEADER], "bad_request");
        let res = refusal(HygieneError::HostMismatch, Version::HTTP_2, false);
        assert!(res.headers().get(header::CONNECTION).is_none());
    }

    fn watch(stream: &[u8]) -> Vec<RawHead> {
        let heads = RawHeads::default();
        let mut watch = WatchHeads::new((), heads.clone(), 8192);
        // Byte by byte and all at once read the same.
        for byte in stream {
            watch.scan(std::slice::from_ref(byte));
        }
        let one_by_one: Vec<RawHead> = std::iter::from_fn(|| heads.next()).collect();
        let mut watch = WatchHeads::new((), heads.clone(), 8192);
        watch.scan(stream);
        let all: Vec<RawHead> = std::iter::from_fn(|| heads.next()).collect();
        assert_eq!(one_by_one, all);
        all
    }

    #[test]
    fn heads_are_found_across_bodies() {
        let plain = RawHead::default();
        let stream = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nGET /\r\n\
            POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;x=y\r\nGET\r\n0\r\nTrailer: t\r\n\r\n\
            \r\nGET /c HTTP/1.1\nHost: a\n\n\
            POST /d HTTP/1.1\r\ncontent-length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            watch(stream),
            vec![
                RawHead {
                    content_lengths: 1,
                    ..plain
                },
                RawHead {
                    transfer_encoding: true,
                    ..plain
                },
                plain,
                RawHead {
                    content_lengths: 1,
                    transfer_encoding: true,
                },
            ]
        );
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            watch(stream),
            vec![RawHead {
                content_lengths: 2,
                ..plain
            }]
        );
    }

    #[test]
    fn tunnels_stop_the_watch() {
        let stream = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\
            GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(watch(stream).len(), 1);
        let stream = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\
            GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(watch(stream).len(), 1);
    }
}
