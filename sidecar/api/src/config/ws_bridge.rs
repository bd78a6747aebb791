//! The WebSocket bridge on an edge route (`websocket_bridge:`): the proxy
//! holds WebSocket clients and calls REST backends.

use serde::{Deserialize, Serialize};

/// WebSocket clients bridged to REST backend calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketBridge {}
