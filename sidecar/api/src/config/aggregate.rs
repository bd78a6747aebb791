//! An aggregation route (`aggregate:`): several upstream calls merged into
//! one JSON response.

use serde::{Deserialize, Serialize};

/// Parts called concurrently (or chained) and merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {}
