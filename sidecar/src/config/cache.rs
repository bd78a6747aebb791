//! `edge.cache` and `edge.routes[].cache` validated.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::edge::cache::{CacheSettings, CacheStoreSettings};

pub(super) fn validate_store(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::CacheStore,
) -> CacheStoreSettings {
    CacheStoreSettings::default()
}

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::Cache,
) -> Option<Arc<CacheSettings>> {
    Some(Arc::new(CacheSettings::default()))
}
