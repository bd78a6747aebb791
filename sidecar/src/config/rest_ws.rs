//! `edge.routes[].rest_to_websocket` validated.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::translate::rest_ws::RestWsSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::RestToWebsocket,
) -> Option<Arc<RestWsSettings>> {
    Some(Arc::new(RestWsSettings::default()))
}
