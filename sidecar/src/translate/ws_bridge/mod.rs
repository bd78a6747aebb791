//! The WebSocket bridge: the proxy holds WebSocket clients and turns their
//! lifecycle and messages into REST backend calls.

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// A bridge route, compiled.
#[derive(Debug, Clone, Default)]
pub struct WsBridgeSettings {}

impl WsBridgeSettings {
    /// The upstreams the bridge calls.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        std::iter::empty()
    }
}

/// The bridge layer: answers bridge routes' upgrades, calls backends through
/// the layers below.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
