//! The one place a proxy error becomes a response: a status, an
//! `x-mesh-error` reason and a JSON body (or, for gRPC callers, a
//! trailers-only gRPC status). Errors are recognised by type (downcast),
//! never by message text. Bodies say what went wrong without internal
//! addresses or versions; the log has the details.

use std::fmt::Write as _;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::http::{full, Body, HttpService, RequestError};
use crate::{connect, forward, policy, resilience, route, BoxError};

/// Response header naming why the proxy itself answered.
pub const REASON_HEADER: &str = "x-mesh-error";

/// Machine-readable reasons, stable for dashboards and clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request is malformed.
    BadRequest,
    /// Authorization denied the caller.
    Forbidden,
    /// The upstream proxy proved another identity than the one it must have.
    UpstreamIdentity,
    /// No upstream is configured for the request's target.
    NoRoute,
    /// The cluster has no endpoint to send to.
    NoHealthyEndpoints,
    /// The cluster is at a circuit-breaker limit.
    CircuitOpen,
    /// No answer within the deadline.
    UpstreamTimeout,
    /// Connecting to the chosen endpoint failed or timed out.
    UpstreamConnectFailed,
    /// The upstream closed or reset the request before answering.
    UpstreamReset,
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocolError,
    /// A bug or an unexpected state in the proxy.
    Internal,
}

impl Reason {
    /// The reason as it appears in `x-mesh-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::Forbidden => "forbidden",
            Reason::UpstreamIdentity => "upstream_identity",
            Reason::NoRoute => "no_route",
            Reason::NoHealthyEndpoints => "no_healthy_endpoints",
            Reason::CircuitOpen => "circuit_open",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamConnectFailed => "upstream_connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UpstreamProtocolError => "upstream_protocol_error",
            Reason::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::Forbidden => StatusCode::FORBIDDEN,
            Reason::NoRoute
            | Reason::UpstreamIdentity
            | Reason::UpstreamConnectFailed
            | Reason::UpstreamReset
            | Reason::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            Reason::NoHealthyEndpoints | Reason::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Classifies an error by its type.
pub fn reason(err: &BoxError) -> Reason {
    if err.downcast_ref::<RequestError>().is_some() {
        Reason::BadRequest
    } else if err.downcast_ref::<route::RouteError>().is_some() {
        Reason::NoRoute
    } else if let Some(err) = err.downcast_ref::<resilience::ResilienceError>() {
        match err {
            resilience::ResilienceError::CircuitOpen | resilience::ResilienceError::RetryLimit => {
                Reason::CircuitOpen
            }
            resilience::ResilienceError::Timeout => Reason::UpstreamTimeout,
        }
    } else if err.downcast_ref::<policy::Forbidden>().is_some() {
        Reason::Forbidden
    } else if let Some(err) = err
        .downcast_ref::<connect::ConnectError>()
        .or_else(|| err.downcast_ref::<connect::Unsent>().map(|u| &u.error))
    {
        match err {
            connect::ConnectError::Identity(_) => Reason::UpstreamIdentity,
            connect::ConnectError::Overflow => Reason::CircuitOpen,
            _ => Reason::UpstreamConnectFailed,
        }
    } else if let Some(connect::UpstreamError(err)) = err.downcast_ref::<connect::UpstreamError>() {
        if err.is_parse() {
            Reason::UpstreamProtocolError
        } else {
            Reason::UpstreamReset
        }
    } else if let Some(forward::ForwardError::NoEndpoints) =
        err.downcast_ref::<forward::ForwardError>()
    {
        Reason::NoHealthyEndpoints
    } else {
        Reason::Internal
    }
}

/// The layer that turns every error below it into a response, so layers
/// above it (telemetry) see the status the client will see.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<Body>| {
            let grpc = crate::http::is_grpc(req.headers());
            let inner = inner.clone();
            async move {
                match inner.oneshot(req).await {
                    Ok(response) => Ok(response),
                    Err(err) => Ok(response(&err, grpc)),
                }
            }
        }))
    })
}

/// The response for `err`: JSON for HTTP callers, a gRPC status for gRPC ones.
pub fn response(err: &BoxError, grpc: bool) -> Response<Body> {
    let reason = reason(err);
    tracing::debug!(reason = reason.as_str(), error = %err, "proxy error");
    let message = public_message(reason, err);
    if grpc {
        return grpc_response(reason, &message);
    }
    let body = serde_json::json!({ "error": reason.as_str(), "message": message }).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = reason.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    response
}

/// What the caller may read: the error's own text for requests it sent,
/// a fixed sentence for everything that concerns the proxy's insides.
fn public_message(reason: Reason, err: &BoxError) -> String {
    match reason {
        Reason::BadRequest | Reason::NoRoute | Reason::Forbidden => err.to_string(),
        Reason::UpstreamIdentity => "the upstream did not prove the expected identity".into(),
        Reason::NoHealthyEndpoints => "no endpoint of the upstream is available".into(),
        Reason::CircuitOpen => "the upstream is at its request limit".into(),
        Reason::UpstreamTimeout => "the upstream did not answer in time".into(),
        Reason::UpstreamConnectFailed => "could not connect to the upstream".into(),
        Reason::UpstreamReset => "the upstream closed the request before answering".into(),
        Reason::UpstreamProtocolError => "the upstream answered with invalid HTTP".into(),
        Reason::Internal => "internal proxy error".into(),
    }
}

/// gRPC code for a proxy reason, following gRPC's HTTP-to-status mapping.
fn grpc_code(reason: Reason) -> u8 {
    match reason.status() {
        StatusCode::BAD_REQUEST => 13,    // INTERNAL
        StatusCode::FORBIDDEN => 7,       // PERMISSION_DENIED
        StatusCode::GATEWAY_TIMEOUT => 4, // DEADLINE_EXCEEDED
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 2,                           // UNKNOWN
    }
}

/// A trailers-only gRPC response: HTTP 200, the status in the headers.
fn grpc_response(reason: Reason, message: &str) -> Response<Body> {
    let mut response = Response::new(crate::http::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        "grpc-status",
        HeaderValue::from(u16::from(grpc_code(reason))),
    );
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    response
}

/// The trailers that end a gRPC response whose upstream failed mid-stream.
pub fn grpc_reset_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(14u16));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("upstream%20reset%20the%20stream"),
    );
    trailers.insert(
        REASON_HEADER,
        HeaderValue::from_static(Reason::UpstreamReset.as_str()),
    );
    trailers
}

/// Percent-encoding of `grpc-message` (gRPC over HTTP/2 spec).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_by_type() {
        let err: BoxError = Box::new(RequestError::MissingHost);
        let res = response(&err, false);
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[REASON_HEADER], "bad_request");
        let err: BoxError = Box::new(route::RouteError::NoRoute("nowhere".into()));
        assert_eq!(reason(&err), Reason::NoRoute);
        let err: BoxError = "something else".into();
        assert_eq!(
            response(&err, false).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn grpc_callers_get_a_grpc_status() {
        let err: BoxError = Box::new(route::RouteError::NoRoute("x".into()));
        let res = response(&err, true);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()[REASON_HEADER], "no_route");
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no route: ü%"), "no route: %C3%BC%25");
    }
}
