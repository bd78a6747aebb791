//! Listeners: bind, accept, detect the protocol, and hand the connection
//! to its HTTP stack or to the opaque TCP relay. Every connection task is
//! tracked, so drain can wait for them, and watches the drain signal: on
//! drain the accept loop stops and HTTP connections shut down gracefully.
//! Reads: the running settings (detection timeout, opaque upstreams) and
//! the route table, at each accept. Writes: connection metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use mesh_api::admin::ListenerInfo;
use mesh_api::config::Protocol;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::config::Settings;
use crate::detect::{self, Rewind};
use crate::http::HttpService;
use crate::route::RouteKind;
use crate::stack::{self, Runtime};

/// A listener the settings ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// What it routes to.
    pub kind: RouteKind,
    /// The address as written (kept across reloads while unchanged).
    pub configured: SocketAddr,
    /// YAML path of the address, for errors.
    pub path: String,
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
            });
        }
        if let Some(proxy) = settings.outbound.proxy {
            specs.push(ListenerSpec {
                kind: RouteKind::Proxy,
                configured: proxy,
                path: "outbound.proxy".into(),
            });
        }
        for upstream in &settings.outbound.upstreams {
            if let Some(listen) = upstream.listen {
                specs.push(ListenerSpec {
                    kind: RouteKind::Upstream(upstream.name.clone()),
                    configured: listen,
                    path: format!("outbound.upstreams.{}.listen", upstream.name),
                });
            }
        }
        specs
    }

    /// The metrics / log name: `inbound`, `proxy`, `outbound:<upstream>`.
    pub fn name(&self) -> Arc<str> {
        match &self.kind {
            RouteKind::Inbound => Arc::from("inbound"),
            RouteKind::Proxy => Arc::from("proxy"),
            RouteKind::Upstream(name) => Arc::from(format!("outbound:{name}")),
        }
    }
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
    /// Stops accepting; connections already accepted go on.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The admin API's view.
    pub fn info(&self) -> ListenerInfo {
        let (kind, upstream) = match &self.spec.kind {
            RouteKind::Inbound => ("inbound", None),
            RouteKind::Proxy => ("proxy", None),
            RouteKind::Upstream(name) => ("outbound", Some(name.to_string())),
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

/// Starts accepting on `listener`.
pub fn start(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: &Shared,
) -> std::io::Result<Running> {
    let bound = listener.local_addr()?;
    let stop = shared.drain.child_token();
    let name = spec.name();
    let service = match &spec.kind {
        RouteKind::Inbound => stack::inbound(&shared.runtime),
        kind => stack::outbound(&shared.runtime, kind.clone()),
    };
    let accept = Accept {
        listener,
        kind: spec.kind.clone(),
        name: name.clone(),
        service,
        shared: shared.clone(),
    };
    shared.tracker.spawn(
        accept
            .run(stop.clone())
            .instrument(tracing::info_span!("listener", name = %name, addr = %bound)),
    );
    Ok(Running { spec, bound, stop })
}

struct Accept {
    listener: TcpListener,
    kind: RouteKind,
    name: Arc<str>,
    service: HttpService,
    shared: Shared,
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
                    this.shared.tracker.spawn(
                        conn.connection(stream)
                            .instrument(tracing::debug_span!("conn", %peer)),
                    );
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        debug!("listener stopped");
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let gauge = self.shared.runtime.metrics.connections_open(&self.name);
        gauge.inc();
        let (opaque, timeout) = self.detection();
        let detected = if opaque {
            Ok((detect::Protocol::Opaque, Rewind::new(Bytes::new(), stream)))
        } else {
            detect::detect(stream, timeout).await
        };
        match detected {
            Ok((protocol, io)) => self.serve(protocol, io).await,
            Err(err) => debug!(error = %err, "connection failed during detection"),
        }
        gauge.dec();
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
            RouteKind::Proxy => (false, outbound),
        }
    }

    async fn serve(&self, protocol: detect::Protocol, io: Rewind<TcpStream>) {
        let metrics = &self.shared.runtime.metrics;
        let label = match protocol {
            detect::Protocol::Http1 => "http1",
            detect::Protocol::Http2 => "http2",
            detect::Protocol::Tls => "tls",
            detect::Protocol::Opaque => "tcp",
        };
        metrics.connection_accepted(&self.name, label);
        let drain = self.shared.drain.clone();
        match protocol {
            detect::Protocol::Http1 => {
                crate::http::serve(io, Version::HTTP_11, self.service.clone(), drain).await
            }
            detect::Protocol::Http2 => {
                crate::http::serve(io, Version::HTTP_2, self.service.clone(), drain).await
            }
            detect::Protocol::Tls | detect::Protocol::Opaque => {
                let cluster = self
                    .shared
                    .runtime
                    .routes
                    .load()
                    .listener_cluster(&self.kind);
                match cluster {
                    Some(cluster) => crate::tcp::serve(io, &cluster, metrics, &self.name).await,
                    None => debug!("not HTTP, and this listener routes only HTTP: closing"),
                }
            }
        }
    }
}
