//! Body transformation on a route (`transform:`), below the cache and
//! above dispatch: JSON → XML on the way up and XML → JSON on the way
//! down (`xml`), a SOAP operation called as REST (`soap`), and JSON
//! reshaping of the client's side (`reshape`).
//! Only routes with a transformation buffer anything, and only the side
//! that changes: the body is read whole up to `max_body`. The request side
//! reads the client's JSON (any Content-Type), reshapes it, then converts
//! it; the response side reads XML (`*/xml`, `*+xml`, or no Content-Type)
//! or, for a reshape alone, JSON, converts it, then reshapes it. Other
//! answers (HTML error pages, empty bodies, 204/304, HEAD) pass untouched.
//! Reads: the [`MatchedRoute`]'s [`TransformSettings`]. Writes: the body,
//! `Content-Type`, `Content-Length`; the method and SOAP headers for SOAP;
//! drops `Accept-Encoding` upstream when the answer is to be read (it must
//! arrive uncompressed; the compress layer above compresses the result).
//! Errors: [`TransformError`] (400 for the client's body, 502
//! `bad_upstream_body` for the upstream's), `HygieneError::BodyTooLarge`
//! (413) for a request over `max_body`.

pub mod document;
pub mod reshape;
pub mod soap;
pub mod xml;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::layer::layer_fn;
use tower::Layer;

use self::document::Json;
use self::reshape::Reshape;
use self::soap::{SoapAnswer, SoapSettings};
use self::xml::XmlSettings;
use super::MatchedRoute;
use crate::http::hygiene::HygieneError;
use crate::http::{full, Body, BodyError, HttpService};
use crate::BoxError;

/// `max_body` when the route sets none.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// A route's transformation, compiled.
#[derive(Debug, Clone)]
pub struct TransformSettings {
    /// The client's JSON becomes XML.
    pub json_to_xml: bool,
    /// The upstream's XML becomes JSON.
    pub xml_to_json: bool,
    /// A SOAP operation called as REST (both ways).
    pub soap: Option<SoapSettings>,
    /// The XML ↔ JSON conventions.
    pub xml: XmlSettings,
    /// Largest body buffered, each way.
    pub max_body: u64,
    /// Changes to the client's JSON, before any conversion.
    pub request_reshape: Option<Reshape>,
    /// Changes to the JSON the client receives, after any conversion.
    pub response_reshape: Option<Reshape>,
}

impl Default for TransformSettings {
    fn default() -> Self {
        TransformSettings {
            json_to_xml: false,
            xml_to_json: false,
            soap: None,
            xml: XmlSettings::default(),
            max_body: DEFAULT_MAX_BODY,
            request_reshape: None,
            response_reshape: None,
        }
    }
}

impl TransformSettings {
    /// Whether the request body is read.
    fn reads_request(&self) -> bool {
        self.json_to_xml || self.soap.is_some() || self.request_reshape.is_some()
    }

    /// Whether the response body is read.
    fn reads_response(&self) -> bool {
        self.reads_xml() || self.response_reshape.is_some()
    }

    /// Whether the response is read as XML (else as JSON).
    fn reads_xml(&self) -> bool {
        self.xml_to_json || self.soap.is_some()
    }
}

/// Bodies that cannot be transformed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The client's body: what is wrong with it (400 `bad_request`).
    #[error("{0}")]
    BadRequestBody(String),
    /// The upstream's body (502 `bad_upstream_body`); the log has details.
    #[error("{0}")]
    BadUpstreamBody(&'static str),
}

/// The transformation layer: reads the [`MatchedRoute`]'s settings; routes
/// without any, upgrades and gRPC calls pass through untouched.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let settings = req
                .extensions()
                .get::<MatchedRoute>()
                .and_then(|matched| matched.settings().transform.clone())
                .filter(|_| has_transformable_body(&req));
            match settings {
                None => inner.call_ref(req),
                Some(settings) => {
                    let inner = inner.clone();
                    Box::pin(async move { exchange(&settings, inner, req).await })
                }
            }
        })
    })
}

/// Whether a request's exchange carries bodies to transform: not an
/// upgrade (a byte stream follows) nor a gRPC call (protobuf frames).
fn has_transformable_body(req: &Request<Body>) -> bool {
    !crate::http::is_upgrade(req) && !crate::http::is_grpc(req.headers())
}

/// One request and its answer through a route's transformation.
async fn exchange(
    settings: &TransformSettings,
    inner: HttpService,
    mut req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let head = req.method() == Method::HEAD;
    if settings.reads_request() {
        req = transform_request(settings, req).await?;
    }
    if settings.reads_response() {
        let headers = req.headers_mut();
        headers.remove(ACCEPT_ENCODING);
        if settings.xml_to_json {
            headers.insert(
                ACCEPT,
                HeaderValue::from_static("application/xml, text/xml"),
            );
        }
    }
    let response = inner.call_ref(req).await?;
    if !settings.reads_response() || head || !has_content(response.status()) {
        return Ok(response);
    }
    transform_response(settings, response).await
}

/// Statuses whose responses may carry a body.
fn has_content(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Reads the client's JSON, reshapes it and converts it.
async fn transform_request(
    settings: &TransformSettings,
    req: Request<Body>,
) -> Result<Request<Body>, BoxError> {
    if declared_length(req.headers()).is_some_and(|length| length > settings.max_body) {
        return Err(HygieneError::BodyTooLarge.into());
    }
    let (mut parts, body) = req.into_parts();
    let bytes = read_body(body, settings.max_body)
        .await
        .map_err(|failure| failure.into_error(|| HygieneError::BodyTooLarge.into()))?;
    let doc = client_json(settings, &bytes)?;
    let Some(body) = upstream_request_body(settings, &mut parts, doc)? else {
        return Ok(Request::from_parts(parts, full(bytes)));
    };
    set_length(&mut parts.headers, body.len());
    Ok(Request::from_parts(parts, full(body)))
}

/// The client's JSON, reshaped; `None` for an empty body.
fn client_json(settings: &TransformSettings, bytes: &[u8]) -> Result<Option<Json>, TransformError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut doc = Json::parse(bytes).map_err(|err| {
        TransformError::BadRequestBody(format!("request body is not valid JSON: {err}"))
    })?;
    if let Some(reshape) = &settings.request_reshape {
        reshape.apply(&mut doc);
    }
    Ok(Some(doc))
}

/// The body sent upstream (a SOAP envelope, XML, or the reshaped JSON),
/// with the request line and headers it needs; `None`: the body as it came
/// (empty).
fn upstream_request_body(
    settings: &TransformSettings,
    parts: &mut http::request::Parts,
    doc: Option<Json>,
) -> Result<Option<Vec<u8>>, TransformError> {
    let bad_request = |err: xml::XmlError| {
        TransformError::BadRequestBody(format!("request body cannot be written as XML: {err}"))
    };
    let body = match (&settings.soap, doc) {
        (Some(soap), doc) => {
            parts.method = Method::POST;
            parts
                .headers
                .insert(CONTENT_TYPE, soap.content_type.clone());
            if let Some(action) = &soap.soap_action {
                parts.headers.insert("soapaction", action.clone());
            }
            soap::envelope(doc.as_ref(), soap, &settings.xml).map_err(bad_request)?
        }
        (None, None) => return Ok(None),
        (None, Some(doc)) if settings.json_to_xml => {
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            xml::from_json(&doc, &settings.xml).map_err(bad_request)?
        }
        (None, Some(doc)) => doc.to_vec(),
    };
    Ok(Some(body))
}

/// Reads the upstream's answer, converts it and reshapes it; answers of
/// another kind than expected pass untouched.
async fn transform_response(
    settings: &TransformSettings,
    response: Response<Body>,
) -> Result<Response<Body>, BoxError> {
    if !answer_to_read(settings, response.headers())? {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = read_body(body, settings.max_body)
        .await
        .map_err(|failure| failure.into_error(|| bad_upstream(TOO_LARGE)))?;
    if bytes.is_empty() {
        return Ok(Response::from_parts(parts, full(bytes)));
    }
    let mut doc = match upstream_document(settings, &bytes)? {
        Upstream::Document(doc) => doc,
        Upstream::Fault(status, error) => {
            parts.status = status;
            return Ok(json_response(parts, error.to_vec()));
        }
    };
    if let Some(reshape) = &settings.response_reshape {
        reshape.apply(&mut doc);
    }
    Ok(json_response(parts, doc.to_vec()))
}

/// The refusal of an upstream answer over `max_body`.
const TOO_LARGE: &str = "the upstream response is larger than the route's transform.max_body";

/// Whether an answer is to be read: of the kind the route reads (XML or
/// unnamed for conversions, JSON for a reshape alone). One to read that
/// is compressed or declared over `max_body` is refused.
fn answer_to_read(settings: &TransformSettings, headers: &HeaderMap) -> Result<bool, BoxError> {
    let expected = match media_kind(headers) {
        Media::Xml | Media::Unnamed => settings.reads_xml(),
        Media::Json => !settings.reads_xml(),
        Media::Other => false,
    };
    if !expected {
        return Ok(false);
    }
    let encoded = headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(bad_upstream(
            "the upstream response is compressed (Content-Encoding)",
        ));
    }
    if declared_length(headers).is_some_and(|length| length > settings.max_body) {
        return Err(bad_upstream(TOO_LARGE));
    }
    Ok(true)
}

/// What an upstream body reads as.
enum Upstream {
    /// The JSON the client gets (before reshaping).
    Document(Json),
    /// A SOAP Fault: its status and JSON error.
    Fault(StatusCode, Json),
}

/// The upstream's body as JSON: converted from XML, unwrapped from SOAP,
/// or parsed.
fn upstream_document(settings: &TransformSettings, bytes: &[u8]) -> Result<Upstream, BoxError> {
    if let Some(soap) = &settings.soap {
        return match soap::answer(bytes, soap, &settings.xml) {
            Ok(SoapAnswer::Body(doc)) => Ok(Upstream::Document(doc)),
            Ok(SoapAnswer::Fault(status, error)) => Ok(Upstream::Fault(status, error)),
            Err(err) => {
                tracing::debug!(error = %err, "upstream SOAP answer not readable");
                Err(bad_upstream(
                    "the upstream response is not a well-formed SOAP envelope",
                ))
            }
        };
    }
    if settings.xml_to_json {
        return xml::to_json(bytes, &settings.xml)
            .map(Upstream::Document)
            .map_err(|err| {
                tracing::debug!(error = %err, "upstream XML not readable");
                bad_upstream("the upstream response is not well-formed XML")
            });
    }
    Json::parse(bytes).map(Upstream::Document).map_err(|err| {
        tracing::debug!(error = %err, "upstream JSON not readable");
        bad_upstream("the upstream response is not valid JSON")
    })
}

fn bad_upstream(what: &'static str) -> BoxError {
    TransformError::BadUpstreamBody(what).into()
}

/// `parts` with a JSON body.
fn json_response(mut parts: http::response::Parts, body: Vec<u8>) -> Response<Body> {
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_length(&mut parts.headers, body.len());
    Response::from_parts(parts, full(body))
}

fn set_length(headers: &mut HeaderMap, length: usize) {
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
}

/// The `Content-Length` a message declares.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A body's media type, as far as transformation cares.
#[derive(Debug, PartialEq)]
enum Media {
    /// `application/xml`, `text/xml`, `application/soap+xml`, any `+xml`.
    Xml,
    /// `application/json`, any `+json`.
    Json,
    /// No Content-Type.
    Unnamed,
    /// Anything else.
    Other,
}

fn media_kind(headers: &HeaderMap) -> Media {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Media::Unnamed;
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.ends_with("/xml") || essence.ends_with("+xml") {
        Media::Xml
    } else if essence.ends_with("/json") || essence.ends_with("+json") {
        Media::Json
    } else {
        Media::Other
    }
}

/// Why a body could not be read whole.
enum ReadFailure {
    /// Over the limit.
    TooLarge,
    /// The body itself failed (the peer went away, a limit above cut it).
    Failed(BoxError),
}

impl ReadFailure {
    /// The error to raise: `too_large()` for the limit, the body's own otherwise.
    fn into_error(self, too_large: impl FnOnce() -> BoxError) -> BoxError {
        match self {
            ReadFailure::TooLarge => too_large(),
            ReadFailure::Failed(err) => err,
        }
    }
}

/// Reads `body` whole, refusing more than `max` bytes.
async fn read_body(body: Body, max: u64) -> Result<Bytes, ReadFailure> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(ReadFailure::TooLarge),
        Err(err) => Err(ReadFailure::Failed(match err.downcast::<BodyError>() {
            Ok(body_error) => body_error.0,
            Err(err) => err,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{reason, Reason};

    /// An upstream that checks the request it gets and answers `answer`
    /// with `headers`.
    fn upstream(
        check: impl Fn(&http::request::Parts, &Bytes) + Clone + Send + Sync + 'static,
        headers: &'static [(&'static str, &'static str)],
        answer: &'static str,
    ) -> HttpService {
        crate::http::shared_fn(move |req: Request<Body>| {
            let check = check.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map_err(|e| e.0)?.to_bytes();
                check(&parts, &bytes);
                let mut response = Response::new(full(answer));
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(*name, HeaderValue::from_static(value));
                }
                Ok::<_, BoxError>(response)
            }
        })
    }

    fn post(body: &'static str) -> Request<Body> {
        Request::post("http://legacy.test/orders")
            .header(ACCEPT_ENCODING, "gzip")
            .body(full(body))
            .unwrap()
    }

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn xml_both_ways() -> TransformSettings {
        TransformSettings {
            json_to_xml: true,
            xml_to_json: true,
            ..TransformSettings::default()
        }
    }

    #[tokio::test]
    async fn converts_both_ways_through_the_layer() {
        let inner = upstream(
            |parts, body| {
                assert_eq!(parts.headers[CONTENT_TYPE], "application/xml");
                assert_eq!(
                    parts.headers[CONTENT_LENGTH],
                    body.len().to_string().as_str()
                );
                assert!(!parts.headers.contains_key(ACCEPT_ENCODING));
                assert_eq!(
                    &body[..],
                    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><order><id>1</id></order>"
                );
            },
            &[("content-type", "text/xml")],
            "<ok code=\"7\"/>",
        );
        let response = exchange(&xml_both_ways(), inner, post(r#"{"order":{"id":1}}"#))
            .await
            .unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[CONTENT_LENGTH], "20");
        assert_eq!(body_text(response).await, r#"{"ok":{"@code":"7"}}"#);
    }

    #[tokio::test]
    async fn other_answers_pass_untouched() {
        let settings = TransformSettings {
            response_reshape: Some(Reshape::default()),
            ..TransformSettings::default()
        };
        // A reshaping route reads JSON answers only; the request streams on.
        let inner = upstream(
            |parts, body| {
                assert_eq!(&body[..], b"not json");
                assert!(!parts.headers.contains_key(CONTENT_LENGTH));
            },
            &[("content-type", "text/html")],
            "<html>",
        );
        let response = exchange(&settings, inner, post("not json")).await.unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
        assert_eq!(body_text(response).await, "<html>");
    }

    #[tokio::test]
    async fn limits_and_unreadable_bodies_are_errors() {
        let settings = TransformSettings {
            max_body: 8,
            ..xml_both_ways()
        };
        let never = || upstream(|_, _| panic!("nothing is sent"), &[], "");
        let err = exchange(&settings, never(), post(r#"{"a":"123456789"}"#))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), Reason::BodyTooLarge);
        let err = exchange(&xml_both_ways(), never(), post("{"))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), Reason::BadRequest);
        let big = upstream(
            |_, _| {},
            &[("content-type", "application/xml")],
            "<a>123456789</a>",
        );
        let err = exchange(&settings, big, post("")).await.unwrap_err();
        assert_eq!(reason(&err), Reason::BadUpstreamBody);
        let gzip = upstream(
            |_, _| {},
            &[
                ("content-type", "application/xml"),
                ("content-encoding", "gzip"),
            ],
            "\x1f",
        );
        let err = exchange(&xml_both_ways(), gzip, post(""))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), Reason::BadUpstreamBody);
    }

    #[test]
    fn media_kinds() {
        let kind = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            media_kind(&headers)
        };
        assert_eq!(kind("text/xml; charset=utf-8"), Media::Xml);
        assert_eq!(kind("application/soap+xml; action=x"), Media::Xml);
        assert_eq!(kind("Application/JSON"), Media::Json);
        assert_eq!(kind("application/problem+json"), Media::Json);
        assert_eq!(kind("text/html"), Media::Other);
        assert_eq!(media_kind(&HeaderMap::new()), Media::Unnamed);
    }

    #[tokio::test]
    async fn reads_bodies_up_to_the_limit() {
        assert_eq!(
            read_body(full("abc"), 3).await.ok(),
            Some(Bytes::from("abc"))
        );
        assert!(matches!(
            read_body(full("abcd"), 3).await,
            Err(ReadFailure::TooLarge)
        ));
    }
}
