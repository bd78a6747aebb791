//! Aggregation routes: several upstream calls (concurrent, or chained on an
//! earlier part's result) merged into one JSON response.

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// An aggregation, compiled.
#[derive(Debug, Clone, Default)]
pub struct AggregateSettings {}

impl AggregateSettings {
    /// The upstreams the parts call, in part order.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        std::iter::empty()
    }
}

/// The aggregation layer: answers aggregate routes by calling the layers
/// below once per part.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
