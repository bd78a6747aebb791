//! Choosing the endpoint for each request or connection, below routing and
//! retries, above the connection pool. Reads the cluster's [`EndpointSet`];
//! keeps per-endpoint state ([`EndpointState`]: in-flight count, open
//! connections, peak-EWMA latency) that survives endpoint-list changes and
//! that the admin API shows.
//! Policies: power of two random choices by peak-EWMA latency × load
//! (default), weighted round robin, least request (P2C by in-flight work
//! per unit of weight), and ring hash for sticky sessions ([`sticky`]).
//! Errors: none; `pick` returns `None` when the cluster has no endpoint.

mod ewma;
pub mod sticky;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::LocalitySettings;
use crate::discovery::{Endpoint, EndpointSet};
use ewma::PeakEwma;

pub use sticky::HashKey;

/// How the balancer chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Power of two random choices by peak-EWMA latency × load.
    P2cEwma,
    /// Weighted round robin.
    RoundRobin,
    /// Power of two random choices by in-flight work per weight.
    LeastRequest,
    /// Consistent hashing of a request key; without a key, like `P2cEwma`.
    RingHash(HashKey),
}

/// Points on the hash ring per unit of weight.
const RING_POINTS: u32 = 64;

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
    latency: PeakEwma,
    /// Active health checking says the endpoint is up (true until a check says otherwise).
    healthy: AtomicBool,
    /// Drained by an operator: no new requests, whatever else holds.
    maintenance: AtomicBool,
    /// Outlier ejection: out of rotation until this instant (ms on the
    /// process clock; 0 = not ejected).
    ejected_until_ms: AtomicU64,
    /// Times this endpoint has been ejected (each ejection lasts longer).
    pub ejections: AtomicU32,
    /// Consecutive 5xx answers or resets (outlier detection).
    pub consecutive_5xx: AtomicU32,
    /// Consecutive failed connects (outlier detection).
    pub consecutive_connect_failures: AtomicU32,
}

impl EndpointState {
    /// A state with zeroed counters.
    pub fn new(endpoint: &Endpoint) -> Self {
        Self {
            addr: endpoint.addr,
            weight: endpoint.weight,
            active: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            latency: PeakEwma::new(),
            healthy: AtomicBool::new(true),
            maintenance: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_connect_failures: AtomicU32::new(0),
        }
    }

    /// Sets what active health checking concluded.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether active health checking considers the endpoint up.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Takes the endpoint out of rotation for `duration`.
    pub fn eject_for(&self, duration: Duration) {
        let until = clock_ms()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether outlier ejection has the endpoint out of rotation now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// Healthy and not ejected: the balancer may choose it (maintenance
    /// is checked apart: it holds even in panic mode).
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// Puts the endpoint in maintenance (no new requests) or takes it out.
    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.store(on, Ordering::Relaxed);
    }

    /// Whether an operator has drained the endpoint.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(Ordering::Relaxed)
    }

    /// `maintenance`, `unhealthy`, `ejected` or `healthy`, for the admin API.
    pub fn state(&self) -> &'static str {
        if self.in_maintenance() {
            "maintenance"
        } else if !self.is_healthy() {
            "unhealthy"
        } else if self.is_ejected() {
            "ejected"
        } else {
            "healthy"
        }
    }

    /// Counts one request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Records the time an endpoint took to answer (response head).
    pub fn observe(&self, rtt: Duration) {
        self.latency.observe(rtt, tokio::time::Instant::now());
    }

    /// [`observe`](Self::observe) with the clock already read (`now`).
    pub fn observe_at(&self, rtt: Duration, now: tokio::time::Instant) {
        self.latency.observe(rtt, now);
    }

    /// The current peak-EWMA latency estimate.
    pub fn latency(&self) -> Duration {
        self.latency.estimate()
    }

    /// Peak-EWMA cost: expected latency × (work in flight + 1), per unit of weight.
    fn ewma_cost(&self) -> f64 {
        let load = self.active.load(Ordering::Relaxed) as f64 + 1.0;
        self.latency.estimate().as_secs_f64() * load / f64::from(self.weight.max(1))
    }

    /// Least-request cost: in-flight requests and open opaque connections per unit of weight.
    fn load_cost(&self) -> f64 {
        (self.active.load(Ordering::Relaxed) as f64 + 1.0) / f64::from(self.weight.max(1))
    }
}

/// Milliseconds on the process clock (tokio's, so tests can pause it).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    u64::try_from(
        tokio::time::Instant::now()
            .saturating_duration_since(start)
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
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
    /// Indexes into `endpoints`, each repeated by its weight (round robin).
    wheel: Vec<usize>,
    /// (point, index into `endpoints`), sorted by point (ring hash).
    ring: Vec<(u64, usize)>,
}

/// Endpoint choice over a live endpoint set.
pub struct Balancer {
    set: EndpointSet,
    policy: Policy,
    panic_below_percent: u8,
    locality: Option<LocalitySettings>,
    view: ArcSwap<View>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over `set` with `policy`. Below `panic_below_percent`
    /// available endpoints, every endpoint is used.
    pub fn new(set: EndpointSet, policy: Policy, panic_below_percent: u8) -> Self {
        let view = View::build(set.current(), &[]);
        Self {
            set,
            policy,
            panic_below_percent,
            locality: None,
            view: ArcSwap::from_pointee(view),
            next: AtomicUsize::new(0),
        }
    }

    /// Prefers endpoints in this proxy's zone (see [`LocalitySettings`]).
    pub fn with_locality(mut self, locality: Option<LocalitySettings>) -> Self {
        self.locality = locality;
        self
    }

    /// The endpoint for the next request, or `None` when there is none.
    pub fn pick(&self) -> Option<Arc<EndpointState>> {
        self.pick_avoiding(&[], None)
    }

    /// The policy (for the sticky key a request needs).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Like [`pick`](Self::pick), but not one of `avoid` (the endpoints a
    /// retried request already failed on) while another is available.
    /// With ring hash, `hash` is the request's sticky key.
    pub fn pick_avoiding(
        &self,
        avoid: &[std::net::SocketAddr],
        hash: Option<u64>,
    ) -> Option<Arc<EndpointState>> {
        let view = self.refresh();
        let every = &view.endpoints;
        // Unavailable endpoints (unhealthy, ejected) are skipped, unless so
        // few are left that the rest would be overwhelmed: then all are used
        // (panic mode), as a degraded cluster beats an empty one. Endpoints
        // in maintenance are skipped even then: an operator drained them.
        let serving = every.iter().filter(|e| !e.in_maintenance()).count();
        let up = every
            .iter()
            .filter(|e| !e.in_maintenance() && e.is_available())
            .count();
        let panic = up * 100 < serving * usize::from(self.panic_below_percent);
        let usable: Vec<Arc<EndpointState>>;
        let all = if up == every.len() {
            every
        } else {
            let keep = |e: &&Arc<EndpointState>| !e.in_maintenance() && (panic || e.is_available());
            usable = every.iter().filter(keep).cloned().collect();
            &usable
        };
        // Locality: stay in this proxy's zone while enough of it is available.
        let local: Vec<Arc<EndpointState>>;
        let all = match &self.locality {
            Some(locality) => {
                let in_zone = |e: &Arc<EndpointState>| {
                    locality
                        .zones
                        .iter()
                        .any(|(addr, zone)| *addr == e.addr && *zone == locality.zone)
                };
                let zone_total = every.iter().filter(|e| in_zone(e)).count();
                local = all.iter().filter(|e| in_zone(e)).cloned().collect();
                let enough =
                    local.len() * 100 >= zone_total * usize::from(locality.min_local_percent);
                if !local.is_empty() && enough {
                    &local
                } else {
                    all
                }
            }
            None => all,
        };
        let fresh: Vec<Arc<EndpointState>>;
        let endpoints = if avoid.is_empty() {
            all
        } else {
            fresh = all
                .iter()
                .filter(|e| !avoid.contains(&e.addr))
                .cloned()
                .collect();
            if fresh.is_empty() {
                all
            } else {
                &fresh
            }
        };
        match (&self.policy, endpoints.len()) {
            (_, 0) => None,
            (_, 1) => Some(endpoints[0].clone()),
            (Policy::RoundRobin, _) => {
                // Walk the wheel from the next turn to the first usable endpoint not avoided.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..view.wheel.len())
                    .map(|step| &every[view.wheel[(start + step) % view.wheel.len()]])
                    .find(|e| !avoid.contains(&e.addr) && all.iter().any(|a| Arc::ptr_eq(a, e)))
                    .or_else(|| endpoints.first())
                    .cloned()
            }
            (Policy::RingHash(_), _) if hash.is_some() => {
                let hash = hash.unwrap_or_default();
                // The first point at or after the hash whose endpoint is usable and not avoided.
                let start = view.ring.partition_point(|(point, _)| *point < hash);
                (0..view.ring.len())
                    .map(|step| &every[view.ring[(start + step) % view.ring.len()].1])
                    .find(|e| {
                        !avoid.contains(&e.addr) && endpoints.iter().any(|a| Arc::ptr_eq(a, e))
                    })
                    .or_else(|| endpoints.first())
                    .cloned()
            }
            (Policy::P2cEwma | Policy::RingHash(_), n) => {
                Some(p2c(endpoints, n, EndpointState::ewma_cost))
            }
            (Policy::LeastRequest, n) => Some(p2c(endpoints, n, EndpointState::load_cost)),
        }
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

/// Power of two choices: two distinct endpoints at random, the cheaper wins.
fn p2c(
    endpoints: &[Arc<EndpointState>],
    n: usize,
    cost: fn(&EndpointState) -> f64,
) -> Arc<EndpointState> {
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    let (a, b) = (&endpoints[a], &endpoints[b]);
    if cost(b) < cost(a) {
        b.clone()
    } else {
        a.clone()
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
        let mut ring: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(i, ep)| {
                let points = RING_POINTS * ep.weight.clamp(1, MAX_WEIGHT);
                (0..points).map(move |n| (sticky::hash(&(ep.addr, n)), i))
            })
            .collect();
        ring.sort_unstable();
        Self {
            source,
            endpoints,
            wheel,
            ring,
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

    fn share(balancer: &Balancer, rounds: usize, port: u16) -> usize {
        (0..rounds)
            .filter(|_| balancer.pick().unwrap().addr.port() == port)
            .count()
    }

    #[test]
    fn weighted_round_robin_shares_by_weight() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 3)]),
            Policy::RoundRobin,
            50,
        );
        assert_eq!(share(&balancer, 400, 2), 300);
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1), ep(3, 1)]),
            Policy::RoundRobin,
            50,
        );
        for port in 1..=3 {
            assert_eq!(share(&balancer, 300, port), 100);
        }
    }

    #[test]
    fn p2c_ewma_avoids_the_slow_endpoint() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1), ep(3, 1)]),
            Policy::P2cEwma,
            50,
        );
        for state in balancer.endpoints() {
            let rtt = if state.addr.port() == 3 { 60 } else { 10 };
            state.observe(Duration::from_millis(rtt));
        }
        let slow = share(&balancer, 3000, 3);
        // The slow one loses every comparison it is in: it is never picked.
        assert_eq!(slow, 0, "slow endpoint picked {slow} times");
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1)]),
            Policy::LeastRequest,
            50,
        );
        let busy = balancer
            .endpoints()
            .into_iter()
            .find(|e| e.addr.port() == 1)
            .unwrap();
        let _held: Vec<ActiveGuard> = (0..5).map(|_| busy.start()).collect();
        assert_eq!(share(&balancer, 100, 2), 100);
    }

    #[test]
    fn retries_avoid_endpoints_already_tried() {
        for policy in [Policy::RoundRobin, Policy::P2cEwma, Policy::LeastRequest] {
            let balancer = Balancer::new(
                EndpointSet::fixed(vec![ep(1, 1), ep(2, 1), ep(3, 1)]),
                policy.clone(),
                50,
            );
            let tried = [ep(1, 1).addr, ep(2, 1).addr];
            for _ in 0..50 {
                assert_eq!(
                    balancer.pick_avoiding(&tried, None).unwrap().addr.port(),
                    3,
                    "{policy:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_and_unhealthy_endpoints_are_skipped_until_panic() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1), ep(3, 1), ep(4, 1)]),
            Policy::RoundRobin,
            50,
        );
        let states = balancer.endpoints();
        states[0].eject_for(Duration::from_secs(30));
        states[1].set_healthy(false);
        assert_eq!(
            share(&balancer, 100, 1) + share(&balancer, 100, 2),
            0,
            "half still up: skipped"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(share(&balancer, 100, 1) > 0, "ejection ends");
        states[0].eject_for(Duration::from_secs(30));
        states[2].set_healthy(false);
        assert!(
            share(&balancer, 100, 1) > 0,
            "one of four up is below 50%: panic mode uses all"
        );
    }

    #[test]
    fn maintenance_drains_even_in_panic_mode() {
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1)]),
            Policy::RoundRobin,
            50,
        );
        let states = balancer.endpoints();
        states[0].set_maintenance(true);
        states[1].set_healthy(false);
        assert_eq!(
            share(&balancer, 50, 2),
            50,
            "panic mode, but never the drained endpoint"
        );
        states[1].set_maintenance(true);
        assert!(
            balancer.pick().is_none(),
            "everything drained: nothing to pick"
        );
    }

    #[test]
    fn locality_keeps_traffic_in_zone_until_too_few_are_left() {
        let zone = |port: u16, z: &str| (ep(port, 1).addr, Arc::from(z));
        let locality = LocalitySettings {
            zone: Arc::from("a"),
            min_local_percent: 50,
            zones: vec![zone(1, "a"), zone(2, "a"), zone(3, "b")],
        };
        let balancer = Balancer::new(
            EndpointSet::fixed(vec![ep(1, 1), ep(2, 1), ep(3, 1)]),
            Policy::RoundRobin,
            0,
        )
        .with_locality(Some(locality));
        assert_eq!(
            share(&balancer, 60, 3),
            0,
            "zone b gets nothing while zone a is up"
        );
        let states = balancer.endpoints();
        states[0].set_healthy(false);
        assert_eq!(share(&balancer, 60, 3), 0, "half of zone a is still enough");
        states[1].set_healthy(false);
        assert_eq!(share(&balancer, 60, 3), 60, "zone a is down: spill over");
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        assert!(
            Balancer::new(EndpointSet::fixed(vec![]), Policy::P2cEwma, 50)
                .pick()
                .is_none()
        );
    }
}
