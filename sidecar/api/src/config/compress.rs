//! A route's response compression (`compress:`) and request decompression.

use serde::{Deserialize, Serialize};

/// Response compression on a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compress {}
