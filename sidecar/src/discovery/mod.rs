//! Where a cluster's endpoints come from. A source publishes the current
//! endpoint list on a watch channel; the balancer reads the latest list per
//! request, so a change never interrupts requests already in flight.
//! Sources: a fixed list from the config ([`Source::Static`]); DNS A/AAAA
//! and SRV ([`Source::Dns`], [`Source::Srv`]), refreshed by one resolver
//! task per cluster ([`dns`]) that ends when the cluster is dropped.
//! Reads: the validated source. Writes: the endpoint list, and for DNS a
//! [`DiscoveryStatus`] the admin API shows. Errors: none leave this module;
//! a failed resolution is logged, counted and shown in the status.

pub mod dns;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mesh_api::admin::DiscoveryInfo;
use tokio::sync::watch;

use crate::config::ResolverSettings;
use crate::telemetry::Metrics;

/// One address of a cluster, as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic (at least 1).
    pub weight: u32,
}

/// Where a cluster's endpoints come from, as validated from the config.
/// DNS sources carry the resolver settings, so a reload that changes
/// `resolver:` rebuilds the DNS clusters (and only those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `discovery.endpoints`.
    Static(Vec<Endpoint>),
    /// `discovery.dns: name:port`: A/AAAA records of `name`, on `port`.
    Dns {
        /// The name to resolve.
        name: String,
        /// The port every address gets.
        port: u16,
        /// How to resolve it (`resolver:`).
        resolver: Arc<ResolverSettings>,
    },
    /// `discovery.srv: _svc._proto.name`.
    Srv {
        /// The SRV name.
        name: String,
        /// How to resolve it (`resolver:`).
        resolver: Arc<ResolverSettings>,
    },
}

/// The live endpoint list of one cluster.
#[derive(Debug, Clone)]
pub struct EndpointSet {
    rx: watch::Receiver<Arc<[Endpoint]>>,
    source: &'static str,
}

impl EndpointSet {
    /// A list that never changes (`discovery.endpoints` in the config).
    pub fn fixed(endpoints: Vec<Endpoint>) -> Self {
        // The sender may go: a receiver keeps the last value it sent.
        let (_tx, rx) = watch::channel(Arc::from(endpoints));
        Self {
            rx,
            source: "static",
        }
    }

    /// The set `source` describes for cluster `upstream`: a fixed list, or
    /// (DNS) an empty list that the resolver task fills, with the status
    /// that task keeps. The task runs until every clone of the set is gone.
    pub fn discover(
        source: &Source,
        upstream: &Arc<str>,
        metrics: &Metrics,
    ) -> (Self, Option<DiscoveryStatus>) {
        match source {
            Source::Static(endpoints) => (Self::fixed(endpoints.clone()), None),
            Source::Dns {
                name,
                port,
                resolver,
            } => {
                let query = dns::Query::Ip {
                    name: name.clone(),
                    port: *port,
                };
                Self::resolved(query, resolver, upstream, metrics)
            }
            Source::Srv { name, resolver } => {
                let query = dns::Query::Srv { name: name.clone() };
                Self::resolved(query, resolver, upstream, metrics)
            }
        }
    }

    fn resolved(
        query: dns::Query,
        resolver: &Arc<ResolverSettings>,
        upstream: &Arc<str>,
        metrics: &Metrics,
    ) -> (Self, Option<DiscoveryStatus>) {
        let source = query.label();
        let (rx, status) = dns::spawn(query, resolver.clone(), upstream, metrics);
        (Self { rx, source }, Some(status))
    }

    /// The current list; cheap (a reference count).
    pub fn current(&self) -> Arc<[Endpoint]> {
        self.rx.borrow().clone()
    }

    /// Where the list comes from, for the admin API: `static`, `dns` or `srv`.
    pub fn source(&self) -> &'static str {
        self.source
    }
}

/// What a DNS source last did, shared by its resolver task (which writes
/// it) and the cluster (which shows it on `/clusters`).
#[derive(Debug, Clone)]
pub struct DiscoveryStatus(Arc<Mutex<DiscoveryInfo>>);

impl DiscoveryStatus {
    fn new(info: DiscoveryInfo) -> Self {
        Self(Arc::new(Mutex::new(info)))
    }

    /// A copy for the admin API.
    pub fn snapshot(&self) -> DiscoveryInfo {
        crate::lock(&self.0).clone()
    }

    fn update(&self, change: impl FnOnce(&mut DiscoveryInfo)) {
        change(&mut crate::lock(&self.0));
    }
}
