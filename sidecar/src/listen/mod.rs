//! Listeners: bind, accept, detect the protocol, and hand the connection
//! to its HTTP stack or to the opaque TCP relay. Every connection task is
//! tracked, so drain can wait for them, and watches the drain signal: on
//! drain the accept loop stops and HTTP connections shut down gracefully.
//! The transparent listener (traffic redirected by `sidecar iptables`) first
//! reads each connection's original destination (`SO_ORIGINAL_DST`); opaque
//! connections go to the upstream owning that address, else straight to it.
//! A `protocol: udp` upstream's listener is a UDP socket, served by
//! `crate::udp` (same stop token, same reload rules). Edge listeners
//! (`edge.rs`) first admit the connection (limits, PROXY protocol,
//! allow / deny), then terminate public TLS or answer HTTPS redirects;
//! sidecar listeners admit by `limits.max_connections` and
//! `max_connections_per_ip` (`admission.rs`). TLS handshakes on either are
//! rate limited (`limits.tls_handshakes_per_second`); while the proxy is
//! overloaded (`crate::overload`) new connections are refused.
//! Reads: the running settings (detection timeout, opaque upstreams) and
//! the route table, at each accept. Writes: connection metrics.

mod admission;
mod edge;
pub(crate) mod proxy_protocol;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use mesh_api::admin::ListenerInfo;
use mesh_api::config::{Protocol, TlsMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::config::Settings;
use crate::detect::{self, Rewind};
use crate::http::{ConnInfo, HttpService, Parked};
use crate::route::RouteKind;
use crate::stack::{self, Runtime};
use crate::tls;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a transparent passthrough connection may take to connect.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a connection redirected by iptables `REDIRECT` was going
/// (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6). A connection
/// made straight to the listener (not redirected) is refused: relaying it
/// to its "original" destination would connect the listener to itself.
fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let socket = socket2::SockRef::from(stream);
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let original = if v4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    let original = original.as_socket().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "original destination is not IP",
        )
    })?;
    let unmapped = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    if unmapped(original) == unmapped(local) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("original destination {original} is this listener (connection not redirected): refusing a loop"),
        ));
    }
    Ok(original)
}

/// A listener the settings ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// What it routes to.
    pub kind: RouteKind,
    /// The address as written (kept across reloads while unchanged).
    pub configured: SocketAddr,
    /// YAML path of the address, for errors.
    pub path: String,
    /// A UDP socket (`protocol: udp` upstreams) rather than a TCP listener.
    pub udp: bool,
}

impl ListenerSpec {
    /// Every listener of `settings` except the admin API's.
    pub fn all(settings: &Settings) -> Vec<ListenerSpec> {
        let mut specs = Vec::new();
        if let Some(inbound) = &settings.inbound {
            specs.push(ListenerSpec {
                kind: RouteKind::Inbound,
                configured: inbound.listen,
                path: "inbound.listen".into(),
                udp: false,
            });
        }
        if let Some(transparent) = settings.outbound.transparent {
            specs.push(ListenerSpec {
                kind: RouteKind::Transparent,
                configured: transparent,
                path: "outbound.transparent".into(),
                udp: false,
            });
        }
        if let Some(proxy) = settings.outbound.proxy {
            specs.push(ListenerSpec {
                kind: RouteKind::Proxy,
                configured: proxy,
                path: "outbound.proxy".into(),
                udp: false,
            });
        }
        for upstream in &settings.outbound.upstreams {
            if let Some(listen) = upstream.listen {
                specs.push(ListenerSpec {
                    kind: RouteKind::Upstream(upstream.name.clone()),
                    configured: listen,
                    path: format!("outbound.upstreams.{}.listen", upstream.name),
                    udp: upstream.protocol == Protocol::Udp,
                });
            }
        }
        let edge_listeners = settings.edge.iter().flat_map(|e| &e.listeners);
        for (i, listener) in edge_listeners.enumerate() {
            specs.push(ListenerSpec {
                kind: RouteKind::Edge(i),
                configured: listener.listen,
                path: format!("{}.listen", listener.path),
                udp: false,
            });
        }
        specs
    }

    /// Binds its address: a TCP listener, or a UDP socket.
    pub fn bind(&self) -> std::io::Result<Bound> {
        if self.udp {
            crate::udp::bind(self.configured).map(Bound::Udp)
        } else {
            bind(self.configured).map(Bound::Tcp)
        }
    }

    /// The metrics / log name: `inbound`, `proxy`, `outbound:<upstream>`.
    pub fn name(&self) -> Arc<str> {
        match &self.kind {
            RouteKind::Inbound => Arc::from("inbound"),
            RouteKind::Proxy => Arc::from("proxy"),
            RouteKind::Transparent => Arc::from("transparent"),
            RouteKind::Upstream(name) => Arc::from(format!("outbound:{name}")),
            RouteKind::Edge(index) => Arc::from(format!("edge:{index}")),
        }
    }
}

/// A bound listener socket, not serving yet.
pub enum Bound {
    /// Accepts connections.
    Tcp(TcpListener),
    /// Receives datagrams (a `protocol: udp` upstream).
    Udp(tokio::net::UdpSocket),
}

/// A listener that is accepting.
pub struct Running {
    /// What was asked for.
    pub spec: ListenerSpec,
    /// Where it is bound.
    pub bound: SocketAddr,
    stop: CancellationToken,
}

impl Running {
    /// Stops accepting; connections already accepted go on (UDP flows end:
    /// their replies go out through the listener socket).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The admin API's view.
    pub fn info(&self) -> ListenerInfo {
        let (kind, upstream) = match &self.spec.kind {
            RouteKind::Inbound => ("inbound", None),
            RouteKind::Proxy => ("proxy", None),
            RouteKind::Transparent => ("transparent", None),
            RouteKind::Upstream(name) => ("outbound", Some(name.to_string())),
            RouteKind::Edge(_) => ("edge", None),
        };
        ListenerInfo {
            kind: kind.into(),
            upstream,
            configured: self.spec.configured.to_string(),
            addr: self.bound.to_string(),
        }
    }
}

/// Binds `addr` with address reuse (restarts do not wait for TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// What every accepted connection needs.
#[derive(Clone)]
pub struct Shared {
    /// Routing, settings, metrics.
    pub runtime: Arc<Runtime>,
    /// Fires when the proxy drains.
    pub drain: CancellationToken,
    /// Tracks connection tasks so drain can wait for them.
    pub tracker: TaskTracker,
}

/// Starts accepting on `listener` (or relaying datagrams on a UDP socket).
pub fn start(listener: Bound, spec: ListenerSpec, shared: &Shared) -> std::io::Result<Running> {
    let stop = shared.drain.child_token();
    let listener = match (listener, &spec.kind) {
        (Bound::Tcp(listener), _) => listener,
        (Bound::Udp(socket), RouteKind::Upstream(upstream)) => {
            let bound = socket.local_addr()?;
            crate::udp::spawn(socket, upstream.clone(), shared, stop.clone());
            return Ok(Running { spec, bound, stop });
        }
        (Bound::Udp(_), _) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: only upstreams listen on UDP", spec.path),
            ))
        }
    };
    let bound = listener.local_addr()?;
    let name = spec.name();
    crate::overload::watch(&shared.runtime.settings, &shared.tracker, &shared.drain);
    let service = match &spec.kind {
        RouteKind::Inbound => stack::inbound(&shared.runtime),
        RouteKind::Edge(_) => stack::edge(&shared.runtime),
        kind => stack::outbound(&shared.runtime, kind.clone()),
    };
    let edge = match spec.kind {
        RouteKind::Edge(index) => Some(edge::EdgeListener::start(
            index,
            &shared.runtime.settings.load(),
            shared.runtime.metrics.edge_certs(),
            &name,
            &shared.tracker,
            &stop,
        )?),
        _ => None,
    };
    let accept = Accept {
        listener,
        kind: spec.kind.clone(),
        name: name.clone(),
        service,
        shared: shared.clone(),
        edge,
        per_ip: Arc::default(),
    };
    shared.tracker.spawn(
        accept
            .run(stop.clone())
            .instrument(tracing::info_span!("listener", name = %name, addr = %bound)),
    );
    Ok(Running { spec, bound, stop })
}

/// A connection counted open (`mesh_connections_open`) and holding its
/// admission slots, until dropped.
struct Open<A = admission::Admitted> {
    gauge: prometheus_client::metrics::gauge::Gauge,
    _admitted: A,
}

impl<A> Open<A> {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge, admitted: A) -> Self {
        gauge.inc();
        Self {
            gauge,
            _admitted: admitted,
        }
    }
}

impl<A> Drop for Open<A> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct Accept {
    listener: TcpListener,
    kind: RouteKind,
    name: Arc<str>,
    service: HttpService,
    shared: Shared,
    /// Admission, PROXY protocol and public TLS state of an edge listener.
    edge: Option<Arc<edge::EdgeListener>>,
    /// Connections open per client address (`limits.max_connections_per_ip`).
    per_ip: Arc<admission::PerIp>,
}

impl Accept {
    async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = this.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let conn = this.clone();
                    let span = tracing::debug_span!("conn", %peer);
                    // Each kind its own task: a task is as large as its
                    // future, for as long as the connection lives. Its
                    // polls share a clock reading each (`clock`).
                    match this.edge.clone() {
                        Some(edge) => this.shared.tracker.spawn(crate::clock::shared(
                            conn.edge_connection(edge, stream, peer).instrument(span),
                        )),
                        None => this.shared.tracker.spawn(crate::clock::shared(
                            conn.connection(stream, peer).instrument(span),
                        )),
                    };
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    warn!(error = %err, "accept failed");
                    this.shared
                        .runtime
                        .metrics
                        .connection_refused(&this.name, "accept_error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        debug!("listener stopped");
    }

    /// One sidecar connection, from accept to close. The task's own future
    /// is small: everything up to the parked remainder of an HTTP/1
    /// connection is boxed and freed before it, so a parked connection
    /// holds only that remainder and what counts it open. (An `async`
    /// block rather than an `async fn`, whose arguments would be held twice.)
    #[allow(clippy::manual_async_fn)]
    fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send {
        async move {
            if let Some((parked, _open)) = Box::pin(self.open(stream, peer)).await {
                parked.await;
            }
        }
    }

    /// Admits, detects and serves a connection: its parked remainder, if it
    /// parks, with what must stay held until that ends.
    async fn open(&self, stream: TcpStream, peer: SocketAddr) -> Option<(Parked, Open)> {
        let admitted = {
            let limits = &self.shared.runtime.settings.load().limits;
            admission::admit(&self.per_ip, peer.ip().to_canonical(), limits)
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(reason) => {
                self.refuse(reason);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let original_dst = match self.kind {
            RouteKind::Transparent => match original_dst(&stream) {
                Ok(addr) => Some(addr),
                Err(err) => {
                    warn!(error = %err, "transparent connection closed");
                    return None;
                }
            },
            _ => None,
        };
        let open = Open::new(
            self.shared.runtime.metrics.connections_open(&self.name),
            admitted,
        );
        let (opaque, timeout) = match original_dst {
            Some(original) => self.transparent_detection(original),
            None => self.detection(),
        };
        let detected = if opaque {
            Ok((detect::Protocol::Opaque, Rewind::new(Bytes::new(), stream)))
        } else {
            detect::detect(stream, timeout).await
        };
        match detected {
            Ok((protocol, io)) => {
                let parked = Box::pin(self.serve(protocol, io, peer, original_dst)).await?;
                Some((parked, open))
            }
            Err(err) => {
                debug!(error = %err, "connection failed during detection");
                None
            }
        }
    }

    /// Transparent connections to an opaque upstream's endpoint skip detection.
    fn transparent_detection(&self, original: SocketAddr) -> (bool, Duration) {
        let timeout = self.shared.runtime.settings.load().outbound.detect_timeout;
        let cluster = self
            .shared
            .runtime
            .routes
            .load()
            .cluster_with_endpoint(original);
        let opaque = cluster.is_some_and(|c| c.settings.protocol == Protocol::Tcp);
        (opaque, timeout)
    }

    /// Whether to skip detection, and how long detection may wait.
    fn detection(&self) -> (bool, Duration) {
        let settings = self.shared.runtime.settings.load();
        let outbound = settings.outbound.detect_timeout;
        match &self.kind {
            RouteKind::Inbound => settings.inbound.as_ref().map_or((false, outbound), |i| {
                (i.app.protocol == Protocol::Tcp, i.detect_timeout)
            }),
            RouteKind::Upstream(name) => {
                let tcp = settings
                    .outbound
                    .upstreams
                    .iter()
                    .any(|u| u.name == *name && u.protocol == Protocol::Tcp);
                (tcp, outbound)
            }
            RouteKind::Proxy | RouteKind::Transparent | RouteKind::Edge(_) => (false, outbound),
        }
    }

    async fn serve(
        &self,
        protocol: detect::Protocol,
        io: Rewind<TcpStream>,
        peer: SocketAddr,
        original_dst: Option<SocketAddr>,
    ) -> Option<Parked> {
        let metrics = &self.shared.runtime.metrics;
        let label = match protocol {
            detect::Protocol::Http1 => "http1",
            detect::Protocol::Http2 => "http2",
            detect::Protocol::Tls => "tls",
            detect::Protocol::Opaque => "tcp",
        };
        metrics.connection_accepted(&self.name, label);
        // Only the inbound listener terminates mutual TLS between proxies.
        let identity = match self.kind {
            RouteKind::Inbound => self.shared.runtime.identity.current(),
            _ => None,
        };
        match (protocol, identity) {
            // Boxed, like every path that is not plaintext HTTP: a connection's
            // task is as large as its largest path, for as long as it lives.
            (detect::Protocol::Tls, Some(identity)) => {
                Box::pin(self.serve_mtls(io, &identity, peer)).await
            }
            (_, Some(identity)) if identity.settings.mode == TlsMode::Strict => {
                metrics.plaintext_refused();
                debug!("plaintext refused: inbound requires mutual TLS");
                None
            }
            _ => {
                self.dispatch(
                    protocol,
                    io,
                    ConnInfo {
                        peer: Some(peer),
                        original_dst,
                        listener: Some(self.name.clone()),
                        ..Default::default()
                    },
                )
                .await
            }
        }
    }

    /// Closes a connection refused at admission, counting why.
    fn refuse(&self, reason: &'static str) {
        let metrics = &self.shared.runtime.metrics;
        metrics.connection_refused(&self.name, reason);
        debug!(reason, "connection refused");
    }

    /// Terminates mutual TLS, then serves what ALPN says is inside.
    async fn serve_mtls(
        &self,
        io: Rewind<TcpStream>,
        identity: &tls::Loaded,
        peer: SocketAddr,
    ) -> Option<Parked> {
        let stream = self.handshake(identity.server.clone(), io).await?;
        let session = stream.get_ref().1;
        let peer_identity = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| tls::spiffe_id(leaf))
            .map(Arc::from);
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let conn = ConnInfo {
            peer_identity,
            peer: Some(peer),
            tls: true,
            listener: Some(self.name.clone()),
            ..Default::default()
        };
        match alpn.as_deref() {
            Some(tls::ALPN_H2) => self.dispatch(detect::Protocol::Http2, stream, conn).await,
            Some(tls::ALPN_HTTP1) => self.dispatch(detect::Protocol::Http1, stream, conn).await,
            Some(tls::ALPN_TCP) => self.dispatch(detect::Protocol::Opaque, stream, conn).await,
            // A TLS client that named no protocol (e.g. openssl s_client): look inside.
            _ => match detect::detect(stream, self.detection().1).await {
                Ok((protocol, stream)) => self.dispatch(protocol, stream, conn).await,
                Err(err) => {
                    debug!(error = %err, "connection failed during detection");
                    None
                }
            },
        }
    }

    /// A TLS handshake on `io` within [`HANDSHAKE_TIMEOUT`], when the
    /// handshake rate (`limits.tls_handshakes_per_second`) allows one;
    /// `None`, counted or logged, otherwise.
    async fn handshake<I>(
        &self,
        config: Arc<rustls::ServerConfig>,
        io: I,
    ) -> Option<tokio_rustls::server::TlsStream<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if !admission::tls_handshake_allowed(&self.shared.runtime.settings.load().limits) {
            self.refuse("tls_handshake_rate");
            return None;
        }
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(io);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                debug!(listener = %self.name, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(listener = %self.name, "TLS handshake timed out");
                None
            }
        }
    }

    /// Serves a connection whose protocol is known; see [`crate::http::serve`]
    /// for what is returned.
    async fn dispatch<I>(&self, protocol: detect::Protocol, io: I, conn: ConnInfo) -> Option<Parked>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let version = match protocol {
            detect::Protocol::Http1 => Version::HTTP_11,
            detect::Protocol::Http2 => Version::HTTP_2,
            detect::Protocol::Tls | detect::Protocol::Opaque => {
                Box::pin(self.serve_opaque(io, conn)).await;
                return None;
            }
        };
        let drain = self.shared.drain.clone();
        let service = self.service.clone();
        let limits = self.shared.runtime.settings.load().limits.clone();
        crate::http::serve(io, version, service, drain, conn, &limits).await
    }

    /// Relays a connection that is not HTTP to its upstream.
    async fn serve_opaque<I>(&self, io: I, conn: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if !self.tcp_allowed(&conn) {
            return debug!(caller = ?conn.peer_identity, "opaque connection denied by authz");
        }
        let routes = self.shared.runtime.routes.load();
        let cluster = match conn.original_dst {
            Some(original) => match routes.cluster_with_endpoint(original) {
                Some(cluster) => Some(cluster),
                None => return self.passthrough(io, original).await,
            },
            None => routes.listener_cluster(&self.kind),
        };
        drop(routes);
        match cluster {
            Some(cluster) => {
                let runtime = &self.shared.runtime;
                crate::tcp::serve(io, &cluster, runtime, &self.name, &conn).await
            }
            None => debug!("not HTTP, and this listener routes only HTTP: closing"),
        }
    }

    /// An opaque transparent connection no upstream owns: straight on to
    /// where the client meant to go.
    async fn passthrough<I>(&self, io: I, original: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let metrics = &self.shared.runtime.metrics;
        metrics.transparent_passthrough();
        match crate::connect::tcp(original, PASSTHROUGH_CONNECT_TIMEOUT).await {
            Ok(upstream) => {
                let (received, sent) = crate::tcp::relay(io, upstream).await;
                metrics.tcp_bytes(&self.name, received, sent);
            }
            Err(err) => debug!(%original, error = %err, "passthrough connect failed"),
        }
    }

    /// Inbound authz for a whole opaque connection.
    fn tcp_allowed(&self, conn: &ConnInfo) -> bool {
        if self.kind != RouteKind::Inbound {
            return true;
        }
        let settings = self.shared.runtime.settings.load();
        settings
            .inbound
            .as_ref()
            .and_then(|i| i.authz.as_ref())
            .is_none_or(|rules| {
                crate::policy::authz::allows(
                    rules,
                    conn.peer_identity.as_deref(),
                    crate::policy::authz::Access::Tcp,
                )
            })
    }
}
