//! The edge response cache: the store (`edge.cache`) and a route's policy
//! (`edge.routes[].cache`).

use serde::{Deserialize, Serialize};

/// The in-memory response store every cached route shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheStore {}

/// A route's caching policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {}
