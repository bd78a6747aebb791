//! `edge.routes[].compress` validated.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::edge::compress::CompressSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::Compress,
) -> Option<Arc<CompressSettings>> {
    Some(Arc::new(CompressSettings::default()))
}
