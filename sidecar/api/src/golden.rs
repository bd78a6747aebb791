//! Golden signals (requests per second, success rate, latency percentiles)
//! and the service graph, computed from the request metrics of one or more
//! proxies: the proxy's `/dashboard/data` and `mesh-ctl stat`, `top`,
//! `graph` and `dashboard` all use these functions, so they agree with each
//! other and with `/metrics`.
//! Reads: parsed expositions ([`crate::prom`]) of `mesh_requests_total`
//! (labels `direction`, `upstream`, `route`, `caller`, `status`,
//! `status_class`, `grpc_status`; others ignored) and
//! `mesh_request_duration_seconds_bucket`, and each proxy's effective
//! config (its service, its upstreams' SPIFFE identities).
//! Writes: [`Signals`] rows, a [`Graph`], a [`Dashboard`] document.
//! Errors: none; a series without the labels it needs is left out.
//!
//! Rates and percentiles come from two scrapes: counters and histogram
//! buckets are subtracted (a counter that went down restarted from zero),
//! RPS is requests / seconds between the scrapes, success is the share of
//! requests that were not failures (HTTP 5xx, or a gRPC status a server
//! fault gives: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
//! UNAVAILABLE, DATA_LOSS), and a percentile is interpolated linearly
//! within its bucket as Prometheus' `histogram_quantile` does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::prom::{Exposition, Sample};

/// The request counter.
pub const REQUESTS: &str = "mesh_requests_total";
/// The buckets of the time-to-response-head histogram.
pub const DURATION_BUCKETS: &str = "mesh_request_duration_seconds_bucket";

/// The dashboard: one self-contained HTML page (inline CSS and JS, no
/// external URL) that polls `/dashboard/data` (a [`Dashboard`]) every 2 s.
/// Served by the proxy's admin API and by `mesh-ctl dashboard`.
pub const DASHBOARD_PAGE: &str = include_str!("../assets/dashboard.html");

/// The upstream label of requests no upstream claimed.
const NO_UPSTREAM: &str = "none";
/// The caller label of inbound requests without a verified identity.
const UNKNOWN_CALLER: &str = "unknown";

/// What a series is about; labels not named here are summed over.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SeriesKey {
    direction: String,
    route: String,
    upstream: String,
    caller: String,
}

impl SeriesKey {
    fn of(sample: &Sample) -> Option<SeriesKey> {
        let label = |name| sample.label(name).unwrap_or_default().to_string();
        Some(SeriesKey {
            direction: sample.label("direction")?.to_string(),
            route: label("route"),
            upstream: label("upstream"),
            caller: label("caller"),
        })
    }
}

/// Request counts and latency buckets of one series (or a sum of them).
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    requests: f64,
    failures: f64,
    /// `(le, cumulative count)`, in the order the exposition lists them.
    buckets: Vec<(f64, f64)>,
}

impl Counts {
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(l, _)| *l == le) {
            Some((_, c)) => *c += count,
            None => self.buckets.push((le, count)),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.failures += other.failures;
        for &(le, count) in &other.buckets {
            self.add_bucket(le, count);
        }
    }

    /// `self - before`; a counter lower than before restarted from zero.
    fn since(&self, before: Option<&Counts>) -> Counts {
        let Some(before) = before else {
            return self.clone();
        };
        let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
        Counts {
            requests: delta(self.requests, before.requests),
            failures: delta(self.failures, before.failures),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, count)| {
                    let then = before
                        .buckets
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |&(_, c)| c);
                    (le, delta(count, then))
                })
                .collect(),
        }
    }
}

/// One proxy's request metrics at one moment, and who it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// The proxy's `service`.
    pub service: String,
    /// Upstream name → the service its SPIFFE identity names.
    pub upstream_services: BTreeMap<String, String>,
    series: BTreeMap<SeriesKey, Counts>,
}

impl Scrape {
    /// Reads `metrics` of the proxy whose effective config (the `config`
    /// of `GET /config`) is `config`.
    pub fn new(config: &serde_json::Value, metrics: &Exposition) -> Scrape {
        let mut series: BTreeMap<SeriesKey, Counts> = BTreeMap::new();
        for sample in metrics.named(REQUESTS) {
            if let Some(key) = SeriesKey::of(sample) {
                let counts = series.entry(key).or_default();
                counts.requests += sample.value;
                if is_failure(sample) {
                    counts.failures += sample.value;
                }
            }
        }
        for sample in metrics.named(DURATION_BUCKETS) {
            let le = sample.label("le").and_then(parse_le);
            if let (Some(key), Some(le)) = (SeriesKey::of(sample), le) {
                series.entry(key).or_default().add_bucket(le, sample.value);
            }
        }
        let (service, upstream_services) = identities(config);
        Scrape {
            service,
            upstream_services,
            series,
        }
    }

    /// The service a request to `upstream` reaches.
    fn service_of(&self, upstream: &str) -> String {
        self.upstream_services
            .get(upstream)
            .cloned()
            .unwrap_or_else(|| upstream.to_string())
    }
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// The proxy's service, and the service each of its upstreams names.
fn identities(config: &serde_json::Value) -> (String, BTreeMap<String, String>) {
    let service = config["service"].as_str().unwrap_or_default().to_string();
    let mut upstreams = BTreeMap::new();
    for section in ["outbound", "edge"] {
        if let Some(map) = config[section]["upstreams"].as_object() {
            for (name, upstream) in map {
                let named = upstream["identity"]
                    .as_str()
                    .and_then(crate::ca::parse_spiffe_id)
                    .map_or(name.as_str(), |(_, svc)| svc);
                upstreams.insert(name.clone(), named.to_string());
            }
        }
    }
    (service, upstreams)
}

/// Whether the request counted by `sample` failed: HTTP 5xx, or a gRPC
/// status that a server fault gives.
fn is_failure(sample: &Sample) -> bool {
    let status_5xx = sample
        .label("status")
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (500..600).contains(&s));
    let class_5xx = sample.label("status_class") == Some("5xx");
    let grpc_failed = sample.label("grpc_status").is_some_and(grpc_failure);
    status_5xx || class_5xx || grpc_failed
}

/// gRPC codes that a server fault gives, by number or name.
fn grpc_failure(code: &str) -> bool {
    const FAILURES: [(&str, &str); 6] = [
        ("2", "UNKNOWN"),
        ("4", "DEADLINE_EXCEEDED"),
        ("12", "UNIMPLEMENTED"),
        ("13", "INTERNAL"),
        ("14", "UNAVAILABLE"),
        ("15", "DATA_LOSS"),
    ];
    FAILURES
        .iter()
        .any(|(number, name)| code == *number || code.eq_ignore_ascii_case(name))
}

/// The `q` quantile (0..=1) of a histogram given as `(le, cumulative
/// count)` buckets, as Prometheus' `histogram_quantile`: linear within the
/// bucket the rank falls in; the `+Inf` bucket answers the highest finite
/// bound. `None` without observations or without a `+Inf` bucket.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let &(last_le, observations) = buckets.last()?;
    if last_le != f64::INFINITY || buckets.len() < 2 || observations <= 0.0 {
        return None;
    }
    // Counts that go down (scrapes racing observations) are made monotonic.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let rank = q.clamp(0.0, 1.0) * observations;
    let b = buckets.iter().position(|&(_, c)| c >= rank)?;
    if b == buckets.len() - 1 {
        return Some(buckets[b - 1].0);
    }
    let (end, count) = buckets[b];
    if b == 0 && end <= 0.0 {
        return Some(end);
    }
    let (start, before) = if b == 0 { (0.0, 0.0) } else { buckets[b - 1] };
    let in_bucket = count - before;
    if in_bucket <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * (rank - before) / in_bucket)
}

/// The golden signals of one service's traffic by direction, route and upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signals {
    /// The proxy's service.
    pub service: String,
    /// `inbound`, `outbound` or `edge`.
    pub direction: String,
    /// The edge route, when one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The upstream (`inbound`-side requests: the local app's cluster).
    pub upstream: String,
    /// Requests in the window (all requests without one).
    pub requests: u64,
    /// Requests since the proxy started: the counter's value now.
    pub total: u64,
    /// Requests per second over the window; `None` without one.
    pub rps: Option<f64>,
    /// Share of requests that did not fail (0..=1); `None` without requests.
    pub success_rate: Option<f64>,
    /// Latency percentiles (time to response head), milliseconds.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A caller → callee edge of the service graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Requests in the window (all requests without one).
    pub requests: u64,
    /// Requests since the measuring proxy started.
    pub total: u64,
    pub rps: Option<f64>,
    pub success_rate: Option<f64>,
}

/// Who calls whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Graph {
    /// Every service: the proxies' and those their edges name.
    pub nodes: Vec<String>,
    pub edges: Vec<Edge>,
}

/// One proxy now, and maybe the same proxy `window` earlier.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub before: Option<&'a Scrape>,
    pub now: &'a Scrape,
}

/// The window between two scrapes, when it is long enough to divide by.
fn seconds(window: Option<Duration>) -> Option<f64> {
    window.map(|w| w.as_secs_f64()).filter(|s| *s > 0.0)
}

fn round(value: f64) -> u64 {
    // Counters are whole numbers; `as` saturates negatives and NaN to 0.
    value.round() as u64
}

fn finish(
    delta: &Counts,
    total: &Counts,
    secs: Option<f64>,
) -> (u64, u64, Option<f64>, Option<f64>) {
    let rps = secs.map(|s| delta.requests / s);
    let success =
        (delta.requests > 0.0).then(|| 1.0 - (delta.failures / delta.requests).clamp(0.0, 1.0));
    (round(delta.requests), round(total.requests), rps, success)
}

/// Per service, direction, route and upstream, the signals over `window`
/// (from `before` to `now` of each pair; without `before`, since start).
pub fn signals(pairs: &[Pair<'_>], window: Option<Duration>) -> Vec<Signals> {
    let secs = seconds(window);
    let mut groups: BTreeMap<(String, String, String, String), (Counts, Counts)> = BTreeMap::new();
    for pair in pairs {
        for (key, now) in &pair.now.series {
            let delta = now.since(pair.before.and_then(|b| b.series.get(key)));
            let group = groups
                .entry((
                    pair.now.service.clone(),
                    key.direction.clone(),
                    key.route.clone(),
                    key.upstream.clone(),
                ))
                .or_default();
            group.0.add(&delta);
            group.1.add(now);
        }
    }
    groups
        .into_iter()
        .map(|((service, direction, route, upstream), (delta, total))| {
            let (requests, total, rps, success_rate) = finish(&delta, &total, secs);
            let ms = |q| quantile(q, &delta.buckets).map(|s| s * 1000.0);
            Signals {
                service,
                direction,
                route: (!route.is_empty()).then_some(route),
                upstream,
                requests,
                total,
                rps,
                success_rate,
                p50_ms: ms(0.5),
                p95_ms: ms(0.95),
                p99_ms: ms(0.99),
            }
        })
        .collect()
}

/// The service graph: outbound and edge requests of proxy P to upstream U
/// are an edge P → (U's service); inbound requests to P with a verified
/// `caller` are an edge caller → P unless the caller's own proxy already
/// measured that edge (the same requests, seen from the calling side).
/// Callers without an identity (`unknown`) cannot be told apart, so they
/// draw no edge.
pub fn graph(pairs: &[Pair<'_>], window: Option<Duration>) -> Graph {
    let secs = seconds(window);
    let mut outbound: BTreeMap<(String, String), (Counts, Counts)> = BTreeMap::new();
    let mut inbound: BTreeMap<(String, String), (Counts, Counts)> = BTreeMap::new();
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for pair in pairs {
        let me = &pair.now.service;
        nodes.insert(me.clone());
        for (key, now) in &pair.now.series {
            let (edges, from, to) = match key.direction.as_str() {
                "inbound" if !key.caller.is_empty() && key.caller != UNKNOWN_CALLER => {
                    (&mut inbound, key.caller.clone(), me.clone())
                }
                "outbound" | "edge" if !key.upstream.is_empty() && key.upstream != NO_UPSTREAM => (
                    &mut outbound,
                    me.clone(),
                    pair.now.service_of(&key.upstream),
                ),
                _ => continue,
            };
            if now.requests <= 0.0 {
                continue;
            }
            let delta = now.since(pair.before.and_then(|b| b.series.get(key)));
            let edge = edges.entry((from, to)).or_default();
            edge.0.add(&delta);
            edge.1.add(now);
        }
    }
    let measured_by_caller: BTreeSet<&String> = pairs.iter().map(|p| &p.now.service).collect();
    for (key, counts) in inbound {
        if !(measured_by_caller.contains(&key.0) && outbound.contains_key(&key)) {
            outbound.entry(key).or_insert(counts);
        }
    }
    let edges = outbound
        .into_iter()
        .map(|((from, to), (delta, total))| {
            nodes.insert(from.clone());
            nodes.insert(to.clone());
            let (requests, total, rps, success_rate) = finish(&delta, &total, secs);
            Edge {
                from,
                to,
                requests,
                total,
                rps,
                success_rate,
            }
        })
        .collect();
    Graph {
        nodes: nodes.into_iter().collect(),
        edges,
    }
}

/// The graph in Graphviz `dot`.
pub fn to_dot(graph: &Graph) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph mesh {\n  rankdir=LR;\n  node [shape=box];\n");
    for node in &graph.nodes {
        out.push_str(&format!("  {};\n", quote(node)));
    }
    for edge in &graph.edges {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quote(&edge.from),
            quote(&edge.to),
            quote(&edge_label(edge))
        ));
    }
    out.push_str("}\n");
    out
}

/// The graph as a Mermaid flowchart.
pub fn to_mermaid(graph: &Graph) -> String {
    // Mermaid ids are plain words; the name is the node's text.
    let id = |name: &str| {
        let index = graph.nodes.iter().position(|n| n == name).unwrap_or(0);
        format!("n{index}")
    };
    let text = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for node in &graph.nodes {
        out.push_str(&format!("  {}[\"{}\"]\n", id(node), text(node)));
    }
    for edge in &graph.edges {
        out.push_str(&format!(
            "  {} -->|\"{}\"| {}\n",
            id(&edge.from),
            text(&edge_label(edge)),
            id(&edge.to)
        ));
    }
    out
}

/// `12.5 rps, 98.00%` over a window; `120 requests, 98.00%` without one.
pub fn edge_label(edge: &Edge) -> String {
    let volume = match edge.rps {
        Some(rps) => format!("{rps:.1} rps"),
        None => format!("{} requests", edge.requests),
    };
    match edge.success_rate {
        Some(rate) => format!("{volume}, {:.2}%", rate * 100.0),
        None => volume,
    }
}

/// One proxy as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyState {
    /// Its admin address (empty when the proxy describes itself).
    pub admin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the dashboard page renders: `GET /dashboard/data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    /// Seconds between the two scrapes the rates come from; `None` (rates
    /// absent) on the first poll.
    pub window_seconds: Option<f64>,
    pub proxies: Vec<ProxyState>,
    pub graph: Graph,
    pub signals: Vec<Signals>,
}

impl Dashboard {
    pub fn new(proxies: Vec<ProxyState>, pairs: &[Pair<'_>], window: Option<Duration>) -> Self {
        Dashboard {
            window_seconds: seconds(window),
            proxies,
            graph: graph(pairs, window),
            signals: signals(pairs, window),
        }
    }
}

/// Recent scrapes, so that each poll gets rates over about `window`
/// without a background task: the baseline of a new scrape is the newest
/// one at least `window` old, else the oldest kept, and none while that is
/// younger than a quarter second.
#[derive(Debug)]
pub struct History<T> {
    window: Duration,
    entries: VecDeque<(Instant, T)>,
}

/// Scrapes closer together than this replace each other (many pollers).
const MIN_SPACING: Duration = Duration::from_millis(250);

impl<T> History<T> {
    pub const fn new(window: Duration) -> Self {
        History {
            window,
            entries: VecDeque::new(),
        }
    }

    /// Keeps `value` taken at `now`; returns the baseline and its age.
    pub fn record(&mut self, now: Instant, value: T) -> Option<(&T, Duration)> {
        let newest_is_recent = self
            .entries
            .back()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < MIN_SPACING);
        if newest_is_recent && self.entries.len() > 1 {
            self.entries.pop_back();
        }
        self.entries.push_back((now, value));
        while self
            .entries
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window)
        {
            self.entries.pop_front();
        }
        if self.entries.len() < 2 {
            return None;
        }
        // Rates over a few milliseconds would be noise.
        self.entries
            .front()
            .map(|(at, value)| (value, now.saturating_duration_since(*at)))
            .filter(|(_, age)| *age >= MIN_SPACING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::parse;

    fn scrape(config: serde_json::Value, text: &str) -> Scrape {
        Scrape::new(&config, &parse(text).expect("valid exposition"))
    }

    fn web(requests: [u64; 3], buckets: [u64; 3]) -> Scrape {
        let [ok, err, grpc_bad] = requests;
        let [b1, b2, inf] = buckets;
        scrape(
            serde_json::json!({
                "service": "web",
                "outbound": { "upstreams": {
                    "orders-v2": { "identity": "spiffe://mesh.local/svc/orders" },
                    "pay": {}
                } }
            }),
            &format!(
                "# TYPE mesh_requests counter\n\
mesh_requests_total{{direction=\"outbound\",upstream=\"orders-v2\",status=\"200\",extra=\"x\"}} {ok}\n\
mesh_requests_total{{direction=\"outbound\",upstream=\"orders-v2\",status=\"503\"}} {err}\n\
mesh_requests_total{{direction=\"outbound\",upstream=\"pay\",status=\"200\",grpc_status=\"UNAVAILABLE\"}} {grpc_bad}\n\
mesh_requests_total{{direction=\"inbound\",upstream=\"inbound\",caller=\"edge\",status=\"200\"}} 4\n\
mesh_requests_total{{direction=\"inbound\",upstream=\"inbound\",caller=\"unknown\",status=\"200\"}} 6\n\
mesh_requests_total{{direction=\"outbound\",upstream=\"none\",status=\"502\"}} 1\n\
mesh_request_duration_seconds_bucket{{direction=\"outbound\",upstream=\"orders-v2\",le=\"0.01\"}} {b1}\n\
mesh_request_duration_seconds_bucket{{direction=\"outbound\",upstream=\"orders-v2\",le=\"0.02\"}} {b2}\n\
mesh_request_duration_seconds_bucket{{direction=\"outbound\",upstream=\"orders-v2\",le=\"+Inf\"}} {inf}\n"
            ),
        )
    }

    #[test]
    fn quantiles_interpolate_within_buckets_like_prometheus() {
        let buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (f64::INFINITY, 40.0)];
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        // rank 20 falls in (0.1, 0.2], 10 of its 20 in: halfway.
        assert!(close(quantile(0.5, &buckets), 0.15));
        // rank 5 in the first bucket, which starts at 0.
        assert!(close(quantile(0.125, &buckets), 0.05));
        // rank 39.6: (0.2, 0.4], 9.6 of 10.
        assert!(close(quantile(0.99, &buckets), 0.392));
        // The +Inf bucket answers the highest finite bound.
        let tail = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert!(close(quantile(0.9, &tail), 0.1));
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(0.1, 3.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn signals_are_deltas_between_two_scrapes() {
        let before = web([10, 0, 0], [10, 10, 10]);
        let now = web([25, 5, 2], [20, 28, 30]);
        let rows = signals(
            &[Pair {
                before: Some(&before),
                now: &now,
            }],
            Some(Duration::from_secs(2)),
        );
        let orders = rows
            .iter()
            .find(|r| r.upstream == "orders-v2")
            .expect("orders row");
        assert_eq!((orders.requests, orders.total), (20, 30));
        assert_eq!(orders.rps, Some(10.0));
        assert_eq!(orders.success_rate, Some(0.75));
        // 20 observations: 10 in (0, 10ms], 8 in (10, 20ms], 2 beyond.
        let p50 = orders.p50_ms.expect("p50");
        assert!((p50 - 10.0).abs() < 1e-9, "{p50}");
        assert_eq!(orders.p99_ms, Some(20.0));
        assert!(orders.p95_ms.expect("p95") <= orders.p99_ms.expect("p99"));
        let pay = rows.iter().find(|r| r.upstream == "pay").expect("pay row");
        assert_eq!(pay.success_rate, Some(0.0), "grpc UNAVAILABLE failed");
        assert_eq!(pay.p50_ms, None, "no histogram");
        let inbound = rows.iter().find(|r| r.direction == "inbound").expect("in");
        assert_eq!((inbound.requests, inbound.rps), (0, Some(0.0)));
        assert_eq!(inbound.success_rate, None);
        assert_eq!(inbound.total, 10, "summed over callers");

        // One scrape: totals only, no rate.
        let rows = signals(
            &[Pair {
                before: None,
                now: &now,
            }],
            None,
        );
        let orders = rows
            .iter()
            .find(|r| r.upstream == "orders-v2")
            .expect("row");
        assert_eq!((orders.requests, orders.rps), (30, None));
    }

    #[test]
    fn failures_are_5xx_and_server_fault_grpc_codes() {
        let failed = |labels: &str| {
            let text = format!("mesh_requests_total{{direction=\"inbound\",{labels}}} 1\n");
            is_failure(&parse(&text).expect("valid").samples[0])
        };
        assert!(failed("status=\"500\""));
        assert!(failed("status=\"503\",status_class=\"5xx\""));
        assert!(failed("status_class=\"5xx\""));
        assert!(!failed("status=\"404\",status_class=\"4xx\""));
        assert!(!failed("status=\"200\""));
        for code in ["2", "4", "12", "13", "14", "15", "UNAVAILABLE", "internal"] {
            assert!(
                failed(&format!("status=\"200\",grpc_status=\"{code}\"")),
                "{code}"
            );
        }
        for code in ["0", "1", "3", "5", "7", "16", "OK", "NOT_FOUND"] {
            assert!(
                !failed(&format!("status=\"200\",grpc_status=\"{code}\"")),
                "{code}"
            );
        }
    }

    #[test]
    fn a_counter_that_went_down_restarted() {
        let before = web([100, 0, 0], [0, 0, 0]);
        let now = web([3, 0, 0], [0, 0, 0]);
        let rows = signals(
            &[Pair {
                before: Some(&before),
                now: &now,
            }],
            Some(Duration::from_secs(1)),
        );
        let orders = rows
            .iter()
            .find(|r| r.upstream == "orders-v2")
            .expect("row");
        assert_eq!(orders.requests, 3);
    }

    #[test]
    fn graph_names_upstreams_by_identity_and_callers_by_label() {
        let web = web([3, 1, 1], [0, 0, 0]);
        let graph_one = graph(
            &[Pair {
                before: None,
                now: &web,
            }],
            None,
        );
        assert_eq!(graph_one.nodes, ["edge", "orders", "pay", "web"]);
        let find = |g: &Graph, from: &str, to: &str| {
            g.edges
                .iter()
                .find(|e| e.from == from && e.to == to)
                .cloned()
        };
        let orders = find(&graph_one, "web", "orders").expect("web -> orders");
        assert_eq!((orders.requests, orders.success_rate), (4, Some(0.75)));
        assert!(find(&graph_one, "edge", "web").is_some());
        assert!(find(&graph_one, "web", "none").is_none(), "unrouted");
        assert_eq!(edge_label(&orders), "4 requests, 75.00%");

        // The caller's outbound view wins over the callee's inbound view.
        let orders_proxy = scrape(
            serde_json::json!({ "service": "orders" }),
            "mesh_requests_total{direction=\"inbound\",upstream=\"inbound\",caller=\"web\",status=\"200\"} 9\n",
        );
        let both = graph(
            &[
                Pair {
                    before: None,
                    now: &web,
                },
                Pair {
                    before: None,
                    now: &orders_proxy,
                },
            ],
            None,
        );
        assert_eq!(find(&both, "web", "orders").expect("edge").requests, 4);
        let alone = graph(
            &[Pair {
                before: None,
                now: &orders_proxy,
            }],
            None,
        );
        assert_eq!(find(&alone, "web", "orders").expect("edge").requests, 9);

        let dot = to_dot(&graph_one);
        assert!(
            dot.contains("\"web\" -> \"orders\" [label=\"4 requests, 75.00%\"];"),
            "{dot}"
        );
        let mermaid = to_mermaid(&graph_one);
        assert!(mermaid.contains("n3[\"web\"]"), "{mermaid}");
        assert!(
            mermaid.contains("n3 -->|\"4 requests, 75.00%\"| n1"),
            "{mermaid}"
        );
    }

    #[test]
    fn history_picks_a_baseline_about_a_window_old() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut history = History::new(Duration::from_secs(10));
        assert!(history.record(at(0), 0).is_none());
        assert!(
            history.record(at(100), 0).is_none(),
            "too close to divide by"
        );
        assert_eq!(
            history.record(at(2000), 1),
            Some((&0, Duration::from_secs(2)))
        );
        // Too close to the last: replaces it, baseline unchanged.
        assert_eq!(
            history.record(at(2100), 2),
            Some((&0, Duration::from_millis(2100)))
        );
        for (i, ms) in [4000, 6000, 8000, 10_000, 12_000].into_iter().enumerate() {
            history.record(at(ms), 10 + i);
        }
        let (baseline, age) = history.record(at(14_000), 99).expect("baseline");
        assert_eq!((*baseline, age), (10, Duration::from_secs(10)));
        assert_eq!(history.entries.len(), 6);
    }
}
