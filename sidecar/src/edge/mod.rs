//! Edge mode's own layers: the front (who the client is: trusted proxies,
//! `X-Forwarded-*`, `Forwarded`, `X-Request-Id`) and the edge routes
//! (match, allow / deny, redirect, rewrite, header changes, weighted split).
//! Their compiled parts (`matcher`, `rewrite`, `action`) are built by
//! config validation, never per request.

pub mod action;
pub mod aggregate;
pub mod cache;
pub mod compress;
pub mod cors;
mod front;
pub mod matcher;
pub mod rewrite;
mod route;
pub mod transform;

pub use front::{front_layer, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
pub use route::{admits, dispatch_layer, route_layer, EdgeError, EdgeRoutes, MatchedRoute};
