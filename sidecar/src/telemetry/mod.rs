//! What the proxy tells about itself: Prometheus metrics ([`metrics`]),
//! process logs ([`logging`]), the access log ([`access_log`]), and the
//! telemetry layer at the top of every HTTP stack, which sees every
//! request, including the ones the proxy rejects, records it on the
//! metrics once its response head is known, and writes its access log
//! line once its response body has ended. With `tracing:` it also reads
//! and propagates the trace context and records one span per request
//! ([`trace`]), sent to an OpenTelemetry collector by [`exporter`].
//! Reads: [`RequestInfo`], which the layers below fill (route, upstream,
//! endpoint and attempts, a policy's refusal); the connection's verified
//! peer (the inbound `caller` label); the running settings (`log.access`,
//! `tracing`). gRPC responses are counted once their `grpc-status` is
//! known: from the head of a trailers-only response, else from the
//! trailers (or the end of the body without them).

pub mod access_log;
pub mod exporter;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod tap;
pub mod trace;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::AccessLogTarget;
use crate::http::{Body, HttpService};
use crate::stack::Runtime;
use metrics::{Caller, RequestLabels};
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
    consumer: OnceLock<Arc<str>>,
    client: OnceLock<std::net::IpAddr>,
    request_id: OnceLock<Arc<str>>,
    attempts: AtomicU32,
    /// The last attempt's endpoint, and those of the attempts before it.
    endpoints: Mutex<(Option<SocketAddr>, Vec<SocketAddr>)>,
    first_attempt: OnceLock<Instant>,
    denied: OnceLock<(&'static str, &'static str)>,
    grpc_status: OnceLock<u32>,
    translated: std::sync::atomic::AtomicBool,
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

    /// Records the consumer authentication named (API key, token claim).
    pub fn set_consumer(&self, name: Arc<str>) {
        let _ = self.0.consumer.set(name);
    }

    /// The consumer, if authentication named one.
    pub fn consumer(&self) -> Option<&Arc<str>> {
        self.0.consumer.get()
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
    pub fn record_attempt(&self, endpoint: SocketAddr, at: Instant) {
        let _ = self.0.first_attempt.set(at);
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        let mut endpoints = crate::lock(&self.0.endpoints);
        if let Some(previous) = endpoints.0.replace(endpoint) {
            endpoints.1.push(previous);
        }
    }

    /// Attempts sent to an endpoint (0: none got that far).
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    /// The endpoint of the last attempt.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        crate::lock(&self.0.endpoints).0
    }

    /// The endpoints attempts went to so far, which a retry avoids while
    /// others are available (no allocation before the first retry).
    pub fn tried(&self) -> Vec<SocketAddr> {
        let endpoints = crate::lock(&self.0.endpoints);
        let mut tried = endpoints.1.clone();
        tried.extend(endpoints.0);
        tried
    }

    /// When the first attempt was sent.
    pub fn first_attempt(&self) -> Option<Instant> {
        self.0.first_attempt.get().copied()
    }

    /// Records that `policy` (`authz`, `edge_route`, `hygiene`, `cors`, …)
    /// refused the request for `reason`; counted on
    /// `mesh_policy_denials_total` with the edge route, if one matched.
    pub fn set_denied(&self, policy: &'static str, reason: &'static str) {
        let _ = self.0.denied.set((policy, reason));
    }

    /// The policy that refused the request, and why.
    pub fn denied(&self) -> Option<(&'static str, &'static str)> {
        self.0.denied.get().copied()
    }

    /// Records the gRPC status a translating layer (gRPC-Web, REST/JSON
    /// transcoding) saw, for a caller whose answer carries it in the body
    /// or not at all; the first recorded wins.
    pub fn set_grpc_status(&self, code: u32) {
        let _ = self.0.grpc_status.set(code);
    }

    /// The gRPC status a translating layer recorded.
    pub fn grpc_status(&self) -> Option<u32> {
        self.0.grpc_status.get().copied()
    }

    /// Whether a translating layer is watching the call's gRPC status
    /// (telemetry then waits for the body's end to read it).
    pub fn translated(&self) -> bool {
        self.0.translated.load(Ordering::Relaxed)
    }
}

/// For a translating layer: records the gRPC status of the upstream's
/// answer on the request's [`RequestInfo`] (from `headers` of a
/// trailers-only answer, else from the trailers of `body`, which is handed
/// back watched). Without a `RequestInfo` the body passes as is.
pub fn watch_grpc_status(info: Option<&RequestInfo>, headers: &HeaderMap, body: Body) -> Body {
    let Some(info) = info else {
        return body;
    };
    info.0.translated.store(true, Ordering::Relaxed);
    if let Some(code) = grpc_status(headers) {
        info.set_grpc_status(code);
        return body;
    }
    GrpcWatched {
        inner: body,
        info: info.clone(),
    }
    .boxed_unsync()
}

/// A gRPC body whose trailers' status is recorded on a [`RequestInfo`]
/// (a reset as UNAVAILABLE, an end without trailers as INTERNAL; the first
/// recorded wins).
struct GrpcWatched {
    inner: Body,
    info: RequestInfo,
}

impl HttpBody for GrpcWatched {
    type Data = Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // What the translating layers answer for a failed or unfinished
        // stream: UNAVAILABLE for a reset, INTERNAL for no status.
        let code = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().and_then(grpc_status),
            Some(Err(_)) => Some(14),
            None => Some(13),
        };
        if let Some(code) = code {
            self.info.set_grpc_status(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records every request of a stack on the metrics and, when `log.access`
/// is on, in the access log, and offers it to connected taps (nothing is
/// gathered for either when the log is off and no tap is connected).
pub fn layer(
    rt: &Runtime,
    direction: Direction,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let (metrics, settings) = (rt.metrics.clone(), rt.settings.clone());
    layer_fn(move |inner: HttpService| {
        let metrics = metrics.clone();
        let settings = settings.clone();
        crate::http::shared_fn(move |mut req: Request<Body>| {
            let info = RequestInfo::default();
            req.extensions_mut().insert(info.clone());
            let caller = Caller::of(
                direction,
                req.extensions()
                    .get::<crate::http::ConnInfo>()
                    .and_then(|c| c.peer_identity.as_ref()),
            );
            let start = crate::clock::now();
            let current = settings.load();
            // Before the access log, which logs the trace ID sent upstream.
            let span = current
                .tracing
                .as_deref()
                .and_then(|tracing| trace::start(&mut req, tracing, direction, &metrics));
            let tapped = metrics.access_log().tap().is_active();
            let logged = (current.access_log.target != AccessLogTarget::Off || tapped).then(|| {
                let settings = arc_swap::Guard::into_inner(current);
                access_log::Request::new(&mut req, settings, start, direction)
            });
            let call = inner.call_ref(req);
            let metrics = metrics.clone();
            async move {
                let result = call.await;
                // Below the errors layer everything is a response; 500 is a backstop.
                let status = result.as_ref().map_or(500, |r| r.status().as_u16());
                let elapsed = crate::clock::exact().saturating_duration_since(start);
                let mut labels = metrics.request_labels(
                    direction,
                    info.upstream(),
                    info.route(),
                    caller,
                    status,
                );
                metrics.observe_duration(&labels, elapsed);
                if let (Direction::Edge, Some(consumer)) = (direction, info.consumer()) {
                    labels = labels.with_consumer(metrics.consumer_label(consumer));
                }
                if let Some((policy, reason)) = info.denied() {
                    metrics.policy_denial(direction, info.route(), policy, reason);
                }
                let result = match result {
                    Ok(response) => Ok(count(response, labels, &metrics, &info)),
                    Err(err) => {
                        metrics.count_request(&labels);
                        Err(err)
                    }
                };
                access_log::respond(logged, span, result, info, metrics)
            }
        })
    })
}

/// The `grpc-status` of a gRPC response's head or trailers, if it has one.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The request's scheme: the URI's, else `https` over TLS, else `http`.
fn scheme(uri: &http::Uri, conn: Option<&crate::http::ConnInfo>) -> &'static str {
    match uri.scheme_str() {
        Some("https") => "https",
        Some(_) => "http",
        None if conn.is_some_and(|c| c.tls) => "https",
        None => "http",
    }
}

/// Counts a response now, or, for a gRPC response whose head has no
/// `grpc-status`, when its trailers arrive or its body ends.
/// A translated call (gRPC-Web, REST/JSON) is counted with the status the
/// translating layer recorded.
fn count(
    response: Response<Body>,
    labels: RequestLabels,
    metrics: &Arc<Metrics>,
    info: &RequestInfo,
) -> Response<Body> {
    if !crate::http::is_grpc(response.headers()) && !info.translated() {
        metrics.count_request(&labels);
        return response;
    }
    if let Some(code) = grpc_status(response.headers()).or_else(|| info.grpc_status()) {
        metrics.count_request(&labels.with_grpc_status(code));
        return response;
    }
    let pending = Some(Box::new((labels, metrics.clone())));
    let info = info.clone();
    response.map(|inner| {
        GrpcCounted {
            inner,
            pending,
            info,
        }
        .boxed_unsync()
    })
}

/// A gRPC response body that counts its request once the status is known.
struct GrpcCounted {
    inner: Body,
    pending: Option<Box<(RequestLabels, Arc<Metrics>)>>,
    info: RequestInfo,
}

impl GrpcCounted {
    /// Counts the request, with `code` if the status was seen (in the
    /// trailers, or recorded by a translating layer).
    fn finish(&mut self, code: Option<u32>) {
        let code = code.or_else(|| self.info.grpc_status());
        if let Some(pending) = self.pending.take() {
            let (labels, metrics) = *pending;
            match code {
                Some(code) => metrics.count_request(&labels.with_grpc_status(code)),
                None => metrics.count_request(&labels),
            }
        }
    }
}

impl HttpBody for GrpcCounted {
    type Data = Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers));
                } else if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Some(Err(_)) | None => this.finish(None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcCounted {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;
    use tower::ServiceBuilder;

    #[test]
    fn attempts_record_every_endpoint_tried_and_the_last_one() {
        let info = RequestInfo::default();
        assert!(info.tried().is_empty());
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        info.record_attempt(a, Instant::now());
        assert_eq!(info.tried(), [a]);
        info.record_attempt(b, Instant::now());
        assert_eq!(info.tried(), [a, b]);
        assert_eq!(info.endpoint(), Some(b));
        assert_eq!(info.attempts(), 2);
    }

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
        let failing = crate::http::shared_fn(|req: Request<Body>| async move {
            if let Some(info) = req.extensions().get::<RequestInfo>() {
                info.set_upstream(Arc::from("orders"));
            }
            Err::<http::Response<Body>, _>(crate::BoxError::from(
                crate::forward::ForwardError::NoEndpoints,
            ))
        });
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
        let response = service.call_ref(request).await.unwrap();
        assert_eq!(response.status(), 503);
        let text = metrics.encode();
        assert!(
            text.contains(
                "mesh_requests_total{direction=\"outbound\",upstream=\"orders\",status=\"503\",status_class=\"5xx\"} 1"
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
        let upstream = crate::http::shared_fn(move |req: Request<Body>| async move {
            let info = req.extensions().get::<RequestInfo>().cloned().unwrap();
            info.set_route(Arc::from("checkout"));
            info.set_upstream(Arc::from("orders"));
            info.set_consumer(Arc::from("acme"));
            info.record_attempt(endpoint, Instant::now());
            let received = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(received.len(), 5);
            Ok::<_, crate::BoxError>(http::Response::new(crate::http::full("hello!")))
        });
        let service = ServiceBuilder::new()
            .layer(layer(&rt, Direction::Edge))
            .service(upstream);
        let request = Request::builder()
            .method("POST")
            .uri("http://shop.test/cart?item=1")
            .header("x-request-id", "id-1")
            .body(crate::http::full("12345"))
            .unwrap();
        let response = service.call_ref(request).await.unwrap();
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
                "mesh_requests_total{direction=\"edge\",upstream=\"orders\",route=\"checkout\",consumer=\"acme\",status=\"200\",status_class=\"2xx\"} 1"
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn grpc_statuses_come_from_trailers_and_inbound_requests_name_their_caller() {
        use http_body_util::{BodyExt, StreamBody};
        let metrics = Arc::new(Metrics::new());
        let upstream = crate::http::shared_fn(|req: Request<Body>| async move {
            let info = req.extensions().get::<RequestInfo>().cloned().unwrap();
            info.set_upstream(Arc::from("inbound"));
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
            let frames: Vec<Result<Frame<Bytes>, crate::http::BodyError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
            let mut response = Response::new(body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, crate::BoxError>(response)
        });
        let service = ServiceBuilder::new()
            .layer(layer(
                &runtime("service: web\n", &metrics),
                Direction::Inbound,
            ))
            .service(upstream);
        let mut request = Request::builder()
            .uri("/orders.Orders/Get")
            .body(crate::http::empty())
            .unwrap();
        request.extensions_mut().insert(crate::http::ConnInfo {
            peer_identity: Some(Arc::from("spiffe://mesh.local/svc/billing")),
            ..Default::default()
        });
        let response = service.call_ref(request).await.unwrap();
        assert!(
            !metrics.encode().contains("mesh_requests_total{"),
            "counted once the status is known"
        );
        let _ = response.into_body().collect().await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(
                "mesh_requests_total{direction=\"inbound\",upstream=\"inbound\",caller=\"billing\",status=\"200\",status_class=\"2xx\",grpc_status=\"5\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "mesh_request_duration_seconds_count{direction=\"inbound\",upstream=\"inbound\",caller=\"billing\",status_class=\"2xx\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn translating_layers_record_the_status_of_the_body_they_read() {
        use http_body_util::StreamBody;
        let body = |frames: Vec<Result<Frame<Bytes>, crate::http::BodyError>>| {
            StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("7"));
        let info = RequestInfo::default();
        let watched = watch_grpc_status(
            Some(&info),
            &HeaderMap::new(),
            body(vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers.clone())),
            ]),
        );
        assert!(info.translated() && info.grpc_status().is_none());
        watched.collect().await.unwrap();
        assert_eq!(info.grpc_status(), Some(7));
        // Trailers-only: the head says it at once.
        let info = RequestInfo::default();
        let _ = watch_grpc_status(Some(&info), &trailers, body(Vec::new()));
        assert_eq!(info.grpc_status(), Some(7));
        // A reset is UNAVAILABLE, an end without a status INTERNAL.
        let info = RequestInfo::default();
        let failed = body(vec![Err(crate::http::BodyError("reset".into()))]);
        let _ = watch_grpc_status(Some(&info), &HeaderMap::new(), failed)
            .collect()
            .await;
        assert_eq!(info.grpc_status(), Some(14));
        let info = RequestInfo::default();
        let ended = watch_grpc_status(Some(&info), &HeaderMap::new(), body(Vec::new()));
        ended.collect().await.unwrap();
        assert_eq!(info.grpc_status(), Some(13));
    }
}
