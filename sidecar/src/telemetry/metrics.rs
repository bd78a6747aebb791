//! Prometheus metrics, served as text on the admin API's `/metrics`.
//! Families are created once at start; layers and pools hold handles to
//! their series, so the hot path only increments atomics.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::access_log::AccessLog;
use crate::connect::ConnectionMetrics;
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

/// `route` is written only when a route matched (an absent label and an
/// empty one are the same series to Prometheus); route names come from the
/// config, so the label stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RequestLabels {
    direction: &'static str,
    upstream: Arc<str>,
    route: Arc<str>,
    status: u16,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", &*self.upstream).encode(encoder.encode_label())?;
        if !self.route.is_empty() {
            ("route", &*self.route).encode(encoder.encode_label())?;
        }
        ("status", self.status).encode(encoder.encode_label())
    }
}

/// `route` as in [`RequestLabels`].
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct DurationLabels {
    direction: &'static str,
    upstream: Arc<str>,
    route: Arc<str>,
}

impl EncodeLabelSet for DurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", &*self.upstream).encode(encoder.encode_label())?;
        if !self.route.is_empty() {
            ("route", &*self.route).encode(encoder.encode_label())?;
        }
        Ok(())
    }
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
    /// `deny`, `listener_limit`, `ip_limit`, `global_limit` or `proxy_protocol`.
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

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// The upstream label of unrouted requests, made once.
    no_upstream: Arc<str>,
    /// The route label of requests no edge route matched (empty), made once.
    no_route: Arc<str>,
    /// The access log's line queue; its writer task is `access_log::AccessLog::spawn_writer`.
    access_log: AccessLog,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
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
    transparent_passthrough: Counter,
    udp_flows: Family<UpstreamLabels, Counter>,
    udp_flows_open: Family<UpstreamLabels, Gauge>,
    udp_flows_refused: Family<UpstreamLabels, Counter>,
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by direction, upstream and status",
            requests.clone(),
        );
        let durations =
            DurationFamily::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "request_duration",
            "Time to response head",
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
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind or could not write",
            access_log_dropped.clone(),
        );
        Self {
            registry,
            no_upstream: Arc::from(NO_UPSTREAM),
            no_route: Arc::from(""),
            access_log: AccessLog::new(access_log_dropped),
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

    /// One finished request (its response head known), under its upstream
    /// and edge route.
    pub fn record_request(
        &self,
        direction: Direction,
        upstream: Option<&Arc<str>>,
        route: Option<&Arc<str>>,
        status: u16,
        elapsed: Duration,
    ) {
        let upstream = upstream.unwrap_or(&self.no_upstream).clone();
        let route = route.unwrap_or(&self.no_route).clone();
        let direction = direction.as_str();
        self.durations
            .get_or_create(&DurationLabels {
                direction,
                upstream: upstream.clone(),
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                upstream,
                route,
                status,
            })
            .inc();
    }

    /// The access log's line queue.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
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

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
