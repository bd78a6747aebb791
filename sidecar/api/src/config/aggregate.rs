//! An aggregation route (`aggregate:`): several upstream calls merged into
//! one JSON response.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Parts called concurrently (or chained) and merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The calls, by name; each name is a key of the merged response.
    #[serde(default)]
    pub parts: BTreeMap<String, AggregatePart>,
    /// Default time a part may take (request and body), e.g. `200ms`.
    #[serde(default = "default_part_timeout")]
    pub timeout: String,
    /// What a failed part does: `partial` (the others still answer, 200) or
    /// `fail` (the whole request fails, 504 / 502).
    #[serde(default)]
    pub on_part_failure: OnPartFailure,
    /// Largest body a part may answer with (`too_large` over it).
    #[serde(default = "default_max_part_body")]
    pub max_part_body: String,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            parts: BTreeMap::new(),
            timeout: default_part_timeout(),
            on_part_failure: OnPartFailure::default(),
            max_part_body: default_max_part_body(),
        }
    }
}

/// One upstream call of an aggregation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatePart {
    /// The upstream (an `edge.upstreams` or `outbound.upstreams` name).
    pub to: String,
    /// Path and query sent, with placeholders: `{claim.X}`, `{path.X}`,
    /// `{query.X}`, `{header.X}`, `{<part>.<dotted.field>}`.
    pub path: String,
    /// The method; default `GET`. Parts send no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Client request headers forwarded to this part, besides the ones
    /// always forwarded (`x-request-id`, `traceparent`, `tracestate`, the
    /// headers authentication set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// This part's own timeout; default the aggregation's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A failure of this part never fails the whole request.
    #[serde(default)]
    pub optional: bool,
}

/// What a failed part does to the whole response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPartFailure {
    /// 200 with the parts that worked; failures listed under `_errors`.
    #[default]
    Partial,
    /// The first failure of a non-optional part fails the request.
    Fail,
}

fn default_part_timeout() -> String {
    "5s".to_string()
}

fn default_max_part_body() -> String {
    "1MiB".to_string()
}
