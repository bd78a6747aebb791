//! The HTTP/1.1 client for requests without a body and without an upgrade:
//! nearly all of a mesh's HTTP/1 traffic. hyper's client drives each
//! connection from a task of its own and hands it each request over one
//! channel and the response back over another; here the caller's task
//! writes the head and reads the response itself, and the body is read by
//! whoever polls it (the downstream connection's task), so a request costs
//! no task, channel or wake-up of its own. The connection goes back to the
//! pool as soon as its response is complete: before the response is even
//! sent downstream when it arrived whole with its head.
//!
//! Requests with a body, and upgrades, keep hyper's client: a connection of
//! this kind becomes one of hyper's for them ([`Conn::into_hyper`]), and
//! stays one.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` (trailers passed on), then
//! `Content-Length` (conflicting values refused), else read to the close.
//! Informational (1xx) heads are skipped. A connection is reused only when
//! its response was complete, kept alive (`Connection: close`, HTTP/1.0
//! without `keep-alive`, a close-delimited body all end it) and nothing
//! followed it.
//! Errors: [`WireError`].

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;

use super::{ConnectError, ConnectionGuard, Inner, UpstreamIo};
use crate::http::hygiene::digits;
use crate::http::{has_token, head_end};

/// A response head larger than this is refused (hyper's client default).
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Header lines in a response head at most (hyper's client default).
const MAX_HEADERS: usize = 100;

/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// Trailer lines at most.
const MAX_TRAILERS: usize = 32;

/// Read at least this much at once; a body of known length up to
/// [`MAX_READ`] of it.
const READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// What went wrong on an upstream connection of this client.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The upstream closed before its response (head or body) was complete.
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    /// Reading or writing failed.
    #[error("reading from or writing to the upstream failed: {0}")]
    Io(#[source] std::io::Error),
    /// The upstream's bytes are not an HTTP/1.x response.
    #[error("the upstream's response is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
    /// The response head did not end within [`MAX_HEAD`] bytes.
    #[error("the upstream's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
}

impl WireError {
    /// The upstream spoke something other than HTTP/1.x.
    pub fn is_protocol(&self) -> bool {
        matches!(self, WireError::Invalid(_) | WireError::HeadTooLarge)
    }
}

/// Whether this client can send `req`: no body, no upgrade, no CONNECT,
/// HTTP/1.1 on the wire.
pub fn eligible<B: http_body::Body>(req: &Request<B>) -> bool {
    req.body().is_end_stream()
        && req.version() == Version::HTTP_11
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(header::UPGRADE)
}

/// An upstream HTTP/1.1 connection this client drives.
pub struct Conn {
    io: UpstreamIo,
    /// Read and not yet consumed (empty between responses); the request
    /// head is written from it too.
    buf: BytesMut,
    /// `buf` was grown past [`READ`] for a large body since the connection
    /// was last idle.
    grown: bool,
    guard: ConnectionGuard,
}

/// A request could not be sent, or its response not read.
pub struct Failed {
    /// Why.
    pub error: WireError,
    /// Whether the upstream may have the whole request: if not (its
    /// writing failed), it can go out on another connection.
    pub written: bool,
}

/// A response head and the connection its body is read from.
pub struct Answer {
    head: Head,
    conn: Conn,
}

/// A final response head: status, version, headers; how its body is
/// framed, and whether the connection may carry another request after it.
pub struct Head {
    /// Status, version and headers.
    pub response: Response<()>,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may be reused once the body is read.
    pub keep_alive: bool,
}

impl Conn {
    /// A new connection, counted by `guard` while it lives.
    pub fn new(io: UpstreamIo, guard: ConnectionGuard) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ),
            grown: false,
            guard,
        }
    }

    /// Still open, with nothing unasked-for sent by the upstream. Never
    /// waits: the connection's read readiness says whether anything (the
    /// upstream's close, stray bytes) arrived while it was idle.
    pub fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_fill(&mut cx, 1).is_pending()
    }

    /// Room in its read buffer (tests: what an idle connection holds).
    #[cfg(test)]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Hands the connection to hyper's client (for a request with a body or
    /// an upgrade), its I/O driven by a task counted by the guard.
    pub async fn into_hyper(self) -> Result<http1::SendRequest<super::Body>, ConnectError> {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(self.io))
            .await
            .map_err(ConnectError::Handshake)?;
        super::drive(self.guard, conn.with_upgrades());
        Ok(sender)
    }

    /// Sends `req` (which must be [`eligible`]) and reads its response head.
    /// The head is encoded before the future is made, so the future does
    /// not hold `req` (a request's body is not `Sync`, so a reference to it
    /// is not `Send`).
    pub fn send<B>(
        mut self,
        req: &Request<B>,
    ) -> impl std::future::Future<Output = Result<Answer, Failed>> + Send + 'static {
        encode(req, &mut self.buf);
        let head_request = req.method() == Method::HEAD;
        self.send_head(head_request)
    }

    /// The part of [`Conn::send`] that waits.
    async fn send_head(mut self, head_request: bool) -> Result<Answer, Failed> {
        let unwritten = |error| Failed {
            error,
            written: false,
        };
        let written = |error| Failed {
            error,
            written: true,
        };
        let mut sent = 0;
        poll_fn(|cx| self.poll_write_head(cx, &mut sent))
            .await
            .map_err(|e| unwritten(WireError::Io(e)))?;
        self.buf.clear();
        let mut searched = 0;
        loop {
            if let Some(head) =
                take_head(&mut self.buf, head_request, &mut searched).map_err(written)?
            {
                return Ok(Answer { head, conn: self });
            }
            match poll_fn(|cx| self.poll_fill(cx, READ)).await {
                Ok(0) => return Err(written(WireError::Closed)),
                Ok(_) => {}
                Err(e) => return Err(written(WireError::Io(e))),
            }
        }
    }

    /// Writes `buf` (the request head) from `sent` on, and flushes it.
    fn poll_write_head(
        &mut self,
        cx: &mut Context<'_>,
        sent: &mut usize,
    ) -> Poll<std::io::Result<()>> {
        while let Some(rest) = self.buf.get(*sent..).filter(|rest| !rest.is_empty()) {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads more into `buf`, with room for at least `want` bytes (up to
    /// [`MAX_READ`]); `Ok(0)` at the upstream's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<usize>> {
        let want = want.clamp(READ, MAX_READ);
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.grown |= want > READ;
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// The next frame of a body framed by `framing`; `None` at its end.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Result<Option<http_body::Frame<Bytes>>, WireError>> {
        loop {
            let want = match framing.decode(&mut self.buf)? {
                Step::Frame(frame) => return Poll::Ready(Ok(Some(frame))),
                Step::End => return Poll::Ready(Ok(None)),
                Step::More(want) => want,
            };
            let read = std::task::ready!(self.poll_fill(cx, want)).map_err(WireError::Io)?;
            if read == 0 {
                // The close ends a close-delimited body, and cuts any other.
                if !matches!(framing, Framing::UntilClose) {
                    return Poll::Ready(Err(WireError::Closed));
                }
                *framing = Framing::Done;
            }
        }
    }
}

/// What reading a body from the bytes at hand gives.
#[derive(Debug)]
pub enum Step {
    /// A frame of it.
    Frame(http_body::Frame<Bytes>),
    /// Nothing until more bytes arrive (about this many are wanted).
    More(usize),
    /// Its end: nothing of it is left in the buffer.
    End,
}

impl Framing {
    /// The next step of a body framed so, taking what it uses from `buf`
    /// (bytes past the body's end stay there).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self {
                Framing::Done => return Ok(Step::End),
                Framing::Length(left) => {
                    let Some(data) = take_data(buf, left) else {
                        return Ok(Step::More(usize::try_from(*left).unwrap_or(MAX_READ)));
                    };
                    if *left == 0 {
                        *self = Framing::Done;
                    }
                    return Ok(Step::Frame(http_body::Frame::data(data)));
                }
                Framing::UntilClose if buf.is_empty() => return Ok(Step::More(READ)),
                Framing::UntilClose => {
                    return Ok(Step::Frame(http_body::Frame::data(buf.split().freeze())))
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            *chunk = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                            return Err(WireError::Invalid("chunk size line too long"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::More(READ)),
                        Err(_) => return Err(WireError::Invalid("bad chunk size")),
                    },
                    Chunk::Data(left) => {
                        let Some(data) = take_data(buf, left) else {
                            return Ok(Step::More(usize::try_from(*left).unwrap_or(MAX_READ)));
                        };
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Frame(http_body::Frame::data(data)));
                    }
                    Chunk::DataEnd => match buf.get(..2) {
                        None => return Ok(Step::More(READ)),
                        Some(b"\r\n") => {
                            buf.advance(2);
                            *chunk = Chunk::Size;
                        }
                        Some(_) => return Err(WireError::Invalid("chunk not ended by CRLF")),
                    },
                    Chunk::Trailers => {
                        let mut lines = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                        match httparse::parse_headers(buf, &mut lines) {
                            Ok(httparse::Status::Complete((used, _))) => {
                                let block = buf.split_to(used).freeze();
                                *self = Framing::Done;
                                let trailers = trailers(&block)?;
                                if !trailers.is_empty() {
                                    return Ok(Step::Frame(http_body::Frame::trailers(trailers)));
                                }
                            }
                            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                                return Err(WireError::HeadTooLarge)
                            }
                            Ok(httparse::Status::Partial) => return Ok(Step::More(READ)),
                            Err(_) => return Err(WireError::Invalid("bad trailers")),
                        }
                    }
                },
            }
        }
    }
}

/// A response as this client reads it, from `bytes` arriving `piece` bytes
/// at a time (for the fuzzing harness and tests; the proxy reads from a
/// connection the same way, [`take_head`] then [`Framing::decode`]).
pub fn read_all(bytes: &[u8], head_request: bool, piece: usize) -> Result<Read, WireError> {
    let mut input = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let mut searched = 0;
    let head = loop {
        if let Some(head) = take_head(&mut buf, head_request, &mut searched)? {
            break head;
        }
        buf.extend_from_slice(input.next().ok_or(WireError::Closed)?);
    };
    let declared = match head.framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let mut framing = head.framing;
    let mut frames = Vec::new();
    loop {
        match framing.decode(&mut buf)? {
            Step::Frame(frame) => frames.push(frame),
            Step::End => break,
            Step::More(_) => match input.next() {
                Some(more) => buf.extend_from_slice(more),
                None if matches!(framing, Framing::UntilClose) => break,
                None => return Err(WireError::Closed),
            },
        }
    }
    Ok(Read {
        response: head.response,
        declared,
        frames,
        left: buf.len() + input.map(<[u8]>::len).sum::<usize>(),
    })
}

/// What [`read_all`] read.
pub struct Read {
    /// The final head.
    pub response: Response<()>,
    /// The body's `Content-Length`, when that framed it.
    pub declared: Option<u64>,
    /// The body's frames, data and trailers.
    pub frames: Vec<http_body::Frame<Bytes>>,
    /// Bytes after the response's end.
    pub left: usize,
}

/// Up to `left` bytes of data from `buf` (`left` counts them off); `None`
/// when `buf` is empty.
fn take_data(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
    *left -= take as u64;
    Some(buf.split_to(take).freeze())
}

/// Writes the request head: method, origin-form target, headers as they
/// are (no `Transfer-Encoding`: there is no body).
fn encode<B>(req: &Request<B>, out: &mut BytesMut) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited, and how far it has been read.
pub enum Framing {
    /// This many bytes to go.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the upstream closes.
    UntilClose,
    /// Read to its end (or there was none).
    Done,
}

/// Where a chunked body's reading is.
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailers, then the empty line.
    Trailers,
}

enum Parsed {
    /// A 1xx head: the final one follows.
    Informational,
    Final(Head),
}

/// The final response head at the front of `buf`, taken from it (1xx heads
/// before it skipped); `None` until all of it is there. `searched` keeps
/// how far an unfinished head was searched for its end, so a head
/// trickling in is not searched again from its start at every read.
fn take_head(
    buf: &mut BytesMut,
    head_request: bool,
    searched: &mut usize,
) -> Result<Option<Head>, WireError> {
    while let Some(end) = head_end(buf, *searched) {
        *searched = 0;
        let bytes = buf.split_to(end).freeze();
        if let Parsed::Final(head) = parse_head(&bytes, head_request)? {
            return Ok(Some(head));
        }
    }
    if buf.len() >= MAX_HEAD {
        return Err(WireError::HeadTooLarge);
    }
    // An LF among the last two bytes may yet turn out to begin the end.
    *searched = buf.len().saturating_sub(2);
    Ok(None)
}

/// Parses a complete response head (`bytes`, which header values share).
fn parse_head(bytes: &Bytes, head_request: bool) -> Result<Parsed, WireError> {
    let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        bytes,
        &mut lines,
    ) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(WireError::Invalid("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Invalid("more than 100 header lines"))
        }
        Err(_) => return Err(WireError::Invalid("malformed head")),
    }
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Invalid("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::Invalid("101 to a request that asked no upgrade"));
    }
    if status.is_informational() {
        return Ok(Parsed::Informational);
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut close = version == Version::HTTP_10;
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| WireError::Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(line.value))
            .map_err(|_| WireError::Invalid("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            for part in line.value.split(|b| *b == b',') {
                let n = parse_length(part.trim_ascii())?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(WireError::Invalid("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            // Only the last coding counts: is it `chunked`?
            let last = line.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            if has_token(line.value, b"close") {
                close = true;
            } else if version == Version::HTTP_10 && has_token(line.value, b"keep-alive") {
                close = false;
            }
        }
        headers.append(name, value);
    }
    let bodiless =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match (chunked, length) {
        _ if bodiless => Framing::Done,
        (Some(true), _) => {
            // Both: the coding wins, and the connection must not be reused.
            close |= length.is_some();
            Framing::Chunked(Chunk::Size)
        }
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Done,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    if matches!(framing, Framing::UntilClose) {
        close = true;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(Head {
        response,
        framing,
        keep_alive: !close,
    }))
}

/// A Content-Length value: digits only.
fn parse_length(value: &[u8]) -> Result<u64, WireError> {
    digits(value).ok_or(WireError::Invalid("bad Content-Length"))
}

/// The trailer fields of a complete trailer block.
fn trailers(block: &Bytes) -> Result<HeaderMap, WireError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let bad = || WireError::Invalid("bad trailers");
    let parsed = match httparse::parse_headers(block, &mut lines) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(bad()),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for line in parsed {
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| bad())?;
        let value =
            HeaderValue::from_maybe_shared(block.slice_ref(line.value)).map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(map)
}

/// Where a connection goes when its response is complete.
pub struct Home {
    pub(super) pool: Weak<Inner>,
    pub(super) addr: std::net::SocketAddr,
}

impl Home {
    /// Puts `conn`, its response complete, back in the pool if it may carry
    /// another request: kept alive, and nothing sent after the response
    /// (else it closes here). A read buffer a large body grew is let go
    /// first: the body's frames share its allocation, which the buffer
    /// would otherwise keep alive as long as the connection idles.
    fn take_back(&self, mut conn: Conn, keep_alive: bool) {
        if !keep_alive || !conn.buf.is_empty() {
            return;
        }
        if std::mem::take(&mut conn.grown) {
            conn.buf = BytesMut::with_capacity(READ);
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.check_in(self.addr, super::Held::Own(conn));
        }
    }
}

/// How the response to an [`Answer`] carries its body.
pub enum Body {
    /// The whole body (or none) came with the head; the connection is
    /// already back in the pool, or closed.
    Whole(http_body_util::Full<Bytes>),
    /// Still on the connection, read as it is polled.
    Reading(Reading),
}

/// A body being read from its connection.
pub struct Reading {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    home: Home,
}

impl Answer {
    /// The response, and its body: whole when the head brought all of it —
    /// the connection then goes home at once.
    pub fn into_response(self, home: Home) -> Response<Body> {
        let Answer {
            head:
                Head {
                    response,
                    framing,
                    keep_alive,
                },
            mut conn,
        } = self;
        let data = match framing {
            Framing::Done => Bytes::new(),
            // Within the buffer, so it fits a usize.
            Framing::Length(n) if conn.buf.len() as u64 >= n => conn
                .buf
                .split_to(usize::try_from(n).unwrap_or(usize::MAX))
                .freeze(),
            framing => {
                let reading = Reading {
                    conn: Some(conn),
                    framing,
                    keep_alive,
                    home,
                };
                return response.map(|()| Body::Reading(reading));
            }
        };
        home.take_back(conn, keep_alive);
        response.map(|()| Body::Whole(http_body_util::Full::new(data)))
    }
}

impl Reading {
    /// The next frame; the connection goes home after the last one.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, WireError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match std::task::ready!(conn.poll_body(cx, &mut self.framing)) {
            Ok(Some(frame)) => {
                if self.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Err(err) => {
                self.conn = None;
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    /// Read to its end.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    /// What is known of the length left.
    pub fn size_hint(&self) -> http_body::SizeHint {
        match self.framing {
            Framing::Length(n) => http_body::SizeHint::with_exact(n),
            Framing::Done => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.take_back(conn, self.keep_alive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Parsed, WireError> {
        parse_head(&Bytes::copy_from_slice(text.as_bytes()), head_request)
    }

    fn framing(text: &str) -> (String, bool) {
        match head(text, false) {
            Ok(Parsed::Final(Head {
                framing,
                keep_alive,
                ..
            })) => {
                let name = match framing {
                    Framing::Length(n) => format!("length {n}"),
                    Framing::Chunked(_) => "chunked".into(),
                    Framing::UntilClose => "close".into(),
                    Framing::Done => "none".into(),
                };
                (name, keep_alive)
            }
            Ok(Parsed::Informational) => ("informational".into(), true),
            Err(err) => (format!("error: {err}"), false),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\n";
        // (head, framing, reusable after it)
        let cases = [
            (format!("{ok}Content-Length: 5\r\n\r\n"), "length 5", true),
            (format!("{ok}content-length: 0\r\n\r\n"), "none", true),
            (
                format!("{ok}Transfer-Encoding: gzip, chunked\r\n\r\n"),
                "chunked",
                true,
            ),
            // Both: the coding wins and the connection is not reused.
            (
                format!("{ok}Transfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"),
                "chunked",
                false,
            ),
            (
                format!("{ok}Transfer-Encoding: gzip\r\n\r\n"),
                "close",
                false,
            ),
            (format!("{ok}\r\n"), "close", false),
            (
                format!("{ok}Content-Length: 5\r\nConnection: close\r\n\r\n"),
                "length 5",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n".into(),
                "length 5",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\n".into(),
                "length 5",
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".into(),
                "none",
                true,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n".into(), "none", true),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".into(),
                "informational",
                true,
            ),
        ];
        for (text, expected, reusable) in cases {
            assert_eq!(framing(&text), (expected.to_string(), reusable), "{text:?}");
        }
        assert!(matches!(
            head(&format!("{ok}Content-Length: 5\r\n\r\n"), true),
            Ok(Parsed::Final(Head {
                framing: Framing::Done,
                keep_alive: true,
                ..
            }))
        ));
    }

    #[test]
    fn bad_heads_are_refused_as_protocol_errors() {
        let ok = "HTTP/1.1 200 OK\r\n";
        for bad in [
            format!("{ok}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            format!("{ok}Content-Length: 5, 6\r\n\r\n"),
            format!("{ok}Content-Length: +5\r\n\r\n"),
            format!("{ok}Content-Length: 99999999999999999999999\r\n\r\n"),
            "HTTP/1.1 101 Switching Protocols\r\n\r\n".into(),
            "HTTP/1.1 99 Odd\r\n\r\n".into(),
            "SSH-2.0-OpenSSH_9.6\r\n\r\n".into(),
            format!("{ok}Bad Name: x\r\n\r\n"),
        ] {
            match head(&bad, false) {
                Err(err) => assert!(err.is_protocol(), "{bad:?}: {err}"),
                Ok(_) => panic!("accepted {bad:?}"),
            }
        }
        // The same value repeated is one length.
        assert_eq!(
            framing(&format!(
                "{ok}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
            )),
            ("length 5".into(), true)
        );
    }

    #[test]
    fn header_values_share_the_head_and_keep_their_order() {
        let text = b"HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1\r\nX-Odd: \xe9t\xe9\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n";
        let Ok(Parsed::Final(Head { response: head, .. })) =
            parse_head(&Bytes::from_static(text), false)
        else {
            panic!("not parsed");
        };
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        let cookies: Vec<_> = head.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.headers()["x-odd"].as_bytes(), b"\xe9t\xe9");
    }

    /// The body's data and trailers as one text, to compare readings.
    fn body_text(read: &Read) -> String {
        let mut text = String::new();
        for frame in &read.frames {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
            } else if let Some(trailers) = frame.trailers_ref() {
                for (name, value) in trailers {
                    text.push_str(&format!("[{name}={}]", value.to_str().unwrap_or("?")));
                }
            }
        }
        text
    }

    #[test]
    fn bodies_read_the_same_whatever_pieces_they_arrive_in() {
        let cases: [(&[u8], &str, usize); 5] = [
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello worldNEXT",
                "hello world",
                4,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n",
                "hello world[x-sum=9]",
                0,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nGET",
                "0123456789",
                3,
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\nto the close",
                "to the close",
                0,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\nHTTP", "", 4),
        ];
        for (bytes, body, left) in cases {
            for piece in 1..=bytes.len() {
                let read = read_all(bytes, false, piece)
                    .unwrap_or_else(|e| panic!("{piece}-byte pieces: {e}"));
                assert_eq!(body_text(&read), body, "{piece}-byte pieces");
                assert_eq!(read.left, left, "{piece}-byte pieces");
            }
        }
    }

    #[test]
    fn a_body_cut_short_or_badly_chunked_is_an_error() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
        ] {
            assert!(
                read_all(bytes, false, 7).is_err(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A HEAD answer has no body whatever its length says.
        let head =
            read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, 5).expect("HEAD");
        assert!(head.frames.is_empty());
    }

    #[test]
    fn the_request_head_is_origin_form_without_transfer_encoding() {
        let req = Request::builder()
            .method("DELETE")
            .uri("/a/b?c=d")
            .header("host", "svc:80")
            .header("transfer-encoding", "chunked")
            .header("x-a", "1")
            .body(())
            .expect("request");
        let mut out = BytesMut::new();
        encode(&req, &mut out);
        assert_eq!(
            &out[..],
            b"DELETE /a/b?c=d HTTP/1.1\r\nhost: svc:80\r\nx-a: 1\r\n\r\n"
        );
    }
}
