//! Body transformation on a route (`transform:`): XML ↔ JSON, SOAP ↔ REST,
//! JSON reshaping.

use serde::{Deserialize, Serialize};

/// What a route does to request and response bodies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {}
