//! Resilience, between routing and the balancer: circuit-breaker limits,
//! the request deadline, and retries within a budget. Retries sit above the
//! balancer, so each attempt may pick another endpoint.
//! Reads: the routed cluster's `ResilienceSettings` and state (budget,
//! in-flight counts). Writes: `mesh_resilience_total{upstream,decision}`.
//! Errors: [`ResilienceError`] — `CircuitOpen` (503 `circuit_open`),
//! `Timeout` (504 `upstream_timeout`).

pub mod budget;
pub mod deadline;
pub mod health;
pub mod outlier;
mod retry;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::Request;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::ResilienceSettings;
use crate::http::{Body, HttpService};
use crate::route::Target;
use crate::telemetry::Metrics;
use budget::RetryBudget;

/// The proxy refused or gave up on a request for the upstream's sake.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError {
    /// The cluster has as many requests in flight as its limit allows.
    #[error("the upstream is at its request limit")]
    CircuitOpen,
    /// No response head within the request (or last per-try) deadline.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// A retry was due but the cluster has as many retries in flight as allowed.
    #[error("the upstream is at its retry limit")]
    RetryLimit,
}

/// A cluster's resilience state.
#[derive(Debug)]
pub struct ClusterState {
    /// Retries allowed.
    pub budget: RetryBudget,
    in_flight: AtomicU32,
    retries: AtomicU32,
}

impl ClusterState {
    /// Fresh state for `settings`.
    pub fn new(settings: &ResilienceSettings) -> Self {
        Self {
            budget: RetryBudget::new(
                settings.retry.budget_ratio,
                settings.retry.budget_min_per_second,
            ),
            in_flight: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        }
    }

    /// Whether requests in flight have reached `max_requests`, so new ones
    /// are refused (`circuit_open`); read by the metrics at scrape time.
    pub fn at_request_limit(&self, max_requests: u32) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= max_requests
    }
}

/// Holds one unit of a limit until dropped.
struct Slot<'a>(&'a AtomicU32);

impl<'a> Slot<'a> {
    fn acquire(counter: &'a AtomicU32, limit: u32) -> Option<Self> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The resilience layer.
pub fn layer(metrics: Arc<Metrics>) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let metrics = metrics.clone();
        crate::http::direct_fn(move |req: Request<Body>| {
            let Some(target) = req.extensions().get::<Target>().cloned() else {
                return inner.call_ref(req);
            };
            let inner = inner.clone();
            let metrics = metrics.clone();
            Box::pin(async move {
                let cluster = &target.cluster;
                let settings = &cluster.settings.resilience;
                let Some(_slot) =
                    Slot::acquire(&cluster.resilience.in_flight, settings.max_requests)
                else {
                    metrics.resilience(cluster.name(), "circuit_open");
                    return Err(ResilienceError::CircuitOpen.into());
                };
                // A gRPC caller's own deadline counts too; the earlier one wins.
                let timeout = match (
                    settings.request_timeout,
                    deadline::grpc_timeout(req.headers()),
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let expires = timeout.map(|t| crate::clock::now() + t);
                let attempts = retry::run(inner, req, cluster, &metrics, expires);
                match expires {
                    None => attempts.await,
                    Some(expires) => match tokio::time::timeout_at(expires, attempts).await {
                        Ok(result) => result,
                        Err(_) => {
                            metrics.resilience(cluster.name(), "request_timeout");
                            Err(ResilienceError::Timeout.into())
                        }
                    },
                }
            })
        })
    })
}
