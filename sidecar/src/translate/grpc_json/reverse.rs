//! The gRPC → REST reverse bridge (`outbound.upstreams.<name>.grpc_bridge`):
//! a gRPC caller of an upstream that speaks REST/JSON. The method's
//! `google.api.http` rule (the main one, else the first additional binding
//! whose path variables are all set; `POST /package.Service/Method` for a
//! method without a rule) says where the request message goes: path
//! variables, the body (`*` or one field), the remaining fields as query
//! parameters (nested with dots, repeated keys for lists). The JSON answer
//! becomes the response message (`response_body` wraps it into that
//! field); a server-streaming method reads an NDJSON answer, one message
//! per line.
//!
//! Reads: the routed cluster's [`GrpcBridgeSettings`] (`route::Target`).
//! Writes: the REST request (HTTP/1.1 unless the upstream's protocol says
//! otherwise, `Accept` JSON or NDJSON, kept and configured headers); the
//! gRPC answer (REST response headers as metadata, `grpc-status` and
//! `grpc-message` in trailers, or trailers-only for a failure).
//! Errors: REST statuses map to gRPC codes by [`grpc_code`] (409 →
//! ALREADY_EXISTS: on REST APIs a conflict is mostly "it exists already"),
//! the error body's `message` (or `error.message`, `error`, `detail`, the
//! text) in `grpc-message`. The bridge's own refusals are statuses too:
//! an unmapped method or a client stream UNIMPLEMENTED, an unreadable
//! request INTERNAL, an empty path variable INVALID_ARGUMENT, a REST answer
//! that does not fit the response message INTERNAL. Failures below (no
//! endpoint, connect) reach the errors layer, which answers gRPC callers
//! with a gRPC status.
//! Callers that are not gRPC pass untouched, so REST clients still reach
//! the upstream.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value as Field,
};
use serde_json::{Map, Value};
use tower::layer::layer_fn;
use tower::Layer;

use super::json::{self, Print};
use super::rules::{field_path, Binding, BodyRule};
use super::stream::{frame, FrameDecoder};
use super::Api;
use crate::http::{Body, BodyError, HttpService};
use crate::BoxError;

/// Largest REST error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Longest `grpc-message` taken from a REST error body that is not JSON.
const MAX_MESSAGE_CHARS: usize = 512;

/// A bridged upstream, compiled: each gRPC method's REST bindings.
pub struct GrpcBridgeSettings {
    /// `/package.Service/Method` → bindings, the main rule first.
    methods: HashMap<String, Vec<Binding>>,
    /// JSON printing of request messages (names, defaults).
    print: Print,
    /// gRPC metadata sent to the REST service as headers.
    headers: Vec<HeaderName>,
    /// Largest REST answer (and request message) read.
    max_body: usize,
    /// Digest of the raw config and the descriptors, for reload equality.
    fingerprint: u64,
}

impl PartialEq for GrpcBridgeSettings {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for GrpcBridgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBridgeSettings")
            .field("methods", &self.methods.len())
            .field("print", &self.print)
            .field("headers", &self.headers)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl GrpcBridgeSettings {
    /// Maps every method of the pool's services (all, or those named).
    pub fn new(
        raw: &mesh_api::config::GrpcJson,
        pool: DescriptorPool,
        print: Print,
        headers: Vec<HeaderName>,
        max_body: usize,
    ) -> Result<Self, Vec<String>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{raw:?}").hash(&mut hasher);
        pool.encode_to_vec().hash(&mut hasher);
        let api = Api::new(pool, &raw.services)?;
        let mut methods: HashMap<String, Vec<Binding>> = HashMap::new();
        for binding in api.bindings {
            let path = format!(
                "/{}/{}",
                binding.rpc.parent_service().full_name(),
                binding.rpc.name()
            );
            methods.entry(path).or_default().push(binding);
        }
        for bindings in methods.values_mut() {
            bindings.sort_by_key(|b| b.additional);
        }
        Ok(GrpcBridgeSettings {
            methods,
            print,
            headers,
            max_body,
            fingerprint: hasher.finish(),
        })
    }
}

/// A gRPC status the bridge answers with.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    code: u16,
    message: String,
}

impl Status {
    fn new(code: u16, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// `grpc-status` and `grpc-message` (percent-encoded).
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from(self.code));
        if !self.message.is_empty() {
            let encoded = crate::errors::percent_encode(&self.message);
            if let Ok(value) = HeaderValue::from_str(&encoded) {
                headers.insert("grpc-message", value);
            }
        }
        headers
    }
}

/// The bridge on the outbound stack, below routing: gRPC callers of a
/// cluster with `grpc_bridge` are translated, everything else passes.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let settings = req
                .extensions()
                .get::<crate::route::Target>()
                .and_then(|target| target.cluster.settings.grpc_bridge.clone())
                .filter(|_| is_grpc_call(req.headers()));
            match settings {
                Some(settings) => {
                    let inner = inner.clone();
                    Box::pin(async move { bridge(&settings, inner, req).await })
                }
                None => inner.call_ref(req),
            }
        })
    })
}

/// `application/grpc` (not gRPC-Web, which the edge translates first).
fn is_grpc_call(headers: &HeaderMap) -> bool {
    crate::http::is_grpc(headers)
        && !headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc-web"))
}

/// One gRPC call as a REST call.
async fn bridge(
    settings: &GrpcBridgeSettings,
    inner: HttpService,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Some(bindings) = settings.methods.get(path) else {
        return Ok(trailers_only(
            &Status::new(
                12,
                format!("method {path} is not mapped to the REST service"),
            ),
            HeaderMap::new(),
        ));
    };
    let rpc = &bindings[0].rpc;
    if rpc.is_client_streaming() {
        let status = Status::new(12, "client streaming is not bridged to a REST service");
        return Ok(trailers_only(&status, HeaderMap::new()));
    }
    let message = match read_request(body, &rpc.input(), settings.max_body).await {
        Ok(message) => message,
        Err(status) => return Ok(trailers_only(&status, HeaderMap::new())),
    };
    let (binding, request) = match rest_request(settings, &parts, bindings, &message) {
        Ok(found) => found,
        Err(status) => return Ok(trailers_only(&status, HeaderMap::new())),
    };
    let response = inner.call_ref(request).await?;
    let (head, body) = response.into_parts();
    let metadata = metadata(&head.headers);
    if !head.status.is_success() {
        return Ok(rest_error(head.status, body, metadata).await);
    }
    let output = Output {
        desc: rpc.output(),
        field: binding.response_body.clone(),
    };
    if rpc.is_server_streaming() {
        let stream = ndjson_stream(body, output, settings.max_body);
        return Ok(grpc_response(metadata, stream));
    }
    Ok(unary_answer(body, &output, settings.max_body, metadata).await)
}

/// A REST error answer as a trailers-only status.
async fn rest_error(status: StatusCode, body: Body, metadata: HeaderMap) -> Response<Body> {
    let text = Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let grpc = Status::new(grpc_code(status), error_message(status, &text));
    trailers_only(&grpc, metadata)
}

/// A 2xx JSON answer as the one response message and an OK status.
async fn unary_answer(
    body: Body,
    output: &Output,
    max: usize,
    metadata: HeaderMap,
) -> Response<Body> {
    let answer = match Limited::new(body, max).collect().await {
        Ok(collected) => output.message(&collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(Status::new(
            8,
            format!("the REST answer is over {max} bytes"),
        )),
        Err(err) => {
            tracing::debug!(error = %err, "REST answer failed mid-body");
            Err(Status::new(14, "the REST service reset the answer"))
        }
    };
    let message = match answer {
        Ok(message) => message,
        Err(status) => return trailers_only(&status, metadata),
    };
    let body = StreamBody::new(futures_util::stream::iter([
        Ok::<_, BodyError>(Frame::data(frame(&message))),
        Ok(Frame::trailers(Status::new(0, "").headers())),
    ]));
    grpc_response(metadata, body.boxed_unsync())
}

/// The one request message of a unary or server-streaming call.
async fn read_request(
    body: Body,
    input: &MessageDescriptor,
    max: usize,
) -> Result<DynamicMessage, Status> {
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(Status::new(8, format!("request message over {max} bytes")))
        }
        Err(_) => return Err(Status::new(1, "the caller cancelled the request")),
    };
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let payload = match decoder.next_message() {
        Ok(Some(payload)) if decoder.is_empty() => payload,
        Ok(Some(_)) => return Err(Status::new(13, "more than one request message")),
        Ok(None) => return Err(Status::new(13, "no request message")),
        Err(err) => return Err(Status::new(12, err.0)),
    };
    DynamicMessage::decode(input.clone(), payload)
        .map_err(|e| Status::new(13, format!("undecodable request message: {e}")))
}

/// The REST request: the first binding whose path can be filled.
fn rest_request<'a>(
    settings: &GrpcBridgeSettings,
    parts: &http::request::Parts,
    bindings: &'a [Binding],
    message: &DynamicMessage,
) -> Result<(&'a Binding, Request<Body>), Status> {
    let mut first_error = None;
    let found = bindings.iter().find_map(|binding| {
        match binding.template.expand(|path| field_text(message, path)) {
            Ok(path) => Some((binding, path)),
            Err(err) => {
                first_error.get_or_insert(err);
                None
            }
        }
    });
    let Some((binding, path)) = found else {
        let reason = first_error.unwrap_or_else(|| "no REST binding".into());
        return Err(Status::new(3, reason));
    };
    let rendered = json::render(message, settings.print, None)
        .map_err(|e| Status::new(13, format!("unprintable request message: {e}")))?;
    let Value::Object(mut object) = rendered else {
        return Err(Status::new(13, "the request message is not a JSON object"));
    };
    let input = message.descriptor();
    for variable in binding.template.fields() {
        if let Ok(fields) = field_path(&input, variable) {
            let keys: Vec<&str> = fields.iter().map(|f| key(settings.print, f)).collect();
            remove_path(&mut object, &keys);
        }
    }
    let (body, rest) = match &binding.body {
        BodyRule::None => (None, object),
        BodyRule::All => (Some(Value::Object(object)), Map::new()),
        BodyRule::Field(field) => {
            let value = object
                .remove(key(settings.print, field))
                .unwrap_or_else(|| match field.kind() {
                    Kind::Message(_) if !field.is_list() => Value::Object(Map::new()),
                    _ => Value::Null,
                });
            (Some(value), object)
        }
    };
    let mut query = Vec::new();
    for (name, value) in &rest {
        flatten(name, value, &mut query);
    }
    let target = if query.is_empty() {
        path
    } else {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", query_encode(k), query_encode(v)))
            .collect();
        format!("{path}?{}", pairs.join("&"))
    };
    let streaming = binding.rpc.is_server_streaming();
    let request = build_request(settings, parts, binding, &target, body, streaming)
        .map_err(|e| Status::new(3, format!("cannot build the REST request: {e}")))?;
    Ok((binding, request))
}

/// The HTTP request itself.
fn build_request(
    settings: &GrpcBridgeSettings,
    parts: &http::request::Parts,
    binding: &Binding,
    target: &str,
    body: Option<Value>,
    streaming: bool,
) -> Result<Request<Body>, BoxError> {
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(target.parse()?);
    let body_bytes = body.map(|value| Bytes::from(value.to_string()));
    let mut request = Request::new(match &body_bytes {
        Some(bytes) => crate::http::full(bytes.clone()),
        None => crate::http::empty(),
    });
    *request.method_mut() = binding.method.clone().unwrap_or(Method::POST);
    *request.uri_mut() = Uri::from_parts(uri)?;
    *request.version_mut() = Version::HTTP_11;
    *request.extensions_mut() = parts.extensions.clone();
    let headers = request.headers_mut();
    for name in super::KEPT_HEADERS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(settings.headers.iter().cloned())
        // The deadline layer below turns it into the REST call's timeout.
        .chain(std::iter::once(HeaderName::from_static("grpc-timeout")))
    {
        for value in parts.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let accept = if streaming {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    headers.insert(ACCEPT, HeaderValue::from_static(accept));
    if let Some(bytes) = &body_bytes {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    Ok(request)
}

/// The JSON key of a field as printed.
fn key(print: Print, field: &prost_reflect::FieldDescriptor) -> &str {
    if print.proto_names {
        field.name()
    } else {
        field.json_name()
    }
}

/// Removes `keys` (a nested path) from `object`.
fn remove_path(object: &mut Map<String, Value>, keys: &[&str]) {
    match keys {
        [] => {}
        [last] => {
            object.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(inner)) = object.get_mut(*first) {
                remove_path(inner, rest);
                if inner.is_empty() {
                    object.remove(*first);
                }
            }
        }
    }
}

/// A field's value as path text: scalars as printed, enums by name.
fn field_text(message: &DynamicMessage, path: &[String]) -> Option<String> {
    let fields = field_path(&message.descriptor(), path).ok()?;
    let (last, parents) = fields.split_last()?;
    let mut current = message.clone();
    for field in parents {
        let next = current.get_field(field).as_message()?.clone();
        current = next;
    }
    let value = current.get_field(last);
    Some(match &*value {
        Field::String(text) => text.clone(),
        Field::Bool(b) => b.to_string(),
        Field::I32(n) => n.to_string(),
        Field::I64(n) => n.to_string(),
        Field::U32(n) => n.to_string(),
        Field::U64(n) => n.to_string(),
        Field::F32(n) => n.to_string(),
        Field::F64(n) => n.to_string(),
        Field::EnumNumber(n) => match last.kind() {
            Kind::Enum(desc) => desc
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        _ => return None,
    })
}

/// Query pairs of one JSON value: objects nested with dots, lists as
/// repeated keys, scalars as text (objects inside lists cannot be said).
fn flatten(name: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Object(object) => {
            for (key, inner) in object {
                flatten(&format!("{name}.{key}"), inner, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                if !matches!(item, Value::Object(_) | Value::Array(_)) {
                    flatten(name, item, out);
                }
            }
        }
        Value::String(text) => out.push((name.to_string(), text.clone())),
        other => out.push((name.to_string(), other.to_string())),
    }
}

/// Form-style percent-encoding of a query name or value.
fn query_encode(text: &str) -> String {
    super::rules::percent_encode(text, false)
}

/// The response message type and its `response_body` field.
struct Output {
    desc: MessageDescriptor,
    field: Option<prost_reflect::FieldDescriptor>,
}

impl Output {
    /// One JSON document (empty: the default message) as the message.
    fn message(&self, bytes: &[u8]) -> Result<DynamicMessage, Status> {
        let parsed = json::parse_body(bytes)
            .map_err(|e| Status::new(13, format!("the REST answer is not JSON: {e}")))?;
        self.message_of(parsed.unwrap_or_else(|| Value::Object(Map::new())))
    }

    /// A JSON value (wrapped into `response_body`) as the message.
    fn message_of(&self, value: Value) -> Result<DynamicMessage, Status> {
        let value = match &self.field {
            Some(field) => {
                let mut object = Map::new();
                object.insert(field.name().to_string(), value);
                Value::Object(object)
            }
            None => value,
        };
        json::to_message(&self.desc, value).map_err(|e| {
            Status::new(
                13,
                format!(
                    "the REST answer does not fit {}: {e}",
                    self.desc.full_name()
                ),
            )
        })
    }

    /// An NDJSON line: a message, or the status of an error line
    /// (`{"error": {...}}` where the message has no `error` field).
    fn line(&self, line: &[u8]) -> Result<DynamicMessage, Status> {
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| Status::new(13, format!("the REST stream sent a bad line: {e}")))?;
        if let Some(status) = self.error_line(&value) {
            return Err(status);
        }
        self.message_of(value)
    }

    fn error_line(&self, value: &Value) -> Option<Status> {
        let object = value.as_object().filter(|o| o.len() == 1)?;
        let error = object.get("error")?;
        if self.field.is_none() && self.desc.get_field_by_json_name("error").is_some() {
            return None;
        }
        let code = error
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (1..=16).contains(c))
            .unwrap_or(2);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some(Status::new(code, message))
    }
}

/// State of an NDJSON answer read as gRPC messages.
struct LineStream {
    upstream: Body,
    buf: BytesMut,
    output: Output,
    max_line: usize,
    done: bool,
}

/// The REST service's NDJSON answer as gRPC frames, each line sent as it
/// arrives; trailers with the status end it.
fn ndjson_stream(upstream: Body, output: Output, max_line: usize) -> Body {
    let state = LineStream {
        upstream,
        buf: BytesMut::new(),
        output,
        max_line,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let frame = next_frame(&mut state).await?;
        Some((Ok::<_, BodyError>(frame), state))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// The next frame of a bridged stream; `None` once the trailers went.
async fn next_frame(state: &mut LineStream) -> Option<Frame<Bytes>> {
    loop {
        if state.done {
            return None;
        }
        if let Some(at) = state.buf.iter().position(|b| *b == b'\n') {
            let line = state.buf.split_to(at + 1);
            if let Some(frame) = line_frame(state, &line) {
                return Some(frame);
            }
            continue;
        }
        if state.buf.len() > state.max_line {
            let status = Status::new(
                8,
                format!("a REST stream line is over {} bytes", state.max_line),
            );
            return Some(end(state, &status));
        }
        match state.upstream.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    state.buf.extend_from_slice(&data);
                }
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "REST stream failed");
                return Some(end(
                    state,
                    &Status::new(14, "the REST service reset the stream"),
                ));
            }
            None => {
                let rest = std::mem::take(&mut state.buf);
                if let Some(frame) = line_frame(state, &rest) {
                    return Some(frame);
                }
                return Some(end(state, &Status::new(0, "")));
            }
        }
    }
}

/// One line as a frame (a message, or the trailers of a failure); `None`
/// for a blank line.
fn line_frame(state: &mut LineStream, line: &[u8]) -> Option<Frame<Bytes>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(match state.output.line(line) {
        Ok(message) => Frame::data(frame(&message)),
        Err(status) => end(state, &status),
    })
}

/// Ends the stream with `status` in the trailers.
fn end(state: &mut LineStream, status: &Status) -> Frame<Bytes> {
    state.done = true;
    Frame::trailers(status.headers())
}

/// The standard HTTP → gRPC code table, inverted.
pub fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        200..=299 => 0,
        400 | 422 => 3,  // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 5,        // NOT_FOUND
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        409 => 6,        // ALREADY_EXISTS
        412 => 9,        // FAILED_PRECONDITION
        416 => 11,       // OUT_OF_RANGE
        429 => 8,        // RESOURCE_EXHAUSTED
        499 => 1,        // CANCELLED
        501 => 12,       // UNIMPLEMENTED
        502 | 503 => 14, // UNAVAILABLE
        500..=599 => 13, // INTERNAL
        _ => 2,          // UNKNOWN
    }
}

/// What a REST error body says: `message`, `error.message`, `error`,
/// `detail` or `title` of a JSON object, else its text, else the reason
/// phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) {
        let candidates = [
            object.get("message"),
            object.get("error").and_then(|e| e.get("message")),
            object.get("error"),
            object.get("detail"),
            object.get("title"),
        ];
        if let Some(text) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return text.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        );
    }
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// REST response headers worth passing on as gRPC metadata.
fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let skip = matches!(
            name.as_str(),
            "content-type"
                | "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
                | "date"
                | "server"
        ) || name.as_str().starts_with("grpc-");
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A gRPC response head (HTTP/2, `application/grpc`) over `body`.
fn grpc_response(metadata: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.version_mut() = Version::HTTP_2;
    *response.headers_mut() = metadata;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A trailers-only gRPC answer: the status in the headers, no body.
fn trailers_only(status: &Status, metadata: HeaderMap) -> Response<Body> {
    let mut response = grpc_response(metadata, crate::http::empty());
    response.headers_mut().extend(status.headers());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_statuses_become_grpc_codes() {
        let code = |s: u16| grpc_code(StatusCode::from_u16(s).unwrap());
        assert_eq!(code(200), 0);
        assert_eq!(code(400), 3);
        assert_eq!(code(401), 16);
        assert_eq!(code(403), 7);
        assert_eq!(code(404), 5);
        assert_eq!(code(409), 6);
        assert_eq!(code(429), 8);
        assert_eq!(code(499), 1);
        assert_eq!(code(500), 13);
        assert_eq!(code(501), 12);
        assert_eq!(code(502), 14);
        assert_eq!(code(503), 14);
        assert_eq!(code(504), 4);
        assert_eq!(code(418), 2);
    }

    #[test]
    fn error_messages_come_from_the_body() {
        let msg = |body: &str| error_message(StatusCode::NOT_FOUND, body.as_bytes());
        assert_eq!(msg(r#"{"message": "no such book"}"#), "no such book");
        assert_eq!(msg(r#"{"error": {"message": "nested"}}"#), "nested");
        assert_eq!(msg(r#"{"error": "plain"}"#), "plain");
        assert_eq!(msg("just text\n"), "just text");
        assert_eq!(msg(""), "HTTP 404 Not Found");
    }

    #[test]
    fn query_pairs_nest_with_dots_and_repeat_lists() {
        let value = serde_json::json!({
            "pageSize": 10,
            "filter": { "author": "Ada L", "genre": "SCIENCE" },
            "tags": ["a", "b"],
            "includeDrafts": true,
        });
        let mut out = Vec::new();
        for (k, v) in value.as_object().unwrap() {
            flatten(k, v, &mut out);
        }
        let pairs: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(pairs.contains(&"pageSize=10".to_string()));
        assert!(pairs.contains(&"filter.author=Ada L".to_string()));
        assert!(pairs.contains(&"filter.genre=SCIENCE".to_string()));
        assert!(pairs.contains(&"tags=a".to_string()) && pairs.contains(&"tags=b".to_string()));
        assert!(pairs.contains(&"includeDrafts=true".to_string()));
        assert_eq!(query_encode("Ada L&x"), "Ada%20L%26x");
    }
}
