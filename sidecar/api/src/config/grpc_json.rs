//! REST/JSON ↔ gRPC transcoding (`grpc_json:` on the inbound listener or an
//! edge route): where the descriptors come from and how JSON is written.

use serde::{Deserialize, Serialize};

/// Transcoding settings. Exactly one descriptor source: `protos`,
/// `descriptor_set` or `reflection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcJson {
    /// `.proto` files compiled at load (names relative to an `include` path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protos: Vec<String>,
    /// Import paths for `protos`, relative to the config file's directory;
    /// `google/api/{annotations,http}.proto` and the well-known types are
    /// always available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// A binary `FileDescriptorSet` (`protoc --include_imports -o x.pb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_set: Option<String>,
    /// Fetch descriptors from the upstream by gRPC server reflection (v1,
    /// falling back to v1alpha) at first use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reflection: bool,
    /// Only these services (`package.Service`) are transcoded; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// How response JSON is written.
    #[serde(default)]
    pub print: GrpcJsonPrint,
    /// Server-stream format; unset: by `Accept` (`text/event-stream` for
    /// SSE, else NDJSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<GrpcJsonStream>,
    /// Request headers sent to the upstream as gRPC metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Largest JSON request body of a unary or server-streaming call
    /// (`4MiB` by default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_size"
    )]
    pub max_body: Option<String>,
}

/// How messages are printed as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcJsonPrint {
    /// Print fields holding their default value (`0`, `""`, `[]`).
    #[serde(default)]
    pub emit_defaults: bool,
    /// Keep the `.proto` field names (`page_size`) instead of lowerCamelCase.
    #[serde(default)]
    pub proto_names: bool,
}

/// The body format of a server stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrpcJsonStream {
    /// `application/x-ndjson`: one JSON message per line.
    Ndjson,
    /// `text/event-stream`: one `data:` event per message.
    Sse,
}
