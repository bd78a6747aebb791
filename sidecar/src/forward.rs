//! The bottom of every HTTP stack: sends the routed request to one endpoint
//! of its cluster and streams the response back. Chooses the upstream wire
//! (HTTP/1.1 or HTTP/2, whatever the caller spoke), rewrites the request
//! for it, splices upgraded connections (WebSocket) and CONNECT tunnels, and
//! makes an upstream failure mid-response visible: HTTP/1 closes the
//! connection, HTTP/2 resets the stream, gRPC ends with `UNAVAILABLE`.
//! Reads: from the request's extensions, the [`Target`] routing put there,
//! the telemetry's `RequestInfo` (which records each attempt's endpoint: a
//! retry avoids those already tried) and the connection's `ConnInfo`
//! (ring-hash by source IP): [`RetryExtensions`] keeps exactly these.
//! Errors: [`ForwardError`], and the pool's `ConnectError` / `UpstreamError`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use mesh_api::config::Protocol;
use pin_project_lite::pin_project;
use tracing::{debug, Instrument};

use crate::balance::sticky::{self, StickyKey};
use crate::balance::{ActiveGuard, EndpointState};
use crate::connect::{ConnectError, Wire};
use crate::discovery::Endpoint;
use crate::http::{
    boxed, empty, is_grpc, is_upgrade, strip_hop_by_hop, Body, BodyError, HttpService,
};
use crate::resilience::outlier::{self, Outcome};
use crate::route::Target;
use crate::telemetry::Metrics;
use crate::BoxError;

/// The request extensions this module reads: what a retry of the request
/// must carry again. The rest concern only the layers above, which a retry
/// does not pass through. Kept as values, put into a request only when a
/// retry happens: cloning a whole extensions map for every request kept for
/// replay, and dropping it, cost ~1.6k instructions (measured).
#[derive(Default)]
pub struct RetryExtensions {
    target: Option<Target>,
    info: Option<crate::telemetry::RequestInfo>,
    conn: Option<crate::http::ConnInfo>,
}

impl RetryExtensions {
    /// What forward reads, from a request's extensions.
    pub fn of(extensions: &http::Extensions) -> Self {
        Self {
            target: extensions.get::<Target>().cloned(),
            info: extensions.get::<crate::telemetry::RequestInfo>().cloned(),
            conn: extensions.get::<crate::http::ConnInfo>().cloned(),
        }
    }

    /// Extensions for the retry.
    pub fn to_extensions(&self) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        if let Some(target) = &self.target {
            extensions.insert(target.clone());
        }
        if let Some(info) = &self.info {
            extensions.insert(info.clone());
        }
        if let Some(conn) = &self.conn {
            extensions.insert(conn.clone());
        }
        extensions
    }
}

/// The latency a failed attempt counts as, for peak-EWMA balancing.
const FAILURE_PENALTY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a routed request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The cluster has no endpoint.
    #[error("the upstream has no endpoints")]
    NoEndpoints,
    /// The request reached `forward` without a route (a stack bug).
    #[error("request was not routed")]
    Unrouted,
}

/// The forwarding service.
pub fn service(metrics: Arc<Metrics>) -> HttpService {
    crate::http::shared_fn(move |req| forward(req, metrics.clone()))
}

/// Feeds outlier detection; counts ejections.
fn record(target: &Target, endpoint: &EndpointState, outcome: Outcome, metrics: &Metrics) {
    let cluster = &target.cluster;
    if outlier::observe(
        &cluster.balancer,
        endpoint,
        outcome,
        &cluster.settings.resilience.outlier,
    ) {
        metrics.resilience(cluster.name(), "ejected");
    }
}

async fn forward(
    mut req: Request<Body>,
    metrics: Arc<Metrics>,
) -> Result<Response<Body>, BoxError> {
    // Cloned, not taken: a retry sends this same request again.
    let target = req
        .extensions()
        .get::<Target>()
        .cloned()
        .ok_or(ForwardError::Unrouted)?;
    let tried = req
        .extensions()
        .get::<crate::telemetry::RequestInfo>()
        .map(crate::telemetry::RequestInfo::tried)
        .unwrap_or_default();
    let sticky = sticky::key(target.cluster.balancer.policy(), &req);
    let (endpoint, set_cookie) = choose(&target, &tried, sticky).await?;
    // One clock read serves the access log and the balancer's latency.
    let sent = crate::clock::now();
    if let Some(info) = req.extensions().get::<crate::telemetry::RequestInfo>() {
        info.record_attempt(endpoint.addr, sent);
    }
    let active = endpoint.start();
    if req.method() == Method::CONNECT {
        // Boxed: a tunnel's future is large, and most requests are not one.
        return Box::pin(tunnel(&target, &endpoint, active, req)).await;
    }
    let upgrade = is_upgrade(&req);
    let grpc = is_grpc(req.headers());
    let downstream_version = req.version();
    let wire = wire(target.cluster.settings.protocol, req.version(), upgrade);
    prepare(&mut req, wire, upgrade, &target)?;
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut response = match target.cluster.pool.send(&endpoint, wire, req).await {
        Ok(response) => response,
        Err(err) => {
            let unsent = err.downcast_ref::<crate::connect::Unsent>();
            // The proxy's own connection limits say nothing about the endpoint.
            if unsent.is_some_and(crate::connect::Unsent::overflowed) {
                metrics.resilience(target.cluster.name(), "pool_overflow");
            } else {
                // A failing endpoint answers fast: it must not look fast to the balancer.
                endpoint.observe(FAILURE_PENALTY);
                let outcome = if unsent.is_some() {
                    Outcome::ConnectFailure
                } else {
                    Outcome::ServerError
                };
                record(&target, &endpoint, outcome, &metrics);
            }
            return Err(err);
        }
    };
    let answered = crate::clock::exact();
    endpoint.observe_at(answered - sent, answered);
    let outcome = if response.status().is_server_error() {
        Outcome::ServerError
    } else {
        Outcome::Success
    };
    record(&target, &endpoint, outcome, &metrics);
    // The caller gets its own HTTP version back, whatever the upstream spoke.
    *response.version_mut() = downstream_version;
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match downstream_upgrade {
        Some(downstream) if switched => {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(
                async move {
                    let _active = active;
                    match tokio::try_join!(downstream, upstream) {
                        Ok((down, up)) => {
                            crate::tcp::splice(TokioIo::new(down), TokioIo::new(up)).await
                        }
                        Err(err) => debug!(error = %err, "upgrade failed"),
                    }
                }
                .instrument(tracing::debug_span!("upgraded", endpoint = %endpoint.addr)),
            );
            strip_hop_by_hop(response.headers_mut(), true);
            Ok(response.map(|_| empty()))
        }
        _ => {
            strip_hop_by_hop(response.headers_mut(), false);
            if let Some(cookie) = set_cookie {
                response
                    .headers_mut()
                    .append(http::header::SET_COOKIE, cookie);
            }
            let grpc = grpc && is_grpc(response.headers());
            Ok(response.map(|body| {
                boxed(Guarded {
                    inner: body,
                    _active: active,
                    grpc,
                    ended: false,
                })
            }))
        }
    }
}

/// The endpoint for this request: the balancer's choice (avoiding endpoints
/// earlier attempts tried, sticking by the request's key under ring hash),
/// or the passthrough authority resolved. Also the sticky cookie to set.
async fn choose(
    target: &Target,
    tried: &[std::net::SocketAddr],
    sticky: StickyKey,
) -> Result<(Arc<EndpointState>, Option<HeaderValue>), BoxError> {
    if let Some(authority) = &target.passthrough {
        let port = authority.port_u16().unwrap_or(80);
        let mut addrs = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|_| ConnectError::Resolve(authority.to_string()))?;
        let addr = addrs
            .next()
            .ok_or_else(|| ConnectError::Resolve(authority.to_string()))?;
        return Ok((
            Arc::new(EndpointState::new(&Endpoint { addr, weight: 1 })),
            None,
        ));
    }
    let balancer = &target.cluster.balancer;
    let endpoint = balancer
        .pick_avoiding(tried, sticky.hash)
        .ok_or(ForwardError::NoEndpoints)?;
    Ok((endpoint, sticky.set_cookie))
}

/// The upstream wire: upgrades need HTTP/1.1; declared protocols win;
/// otherwise the caller's version.
pub(crate) fn wire(protocol: Protocol, version: Version, upgrade: bool) -> Wire {
    match protocol {
        _ if upgrade => Wire::Http1,
        Protocol::Http1 => Wire::Http1,
        Protocol::Http2 | Protocol::Grpc => Wire::Http2,
        // UDP clusters are never routed HTTP; listed so the match stays exhaustive.
        Protocol::Auto | Protocol::Tcp | Protocol::Udp if version == Version::HTTP_2 => Wire::Http2,
        Protocol::Auto | Protocol::Tcp | Protocol::Udp => Wire::Http1,
    }
}

/// Rewrites the request for the upstream wire: origin-form and `Host` for
/// HTTP/1.1, absolute URI (`:authority`) for HTTP/2; hop-by-hop headers go.
fn prepare(
    req: &mut Request<Body>,
    wire: Wire,
    upgrade: bool,
    target: &Target,
) -> Result<(), BoxError> {
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match wire {
        Wire::Http1 => {
            // Most HTTP/1 requests arrive in origin form with the `Host`
            // forwarded: then both stay as they are (no parse, no copy).
            let uri = req.uri();
            if uri.scheme().is_some() || uri.authority().is_some() || uri.path_and_query().is_none()
            {
                *req.uri_mut() = Uri::try_from(path)?;
            }
            *req.version_mut() = Version::HTTP_11;
            let authority = target.authority.as_str().as_bytes();
            let mut hosts = req.headers().get_all(HOST).iter();
            let kept =
                hosts.next().is_some_and(|h| h.as_bytes() == authority) && hosts.next().is_none();
            if !kept {
                let host = HeaderValue::from_str(target.authority.as_str())?;
                req.headers_mut().insert(HOST, host);
            }
        }
        Wire::Http2 => {
            let scheme = match &target.cluster.settings.public_tls {
                Some(_) => http::uri::Scheme::HTTPS,
                None => req
                    .uri()
                    .scheme()
                    .cloned()
                    .unwrap_or(http::uri::Scheme::HTTP),
            };
            *req.uri_mut() = Uri::builder()
                .scheme(scheme)
                .authority(target.authority.clone())
                .path_and_query(path)
                .build()?;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(HOST);
        }
    }
    Ok(())
}

/// CONNECT: answer 200 once the endpoint is connected, then relay bytes.
async fn tunnel(
    target: &Target,
    endpoint: &Arc<EndpointState>,
    active: ActiveGuard,
    mut req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let (upstream, guard) = target.cluster.pool.connect_opaque(endpoint).await?;
    let downstream = hyper::upgrade::on(&mut req);
    tokio::spawn(
        async move {
            let _held = (guard, active);
            match downstream.await {
                Ok(down) => crate::tcp::splice(TokioIo::new(down), upstream).await,
                Err(err) => debug!(error = %err, "CONNECT upgrade failed"),
            }
        }
        .instrument(tracing::debug_span!("tunnel", endpoint = %endpoint.addr)),
    );
    Ok(Response::new(empty()))
}

pin_project! {
    /// A response body that keeps the endpoint's in-flight count until it
    /// ends, and turns an upstream failure mid-stream of a gRPC response
    /// into `grpc-status: UNAVAILABLE` trailers.
    struct Guarded<B> {
        #[pin]
        inner: B,
        _active: ActiveGuard,
        grpc: bool,
        ended: bool,
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Err(err)) if *this.grpc => {
                debug!(error = %err.into(), "upstream failed mid gRPC response");
                *this.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(
                    crate::errors::grpc_reset_trailers(),
                ))))
            }
            other => Poll::Ready(other.map(|r| r.map_err(|e| BodyError(e.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_follows_protocol_then_caller() {
        assert_eq!(wire(Protocol::Auto, Version::HTTP_2, false), Wire::Http2);
        assert_eq!(wire(Protocol::Auto, Version::HTTP_11, false), Wire::Http1);
        assert_eq!(wire(Protocol::Http2, Version::HTTP_11, false), Wire::Http2);
        assert_eq!(wire(Protocol::Grpc, Version::HTTP_11, false), Wire::Http2);
        assert_eq!(wire(Protocol::Http1, Version::HTTP_2, false), Wire::Http1);
        assert_eq!(wire(Protocol::Http2, Version::HTTP_11, true), Wire::Http1);
    }
}
