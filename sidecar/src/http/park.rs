//! Idle HTTP/1 keep-alive connections hold nothing but their socket.
//!
//! hyper keeps a read buffer, a write buffer (8 KiB each) and its parser
//! state for as long as a connection lives; a proxy holding thousands of
//! idle keep-alive connections spends most of its memory there. Once a
//! connection has been quiet for [`PARK_AFTER`] between two requests,
//! [`Parking`] ends hyper's side of it the way a client leaving would (end
//! of stream at a message boundary, so hyper closes cleanly and sends
//! nothing) and keeps the socket. [`Idle::wait`] then waits for the next
//! request's first byte with no buffer at all; that byte starts a fresh
//! hyper connection over the same socket, and the client sees one
//! keep-alive connection throughout.
//!
//! The own HTTP/1.1 server (`http::h1`) parks the same way, on the same
//! timer ([`Quiet`]): its buffers go and the socket waits for a byte.
//!
//! A connection is quiet when no response is being written ([`Busy`]), the
//! last write was not held up by a slow reader, every byte read so far
//! belongs to complete requests ([`Boundary`]) and nothing arrived for
//! [`PARK_AFTER`]. A connection that switched protocols (WebSocket) is never
//! parked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::Holding;
use crate::lock;

/// How long a connection stays quiet between requests before hyper's state
/// for it is dropped. Long enough that a connection in steady use never
/// parks (rebuilding costs two buffers and a read), short enough that an
/// idle one gives its memory back almost at once.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// What an I/O stream knows about the HTTP/1 messages read through it.
pub trait Boundary {
    /// Every byte read so far belongs to complete request messages, and
    /// the stream is still followed message by message.
    fn between_messages(&self) -> bool;

    /// Frees what is kept only for the message being read: called as the
    /// connection parks, so a parked connection holds no buffer.
    fn release(&mut self) {}

    /// When the request head being read began to arrive: `None` between
    /// heads, or when the stream does not know.
    fn head_began(&self) -> Option<Instant> {
        None
    }
}

/// Responses on one connection not yet fully written. Shared by the
/// connection's service (which counts) and its [`Parking`] stream.
#[derive(Debug, Clone, Default)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// Counts one request until its response has been written; see
    /// [`Working::track`].
    pub fn start(&self) -> Working {
        self.0.fetch_add(1, Ordering::Relaxed);
        Working(Some(self.clone()))
    }

    fn idle(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// One request being answered; dropped once its response is written.
#[derive(Debug)]
pub struct Working(Option<Busy>);

impl Working {
    /// Ties the count to `response`'s body: done when hyper drops it after
    /// the last frame. A protocol switch keeps the connection busy for good.
    pub fn track<B>(mut self, response: Response<B>) -> Response<Holding<B, Working>> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The counter stays raised: the connection is a tunnel now.
            self.0 = None;
        }
        response.map(|body| Holding::new(body, self))
    }

    /// A response that is not tracked (HTTP/2 connections never park).
    pub fn none() -> Self {
        Working(None)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        if let Some(busy) = &self.0 {
            busy.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The one timer a serving connection keeps while its reads stall: due
/// every [`PARK_AFTER`], when the connection is judged (quiet enough to
/// park, a head too slow) — so no request pays for a timer of its own
/// (hyper's header timeout set and dropped one per request; ~900
/// instructions, measured).
#[derive(Default)]
pub struct Quiet {
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes arrived since the timer was last set.
    arrived: bool,
}

impl Quiet {
    /// Bytes arrived.
    pub fn arrived(&mut self) {
        self.arrived = true;
    }

    /// Called when a read found nothing: true once [`PARK_AFTER`] passed
    /// since the timer was set (judge, then [`Quiet::again`] unless the
    /// connection ends or parks); false while it runs, the wake-up set.
    pub fn due(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            self.arrived = false;
            let mut timer = Box::pin(tokio::time::sleep(PARK_AFTER));
            // Registers the wake-up; a fresh timer is never due at once.
            let _ = timer.as_mut().poll(cx);
            self.timer = Some(timer);
            return false;
        };
        timer.as_mut().poll(cx).is_ready()
    }

    /// Nothing arrived since the timer was last set.
    pub fn was_quiet(&self) -> bool {
        !self.arrived
    }

    /// Sets the timer for another [`PARK_AFTER`].
    pub fn again(&mut self, cx: &mut Context<'_>) {
        self.arrived = false;
        if let Some(timer) = self.timer.as_mut() {
            timer.as_mut().reset(Instant::now() + PARK_AFTER);
            let _ = timer.as_mut().poll(cx);
        }
    }

    /// Drops the timer (the connection parks).
    fn stop(&mut self) {
        self.timer = None;
    }
}

/// Where a parked stream waits for the server to pick it up.
type Slot<J> = Arc<Mutex<Option<J>>>;

/// The stream hyper serves: passes everything through until the
/// connection has been quiet long enough, then reads as end of stream and
/// hands the inner stream back (see the module docs).
pub struct Parking<J> {
    io: Option<J>,
    busy: Busy,
    slot: Slot<J>,
    /// How long a request head may take to arrive (`limits.header_timeout`).
    head_timeout: Duration,
    quiet: Quiet,
    /// The last write could not go through (a slow reader): hyper may
    /// still hold response bytes.
    write_blocked: bool,
}

impl<J> Parking<J> {
    fn new(io: J, busy: Busy, slot: Slot<J>, head_timeout: Duration) -> Self {
        Self {
            io: Some(io),
            busy,
            slot,
            head_timeout,
            quiet: Quiet::default(),
            write_blocked: false,
        }
    }
}

/// What a read that found nothing leads to.
enum Stall {
    /// Wait for the stream (the timer is set).
    Wait,
    /// Quiet for [`PARK_AFTER`]: park.
    Park,
    /// The head being read is older than the header timeout.
    SlowHead,
}

impl<J: Boundary> Parking<J> {
    /// Called when a read found nothing: [`Stall::Park`] once the
    /// connection has been quiet for [`PARK_AFTER`]. The same timer bounds
    /// a head's arrival ([`Quiet`]).
    fn stall(&mut self, cx: &mut Context<'_>) -> Stall {
        if !self.quiet.due(cx) {
            return Stall::Wait;
        }
        let io = self.io.as_ref();
        if io
            .and_then(Boundary::head_began)
            .is_some_and(|began| began.elapsed() >= self.head_timeout)
        {
            return Stall::SlowHead;
        }
        let quiet = self.quiet.was_quiet()
            && self.busy.idle()
            && !self.write_blocked
            && io.is_some_and(Boundary::between_messages);
        if quiet {
            return Stall::Park;
        }
        self.quiet.again(cx);
        Stall::Wait
    }
}

impl<J: AsyncRead + Boundary + Unpin> AsyncRead for Parking<J> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(io) = this.io.as_mut() else {
            // Parked: hyper sees the end of the stream.
            return Poll::Ready(Ok(()));
        };
        let before = buf.filled().len();
        match Pin::new(io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.quiet.arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.stall(cx) {
                Stall::Wait => Poll::Pending,
                Stall::Park => {
                    let mut io = this.io.take();
                    if let Some(io) = io.as_mut() {
                        io.release();
                    }
                    *lock(&this.slot) = io;
                    this.quiet.stop();
                    Poll::Ready(Ok(()))
                }
                // hyper closes the connection, as for any read error.
                Stall::SlowHead => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete within limits.header_timeout",
                ))),
            },
            other => other,
        }
    }
}

impl<J: AsyncWrite + Unpin> Parking<J> {
    fn write_with<T>(
        &mut self,
        write: impl FnOnce(Pin<&mut J>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let poll = write(Pin::new(io));
        self.write_blocked = poll.is_pending();
        poll
    }
}

impl<J: AsyncWrite + Unpin> AsyncWrite for Parking<J> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(|io| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(|io| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(J::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Once parked, hyper's close is not the connection's: the socket
    /// stays open for the next request.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// One connection's stream between hyper connections.
pub struct Idle<J> {
    io: J,
    busy: Busy,
}

impl<J: AsyncRead + AsyncWrite + Unpin> Idle<J> {
    /// A connection not yet served; `busy` is what its service counts with.
    pub fn new(io: J, busy: Busy) -> Self {
        Self { io, busy }
    }

    /// The stream for the next hyper connection; a request head must
    /// arrive within `head_timeout` of its first byte.
    pub fn serve(self, head_timeout: Duration) -> (Parking<J>, Retrieve<J>) {
        let slot = Slot::default();
        let parking = Parking::new(self.io, self.busy.clone(), slot.clone(), head_timeout);
        (
            parking,
            Retrieve {
                busy: self.busy,
                slot,
            },
        )
    }

    /// The stream, once its hyper connection has parked (no byte read
    /// ahead of it).
    pub fn into_inner(self) -> J {
        self.io
    }
}

/// Waits for the next request's first byte on a parked stream: `None` when
/// the client leaves, `idle` passes or `drain` fires first.
pub async fn first_byte<J: AsyncRead + Unpin>(
    io: &mut J,
    idle: Duration,
    drain: &CancellationToken,
) -> Option<u8> {
    tokio::select! {
        read = tokio::time::timeout(idle, io.read_u8()) => read.ok()?.ok(),
        () = drain.cancelled() => None,
    }
}

/// Closes a stream: one attempt, so a TLS stream sends its close_notify if
/// the socket takes it at once; never waits.
pub async fn close_now<J: AsyncWrite + Unpin>(io: &mut J) {
    std::future::poll_fn(|cx| {
        let _ = Pin::new(&mut *io).poll_shutdown(cx);
        Poll::Ready(())
    })
    .await;
}

/// Takes a parked stream back once its hyper connection has ended.
pub struct Retrieve<J> {
    busy: Busy,
    slot: Slot<J>,
}

impl<J: AsyncRead + AsyncWrite + Unpin> Retrieve<J> {
    /// The stream, if hyper's connection ended because it parked.
    pub fn parked(self) -> Option<Idle<J>> {
        let io = lock(&self.slot).take()?;
        Some(Idle {
            io,
            busy: self.busy,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Version};
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::config::LimitSettings;
    use crate::http::{full, serve, Body, ConnInfo, HttpService};
    use crate::BoxError;

    /// The server's side of the connection, remembering the size of every
    /// read buffer offered: hyper reads into kilobytes, a parked
    /// connection waits with one byte.
    struct Watched {
        io: DuplexStream,
        reads: Arc<Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Watched {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            lock(&self.reads).push(buf.remaining());
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Watched {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// Answers with the path; `/slow` streams five chunks 200 ms apart.
    fn app() -> HttpService {
        HttpService::new(tower::service_fn(|req: Request<Body>| async move {
            if req.uri().path() != "/slow" {
                return Ok::<_, BoxError>(Response::new(full(req.uri().path().to_owned())));
            }
            let stream = futures_util::stream::unfold(0, |i| async move {
                if i == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let frame = Frame::data(Bytes::from(format!("{i}")));
                Some((Ok::<_, crate::http::BodyError>(frame), i + 1))
            });
            Ok(Response::new(crate::http::boxed(StreamBody::new(stream))))
        }))
    }

    struct Conn {
        client: DuplexStream,
        reads: Arc<Mutex<Vec<usize>>>,
        drain: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn connect() -> Conn {
        let (client, server) = duplex(64 * 1024);
        let reads = Arc::new(Mutex::new(Vec::new()));
        let drain = CancellationToken::new();
        let io = Watched {
            io: server,
            reads: reads.clone(),
        };
        let token = drain.clone();
        let task = tokio::spawn(async move {
            let limits = LimitSettings::default();
            let conn = ConnInfo::default();
            if let Some(parked) = serve(io, Version::HTTP_11, app(), token, conn, &limits).await {
                parked.await;
            }
        });
        Conn {
            client,
            reads,
            drain,
            task,
        }
    }

    impl Conn {
        /// How many times the server waited with a one-byte read (parked).
        fn parked_reads(&self) -> usize {
            let reads = lock(&self.reads);
            let starts = reads.windows(2).filter(|w| w[0] != 1 && w[1] == 1);
            starts.count() + usize::from(reads.first() == Some(&1))
        }

        /// Sends `head` and reads the whole response as text.
        async fn exchange(&mut self, head: &str) -> String {
            self.client.write_all(head.as_bytes()).await.unwrap();
            self.response().await
        }

        async fn response(&mut self) -> String {
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                let n = self.client.read(&mut byte).await.unwrap();
                assert_eq!(
                    n,
                    1,
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.push(byte[0]);
                let text = String::from_utf8_lossy(&got);
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = &text[..end];
                    if let Some(len) = header(head, "content-length") {
                        if got.len() == end + 4 + len.parse::<usize>().unwrap() {
                            return text.into_owned();
                        }
                    } else if text.ends_with("0\r\n\r\n") {
                        return text.into_owned();
                    }
                }
            }
        }

        /// True when the server closed the connection.
        async fn closed(&mut self) -> bool {
            let mut byte = [0u8; 1];
            matches!(self.client.read(&mut byte).await, Ok(0) | Err(_))
        }
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    const GET_ONE: &str = "GET /one HTTP/1.1\r\nHost: t\r\n\r\n";
    const GET_TWO: &str = "GET /two HTTP/1.1\r\nHost: t\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn a_quiet_keep_alive_connection_parks_and_serves_its_next_request() {
        let mut conn = connect();
        assert!(conn.exchange(GET_ONE).await.ends_with("\r\n\r\n/one"));
        // Busy connections do not park.
        tokio::time::sleep(PARK_AFTER / 2).await;
        assert!(conn.exchange(GET_TWO).await.ends_with("/two"));
        assert_eq!(conn.parked_reads(), 0);

        tokio::time::sleep(PARK_AFTER * 3).await;
        assert_eq!(conn.parked_reads(), 1, "the quiet connection parked");
        let reply = conn.exchange(GET_TWO).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("/two"), "{reply}");

        // Parked again, then closed at the keep-alive (header) timeout.
        let timeout = LimitSettings::default().header_timeout;
        tokio::time::sleep(timeout - Duration::from_secs(1)).await;
        assert_eq!(conn.parked_reads(), 2);
        assert!(conn.exchange(GET_ONE).await.ends_with("/one"));
        tokio::time::sleep(timeout + Duration::from_secs(1)).await;
        assert!(
            conn.closed().await,
            "an idle connection closes at the header timeout"
        );
        conn.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_streamed_response_is_not_cut_by_parking() {
        let mut conn = connect();
        let reply = conn.exchange("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(reply.contains("\r\n\r\n1\r\n0\r\n"), "{reply}");
        assert!(reply.contains("1\r\n4\r\n0\r\n\r\n"), "{reply}");
        assert!(conn.exchange(GET_ONE).await.ends_with("/one"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_in_pieces_is_never_parked_halfway() {
        let mut conn = connect();
        conn.client
            .write_all(b"GET /one HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tokio::time::sleep(PARK_AFTER * 4).await;
        assert_eq!(conn.parked_reads(), 0);
        let reply = conn.exchange("st: t\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("/one"), "{reply}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_still_arriving_at_the_header_timeout_closes_the_connection() {
        let timeout = LimitSettings::default().header_timeout;
        let mut conn = connect();
        // Complete just within the timeout: served.
        conn.client
            .write_all(b"GET /one HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tokio::time::sleep(timeout - PARK_AFTER * 2).await;
        assert!(conn.exchange("st: t\r\n\r\n").await.ends_with("/one"));
        // The next head trickles in, a byte every 100 ms, past the timeout.
        let start = tokio::time::Instant::now();
        conn.client
            .write_all(b"GET /two HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        while start.elapsed() < timeout + PARK_AFTER * 4 {
            if conn.client.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cut = start.elapsed();
        let closed = tokio::time::timeout(PARK_AFTER, conn.closed()).await;
        assert_eq!(
            closed.ok(),
            Some(true),
            "the trickling head was not cut off"
        );
        assert!(
            cut >= timeout && cut <= timeout + PARK_AFTER * 2,
            "cut after {cut:?}"
        );
        conn.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn draining_closes_a_parked_connection() {
        let mut conn = connect();
        assert!(conn.exchange(GET_ONE).await.ends_with("/one"));
        tokio::time::sleep(PARK_AFTER * 3).await;
        assert_eq!(conn.parked_reads(), 1);
        conn.drain.cancel();
        assert!(conn.closed().await);
        conn.task.await.unwrap();
    }
}
