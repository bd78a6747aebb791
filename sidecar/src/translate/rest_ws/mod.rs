//! REST → WebSocket: an HTTP request sent as a message over a pooled
//! WebSocket connection to the upstream, answered by the correlated reply.
//!
//! Sits in the edge stack right above `aggregate` and `dispatch`. A request
//! whose [`MatchedRoute`] has `rest_to_websocket` is answered here; other
//! requests pass through after one extension lookup.
//!
//! A route keeps up to `pool.size` WebSocket connections per upstream
//! cluster and WebSocket path ([`pool`]). A request reads its body (at most
//! `max_body`), becomes a message carrying a fresh correlation id
//! ([`message`]), is sent on the least busy connection, and waits for the
//! reply with that id; one task per connection reads the replies and hands
//! each to the request waiting for its id ([`connection`]), so many
//! requests share a connection, answered in any order.
//!
//! Decisions:
//! - The handshake is sent by the cluster's own connection pool to an
//!   endpoint its balancer picks (plain, mesh mTLS or public TLS as the
//!   upstream says), not through the layers below: `forward` splices an
//!   upgraded upstream to the caller's own upgraded connection and never
//!   hands the upstream's back, and a request made here has no caller
//!   connection to splice.
//! - The connections belong to the compiled settings: a reload opens new
//!   ones on demand; the old ones close when their settings are dropped.
//! - The whole exchange (opening a connection included) is bounded by
//!   `timeout`.
//!
//! Reads: the [`MatchedRoute`] (settings, cluster, authority), the request.
//! Writes: nothing below; the response is built here.
//! Errors: [`RestWsError`] (504 `upstream_timeout`, 502 `upstream_reset`,
//! 502 `upstream_upgrade_refused`, 400, 502 `bad_upstream_body`),
//! `HygieneError::BodyTooLarge` (413), the pool's `ConnectError`.

mod connection;
mod message;
mod metrics;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use mesh_api::config::RestWsMessage;
use tower::layer::layer_fn;
use tower::Layer;

use crate::cluster::Cluster;
use crate::edge::MatchedRoute;
use crate::http::{Body, HttpService};
use crate::route::RouteError;
use crate::BoxError;

pub use message::ENVELOPE_KEYS;
pub use metrics::{metrics, RestWsMetrics};
pub use pool::Pools;

/// Why a request could not be answered over WebSocket.
#[derive(Debug, thiserror::Error)]
pub enum RestWsError {
    /// No reply within the route's timeout (504 `upstream_timeout`).
    #[error("the WebSocket upstream did not reply in time")]
    Timeout,
    /// The connection closed before the reply came (502 `upstream_reset`).
    #[error("the WebSocket connection closed before the reply")]
    ConnectionLost,
    /// The upstream answered the handshake without switching protocols
    /// (502 `upstream_upgrade_refused`).
    #[error("the upstream refused the WebSocket upgrade (status {0})")]
    UpgradeRefused(StatusCode),
    /// The request body cannot become the message (400).
    #[error("{0}")]
    BadRequestBody(&'static str),
    /// The reply is an envelope that is not a valid response (502 `bad_upstream_body`).
    #[error("the WebSocket reply is not a valid response: {0}")]
    BadReply(&'static str),
    /// Too many WebSocket paths hold connections for this route (503 `circuit_open`).
    #[error("too many WebSocket paths are open for this route")]
    TooManyPaths,
}

/// A route's REST → WebSocket settings, compiled.
#[derive(Debug)]
pub struct RestWsSettings {
    /// The WebSocket path on the upstream; `None`: the request's path.
    pub path: Option<String>,
    /// The JSON field carrying the correlation id.
    pub correlation: Arc<str>,
    /// Time for the whole exchange.
    pub timeout: Duration,
    /// What a request becomes.
    pub message: RestWsMessage,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// The connections.
    pub pools: Pools,
}

/// The pool's limits, compiled.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Connections per upstream cluster and WebSocket path.
    pub size: usize,
    /// A connection without requests for this long closes.
    pub idle: Duration,
    /// Keepalive ping interval.
    pub ping: Duration,
}

/// Default `max_body`: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 4,
            idle: Duration::from_secs(60),
            ping: Duration::from_secs(20),
        }
    }
}

impl Default for RestWsSettings {
    fn default() -> Self {
        RestWsSettings {
            path: None,
            correlation: Arc::from("id"),
            timeout: Duration::from_secs(10),
            message: RestWsMessage::Envelope,
            max_body: DEFAULT_MAX_BODY,
            pools: Pools::new(PoolSettings::default(), Arc::from("id")),
        }
    }
}

/// The layer: routes with `rest_to_websocket` are answered over the pool.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let settings = settings_of(&req);
            match settings {
                None => inner.call_ref(req),
                Some(settings) => Box::pin(async move { answer(&settings, req).await }),
            }
        })
    })
}

/// The matched route's REST → WebSocket settings, if it has them.
fn settings_of(req: &Request<Body>) -> Option<Arc<RestWsSettings>> {
    req.extensions()
        .get::<MatchedRoute>()?
        .settings()
        .rest_ws
        .clone()
}

/// Answers one request over a pooled connection.
async fn answer(settings: &RestWsSettings, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    let (head, body) = req.into_parts();
    let matched = head
        .extensions
        .get::<MatchedRoute>()
        .ok_or(crate::edge::EdgeError::NoRoute)?;
    let (cluster, authority) = upstream_of(matched)?;
    if let Some(info) = head.extensions.get::<crate::telemetry::RequestInfo>() {
        info.set_upstream(cluster.name().clone());
    }
    let body = message::read_body(body, settings.max_body).await?;
    let ws_path = settings
        .path
        .clone()
        .unwrap_or_else(|| head.uri.path().to_string());
    let pool = settings.pools.get(cluster.name(), &ws_path)?;
    let id = pool.next_id();
    let text = match settings.message {
        RestWsMessage::Envelope => message::envelope(&head, &body, &settings.correlation, &id)?,
        RestWsMessage::Body => message::body_message(&body, &settings.correlation, &id)?,
    };
    let target = pool::Upstream {
        cluster,
        authority,
        path: ws_path,
    };
    let exchange = async {
        let connection = pool.connection(&target).await?;
        Ok::<_, BoxError>(connection.call(id, text).await?)
    };
    let reply = tokio::time::timeout(settings.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(RestWsError::Timeout.into()));
    metrics().outcome(outcome(&reply));
    Ok(message::response(
        reply?,
        settings.message == RestWsMessage::Envelope,
    )?)
}

/// The cluster the route forwards to (weighted pick) and the `Host` its
/// handshake carries: the route's host rewrite, else the client's.
fn upstream_of(matched: &MatchedRoute) -> Result<(Arc<Cluster>, Authority), RouteError> {
    let route = matched.settings();
    let unroutable = || RouteError::NoRoute(format!("route {}", route.name));
    let cluster = matched.forward_cluster().ok_or_else(unroutable)?;
    let authority = match (&route.host_rewrite, matched.authority()) {
        (Some(host), _) | (None, Some(host)) => host.clone(),
        (None, None) => Authority::try_from(&**cluster.name()).map_err(|_| unroutable())?,
    };
    Ok((cluster, authority))
}

/// The `outcome` label of a finished exchange.
fn outcome(result: &Result<serde_json::Value, BoxError>) -> &'static str {
    match result {
        Ok(_) => "reply",
        Err(err) => match err.downcast_ref::<RestWsError>() {
            Some(RestWsError::Timeout) => "timeout",
            Some(RestWsError::ConnectionLost) => "connection_lost",
            Some(RestWsError::UpgradeRefused(_)) => "refused",
            _ => "error",
        },
    }
}
