//! The one place a proxy error becomes a response: a status, an
//! `x-mesh-error` reason and a JSON body (or, for gRPC callers, a
//! trailers-only gRPC status). Errors are recognised by type (downcast),
//! never by message text. Bodies say what went wrong without internal
//! addresses or versions; the log has the details.

use std::fmt::Write as _;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use tower::layer::layer_fn;
use tower::Layer;

use crate::http::hygiene::HygieneError;
use crate::http::{full, Body, HttpService, RequestError};
use crate::{connect, edge, forward, policy, resilience, route, translate, BoxError};

/// Response header naming why the proxy itself answered.
pub const REASON_HEADER: &str = "x-mesh-error";

/// Machine-readable reasons, stable for dashboards and clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request is malformed.
    BadRequest,
    /// The request line and headers are over `limits` (431).
    HeaderTooLarge,
    /// The request target is over `limits.max_uri` (414).
    UriTooLong,
    /// Authorization denied the caller.
    Forbidden,
    /// No edge authenticator admitted the request (401, with `WWW-Authenticate`).
    Unauthenticated,
    /// An authorization service could not be asked (503).
    AuthUnavailable,
    /// The upstream proxy proved another identity than the one it must have.
    UpstreamIdentity,
    /// TLS with an upstream outside the mesh failed (untrusted, wrong name).
    UpstreamTls,
    /// No upstream is configured for the request's target.
    NoRoute,
    /// No edge route matches the request (404, reason `no_route`).
    NoEdgeRoute,
    /// The request body is larger than the route accepts.
    BodyTooLarge,
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
    /// Over an edge rate limit (429; `Retry-After` says when to retry).
    RateLimited,
    /// A global rate limit cannot reach Redis and fails closed (503).
    RateLimitUnavailable,
    /// A part of an aggregate route (`on_part_failure: fail`) timed out (504).
    PartTimeout,
    /// A part of an aggregate route (`on_part_failure: fail`) failed (502).
    PartFailed,
    /// The request body's `Content-Encoding` cannot be decoded (415).
    UnsupportedEncoding,
    /// The upstream's body cannot be transformed as the route says (502).
    BadUpstreamBody,
    /// gRPC descriptors could not be fetched by reflection (503).
    GrpcDescriptors,
    /// A WebSocket upstream answered the handshake without switching protocols (502).
    UpgradeRefused,
    /// The proxy is over an `overload:` threshold and sheds new work (503).
    Overloaded,
    /// A bug or an unexpected state in the proxy.
    Internal,
}

impl Reason {
    /// The reason as it appears in `x-mesh-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::UriTooLong => "uri_too_long",
            Reason::Forbidden => "forbidden",
            Reason::Unauthenticated => "unauthenticated",
            Reason::AuthUnavailable => "auth_unavailable",
            Reason::UpstreamIdentity => "upstream_identity",
            Reason::UpstreamTls => "upstream_tls",
            Reason::NoRoute | Reason::NoEdgeRoute => "no_route",
            Reason::BodyTooLarge => "body_too_large",
            Reason::NoHealthyEndpoints => "no_healthy_endpoints",
            Reason::CircuitOpen => "circuit_open",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamConnectFailed => "upstream_connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UpstreamProtocolError => "upstream_protocol_error",
            Reason::RateLimited => "rate_limited",
            Reason::RateLimitUnavailable => "rate_limit_unavailable",
            Reason::PartTimeout => "part_timeout",
            Reason::PartFailed => "part_failed",
            Reason::UnsupportedEncoding => "unsupported_encoding",
            Reason::BadUpstreamBody => "bad_upstream_body",
            Reason::GrpcDescriptors => "grpc_descriptors_unavailable",
            Reason::UpgradeRefused => "upstream_upgrade_refused",
            Reason::Overloaded => "overloaded",
            Reason::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::UriTooLong => StatusCode::URI_TOO_LONG,
            Reason::Forbidden => StatusCode::FORBIDDEN,
            Reason::Unauthenticated => StatusCode::UNAUTHORIZED,
            Reason::NoEdgeRoute => StatusCode::NOT_FOUND,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::NoRoute
            | Reason::UpstreamIdentity
            | Reason::UpstreamTls
            | Reason::UpstreamConnectFailed
            | Reason::UpstreamReset
            | Reason::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            Reason::NoHealthyEndpoints | Reason::CircuitOpen | Reason::AuthUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reason::GrpcDescriptors => StatusCode::SERVICE_UNAVAILABLE,
            Reason::PartTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::PartFailed => StatusCode::BAD_GATEWAY,
            Reason::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::BadUpstreamBody => StatusCode::BAD_GATEWAY,
            Reason::UpgradeRefused => StatusCode::BAD_GATEWAY,
            Reason::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Classifies an error by its type.
pub fn reason(err: &BoxError) -> Reason {
    if let Some(err) = hygiene_error(err) {
        match err {
            HygieneError::HeaderTooLarge | HygieneError::TooManyHeaders => Reason::HeaderTooLarge,
            HygieneError::UriTooLong => Reason::UriTooLong,
            HygieneError::BodyTooLarge => Reason::BodyTooLarge,
            _ => Reason::BadRequest,
        }
    } else if err.downcast_ref::<RequestError>().is_some() {
        Reason::BadRequest
    } else if let Some(err) = edge::compress::decompress_error(err) {
        match err {
            edge::compress::DecompressError::Unsupported(_) => Reason::UnsupportedEncoding,
            edge::compress::DecompressError::Corrupt(_) => Reason::BadRequest,
        }
    } else if std::iter::successors(
        Some(err.as_ref() as &(dyn std::error::Error + 'static)),
        |e| e.source(),
    )
    .any(|e| e.is::<crate::translate::grpc_web::GrpcWebError>())
    {
        // A grpc-web-text body that is not base64, found while it was sent.
        Reason::BadRequest
    } else if err.downcast_ref::<crate::overload::Overloaded>().is_some() {
        Reason::Overloaded
    } else if err.downcast_ref::<route::RouteError>().is_some() {
        Reason::NoRoute
    } else if let Some(err) = err.downcast_ref::<edge::EdgeError>() {
        match err {
            edge::EdgeError::NoRoute => Reason::NoEdgeRoute,
            edge::EdgeError::InvalidRewrite => Reason::Internal,
        }
    } else if let Some(err) = err.downcast_ref::<resilience::ResilienceError>() {
        match err {
            resilience::ResilienceError::CircuitOpen | resilience::ResilienceError::RetryLimit => {
                Reason::CircuitOpen
            }
            resilience::ResilienceError::Timeout => Reason::UpstreamTimeout,
        }
    } else if let Some(err) = err.downcast_ref::<policy::rate_limit::RateLimitError>() {
        match err {
            policy::rate_limit::RateLimitError::Limited => Reason::RateLimited,
            policy::rate_limit::RateLimitError::Unavailable => Reason::RateLimitUnavailable,
        }
    } else if err.downcast_ref::<policy::Forbidden>().is_some() {
        Reason::Forbidden
    } else if let Some(err) = err.downcast_ref::<policy::auth::AuthDenied>() {
        match err {
            policy::auth::AuthDenied::Unauthenticated { .. } => Reason::Unauthenticated,
            policy::auth::AuthDenied::Unavailable => Reason::AuthUnavailable,
        }
    } else if let Some(err) = err
        .downcast_ref::<connect::ConnectError>()
        .or_else(|| err.downcast_ref::<connect::Unsent>().map(|u| &u.error))
    {
        match err {
            connect::ConnectError::Identity(_) => Reason::UpstreamIdentity,
            connect::ConnectError::PublicTls(_) => Reason::UpstreamTls,
            connect::ConnectError::Overflow => Reason::CircuitOpen,
            _ => Reason::UpstreamConnectFailed,
        }
    } else if let Some(err) = err.downcast_ref::<connect::UpstreamError>() {
        if err.is_protocol() {
            Reason::UpstreamProtocolError
        } else {
            Reason::UpstreamReset
        }
    } else if let Some(err) = err.downcast_ref::<edge::aggregate::AggregateError>() {
        match err {
            edge::aggregate::AggregateError::PartTimeout(_) => Reason::PartTimeout,
            edge::aggregate::AggregateError::PartFailed { .. } => Reason::PartFailed,
        }
    } else if let Some(err) = err.downcast_ref::<edge::transform::TransformError>() {
        match err {
            edge::transform::TransformError::BadRequestBody(_) => Reason::BadRequest,
            edge::transform::TransformError::BadUpstreamBody(_) => Reason::BadUpstreamBody,
        }
    } else if let Some(err) = err.downcast_ref::<translate::grpc_json::GrpcJsonError>() {
        use translate::grpc_json::GrpcJsonError as E;
        match err {
            E::Json(_) => Reason::BadRequest,
            E::NoMethod(_) => Reason::NoEdgeRoute,
            E::BodyTooLarge(_) => Reason::BodyTooLarge,
            E::Descriptors(_) => Reason::GrpcDescriptors,
            E::NotGrpc(_) => Reason::UpstreamProtocolError,
        }
    } else if let Some(err) = err.downcast_ref::<translate::rest_ws::RestWsError>() {
        use translate::rest_ws::RestWsError as E;
        match err {
            E::Timeout => Reason::UpstreamTimeout,
            E::ConnectionLost => Reason::UpstreamReset,
            E::UpgradeRefused(_) => Reason::UpgradeRefused,
            E::BadRequestBody(_) => Reason::BadRequest,
            E::BadReply(_) => Reason::BadUpstreamBody,
            E::TooManyPaths => Reason::CircuitOpen,
        }
    } else if let Some(forward::ForwardError::NoEndpoints) =
        err.downcast_ref::<forward::ForwardError>()
    {
        Reason::NoHealthyEndpoints
    } else {
        Reason::Internal
    }
}

/// A hygiene refusal, also when it failed the request body under another
/// error (a body cut at `max_body` while it was being sent upstream).
fn hygiene_error(err: &BoxError) -> Option<&HygieneError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<HygieneError>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// The layer that turns every error below it into a response, so layers
/// above it (telemetry) see the status the client will see.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        // The next layer is called at once: the future kept is its future
        // and one flag, not the request (a smaller box to fill per request).
        crate::http::direct_fn(move |req: http::Request<Body>| {
            let grpc = crate::http::is_grpc(req.headers());
            let call = inner.call_ref(req);
            Box::pin(async move {
                match call.await {
                    Ok(response) => Ok(response),
                    Err(err) => Ok(response(&err, grpc)),
                }
            })
        })
    })
}

/// The response for `err`: JSON for HTTP callers, a gRPC status for gRPC ones.
pub fn response(err: &BoxError, grpc: bool) -> Response<Body> {
    let reason = reason(err);
    tracing::debug!(reason = reason.as_str(), error = %err, "proxy error");
    let message = public_message(reason, err);
    let challenge = match err.downcast_ref::<policy::auth::AuthDenied>() {
        Some(policy::auth::AuthDenied::Unauthenticated { challenge }) => Some(challenge.clone()),
        _ => None,
    };
    if grpc {
        let mut response = grpc_response(reason, &message);
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        return response;
    }
    let body = serde_json::json!({ "error": reason.as_str(), "message": message }).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = reason.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    if let Some(challenge) = challenge {
        headers.insert(http::header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// What the caller may read: the error's own text for requests it sent,
/// a fixed sentence for everything that concerns the proxy's insides.
fn public_message(reason: Reason, err: &BoxError) -> String {
    if let Some(err) = hygiene_error(err) {
        return err.to_string();
    }
    if let Some(err) = edge::compress::decompress_error(err) {
        return err.to_string();
    }
    match reason {
        Reason::BadRequest
        | Reason::HeaderTooLarge
        | Reason::UriTooLong
        | Reason::NoRoute
        | Reason::NoEdgeRoute
        | Reason::BodyTooLarge
        | Reason::BadUpstreamBody
        | Reason::UnsupportedEncoding
        | Reason::Forbidden
        | Reason::Unauthenticated
        | Reason::PartTimeout
        | Reason::PartFailed
        | Reason::GrpcDescriptors
        | Reason::UpgradeRefused => err.to_string(),
        Reason::AuthUnavailable => "the authorization service is unavailable".into(),
        Reason::UpstreamIdentity => "the upstream did not prove the expected identity".into(),
        Reason::UpstreamTls => {
            "TLS with the upstream failed (certificate not trusted or not for its name)".into()
        }
        Reason::NoHealthyEndpoints => "no endpoint of the upstream is available".into(),
        Reason::CircuitOpen => "the upstream is at its request limit".into(),
        Reason::UpstreamTimeout => "the upstream did not answer in time".into(),
        Reason::UpstreamConnectFailed => "could not connect to the upstream".into(),
        Reason::UpstreamReset => "the upstream closed the request before answering".into(),
        Reason::UpstreamProtocolError => "the upstream answered with invalid HTTP".into(),
        Reason::RateLimited => "rate limit exceeded; retry after the Retry-After delay".into(),
        Reason::RateLimitUnavailable => "rate limiting is unavailable".into(),
        Reason::Overloaded => "the proxy is overloaded; retry later".into(),
        Reason::Internal => "internal proxy error".into(),
    }
}

/// gRPC code for a proxy reason, following gRPC's HTTP-to-status mapping.
fn grpc_code(reason: Reason) -> u8 {
    match reason.status() {
        StatusCode::BAD_REQUEST => 13,      // INTERNAL
        StatusCode::UNAUTHORIZED => 16,     // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,         // PERMISSION_DENIED
        StatusCode::NOT_FOUND => 12,        // UNIMPLEMENTED
        StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        StatusCode::GATEWAY_TIMEOUT => 4,   // DEADLINE_EXCEEDED
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 2,                             // UNKNOWN
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
pub(crate) fn percent_encode(text: &str) -> String {
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
    fn hygiene_refusals_map_to_their_status() {
        let status = |err: HygieneError| response(&BoxError::from(err), false);
        let res = status(HygieneError::HeaderTooLarge);
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(res.headers()[REASON_HEADER], "header_too_large");
        let res = status(HygieneError::UriTooLong);
        assert_eq!(res.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(res.headers()[REASON_HEADER], "uri_too_long");
        let res = status(HygieneError::ContentLengthWithTransferEncoding);
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[REASON_HEADER], "bad_request");
        // A body cut at the limit while being sent, under other errors.
        let cut = crate::http::BodyError(Box::new(HygieneError::BodyTooLarge));
        let err: BoxError = Box::new(std::io::Error::other(cut));
        let res = response(&err, false);
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()[REASON_HEADER], "body_too_large");
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
    fn auth_refusals_carry_their_challenge() {
        let challenge = HeaderValue::from_static("Bearer realm=\"api\"");
        let err: BoxError = Box::new(policy::auth::AuthDenied::Unauthenticated {
            challenge: challenge.clone(),
        });
        let res = response(&err, false);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[REASON_HEADER], "unauthenticated");
        assert_eq!(res.headers()[http::header::WWW_AUTHENTICATE], challenge);
        let res = response(&err, true);
        assert_eq!(res.headers()["grpc-status"], "16");
        let err: BoxError = Box::new(policy::auth::AuthDenied::Unavailable);
        let res = response(&err, false);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[REASON_HEADER], "auth_unavailable");
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no route: ü%"), "no route: %C3%BC%25");
    }
}
