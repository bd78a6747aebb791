//! `limits:` validated: what every HTTP listener refuses (431, 414, 413)
//! and how long a client may take to send a request head.

use std::time::Duration;

use mesh_api::config as raw;
use mesh_api::units::parse_size;

use super::Errors;

/// Request limits of every HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// Request line and headers together, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Header fields (431 beyond).
    pub max_headers: usize,
    /// Request target length in bytes (414 beyond).
    pub max_uri: usize,
    /// Request body in bytes (413 beyond); `None`: no limit.
    pub max_body: Option<u64>,
    /// Time to send the request head; the connection closes after it.
    pub header_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri: 8 * 1024,
            max_body: None,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The smallest header buffer the HTTP/1 parser accepts.
const MIN_HEADER_BYTES: u64 = 8 * 1024;

pub(super) fn validate_limits(errors: &mut Errors<'_>, raw: &raw::RequestLimits) -> LimitSettings {
    let mut size = |field: &str, text: &str| {
        parse_size(text).unwrap_or_else(|err| {
            errors.push(&format!("limits.{field}"), err);
            0
        })
    };
    let max_header_bytes = size("max_header_bytes", &raw.max_header_bytes);
    let max_uri = size("max_uri", &raw.max_uri);
    let max_body = size("max_body", &raw.max_body);
    if max_header_bytes < MIN_HEADER_BYTES {
        errors.push(
            "limits.max_header_bytes",
            format!("must be at least 8KiB, got {:?}", raw.max_header_bytes),
        );
    }
    if max_uri == 0 {
        errors.push("limits.max_uri", "must be more than 0");
    }
    if raw.max_headers == 0 {
        errors.push("limits.max_headers", "must be at least 1");
    }
    let header_timeout = errors.duration("limits.header_timeout", &raw.header_timeout);
    if header_timeout.is_zero() {
        errors.push("limits.header_timeout", "must be more than 0");
    }
    LimitSettings {
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_headers: usize::try_from(raw.max_headers).unwrap_or(usize::MAX),
        max_uri: usize::try_from(max_uri).unwrap_or(usize::MAX),
        max_body: (max_body > 0).then_some(max_body),
        header_timeout,
    }
}
