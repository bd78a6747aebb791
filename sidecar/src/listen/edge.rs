//! Edge listeners' accept path: admission, the PROXY protocol, public TLS
//! and the HTTPS redirect listener, in the order a connection meets them:
//! 1. the listener's and the global (`edge.max_connections`) limits, before
//!    a byte is read;
//! 2. the PROXY protocol header when `proxy_protocol` is on: the client
//!    address in it becomes the connection's peer;
//! 3. `allow` / `deny` on that client address, then `max_connections_per_ip`;
//! 4. TLS (certificate by SNI, ALPN picks the HTTP version), the redirect
//!    answer, or plain HTTP, handed to the edge stack with a `ConnInfo`
//!    saying who the client is, whether TLS carried it and for which name.
//!
//! A refused connection is closed at once and counted on
//! `mesh_connections_refused_total{listener,reason}`.
//! Reads: the listener's settings, by index, at each accept (so a reload
//! that keeps the address reaches new connections without a restart).
//! Writes: connection and refusal metrics.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tracing::{debug, Instrument};

use super::proxy_protocol::{self, Header};
use super::{Accept, Open};
use crate::config::{EdgeListenerSettings, Settings};
use crate::detect::{self, Rewind};
use crate::http::{Body, ConnInfo, HttpService, Parked, RequestError};
use crate::tls::public::CertStore;
use crate::{errors, lock, tls, BoxError};

/// How long the PROXY protocol header may take when detection has no timeout.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the answer to plaintext on a TLS port may take to write.
const PLAINTEXT_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// How often certificate files are checked for changes.
const CERT_WATCH_PERIOD: Duration = Duration::from_secs(1);

/// What a client sending plain HTTP to a TLS listener reads before the close.
const PLAINTEXT_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 33\r\nconnection: close\r\n\r\nthis port speaks HTTPS, not HTTP\n";

/// Edge connections open now across every edge listener of the process
/// (`edge.max_connections`): one proxy process, one count.
static EDGE_CONNECTIONS: AtomicU32 = AtomicU32::new(0);

/// What an edge listener keeps between connections.
pub(super) struct EdgeListener {
    /// Index in `edge.listeners`.
    index: usize,
    /// Public certificates (empty unless the listener has `tls`).
    certs: CertStore,
    /// Connections open on this listener.
    open: AtomicU32,
    /// Connections open per client address; an address leaves at 0.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl EdgeListener {
    /// The state of listener `index`; loads its certificates (a listener
    /// whose certificates cannot be loaded does not start) and watches
    /// their files until `stop`.
    pub(super) fn start(
        index: usize,
        settings: &Settings,
        certs: &crate::tls::public::CertRegistry,
        name: &Arc<str>,
        tracker: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) -> std::io::Result<Arc<EdgeListener>> {
        let listener = Arc::new(EdgeListener {
            index,
            certs: CertStore::new(certs),
            open: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
        });
        let tls = listener_settings(settings, index).and_then(|l| l.tls.as_ref());
        if let Some(tls) = tls {
            listener
                .certs
                .configure(tls)
                .map_err(|e| std::io::Error::other(format!("edge.listeners[{index}].tls: {e}")))?;
        }
        tracker.spawn(
            watch_certs(listener.clone(), stop.clone())
                .instrument(tracing::info_span!("cert_watch", listener = %name)),
        );
        Ok(listener)
    }

    /// Counts a connection against this listener's and the global limits.
    fn admit(
        self: &Arc<Self>,
        listener_limit: Option<u32>,
        global_limit: Option<u32>,
    ) -> Result<Slot, &'static str> {
        if !acquire(&EDGE_CONNECTIONS, global_limit) {
            return Err("global_limit");
        }
        if !acquire(&self.open, listener_limit) {
            EDGE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
            return Err("listener_limit");
        }
        Ok(Slot(self.clone()))
    }

    /// Counts a connection from `ip` against `max_connections_per_ip`.
    fn admit_ip(self: &Arc<Self>, ip: IpAddr, limit: Option<u32>) -> Result<IpSlot, &'static str> {
        let mut per_ip = lock(&self.per_ip);
        let open = per_ip.get(&ip).copied().unwrap_or(0);
        if limit.is_some_and(|limit| open >= limit) {
            return Err("ip_limit");
        }
        per_ip.insert(ip, open + 1);
        Ok(IpSlot {
            listener: self.clone(),
            ip,
        })
    }
}

/// Adds one to `counter` unless that passes `limit`.
fn acquire(counter: &AtomicU32, limit: Option<u32>) -> bool {
    let limit = limit.unwrap_or(u32::MAX);
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// A connection counted on its listener and globally; uncounted on drop.
struct Slot(Arc<EdgeListener>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        EDGE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection counted on its client address; the address's entry goes
/// when its last connection does.
struct IpSlot {
    listener: Arc<EdgeListener>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.listener.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn listener_settings(settings: &Settings, index: usize) -> Option<&EdgeListenerSettings> {
    settings.edge.as_ref()?.listeners.get(index)
}

/// Re-reads changed certificate files every second, until the listener stops.
async fn watch_certs(listener: Arc<EdgeListener>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CERT_WATCH_PERIOD) => {}
        }
        listener.certs.refresh();
    }
}

/// What an edge connection holds while open: its place under the
/// listener's and the global limits, and under its client's.
type EdgeSlots = (Slot, IpSlot);

impl Accept {
    /// One connection on an edge listener, from accept to close; small, as
    /// [`Accept::connection`]'s is: all but a parked remainder is boxed.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn edge_connection(
        self: Arc<Self>,
        edge: Arc<EdgeListener>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send {
        async move {
            if let Some((parked, _open)) = Box::pin(self.edge_open(edge, stream, peer)).await {
                parked.await;
            }
        }
    }

    /// Admits, reads the PROXY header, detects and serves an edge
    /// connection: its parked remainder, if it parks, with what must stay
    /// held until that ends.
    async fn edge_open(
        &self,
        edge: Arc<EdgeListener>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(Parked, Open<EdgeSlots>)> {
        let metrics = self.shared.runtime.metrics.clone();
        let refuse = |reason: &'static str| {
            metrics.connection_refused(&self.name, reason);
            debug!(reason, "edge connection refused");
            None
        };
        let settings = self.shared.runtime.settings.load_full();
        let Some(listener) = listener_settings(&settings, edge.index) else {
            debug!("edge listener no longer configured: closing");
            return None;
        };
        let global_limit = settings.edge.as_ref().and_then(|e| e.max_connections);
        // Limits first: a refused connection costs no read.
        if crate::overload::state().refuses_connections() {
            return refuse("overloaded");
        }
        let slot = match edge.admit(listener.max_connections, global_limit) {
            Ok(slot) => slot,
            Err(reason) => return refuse(reason),
        };
        let _ = stream.set_nodelay(true);
        let detect_timeout = settings.outbound.detect_timeout;
        let (client, io) = if listener.proxy_protocol {
            let timeout = if detect_timeout.is_zero() {
                PROXY_HEADER_TIMEOUT
            } else {
                detect_timeout
            };
            match proxy_protocol::read(stream, timeout).await {
                Ok((Header::Proxied(client), io)) => (client, io),
                Ok((Header::Local, io)) => (peer, io),
                Err(err) => {
                    debug!(error = %err, "PROXY protocol");
                    return refuse("proxy_protocol");
                }
            }
        } else {
            (peer, Rewind::new(Bytes::new(), stream))
        };
        let ip = client.ip().to_canonical();
        if !crate::edge::admits(&listener.allow, &listener.deny, ip) {
            return refuse("deny");
        }
        let ip_slot = match edge.admit_ip(ip, listener.max_connections_per_ip) {
            Ok(slot) => slot,
            Err(reason) => return refuse(reason),
        };
        let open = Open::new(metrics.connections_open(&self.name), (slot, ip_slot));
        let conn = ConnInfo {
            peer: Some(client),
            listener: Some(self.name.clone()),
            ..Default::default()
        };
        let served = async {
            let (protocol, io) = match detect::detect(io, detect_timeout).await {
                Ok(detected) => detected,
                Err(err) => {
                    debug!(error = %err, "connection failed during detection");
                    return None;
                }
            };
            metrics.connection_accepted(&self.name, protocol_label(protocol));
            match (&listener.tls, listener.redirect_https) {
                (Some(tls), _) => match (protocol, edge.certs.server_config(tls)) {
                    (detect::Protocol::Tls, Some(config)) => {
                        self.serve_public_tls(io, config, conn).await
                    }
                    (detect::Protocol::Tls, None) => {
                        debug!("no certificate loaded: closing");
                        None
                    }
                    (detect::Protocol::Http1, _) => {
                        plaintext_on_tls(io).await;
                        None
                    }
                    _ => {
                        debug!("not TLS on a TLS listener: closing");
                        None
                    }
                },
                (None, Some((port, status))) => {
                    self.serve_redirect(protocol, io, conn, port, status, &settings)
                        .await
                }
                (None, None) => self.dispatch(protocol, io, conn).await,
            }
        };
        Some((served.await?, open))
    }

    /// Terminates public TLS, then serves what ALPN says is inside.
    async fn serve_public_tls<I>(
        &self,
        io: I,
        config: Arc<rustls::ServerConfig>,
        mut conn: ConnInfo,
    ) -> Option<Parked>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let stream = self.handshake(config, io).await?;
        let session = stream.get_ref().1;
        conn.tls = true;
        conn.server_name = session.server_name().map(Arc::from);
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        match alpn.as_deref() {
            Some(tls::ALPN_H2) => self.dispatch(detect::Protocol::Http2, stream, conn).await,
            Some(tls::ALPN_HTTP1) => self.dispatch(detect::Protocol::Http1, stream, conn).await,
            // No ALPN (e.g. openssl s_client, HTTP/1.0 clients): look inside.
            _ => match detect::detect(stream, self.detection().1).await {
                Ok((protocol, stream)) => self.dispatch(protocol, stream, conn).await,
                Err(err) => {
                    debug!(error = %err, "connection failed during detection");
                    None
                }
            },
        }
    }

    /// The HTTPS redirect listener: every request gets the redirect; no
    /// upstream is involved.
    async fn serve_redirect<I>(
        &self,
        protocol: detect::Protocol,
        io: I,
        conn: ConnInfo,
        port: u16,
        status: StatusCode,
        settings: &Settings,
    ) -> Option<Parked>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let version = match protocol {
            detect::Protocol::Http1 => Version::HTTP_11,
            detect::Protocol::Http2 => Version::HTTP_2,
            _ => {
                debug!("not HTTP on a redirect listener: closing");
                return None;
            }
        };
        let service = redirect_service(port, status);
        let drain = self.shared.drain.clone();
        crate::http::serve(io, version, service, drain, conn, &settings.limits).await
    }
}

fn protocol_label(protocol: detect::Protocol) -> &'static str {
    match protocol {
        detect::Protocol::Http1 => "http1",
        detect::Protocol::Http2 => "http2",
        detect::Protocol::Tls => "tls",
        detect::Protocol::Opaque => "tcp",
    }
}

/// Plain HTTP sent to a TLS listener: a 400 saying so, then the close.
async fn plaintext_on_tls<I>(mut io: I)
where
    I: AsyncWrite + Unpin,
{
    debug!("plain HTTP on a TLS listener: 400, closing");
    let answer = async {
        io.write_all(PLAINTEXT_ON_TLS).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(PLAINTEXT_ANSWER_TIMEOUT, answer).await;
}

/// Answers every request with a redirect to HTTPS on `port`.
fn redirect_service(port: u16, status: StatusCode) -> HttpService {
    let redirect = tower::service_fn(move |req: Request<Body>| async move {
        redirect(&req, port, status).map_err(BoxError::from)
    });
    HttpService::new(
        ServiceBuilder::new()
            .layer(errors::layer()) // no usable Host: the one place that turns it into a 400
            .service(HttpService::new(redirect)),
    )
}

/// `Location: https://<host>[:port]<path?query>` (the port left out when 443).
fn redirect(
    req: &Request<Body>,
    port: u16,
    status: StatusCode,
) -> Result<Response<Body>, RequestError> {
    let authority = crate::http::authority(req)?;
    let host = authority.host();
    if host.is_empty() {
        return Err(RequestError::InvalidHost);
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let location = http::HeaderValue::try_from(location).map_err(|_| RequestError::InvalidHost)?;
    let mut response = Response::new(crate::http::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: Option<&str>, port: u16) -> Result<String, RequestError> {
        let mut req = Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        let req = req.body(crate::http::empty()).unwrap();
        let response = redirect(&req, port, StatusCode::PERMANENT_REDIRECT)?;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        Ok(response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string())
    }

    #[test]
    fn redirect_keeps_host_path_and_query_and_drops_the_port() {
        assert_eq!(
            location("/a/b?x=1", Some("example.test:8080"), 443).unwrap(),
            "https://example.test/a/b?x=1"
        );
        assert_eq!(
            location("/", Some("example.test"), 8443).unwrap(),
            "https://example.test:8443/"
        );
        assert_eq!(
            location("/v6", Some("[2001:db8::1]:80"), 443).unwrap(),
            "https://[2001:db8::1]/v6"
        );
        assert_eq!(
            location("http://h2.example.test:80/p", None, 443).unwrap(),
            "https://h2.example.test/p"
        );
        assert!(matches!(
            location("/", None, 443),
            Err(RequestError::MissingHost)
        ));
        assert!(matches!(
            location("/", Some("bad host"), 443),
            Err(RequestError::InvalidHost)
        ));
    }

    #[test]
    fn limits_count_and_per_ip_entries_leave_at_zero() {
        let edge = Arc::new(EdgeListener {
            index: 0,
            certs: CertStore::new(&crate::tls::public::CertRegistry::default()),
            open: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = edge.admit_ip(ip, Some(2)).unwrap();
        let second = edge.admit_ip(ip, Some(2)).unwrap();
        assert!(edge.admit_ip(ip, Some(2)).is_err());
        assert!(edge.admit_ip("192.0.2.2".parse().unwrap(), Some(2)).is_ok());
        drop(first);
        let third = edge.admit_ip(ip, Some(2)).unwrap();
        drop((second, third));
        assert!(lock(&edge.per_ip).is_empty());

        let a = edge.admit(Some(1), None).unwrap();
        assert_eq!(edge.admit(Some(1), None).err(), Some("listener_limit"));
        drop(a);
        assert_eq!(edge.open.load(Ordering::Acquire), 0);
    }
}
