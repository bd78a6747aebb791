//! Response compression (gzip, brotli, zstd) chosen from `Accept-Encoding`,
//! and request decompression, per route.

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// A route's compression settings, compiled.
#[derive(Debug, Clone, Default)]
pub struct CompressSettings {}

/// The compression layer: reads the [`super::MatchedRoute`]'s settings.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
