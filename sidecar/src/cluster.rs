//! A cluster: one upstream service as the data path sees it, its endpoint
//! set (from discovery), its balancer and its connection pool. Clusters
//! outlive config reloads when their settings do not change, so pooled
//! connections and endpoint counters carry over.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mesh_api::admin::{ClusterInfo, EndpointInfo};

use crate::balance::Balancer;
use crate::config::UpstreamSettings;
use crate::connect::{ConnectionLimits, Pool, Security, UpstreamTls};
use crate::discovery::{DiscoveryStatus, EndpointSet};
use crate::resilience::health::{self, HealthChecker};
use crate::resilience::ClusterState;
use crate::telemetry::Metrics;
use crate::tls::IdentityStore;

/// An upstream cluster.
pub struct Cluster {
    /// What it was built from; equal settings reuse the cluster on reload.
    pub settings: UpstreamSettings,
    /// Endpoint choice (shared with the health checker).
    pub balancer: Arc<Balancer>,
    /// Connections to its endpoints.
    pub pool: Pool,
    /// Retry budget and circuit-breaker counts.
    pub resilience: ClusterState,
    /// What DNS discovery last did (`None` for static endpoints).
    discovery: Option<DiscoveryStatus>,
    /// Active health checks; the task stops when this drops with the cluster.
    _health: Option<HealthChecker>,
}

impl Cluster {
    /// Builds a cluster from its settings.
    pub fn new(
        settings: UpstreamSettings,
        metrics: &Metrics,
        identity: &Arc<IdentityStore>,
    ) -> Self {
        // Mesh mTLS, or public TLS (its configs built here, once per cluster).
        let tls = match (&settings.tls, &settings.public_tls) {
            (Some(expected), _) => Some(Security::Mesh(UpstreamTls {
                identity: identity.clone(),
                expected: expected.clone(),
            })),
            (None, Some(public)) => Some(Security::Public(Arc::new(
                crate::tls::upstream::PublicTls::new(public, &settings.name),
            ))),
            (None, None) => None,
        };
        // A DNS source's resolver task lives as long as this set (in the balancer).
        let (endpoints, discovery) =
            EndpointSet::discover(&settings.discovery, &settings.name, metrics);
        let balancer = Balancer::new(
            endpoints,
            settings.balance.clone(),
            settings.resilience.outlier.panic_below_percent,
        )
        .with_locality(settings.locality.clone());
        let pool = Pool::new(
            settings.connect_timeout,
            settings.idle_timeout,
            metrics.upstream_connections(&settings.name),
            tls,
            ConnectionLimits {
                max_connections: settings.resilience.max_connections,
                max_pending: settings.resilience.max_pending,
            },
        );
        let balancer = Arc::new(balancer);
        let health = settings.health.clone().map(|health| {
            health::spawn(
                health,
                settings.name.clone(),
                balancer.clone(),
                pool.clone(),
                metrics.resilience_decisions(&settings.name),
            )
        });
        Self {
            resilience: ClusterState::new(&settings.resilience),
            settings,
            balancer,
            pool,
            discovery,
            _health: health,
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    /// The admin API's view of the cluster.
    pub fn info(&self) -> ClusterInfo {
        ClusterInfo {
            name: self.settings.name.to_string(),
            protocol: format!("{:?}", self.settings.protocol).to_ascii_lowercase(),
            source: self.balancer.source().to_string(),
            endpoints: self
                .balancer
                .endpoints()
                .iter()
                .map(|ep| EndpointInfo {
                    addr: ep.addr.to_string(),
                    weight: ep.weight,
                    state: ep.state().into(),
                    active_requests: ep.active.load(Ordering::Relaxed),
                    connections: ep.connections.load(Ordering::Relaxed),
                    latency_ms: ep.latency().as_secs_f64() * 1000.0,
                })
                .collect(),
            discovery: self.discovery.as_ref().map(DiscoveryStatus::snapshot),
        }
    }
}
