//! REST → WebSocket on an edge route (`rest_to_websocket:`): requests sent
//! as messages over pooled WebSocket connections to the upstream.

use serde::{Deserialize, Serialize};

/// HTTP requests forwarded as messages over pooled WebSocket connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestToWebsocket {}
