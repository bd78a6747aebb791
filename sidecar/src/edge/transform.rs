//! Body transformation on a route: XML ↔ JSON, SOAP ↔ REST, JSON reshaping.

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// A route's transformation, compiled.
#[derive(Debug, Clone, Default)]
pub struct TransformSettings {}

/// The transformation layer: reads the [`super::MatchedRoute`]'s settings.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
