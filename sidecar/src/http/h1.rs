//! The HTTP/1.1 server for plain requests: no body or one of a single
//! `Content-Length` (no `Transfer-Encoding`), no `Upgrade`, no `Expect`,
//! not CONNECT, HTTP/1.1 — nearly all of a mesh's HTTP/1 requests. The
//! connection's task reads the head, calls the stack and writes the
//! response itself: the head is parsed once (header values are slices of
//! the read buffer), with no framing watch beside the parser, no dispatch
//! state and no second buffer of hyper's, and the response goes out in
//! one write when its body is at hand.
//!
//! Anything else — a request with a body, an upgrade, a head that does not
//! parse or is over the limits — is left to hyper with every byte read so
//! far ([`Outcome::Hyper`]): hyper answers it as before (its 400 and 431
//! included) and serves the connection until it parks.
//!
//! Responses are framed as hyper's server frames them: `Content-Length`
//! when the body's length is known, chunked when it is not, nothing for
//! HEAD, 204 and 304; trailers only to a request that sent `TE: trailers`,
//! and only the fields its `Trailer` header names; `Date` added when
//! missing. A request with `Connection: close`, a response saying it, or a
//! drain ends the connection after the response (`connection: close` sent).
//! A client that leaves while its request is served drops the request and
//! the upstream call with it, as hyper does.
//!
//! A request body is read by the connection's loop while it waits for the
//! response ([`Conn::until`]) and handed to the body the stack holds
//! through a queue of at most [`BODY_QUEUE`] bytes ([`Feed`]): the stack
//! reads it as it streams it upstream, and the socket is read no faster.
//! A body the stack did not read to its end closes the connection after
//! the response.
//!
//! Reads between requests are watched the way [`super::park::Parking`]
//! watches hyper's: one timer per connection, judged every
//! [`super::park::PARK_AFTER`] — a quiet connection parks
//! ([`Outcome::Parked`]: the buffers go), a head still arriving after
//! `limits.header_timeout` closes it, a drain closes it between requests.
//! Errors: none of its own; a failed read or write ends the connection.

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hygiene::digits;
use super::park::Quiet;
use super::{has_token, Body, ConnInfo, HttpService};
use crate::errors;

/// Header lines parsed in place at most; a head with more is left to
/// hyper, which applies `limits.max_headers` itself.
const MAX_HEADERS: usize = 100;

/// Read at least this much at once.
const READ: usize = 8 * 1024;

/// Body data up to this size is copied next to the head and written with
/// it in one write; larger data is written on its own, without the copy.
const COALESCE_UP_TO: usize = 8 * 1024;

/// Request body bytes read ahead of the stack at most.
const BODY_QUEUE: usize = 64 * 1024;

/// What serving plain requests needs, for the life of a connection.
pub struct Server {
    pub service: HttpService,
    pub conn: Arc<ConnInfo>,
    pub drain: CancellationToken,
    /// `limits.max_header_bytes`.
    pub max_head: usize,
    /// `limits.max_headers`.
    pub max_headers: usize,
    /// `limits.header_timeout`.
    pub head_timeout: Duration,
}

/// How the connection left this server.
pub enum Outcome<I> {
    /// Over: the client left, a response ended it, a head was too slow,
    /// or the proxy drains.
    Closed,
    /// Quiet between requests for [`super::park::PARK_AFTER`]: nothing
    /// read and not served, and no buffer kept.
    Parked(I),
    /// A request for hyper: the stream, and the bytes read from it and
    /// not served (that request's head first).
    Hyper(I, Bytes),
}

/// What the request said about the response.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    keep_alive: bool,
    /// `TE: trailers`: the client takes trailer fields.
    trailers: bool,
}

impl Server {
    /// Serves plain requests on `io`; `first` is a byte of the next request
    /// already read (by the parked connection's wait).
    pub async fn serve<I>(&self, io: I, first: Option<u8>) -> Outcome<I>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = Conn {
            io,
            buf: BytesMut::with_capacity(READ),
            out: Vec::new(),
            searched: 0,
            quiet: Quiet::default(),
            began: None,
            closing: false,
            feed: None,
        };
        if let Some(byte) = first {
            conn.buf.extend_from_slice(&[byte]);
        }
        loop {
            let end = match conn.read_head(self).await {
                Read::Head(end) => end,
                Read::Closed => return conn.close().await,
                Read::Park => return Outcome::Parked(conn.io),
                Read::Hyper => return Outcome::Hyper(conn.io, conn.buf.freeze()),
            };
            let head = conn.buf.split_to(end).freeze();
            let Some((mut req, asked, length)) = parse(&head, self.max_headers.min(MAX_HEADERS))
            else {
                // hyper reads this head again, and answers it.
                let mut read = BytesMut::with_capacity(head.len() + conn.buf.len());
                read.extend_from_slice(&head);
                read.extend_from_slice(&conn.buf);
                return Outcome::Hyper(conn.io, read.freeze());
            };
            if length > 0 {
                let (body, feed) = Feed::new(length);
                *req.body_mut() = body;
                conn.feed = Some(feed);
            }
            super::admit(&mut req, &self.conn);
            let grpc = super::is_grpc(req.headers());
            let call = self.service.call_ref(req);
            let response = match conn.until(call).await {
                Some(Ok(response)) => response,
                Some(Err(err)) => errors::response(&err, grpc),
                None => return Outcome::Closed,
            };
            // A body the stack let go of unread ends the connection: the
            // response says so.
            let abandoned = conn.feed.as_ref().is_some_and(Feed::abandoned);
            let asked = Asked {
                keep_alive: asked.keep_alive && !conn.closing && !abandoned,
                ..asked
            };
            if !conn.respond(response, asked).await {
                return conn.close().await;
            }
            // A body not read to its end leaves the stream mid-message.
            if conn.feed.take().is_some_and(|feed| !feed.received()) {
                return conn.close().await;
            }
        }
    }
}

/// One connection's state while this server has it.
struct Conn<I> {
    io: I,
    /// Bytes read and not yet served.
    buf: BytesMut,
    /// Response bytes encoded and not yet written.
    out: Vec<u8>,
    /// How far an unfinished head was searched for its end.
    searched: usize,
    quiet: Quiet,
    /// When the head being read began to arrive (read only when a read
    /// ends inside a head).
    began: Option<Instant>,
    /// A drain began: the next response closes the connection.
    closing: bool,
    /// The body of the request being served, while it is read.
    feed: Option<Feed>,
}

/// What reading a head came to.
enum Read {
    /// The head is the first this many bytes of the buffer.
    Head(usize),
    Closed,
    Park,
    /// Over the size limit before its end: hyper's to refuse.
    Hyper,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// Reads until a whole head is buffered.
    async fn read_head(&mut self, server: &Server) -> Read {
        poll_fn(|cx| loop {
            if let Some(end) = head_end(&self.buf, self.searched) {
                self.searched = 0;
                self.began = None;
                return Poll::Ready(if end > server.max_head {
                    Read::Hyper
                } else {
                    Read::Head(end)
                });
            }
            if self.buf.len() >= server.max_head {
                return Poll::Ready(Read::Hyper);
            }
            // An LF among the last two bytes may yet begin the end.
            self.searched = self.buf.len().saturating_sub(2);
            if !self.buf.is_empty() && self.began.is_none() {
                self.began = Some(Instant::now());
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Read::Closed),
                Poll::Ready(Ok(_)) => {
                    self.quiet.arrived();
                    continue;
                }
                Poll::Pending => {}
            }
            // Judged only when the timer is due: the drain token is one
            // lock shared by every connection, not to be taken per request.
            if !self.quiet.due(cx) {
                return Poll::Pending;
            }
            if self
                .began
                .is_some_and(|began| began.elapsed() >= server.head_timeout)
            {
                return Poll::Ready(Read::Closed);
            }
            if server.drain.is_cancelled() {
                if self.buf.is_empty() {
                    return Poll::Ready(Read::Closed);
                }
                self.closing = true;
            }
            if self.buf.is_empty() && self.quiet.was_quiet() {
                return Poll::Ready(Read::Park);
            }
            self.quiet.again(cx);
            return Poll::Pending;
        })
        .await
    }

    /// Reads what is there into the buffer; `Ok(0)` at the end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ / 8 {
            self.buf.reserve(READ);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// `fut`'s output, or `None` if the client leaves first. The request's
    /// body is read meanwhile, as far as its queue takes it; after it (or
    /// with no body) the socket is watched for its end while nothing of a
    /// next request is buffered, and bytes that arrive are kept (a
    /// pipelined request).
    async fn until<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| loop {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if self
                .feed
                .as_ref()
                .is_some_and(|feed| feed.wants(cx.waker()))
            {
                if let (Some(feed), false) = (&self.feed, self.buf.is_empty()) {
                    // The body's next bytes; the stack reads them at once.
                    feed.push(&mut self.buf, cx.waker());
                    continue;
                }
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0) | Err(_)) => {
                        if let Some(feed) = self.feed.take() {
                            feed.cut(cx.waker());
                        }
                        continue;
                    }
                    Poll::Ready(Ok(_)) => {
                        self.quiet.arrived();
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.buf.is_empty() && self.feed.as_ref().is_none_or(Feed::received) {
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => self.quiet.arrived(),
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        })
        .await
    }

    /// Writes `response`; false when the connection must end after it (or
    /// could not carry it whole).
    async fn respond(&mut self, response: http::Response<Body>, asked: Asked) -> bool {
        let (parts, body) = response.into_parts();
        let length = if body.is_end_stream() {
            Length::None
        } else {
            body.size_hint()
                .exact()
                .map_or(Length::Unknown, Length::Known)
        };
        self.out.clear();
        let Some(mut framing) = encode_head(&parts, length, asked, &mut self.out) else {
            // A response hyper would not send either (1xx, a bad length).
            self.out.clear();
            encode_head(&failed(), Length::None, asked, &mut self.out);
            let _ = self.flush().await;
            return false;
        };
        drop(parts);
        let complete = if framing.body == Frames::None {
            drop(body);
            true
        } else {
            self.write_body(body, &mut framing).await
        };
        if self.flush().await.is_err() {
            return false;
        }
        complete && !framing.last
    }

    /// Writes `body`'s frames as `framing` says; false when it failed or
    /// did not end where its length said.
    async fn write_body(&mut self, body: Body, framing: &mut Framing) -> bool {
        let mut body = pin!(body);
        loop {
            let next = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
            let frame = match next {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more yet: what is encoded goes out meanwhile.
                    if self.flush().await.is_err() {
                        return false;
                    }
                    match self.until(poll_fn(|cx| body.as_mut().poll_frame(cx))).await {
                        Some(frame) => frame,
                        None => return false,
                    }
                }
            };
            match frame {
                None => return framing.end(&mut self.out),
                Some(Err(_)) => return false,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let Some(data) = framing.data(data, &mut self.out) else {
                            continue;
                        };
                        if self.flush().await.is_err() || self.io.write_all(&data).await.is_err() {
                            return false;
                        }
                        framing.after_data(&mut self.out);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            framing.trailers(&trailers, &mut self.out);
                            return framing.end(&mut self.out);
                        }
                    }
                },
            }
        }
    }

    /// Writes what is encoded.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
    }

    /// Ends the connection: one attempt at a clean close, never a wait (a
    /// TLS close_notify to a client that reads nothing would wait forever).
    async fn close(mut self) -> Outcome<I> {
        super::park::close_now(&mut self.io).await;
        Outcome::Closed
    }
}

/// Where the head at the front of `buf` ends (after its empty line), if it
/// is all there, looking from `from` on (what earlier looks left
/// unsearched). Lines may end in LF alone, as the parser accepts.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    memchr::memchr_iter(b'\n', rest).find_map(|at| match rest.get(at + 1..) {
        Some([b'\n', ..]) => Some(from + at + 2),
        Some([b'\r', b'\n', ..]) => Some(from + at + 3),
        _ => None,
    })
}

/// The first request head in `bytes`, searched for as the server searches
/// bytes arriving `piece` at a time (for the fuzzing harness): where it
/// ends, and the request it makes if this server would serve it.
pub(crate) fn first_head(bytes: &[u8], piece: usize) -> Option<(usize, Option<Request<Body>>)> {
    let mut searched = 0;
    let mut arrived = 0;
    let end = loop {
        if let Some(end) = head_end(&bytes[..arrived], searched) {
            break end;
        }
        if arrived == bytes.len() {
            return None;
        }
        searched = arrived.saturating_sub(2);
        arrived = (arrived + piece.max(1)).min(bytes.len());
    };
    let head = Bytes::copy_from_slice(&bytes[..end]);
    Some((end, parse(&head, MAX_HEADERS).map(|(req, _, _)| req)))
}

/// `head` as a request this server serves, or `None` for one it leaves to
/// hyper (which parses it again and serves or refuses it).
fn parse(head: &Bytes, max_headers: usize) -> Option<(Request<Body>, Asked, u64)> {
    let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let lines = lines.get_mut(..max_headers)?;
    match config.parse_request_with_uninit_headers(&mut parsed, head, lines) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut asked = Asked {
        head: method == Method::HEAD,
        keep_alive: true,
        trailers: false,
    };
    let mut length: Option<u64> = None;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        match name {
            // One plain length; several (or a list) are hyper's to judge.
            header::CONTENT_LENGTH if length.is_none() => length = Some(digits(line.value)?),
            header::CONTENT_LENGTH
            | header::TRANSFER_ENCODING
            | header::UPGRADE
            | header::EXPECT => return None,
            header::CONNECTION => asked.keep_alive &= !has_token(line.value, b"close"),
            header::TE => asked.trailers |= has_token(line.value, b"trailers"),
            _ => {}
        }
        let value = HeaderValue::from_maybe_shared(head.slice_ref(line.value)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(super::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some((req, asked, length.unwrap_or(0)))
}

/// The connection's side of a request body: what is still to be read
/// from the socket, and the queue the body takes it from.
struct Feed {
    queue: Arc<std::sync::Mutex<Queue>>,
}

/// A request body's bytes between the connection and the stack.
#[derive(Default)]
struct Queue {
    chunks: std::collections::VecDeque<Bytes>,
    queued: usize,
    /// Bytes not yet read from the socket.
    left: u64,
    /// The client left before the body's end.
    cut: bool,
    /// The stack dropped the body: nothing more is queued.
    dropped: bool,
    /// Whoever waits for the body's next bytes.
    waker: Option<std::task::Waker>,
    /// The connection's task, waiting for room in a full queue (the body
    /// may be read by another task: hyper's client sends it from its own).
    reader: Option<std::task::Waker>,
}

/// A request body the stack reads, fed by the connection ([`Feed`]).
struct Fed {
    queue: Arc<std::sync::Mutex<Queue>>,
}

/// The client closed the connection before the request body's end.
#[derive(Debug, thiserror::Error)]
#[error("the client closed the connection inside the request body")]
pub struct BodyCut;

impl Feed {
    /// A body of `length` bytes, and the connection's side of it.
    fn new(length: u64) -> (Body, Feed) {
        let queue = Arc::new(std::sync::Mutex::new(Queue {
            left: length,
            ..Queue::default()
        }));
        let body = super::boxed(Fed {
            queue: queue.clone(),
        });
        (body, Feed { queue })
    }

    /// More of the body is to be read, and the queue has room for it; when
    /// it is full, `polling` is woken once the body takes from it.
    fn wants(&self, polling: &std::task::Waker) -> bool {
        let mut queue = crate::lock(&self.queue);
        if queue.left == 0 || queue.dropped {
            return false;
        }
        if queue.queued >= BODY_QUEUE {
            queue.reader = Some(polling.clone());
            return false;
        }
        true
    }

    /// The stack dropped the body before all of it arrived.
    fn abandoned(&self) -> bool {
        let queue = crate::lock(&self.queue);
        queue.dropped && queue.left > 0
    }

    /// All of the body was read from the socket.
    fn received(&self) -> bool {
        crate::lock(&self.queue).left == 0
    }

    /// Moves the body's next bytes from `buf` into the queue; `polling`
    /// is the connection task's waker (the body is polled again right
    /// after, a wake-up of that task would be one poll too many).
    fn push(&self, buf: &mut BytesMut, polling: &std::task::Waker) {
        let mut queue = crate::lock(&self.queue);
        let take = usize::try_from(queue.left).map_or(buf.len(), |left| left.min(buf.len()));
        queue.left -= take as u64;
        queue.queued += take;
        queue.chunks.push_back(buf.split_to(take).freeze());
        queue.wake(polling);
    }

    /// The client left: the body ends in an error.
    fn cut(&self, polling: &std::task::Waker) {
        let mut queue = crate::lock(&self.queue);
        queue.cut = true;
        queue.wake(polling);
    }
}

impl Queue {
    /// Wakes whoever waits for the body, unless it is the task polling.
    fn wake(&mut self, polling: &std::task::Waker) {
        if let Some(waker) = self.waker.take() {
            if !waker.will_wake(polling) {
                waker.wake();
            }
        }
    }
}

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyCut>>> {
        let mut queue = crate::lock(&self.queue);
        if let Some(chunk) = queue.chunks.pop_front() {
            queue.queued -= chunk.len();
            if let Some(reader) = queue.reader.take() {
                reader.wake();
            }
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if queue.left == 0 {
            return Poll::Ready(None);
        }
        if queue.cut {
            return Poll::Ready(Some(Err(BodyCut)));
        }
        queue.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let queue = crate::lock(&self.queue);
        queue.left == 0 && queue.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let queue = crate::lock(&self.queue);
        http_body::SizeHint::with_exact(queue.left + queue.queued as u64)
    }
}

impl Drop for Fed {
    fn drop(&mut self) {
        crate::lock(&self.queue).dropped = true;
    }
}

/// What the body's own account of its length is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// It has ended already.
    None,
    Known(u64),
    Unknown,
}

/// How a response's body goes on the wire.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    body: Frames,
    /// The connection ends after this response.
    last: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Frames {
    /// No body (HEAD, 204, 304, or an empty one).
    None,
    /// This many bytes still owed.
    Length(u64),
    /// Chunked; the trailer fields that may be sent, if any.
    Chunked(Option<Vec<HeaderName>>),
}

impl Framing {
    /// Encodes `data`'s framing into `out`, and `data` too when it is small;
    /// the data still to be written on its own otherwise.
    fn data(&mut self, mut data: Bytes, out: &mut Vec<u8>) -> Option<Bytes> {
        match &mut self.body {
            Frames::None => return None,
            Frames::Length(left) => {
                // Never more than owed.
                let owed = usize::try_from(*left).unwrap_or(usize::MAX);
                data.truncate(owed);
                *left -= data.len() as u64;
            }
            Frames::Chunked(_) if data.is_empty() => return None,
            Frames::Chunked(_) => {
                push_hex(out, data.len());
                out.extend_from_slice(b"\r\n");
            }
        }
        if data.len() <= COALESCE_UP_TO {
            out.extend_from_slice(&data);
            self.after_data(out);
            return None;
        }
        Some(data)
    }

    /// What follows a chunk's data.
    fn after_data(&self, out: &mut Vec<u8>) {
        if matches!(self.body, Frames::Chunked(_)) {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Encodes the trailer fields the response announced; the chunked
    /// body's end with them.
    fn trailers(&mut self, trailers: &HeaderMap, out: &mut Vec<u8>) {
        let Frames::Chunked(Some(allowed)) = &self.body else {
            return;
        };
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            if allowed.contains(name) && valid_trailer(name) {
                push_field(out, name.as_str(), value.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        self.body = Frames::None;
    }

    /// Encodes the body's end; false when the body ended short of its
    /// length (the connection cannot carry another message).
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        match self.body {
            Frames::Chunked(_) => out.extend_from_slice(b"0\r\n\r\n"),
            Frames::Length(left) if left > 0 => return false,
            _ => {}
        }
        true
    }
}

/// `n` in lower-case hexadecimal (a chunk size).
fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Fields never sent as trailers (as hyper's server).
fn valid_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

/// Writes `values` as one field line, comma-joined; whether `test` held
/// for the last of them.
fn join<'a>(
    out: &mut Vec<u8>,
    name: &str,
    values: impl IntoIterator<Item = &'a HeaderValue>,
    test: impl Fn(&[u8]) -> bool,
) -> bool {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut held = false;
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
        held = test(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    held
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The answer to a response that cannot be sent as it is.
fn failed() -> http::response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = StatusCode::INTERNAL_SERVER_ERROR;
    parts
}

/// Encodes the response head into `out`; how its body is to be framed.
/// `None` for a head that cannot be sent: a 1xx status (this server sends
/// none), or a `Content-Length` that does not parse.
fn encode_head(
    parts: &http::response::Parts,
    length: Length,
    asked: Asked,
    out: &mut Vec<u8>,
) -> Option<Framing> {
    let status = parts.status;
    if status.is_informational() {
        return None;
    }
    let bodiless =
        asked.head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let length_allowed = status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    out.reserve(64 + parts.headers.len() * 32);
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut framing = Framing {
        body: Frames::None,
        last: !asked.keep_alive,
    };
    let mut framed = false;
    let mut dated = false;
    let mut said_close = false;
    let mut allowed: Option<Vec<HeaderName>> = None;
    let headers = &parts.headers;
    // The four fields that frame or end the message are handled at their
    // first line, all their lines at once.
    let mut seen = [false; 4];
    let mut once = |i: usize| !std::mem::replace(&mut seen[i], true);
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                if !once(0) || framed {
                    continue;
                }
                let declared = match length {
                    Length::Known(n) => Some(n),
                    // Said as it is, and nothing sent.
                    Length::None if asked.head => None,
                    // Nothing to send: the `content-length: 0` below, if any.
                    Length::None => continue,
                    Length::Unknown => {
                        let n = digits(value.as_bytes())?;
                        let mut all = headers.get_all(name).iter();
                        if all.any(|v| digits(v.as_bytes()) != Some(n)) {
                            return None;
                        }
                        Some(n)
                    }
                };
                push_field(out, "content-length", value.as_bytes());
                if let Some(n) = declared {
                    framing.body = Frames::Length(n);
                }
                framed = true;
            }
            header::TRANSFER_ENCODING => {
                if !once(1) || framed || bodiless {
                    continue;
                }
                let chunked_last = join(out, "transfer-encoding", headers.get_all(name), |v| {
                    v.rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                });
                if !chunked_last {
                    // `chunked` goes last, or the client could not find the end.
                    out.truncate(out.len() - 2);
                    out.extend_from_slice(b", chunked\r\n");
                }
                framing.body = Frames::Chunked(None);
                framed = true;
            }
            header::CONNECTION => {
                if once(2) {
                    let values = headers.get_all(name);
                    join(out, "connection", values.iter(), |_| false);
                    said_close = values.iter().any(|v| has_token(v.as_bytes(), b"close"));
                }
            }
            header::TRAILER => {
                if !once(3) || bodiless {
                    continue;
                }
                let values = headers.get_all(name);
                join(out, "trailer", values.iter(), |_| false);
                allowed = Some(
                    values
                        .iter()
                        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
                        .collect(),
                );
            }
            _ => {
                dated |= *name == header::DATE;
                push_field(out, name.as_str(), value.as_bytes());
            }
        }
    }
    if !framed {
        match length {
            Length::Unknown if bodiless => {}
            Length::Unknown => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                framing.body = Frames::Chunked(None);
            }
            Length::None | Length::Known(0) => {
                if length_allowed && !asked.head {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
            }
            Length::Known(n) => {
                if length_allowed {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                framing.body = Frames::Length(n);
            }
        }
    }
    if bodiless {
        framing.body = Frames::None;
    }
    if let Frames::Chunked(fields) = &mut framing.body {
        if asked.trailers {
            *fields = allowed;
        }
    }
    framing.last |= said_close;
    if !asked.keep_alive && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(framing)
}

/// The `Date` value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Appends the current date (IMF-fixdate) to `out`.
    pub fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        NOW.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second || cached.1.is_empty() {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::Response;
    use http_body::Frame;
    use tokio::io::{duplex, AsyncReadExt, DuplexStream};

    use super::*;
    use crate::http::{full, BodyError};

    const DATE: &str = "Tue, 24 Nov 2026 10:00:00 GMT";
    const KEEP: Asked = Asked {
        head: false,
        keep_alive: true,
        trailers: false,
    };

    fn head_of(
        status: u16,
        fields: &[(&str, &str)],
        length: Length,
        asked: Asked,
    ) -> (String, Option<Framing>) {
        let mut response = Response::builder().status(status).header("date", DATE);
        for (name, value) in fields {
            response = response.header(*name, *value);
        }
        let parts = response.body(()).unwrap().into_parts().0;
        let mut out = Vec::new();
        let framing = encode_head(&parts, length, asked, &mut out);
        (String::from_utf8(out).unwrap(), framing)
    }

    #[test]
    fn responses_are_framed_as_hyper_frames_them() {
        let head = Asked { head: true, ..KEEP };
        let close = Asked {
            keep_alive: false,
            ..KEEP
        };
        let trailers = Asked {
            trailers: true,
            ..KEEP
        };
        let grpc_status = || Some(vec![HeaderName::from_static("grpc-status")]);
        let d = format!("date: {DATE}\r\n");
        #[rustfmt::skip]
        type Case<'a> = (u16, Vec<(&'a str, &'a str)>, Length, Asked, String, Frames, bool);
        let cases: Vec<Case<'_>> = vec![
            (200, vec![], Length::Known(2), KEEP, format!("HTTP/1.1 200 OK\r\n{d}content-length: 2\r\n\r\n"), Frames::Length(2), false),
            (200, vec![("content-length", "2")], Length::Known(2), KEEP, format!("HTTP/1.1 200 OK\r\n{d}content-length: 2\r\n\r\n"), Frames::Length(2), false),
            (200, vec![("content-length", "7")], Length::Unknown, KEEP, format!("HTTP/1.1 200 OK\r\n{d}content-length: 7\r\n\r\n"), Frames::Length(7), false),
            (200, vec![], Length::Unknown, KEEP, format!("HTTP/1.1 200 OK\r\n{d}transfer-encoding: chunked\r\n\r\n"), Frames::Chunked(None), false),
            (200, vec![("trailer", "grpc-status")], Length::Unknown, trailers, format!("HTTP/1.1 200 OK\r\n{d}trailer: grpc-status\r\ntransfer-encoding: chunked\r\n\r\n"), Frames::Chunked(grpc_status()), false),
            // Trailers only to a client that said it takes them.
            (200, vec![("trailer", "grpc-status")], Length::Unknown, KEEP, format!("HTTP/1.1 200 OK\r\n{d}trailer: grpc-status\r\ntransfer-encoding: chunked\r\n\r\n"), Frames::Chunked(None), false),
            (200, vec![("transfer-encoding", "gzip")], Length::Unknown, KEEP, format!("HTTP/1.1 200 OK\r\n{d}transfer-encoding: gzip, chunked\r\n\r\n"), Frames::Chunked(None), false),
            (204, vec![], Length::None, KEEP, format!("HTTP/1.1 204 No Content\r\n{d}\r\n"), Frames::None, false),
            (304, vec![("content-length", "10")], Length::None, KEEP, format!("HTTP/1.1 304 Not Modified\r\n{d}\r\n"), Frames::None, false),
            // HEAD: the length said as it is, nothing sent.
            (200, vec![("content-length", "10")], Length::None, head, format!("HTTP/1.1 200 OK\r\n{d}content-length: 10\r\n\r\n"), Frames::None, false),
            (200, vec![], Length::Known(5), head, format!("HTTP/1.1 200 OK\r\n{d}content-length: 5\r\n\r\n"), Frames::None, false),
            (404, vec![], Length::None, KEEP, format!("HTTP/1.1 404 Not Found\r\n{d}content-length: 0\r\n\r\n"), Frames::None, false),
            (599, vec![], Length::None, KEEP, format!("HTTP/1.1 599 <none>\r\n{d}content-length: 0\r\n\r\n"), Frames::None, false),
            (200, vec![], Length::None, close, format!("HTTP/1.1 200 OK\r\n{d}content-length: 0\r\nconnection: close\r\n\r\n"), Frames::None, true),
            (200, vec![("connection", "close")], Length::None, KEEP, format!("HTTP/1.1 200 OK\r\n{d}connection: close\r\ncontent-length: 0\r\n\r\n"), Frames::None, true),
            (200, vec![("connection", "Close")], Length::None, close, format!("HTTP/1.1 200 OK\r\n{d}connection: Close\r\ncontent-length: 0\r\n\r\n"), Frames::None, true),
        ];
        for (status, fields, length, asked, want, body, last) in cases {
            let (got, framing) = head_of(status, &fields, length, asked);
            assert_eq!(got, want, "{status} {fields:?} {length:?} {asked:?}");
            assert_eq!(framing, Some(Framing { body, last }), "{status} {fields:?}");
        }
    }

    #[test]
    /// Requests and responses alike (the client searches with it too).
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(
            head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", 0),
            Some(25)
        );
        assert_eq!(head_end(b"HTTP/1.1 200 OK\nA: b\n\nbody", 0), Some(22));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n", 0), None);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r", 0), None);
        // Searching on from where the last search left off.
        assert_eq!(
            head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", 21),
            Some(25)
        );
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n", 99), None);
    }

    #[test]
    fn heads_that_cannot_be_sent_are_refused() {
        assert_eq!(head_of(101, &[], Length::None, KEEP).1, None);
        assert_eq!(head_of(103, &[], Length::None, KEEP).1, None);
        let bad = [("content-length", "x1")];
        assert_eq!(head_of(200, &bad, Length::Unknown, KEEP).1, None);
        let two = [("content-length", "1"), ("content-length", "2")];
        assert_eq!(head_of(200, &two, Length::Unknown, KEEP).1, None);
    }

    #[test]
    fn a_response_without_a_date_gets_one() {
        let parts = Response::new(()).into_parts().0;
        let mut out = Vec::new();
        encode_head(&parts, Length::None, KEEP, &mut out);
        let text = String::from_utf8(out).unwrap();
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert_eq!(date.len(), DATE.len(), "{text}");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }

    #[test]
    fn chunks_and_trailers_are_encoded() {
        let mut framing = Framing {
            body: Frames::Chunked(Some(vec![HeaderName::from_static("grpc-status")])),
            last: false,
        };
        let mut out = Vec::new();
        assert!(framing
            .data(Bytes::from_static(b"hello world, 26 bytes long"), &mut out)
            .is_none());
        assert!(
            framing.data(Bytes::new(), &mut out).is_none(),
            "an empty chunk would end the body"
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-not-announced", HeaderValue::from_static("1"));
        trailers.insert("content-type", HeaderValue::from_static("text/plain"));
        framing.trailers(&trailers, &mut out);
        assert!(framing.end(&mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1a\r\nhello world, 26 bytes long\r\n0\r\ngrpc-status: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_body_is_held_to_its_length() {
        let mut framing = Framing {
            body: Frames::Length(4),
            last: false,
        };
        let mut out = Vec::new();
        assert!(framing
            .data(Bytes::from_static(b"abcdef"), &mut out)
            .is_none());
        assert_eq!(out, b"abcd", "never more than owed");
        assert!(framing.end(&mut out));
        let mut short = Framing {
            body: Frames::Length(4),
            last: false,
        };
        assert!(short.data(Bytes::from_static(b"ab"), &mut out).is_none());
        assert!(
            !short.end(&mut out),
            "a body ending short cannot be followed"
        );
        let big = Bytes::from(vec![7u8; COALESCE_UP_TO + 1]);
        let mut framing = Framing {
            body: Frames::Chunked(None),
            last: false,
        };
        let mut out = Vec::new();
        assert_eq!(
            framing.data(big.clone(), &mut out),
            Some(big),
            "large data is not copied"
        );
        assert_eq!(out, format!("{:x}\r\n", COALESCE_UP_TO + 1).as_bytes());
    }

    #[test]
    fn requests_with_a_body_an_upgrade_or_an_expectation_are_left_to_hyper() {
        let plain = Bytes::from_static(b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Close\r\nTE: trailers\r\n\r\n");
        let (req, asked, _) = parse(&plain, MAX_HEADERS).unwrap();
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["host"], "t");
        assert!(!asked.keep_alive && asked.trailers && !asked.head);
        let posted =
            Bytes::from_static(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n");
        let (req, _, length) = parse(&posted, MAX_HEADERS).unwrap();
        assert_eq!(
            (length, req.headers()["content-length"].as_bytes()),
            (12, &b"12"[..])
        );
        for head in [
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
        ] {
            assert!(parse(&Bytes::from(head), MAX_HEADERS).is_none(), "{head:?}");
        }
        let many: String = (0..5).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head = Bytes::from(format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert!(parse(&head, 5).is_some());
        assert!(parse(&head, 4).is_none(), "over limits.max_headers");
    }

    /// A stack that answers with the path (`/echo`: with the body's length
    /// and its last bytes), `/wait` never; counts the calls dropped
    /// unanswered.
    fn server(dropped: Arc<Mutex<usize>>) -> Server {
        struct Count(Arc<Mutex<usize>>);
        impl Drop for Count {
            fn drop(&mut self) {
                *crate::lock(&self.0) += 1;
            }
        }
        let service = HttpService::new(tower::service_fn(move |req: Request<Body>| {
            let count = Count(dropped.clone());
            async move {
                if req.uri().path() == "/wait" {
                    std::future::pending::<()>().await;
                }
                std::mem::forget(count);
                let path = req.uri().path().to_owned();
                let text = if path.starts_with("/echo") {
                    use http_body_util::BodyExt;
                    let body = req.into_body();
                    let body = if path == "/echo-elsewhere" {
                        // Read by another task, as hyper's client does.
                        tokio::spawn(body.collect()).await??.to_bytes()
                    } else {
                        body.collect().await?.to_bytes()
                    };
                    let tail = &body[body.len().saturating_sub(4)..];
                    format!("{} {}", body.len(), String::from_utf8_lossy(tail))
                } else {
                    path
                };
                let mut response = Response::new(full(text));
                response
                    .headers_mut()
                    .insert("date", HeaderValue::from_static(DATE));
                Ok::<_, crate::BoxError>(response)
            }
        }));
        Server {
            service,
            conn: Arc::default(),
            drain: CancellationToken::new(),
            max_head: 8192,
            max_headers: 100,
            head_timeout: Duration::from_secs(10),
        }
    }

    fn start(server: Server) -> (DuplexStream, tokio::task::JoinHandle<Outcome<DuplexStream>>) {
        start_buffered(server, 64 * 1024)
    }

    /// The server on a stream that holds up to `capacity` bytes in flight.
    fn start_buffered(
        server: Server,
        capacity: usize,
    ) -> (DuplexStream, tokio::task::JoinHandle<Outcome<DuplexStream>>) {
        let (client, io) = duplex(capacity);
        (
            client,
            tokio::spawn(async move { server.serve(io, None).await }),
        )
    }

    async fn read_all(client: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_close_ends_the_connection() {
        let (mut client, task) = start(server(Arc::default()));
        client
            .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nHEAD /two HTTP/1.1\r\nHost: t\r\n\r\nGET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let d = format!("date: {DATE}\r\n");
        assert_eq!(
            read_all(&mut client).await,
            format!(
                "HTTP/1.1 200 OK\r\n{d}content-length: 4\r\n\r\n/one\
                 HTTP/1.1 200 OK\r\n{d}content-length: 4\r\n\r\n\
                 HTTP/1.1 200 OK\r\n{d}content-length: 6\r\nconnection: close\r\n\r\n/three"
            )
        );
        assert!(matches!(task.await.unwrap(), Outcome::Closed));
    }

    #[tokio::test]
    async fn a_chunked_request_goes_to_hyper_with_every_byte_read() {
        let (mut client, task) = start(server(Arc::default()));
        let sent = b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nPOST /two HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /three HTTP/1.1\r\n";
        client.write_all(sent).await.unwrap();
        let Outcome::Hyper(_, read) = task.await.unwrap() else {
            panic!("not handed over");
        };
        assert_eq!(&read[..], &sent[30..], "the chunked POST and all after it");
        let mut first = vec![0u8; 200];
        let n = client.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).ends_with("/one"));
    }

    #[tokio::test]
    async fn bodies_are_read_as_the_stack_reads_them_and_unread_ones_close() {
        let (mut client, task) = start_buffered(server(Arc::default()), 1 << 20);
        // Larger than the queue: read as the stack reads it.
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| b"abcdefgh"[i as usize % 8])
            .collect();
        let mut sent = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
             POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {0}\r\n\r\n",
            big.len()
        )
        .into_bytes();
        sent.extend_from_slice(&big);
        let elsewhere = format!(
            "POST /echo-elsewhere HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        sent.extend_from_slice(elsewhere.as_bytes());
        sent.extend_from_slice(&big);
        // The body of /ignore is never read: the connection closes after it.
        sent.extend_from_slice(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
        // All of it sent before the server reads: the queue fills at once.
        client.write_all(&sent).await.unwrap();
        let d = format!("date: {DATE}\r\n");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(20), read_all(&mut client))
                .await
                .expect("the body stalled"),
            format!(
                "HTTP/1.1 200 OK\r\n{d}content-length: 6\r\n\r\n5 ello\
                 HTTP/1.1 200 OK\r\n{d}content-length: 11\r\n\r\n300000 efgh\
                 HTTP/1.1 200 OK\r\n{d}content-length: 11\r\n\r\n300000 efgh\
                 HTTP/1.1 200 OK\r\n{d}content-length: 7\r\nconnection: close\r\n\r\n/ignore"
            )
        );
        assert!(matches!(task.await.unwrap(), Outcome::Closed));
    }

    #[tokio::test]
    async fn a_body_cut_short_ends_the_request_and_the_connection() {
        let (mut client, task) = start(server(Arc::default()));
        client
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        // The stack sees its body fail (here: answers 500), and the
        // connection ends after whatever it answers.
        let reply = read_all(&mut client).await;
        assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
        assert!(matches!(task.await.unwrap(), Outcome::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_closes_a_kept_alive_connection_between_requests() {
        let server = server(Arc::default());
        let drain = server.drain.clone();
        let (mut client, task) = start(server);
        client
            .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; 256];
        let n = client.read(&mut reply).await.unwrap();
        assert!(String::from_utf8_lossy(&reply[..n]).ends_with("/one"));
        // Not yet quiet enough to park: the drain is seen when the timer is due.
        tokio::time::sleep(crate::http::park::PARK_AFTER / 5).await;
        drain.cancel();
        let closed = tokio::time::timeout(crate::http::park::PARK_AFTER * 2, task)
            .await
            .expect("still open after the drain");
        assert!(matches!(closed.unwrap(), Outcome::Closed));
        assert_eq!(client.read(&mut reply).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_client_leaving_mid_request_drops_the_call() {
        let dropped = Arc::new(Mutex::new(0));
        let (mut client, task) = start(server(dropped.clone()));
        client
            .write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*crate::lock(&dropped), 0, "still being served");
        drop(client);
        assert!(matches!(task.await.unwrap(), Outcome::Closed));
        assert_eq!(*crate::lock(&dropped), 1, "the call was dropped");
    }

    #[tokio::test]
    async fn a_streamed_body_goes_out_chunked_as_it_comes() {
        let service = HttpService::new(tower::service_fn(|_req: Request<Body>| async {
            let parts = futures_util::stream::unfold(0, |i| async move {
                let part = ["ab", "cde"].get(i)?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok::<_, BodyError>(Frame::data(Bytes::from(*part))), i + 1))
            });
            let body = http_body_util::StreamBody::new(parts);
            let mut response = Response::new(crate::http::boxed(body));
            response
                .headers_mut()
                .insert("date", HeaderValue::from_static(DATE));
            Ok::<_, crate::BoxError>(response)
        }));
        let (mut client, task) = start(Server {
            service,
            ..server(Arc::default())
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_all(&mut client).await,
            format!("HTTP/1.1 200 OK\r\ndate: {DATE}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
        );
        assert!(matches!(task.await.unwrap(), Outcome::Closed));
    }
}
