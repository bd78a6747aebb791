//! WebSocket ↔ REST translation on edge routes: the bridge that holds
//! WebSocket clients and calls REST backends (`websocket_bridge:`), and
//! REST requests answered over a WebSocket upstream (`rest_to_websocket:`).

use serde::{Deserialize, Serialize};

/// WebSocket clients bridged to REST backend calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketBridge {}

/// HTTP requests forwarded as messages over pooled WebSocket connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestToWebsocket {}
