//! What the proxy tells about itself: Prometheus metrics ([`metrics`]),
//! process logs ([`logging`]), and the telemetry layer at the top of every
//! HTTP stack, which sees every request, including the ones the proxy
//! rejects, and records it once its response head is known.
//! Reads: [`RequestInfo`], which routing fills (the upstream).

pub mod logging;
pub mod metrics;

use std::sync::{Arc, OnceLock};

use http::Request;
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::http::{Body, HttpService};
pub use metrics::{Direction, Metrics};

/// Facts about one request that layers below the telemetry layer learn
/// (which upstream) and that it reports.
#[derive(Clone, Default, Debug)]
pub struct RequestInfo(Arc<InfoInner>);

#[derive(Default, Debug)]
struct InfoInner {
    upstream: OnceLock<Arc<str>>,
    route: OnceLock<Arc<str>>,
    client: OnceLock<std::net::IpAddr>,
    request_id: OnceLock<Arc<str>>,
}

impl RequestInfo {
    /// Records the upstream the request was routed to.
    pub fn set_upstream(&self, name: Arc<str>) {
        let _ = self.0.upstream.set(name);
    }

    /// The upstream, if routing got that far.
    pub fn upstream(&self) -> Option<&Arc<str>> {
        self.0.upstream.get()
    }

    /// Records the edge route that matched.
    pub fn set_route(&self, name: Arc<str>) {
        let _ = self.0.route.set(name);
    }

    /// The edge route, if one matched.
    pub fn route(&self) -> Option<&Arc<str>> {
        self.0.route.get()
    }

    /// Records the client's address as the front layer worked it out
    /// (PROXY protocol, trusted proxies' `X-Forwarded-For`).
    pub fn set_client(&self, ip: std::net::IpAddr) {
        let _ = self.0.client.set(ip);
    }

    /// The client's address, if the front layer set it.
    pub fn client(&self) -> Option<std::net::IpAddr> {
        self.0.client.get().copied()
    }

    /// Records the request ID (`X-Request-Id`) the request carries upstream.
    pub fn set_request_id(&self, id: Arc<str>) {
        let _ = self.0.request_id.set(id);
    }

    /// The request ID, if set.
    pub fn request_id(&self) -> Option<&Arc<str>> {
        self.0.request_id.get()
    }
}

/// Records every request of a stack on the metrics.
pub fn layer(
    metrics: Arc<Metrics>,
    direction: Direction,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let metrics = metrics.clone();
        BoxCloneSyncService::new(tower::service_fn(move |mut req: Request<Body>| {
            let info = RequestInfo::default();
            req.extensions_mut().insert(info.clone());
            let inner = inner.clone();
            let metrics = metrics.clone();
            async move {
                let start = Instant::now();
                let result = inner.oneshot(req).await;
                // Below the errors layer everything is a response; 500 is a backstop.
                let status = result.as_ref().map_or(500, |r| r.status().as_u16());
                metrics.record_request(direction, info.upstream(), status, start.elapsed());
                result
            }
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceBuilder;

    #[tokio::test]
    async fn counts_the_status_the_caller_sees_under_the_routed_upstream() {
        let metrics = Arc::new(Metrics::new());
        let failing =
            BoxCloneSyncService::new(tower::service_fn(|req: Request<Body>| async move {
                if let Some(info) = req.extensions().get::<RequestInfo>() {
                    info.set_upstream(Arc::from("orders"));
                }
                Err::<http::Response<Body>, _>(crate::BoxError::from(
                    crate::forward::ForwardError::NoEndpoints,
                ))
            }));
        let service = ServiceBuilder::new()
            .layer(layer(metrics.clone(), Direction::Outbound))
            .layer(crate::errors::layer())
            .service(failing);
        let request = Request::builder()
            .uri("/")
            .body(crate::http::empty())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 503);
        let text = metrics.encode();
        assert!(
            text.contains(
                "mesh_requests_total{direction=\"outbound\",upstream=\"orders\",status=\"503\"} 1"
            ),
            "{text}"
        );
    }
}
