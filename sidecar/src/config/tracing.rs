//! `tracing:` validated: the OTLP collector, the sampling ratio of new
//! traces, batching and the span queue.

use std::time::Duration;

use mesh_api::config as raw;

use super::Errors;

/// The most spans `tracing.queue` may hold.
pub const MAX_TRACE_QUEUE: u32 = 65_536;

/// Distributed tracing, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector.
    pub endpoint: OtlpEndpoint,
    /// Deadline of one export, connect included.
    pub timeout: Duration,
    /// Share of new traces recorded, 0 to 1.
    pub sampling: f64,
    /// Spans sent in one export at most.
    pub max_spans: usize,
    /// The longest a finished span waits for its export.
    pub interval: Duration,
    /// Finished spans waiting for the exporter at most.
    pub queue: usize,
}

/// Where and how spans are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// OTLP/gRPC or OTLP/HTTP.
    pub protocol: raw::OtlpProtocol,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` as the `Host` / `:authority` header.
    pub authority: String,
    /// The request path.
    pub path: String,
}

/// The gRPC method spans are exported with.
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub(super) fn validate_tracing(
    errors: &mut Errors<'_>,
    raw: &raw::Tracing,
) -> Option<TracingSettings> {
    let endpoint = parse_endpoint(&raw.otlp.endpoint, raw.otlp.protocol);
    if let Err(message) = &endpoint {
        errors.push("tracing.otlp.endpoint", message.clone());
    }
    let timeout = errors.duration("tracing.otlp.timeout", &raw.otlp.timeout);
    if timeout.is_zero() {
        errors.push("tracing.otlp.timeout", "must be more than 0");
    }
    if !(0.0..=1.0).contains(&raw.sampling) {
        errors.push(
            "tracing.sampling",
            format!("must be between 0 and 1, got {}", raw.sampling),
        );
    }
    if raw.batch.max_spans == 0 {
        errors.push("tracing.batch.max_spans", "must be at least 1");
    }
    let interval = errors.duration("tracing.batch.interval", &raw.batch.interval);
    if interval.is_zero() {
        errors.push("tracing.batch.interval", "must be more than 0");
    }
    if raw.queue == 0 || raw.queue > MAX_TRACE_QUEUE {
        errors.push(
            "tracing.queue",
            format!("must be from 1 to {MAX_TRACE_QUEUE}, got {}", raw.queue),
        );
    }
    Some(TracingSettings {
        endpoint: endpoint.ok()?,
        timeout,
        sampling: raw.sampling,
        max_spans: usize::try_from(raw.batch.max_spans).unwrap_or(usize::MAX),
        interval,
        queue: usize::try_from(raw.queue).unwrap_or(usize::MAX),
    })
}

/// `host:port` or `http://host:port[/path]`; the path is the OTLP/HTTP
/// one (default `/v1/traces`), gRPC has its own.
fn parse_endpoint(text: &str, protocol: raw::OtlpProtocol) -> Result<OtlpEndpoint, String> {
    let invalid = |why: &str| format!("invalid OTLP endpoint {text:?}: {why}");
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(invalid("https is not supported (use http)")),
        Some(_) => return Err(invalid("the scheme must be http")),
        None => text,
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let parsed: http::uri::Authority = authority
        .parse()
        .map_err(|_| invalid("expected host:port"))?;
    let port = parsed.port_u16().ok_or_else(|| invalid("no port"))?;
    let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('@') {
        return Err(invalid("expected host:port"));
    }
    let path = match protocol {
        raw::OtlpProtocol::Grpc if !path.is_empty() && path != "/" => {
            return Err(invalid("a gRPC endpoint has no path"))
        }
        raw::OtlpProtocol::Grpc => GRPC_EXPORT_PATH.to_string(),
        raw::OtlpProtocol::Http if path.is_empty() || path == "/" => "/v1/traces".to_string(),
        raw::OtlpProtocol::Http => {
            if path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(invalid("invalid path"));
            }
            path.to_string()
        }
    };
    Ok(OtlpEndpoint {
        protocol,
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_both_forms() {
        let grpc = parse_endpoint("127.0.0.1:4317", raw::OtlpProtocol::Grpc).unwrap();
        assert_eq!((grpc.host.as_str(), grpc.port), ("127.0.0.1", 4317));
        assert_eq!(grpc.path, GRPC_EXPORT_PATH);
        let http = parse_endpoint("http://collector:4318", raw::OtlpProtocol::Http).unwrap();
        assert_eq!(http.path, "/v1/traces");
        assert_eq!(http.authority, "collector:4318");
        let v6 = parse_endpoint("http://[::1]:4318/x/traces", raw::OtlpProtocol::Http).unwrap();
        assert_eq!((v6.host.as_str(), v6.path.as_str()), ("::1", "/x/traces"));
        for bad in ["collector", "https://c:1", "ftp://c:1", "http://c:1/x"] {
            assert!(
                parse_endpoint(bad, raw::OtlpProtocol::Grpc).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_problem_is_named() {
        let yaml = "service: web\ntracing:\n  otlp: { endpoint: nowhere, timeout: 0s }\n  sampling: 1.5\n  batch: { max_spans: 0, interval: 0s }\n  queue: 0\n";
        let errors = crate::config::load_str(yaml).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for path in [
            "tracing.otlp.endpoint",
            "tracing.otlp.timeout",
            "tracing.sampling",
            "tracing.batch.max_spans",
            "tracing.batch.interval",
            "tracing.queue",
        ] {
            assert!(text.iter().any(|e| e.contains(path)), "{path}: {text:?}");
        }
    }
}
