//! `overload:`: when the proxy sheds new work before memory or
//! concurrency runs out (like Envoy's overload manager).

use serde::{Deserialize, Serialize};

/// Overload thresholds; omitted, the proxy never sheds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Resident memory of the process (`512MiB`); `0`: not watched.
    #[serde(default = "default_max_rss", deserialize_with = "super::size")]
    pub max_rss: String,
    /// Requests in flight across every listener; omitted: not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_requests: Option<u64>,
    /// Fraction of a threshold at which shedding starts (0 < shed_at <= 1).
    #[serde(default = "default_shed_at")]
    pub shed_at: f64,
}

impl Default for Overload {
    fn default() -> Self {
        Self {
            max_rss: default_max_rss(),
            max_active_requests: None,
            shed_at: default_shed_at(),
        }
    }
}

fn default_max_rss() -> String {
    "0".into()
}

fn default_shed_at() -> f64 {
    0.95
}
