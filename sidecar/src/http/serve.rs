//! Serving one downstream connection whose protocol detection already chose
//! HTTP/1 or HTTP/2. On drain the connection is shut down gracefully:
//! HTTP/1 finishes the request in flight then closes, HTTP/2 sends GOAWAY and
//! lets open streams finish.
//! HTTP/1 connections begin with the own server for plain requests
//! ([`h1::Server`]); a request it leaves to hyper starts a hyper connection
//! over the same socket with the bytes already read ([`Phase`]), which
//! serves until it parks; a parked connection's next request goes to the
//! own server again.
//! `limits` bound the request head in both (431, the header read timeout);
//! hyper's HTTP/1 reads are watched for each head's framing headers as
//! sent ([`WatchHeads`]), which hyper's parsed request no longer shows and
//! `hygiene` checks (the own server serves no head with framing lines).
//! HTTP/2 connections go through [`H2Guard`] (frame checks, flood limits
//! from `limits.http2`); malformed HTTP/2 requests reset their stream
//! instead of getting a 400.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::h1;
use super::h2guard::{self, H2Guard};
use super::hygiene::{RawHead, RawHeads, WatchHeads};
use super::park::{close_now, first_byte, Boundary, Busy, Idle, Working, PARK_AFTER};
use super::{boxed, Body, ConnInfo, HttpService};
use crate::config::LimitSettings;
use crate::detect::Rewind;
use crate::errors;

/// Response bytes buffered per HTTP/2 stream before the upstream body is
/// no longer read (a client that never opens its window holds no more).
const H2_SEND_BUF: usize = 256 * 1024;

/// The header count hyper's HTTP/1 server allows when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// The smallest read buffer hyper's HTTP/1 server accepts.
const MIN_BUF_SIZE: usize = 8 * 1024;

/// Serves HTTP on `io` with `service` until the client leaves or `drain`
/// fires, or until an HTTP/1 connection parks: then the rest of its life is
/// returned ([`Parked`](super::Parked)), for the caller to await once
/// whatever it holds for serving is gone.
pub async fn serve<I>(
    io: I,
    version: Version,
    service: HttpService,
    drain: CancellationToken,
    conn: ConnInfo,
    limits: &LimitSettings,
) -> Option<super::Parked>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // HTTP/1 request heads as sent, for what hyper's parsed request no longer shows.
    let heads = (version != Version::HTTP_2).then(RawHeads::default);
    let raw_heads = heads.clone();
    // HTTP/1 responses being written: a connection parks only between them.
    let busy = (version != Version::HTTP_2).then(Busy::default);
    let counting = busy.clone();
    let h2_malformed = version == Version::HTTP_2;
    // Shared: the service lives as long as the connection, parked or not.
    let conn = std::sync::Arc::new(conn);
    let own = h1::Server {
        service: service.clone(),
        conn: conn.clone(),
        drain: drain.clone(),
        max_head: limits.max_header_bytes,
        max_headers: limits.max_headers,
        head_timeout: limits.header_timeout,
    };
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        super::admit(&mut req, &conn);
        // Popped for every request, kept only when it says something: the
        // hygiene layer reads a missing head as a plain one (no length
        // lines, no `Transfer-Encoding`), and most requests are plain.
        if let Some(raw) = raw_heads.as_ref().and_then(RawHeads::next) {
            if raw != RawHead::default() {
                req.extensions_mut().insert(raw);
            }
        }
        // A malformed HTTP/2 request resets its stream (RST_STREAM(PROTOCOL_ERROR)).
        if h2_malformed && h2guard::malformed_request(&req) {
            return Answer::Reset;
        }
        let working = counting.as_ref().map_or_else(Working::none, Busy::start);
        let grpc = super::is_grpc(req.headers());
        // Called at once: hyper keeps this future, small, not the request.
        let call = service.call_ref(req.map(boxed));
        Answer::Call {
            call,
            grpc,
            working,
        }
    });
    if version == Version::HTTP_2 {
        let mut builder = hyper::server::conn::http2::Builder::new(crate::clock::Executor);
        let h2 = &limits.http2;
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_pending_accept_reset_streams(h2.max_pending_resets)
            .max_local_error_reset_streams(h2.max_pending_resets)
            .max_send_buf_size(H2_SEND_BUF)
            .keep_alive_interval(h2.keepalive_interval)
            .keep_alive_timeout(h2.keepalive_timeout);
        let io = TokioIo::new(H2Guard::new(io, *h2));
        let conn = builder.serve_connection(io, hyper_service);
        drop(builder);
        // Boxed: an HTTP/2 connection's state is large, and HTTP/1
        // connections should not pay for it.
        log_end(Box::pin(until_drained(conn, &drain, |conn| conn.graceful_shutdown())).await);
        return None;
    }
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No timer, so no header timeout of hyper's: `Parking` bounds a head's
    // arrival with the timer it keeps anyway (see `park::Parking::stall`).
    builder
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
    // Only when it differs from hyper's own default (100): with a limit set,
    // hyper initialises a header array of that size for every request
    // (~1.7k instructions, measured) instead of using its inline one.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let h1 = Http1 {
        builder,
        service: hyper_service,
        heads: heads.unwrap_or_default(),
        busy: busy.unwrap_or_default(),
        own,
    };
    let mut phase = Phase::Own(io, None);
    loop {
        phase = h1.step(phase).await;
        match phase {
            Phase::Over => return None,
            Phase::Parked(_) => return Some(Box::pin(h1.rest(phase))),
            Phase::Own(..) | Phase::Hyper(..) => {}
        }
    }
}

/// Where an HTTP/1 connection is in its life.
enum Phase<I> {
    /// Plain requests, served by [`h1::Server`]; a byte of the next
    /// request may have been read already.
    Own(I, Option<u8>),
    /// A request left to hyper, and the bytes read ahead of hyper.
    Hyper(I, Bytes),
    /// Quiet: waiting for a next request with nothing but the socket.
    Parked(I),
    Over,
}

/// What serving an HTTP/1 connection needs, for its whole life.
struct Http1<S> {
    builder: hyper::server::conn::http1::Builder,
    service: S,
    heads: RawHeads,
    busy: Busy,
    /// The own server; its drain token and limits (`limits.header_timeout`,
    /// also the keep-alive timeout, and `max_header_bytes`) are hyper's
    /// here too.
    own: h1::Server,
}

impl<S> Http1<S>
where
    S: hyper::service::HttpService<Incoming> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<crate::BoxError>,
    S::Error: Into<crate::BoxError>,
{
    /// One hyper connection over `idle`'s stream: the stream again if it
    /// parked, `None` once the connection is over.
    async fn once<J>(&self, idle: Idle<J>) -> Option<Idle<J>>
    where
        J: AsyncRead + AsyncWrite + Boundary + Send + Unpin + 'static,
    {
        let (io, retrieve) = idle.serve(self.own.head_timeout);
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), self.service.clone())
            .with_upgrades();
        // Boxed: hyper's state lives apart from the connection's and goes
        // when the connection parks.
        log_end(
            Box::pin(until_drained(conn, &self.own.drain, |conn| {
                conn.graceful_shutdown()
            }))
            .await,
        );
        retrieve.parked()
    }

    /// The connection's next phase after `phase`.
    async fn step<I>(&self, phase: Phase<I>) -> Phase<I>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match phase {
            // Boxed: its state (buffers, the request's futures) goes when
            // the connection parks; a parked connection keeps only this
            // function's small state (10,000 idle connections: +12 MiB
            // with it inline, measured).
            Phase::Own(io, first) => match Box::pin(self.own.serve(io, first)).await {
                h1::Outcome::Closed => Phase::Over,
                h1::Outcome::Parked(io) => Phase::Parked(io),
                h1::Outcome::Hyper(io, read) => Phase::Hyper(io, read),
            },
            Phase::Hyper(io, read) => {
                let io =
                    WatchHeads::new(Rewind::new(read, io), self.heads.clone(), self.own.max_head);
                match self.once(Idle::new(io, self.busy.clone())).await {
                    Some(idle) => Phase::Parked(idle.into_inner().into_inner().into_inner()),
                    None => Phase::Over,
                }
            }
            Phase::Parked(mut io) => {
                // The header timeout also ends idle keep-alive connections.
                let keep_alive = self.own.head_timeout.saturating_sub(PARK_AFTER);
                match first_byte(&mut io, keep_alive, &self.own.drain).await {
                    Some(byte) => Phase::Own(io, Some(byte)),
                    None => {
                        close_now(&mut io).await;
                        Phase::Over
                    }
                }
            }
            Phase::Over => Phase::Over,
        }
    }

    /// A parked connection's life: waits for each next request, serves it,
    /// parks again. (An `async` block rather than an `async fn`, whose
    /// arguments would be held twice for the whole wait.)
    #[allow(clippy::manual_async_fn)]
    fn rest<I>(self, mut phase: Phase<I>) -> impl Future<Output = ()> + Send
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: Sync,
    {
        async move {
            while !matches!(phase, Phase::Over) {
                phase = self.step(phase).await;
            }
        }
    }
}

/// Logs how hyper's side of a connection ended.
fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        debug!(error = %err, "downstream connection ended with an error");
    }
}

/// Drives `conn` to its end; once `drain` fires, asks it to finish what is
/// in flight and close.
async fn until_drained<C>(
    conn: C,
    drain: &CancellationToken,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = drain.cancelled() => {
            graceful_shutdown(conn.as_mut());
            conn.await
        }
    }
}

/// What hyper awaits for one request: the stack's answer (its errors made
/// responses: the stack's last word is always a response), or a reset for a
/// malformed HTTP/2 request. Written out rather than `async`: hyper stores
/// it per request, and this holds only the stack's boxed future.
enum Answer {
    Reset,
    Call {
        call: super::ResponseFuture,
        grpc: bool,
        working: Working,
    },
}

impl Future for Answer {
    type Output = Result<Response<super::Holding<Body, Working>>, h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Reset => Poll::Ready(Err(h2::Error::from(h2::Reason::PROTOCOL_ERROR))),
            Answer::Call {
                call,
                grpc,
                working,
            } => {
                let response = match std::task::ready!(call.as_mut().poll(cx)) {
                    Ok(response) => response,
                    Err(err) => errors::response(&err, *grpc),
                };
                Poll::Ready(Ok(
                    std::mem::replace(working, Working::none()).track(response)
                ))
            }
        }
    }
}
