//! A route's response compression (`compress:`) and request decompression.
//!
//! Two spellings: the short form lists the encodings in the server's order
//! of preference (`compress: [br, zstd, gzip]`), the long form is a map
//! (`compress: { encodings: [...], min_size: 1KiB, ... }`). A visitor takes
//! either, so a mistake inside is reported at its own path
//! (`edge.routes[0].compress[1]: unknown variant ...`) rather than as
//! "did not match any variant".

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A content coding the edge compresses responses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Brotli (`br`).
    Br,
    /// Zstandard (`zstd`).
    Zstd,
    /// gzip (`gzip`).
    Gzip,
}

impl Encoding {
    /// The coding's name in `Accept-Encoding` / `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Response compression on a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compress {
    /// Encodings offered, in the server's order of preference (which breaks
    /// ties between codings the client accepts equally).
    pub encodings: Vec<Encoding>,
    /// Responses declaring a smaller `Content-Length` are sent as they are;
    /// responses of unknown length are compressed.
    pub min_size: String,
    /// Content types compressed (`text/*` covers a whole type; parameters
    /// such as `charset` are ignored).
    pub content_types: Vec<String>,
    /// Compression level per encoding.
    pub level: CompressLevel,
    /// Request bodies sent with `Content-Encoding: gzip | br | zstd` are
    /// decoded before forwarding (415 for other codings, 400 for corrupt
    /// data, 413 past the route's `max_body` or `max_decoded`).
    pub decompress_requests: bool,
    /// Largest decoded request body when the route sets no `max_body`.
    pub max_decoded: String,
    /// Written as the short list form (validation errors then name
    /// `compress[i]` rather than `compress.encodings[i]`).
    #[serde(skip)]
    pub list_form: bool,
}

impl Default for Compress {
    fn default() -> Self {
        Self {
            encodings: default_encodings(),
            min_size: default_min_size(),
            content_types: default_content_types(),
            level: CompressLevel::default(),
            decompress_requests: false,
            max_decoded: default_max_decoded(),
            list_form: false,
        }
    }
}

/// Compression levels; omitted: a level suited to compressing on the fly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressLevel {
    /// gzip, 1 (fastest) to 9 (smallest); default 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<u32>,
    /// Brotli, 0 to 11; default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<u32>,
    /// Zstandard, 1 to 19; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd: Option<i32>,
}

/// The long form as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressMap {
    #[serde(default = "default_encodings")]
    encodings: Vec<Encoding>,
    #[serde(default = "default_min_size", deserialize_with = "super::size")]
    min_size: String,
    #[serde(default = "default_content_types")]
    content_types: Vec<String>,
    #[serde(default)]
    level: CompressLevel,
    #[serde(default)]
    decompress_requests: bool,
    #[serde(default = "default_max_decoded", deserialize_with = "super::size")]
    max_decoded: String,
}

impl<'de> Deserialize<'de> for Compress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CompressVisitor)
    }
}

struct CompressVisitor;

impl<'de> Visitor<'de> for CompressVisitor {
    type Value = Compress;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of encodings ([br, zstd, gzip]) or a map with `encodings`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Compress, A::Error> {
        let mut encodings = Vec::new();
        while let Some(encoding) = seq.next_element::<Encoding>()? {
            encodings.push(encoding);
        }
        Ok(Compress {
            encodings,
            list_form: true,
            ..Compress::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Compress, A::Error> {
        let written = CompressMap::deserialize(MapAccessDeserializer::new(map))?;
        Ok(Compress {
            encodings: written.encodings,
            min_size: written.min_size,
            content_types: written.content_types,
            level: written.level,
            decompress_requests: written.decompress_requests,
            max_decoded: written.max_decoded,
            list_form: false,
        })
    }
}

fn default_encodings() -> Vec<Encoding> {
    vec![Encoding::Br, Encoding::Zstd, Encoding::Gzip]
}

fn default_min_size() -> String {
    "1KiB".into()
}

fn default_max_decoded() -> String {
    "10MiB".into()
}

fn default_content_types() -> Vec<String> {
    [
        "text/*",
        "application/json",
        "application/*+json",
        "application/javascript",
        "application/xml",
        "application/*+xml",
        "application/x-ndjson",
        "application/wasm",
        "image/svg+xml",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms() {
        let short: Compress = serde_norway::from_str("[gzip, br]").unwrap();
        assert_eq!(short.encodings, [Encoding::Gzip, Encoding::Br]);
        assert!(short.list_form);
        assert_eq!(short.min_size, "1KiB");
        let long: Compress =
            serde_norway::from_str("{ min_size: 512, decompress_requests: true }").unwrap();
        assert_eq!(long.encodings, default_encodings());
        assert_eq!(long.min_size, "512");
        assert!(long.decompress_requests && !long.list_form);
        let err = serde_norway::from_str::<Compress>("[gzip, lz4]").unwrap_err();
        assert!(err.to_string().contains("unknown variant `lz4`"), "{err}");
        let err = serde_norway::from_str::<Compress>("{ encoding: [gzip] }").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `encoding`"),
            "{err}"
        );
    }
}
