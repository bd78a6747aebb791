//! `edge.routes[].transform` validated.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::edge::transform::TransformSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::Transform,
) -> Option<Arc<TransformSettings>> {
    Some(Arc::new(TransformSettings::default()))
}
