//! The WebSocket bridge on an edge route (`websocket_bridge:`): the proxy
//! holds WebSocket clients and calls REST backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// WebSocket clients bridged to REST backend calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketBridge {
    /// Picks a message's route key from its JSON body:
    /// `$request.body.<dotted.field>`.
    #[serde(default = "default_route_selection")]
    pub route_selection: String,
    /// Called on the upgrade (`$connect`); a non-2xx answer refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<BridgeCall>,
    /// Told when a connection ends (`$disconnect`), best effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<BridgeCall>,
    /// Message routes by route key; `$default` takes the rest.
    #[serde(default)]
    pub routes: BTreeMap<String, BridgeRoute>,
    /// Sizes, liveness, rate and the send queue.
    #[serde(default)]
    pub limits: BridgeLimits,
    /// Who may use `/@connections/{id}`; without it nobody may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_api: Option<ConnectionsApi>,
}

impl Default for WebsocketBridge {
    fn default() -> Self {
        WebsocketBridge {
            route_selection: default_route_selection(),
            connect: None,
            disconnect: None,
            routes: BTreeMap::new(),
            limits: BridgeLimits::default(),
            connections_api: None,
        }
    }
}

fn default_route_selection() -> String {
    "$request.body.action".into()
}

/// A backend call of the lifecycle (`connect`, `disconnect`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeCall {
    /// The upstream.
    pub to: String,
    /// The path (and query) sent.
    pub path: String,
    /// The method; default `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Time the call may take; default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A message route: the backend call a message becomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeRoute {
    /// The upstream.
    pub to: String,
    /// The path (and query) sent.
    pub path: String,
    /// The method; default `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Two-way: the backend's answer body goes back as a message.
    #[serde(default)]
    pub reply: bool,
    /// How binary messages are sent: `base64` (a JSON envelope) or `bytes`.
    #[serde(default)]
    pub binary: BinaryMode,
    /// Time the call may take; default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// How a binary message reaches the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryMode {
    /// `{"base64": "..."}`, `application/json`.
    #[default]
    Base64,
    /// The bytes, `application/octet-stream`.
    Bytes,
}

/// A bridge route's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeLimits {
    /// Largest frame (close 1009 over it).
    #[serde(default = "default_frame")]
    pub frame: String,
    /// Largest message (close 1009 over it).
    #[serde(default = "default_message")]
    pub message: String,
    /// A client silent this long (no message, no pong) is closed (1001).
    #[serde(default = "default_idle")]
    pub idle: String,
    /// How often the proxy pings the client.
    #[serde(default = "default_ping")]
    pub ping: String,
    /// Longest connection (closed with 1001 then).
    #[serde(default = "default_max_duration")]
    pub max_duration: String,
    /// Messages per connection (`10/s`); excess ones get an error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Messages waiting for a slow reader; then it is closed (1013).
    #[serde(default = "default_send_queue")]
    pub send_queue: usize,
}

impl Default for BridgeLimits {
    fn default() -> Self {
        BridgeLimits {
            frame: default_frame(),
            message: default_message(),
            idle: default_idle(),
            ping: default_ping(),
            max_duration: default_max_duration(),
            rate: None,
            send_queue: default_send_queue(),
        }
    }
}

fn default_frame() -> String {
    "64KiB".into()
}
fn default_message() -> String {
    "256KiB".into()
}
fn default_idle() -> String {
    "10m".into()
}
fn default_ping() -> String {
    "30s".into()
}
fn default_max_duration() -> String {
    "2h".into()
}
fn default_send_queue() -> usize {
    256
}

/// Who may call the connections API: a bearer token (plain or its
/// SHA-256 in hex) or a verified mesh identity (mTLS peer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsApi {
    /// Accepted bearer tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// Accepted bearer tokens' SHA-256, hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_sha256: Vec<String>,
    /// Accepted SPIFFE IDs of mTLS peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}
