//! DNS discovery: one task per cluster asks hickory-resolver (the maintained
//! successor of trust-dns-resolver) for the A/AAAA records of
//! `discovery.dns` or the SRV records of `discovery.srv`, and publishes the
//! endpoints on the cluster's watch channel.
//!
//! Refreshes when the answer's smallest TTL runs out, clamped to
//! `resolver.ttl`; publishes only when the sorted list changed, so the
//! balancer keeps its per-endpoint state. SRV answers keep only the
//! lowest-priority group that resolves, with the records' ports and weights.
//! A failure keeps the last known endpoints or clears them
//! (`resolver.on_failure`, `resolver.on_nxdomain`) and is retried with
//! backoff (1 s doubling, within `resolver.ttl`). The task ends when the
//! cluster's endpoint set is dropped (every receiver gone).
//!
//! Reads: the resolver settings. Writes: the endpoint list, the
//! [`DiscoveryStatus`] shown on `/clusters`, `mesh_dns_resolutions_total`,
//! debug logs. Errors: [`ResolveError`], which never leaves the task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::{Resolver, TokioResolver};
use mesh_api::admin::DiscoveryInfo;
use mesh_api::config::OnResolveFailure;
use tokio::sync::watch;
use tracing::{debug, info, Instrument as _};

use super::{DiscoveryStatus, Endpoint};
use crate::config::ResolverSettings;
use crate::telemetry::Metrics;

/// First wait after a failed resolution; doubles up to `resolver.ttl.max`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Retries hickory makes itself (per query, after `resolver.timeout`)
/// before reporting a failure; the refresh loop retries after that.
const QUERY_RETRIES: usize = 1;
/// Answers hickory keeps; its cache never outlives our refresh interval
/// (positive TTLs are capped at `ttl.max`, negative answers are not kept).
const CACHE_SIZE: u64 = 64;

/// What a DNS source asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A and AAAA records of `name`, every address on `port`.
    Ip {
        /// The name to resolve.
        name: String,
        /// The port every address gets.
        port: u16,
    },
    /// SRV records of `name`; targets resolved to addresses.
    Srv {
        /// The SRV name (`_service._proto.domain`).
        name: String,
    },
}

impl Query {
    /// `dns` or `srv`, as `/clusters` and the span show it.
    pub fn label(&self) -> &'static str {
        match self {
            Query::Ip { .. } => "dns",
            Query::Srv { .. } => "srv",
        }
    }

    fn name(&self) -> &str {
        match self {
            Query::Ip { name, .. } | Query::Srv { name } => name,
        }
    }
}

/// Why a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist.
    #[error("{name}: no such name (NXDOMAIN)")]
    NxDomain {
        /// The name asked.
        name: String,
    },
    /// The name exists but has no records of the type asked.
    #[error("{name}: no {kind} records")]
    NoRecords {
        /// The name asked.
        name: String,
        /// `A/AAAA` or `SRV`.
        kind: &'static str,
    },
    /// The server could not answer.
    #[error("{name}: server failure (SERVFAIL)")]
    ServFail {
        /// The name asked.
        name: String,
    },
    /// No answer in time.
    #[error("{name}: no answer within {timeout:?}")]
    Timeout {
        /// The name asked.
        name: String,
        /// `resolver.timeout`.
        timeout: Duration,
    },
    /// Anything else: refused, network errors, malformed answers.
    #[error("{name}: {message}")]
    Failed {
        /// The name asked.
        name: String,
        /// What hickory said.
        message: String,
    },
    /// The resolver could not be built (e.g. no readable /etc/resolv.conf).
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
}

impl ResolveError {
    fn from_net(name: &str, kind: &'static str, timeout: Duration, err: &NetError) -> Self {
        let name = name.to_owned();
        if err.is_nx_domain() {
            ResolveError::NxDomain { name }
        } else if err.is_no_records_found() {
            ResolveError::NoRecords { name, kind }
        } else if matches!(err, NetError::Timeout) {
            ResolveError::Timeout { name, timeout }
        } else if matches!(
            err,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ) {
            ResolveError::ServFail { name }
        } else {
            ResolveError::Failed {
                name,
                message: err.to_string(),
            }
        }
    }

    /// The name does not (or no longer) exist(s): `on_nxdomain` applies.
    fn is_nxdomain(&self) -> bool {
        matches!(
            self,
            ResolveError::NxDomain { .. } | ResolveError::NoRecords { .. }
        )
    }

    /// The `result` label of `mesh_dns_resolutions_total`.
    fn label(&self) -> &'static str {
        match self {
            ResolveError::NxDomain { .. } | ResolveError::NoRecords { .. } => "nxdomain",
            ResolveError::ServFail { .. } => "servfail",
            ResolveError::Timeout { .. } => "timeout",
            ResolveError::Failed { .. } | ResolveError::Setup(_) => "error",
        }
    }
}

/// One successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    endpoints: Vec<Endpoint>,
    /// The smallest TTL of the records used, unclamped.
    ttl: Duration,
}

/// Starts the resolver task of cluster `upstream`; returns the receiving
/// end of its endpoint list (empty until the first answer) and its status.
pub(super) fn spawn(
    query: Query,
    settings: Arc<ResolverSettings>,
    upstream: &Arc<str>,
    metrics: &Metrics,
) -> (watch::Receiver<Arc<[Endpoint]>>, DiscoveryStatus) {
    let status = DiscoveryStatus::new(DiscoveryInfo {
        source: query.label().to_owned(),
        name: query.name().to_owned(),
        port: match query {
            Query::Ip { port, .. } => Some(port),
            Query::Srv { .. } => None,
        },
        ..DiscoveryInfo::default()
    });
    let (tx, rx) = watch::channel(Arc::<[Endpoint]>::from(Vec::new()));
    let span = tracing::info_span!("dns", upstream = %upstream, source = query.label(), query = query.name());
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let source = Hickory {
                query,
                settings: settings.clone(),
                resolver: None,
            };
            let count = metrics.dns_resolutions(upstream);
            runtime.spawn(run(source, settings, tx, status.clone(), count).instrument(span));
        }
        Err(_) => status.update(|info| {
            info.last_error = Some("not started: no async runtime".to_owned());
        }),
    }
    (rx, status)
}

/// Where answers come from: hickory-resolver, or a script in tests.
trait Resolve {
    async fn resolve(&mut self) -> Result<Resolved, ResolveError>;
}

/// Refreshes until every receiver of `tx` is gone.
async fn run(
    source: impl Resolve,
    settings: Arc<ResolverSettings>,
    tx: watch::Sender<Arc<[Endpoint]>>,
    status: DiscoveryStatus,
    count: impl Fn(&'static str),
) {
    tokio::select! {
        () = tx.closed() => debug!("cluster dropped, resolver stops"),
        () = refresh_forever(source, &settings, &tx, &status, &count) => {}
    }
}

async fn refresh_forever(
    mut source: impl Resolve,
    settings: &ResolverSettings,
    tx: &watch::Sender<Arc<[Endpoint]>>,
    status: &DiscoveryStatus,
    count: &impl Fn(&'static str),
) {
    let first_backoff = clamp_ttl(FIRST_BACKOFF, settings.ttl_min, settings.ttl_max);
    let mut backoff = first_backoff;
    loop {
        let wait = match source.resolve().await {
            Ok(resolved) => {
                backoff = first_backoff;
                let ttl = clamp_ttl(resolved.ttl, settings.ttl_min, settings.ttl_max);
                let endpoints = resolved.endpoints.len();
                let changed = publish(tx, resolved.endpoints);
                count("ok");
                status.update(|info| {
                    info.last_refresh = Some(unix_now());
                    info.ttl_seconds = Some(ttl.as_secs());
                    info.failures = 0;
                });
                debug!(
                    endpoints,
                    record_ttl_s = resolved.ttl.as_secs(),
                    refresh_in_s = ttl.as_secs_f64(),
                    changed,
                    "resolved"
                );
                if changed {
                    info!(endpoints, "endpoints changed");
                }
                ttl
            }
            Err(err) => {
                let policy = if err.is_nxdomain() {
                    settings.on_nxdomain
                } else {
                    settings.on_failure
                };
                count(err.label());
                let kept = match policy {
                    OnResolveFailure::KeepLastKnown => tx.borrow().len(),
                    OnResolveFailure::Clear => {
                        if publish(tx, Vec::new()) {
                            info!(error = %err, "endpoints cleared");
                        }
                        0
                    }
                };
                if kept > 0 {
                    count("fallback");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(settings.ttl_max);
                status.update(|info| {
                    info.last_error = Some(err.to_string());
                    info.last_error_at = Some(unix_now());
                    info.failures = info.failures.saturating_add(1);
                });
                debug!(
                    error = %err,
                    result = err.label(),
                    ?policy,
                    kept,
                    retry_in_s = wait.as_secs_f64(),
                    "resolution failed"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// How long to trust an answer: its TTL within `[min, max]`.
fn clamp_ttl(ttl: Duration, min: Duration, max: Duration) -> Duration {
    ttl.max(min).min(max)
}

/// Publishes `endpoints` (sorted, duplicates merged) unless they equal the
/// current list, so an unchanged answer keeps the balancer's view. Returns
/// whether the list changed.
fn publish(tx: &watch::Sender<Arc<[Endpoint]>>, endpoints: Vec<Endpoint>) -> bool {
    let endpoints = normalize(endpoints);
    tx.send_if_modified(move |current| {
        if **current == *endpoints {
            false
        } else {
            *current = Arc::from(endpoints);
            true
        }
    })
}

/// Sorted by address; an address named twice (two SRV targets resolving to
/// one `ip:port`) gets the sum of its weights.
fn normalize(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort();
    let mut merged: Vec<Endpoint> = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        match merged.last_mut() {
            Some(last) if last.addr == endpoint.addr => {
                last.weight = last.weight.saturating_add(endpoint.weight);
            }
            _ => merged.push(endpoint),
        }
    }
    merged
}

/// One SRV record, its target normalised (lower case, no final dot).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvRecord {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
    ttl: u32,
}

/// The records grouped by priority, lowest (most preferred) first. Records
/// whose target is `.` ("no service here", RFC 2782) are left out.
fn by_priority(mut records: Vec<SrvRecord>) -> Vec<Vec<SrvRecord>> {
    records.retain(|record| !record.target.is_empty());
    records.sort_by_key(|record| record.priority);
    let mut groups: Vec<Vec<SrvRecord>> = Vec::new();
    for record in records {
        match groups.last_mut() {
            Some(group) if group[0].priority == record.priority => group.push(record),
            _ => groups.push(vec![record]),
        }
    }
    groups
}

/// An SRV weight as a balancer weight: 0 ("no preference") counts as 1.
fn srv_weight(weight: u16) -> u32 {
    u32::from(weight).max(1)
}

/// A DNS name as compared here: lower case, no final dot (`.` becomes "").
fn name_key(name: &Name) -> String {
    name.to_utf8().trim_end_matches('.').to_ascii_lowercase()
}

/// The address an A or AAAA record holds.
fn address(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Answers from hickory-resolver, built on first use (and again after a
/// failed build).
struct Hickory {
    query: Query,
    settings: Arc<ResolverSettings>,
    resolver: Option<TokioResolver>,
}

impl Resolve for Hickory {
    async fn resolve(&mut self) -> Result<Resolved, ResolveError> {
        let resolver = match &self.resolver {
            Some(resolver) => resolver.clone(),
            None => {
                let built =
                    build(&self.settings).map_err(|err| ResolveError::Setup(err.to_string()))?;
                self.resolver.insert(built).clone()
            }
        };
        let timeout = self.settings.timeout;
        match &self.query {
            Query::Ip { name, port } => {
                let (ips, ttl) = lookup_ip(&resolver, name, timeout).await?;
                Ok(Resolved {
                    endpoints: ips
                        .into_iter()
                        .map(|ip| Endpoint {
                            addr: SocketAddr::new(ip, *port),
                            weight: 1,
                        })
                        .collect(),
                    ttl: Duration::from_secs(ttl.into()),
                })
            }
            Query::Srv { name } => lookup_srv(&resolver, name, timeout).await,
        }
    }
}

/// A resolver for `settings`: its nameservers over UDP and TCP on their
/// ports, or those of /etc/resolv.conf; a small cache that our refresh
/// interval always outlives.
fn build(settings: &ResolverSettings) -> Result<TokioResolver, NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.nameservers.is_empty() {
        Resolver::builder(provider)?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = addr.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        let mut builder =
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider);
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options = builder.options_mut();
    options.timeout = settings.timeout;
    options.attempts = QUERY_RETRIES;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = CACHE_SIZE;
    options.positive_max_ttl = Some(settings.ttl_max);
    options.negative_max_ttl = Some(Duration::ZERO);
    builder.build()
}

/// The addresses of `name` and the smallest TTL of the records.
async fn lookup_ip(
    resolver: &TokioResolver,
    name: &str,
    timeout: Duration,
) -> Result<(Vec<IpAddr>, u32), ResolveError> {
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|err| ResolveError::from_net(name, "A/AAAA", timeout, &err))?;
    let ttl = lookup
        .as_lookup()
        .answers()
        .iter()
        .map(|record| record.ttl)
        .min()
        .unwrap_or_else(|| {
            let left = lookup
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            u32::try_from(left.as_secs()).unwrap_or(u32::MAX)
        });
    Ok((lookup.iter().collect(), ttl))
}

/// SRV records of `name`: the lowest-priority group with a target that
/// resolves, targets' addresses from the additional section when the server
/// sent them, else looked up.
async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
    timeout: Duration,
) -> Result<Resolved, ResolveError> {
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|err| ResolveError::from_net(name, "SRV", timeout, &err))?;
    let records = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: name_key(&srv.target),
                ttl: record.ttl,
            }),
            _ => None,
        })
        .collect();
    let glue: Vec<(String, IpAddr, u32)> = lookup
        .additionals()
        .iter()
        .filter_map(|record| address(record).map(|ip| (name_key(&record.name), ip, record.ttl)))
        .collect();
    let mut last_error = None;
    for group in by_priority(records) {
        let mut endpoints = Vec::new();
        let mut ttl = u32::MAX;
        for record in &group {
            let glued: Vec<(IpAddr, u32)> = glue
                .iter()
                .filter(|(target, ..)| *target == record.target)
                .map(|(_, ip, ttl)| (*ip, *ttl))
                .collect();
            let (ips, ip_ttl) = if glued.is_empty() {
                match lookup_ip(resolver, &format!("{}.", record.target), timeout).await {
                    Ok(found) => found,
                    Err(err) => {
                        debug!(target = %record.target, error = %err, "SRV target does not resolve");
                        last_error = Some(err);
                        continue;
                    }
                }
            } else {
                let ttl = glued.iter().map(|(_, ttl)| *ttl).min().unwrap_or(0);
                (glued.into_iter().map(|(ip, _)| ip).collect(), ttl)
            };
            ttl = ttl.min(record.ttl).min(ip_ttl);
            endpoints.extend(ips.into_iter().map(|ip| Endpoint {
                addr: SocketAddr::new(ip, record.port),
                weight: srv_weight(record.weight),
            }));
        }
        if !endpoints.is_empty() {
            return Ok(Resolved {
                endpoints,
                ttl: Duration::from_secs(ttl.into()),
            });
        }
    }
    Err(last_error.unwrap_or_else(|| ResolveError::NoRecords {
        name: name.to_owned(),
        kind: "SRV",
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query as DnsQuery;
    use hickory_resolver::proto::rr::RecordType;
    use tokio::time::Instant;

    use super::*;

    fn ep(last: u8, port: u16, weight: u32) -> Endpoint {
        Endpoint {
            addr: SocketAddr::from(([127, 0, 0, last], port)),
            weight,
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
            ttl: 30,
        }
    }

    fn settings(on_failure: OnResolveFailure, on_nxdomain: OnResolveFailure) -> ResolverSettings {
        ResolverSettings {
            nameservers: Vec::new(),
            ttl_min: Duration::from_secs(1),
            ttl_max: Duration::from_secs(60),
            on_failure,
            on_nxdomain,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn srv_keeps_only_the_lowest_priority_group_in_order() {
        let groups = by_priority(vec![
            srv(20, 1, 3, "c.test"),
            srv(10, 1, 1, "a.test"),
            srv(5, 0, 9, ""),
            srv(10, 3, 2, "b.test"),
        ]);
        let priorities: Vec<Vec<(u16, &str)>> = groups
            .iter()
            .map(|g| g.iter().map(|r| (r.priority, r.target.as_str())).collect())
            .collect();
        assert_eq!(
            priorities,
            [vec![(10, "a.test"), (10, "b.test")], vec![(20, "c.test")]],
            "the `.` target is no service; priority 10 comes first"
        );
        assert!(by_priority(vec![srv(1, 1, 1, "")]).is_empty());
    }

    #[test]
    fn srv_weight_zero_counts_as_one() {
        assert_eq!(srv_weight(0), 1);
        assert_eq!(srv_weight(1), 1);
        assert_eq!(srv_weight(3), 3);
        assert_eq!(srv_weight(u16::MAX), 65_535);
    }

    #[test]
    fn names_compare_without_case_or_final_dot() {
        let name = Name::from_ascii("B1.Web.Test.").unwrap();
        assert_eq!(name_key(&name), "b1.web.test");
        assert_eq!(name_key(&Name::root()), "");
    }

    #[test]
    fn ttl_is_clamped_to_the_configured_range() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(clamp_ttl(Duration::ZERO, min, max), min);
        assert_eq!(
            clamp_ttl(Duration::from_secs(30), min, max),
            Duration::from_secs(30)
        );
        assert_eq!(clamp_ttl(Duration::from_secs(86_400), min, max), max);
    }

    #[test]
    fn only_a_changed_list_is_published() {
        let (tx, mut rx) = watch::channel(Arc::<[Endpoint]>::from(Vec::new()));
        assert!(publish(&tx, vec![ep(2, 80, 1), ep(1, 80, 1)]));
        assert_eq!(rx.borrow_and_update()[..], [ep(1, 80, 1), ep(2, 80, 1)]);
        assert!(
            !publish(&tx, vec![ep(1, 80, 1), ep(2, 80, 1)]),
            "same set, other order"
        );
        assert!(!rx.has_changed().unwrap());
        assert!(
            publish(&tx, vec![ep(1, 80, 2), ep(2, 80, 1)]),
            "a weight changed"
        );
        assert!(publish(&tx, vec![ep(1, 80, 2)]), "an endpoint left");
        assert!(publish(&tx, Vec::new()));
        assert!(!publish(&tx, Vec::new()));
    }

    #[test]
    fn an_address_named_twice_gets_both_weights() {
        assert_eq!(
            normalize(vec![ep(1, 80, 1), ep(2, 80, 1), ep(1, 80, 3)]),
            [ep(1, 80, 4), ep(2, 80, 1)]
        );
    }

    #[test]
    fn hickory_errors_are_classified() {
        let timeout = Duration::from_secs(2);
        let classify = |err: NetError| ResolveError::from_net("web.test", "A/AAAA", timeout, &err);
        let query = DnsQuery::query(Name::from_ascii("web.test.").unwrap(), RecordType::A);
        let nx = classify(NoRecords::new(query.clone(), ResponseCode::NXDomain).into());
        assert_eq!(
            nx,
            ResolveError::NxDomain {
                name: "web.test".into()
            }
        );
        assert!(nx.is_nxdomain());
        let empty = classify(NoRecords::new(query, ResponseCode::NoError).into());
        assert!(empty.is_nxdomain());
        assert_eq!(empty.label(), "nxdomain");
        let servfail = classify(DnsError::ResponseCode(ResponseCode::ServFail).into());
        assert_eq!(servfail.label(), "servfail");
        assert!(!servfail.is_nxdomain());
        assert_eq!(classify(NetError::Timeout).label(), "timeout");
        let refused = classify(DnsError::ResponseCode(ResponseCode::Refused).into());
        assert_eq!(refused.label(), "error");
    }

    /// Answers from a script; records when each call happened.
    struct Script {
        answers: VecDeque<Result<Resolved, ResolveError>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Resolve for Script {
        async fn resolve(&mut self) -> Result<Resolved, ResolveError> {
            self.calls.lock().unwrap().push(Instant::now());
            match self.answers.pop_front() {
                Some(answer) => answer,
                // The script ran out: park, as a slow server would.
                None => std::future::pending().await,
            }
        }
    }

    fn ok(endpoints: Vec<Endpoint>, ttl_s: u64) -> Result<Resolved, ResolveError> {
        Ok(Resolved {
            endpoints,
            ttl: Duration::from_secs(ttl_s),
        })
    }

    fn servfail() -> Result<Resolved, ResolveError> {
        Err(ResolveError::ServFail {
            name: "web.test".into(),
        })
    }

    fn nxdomain() -> Result<Resolved, ResolveError> {
        Err(ResolveError::NxDomain {
            name: "web.test".into(),
        })
    }

    struct Running {
        rx: watch::Receiver<Arc<[Endpoint]>>,
        status: DiscoveryStatus,
        calls: Arc<Mutex<Vec<Instant>>>,
        counted: Arc<Mutex<Vec<&'static str>>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(answers: Vec<Result<Resolved, ResolveError>>, settings: ResolverSettings) -> Running {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let counted = Arc::new(Mutex::new(Vec::new()));
        let status = DiscoveryStatus::new(DiscoveryInfo::default());
        let (tx, rx) = watch::channel(Arc::<[Endpoint]>::from(Vec::new()));
        let script = Script {
            answers: answers.into(),
            calls: calls.clone(),
        };
        let sink = counted.clone();
        let task = tokio::spawn(run(
            script,
            Arc::new(settings),
            tx,
            status.clone(),
            move |result| sink.lock().unwrap().push(result),
        ));
        Running {
            rx,
            status,
            calls,
            counted,
            task,
        }
    }

    /// Seconds between consecutive resolve calls.
    fn gaps(calls: &Mutex<Vec<Instant>>) -> Vec<u64> {
        let calls = calls.lock().unwrap();
        calls.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_follow_the_clamped_ttl_and_failures_back_off() {
        let keep = OnResolveFailure::KeepLastKnown;
        let running = start(
            vec![
                ok(vec![ep(1, 80, 1)], 0),      // below ttl.min: 1 s
                ok(vec![ep(1, 80, 1)], 30),     // as is
                ok(vec![ep(1, 80, 1)], 86_400), // above ttl.max: 60 s
                servfail(),                     // 1 s
                servfail(),                     // 2 s
                servfail(),                     // 4 s
                ok(vec![ep(1, 80, 1)], 5),      // backoff starts over
                servfail(),                     // 1 s
            ],
            settings(keep, keep),
        );
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(gaps(&running.calls), [1, 30, 60, 1, 2, 4, 5, 1]);
        let counted = running.counted.lock().unwrap().clone();
        assert_eq!(
            counted,
            [
                "ok", "ok", "ok", "servfail", "fallback", "servfail", "fallback", "servfail",
                "fallback", "ok", "servfail", "fallback"
            ]
        );
        let info = running.status.snapshot();
        assert_eq!(info.failures, 1);
        assert_eq!(info.ttl_seconds, Some(5));
        assert!(info.last_refresh.is_some());
        assert_eq!(
            info.last_error.as_deref(),
            Some("web.test: server failure (SERVFAIL)")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_never_exceeds_ttl_max() {
        let keep = OnResolveFailure::KeepLastKnown;
        let mut short = settings(keep, keep);
        short.ttl_max = Duration::from_secs(3);
        let running = start(vec![servfail(), servfail(), servfail(), servfail()], short);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(gaps(&running.calls), [1, 2, 3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_keep_or_clear_as_configured() {
        use OnResolveFailure::{Clear, KeepLastKnown};
        let two = vec![ep(1, 80, 1), ep(2, 80, 1)];
        // keep_last_known on SERVFAIL, clear on NXDOMAIN.
        let mut running = start(
            vec![
                ok(two.clone(), 5),
                servfail(),
                nxdomain(),
                ok(two.clone(), 5),
            ],
            settings(KeepLastKnown, Clear),
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(running.rx.borrow_and_update()[..], two[..]);
        tokio::time::sleep(Duration::from_secs(5)).await; // the SERVFAIL
        assert!(!running.rx.has_changed().unwrap(), "SERVFAIL kept the list");
        assert_eq!(running.rx.borrow().len(), 2);
        tokio::time::sleep(Duration::from_secs(1)).await; // the NXDOMAIN
        assert!(
            running.rx.borrow_and_update().is_empty(),
            "NXDOMAIN cleared it"
        );
        tokio::time::sleep(Duration::from_secs(2)).await; // answered again
        assert_eq!(running.rx.borrow_and_update()[..], two[..]);

        // clear on SERVFAIL too.
        let mut running = start(vec![ok(two.clone(), 5), servfail()], settings(Clear, Clear));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(running.rx.borrow_and_update().is_empty());
        assert!(
            !running.counted.lock().unwrap().contains(&"fallback"),
            "nothing was kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_answer_is_not_published_again() {
        let keep = OnResolveFailure::KeepLastKnown;
        let mut running = start(
            vec![
                ok(vec![ep(1, 80, 1), ep(2, 80, 1)], 1),
                ok(vec![ep(2, 80, 1), ep(1, 80, 1)], 1),
            ],
            settings(keep, keep),
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        let first = running.rx.borrow_and_update().clone();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(running.calls.lock().unwrap().len(), 3);
        assert!(!running.rx.has_changed().unwrap());
        assert!(
            Arc::ptr_eq(&first, &running.rx.borrow()),
            "the balancer keeps its view"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_the_cluster_is_dropped() {
        let keep = OnResolveFailure::KeepLastKnown;
        // Once between refreshes, once in the middle of a (parked) query.
        for answers in [vec![ok(vec![ep(1, 80, 1)], 30)], vec![]] {
            let running = start(answers, settings(keep, keep));
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!running.task.is_finished());
            drop(running.rx);
            tokio::time::timeout(Duration::from_secs(1), running.task)
                .await
                .expect("the task ends with its last receiver")
                .unwrap();
        }
    }
}
