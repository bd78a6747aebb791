//! `GET /connections`: the WebSocket bridge's open connections on this
//! process (`mesh-ctl connections`).

use serde_json::{json, Value};

/// The open bridged connections, oldest first.
pub(super) fn list() -> Value {
    let connections: Vec<Value> = crate::translate::ws_bridge::hub()
        .records()
        .iter()
        .map(|record| record.info())
        .collect();
    json!({ "connections": connections })
}
