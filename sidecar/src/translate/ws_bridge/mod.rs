//! The WebSocket bridge: the proxy holds WebSocket clients and turns their
//! lifecycle and messages into REST backend calls.
//!
//! Sits right above `rest_ws` / `aggregate` / `dispatch`. A request whose
//! [`MatchedRoute`] is a `websocket_bridge:` route is answered here (other
//! requests pass through untouched): the `$connect` call decides the
//! upgrade, then a task per connection ([`session`]) reads the client's
//! messages, calls the backends through the layers below (each call
//! carries its [`Target`](crate::route::Target), so dispatch, resilience
//! and forward apply as for any request) and writes replies and pushes
//! through a bounded send queue.
//!
//! Decisions:
//! - Every backend call carries `x-mesh-connection-id` and
//!   `x-mesh-route-key` (`$connect`, `$disconnect`, `$default` or the
//!   message's key), and the headers authentication set (forwarded claims,
//!   consumer). `$connect` also gets the handshake's headers (hop-by-hop
//!   and `sec-websocket-*` removed) and its query appended to the path;
//!   `$disconnect` gets `x-mesh-close-code` / `x-mesh-close-reason` and the
//!   JSON body `{"code": .., "reason": ..}`.
//! - Text messages go as they are (`application/json` when they parse,
//!   `text/plain` otherwise); binary ones as `{"base64": ".."}` or as
//!   bytes (`application/octet-stream`) per route.
//! - A backend failure becomes the message
//!   `{"error": {"status": .., "reason": .., "route": ..}}`; the connection
//!   stays. Over `limits.rate`, a message is dropped and answered with
//!   `{"error": {"status": 429, "reason": "rate_limited"}}`.
//! - Closes: 1009 over the frame or message size, 1001 after `idle`
//!   without a frame from the client (pongs count) or at `max_duration`,
//!   1013 when the send queue overflows (a slow reader), 1000 (or the
//!   caller's code) on `DELETE /@connections/{id}`.
//! - A connection keeps the route table it was accepted with until it
//!   ends: a reload never closes it; new settings apply to new connections.
//!
//! Reads: the [`MatchedRoute`], the [`Principal`], [`ConnInfo`],
//! `edge.redis`. Writes: the connection registry ([`registry`]).
//! Errors: none travel up; the proxy answers refusals itself
//! (`426 upgrade_required`, the `$connect` status, `502` when `$connect`
//! fails).

mod api;
mod redis;
mod registry;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{Method, Request};
use mesh_api::config::BinaryMode;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Settings;
use crate::edge::action::RouteAction;
use crate::edge::MatchedRoute;
use crate::http::{Body, HttpService};

pub use api::connections_layer;
pub use registry::{hub, BridgeMetrics, Hub};

/// The header naming the connection on every backend call.
pub const X_MESH_CONNECTION_ID: &str = "x-mesh-connection-id";
/// The header naming the route key on every backend call.
pub const X_MESH_ROUTE_KEY: &str = "x-mesh-route-key";

/// A bridge route, compiled.
#[derive(Debug, Clone, Default)]
pub struct WsBridgeSettings {
    /// The JSON field path of the route selection expression.
    pub selection: Vec<String>,
    /// The `$connect` call.
    pub connect: Option<BackendCall>,
    /// The `$disconnect` call.
    pub disconnect: Option<BackendCall>,
    /// Message routes by key.
    pub routes: HashMap<String, MessageRoute>,
    /// `$default`.
    pub default: Option<MessageRoute>,
    /// Sizes, liveness, rate, send queue.
    pub limits: Limits,
    /// Who may use the connections API.
    pub api: ApiAuth,
}

/// One backend call.
#[derive(Debug, Clone)]
pub struct BackendCall {
    /// The upstream.
    pub upstream: Arc<str>,
    /// Path and query sent.
    pub path: PathAndQuery,
    /// The method.
    pub method: Method,
    /// Time the call (answer and body) may take.
    pub timeout: Duration,
}

/// A message route.
#[derive(Debug, Clone)]
pub struct MessageRoute {
    /// Its key (`x-mesh-route-key`).
    pub key: Arc<str>,
    /// The call.
    pub call: BackendCall,
    /// Two-way: the answer's body goes back to the client.
    pub reply: bool,
    /// How binary messages are sent.
    pub binary: BinaryMode,
}

/// A bridge route's limits.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Largest frame, bytes.
    pub frame: usize,
    /// Largest message, bytes.
    pub message: usize,
    /// Silence after which a client is closed.
    pub idle: Duration,
    /// Ping interval.
    pub ping: Duration,
    /// Longest connection.
    pub max_duration: Duration,
    /// Messages per window.
    pub rate: Option<(u64, Duration)>,
    /// Messages waiting for the client at most.
    pub send_queue: usize,
}

/// Credentials the connections API accepts.
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    /// `connections_api` is configured.
    pub enabled: bool,
    /// SHA-256 of the accepted bearer tokens.
    pub token_hashes: Vec<[u8; 32]>,
    /// Accepted mTLS peer identities.
    pub identities: Vec<Arc<str>>,
}

impl WsBridgeSettings {
    /// The upstreams the bridge calls.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        let mut routes: Vec<&MessageRoute> = self.routes.values().chain(&self.default).collect();
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        self.connect
            .iter()
            .chain(&self.disconnect)
            .chain(routes.into_iter().map(|route| &route.call))
            .map(|call| &*call.upstream)
    }

    /// The route a message's JSON body selects, else `$default`.
    pub fn select(&self, body: &[u8]) -> Option<&MessageRoute> {
        let key = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|json| {
                let value = self.selection.iter().try_fold(&json, |v, f| v.get(f))?;
                value.as_str().map(str::to_string)
            });
        key.and_then(|key| self.routes.get(&key))
            .or(self.default.as_ref())
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The bridge layer: answers bridge routes' upgrades, calls backends through
/// the layers below.
pub fn layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let settings = settings.clone();
        crate::http::direct_fn(move |req: Request<Body>| {
            let Some(bridge) = bridge_of(&req) else {
                return inner.call_ref(req);
            };
            let inner = inner.clone();
            let settings = settings.clone();
            Box::pin(async move {
                let redis = hub().redis(&settings);
                Ok(session::accept(bridge, req, inner, redis).await)
            })
        })
    })
}

/// The bridge settings of the request's route, if it is a bridge route.
fn bridge_of(req: &Request<Body>) -> Option<Arc<WsBridgeSettings>> {
    match &req.extensions().get::<MatchedRoute>()?.settings().action {
        RouteAction::WebsocketBridge(bridge) => Some(bridge.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: &str) -> MessageRoute {
        MessageRoute {
            key: key.into(),
            call: BackendCall {
                upstream: "web".into(),
                path: PathAndQuery::from_static("/"),
                method: Method::POST,
                timeout: Duration::from_secs(1),
            },
            reply: false,
            binary: BinaryMode::Base64,
        }
    }

    #[test]
    fn messages_select_their_route_or_the_default() {
        let settings = WsBridgeSettings {
            selection: vec!["a".into(), "b".into()],
            routes: HashMap::from([("send".to_string(), route("send"))]),
            default: Some(route("$default")),
            ..WsBridgeSettings::default()
        };
        let key = |body: &str| settings.select(body.as_bytes()).map(|r| r.key.to_string());
        assert_eq!(key(r#"{"a":{"b":"send"}}"#).as_deref(), Some("send"));
        assert_eq!(key(r#"{"a":{"b":"other"}}"#).as_deref(), Some("$default"));
        assert_eq!(key(r#"{"a":"send"}"#).as_deref(), Some("$default"));
        assert_eq!(key("not json").as_deref(), Some("$default"));
    }
}
