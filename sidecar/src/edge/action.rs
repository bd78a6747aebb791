//! What an edge route does once it matched, compiled: forward (one
//! upstream or a weighted split) or answer with a redirect. Built by config
//! validation (`config::edge_routes`), carried out by the routing layer.

use std::sync::Arc;

use http::header::HeaderValue;
use http::StatusCode;

use super::rewrite::PathRewrite;

/// What a route does once it matched.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one of these upstreams, picked by weight (`to` is one
    /// target of weight 1).
    Forward(Vec<SplitSettings>),
    /// Answer with a redirect.
    Redirect(RedirectSettings),
    /// Hold WebSocket clients, calling REST backends.
    WebsocketBridge(Arc<crate::translate::ws_bridge::WsBridgeSettings>),
    /// Call several upstreams and merge their answers.
    Aggregate(Arc<super::aggregate::AggregateSettings>),
}

/// One side of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSettings {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// Relative share.
    pub weight: u32,
}

/// A redirect answer, compiled.
#[derive(Debug, Clone)]
pub struct RedirectSettings {
    /// The whole `Location`, when given as one URL.
    pub to: Option<HeaderValue>,
    /// `http` or `https`; `None`: the request's.
    pub scheme: Option<&'static str>,
    /// Host; `None`: the request's.
    pub host: Option<String>,
    /// Port; `None`: the request's when neither scheme nor host changes,
    /// else the scheme's default.
    pub port: Option<u16>,
    /// New path (whole, with captures, or a prefix replaced); `None`: the request's.
    pub path: Option<PathRewrite>,
    /// Drop the query string.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}
