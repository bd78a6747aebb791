//! The edge response cache: the store (`edge.cache`) and a route's policy
//! (`edge.routes[].cache`).
//!
//! The short form names only what differs from the defaults:
//! `cache: { ttl: 30s, key: [path, query, header:accept-language] }`.

use serde::{Deserialize, Serialize};

/// The in-memory response store every cached route shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheStore {
    /// Most bytes (bodies and headers) held; the least recently used
    /// entries go first. Lowering it on reload evicts down to it.
    #[serde(default = "default_max_bytes", deserialize_with = "super::size")]
    pub max_bytes: String,
    /// Largest response stored; larger ones stream through uncached.
    #[serde(default = "default_max_object", deserialize_with = "super::size")]
    pub max_object: String,
}

impl Default for CacheStore {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            max_object: default_max_object(),
        }
    }
}

/// A route's caching policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// How long a response stays fresh when the upstream says nothing
    /// (no `max-age`, `s-maxage` or `Expires`).
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// What tells responses apart, in this order: `method`, `host`,
    /// `path`, `query`, `header:<name>`, `cookie:<name>`, `consumer`,
    /// `claim:<name>`. The method is always part of the key.
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    /// How long past freshness a stale response is still served while one
    /// background request refreshes it (the upstream's own
    /// `stale-while-revalidate` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<String>,
    /// How long past freshness a stale response is served when the
    /// upstream fails (5xx or unreachable); the upstream's own
    /// `stale-if-error` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<String>,
    /// Request methods served from and stored to the cache.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Response statuses stored.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            key: default_key(),
            stale_while_revalidate: None,
            stale_if_error: None,
            methods: default_methods(),
            statuses: default_statuses(),
        }
    }
}

fn default_max_bytes() -> String {
    "64MiB".into()
}

fn default_max_object() -> String {
    "1MiB".into()
}

fn default_ttl() -> String {
    "30s".into()
}

fn default_key() -> Vec<String> {
    ["method", "host", "path", "query"]
        .into_iter()
        .map(String::from)
        .collect()
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
}
