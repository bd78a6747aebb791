//! The response cache: one in-memory store bounded in bytes, shared by the
//! routes that cache, kept across reloads in the [`crate::route::RouteTable`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;
use crate::route::RouteTable;

/// A route's caching policy, compiled.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {}

/// The store's settings (`edge.cache`), compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheStoreSettings {}

/// The shared response store.
#[derive(Default)]
pub struct CacheStore {}

impl CacheStore {
    /// The store for `settings`, keeping `previous`'s entries.
    pub fn build(_settings: Option<&CacheStoreSettings>, previous: &Arc<CacheStore>) -> Arc<Self> {
        previous.clone()
    }
}

/// The cache layer: reads the [`super::MatchedRoute`]'s policy.
pub fn layer(
    _routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
