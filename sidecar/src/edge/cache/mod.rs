//! The response cache, below compression and above the body
//! transformations, after authentication and rate limits (so a hit never
//! skips them): one in-memory store bounded in bytes ([`CacheStore`]),
//! shared by the routes with `cache:`, kept across reloads in the
//! [`crate::route::RouteTable`].
//!
//! Decisions (RFC 9111, as a shared cache):
//! - Freshness comes from the upstream (`s-maxage`, `max-age`, `Expires`);
//!   the route's `ttl` only when it says nothing. `no-store`, `private`,
//!   `Set-Cookie` and `Vary: *` responses are never stored; `no-cache`
//!   ones are stored but revalidated before each use.
//! - Requests with `Authorization` or `Cookie` pass through (neither served
//!   from nor stored to the store) unless the route's key names the caller
//!   (`consumer`, `claim:..`, `cookie:..` or `header:authorization`).
//!   Requests with `Cache-Control: no-store` or `Range`, and methods the
//!   route does not cache, pass through too.
//!   A successful unsafe request (`POST`, `PUT`, ..) removes the entries
//!   of its path and query.
//! - Concurrent misses on one key make one upstream call; the others wait
//!   for its response and are served from the store (the stale entry,
//!   when the upstream failed), or go upstream themselves if it was not
//!   stored.
//! - A stale entry with validators is revalidated (`If-None-Match`,
//!   `If-Modified-Since`) and refreshed on 304. Within
//!   `stale-while-revalidate` it is served at once while one background
//!   request refreshes it; within `stale-if-error` it is served when the
//!   upstream answers 5xx or cannot be reached.
//! - A client's own conditional is answered 304 from a usable entry; on a
//!   miss it is not sent upstream (the whole response is needed to store).
//! - Bodies are stored while they stream to the client; past `max_object`
//!   the storing stops, the client never waits for it.
//! - Every response of a cached route carries `x-cache`
//!   (`HIT | MISS | STALE | REVALIDATED`); stored ones carry `Age`.
//!
//! Reads: the [`MatchedRoute`](super::MatchedRoute)'s `cache` policy, the
//! consumer and claims authentication found. Writes: the store, its
//! counters (`GET /cache`, `mesh_cache_requests_total`). Errors: none of
//! its own; upstream errors pass through unless a stale entry answers.

mod key;
mod layer;
mod metrics;
pub mod policy;
mod store;

use std::time::Duration;

use http::{Method, StatusCode};

pub use key::KeyPart;
pub use layer::layer;
pub use metrics::CacheCollector;
pub use store::{CacheStore, EntryView, Stats};

/// A route's caching policy, compiled.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Freshness when the upstream gives none.
    pub ttl: Duration,
    /// The key parts after the route and method.
    pub key: Vec<KeyPart>,
    /// Whether the key tells callers apart (requests with credentials may
    /// then be cached).
    pub keyed_by_caller: bool,
    /// Served stale while refreshing, unless the upstream says otherwise.
    pub stale_while_revalidate: Duration,
    /// Served stale when the upstream fails, unless it says otherwise.
    pub stale_if_error: Duration,
    /// Methods cached.
    pub methods: Vec<Method>,
    /// Statuses stored.
    pub statuses: Vec<StatusCode>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(30),
            key: vec![
                KeyPart::Method,
                KeyPart::Host,
                KeyPart::Path,
                KeyPart::Query,
            ],
            keyed_by_caller: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            methods: vec![Method::GET, Method::HEAD],
            statuses: [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
        }
    }
}

/// The store's settings (`edge.cache`), compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheStoreSettings {
    /// Most bytes held.
    pub max_bytes: u64,
    /// Largest body stored.
    pub max_object: u64,
}

impl Default for CacheStoreSettings {
    fn default() -> Self {
        CacheStoreSettings {
            max_bytes: 64 << 20,
            max_object: 1 << 20,
        }
    }
}
