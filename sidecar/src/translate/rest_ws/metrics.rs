//! REST → WebSocket counters, one set per process (the connections are the
//! settings', not a listener's): open and opened connections, requests by
//! outcome. Registered by `telemetry::metrics`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process's REST → WebSocket metrics.
#[derive(Clone, Default)]
pub struct RestWsMetrics {
    /// Pooled WebSocket connections open now.
    pub open: Gauge,
    /// Pooled WebSocket connections opened.
    pub opened: Counter,
    /// Requests by outcome.
    pub requests: Family<OutcomeLabels, Counter>,
}

/// `outcome` label: `reply`, `timeout`, `connection_lost`, `refused`, `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How the request ended.
    pub outcome: &'static str,
}

impl RestWsMetrics {
    /// Registers the families under `registry` (prefixed `mesh_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rest_ws_connections_open",
            "REST → WebSocket pooled connections open",
            self.open.clone(),
        );
        registry.register(
            "rest_ws_connections_opened",
            "REST → WebSocket pooled connections opened",
            self.opened.clone(),
        );
        registry.register(
            "rest_ws_requests",
            "REST → WebSocket requests by outcome (reply, timeout, connection_lost, refused, error)",
            self.requests.clone(),
        );
    }

    /// Counts a request's outcome.
    pub(super) fn outcome(&self, outcome: &'static str) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static RestWsMetrics {
    static METRICS: OnceLock<RestWsMetrics> = OnceLock::new();
    METRICS.get_or_init(RestWsMetrics::default)
}
