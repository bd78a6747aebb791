//! What the proxy tells about itself: Prometheus metrics ([`metrics`]),
//! process logs ([`logging`]), the access log ([`access_log`]), and the
//! telemetry layer at the top of every HTTP stack, which sees every
//! request, including the ones the proxy rejects, records it on the
//! metrics once its response head is known, and writes its access log
//! line once its response body has ended.
//! Reads: [`RequestInfo`], which the layers below fill (route, upstream,
//! endpoint and attempts); the running settings (`log.access`).

pub mod access_log;
pub mod logging;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::Request;
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::config::AccessLogTarget;
use crate::http::{Body, HttpService};
use crate::stack::Runtime;
pub use metrics::{Direction, Metrics};

/// Facts about one request that layers below the telemetry layer learn
/// (which route and upstream, which endpoints) and that it reports.
/// Shared by every attempt of a retried request.
#[derive(Clone, Default, Debug)]
pub struct RequestInfo(Arc<InfoInner>);

#[derive(Default, Debug)]
struct InfoInner {
    upstream: OnceLock<Arc<str>>,
    route: OnceLock<Arc<str>>,
    client: OnceLock<std::net::IpAddr>,
    request_id: OnceLock<Arc<str>>,
    attempts: AtomicU32,
    endpoint: Mutex<Option<SocketAddr>>,
    first_attempt: OnceLock<Instant>,
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

    /// Records one attempt going to `endpoint` (forward, once per attempt).
    pub fn record_attempt(&self, endpoint: SocketAddr) {
        let _ = self.0.first_attempt.set(Instant::now());
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        *crate::lock(&self.0.endpoint) = Some(endpoint);
    }

    /// Attempts sent to an endpoint (0: none got that far).
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    /// The endpoint of the last attempt.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        *crate::lock(&self.0.endpoint)
    }

    /// When the first attempt was sent.
    pub fn first_attempt(&self) -> Option<Instant> {
        self.0.first_attempt.get().copied()
    }
}

/// Records every request of a stack on the metrics and, when `log.access`
/// is on, in the access log (nothing is gathered for it when it is off).
pub fn layer(
    rt: &Runtime,
    direction: Direction,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let (metrics, settings) = (rt.metrics.clone(), rt.settings.clone());
    layer_fn(move |inner: HttpService| {
        let metrics = metrics.clone();
        let settings = settings.clone();
        BoxCloneSyncService::new(tower::service_fn(move |mut req: Request<Body>| {
            let info = RequestInfo::default();
            req.extensions_mut().insert(info.clone());
            let start = Instant::now();
            let current = settings.load();
            let logged = (current.access_log.target != AccessLogTarget::Off).then(|| {
                access_log::Request::new(&mut req, arc_swap::Guard::into_inner(current), start)
            });
            let inner = inner.clone();
            let metrics = metrics.clone();
            async move {
                let result = inner.oneshot(req).await;
                // Below the errors layer everything is a response; 500 is a backstop.
                let status = result.as_ref().map_or(500, |r| r.status().as_u16());
                let elapsed = start.elapsed();
                metrics.record_request(direction, info.upstream(), info.route(), status, elapsed);
                match logged {
                    Some(logged) => logged.respond(result, info, metrics),
                    None => result,
                }
            }
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;
    use tower::ServiceBuilder;

    fn runtime(yaml: &str, metrics: &Arc<Metrics>) -> Runtime {
        Runtime {
            routes: Arc::default(),
            settings: Arc::new(ArcSwap::from_pointee(
                crate::config::load_str(yaml).unwrap(),
            )),
            metrics: metrics.clone(),
            identity: Arc::new(crate::tls::IdentityStore::new(Default::default())),
        }
    }

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
            .layer(layer(
                &runtime("service: web\n", &metrics),
                Direction::Outbound,
            ))
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

    #[tokio::test]
    async fn the_access_log_line_is_written_once_the_response_body_ends() {
        use http_body_util::BodyExt;
        let dir = std::env::temp_dir().join(format!(
            "sidecar-access-log-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let yaml = format!("service: web\nlog: {{ access: {} }}\n", path.display());
        let metrics = Arc::new(Metrics::new());
        let rt = runtime(&yaml, &metrics);
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = metrics
            .access_log()
            .spawn_writer(rt.settings.clone(), stop.clone())
            .unwrap();
        let endpoint: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let upstream =
            BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| async move {
                let info = req.extensions().get::<RequestInfo>().cloned().unwrap();
                info.set_route(Arc::from("checkout"));
                info.set_upstream(Arc::from("orders"));
                info.record_attempt(endpoint);
                let received = req.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(received.len(), 5);
                Ok::<_, crate::BoxError>(http::Response::new(crate::http::full("hello!")))
            }));
        let service = ServiceBuilder::new()
            .layer(layer(&rt, Direction::Edge))
            .service(upstream);
        let request = Request::builder()
            .method("POST")
            .uri("http://shop.test/cart?item=1")
            .header("x-request-id", "id-1")
            .body(crate::http::full("12345"))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 6);
        stop.cancel();
        writer.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["kind"], "http");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["authority"], "shop.test");
        assert_eq!(line["path"], "/cart?item=1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["route"], "checkout");
        assert_eq!(line["upstream"], "orders");
        assert_eq!(line["endpoint"], "10.0.0.7:8080");
        assert_eq!(line["attempts"], 1);
        assert_eq!(line["request_id"], "id-1");
        assert_eq!(line["bytes_received"], 5);
        assert_eq!(line["bytes_sent"], 6);
        assert!(line["upstream_ms"].as_f64().is_some());
        let metrics = metrics.encode();
        assert!(
            metrics.contains(
                "mesh_requests_total{direction=\"edge\",upstream=\"orders\",route=\"checkout\",status=\"200\"} 1"
            ),
            "{metrics}"
        );
    }
}
