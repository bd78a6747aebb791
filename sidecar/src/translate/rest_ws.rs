//! REST → WebSocket: an HTTP request sent as a message over a pooled
//! WebSocket connection to the upstream, answered by the correlated reply.

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// A route's REST → WebSocket settings, compiled.
#[derive(Debug, Clone, Default)]
pub struct RestWsSettings {}

/// The layer: routes with `rest_to_websocket` are answered over the pool.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
