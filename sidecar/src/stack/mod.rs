//! The HTTP stacks, one function per listener kind, each composing the
//! layers in data-flow order so the whole pipeline reads in one screen.
//! Edge mode is the same building blocks with more layers on.

mod edge;
mod inbound;
mod outbound;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::route::RouteTable;
use crate::telemetry::Metrics;
use crate::tls::IdentityStore;

pub use edge::edge;
pub use inbound::inbound;
pub use outbound::outbound;

/// What every stack reads at run time. Reload swaps `routes` and
/// `settings` whole; layers load them per request, so a reload never
/// restarts a listener or drops a connection.
pub struct Runtime {
    /// Clusters and routes.
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// The running settings.
    pub settings: Arc<ArcSwap<Settings>>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// This proxy's workload identity (empty without one).
    pub identity: Arc<IdentityStore>,
}
