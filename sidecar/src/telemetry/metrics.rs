//! Prometheus metrics, served as OpenMetrics text on the admin API's
//! `/metrics`. Families are created once at start; layers and pools hold
//! handles to their series, so the hot path only increments atomics.
//! What is a state rather than an event (endpoint state, latency and
//! load, circuit breakers, edge certificates, the process) is read at
//! scrape time by collectors, never kept up to date on the data path.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::access_log::AccessLog;
use super::trace::{ExportCounters, SpanQueue};
use crate::connect::ConnectionMetrics;
use crate::route::RouteTable;
use crate::udp::FlowMetrics;

/// Which way a request or connection travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Callers → the local app.
    Inbound,
    /// The local app → other services.
    Outbound,
    /// Public clients → the mesh, through the edge.
    Edge,
}

impl Direction {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Edge => "edge",
        }
    }
}

/// Who called, on inbound requests: the service name of the verified peer
/// identity (`spiffe://<td>/svc/<name>` → `<name>`), `unknown` without one.
/// Holds the connection's identity (a reference count, no copy); series
/// are told apart by the name alone. Service names are the mesh's, so the
/// label stays bounded.
#[derive(Clone, Debug, Default)]
pub enum Caller {
    /// Not an inbound request: no `caller` label.
    #[default]
    Absent,
    /// An inbound request without a verified identity (plaintext).
    Unknown,
    /// An inbound request from this verified SPIFFE ID.
    Peer(Arc<str>),
}

impl Caller {
    /// The caller of a request travelling `direction` over a connection
    /// whose verified peer is `identity`.
    pub fn of(direction: Direction, identity: Option<&Arc<str>>) -> Self {
        match (direction, identity) {
            (Direction::Inbound, Some(id)) => Caller::Peer(id.clone()),
            (Direction::Inbound, None) => Caller::Unknown,
            _ => Caller::Absent,
        }
    }

    /// The label value, `None` when there is no label.
    fn name(&self) -> Option<&str> {
        match self {
            Caller::Absent => None,
            Caller::Unknown => Some("unknown"),
            Caller::Peer(id) => Some(service_name(id)),
        }
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Caller {}

impl Hash for Caller {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

/// `spiffe://<td>/svc/<name>` → `<name>`; another SPIFFE ID's path after
/// the trust domain; anything else as it is.
fn service_name(id: &str) -> &str {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return id;
    };
    let path = rest.split_once('/').map_or(rest, |(_, path)| path);
    path.strip_prefix("svc/").unwrap_or(path)
}

/// `2xx` … `5xx` (`1xx` included); anything else `other`.
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// The largest gRPC status code; larger ones count as `2` (UNKNOWN), as
/// gRPC says to treat them, so a peer cannot grow the label set.
const GRPC_MAX_CODE: u32 = 16;

/// What a finished request is counted under. `route` is written only when
/// an edge route matched (an absent label and an empty one are the same
/// series to Prometheus), `consumer` only on edge requests whose
/// authentication named one, `caller` only on inbound requests,
/// `grpc_status` only on gRPC responses that carried one. Route and
/// upstream names come from the config, consumers are capped
/// ([`MAX_CONSUMERS`]) and statuses are bounded, so the label set stays
/// bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    direction: &'static str,
    upstream: Arc<str>,
    route: Arc<str>,
    consumer: Arc<str>,
    caller: Caller,
    status: u16,
    grpc_status: Option<u8>,
}

impl RequestLabels {
    /// Which series these labels name, by their strings' addresses.
    fn series_key(&self) -> SeriesKey {
        let address = |s: &Arc<str>| Arc::as_ptr(s).cast::<u8>() as usize;
        let (caller_kind, caller) = match &self.caller {
            Caller::Absent => (0, 0),
            Caller::Unknown => (1, 0),
            Caller::Peer(peer) => (2, address(peer)),
        };
        SeriesKey {
            strings: [
                self.direction.as_ptr() as usize,
                address(&self.upstream),
                address(&self.route),
                address(&self.consumer),
                caller,
            ],
            status: self.status,
            grpc_status: self.grpc_status,
            caller_kind,
        }
    }

    /// The same request with the gRPC status of its response.
    pub fn with_grpc_status(mut self, code: u32) -> Self {
        let code = if code > GRPC_MAX_CODE { 2 } else { code };
        self.grpc_status = u8::try_from(code).ok();
        self
    }

    /// The same request with the `consumer` label (see [`Metrics::consumer_label`]).
    pub fn with_consumer(mut self, consumer: Arc<str>) -> Self {
        self.consumer = consumer;
        self
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", &*self.upstream).encode(encoder.encode_label())?;
        if !self.route.is_empty() {
            ("route", &*self.route).encode(encoder.encode_label())?;
        }
        if !self.consumer.is_empty() {
            ("consumer", &*self.consumer).encode(encoder.encode_label())?;
        }
        if let Some(caller) = self.caller.name() {
            ("caller", caller).encode(encoder.encode_label())?;
        }
        ("status", self.status).encode(encoder.encode_label())?;
        ("status_class", status_class(self.status)).encode(encoder.encode_label())?;
        if let Some(code) = self.grpc_status {
            ("grpc_status", code).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// [`RequestLabels`] with the status class only: a histogram series is
/// two dozen lines, so it is not multiplied by every status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct DurationLabels {
    direction: &'static str,
    upstream: Arc<str>,
    route: Arc<str>,
    caller: Caller,
    status_class: &'static str,
}

impl EncodeLabelSet for DurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", &*self.upstream).encode(encoder.encode_label())?;
        if !self.route.is_empty() {
            ("route", &*self.route).encode(encoder.encode_label())?;
        }
        if let Some(caller) = self.caller.name() {
            ("caller", caller).encode(encoder.encode_label())?;
        }
        ("status_class", self.status_class).encode(encoder.encode_label())
    }
}

/// A refusal: `route` is written only when an edge route matched.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct DenialLabels {
    direction: &'static str,
    route: Arc<str>,
    /// `authz`, `edge_route`, `hygiene`, `cors`, or the edge's
    /// authentication and rate-limit policies.
    policy: &'static str,
    reason: &'static str,
}

impl EncodeLabelSet for DenialLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        if !self.route.is_empty() {
            ("route", &*self.route).encode(encoder.encode_label())?;
        }
        ("policy", self.policy).encode(encoder.encode_label())?;
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

/// Distinct `consumer` label values kept on `mesh_requests_total`; later
/// consumers are counted as [`OTHER_CONSUMER`]. Consumers named by API
/// keys are few, but a token claim can name any number of them.
pub const MAX_CONSUMERS: usize = 1000;

/// The `consumer` label of consumers beyond [`MAX_CONSUMERS`].
const OTHER_CONSUMER: &str = "other";

/// The consumer label values handed out so far (at most [`MAX_CONSUMERS`]).
#[derive(Debug)]
struct ConsumerLabels {
    seen: std::sync::RwLock<std::collections::HashSet<Arc<str>>>,
    other: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: Arc<str>,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: Arc<str>,
    /// `deny`, `listener_limit`, `ip_limit`, `global_limit`, `proxy_protocol`,
    /// `tls_handshake_rate`, `overloaded` or `accept_error`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    listener: Arc<str>,
    /// `received` from the client or `sent` to it.
    flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    upstream: Arc<str>,
    /// `ok`, `servfail`, `nxdomain`, `timeout`, `error`, or `fallback`
    /// (a failure that kept the last known endpoints, counted twice).
    result: &'static str,
}

type DurationFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// Entries of [`SeriesCache`] before it starts over (reloads and new mTLS
/// peers bring new label strings).
const SERIES_CACHE_CAP: usize = 1024;

/// The per-request series by the identity of their label strings, hashed
/// and compared in a few instructions where the families hash every
/// label's text with SipHash on each request. An entry keeps its labels,
/// so their strings stay alive and an address never stands for another
/// string.
#[derive(Default)]
struct SeriesCache(
    std::collections::HashMap<SeriesKey, (RequestLabels, Series), foldhash::fast::FixedState>,
);

/// [`RequestLabels`] by the addresses of their strings, and their values.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    /// Direction, upstream, route, consumer, caller.
    strings: [usize; 5],
    status: u16,
    grpc_status: Option<u8>,
    caller_kind: u8,
}

/// One request's series, each fetched from its family on first use: its
/// counter and its duration histogram.
#[derive(Default)]
struct Series {
    requests: Option<Counter>,
    duration: Option<Histogram>,
}

/// Every metric the proxy exports.
pub struct Metrics {
    /// The `mesh_` families and the cluster and edge-certificate collectors.
    registry: Registry,
    /// The `process_` metrics, without the prefix (the conventional names).
    process: Registry,
    /// The route table the cluster collector reads at scrape time.
    routes: Arc<OnceLock<Arc<ArcSwap<RouteTable>>>>,
    /// The edge listeners' certificate stores, read at scrape time.
    edge_certs: Arc<crate::tls::public::CertRegistry>,
    /// The upstream label of unrouted requests, made once.
    no_upstream: Arc<str>,
    /// The route label of requests no edge route matched (empty), made once.
    no_route: Arc<str>,
    /// The `consumer` label values in use, capped.
    consumers: ConsumerLabels,
    /// The access log's line queue; its writer task is `access_log::AccessLog::spawn_writer`.
    access_log: AccessLog,
    /// Finished spans for the OTLP exporter (`exporter::spawn`).
    spans: SpanQueue,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
    /// The per-request series last used, found without hashing label text.
    series: std::sync::Mutex<SeriesCache>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections: Family<ConnectionLabels, Counter>,
    connections_refused: Family<RefusedLabels, Counter>,
    upstream_opened: Family<UpstreamLabels, Counter>,
    upstream_open: Family<UpstreamLabels, Gauge>,
    tcp_bytes: Family<BytesLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    dns_resolutions: Family<DnsLabels, Counter>,
    cert_expiry: Gauge,
    plaintext_refused: Counter,
    resilience: Family<DecisionLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    transparent_passthrough: Counter,
    udp_flows: Family<UpstreamLabels, Counter>,
    udp_flows_open: Family<UpstreamLabels, Gauge>,
    udp_flows_refused: Family<UpstreamLabels, Counter>,
    /// Edge rate limits: refusals by route and limit, Redis health.
    rate_limit: crate::policy::rate_limit::RateLimitMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    upstream: Arc<str>,
    decision: &'static str,
}

/// Unrouted requests carry this upstream label.
const NO_UPSTREAM: &str = "none";

fn duration_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        crate::translate::ws_bridge::hub()
            .metrics
            .register(&mut registry); // the bridge's connections live per process
        crate::overload::state().register(&mut registry); // one overload budget per process
        crate::translate::rest_ws::metrics().register(&mut registry); // pooled WebSocket connections live in the route settings, one set per process
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by direction, upstream, edge route, edge consumer (the first 1000 seen, then other), inbound caller, status, status class and gRPC status (counted when the gRPC status is known)",
            requests.clone(),
        );
        let durations =
            DurationFamily::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "request_duration",
            "Time to response head, by direction, upstream, edge route, inbound caller and status class",
            Unit::Seconds,
            durations.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Downstream connections open, by listener",
            connections_open.clone(),
        );
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Downstream connections accepted, by listener and detected protocol",
            connections.clone(),
        );
        let connections_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Downstream connections closed at accept by edge admission, by listener and reason",
            connections_refused.clone(),
        );
        let upstream_opened = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_connections",
            "Connections opened to upstream endpoints",
            upstream_opened.clone(),
        );
        let upstream_open = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "upstream_connections_open",
            "Connections to upstream endpoints open now",
            upstream_open.clone(),
        );
        let tcp_bytes = Family::<BytesLabels, Counter>::default();
        registry.register_with_unit(
            "tcp",
            "Bytes relayed on opaque TCP connections",
            Unit::Bytes,
            tcp_bytes.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reload attempts by result",
            reloads.clone(),
        );
        let dns_resolutions = Family::<DnsLabels, Counter>::default();
        registry.register(
            "dns_resolutions",
            "DNS discovery resolutions by upstream and result",
            dns_resolutions.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register_with_unit(
            "identity_cert_expiry",
            "Time until the workload certificate expires",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let plaintext_refused = Counter::default();
        registry.register(
            "inbound_plaintext_refused",
            "Plaintext connections refused by an inbound listener in strict mTLS mode",
            plaintext_refused.clone(),
        );
        let resilience = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "resilience",
            "Resilience decisions by upstream: retries by reason, budget_exhausted, retries_exhausted, retry_limit, circuit_open, request_timeout",
            resilience.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "policy_denials",
            "Requests refused by policy: authz (inbound rules), edge_route (no route, route allow/deny), hygiene (malformed or over limits), cors (preflights refused), the edge's authentication and rate limits; by reason and edge route",
            denials.clone(),
        );
        let routes = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ClusterCollector {
            routes: routes.clone(),
        }));
        registry.register_collector(Box::new(crate::edge::cache::CacheCollector(routes.clone())));
        let edge_certs = Arc::new(crate::tls::public::CertRegistry::default());
        registry.register_collector(Box::new(EdgeCertCollector(edge_certs.clone())));
        let mut process = Registry::default();
        process.register_collector(Box::new(super::process::ProcessCollector::new()));
        let transparent_passthrough = Counter::default();
        registry.register(
            "transparent_passthrough",
            "Opaque connections the transparent listener sent straight to their original destination (no upstream has it)",
            transparent_passthrough.clone(),
        );
        let udp_flows = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "udp_flows",
            "UDP client flows opened to an upstream endpoint",
            udp_flows.clone(),
        );
        let udp_flows_open = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "udp_flows_open",
            "UDP client flows open now",
            udp_flows_open.clone(),
        );
        let udp_flows_refused = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "udp_flows_refused",
            "UDP datagrams dropped because no flow could be opened (flow cap reached, no endpoint, socket error)",
            udp_flows_refused.clone(),
        );
        let rate_limit = crate::policy::rate_limit::RateLimitMetrics {
            denials: Family::default(),
            redis: crate::policy::rate_limit::redis::RedisMetrics::default(),
        };
        registry.register(
            "rate_limit_denials",
            "Requests refused by edge rate limits, by route, limit and reason (rate_limited, rate_limit_unavailable)",
            rate_limit.denials.clone(),
        );
        registry.register(
            "rate_limit_redis_errors",
            "Global rate-limit calls and connection attempts to Redis that failed",
            rate_limit.redis.errors.clone(),
        );
        registry.register(
            "rate_limit_redis_up",
            "1 while the connection to edge.redis is established",
            rate_limit.redis.up.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind or could not write",
            access_log_dropped.clone(),
        );
        let trace_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped: the export queue was full, an export failed, or tracing was turned off",
            trace_dropped.clone(),
        );
        let trace_exports = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "trace_exports",
            "OTLP span exports by result (ok, failed)",
            trace_exports.clone(),
        );
        // One statement each: a series handle's guard lives to the end of
        // its statement, and a second `get_or_create` in it would deadlock.
        let ok = trace_exports
            .get_or_create(&ReloadLabels { result: "ok" })
            .clone();
        let failed = trace_exports
            .get_or_create(&ReloadLabels { result: "failed" })
            .clone();
        let trace_counters = ExportCounters {
            dropped: trace_dropped,
            ok,
            failed,
        };
        Self {
            registry,
            process,
            routes,
            edge_certs,
            denials,
            rate_limit,
            no_upstream: Arc::from(NO_UPSTREAM),
            no_route: Arc::from(""),
            series: std::sync::Mutex::default(),
            consumers: ConsumerLabels {
                seen: std::sync::RwLock::default(),
                other: Arc::from(OTHER_CONSUMER),
            },
            access_log: AccessLog::new(access_log_dropped),
            spans: SpanQueue::new(trace_counters),
            udp_flows,
            udp_flows_open,
            udp_flows_refused,
            transparent_passthrough,
            resilience,
            cert_expiry,
            plaintext_refused,
            requests,
            durations,
            connections_open,
            connections,
            connections_refused,
            upstream_opened,
            upstream_open,
            tcp_bytes,
            reloads,
            dns_resolutions,
        }
    }

    /// What a request whose response head is known is counted under.
    pub fn request_labels(
        &self,
        direction: Direction,
        upstream: Option<&Arc<str>>,
        route: Option<&Arc<str>>,
        caller: Caller,
        status: u16,
    ) -> RequestLabels {
        RequestLabels {
            direction: direction.as_str(),
            upstream: upstream.unwrap_or(&self.no_upstream).clone(),
            route: route.unwrap_or(&self.no_route).clone(),
            consumer: self.no_route.clone(),
            caller,
            status,
            grpc_status: None,
        }
    }

    /// The time to a request's response head.
    pub fn observe_duration(&self, labels: &RequestLabels, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.with_series(labels, |series| match &series.duration {
            Some(histogram) => histogram.observe(seconds),
            None => {
                let histogram = self
                    .durations
                    .get_or_create(&DurationLabels {
                        direction: labels.direction,
                        upstream: labels.upstream.clone(),
                        route: labels.route.clone(),
                        caller: labels.caller.clone(),
                        status_class: status_class(labels.status),
                    })
                    .clone();
                histogram.observe(seconds);
                series.duration = Some(histogram);
            }
        });
    }

    /// Counts one finished request (for gRPC, once its status is known).
    pub fn count_request(&self, labels: &RequestLabels) {
        self.with_series(labels, |series| {
            let counter = series
                .requests
                .get_or_insert_with(|| self.requests.get_or_create(labels).clone());
            counter.inc();
        });
    }

    /// Runs `use_series` on the cached series of `labels`: found by the
    /// labels' string addresses, made on first use.
    fn with_series(&self, labels: &RequestLabels, use_series: impl FnOnce(&mut Series)) {
        let key = labels.series_key();
        let mut cache = crate::lock(&self.series);
        if let Some((_, series)) = cache.0.get_mut(&key) {
            return use_series(series);
        }
        if cache.0.len() >= SERIES_CACHE_CAP {
            cache.0.clear();
        }
        let mut series = Series::default();
        use_series(&mut series);
        cache.0.insert(key, (labels.clone(), series));
    }

    /// Counts a request a policy refused (`policy`: `authz`, `edge_route`,
    /// `hygiene`, `cors`, …) under the edge route it matched, if any.
    pub fn policy_denial(
        &self,
        direction: Direction,
        route: Option<&Arc<str>>,
        policy: &'static str,
        reason: &'static str,
    ) {
        self.denials
            .get_or_create(&DenialLabels {
                direction: direction.as_str(),
                route: route.unwrap_or(&self.no_route).clone(),
                policy,
                reason,
            })
            .inc();
    }

    /// The `consumer` label of `consumer`: its name while fewer than
    /// [`MAX_CONSUMERS`] distinct names were seen since start, `other`
    /// for names first seen after that.
    pub fn consumer_label(&self, consumer: &Arc<str>) -> Arc<str> {
        let labels = &self.consumers;
        {
            let seen = labels.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = seen.get(consumer) {
                return known.clone();
            }
            if seen.len() >= MAX_CONSUMERS {
                return labels.other.clone();
            }
        }
        let mut seen = labels.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_CONSUMERS && !seen.contains(consumer) {
            return labels.other.clone();
        }
        seen.insert(consumer.clone());
        consumer.clone()
    }

    /// The edge rate limits' counters and Redis health.
    pub fn rate_limit(&self) -> crate::policy::rate_limit::RateLimitMetrics {
        self.rate_limit.clone()
    }

    /// The edge listeners' certificate stores, for the expiry metric.
    pub fn edge_certs(&self) -> &crate::tls::public::CertRegistry {
        &self.edge_certs
    }

    /// Lets the cluster collector read `routes` at scrape time (set once,
    /// at start: the proxy has one route table, swapped inside).
    pub fn follow_routes(&self, routes: &Arc<ArcSwap<RouteTable>>) {
        if self.routes.get().is_none() {
            let _ = self.routes.set(routes.clone());
        }
    }

    /// The access log's line queue.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// The queue of finished spans.
    pub fn spans(&self) -> &SpanQueue {
        &self.spans
    }

    /// The open-connections gauge of a listener.
    pub fn connections_open(&self, listener: &Arc<str>) -> Gauge {
        self.connections_open
            .get_or_create(&ListenerLabels {
                listener: listener.clone(),
            })
            .clone()
    }

    /// Counts an accepted connection once its protocol is known.
    pub fn connection_accepted(&self, listener: &Arc<str>, protocol: &'static str) {
        self.connections
            .get_or_create(&ConnectionLabels {
                listener: listener.clone(),
                protocol,
            })
            .inc();
    }

    /// Counts a connection closed at accept (edge admission).
    pub fn connection_refused(&self, listener: &Arc<str>, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusedLabels {
                listener: listener.clone(),
                reason,
            })
            .inc();
    }

    /// Handles for a cluster's upstream connection counters.
    pub fn upstream_connections(&self, upstream: &Arc<str>) -> ConnectionMetrics {
        let labels = UpstreamLabels {
            upstream: upstream.clone(),
        };
        ConnectionMetrics {
            opened: self.upstream_opened.get_or_create(&labels).clone(),
            open: self.upstream_open.get_or_create(&labels).clone(),
        }
    }

    /// Handles for a UDP listener's flow counters.
    pub fn udp_flows(&self, upstream: &Arc<str>) -> FlowMetrics {
        let labels = UpstreamLabels {
            upstream: upstream.clone(),
        };
        FlowMetrics {
            opened: self.udp_flows.get_or_create(&labels).clone(),
            open: self.udp_flows_open.get_or_create(&labels).clone(),
            refused: self.udp_flows_refused.get_or_create(&labels).clone(),
        }
    }

    /// Bytes relayed on an opaque connection: `received` from the client, `sent` to it.
    pub fn tcp_bytes(&self, listener: &Arc<str>, received: u64, sent: u64) {
        let labels = |flow| BytesLabels {
            listener: listener.clone(),
            flow,
        };
        self.tcp_bytes
            .get_or_create(&labels("received"))
            .inc_by(received);
        self.tcp_bytes.get_or_create(&labels("sent")).inc_by(sent);
    }

    /// A config reload attempt: `ok` or `error`.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts a resilience decision for `upstream`.
    pub fn resilience(&self, upstream: &Arc<str>, decision: &'static str) {
        self.resilience
            .get_or_create(&DecisionLabels {
                upstream: upstream.clone(),
                decision,
            })
            .inc();
    }

    /// Counts resilience decisions of `upstream`, one per call, for a task
    /// that outlives this borrow (the health checker).
    pub fn resilience_decisions(
        &self,
        upstream: &Arc<str>,
    ) -> impl Fn(&'static str) + Send + Sync + 'static {
        let family = self.resilience.clone();
        let upstream = upstream.clone();
        move |decision| {
            family
                .get_or_create(&DecisionLabels {
                    upstream: upstream.clone(),
                    decision,
                })
                .inc();
        }
    }

    /// Counts one DNS discovery outcome of `upstream` per call (`result`:
    /// see `mesh_dns_resolutions_total`).
    pub fn dns_resolutions(
        &self,
        upstream: &Arc<str>,
    ) -> impl Fn(&'static str) + Send + Sync + 'static {
        let family = self.dns_resolutions.clone();
        let upstream = upstream.clone();
        move |result| {
            family
                .get_or_create(&DnsLabels {
                    upstream: upstream.clone(),
                    result,
                })
                .inc();
        }
    }

    /// The workload certificate's seconds-to-expiry gauge.
    pub fn cert_expiry(&self) -> Gauge {
        self.cert_expiry.clone()
    }

    /// Counts a plaintext connection refused in strict mode.
    pub fn plaintext_refused(&self) {
        self.plaintext_refused.inc();
    }

    /// One opaque connection passed through to its original destination.
    pub fn transparent_passthrough(&self) {
        self.transparent_passthrough.inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Reads the live clusters at scrape time: per endpoint its state, load,
/// latency estimate and ejections; per cluster whether its request limit
/// (the circuit breaker) is reached.
struct ClusterCollector {
    routes: Arc<OnceLock<Arc<ArcSwap<RouteTable>>>>,
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCollector").finish_non_exhaustive()
    }
}

/// Every state an endpoint can be in, as `mesh_endpoint_state` writes them.
const ENDPOINT_STATES: [&str; 4] = ["healthy", "unhealthy", "ejected", "maintenance"];

/// One endpoint's values, read once per scrape.
struct EndpointSample {
    upstream: Arc<str>,
    endpoint: String,
    state: &'static str,
    active: u64,
    connections: u64,
    latency: f64,
    ejections: u32,
}

impl EndpointSample {
    fn labels(&self) -> [(&'static str, &str); 2] {
        [("upstream", &self.upstream), ("endpoint", &self.endpoint)]
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(routes) = self.routes.get() else {
            return Ok(());
        };
        let clusters = routes.load().clusters();
        let mut endpoints = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for cluster in &clusters {
            for ep in cluster.balancer.endpoints() {
                // A list naming one address twice is one series.
                if !seen.insert((cluster.name().clone(), ep.addr)) {
                    continue;
                }
                endpoints.push(EndpointSample {
                    upstream: cluster.name().clone(),
                    endpoint: ep.addr.to_string(),
                    state: ep.state(),
                    active: ep.active.load(std::sync::atomic::Ordering::Relaxed),
                    connections: ep.connections.load(std::sync::atomic::Ordering::Relaxed),
                    latency: ep.latency().as_secs_f64(),
                    ejections: ep.ejections.load(std::sync::atomic::Ordering::Relaxed),
                });
            }
        }
        if !endpoints.is_empty() {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "endpoint_state",
                "Endpoint state: 1 for the state it is in (healthy, unhealthy, ejected, maintenance), 0 for the others",
                None,
                gauge.metric_type(),
            )?;
            for e in &endpoints {
                for state in ENDPOINT_STATES {
                    let labels = [
                        ("upstream", &*e.upstream),
                        ("endpoint", e.endpoint.as_str()),
                        ("state", state),
                    ];
                    ConstGauge::new(i64::from(e.state == state))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "endpoint_active_requests",
                "Requests and tunnels in flight to the endpoint",
                None,
                gauge.metric_type(),
            )?;
            for e in &endpoints {
                ConstGauge::new(e.active).encode(family.encode_family(&e.labels())?)?;
            }
            let mut family = encoder.encode_descriptor(
                "endpoint_connections_open",
                "Connections open to the endpoint (pooled HTTP and opaque TCP)",
                None,
                gauge.metric_type(),
            )?;
            for e in &endpoints {
                ConstGauge::new(e.connections).encode(family.encode_family(&e.labels())?)?;
            }
            let mut family = encoder.encode_descriptor(
                "endpoint_latency_ewma",
                "Peak-EWMA latency estimate the balancer chooses by (failures count as 1 s)",
                Some(&Unit::Seconds),
                gauge.metric_type(),
            )?;
            for e in &endpoints {
                ConstGauge::new(e.latency).encode(family.encode_family(&e.labels())?)?;
            }
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "endpoint_ejections",
                "Times outlier detection ejected the endpoint",
                None,
                counter.metric_type(),
            )?;
            for e in &endpoints {
                ConstCounter::new(u64::from(e.ejections))
                    .encode(family.encode_family(&e.labels())?)?;
            }
        }
        if !clusters.is_empty() {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "upstream_circuit_open",
                "1 while the upstream is at its request limit (limits.max_requests): new requests are refused with circuit_open",
                None,
                gauge.metric_type(),
            )?;
            for cluster in &clusters {
                let open = cluster
                    .resilience
                    .at_request_limit(cluster.settings.resilience.max_requests);
                ConstGauge::new(i64::from(open))
                    .encode(family.encode_family(&[("upstream", &**cluster.name())])?)?;
            }
        }
        Ok(())
    }
}

/// The edge listeners' public certificates, read at scrape time.
#[derive(Debug)]
struct EdgeCertCollector(Arc<crate::tls::public::CertRegistry>);

impl Collector for EdgeCertCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let certs = self.0.expiries();
        if certs.is_empty() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "edge_cert_expiry",
            "Time until an edge listener's public certificate expires, by certificate file",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?;
        for (cert, not_after) in certs {
            ConstGauge::new(not_after.saturating_sub(now))
                .encode(family.encode_family(&[("cert", cert.as_str())])?)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_service_names() {
        assert_eq!(service_name("spiffe://mesh.local/svc/billing"), "billing");
        assert_eq!(service_name("spiffe://mesh.local/ns/a/sa/b"), "ns/a/sa/b");
        assert_eq!(service_name("billing"), "billing");
        let a = Caller::Peer(Arc::from("spiffe://a.test/svc/web"));
        let b = Caller::Peer(Arc::from("spiffe://b.test/svc/web"));
        assert_eq!(a, b, "one series per service name");
        assert_eq!(Caller::of(Direction::Outbound, None), Caller::Absent);
        assert_eq!(Caller::of(Direction::Inbound, None), Caller::Unknown);
    }

    #[test]
    fn series_found_by_address_or_by_text_count_as_one() {
        let metrics = Metrics::new();
        let outbound = |upstream: &Arc<str>, status| {
            metrics.request_labels(
                Direction::Outbound,
                Some(upstream),
                None,
                Caller::Absent,
                status,
            )
        };
        let finish = |labels: &RequestLabels| {
            metrics.count_request(labels);
            metrics.observe_duration(labels, Duration::from_millis(2));
        };
        let upstream: Arc<str> = Arc::from("orders");
        for _ in 0..3 {
            finish(&outbound(&upstream, 200));
        }
        // The same name from a reloaded config: another string, one series.
        finish(&outbound(&Arc::from("orders"), 200));
        // Another status is another series; counted only, it has no histogram.
        metrics.count_request(&outbound(&upstream, 503));
        // Callers with other identities are other series.
        for peer in ["spiffe://mesh/ns/a/sa/web", "spiffe://mesh/ns/a/sa/jobs"] {
            let caller = Caller::Peer(Arc::from(peer));
            metrics.count_request(&metrics.request_labels(
                Direction::Inbound,
                None,
                None,
                caller,
                200,
            ));
        }
        let text = metrics.encode();
        let value = |prefix: &str, needle: &str| {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(needle))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            value(
                "mesh_requests_total{",
                "status=\"200\",status_class=\"2xx\"} 4"
            ),
            ["4"],
            "{text}"
        );
        assert_eq!(
            value("mesh_requests_total{", "upstream=\"orders\",status=\"503\""),
            ["1"],
            "{text}"
        );
        assert_eq!(
            value(
                "mesh_request_duration_seconds_count{",
                "upstream=\"orders\""
            ),
            ["4"],
            "{text}"
        );
        assert_eq!(
            value("mesh_requests_total{direction=\"inbound\"", "caller="),
            ["1", "1"],
            "{text}"
        );
    }

    #[test]
    fn consumer_labels_are_capped() {
        let metrics = Metrics::new();
        for i in 0..MAX_CONSUMERS {
            let name: Arc<str> = Arc::from(format!("c{i}"));
            assert_eq!(metrics.consumer_label(&name), name);
        }
        let late: Arc<str> = Arc::from("late");
        assert_eq!(&*metrics.consumer_label(&late), OTHER_CONSUMER);
        let first: Arc<str> = Arc::from("c0");
        assert_eq!(metrics.consumer_label(&first), first, "known names stay");
        let labels = metrics
            .request_labels(Direction::Edge, None, None, Caller::Absent, 200)
            .with_consumer(metrics.consumer_label(&first));
        metrics.count_request(&labels);
        assert!(metrics.encode().contains(
            "mesh_requests_total{direction=\"edge\",upstream=\"none\",consumer=\"c0\",status=\"200\",status_class=\"2xx\"} 1"
        ));
    }

    #[test]
    fn the_exposition_ends_once_after_the_process_metrics() {
        let metrics = Metrics::new();
        metrics.policy_denial(Direction::Inbound, None, "authz", "forbidden");
        metrics.policy_denial(Direction::Edge, Some(&Arc::from("shop")), "cors", "origin");
        let labels = metrics
            .request_labels(Direction::Outbound, None, None, Caller::Absent, 200)
            .with_grpc_status(99);
        metrics.count_request(&labels);
        let text = metrics.encode();
        assert!(text.contains(
            "mesh_policy_denials_total{direction=\"inbound\",policy=\"authz\",reason=\"forbidden\"} 1"
        ));
        assert!(text.contains(
            "mesh_policy_denials_total{direction=\"edge\",route=\"shop\",policy=\"cors\",reason=\"origin\"} 1"
        ), "{text}");
        assert!(text.contains(
            "mesh_requests_total{direction=\"outbound\",upstream=\"none\",status=\"200\",status_class=\"2xx\",grpc_status=\"2\"} 1"
        ), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
