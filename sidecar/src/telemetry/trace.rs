//! Distributed tracing on the request path, in the telemetry layer at the
//! top of every stack: one span per request per proxy.
//!
//! Reads the caller's trace context (W3C `traceparent` / `tracestate`;
//! else B3, single `b3` or `x-b3-*` headers) and writes the request's new
//! `traceparent` with this proxy's span as the parent, so the layers below
//! and the upstream see it (B3 headers are removed: the context travels as
//! `traceparent` from here on; `tracestate` passes unchanged). A request
//! without a context starts a new trace, recorded for `tracing.sampling`
//! of them; a request with one follows its sampled flag (parent-based).
//!
//! Span kinds: the edge and the inbound sidecar handle a caller's request
//! (`SERVER`); the outbound sidecar makes the app's request to another
//! service (`CLIENT`). So an edge → web → orders call reads edge SERVER →
//! web inbound SERVER → (web app) → web outbound CLIENT → orders inbound
//! SERVER.
//!
//! A recorded span ([`Recording`]) learns the response head and, through
//! the access log's response body wrapper, the trailers and the end of the
//! body; then it is offered to the [`SpanQueue`], which drops it (counted,
//! `mesh_trace_spans_dropped_total`) when `tracing.queue` spans wait
//! already. The exporter task (`exporter.rs`) empties the queue. Without
//! `tracing:` nothing here runs and `traceparent` passes unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::otlp::{self, KeyValue, SpanKind, StatusCode};
use super::{Direction, Metrics, RequestInfo};
use crate::config::TracingSettings;
use crate::errors::REASON_HEADER;
use crate::http::{is_grpc, Body, ConnInfo};
use crate::{lock, BoxError};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
// B3, single header and multi: looked up by name on every request without
// a `traceparent`, so named once here, not parsed from text each time.
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_HEADERS: [&str; 6] = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The hard ceiling of the channel; `tracing.queue` is the live limit.
const CHANNEL: usize = crate::config::MAX_TRACE_QUEUE as usize;

/// Finished spans on their way to the exporter, shared by every stack.
pub struct SpanQueue {
    tx: mpsc::Sender<otlp::Span>,
    rx: Mutex<Option<mpsc::Receiver<otlp::Span>>>,
    queued: AtomicUsize,
    counters: ExportCounters,
}

/// What the queue and the exporter count.
#[derive(Clone, Default)]
pub struct ExportCounters {
    /// Spans lost: queue full, export failed, tracing turned off.
    pub dropped: Counter,
    /// Exports the collector accepted.
    pub ok: Counter,
    /// Exports that failed (connect, timeout, status).
    pub failed: Counter,
}

impl SpanQueue {
    /// An empty queue counting on `counters`.
    pub fn new(counters: ExportCounters) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            counters,
        }
    }

    /// Offers a finished span; drops it when `limit` spans wait already.
    fn push(&self, span: otlp::Span, limit: usize) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= limit || self.tx.try_send(span).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.inc();
        }
    }

    /// The receiving end, for the one exporter (`None` once taken).
    pub(super) fn take_receiver(&self) -> Option<mpsc::Receiver<otlp::Span>> {
        lock(&self.rx).take()
    }

    /// One span left the queue.
    pub(super) fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters.
    pub(super) fn counters(&self) -> &ExportCounters {
        &self.counters
    }
}

/// A caller's trace context, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Incoming {
    /// Trace and parent span IDs, when the caller sent valid ones.
    ids: Option<(u128, u64)>,
    /// The caller's sampling decision, if it made one.
    sampled: Option<bool>,
    /// Read from `traceparent` (so `tracestate` belongs to it).
    w3c: bool,
}

/// The context of this proxy's span for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace.
    pub trace_id: u128,
    /// This proxy's span.
    pub span_id: u64,
    /// The caller's span, if any.
    pub parent: Option<u64>,
    /// Whether the trace is recorded.
    pub sampled: bool,
}

impl SpanContext {
    /// The `traceparent` value naming this span as the parent.
    fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// Reads the caller's context, writes the request's new `traceparent` and,
/// when the trace is sampled, starts this proxy's span.
pub fn start(
    req: &mut Request<Body>,
    settings: &TracingSettings,
    direction: Direction,
    metrics: &Arc<Metrics>,
) -> Option<Recording> {
    let incoming = extract(req.headers());
    let context = SpanContext {
        trace_id: incoming
            .ids
            .map_or_else(|| nonzero(|| fastrand::u128(..)), |ids| ids.0),
        span_id: nonzero(|| fastrand::u64(..)),
        parent: incoming.ids.map(|ids| ids.1),
        sampled: incoming
            .sampled
            .unwrap_or_else(|| fastrand::f64() < settings.sampling),
    };
    let headers = req.headers_mut();
    if !incoming.w3c {
        headers.remove(TRACESTATE);
    }
    for name in B3_HEADERS {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::try_from(context.traceparent()) {
        headers.insert(TRACEPARENT, value);
    }
    context
        .sampled
        .then(|| Recording::new(req, context, settings, direction, metrics))
}

fn nonzero<T: Default + PartialEq>(mut random: impl FnMut() -> T) -> T {
    loop {
        let value = random();
        if value != T::default() {
            return value;
        }
    }
}

/// `traceparent` first; else B3 single, else B3 multi.
fn extract(headers: &HeaderMap) -> Incoming {
    if let Some(incoming) = headers
        .get(TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
    {
        return incoming;
    }
    if let Some(value) = headers.get(B3).and_then(|v| v.to_str().ok()) {
        return parse_b3(value);
    }
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let ids = text(B3_TRACE_ID).zip(text(B3_SPAN_ID));
    let sampled = match (text(B3_FLAGS), text(B3_SAMPLED)) {
        (Some("1"), _) => Some(true),
        (_, Some("1" | "true" | "d")) => Some(true),
        (_, Some("0" | "false")) => Some(false),
        _ => None,
    };
    Incoming {
        ids: ids.and_then(|(trace, span)| Some((b3_trace_id(trace)?, span_id(span)?))),
        sampled,
        w3c: false,
    }
}

/// `version-traceid-parentid-flags`; a version other than `00` may carry
/// more fields after these; `ff` and zero IDs are invalid.
fn parse_traceparent(value: &[u8]) -> Option<Incoming> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.len() < 55 {
        return None;
    }
    let version = text.get(0..2)?;
    let well_formed = matches!(text.as_bytes(), [_, _, b'-', ..])
        && text.as_bytes().get(35) == Some(&b'-')
        && text.as_bytes().get(52) == Some(&b'-');
    let exact = text.len() == 55 || (version != "00" && text.as_bytes().get(55) == Some(&b'-'));
    if !well_formed || !exact || version == "ff" || !is_lower_hex(version) {
        return None;
    }
    let trace = text.get(3..35)?;
    let span = text.get(36..52)?;
    let flags = text.get(53..55)?;
    if ![trace, span, flags].into_iter().all(is_lower_hex) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        ids: Some((trace_id, span_id)),
        sampled: Some(flags & 1 == 1),
        w3c: true,
    })
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `b3: {traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or only the
/// sampling state (`0`, `1`, `d`).
fn parse_b3(value: &str) -> Incoming {
    let sampling = |s: &str| match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    };
    let mut parts = value.trim().split('-');
    let first = parts.next().unwrap_or_default();
    let Some(second) = parts.next() else {
        return Incoming {
            sampled: sampling(first),
            ..Incoming::default()
        };
    };
    let ids = b3_trace_id(first).zip(span_id(second));
    Incoming {
        ids,
        sampled: ids.and(parts.next().and_then(sampling)),
        w3c: false,
    }
}

/// 16 or 32 hex digits (a 64-bit ID is the low half), not zero.
fn b3_trace_id(text: &str) -> Option<u128> {
    let text = text.trim();
    if (text.len() != 16 && text.len() != 32) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().filter(|t| *t != 0)
}

fn span_id(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().filter(|s| *s != 0)
}

/// One request's span while it is open.
pub struct Recording {
    span: otlp::Span,
    started: Instant,
    server: bool,
    method: String,
    /// `service/method` for gRPC.
    rpc: Option<String>,
    route: Option<Arc<str>>,
    status: Option<u16>,
    grpc_status: Option<u32>,
    error: Option<String>,
    queue_limit: usize,
    metrics: Arc<Metrics>,
    /// For the gRPC status a translating layer recorded.
    info: Option<RequestInfo>,
}

impl Recording {
    fn new(
        req: &Request<Body>,
        context: SpanContext,
        settings: &TracingSettings,
        direction: Direction,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let kind = match direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound | Direction::Edge => SpanKind::Server,
        };
        let headers = req.headers();
        let conn = req.extensions().get::<ConnInfo>();
        let uri = req.uri();
        let scheme = super::scheme(uri, conn);
        let mut attributes = Vec::with_capacity(24);
        attributes.push(KeyValue::string("mesh.direction", direction.as_str()));
        attributes.push(KeyValue::string(
            "http.request.method",
            req.method().as_str(),
        ));
        attributes.push(KeyValue::string("url.scheme", scheme));
        attributes.push(KeyValue::string("url.path", uri.path()));
        if let Some(query) = uri.query() {
            attributes.push(KeyValue::string("url.query", query));
        }
        let authority = uri.authority().cloned().or_else(|| {
            let host = headers.get(http::header::HOST)?.to_str().ok()?;
            host.parse::<http::uri::Authority>().ok()
        });
        if let Some(authority) = authority {
            attributes.push(KeyValue::string(
                "server.address",
                authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']'),
            ));
            let port = authority
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            attributes.push(KeyValue::int("server.port", i64::from(port)));
        }
        let version = match req.version() {
            Version::HTTP_09 => "0.9",
            Version::HTTP_10 => "1.0",
            Version::HTTP_2 => "2",
            Version::HTTP_3 => "3",
            _ => "1.1",
        };
        attributes.push(KeyValue::string("network.protocol.version", version));
        if let Some(agent) = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::string("user_agent.original", agent));
        }
        if let Some(identity) = conn.and_then(|c| c.peer_identity.as_deref()) {
            attributes.push(KeyValue::string("mesh.peer_identity", identity));
        }
        if let Some(peer) = conn.and_then(|c| c.peer) {
            attributes.push(KeyValue::string(
                "network.peer.address",
                peer.ip().to_canonical().to_string(),
            ));
        }
        let rpc = is_grpc(headers)
            .then(|| {
                let (service, method) = uri.path().strip_prefix('/')?.split_once('/')?;
                attributes.push(KeyValue::string("rpc.system", "grpc"));
                attributes.push(KeyValue::string("rpc.service", service));
                attributes.push(KeyValue::string("rpc.method", method));
                Some(format!("{service}/{method}"))
            })
            .flatten();
        let trace_state = headers
            .get(TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let span = otlp::Span {
            trace_id: context.trace_id.to_be_bytes().to_vec(),
            span_id: context.span_id.to_be_bytes().to_vec(),
            trace_state: trace_state.to_string(),
            parent_span_id: context
                .parent
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(SystemTime::now()),
            attributes,
            // Sampled; with a parent, bits 8 and 9: it is known to be remote.
            flags: if context.parent.is_some() {
                0x301
            } else {
                0x01
            },
            ..otlp::Span::default()
        };
        Self {
            span,
            started: Instant::now(),
            server: kind == SpanKind::Server,
            method: req.method().as_str().to_string(),
            rpc,
            route: None,
            status: None,
            grpc_status: None,
            error: None,
            queue_limit: settings.queue,
            metrics: metrics.clone(),
            info: None,
        }
    }

    /// Learns the response head (or the error that stands for it) and
    /// what the layers below found out.
    pub fn respond(&mut self, result: &Result<Response<Body>, BoxError>, info: &RequestInfo) {
        self.info = Some(info.clone());
        let attributes = &mut self.span.attributes;
        if let Some(route) = info.route() {
            attributes.push(KeyValue::string("http.route", &**route));
            self.route = Some(route.clone());
        }
        if let Some(upstream) = info.upstream() {
            attributes.push(KeyValue::string("mesh.upstream", &**upstream));
        }
        if let Some(endpoint) = info.endpoint() {
            attributes.push(KeyValue::string("mesh.endpoint", endpoint.to_string()));
        }
        attributes.push(KeyValue::int("mesh.attempts", i64::from(info.attempts())));
        if let Some(client) = info.client() {
            attributes.push(KeyValue::string(
                "client.address",
                client.to_canonical().to_string(),
            ));
        }
        if let Some(id) = info.request_id() {
            attributes.push(KeyValue::string("mesh.request_id", &**id));
        }
        match result {
            Ok(response) => {
                self.status = Some(response.status().as_u16());
                self.note(response.headers());
            }
            Err(_) => self.status = Some(500),
        }
    }

    /// `grpc-status` and `x-mesh-error` from response headers or trailers.
    pub fn note(&mut self, headers: &HeaderMap) {
        if self.rpc.is_some() {
            if let Some(code) = super::grpc_status(headers) {
                self.grpc_status = Some(code);
            }
        }
        if let Some(reason) = headers.get(REASON_HEADER).and_then(|v| v.to_str().ok()) {
            self.error = Some(reason.to_string());
        }
    }

    /// The response body failed mid-stream.
    pub fn reset(&mut self) {
        self.error
            .get_or_insert_with(|| "upstream_reset".to_string());
    }

    /// Ends the span and offers it to the exporter.
    pub fn finish(self) {
        let Self {
            mut span,
            started,
            server,
            method,
            rpc,
            route,
            status,
            grpc_status,
            error,
            queue_limit,
            metrics,
            info,
        } = self;
        let grpc_status = grpc_status.or_else(|| info.and_then(|i| i.grpc_status()));
        span.end_time_unix_nano = span
            .start_time_unix_nano
            .saturating_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        span.name = match (&rpc, &route) {
            (Some(rpc), _) => rpc.clone(),
            (None, Some(route)) => format!("{method} {route}"),
            (None, None) => method,
        };
        let status = status.unwrap_or(500);
        span.attributes.push(KeyValue::int(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(code) = grpc_status {
            span.attributes
                .push(KeyValue::int("rpc.grpc.status_code", i64::from(code)));
        }
        let http_failed = status >= 500 || (!server && status >= 400);
        // Server side: only codes that say the server failed (OpenTelemetry RPC conventions).
        let grpc_failed = grpc_status.is_some_and(|code| {
            if server {
                matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
            } else {
                code != 0
            }
        });
        let error_type = error.or_else(|| {
            if http_failed {
                Some(status.to_string())
            } else if grpc_failed {
                grpc_status.map(|c| c.to_string())
            } else {
                None
            }
        });
        if let Some(error_type) = error_type {
            span.attributes
                .push(KeyValue::string("error.type", error_type.as_str()));
            span.status = Some(otlp::Status {
                message: error_type,
                code: StatusCode::Error as i32,
            });
        }
        metrics.spans().push(span, queue_limit);
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_is_read_strictly() {
        let good = format!("00-{TRACE}-{SPAN}-01");
        let parsed = parse_traceparent(good.as_bytes()).unwrap();
        assert_eq!(
            parsed.ids,
            Some((
                u128::from_str_radix(TRACE, 16).unwrap(),
                u64::from_str_radix(SPAN, 16).unwrap()
            ))
        );
        assert_eq!(parsed.sampled, Some(true));
        let unsampled = format!("00-{TRACE}-{SPAN}-00");
        assert_eq!(
            parse_traceparent(unsampled.as_bytes()).unwrap().sampled,
            Some(false)
        );
        let future = format!("01-{TRACE}-{SPAN}-01-extra");
        assert!(parse_traceparent(future.as_bytes()).is_some());
        for bad in [
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00_{TRACE}-{SPAN}-01"),
            "00-short".to_string(),
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn b3_single_and_multi_are_read() {
        let single = parse_b3(&format!("{TRACE}-{SPAN}-1"));
        assert_eq!(single.sampled, Some(true));
        assert!(single.ids.is_some());
        let short = parse_b3(&format!("a3ce929d0e0e4736-{SPAN}"));
        assert_eq!(short.ids.unwrap().0, 0xa3ce929d0e0e4736);
        assert_eq!(short.sampled, None);
        assert_eq!(parse_b3("0").sampled, Some(false));
        assert_eq!(parse_b3("0").ids, None);
        let mut headers = HeaderMap::new();
        headers.insert("x-b3-traceid", TRACE.parse().unwrap());
        headers.insert("x-b3-spanid", SPAN.parse().unwrap());
        headers.insert("x-b3-sampled", "1".parse().unwrap());
        let multi = extract(&headers);
        assert_eq!(multi.sampled, Some(true));
        assert_eq!(multi.ids.unwrap().1, u64::from_str_radix(SPAN, 16).unwrap());
        assert!(!multi.w3c);
    }

    fn settings(sampling: f64) -> TracingSettings {
        let yaml = format!(
            "service: web\ntracing: {{ otlp: {{ endpoint: 127.0.0.1:4317 }}, sampling: {sampling} }}\n"
        );
        let settings = crate::config::load_str(&yaml).unwrap();
        (*settings.tracing.unwrap()).clone()
    }

    #[test]
    fn the_request_carries_this_proxys_span_upstream() {
        let metrics = Arc::new(Metrics::new());
        let mut req = Request::builder()
            .uri("/orders/1")
            .header("traceparent", format!("00-{TRACE}-{SPAN}-01"))
            .header("tracestate", "vendor=x")
            .header("b3", format!("{TRACE}-{SPAN}-1"))
            .body(crate::http::empty())
            .unwrap();
        let recording = start(&mut req, &settings(0.0), Direction::Inbound, &metrics).unwrap();
        let sent = req.headers()["traceparent"].to_str().unwrap();
        assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
        assert!(sent.ends_with("-01"));
        assert!(!sent.contains(SPAN));
        assert_eq!(req.headers()["tracestate"], "vendor=x");
        assert!(req.headers().get("b3").is_none());
        assert_eq!(
            recording.span.parent_span_id,
            u64::from_str_radix(SPAN, 16).unwrap().to_be_bytes()
        );
        assert_eq!(
            &sent[36..52],
            format!(
                "{:016x}",
                u64::from_be_bytes(recording.span.span_id.as_slice().try_into().unwrap())
            )
        );
    }

    #[test]
    fn new_traces_follow_the_ratio_and_unsampled_ones_still_propagate() {
        let metrics = Arc::new(Metrics::new());
        let mut req = Request::new(crate::http::empty());
        assert!(start(&mut req, &settings(0.0), Direction::Edge, &metrics).is_none());
        let sent = req.headers()["traceparent"].to_str().unwrap();
        assert!(sent.ends_with("-00"), "{sent}");
        let mut req = Request::new(crate::http::empty());
        assert!(start(&mut req, &settings(1.0), Direction::Edge, &metrics).is_some());
    }

    #[tokio::test]
    async fn the_span_ends_with_the_response_body_and_takes_its_trailers() {
        use http_body_util::BodyExt;
        use tower::{ServiceBuilder, ServiceExt};
        let metrics = Arc::new(Metrics::new());
        let yaml = "service: web\ntracing: { otlp: { endpoint: 127.0.0.1:4317 } }\n";
        let rt = crate::stack::Runtime {
            routes: Arc::default(),
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(
                crate::config::load_str(yaml).unwrap(),
            )),
            metrics: metrics.clone(),
            identity: Arc::new(crate::tls::IdentityStore::new(Default::default())),
        };
        let upstream = crate::http::shared_fn(|req: Request<Body>| async move {
            let info = req.extensions().get::<RequestInfo>().cloned().unwrap();
            info.set_upstream(Arc::from("orders"));
            assert!(req.headers()["traceparent"]
                .to_str()
                .unwrap()
                .ends_with("-01"));
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "14".parse().unwrap());
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"x"))
                .with_trailers(async move { Some(Ok::<_, std::convert::Infallible>(trailers)) });
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .body(crate::http::boxed(body))
                .unwrap();
            Ok::<_, BoxError>(response)
        });
        let service = ServiceBuilder::new()
            .layer(super::super::layer(&rt, Direction::Outbound))
            .service(upstream);
        let request = Request::post("http://orders/orders.v1.Orders/GetOrder")
            .header("content-type", "application/grpc")
            .body(crate::http::empty())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let mut rx = metrics.spans().take_receiver().unwrap();
        assert!(rx.try_recv().is_err(), "the span waits for the body's end");
        response.into_body().collect().await.unwrap();
        let span = rx.try_recv().unwrap();
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.name, "orders.v1.Orders/GetOrder");
        assert_eq!(span.status.unwrap().code, StatusCode::Error as i32);
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.clone()?.value)
        };
        assert_eq!(
            attribute("rpc.grpc.status_code"),
            Some(otlp::Value::Int(14))
        );
        assert_eq!(
            attribute("mesh.upstream"),
            Some(otlp::Value::String("orders".into()))
        );
        assert_eq!(span.parent_span_id, Vec::<u8>::new());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let counters = ExportCounters::default();
        let queue = SpanQueue::new(counters.clone());
        queue.push(otlp::Span::default(), 1);
        queue.push(otlp::Span::default(), 1);
        assert_eq!(counters.dropped.get(), 1);
        let mut rx = queue.take_receiver().unwrap();
        assert!(rx.try_recv().is_ok());
        queue.taken();
        queue.push(otlp::Span::default(), 1);
        assert_eq!(counters.dropped.get(), 1);
    }
}
