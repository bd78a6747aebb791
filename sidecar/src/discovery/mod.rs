//! Where a cluster's endpoints come from. A source publishes the current
//! endpoint list on a watch channel; the balancer reads the latest list per
//! request, so a change never interrupts requests already in flight.
//! Sources: a fixed list from the config ([`Source::Static`]); DNS A/AAAA
//! and SRV ([`Source::Dns`], [`Source::Srv`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// One address of a cluster, as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic (at least 1).
    pub weight: u32,
}

/// Where a cluster's endpoints come from, as validated from the config.
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
    },
    /// `discovery.srv: _svc._proto.name`.
    Srv {
        /// The SRV name.
        name: String,
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

    /// The current list; cheap (a reference count).
    pub fn current(&self) -> Arc<[Endpoint]> {
        self.rx.borrow().clone()
    }

    /// Where the list comes from, for the admin API.
    pub fn source(&self) -> &'static str {
        self.source
    }
}
