//! Edge mode's own layers: the front (who the client is: trusted proxies,
//! `X-Forwarded-*`, `Forwarded`, `X-Request-Id`) and the edge routes
//! (match, allow / deny, redirect, rewrite, header changes, weighted split).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Settings;
use crate::http::HttpService;
use crate::route::RouteTable;

/// Who the client is, and the forwarding headers that say so upstream.
pub fn front_layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let _ = settings;
    layer_fn(|inner: HttpService| inner)
}

/// The edge routes: the first route that matches decides.
pub fn route_layer(
    routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let _ = routes;
    layer_fn(|inner: HttpService| inner)
}
