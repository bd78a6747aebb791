//! Connections to endpoints, pooled per cluster, below the balancer.
//! HTTP/1: a stack of idle keep-alive connections per endpoint; a connection
//! returns to the pool once its response body is fully read; surplus left
//! by a burst is closed within seconds (see `reap`). Requests without a body
//! go out through this crate's own client ([`h1`]); the others, and
//! upgrades, through hyper's. HTTP/2: one
//! multiplexed connection per endpoint, re-made when it closes. A request
//! that a pooled connection could not even start (it closed while idle) is
//! sent again on another connection; any other failure is the caller's.
//! Connections are plaintext, mutual TLS to mesh upstreams (ALPN of the
//! wire), or server-verified TLS to upstreams outside the mesh
//! (`tls::upstream`, configs built once per cluster).
//! Writes: per-endpoint and per-cluster connection counts.
//! Errors: [`ConnectError`] (no connection), [`UpstreamError`] (the
//! upstream failed the request before its response head).

pub(crate) mod h1;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use crate::balance::EndpointState;
use crate::http::Body;
use crate::tls::upstream::{PublicTls, PublicTlsError};
use crate::tls::verify::IdentityMismatch;
use crate::tls::IdentityStore;
use crate::{lock, BoxError};

/// No connection to the endpoint could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish in time.
    #[error("connecting to the endpoint timed out")]
    Timeout,
    /// The TCP connect failed (refused, unreachable).
    #[error("connecting to the endpoint failed: {0}")]
    Io(#[source] std::io::Error),
    /// TCP worked but the HTTP/2 handshake did not.
    #[error("HTTP handshake with the endpoint failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// A passthrough authority did not resolve.
    #[error("could not resolve {0}")]
    Resolve(String),
    /// The cluster is at `limits.max_connections` or `limits.max_pending`:
    /// no connection was tried (a circuit-breaker decision, not the endpoint's fault).
    #[error("the upstream is at its connection limit")]
    Overflow,
    /// The TLS handshake with the upstream proxy failed.
    #[error("TLS handshake with the endpoint failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The upstream proxy proved an identity other than the one it must have.
    #[error("{0}")]
    Identity(#[from] IdentityMismatch),
    /// TLS with an upstream outside the mesh failed (not trusted, wrong name).
    #[error("{0}")]
    PublicTls(#[from] PublicTlsError),
}

/// No connection could be made, so the request was never sent: it travels
/// back with the error, body untouched, and may be sent elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Unsent {
    /// Why no connection was made.
    #[source]
    pub error: ConnectError,
    request: Returned,
}

impl Unsent {
    fn new(error: ConnectError, request: Request<Body>) -> Self {
        Self {
            error,
            request: Returned::new(Some(request)),
        }
    }

    /// Whether the proxy's own limits, not the endpoint, stopped it.
    pub fn overflowed(&self) -> bool {
        matches!(self.error, ConnectError::Overflow)
    }

    /// The unsent request, once.
    pub fn take_request(&self) -> Option<Request<Body>> {
        self.request.take()
    }
}

/// A request handed back with its failure, to be taken once (a `Mutex`
/// only so the error is `Sync`, as errors must be: a request's body is not).
pub struct Returned(Mutex<Option<Request<Body>>>);

/// Not the request: its headers may carry credentials, and errors are logged.
impl std::fmt::Debug for Returned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Returned(..)")
    }
}

impl Returned {
    fn new(request: Option<Request<Body>>) -> Self {
        Self(Mutex::new(request))
    }

    fn take(&self) -> Option<Request<Body>> {
        lock(&self.0).take()
    }
}

/// Mutual TLS to a cluster's endpoints.
#[derive(Clone)]
pub struct UpstreamTls {
    /// This proxy's identity (rotates; read at each new connection).
    pub identity: Arc<IdentityStore>,
    /// The SPIFFE ID the endpoints must present.
    pub expected: Arc<str>,
}

/// How a cluster's connections are secured (none: plaintext).
#[derive(Clone)]
pub enum Security {
    /// Mutual TLS between proxies, the upstream's SPIFFE ID checked.
    Mesh(UpstreamTls),
    /// TLS to an upstream outside the mesh, its certificate and name checked.
    Public(Arc<PublicTls>),
}

/// A connection to an endpoint: plaintext, or TLS (between proxies, or to
/// an upstream outside the mesh).
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS: mutual between proxies, or server-verified outside the mesh.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut *self {
            UpstreamIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut *self {
            UpstreamIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut *self {
            UpstreamIo::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut *self {
            UpstreamIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Tells an identity mismatch apart from other handshake failures.
fn tls_error(err: std::io::Error) -> ConnectError {
    let mismatch = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|inner| match inner {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<IdentityMismatch>().cloned()
            }
            _ => None,
        });
    match mismatch {
        Some(mismatch) => ConnectError::Identity(mismatch),
        None => ConnectError::Tls(err),
    }
}

pub use h1::WireError;

/// The upstream failed a request after it was sent, before the response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// On a connection of hyper's client (HTTP/2; HTTP/1 with a body or an
    /// upgrade; a request without a body on an idle connection of hyper's).
    #[error("upstream request failed: {0}")]
    Http(#[source] hyper::Error, Returned),
    /// On a connection of this crate's HTTP/1 client.
    #[error("upstream request failed: {0}")]
    Wire(#[source] WireError, Returned),
}

impl UpstreamError {
    /// The upstream answered with something that is not HTTP.
    pub fn is_protocol(&self) -> bool {
        match self {
            UpstreamError::Http(err, _) => err.is_parse(),
            UpstreamError::Wire(err, _) => err.is_protocol(),
        }
    }

    /// The failed request, once, when it was kept: every request without a
    /// body sent on HTTP/1, as forwarded (see `send_own`).
    pub fn take_request(&self) -> Option<Request<Body>> {
        let (UpstreamError::Http(_, returned) | UpstreamError::Wire(_, returned)) = self;
        returned.take()
    }

    /// A failure of hyper's client, without the request.
    fn http(err: hyper::Error) -> Self {
        UpstreamError::Http(err, Returned::new(None))
    }
}

/// Whether a failure of `req` sent on `wire` brings it back
/// ([`UpstreamError::take_request`]): HTTP/1 requests without a body or an
/// upgrade, as this crate's client sends them.
pub fn hands_back<B: http_body::Body>(req: &Request<B>, wire: Wire) -> bool {
    wire == Wire::Http1 && h1::eligible(req)
}

/// Per-cluster connection counters, shared with the metrics registry.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections opened, ever.
    pub opened: Counter,
    /// Connections open now.
    pub open: Gauge,
}

/// Connects a TCP stream to `addr` within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    // Small writes (headers, gRPC frames) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Which HTTP version to speak to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 (also every upgrade).
    Http1,
    /// HTTP/2 prior knowledge.
    Http2,
}

/// Circuit-breaker limits on a cluster's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: u32,
    /// Connections being opened at once.
    pub max_pending: u32,
}

/// A cluster's connection pool.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

/// An idle HTTP/1 connection: this crate's client's, or hyper's.
enum Held {
    Own(h1::Conn),
    Hyper(http1::SendRequest<Body>),
}

struct Idle {
    conn: Held,
    since: Instant,
}

impl Idle {
    /// Still open and idle for less than `timeout` at `now`.
    fn usable(&mut self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) < timeout
            && match &mut self.conn {
                Held::Own(conn) => conn.alive(),
                Held::Hyper(sender) => !sender.is_closed(),
            }
    }
}

/// An upstream response body. From an HTTP/1 connection it puts the
/// connection back in the idle stack as soon as the body ends (see
/// [`h1`] for this crate's client; for hyper's: at once when the
/// connection is ready for the next request then, so a caller's next
/// request on a busy proxy finds it there, not a new connection; otherwise,
/// or when the body is dropped unread, a task waits for it).
pub struct PooledBody(Kind);

enum Kind {
    Hyper {
        inner: Incoming,
        recycle: Option<Recycle>,
    },
    Own(h1::Body),
}

/// An HTTP/1 connection on its way back to the pool.
struct Recycle {
    pool: Weak<Inner>,
    addr: SocketAddr,
    sender: http1::SendRequest<Body>,
}

impl Recycle {
    fn check_in(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.check_in(self.addr, Held::Hyper(self.sender));
        }
    }

    /// Back now if ready, else once ready (or never, if the connection closes).
    fn finish(self) {
        if self.sender.is_ready() {
            return self.check_in();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let addr = self.addr;
        runtime.spawn(
            async move {
                let mut this = self;
                // Ends when the response is done, or with an error when the
                // connection closes or is upgraded: either way bounded by the
                // connection's life.
                if this.sender.ready().await.is_ok() {
                    this.check_in();
                }
            }
            .instrument(tracing::debug_span!("pool_checkin", endpoint = %addr)),
        );
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match &mut self.0 {
            Kind::Hyper { inner, recycle } => {
                let frame = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                if frame.is_none() || inner.is_end_stream() {
                    if let Some(recycle) = recycle.take() {
                        recycle.finish();
                    }
                }
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Kind::Own(h1::Body::Whole(data)) => Pin::new(data)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
            Kind::Own(h1::Body::Reading(reading)) => reading
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.is_end_stream(),
            Kind::Own(h1::Body::Whole(data)) => data.is_end_stream(),
            Kind::Own(h1::Body::Reading(reading)) => reading.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.size_hint(),
            Kind::Own(h1::Body::Whole(data)) => data.size_hint(),
            Kind::Own(h1::Body::Reading(reading)) => reading.size_hint(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Kind::Hyper { recycle, .. } = &mut self.0 {
            if let Some(recycle) = recycle.take() {
                recycle.finish();
            }
        }
    }
}

/// `req` again, for a request without a body.
fn bodiless_copy(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(crate::http::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// The failure of a request sent by this crate's client, the request with it.
fn wire_error(failed: h1::Failed, req: Request<Body>) -> BoxError {
    Box::new(UpstreamError::Wire(failed.error, Returned::new(Some(req))))
}

/// What became of a request on an idle connection of hyper's client.
enum Retry {
    /// It was never written: the connection closed while idle.
    Unsent(Box<Request<Body>>),
    /// It failed after it was written.
    Failed(hyper::Error),
}

/// Per endpoint, looked up twice per request: foldhash (seeded per map)
/// costs a fraction of SipHash over a `SocketAddr`'s six fields.
type ByAddr<T> = HashMap<SocketAddr, T, foldhash::fast::RandomState>;

struct Inner {
    connect_timeout: Duration,
    idle_timeout: Duration,
    metrics: ConnectionMetrics,
    tls: Option<Security>,
    limits: ConnectionLimits,
    /// Connections open now (counted by `ConnectionGuard`).
    open: Arc<AtomicU32>,
    /// Connections being opened now.
    connecting: AtomicU32,
    idle_h1: Mutex<ByAddr<Vec<Idle>>>,
    h2: Mutex<ByAddr<http2::SendRequest<Body>>>,
}

impl Inner {
    /// An HTTP/1 connection ready for its next request goes on top of its
    /// endpoint's idle stack.
    fn check_in(&self, addr: SocketAddr, conn: Held) {
        let idle = Idle {
            conn,
            since: crate::clock::now(),
        };
        lock(&self.idle_h1).entry(addr).or_default().push(idle);
    }
}

impl Pool {
    /// An empty pool; idle connections are closed after `idle_timeout`, or
    /// sooner when surplus.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        metrics: ConnectionMetrics,
        tls: Option<Security>,
        limits: ConnectionLimits,
    ) -> Self {
        let inner = Arc::new(Inner {
            connect_timeout,
            idle_timeout,
            metrics,
            tls,
            limits,
            open: Arc::new(AtomicU32::new(0)),
            connecting: AtomicU32::new(0),
            idle_h1: Mutex::default(),
            h2: Mutex::default(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)).instrument(tracing::debug_span!("pool_reaper")));
        Pool(inner)
    }

    /// The connect timeout of this pool's cluster.
    pub fn connect_timeout(&self) -> Duration {
        self.0.connect_timeout
    }

    /// Sends `req` to `endpoint` over a pooled connection. (The wire's own
    /// future, not one of ours around it: the request is moved one time
    /// less on its way.)
    pub fn send<'a>(
        &'a self,
        endpoint: &'a Arc<EndpointState>,
        wire: Wire,
        req: Request<Body>,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, BoxError>> + Send + 'a {
        match wire {
            Wire::Http1 => Either::Left(self.send_h1(endpoint, req)),
            Wire::Http2 => Either::Right(self.send_h2(endpoint, req)),
        }
    }

    /// A new TCP connection to `endpoint`, counted while it lives.
    pub async fn connect_opaque(
        &self,
        endpoint: &Arc<EndpointState>,
    ) -> Result<(UpstreamIo, ConnectionGuard), ConnectError> {
        self.open(endpoint, crate::tls::ALPN_TCP).await
    }

    /// A new connection to `endpoint` for an active health check: TCP, then
    /// TLS offering `alpn` when the cluster uses TLS, as real traffic does.
    /// Neither pooled nor counted in the connection metrics.
    pub async fn probe(
        &self,
        endpoint: &Arc<EndpointState>,
        alpn: &'static [u8],
    ) -> Result<UpstreamIo, ConnectError> {
        self.within_limits(self.connect(endpoint, alpn)).await
    }

    /// TCP to the endpoint, then TLS offering `alpn` if the cluster uses it;
    /// counted as open (the guard) from the moment it is.
    async fn open(
        &self,
        endpoint: &Arc<EndpointState>,
        alpn: &'static [u8],
    ) -> Result<(UpstreamIo, ConnectionGuard), ConnectError> {
        self.within_limits(async {
            let io = self.connect(endpoint, alpn).await?;
            Ok((io, self.count(endpoint)))
        })
        .await
    }

    /// Runs `connect` unless the cluster is at `max_pending` or
    /// `max_connections`. A connection being opened counts toward both
    /// until it is open, and is counted as open before it stops counting as
    /// pending, so concurrent callers never see a gap to slip through.
    async fn within_limits<T>(
        &self,
        connect: impl std::future::Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        let inner = &self.0;
        let pending = inner.connecting.fetch_add(1, Ordering::AcqRel);
        let over = pending >= inner.limits.max_pending
            || inner.open.load(Ordering::Acquire).saturating_add(pending)
                >= inner.limits.max_connections;
        let result = if over {
            Err(ConnectError::Overflow)
        } else {
            connect.await
        };
        inner.connecting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    async fn connect(
        &self,
        endpoint: &Arc<EndpointState>,
        alpn: &'static [u8],
    ) -> Result<UpstreamIo, ConnectError> {
        let stream = tcp(endpoint.addr, self.0.connect_timeout).await?;
        let (config, name, failed): (_, _, fn(std::io::Error) -> ConnectError) = match &self.0.tls {
            None => return Ok(UpstreamIo::Plain(stream)),
            Some(Security::Mesh(tls)) => {
                let config = tls
                    .identity
                    .client_config(&tls.expected, alpn)
                    .map_err(|e| ConnectError::Tls(std::io::Error::other(e)))?;
                // Mesh certificates carry a SPIFFE ID, not a host name: the
                // verifier ignores this name and checks the ID.
                let name = ServerName::try_from("mesh-upstream")
                    .map_err(|e| ConnectError::Tls(std::io::Error::other(e)))?;
                (config, name, tls_error)
            }
            Some(Security::Public(tls)) => (tls.config(alpn)?, tls.server_name(), |err| {
                PublicTlsError::Handshake(err).into()
            }),
        };
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
        let stream = tokio::time::timeout(self.0.connect_timeout, handshake)
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(failed)?;
        Ok(UpstreamIo::Tls(Box::new(stream)))
    }

    async fn send_h1(
        &self,
        endpoint: &Arc<EndpointState>,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, BoxError> {
        if h1::eligible(&req) {
            self.send_own(endpoint, req).await
        } else {
            // Boxed: hyper's futures are large, and every await up the
            // stack moves the futures below it.
            Box::pin(self.send_hyper(endpoint, req)).await
        }
    }

    /// A request without a body, through this crate's client on an idle
    /// connection of either kind, or a new one of its own.
    async fn send_own(
        &self,
        endpoint: &Arc<EndpointState>,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, BoxError> {
        while let Some(held) = self.checkout_h1(endpoint.addr) {
            match held {
                Held::Own(conn) => match conn.send(&req).await {
                    Ok(answer) => return Ok(self.own_response(endpoint.addr, answer)),
                    // Never reached the upstream: it closed the connection while idle.
                    Err(failed) if !failed.written => continue,
                    Err(failed) => return Err(wire_error(failed, req)),
                },
                Held::Hyper(sender) => {
                    // hyper's client keeps no request it sent: a copy (no
                    // body to copy) goes back with a failure, as this
                    // crate's client hands back its own.
                    let copy = bodiless_copy(&req);
                    // Boxed, as in `send_h1`.
                    match Box::pin(self.try_hyper(endpoint.addr, sender, req)).await {
                        Ok(response) => return Ok(response),
                        Err(Retry::Unsent(unsent)) => req = *unsent,
                        Err(Retry::Failed(err)) => {
                            return Err(Box::new(UpstreamError::Http(
                                err,
                                Returned::new(Some(copy)),
                            )))
                        }
                    }
                }
            }
        }
        // Boxed: opening a connection is the rare path, and its future is
        // large; the common one (a pooled connection) stays small.
        let conn = match Box::pin(self.open(endpoint, crate::tls::ALPN_HTTP1)).await {
            Ok((io, guard)) => h1::Conn::new(io, guard),
            Err(err) => return Err(Box::new(Unsent::new(err, req))),
        };
        match conn.send(&req).await {
            Ok(answer) => Ok(self.own_response(endpoint.addr, answer)),
            Err(failed) => Err(wire_error(failed, req)),
        }
    }

    /// `req` on an idle connection of hyper's client.
    async fn try_hyper(
        &self,
        addr: SocketAddr,
        mut sender: http1::SendRequest<Body>,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, Retry> {
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.recycle_h1(addr, sender, response)),
            Err(mut err) => match err.take_message() {
                // Never written: the connection closed while idle.
                Some(unsent) => Err(Retry::Unsent(Box::new(unsent))),
                None => Err(Retry::Failed(err.into_error())),
            },
        }
    }

    /// A request with a body, or an upgrade, through hyper's client.
    async fn send_hyper(
        &self,
        endpoint: &Arc<EndpointState>,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, BoxError> {
        while let Some(held) = self.checkout_h1(endpoint.addr) {
            let sender = match held {
                Held::Hyper(sender) => sender,
                Held::Own(conn) => match conn.into_hyper().await {
                    Ok(sender) => sender,
                    Err(_) => continue,
                },
            };
            match self.try_hyper(endpoint.addr, sender, req).await {
                Ok(response) => return Ok(response),
                Err(Retry::Unsent(unsent)) => req = *unsent,
                Err(Retry::Failed(err)) => return Err(Box::new(UpstreamError::http(err))),
            }
        }
        // Boxed, as in `send_own`.
        let mut sender = match Box::pin(self.connect_h1(endpoint)).await {
            Ok(sender) => sender,
            Err(err) => return Err(Box::new(Unsent::new(err, req))),
        };
        sender.ready().await.map_err(UpstreamError::http)?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::http)?;
        Ok(self.recycle_h1(endpoint.addr, sender, response))
    }

    async fn send_h2(
        &self,
        endpoint: &Arc<EndpointState>,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, BoxError> {
        let response = self.send_h2_inner(endpoint, req).await?;
        Ok(response.map(|inner| {
            PooledBody(Kind::Hyper {
                inner,
                recycle: None,
            })
        }))
    }

    async fn send_h2_inner(
        &self,
        endpoint: &Arc<EndpointState>,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, BoxError> {
        let cached = lock(&self.0.h2)
            .get(&endpoint.addr)
            .filter(|s| !s.is_closed())
            .cloned();
        if let Some(mut sender) = cached {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(response),
                    Err(mut err) => match err.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(Box::new(UpstreamError::http(err.into_error()))),
                    },
                }
            }
        }
        // Boxed, as in `send_own`.
        let mut sender = match Box::pin(self.connect_h2(endpoint)).await {
            Ok(sender) => sender,
            Err(err) => return Err(Box::new(Unsent::new(err, req))),
        };
        lock(&self.0.h2).insert(endpoint.addr, sender.clone());
        sender.ready().await.map_err(UpstreamError::http)?;
        Ok(sender
            .send_request(req)
            .await
            .map_err(UpstreamError::http)?)
    }

    fn checkout_h1(&self, addr: SocketAddr) -> Option<Held> {
        let mut idle = lock(&self.0.idle_h1);
        let stack = idle.get_mut(&addr)?;
        let now = crate::clock::now();
        while let Some(mut entry) = stack.pop() {
            if entry.usable(now, self.0.idle_timeout) {
                return Some(entry.conn);
            }
        }
        None
    }

    /// The response of this crate's client; the connection goes home when
    /// its body is complete (at once if it came whole with the head).
    fn own_response(&self, addr: SocketAddr, answer: h1::Answer) -> Response<PooledBody> {
        let home = h1::Home {
            pool: Arc::downgrade(&self.0),
            addr,
        };
        answer
            .into_response(home)
            .map(|body| PooledBody(Kind::Own(body)))
    }

    /// The response, whose body puts the connection back once it is fully read.
    fn recycle_h1(
        &self,
        addr: SocketAddr,
        sender: http1::SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let recycle = Recycle {
            pool: Arc::downgrade(&self.0),
            addr,
            sender,
        };
        response.map(|inner| {
            PooledBody(Kind::Hyper {
                inner,
                recycle: Some(recycle),
            })
        })
    }

    async fn connect_h1(
        &self,
        endpoint: &Arc<EndpointState>,
    ) -> Result<http1::SendRequest<Body>, ConnectError> {
        let (stream, guard) = self.open(endpoint, crate::tls::ALPN_HTTP1).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        drive(guard, conn.with_upgrades());
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        endpoint: &Arc<EndpointState>,
    ) -> Result<http2::SendRequest<Body>, ConnectError> {
        let (stream, guard) = self.open(endpoint, crate::tls::ALPN_H2).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        drive(guard, conn);
        Ok(sender)
    }

    fn count(&self, endpoint: &Arc<EndpointState>) -> ConnectionGuard {
        self.0.metrics.opened.inc();
        self.0.metrics.open.inc();
        endpoint.connections.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            endpoint: endpoint.clone(),
            open: self.0.metrics.open.clone(),
            count: self.0.open.clone(),
        }
    }
}

/// Runs an upstream connection's I/O until it closes, counted (by `guard`)
/// while open.
fn drive<C>(guard: ConnectionGuard, conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    let span = tracing::debug_span!("upstream_conn", endpoint = %guard.endpoint.addr);
    tokio::spawn(
        async move {
            let _guard = guard;
            if let Err(err) = conn.await {
                debug!(error = %err, "upstream connection failed");
            }
        }
        .instrument(span),
    );
}

/// Counts one open upstream connection until dropped.
pub struct ConnectionGuard {
    endpoint: Arc<EndpointState>,
    open: Gauge,
    count: Arc<AtomicU32>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.dec();
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the reaper looks at the idle connections.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// An idle HTTP/1 connection unused for this long is surplus: a burst of
/// concurrent requests left it, and steady traffic has not needed it since.
const SURPLUS_AFTER: Duration = Duration::from_secs(2);

/// Every [`REAP_EVERY`]: closes idle connections past the idle timeout,
/// and half of the surplus ones (the oldest, at the bottom of each stack),
/// never the last. After a burst of 200 concurrent requests the pool is
/// back to a few connections within seconds, not after `timeouts.idle`
/// (each idle HTTP/1 connection holds ~27 KiB of buffers and channel
/// here, and a socket and buffers in the app); connections steady traffic
/// uses are at the top of the stack and never surplus. Ends with the pool.
async fn reap(pool: Weak<Inner>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut idle = lock(&inner.idle_h1);
        for stack in idle.values_mut() {
            stack.retain_mut(|e| e.usable(now, inner.idle_timeout));
            let surplus = surplus(stack.iter().map(|e| now - e.since));
            stack.drain(..surplus);
        }
        idle.retain(|_, stack| !stack.is_empty());
        drop(idle);
        lock(&inner.h2).retain(|_, sender| !sender.is_closed());
    }
}

/// How many connections to close from the bottom of an idle stack, given
/// how long each has been idle, oldest first: half of those idle past
/// [`SURPLUS_AFTER`], rounded down, so one is always kept.
fn surplus(idle_for: impl Iterator<Item = Duration>) -> usize {
    idle_for.take_while(|d| *d >= SURPLUS_AFTER).count() / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> impl Iterator<Item = Duration> + '_ {
        list.iter().map(|s| Duration::from_secs(*s))
    }

    #[test]
    fn half_the_connections_idle_past_the_surplus_age_go_oldest_first() {
        // Oldest first: 4 idle for 2 s or more, then two in recent use.
        assert_eq!(surplus(secs(&[9, 5, 3, 2, 1, 0])), 2);
        // Recent use above never shields the old ones below.
        assert_eq!(surplus(secs(&[30, 30, 30, 30, 30, 30, 0])), 3);
    }

    /// An upstream on a real socket answering every request on one
    /// connection with 1 MiB; after each body the connection is back in the
    /// pool (one, reused) with a read buffer of its own.
    #[tokio::test]
    async fn an_idle_connection_lets_go_of_the_buffer_a_large_body_grew() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (pool, endpoint, listener) = pool_and_upstream().await;
        let addr = endpoint.addr;
        let body_len = 1 << 20;
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = vec![0u8; 4096];
            while matches!(socket.read(&mut head).await, Ok(n) if n > 0) {
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; body_len]).await;
            }
        });
        for _ in 0..2 {
            let response = pool
                .send(&endpoint, Wire::Http1, get("/"))
                .await
                .expect("response");
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body");
            assert_eq!(body.to_bytes().len(), body_len);
            let idle = lock(&pool.0.idle_h1);
            let stack = idle.get(&addr).expect("back in the pool");
            assert_eq!(stack.len(), 1, "one connection, reused");
            let Held::Own(conn) = &stack[0].conn else {
                panic!("not this crate's client's connection");
            };
            // A buffer of its own, not the tail of the 64 KiB reads the body
            // took (whose allocation it would keep alive).
            let room = conn.buffer_capacity();
            assert!((8192..=2 * 8192).contains(&room), "{room}");
        }
        assert_eq!(pool.0.metrics.opened.get(), 1, "one connection opened");
    }

    /// A pool of one endpoint at a fresh local address, and that address.
    async fn pool_and_upstream() -> (Pool, Arc<EndpointState>, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            ConnectionMetrics::default(),
            None,
            ConnectionLimits {
                max_connections: 10,
                max_pending: 10,
            },
        );
        let endpoint = Arc::new(EndpointState::new(&crate::discovery::Endpoint {
            addr,
            weight: 1,
        }));
        (pool, endpoint, listener)
    }

    fn get(path: &str) -> Request<Body> {
        let mut req = Request::new(crate::http::empty());
        *req.uri_mut() = http::Uri::try_from(path).expect("uri");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("up"));
        req
    }

    #[tokio::test]
    async fn a_request_without_a_body_comes_back_with_its_failure_from_either_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (pool, endpoint, listener) = pool_and_upstream().await;
        // One connection: answers the first request (a POST, with its body),
        // then closes on the second unanswered.
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            while !seen.ends_with(b"\r\n\r\nabc") {
                match socket.read(&mut chunk).await {
                    Ok(n) if n > 0 => seen.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let _ = socket.read(&mut chunk).await;
        });
        let mut post = get("/first");
        *post.method_mut() = http::Method::POST;
        *post.body_mut() = crate::http::full("abc");
        let response = pool.send(&endpoint, Wire::Http1, post).await.expect("POST");
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
        // The connection is hyper's now: a request without a body on it
        // still comes back with the failure.
        for _ in 0..100 {
            if lock(&pool.0.idle_h1)
                .get(&endpoint.addr)
                .is_some_and(|s| !s.is_empty())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let failed = pool
            .send(&endpoint, Wire::Http1, get("/second?x=1"))
            .await
            .err()
            .expect("the upstream closed without answering");
        let again = failed
            .downcast_ref::<UpstreamError>()
            .and_then(UpstreamError::take_request)
            .expect("the request came back");
        assert_eq!(again.uri(), "/second?x=1");
        assert_eq!(again.headers()["host"], "up");
        assert!(http_body::Body::is_end_stream(again.body()));
    }

    #[test]
    fn the_last_idle_connection_is_never_surplus() {
        assert_eq!(surplus(secs(&[50])), 0);
        assert_eq!(surplus(secs(&[50, 40])), 1);
        assert_eq!(surplus(secs(&[1, 1, 0])), 0, "all in recent use");
        assert_eq!(surplus(secs(&[])), 0);
    }
}
