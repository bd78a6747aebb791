//! REST/JSON ↔ gRPC transcoding: the API learnt from descriptors, mapped
//! by `google.api.http` rules.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Settings;
use crate::http::HttpService;

/// Transcoding settings, compiled (descriptors loaded, rules mapped).
#[derive(Debug, Clone, Default)]
pub struct GrpcJsonSettings {}

/// Transcoding on the edge: reads the [`crate::edge::MatchedRoute`]'s settings.
pub fn edge_layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}

/// Transcoding in front of the local app (`inbound.grpc_json`).
pub fn inbound_layer(
    _settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
