//! Inbound policy, between the errors layer and routing: who the caller is
//! and whether it may make this request.
//! Reads: the connection's verified peer identity ([`ConnInfo`]) and the
//! running `inbound.authz` rules (reloaded with the config).
//! Writes: `x-mesh-peer-identity` to the app: always stripped from what the
//! caller sent, set only from a verified certificate; a denial into
//! [`RequestInfo`](crate::telemetry::RequestInfo) (`mesh_policy_denials_total`).
//! Errors: [`Forbidden`] (403, gRPC `PERMISSION_DENIED`).

pub mod auth;
pub mod authz;
pub mod rate_limit;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request};
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Settings;
use crate::http::{Body, ConnInfo, HttpService};

/// The header that tells the app who called.
pub const PEER_IDENTITY: http::HeaderName = http::HeaderName::from_static("x-mesh-peer-identity");

/// The caller may not make this request.
#[derive(Debug, thiserror::Error)]
#[error("the caller is not allowed to make this request")]
pub struct Forbidden;

/// The inbound policy layer.
pub fn layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let settings = settings.clone();
        crate::http::direct_fn(move |mut req: Request<Body>| {
            let caller = req
                .extensions()
                .get::<ConnInfo>()
                .and_then(|c| c.peer_identity.clone());
            let allowed = settings
                .load()
                .inbound
                .as_ref()
                .and_then(|i| i.authz.as_ref())
                .is_none_or(|rules| {
                    let access = authz::Access::Http {
                        method: req.method().as_str(),
                        path: req.uri().path(),
                    };
                    authz::allows(rules, caller.as_deref(), access)
                });
            if !allowed {
                if let Some(info) = req.extensions().get::<crate::telemetry::RequestInfo>() {
                    info.set_denied("authz", "forbidden");
                }
            }
            let headers = req.headers_mut();
            headers.remove(&PEER_IDENTITY);
            if let Some(value) = caller
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
            {
                headers.insert(PEER_IDENTITY, value);
            }
            if !allowed {
                tracing::debug!(caller = ?caller, "request denied by authz");
                return crate::http::ready(Err(Forbidden.into()));
            }
            inner.call_ref(req)
        })
    })
}
