//! `limits:` validated: what every HTTP listener refuses (431, 414, 413)
//! and how long a client may take to send a request head; `limits.http2`,
//! what an HTTP/2 client may do to one connection; connection counts and
//! the TLS handshake rate. `overload:` validated: when new work is shed.

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
    /// HTTP/2 connection limits.
    pub http2: Http2Settings,
    /// Connections open at once across the sidecar listeners.
    pub max_connections: Option<u32>,
    /// Connections open at once per client address on a sidecar listener.
    pub max_connections_per_ip: Option<u32>,
    /// TLS handshakes started per second (inbound mTLS and edge TLS).
    pub tls_handshakes_per_second: Option<u32>,
}

/// Overload thresholds (`overload:`), each already scaled by `shed_at`:
/// shedding starts once a value reaches its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverloadSettings {
    /// Resident memory in bytes at which shedding starts; `None`: not watched.
    pub shed_rss: Option<u64>,
    /// Requests in flight at which new ones are shed; `None`: not watched.
    pub shed_requests: Option<u64>,
}

/// HTTP/2 limits per downstream connection (`limits.http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the proxy announces.
    pub max_concurrent_streams: u32,
    /// Control frames per second before GOAWAY(ENHANCE_YOUR_CALM).
    pub max_control_frames_per_second: u32,
    /// Streams reset before being accepted (rapid reset) before GOAWAY.
    pub max_pending_resets: usize,
    /// Encoded header block bytes (HEADERS + CONTINUATION) before GOAWAY.
    pub max_header_block: usize,
    /// Keep-alive PING interval.
    pub keepalive_interval: Duration,
    /// Keep-alive PING answer deadline.
    pub keepalive_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_control_frames_per_second: 1000,
            max_pending_resets: 20,
            max_header_block: 256 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri: 8 * 1024,
            max_body: None,
            header_timeout: Duration::from_secs(10),
            http2: Http2Settings::default(),
            max_connections: None,
            max_connections_per_ip: None,
            tls_handshakes_per_second: None,
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
    let http2 = validate_http2(errors, &raw.http2);
    let counts = [
        ("max_connections", raw.max_connections),
        ("max_connections_per_ip", raw.max_connections_per_ip),
        ("tls_handshakes_per_second", raw.tls_handshakes_per_second),
    ];
    for (field, value) in counts {
        if value == Some(0) {
            errors.push(&format!("limits.{field}"), "must be at least 1");
        }
    }
    LimitSettings {
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_headers: usize::try_from(raw.max_headers).unwrap_or(usize::MAX),
        max_uri: usize::try_from(max_uri).unwrap_or(usize::MAX),
        max_body: (max_body > 0).then_some(max_body),
        header_timeout,
        http2,
        max_connections: raw.max_connections,
        max_connections_per_ip: raw.max_connections_per_ip,
        tls_handshakes_per_second: raw.tls_handshakes_per_second,
    }
}

/// `overload:`: `shed_at` in (0, 1], at least one threshold, each more than 0.
pub(super) fn validate_overload(errors: &mut Errors<'_>, raw: &raw::Overload) -> OverloadSettings {
    if !(raw.shed_at > 0.0 && raw.shed_at <= 1.0) {
        errors.push(
            "overload.shed_at",
            format!("must be more than 0 and at most 1, got {}", raw.shed_at),
        );
    }
    let max_rss = parse_size(&raw.max_rss).unwrap_or_else(|err| {
        errors.push("overload.max_rss", err);
        0
    });
    if raw.max_active_requests == Some(0) {
        errors.push("overload.max_active_requests", "must be at least 1");
    }
    if max_rss == 0 && raw.max_active_requests.is_none() {
        errors.push(
            "overload",
            "needs max_rss or max_active_requests (or leave the section out)",
        );
    }
    let scale = |limit: u64| ((limit as f64 * raw.shed_at).ceil() as u64).max(1);
    OverloadSettings {
        shed_rss: (max_rss > 0).then(|| scale(max_rss)),
        shed_requests: raw.max_active_requests.filter(|n| *n > 0).map(scale),
    }
}

/// `limits.http2`: every count at least 1, every duration more than 0.
fn validate_http2(errors: &mut Errors<'_>, raw: &raw::Http2Limits) -> Http2Settings {
    let counts = [
        ("max_concurrent_streams", raw.max_concurrent_streams),
        (
            "max_control_frames_per_second",
            raw.max_control_frames_per_second,
        ),
        ("max_pending_resets", raw.max_pending_resets),
    ];
    for (field, value) in counts {
        if value == 0 {
            errors.push(&format!("limits.http2.{field}"), "must be at least 1");
        }
    }
    let max_header_block = parse_size(&raw.max_header_block).unwrap_or_else(|err| {
        errors.push("limits.http2.max_header_block", err);
        0
    });
    if max_header_block < MIN_HEADER_BYTES {
        errors.push(
            "limits.http2.max_header_block",
            format!("must be at least 8KiB, got {:?}", raw.max_header_block),
        );
    }
    let mut duration = |field: &str, text: &str| {
        let path = format!("limits.http2.{field}");
        let value = errors.duration(&path, text);
        if value.is_zero() {
            errors.push(&path, "must be more than 0");
        }
        value
    };
    let keepalive_interval = duration("keepalive_interval", &raw.keepalive_interval);
    let keepalive_timeout = duration("keepalive_timeout", &raw.keepalive_timeout);
    Http2Settings {
        max_concurrent_streams: raw.max_concurrent_streams,
        max_control_frames_per_second: raw.max_control_frames_per_second,
        max_pending_resets: usize::try_from(raw.max_pending_resets).unwrap_or(usize::MAX),
        max_header_block: usize::try_from(max_header_block).unwrap_or(usize::MAX),
        keepalive_interval,
        keepalive_timeout,
    }
}
