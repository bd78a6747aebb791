//! REST → WebSocket on an edge route (`rest_to_websocket:`): requests sent
//! as messages over pooled WebSocket connections to the upstream.

use serde::{Deserialize, Serialize};

/// HTTP requests forwarded as messages over pooled WebSocket connections
/// to the route's upstream (`to:`); the correlated reply is the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestToWebsocket {
    /// The WebSocket path on the upstream (default: the request's path,
    /// so each path gets its own connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The JSON field carrying the correlation id in requests and replies
    /// (default `id`).
    #[serde(default = "default_correlation")]
    pub correlation: String,
    /// How long a request waits for its reply (default `10s`); then 504.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// The WebSocket connections kept for the route.
    #[serde(default)]
    pub pool: RestWsPool,
    /// What a request becomes: `envelope` (method, path, query, headers
    /// and body in one object) or `body` (the JSON body, id added).
    #[serde(default)]
    pub message: RestWsMessage,
    /// Largest request body (default `1MiB`); larger: 413.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_size"
    )]
    pub max_body: Option<String>,
}

impl Default for RestToWebsocket {
    fn default() -> Self {
        RestToWebsocket {
            path: None,
            correlation: default_correlation(),
            timeout: default_timeout(),
            pool: RestWsPool::default(),
            message: RestWsMessage::default(),
            max_body: None,
        }
    }
}

/// The route's WebSocket connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestWsPool {
    /// Connections kept open at most (default 4); requests share them.
    #[serde(default = "default_pool_size")]
    pub size: u32,
    /// A connection without requests for this long is closed (default `60s`).
    #[serde(default = "default_pool_idle")]
    pub idle: String,
    /// Interval of the keepalive ping (default `20s`); a connection that
    /// sent nothing back since the previous ping is dropped.
    #[serde(default = "default_pool_ping")]
    pub ping: String,
}

impl Default for RestWsPool {
    fn default() -> Self {
        RestWsPool {
            size: default_pool_size(),
            idle: default_pool_idle(),
            ping: default_pool_ping(),
        }
    }
}

/// The shape of the message a request becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestWsMessage {
    /// `{"<id>", "method", "path", "query", "headers", "body"}`; a reply
    /// with a `status` is unwrapped into status, headers and body.
    #[default]
    Envelope,
    /// The request's JSON object body with the correlation field added;
    /// the reply is the response body.
    Body,
}

fn default_correlation() -> String {
    "id".into()
}
fn default_timeout() -> String {
    "10s".into()
}
fn default_pool_size() -> u32 {
    4
}
fn default_pool_idle() -> String {
    "60s".into()
}
fn default_pool_ping() -> String {
    "20s".into()
}
