//! REST/JSON ↔ gRPC transcoding (`grpc_json:` on the inbound listener or an
//! edge route): where the descriptors come from and how JSON is written.

use serde::{Deserialize, Serialize};

/// Transcoding settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcJson {}
