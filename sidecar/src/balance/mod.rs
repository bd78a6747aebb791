//! Choosing the endpoint for each request or connection, below routing and
//! above the connection pool. Reads the cluster's [`EndpointSet`]; keeps per
//! endpoint counters ([`EndpointState`]) that survive endpoint-list changes
//! and that the admin API shows. Policy so far: weighted round robin.
//! Errors: none; `pick` returns `None` when the cluster has no endpoint.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::discovery::{Endpoint, EndpointSet};

/// Largest weight honoured; bounds the size of the round-robin wheel.
const MAX_WEIGHT: u32 = 128;

/// An endpoint and what the proxy knows of it.
#[derive(Debug)]
pub struct EndpointState {
    /// Where to connect.
    pub addr: std::net::SocketAddr,
    /// Relative share of traffic.
    pub weight: u32,
    /// Requests and tunnels in flight.
    pub active: AtomicU64,
    /// Open upstream connections (pooled HTTP and opaque TCP).
    pub connections: AtomicU64,
}

impl EndpointState {
    /// A state with zeroed counters.
    pub fn new(endpoint: &Endpoint) -> Self {
        Self {
            addr: endpoint.addr,
            weight: endpoint.weight,
            active: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    /// Counts one request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Decrements the endpoint's in-flight count on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<EndpointState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

struct View {
    source: Arc<[Endpoint]>,
    endpoints: Vec<Arc<EndpointState>>,
    /// Indexes into `endpoints`, each repeated by its weight.
    wheel: Vec<usize>,
}

/// Weighted round robin over a live endpoint set.
pub struct Balancer {
    set: EndpointSet,
    view: ArcSwap<View>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over `set`.
    pub fn new(set: EndpointSet) -> Self {
        let view = View::build(set.current(), &[]);
        Self {
            set,
            view: ArcSwap::from_pointee(view),
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, or `None` when there is none.
    pub fn pick(&self) -> Option<Arc<EndpointState>> {
        let view = self.refresh();
        if view.wheel.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % view.wheel.len();
        Some(view.endpoints[view.wheel[turn]].clone())
    }

    /// Every endpoint with its state, for the admin API.
    pub fn endpoints(&self) -> Vec<Arc<EndpointState>> {
        self.refresh().endpoints.clone()
    }

    /// Where the endpoints come from.
    pub fn source(&self) -> &'static str {
        self.set.source()
    }

    /// The view of the current endpoint list, rebuilt when discovery changed it.
    fn refresh(&self) -> Arc<View> {
        let view = self.view.load_full();
        let current = self.set.current();
        if Arc::ptr_eq(&view.source, &current) {
            return view;
        }
        let rebuilt = Arc::new(View::build(current, &view.endpoints));
        self.view.store(rebuilt.clone());
        rebuilt
    }
}

impl View {
    fn build(source: Arc<[Endpoint]>, previous: &[Arc<EndpointState>]) -> Self {
        let endpoints: Vec<Arc<EndpointState>> = source
            .iter()
            .map(|ep| {
                previous
                    .iter()
                    .find(|old| old.addr == ep.addr && old.weight == ep.weight)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(ep)))
            })
            .collect();
        let mut wheel = Vec::new();
        // Interleave by weight so heavy endpoints are spread through the turn.
        let max = endpoints
            .iter()
            .map(|e| e.weight.clamp(1, MAX_WEIGHT))
            .max()
            .unwrap_or(0);
        for round in 0..max {
            for (i, ep) in endpoints.iter().enumerate() {
                if round < ep.weight.clamp(1, MAX_WEIGHT) {
                    wheel.push(i);
                }
            }
        }
        Self {
            source,
            endpoints,
            wheel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32) -> Endpoint {
        Endpoint {
            addr: ([127, 0, 0, 1], port).into(),
            weight,
        }
    }

    #[test]
    fn weighted_round_robin_shares_by_weight() {
        let balancer = Balancer::new(EndpointSet::fixed(vec![ep(1, 1), ep(2, 3)]));
        let mut counts = [0, 0];
        for _ in 0..400 {
            let picked = balancer.pick().unwrap();
            counts[usize::from(picked.addr.port() == 2)] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        assert!(Balancer::new(EndpointSet::fixed(vec![])).pick().is_none());
    }
}
