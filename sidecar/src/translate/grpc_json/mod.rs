//! REST/JSON ↔ gRPC transcoding, on an edge route (`grpc_json:`, below
//! the body transformation, above dispatch) or in front of the local app
//! (`inbound.grpc_json`, above authz, so gRPC authz rules apply to REST
//! callers too). A request that matches a `google.api.http` binding (or
//! `POST /package.Service/Method`) becomes an HTTP/2 gRPC call; the answer
//! comes back as JSON, NDJSON or SSE. gRPC callers pass untouched.
//!
//! Reads: the route's or the inbound listener's [`GrpcJsonSettings`].
//! Writes: the gRPC request (path `/package.Service/Method`, HTTP/2,
//! `grpc-timeout` for the deadline below to rewrite, configured headers as
//! metadata); the JSON response (gRPC metadata and trailers as headers,
//! trailer names kept; the gRPC status as the HTTP status with a
//! `google.rpc.Status`-shaped body).
//! Errors: [`GrpcJsonError`]: a bad request (400, naming the field), no
//! method for the path (404), descriptors unavailable from reflection
//! (503, retried after [`REFLECTION_RETRY`]), a non-gRPC upstream (502).

pub mod descriptors;
pub mod json;
pub mod openapi;
pub mod reverse;
pub mod rules;
pub mod status;
pub mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, TE};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage};
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::Layer;

use self::json::{JsonError, Print};
use self::rules::Binding;
use self::status::GrpcStatus;
use self::stream::{FrameDecoder, Printer, StreamFormat};
use crate::config::Settings;
use crate::http::{full, Body, HttpService};
use crate::BoxError;

/// How long a failed reflection is answered 503 before it is tried again.
pub const REFLECTION_RETRY: Duration = Duration::from_secs(2);

/// Longest a reflection fetch may take.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest unary gRPC answer read.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Default `max_body`.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// Request headers always carried over (routing, tracing, forwarding).
const KEPT_HEADERS: [&str; 8] = [
    "host",
    "x-request-id",
    "traceparent",
    "tracestate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// A gRPC deadline so far away that only the route's timeout (which the
/// deadline layer below writes over it) counts.
const OPEN_DEADLINE: &str = "99999999S";

/// Why a request is not transcoded.
#[derive(Debug, thiserror::Error)]
pub enum GrpcJsonError {
    /// The JSON, a path variable or a query parameter does not fit the
    /// request message.
    #[error("invalid request: {0}")]
    Json(JsonError),
    /// No binding matches the method and path.
    #[error("no gRPC method is mapped to {0}")]
    NoMethod(String),
    /// The JSON body is over `max_body`.
    #[error("request body is over {0} bytes")]
    BodyTooLarge(usize),
    /// Reflection failed (or the reflected descriptors do not map).
    #[error("gRPC descriptors unavailable: {0}")]
    Descriptors(String),
    /// The upstream did not answer with gRPC.
    #[error("the upstream answered HTTP {0} without a gRPC status")]
    NotGrpc(StatusCode),
}

/// Where the descriptors come from.
enum Source {
    /// Compiled at load.
    Loaded(Arc<Api>),
    /// Fetched from the upstream at first use.
    Reflection(tokio::sync::Mutex<Option<Reflected>>),
}

/// The last reflection outcome.
enum Reflected {
    Ready(Arc<Api>),
    Failed { at: Instant, reason: String },
}

/// The API: descriptors and their HTTP bindings.
pub struct Api {
    /// Every message type (status details, `Any`).
    pub pool: DescriptorPool,
    /// Bindings, most specific first.
    pub bindings: Vec<Binding>,
}

impl Api {
    /// Maps the pool's services (all, or those named).
    pub fn new(pool: DescriptorPool, services: &[String]) -> Result<Api, Vec<String>> {
        let mut errors: Vec<String> = services
            .iter()
            .filter(|name| pool.get_service_by_name(name).is_none())
            .map(|name| format!("no service {name:?} in the descriptors"))
            .collect();
        match rules::bindings(&pool, services) {
            Ok(bindings) if errors.is_empty() => Ok(Api { pool, bindings }),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }
}

/// Transcoding settings, compiled (descriptors loaded, rules mapped).
pub struct GrpcJsonSettings {
    source: Source,
    /// Only these services (reflection filters after fetching).
    services: Vec<String>,
    /// JSON printing.
    pub print: Print,
    /// Server-stream format; `None`: by `Accept`.
    pub stream: Option<StreamFormat>,
    /// Request headers sent as metadata.
    pub headers: Vec<HeaderName>,
    /// Largest JSON body (and NDJSON line).
    pub max_body: usize,
}

impl std::fmt::Debug for GrpcJsonSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Loaded(api) => format!("{} bindings", api.bindings.len()),
            Source::Reflection(_) => "reflection".into(),
        };
        f.debug_struct("GrpcJsonSettings")
            .field("source", &source)
            .field("print", &self.print)
            .field("stream", &self.stream)
            .field("headers", &self.headers)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl GrpcJsonSettings {
    /// Settings over descriptors loaded at config load.
    pub fn loaded(api: Api) -> Self {
        Self::with_source(Source::Loaded(Arc::new(api)))
    }

    /// Settings whose descriptors come from reflection.
    pub fn reflection(services: Vec<String>) -> Self {
        let mut settings = Self::with_source(Source::Reflection(tokio::sync::Mutex::new(None)));
        settings.services = services;
        settings
    }

    fn with_source(source: Source) -> Self {
        GrpcJsonSettings {
            source,
            services: Vec::new(),
            print: Print::default(),
            stream: None,
            headers: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The API if it is known now (loaded, or already reflected).
    pub fn current_api(&self) -> Option<Arc<Api>> {
        match &self.source {
            Source::Loaded(api) => Some(api.clone()),
            Source::Reflection(state) => match &*state.try_lock().ok()? {
                Some(Reflected::Ready(api)) => Some(api.clone()),
                _ => None,
            },
        }
    }

    /// The API, fetching it by reflection the first time (and again after
    /// a failure, once [`REFLECTION_RETRY`] has passed).
    async fn api(
        &self,
        inner: &HttpService,
        parts: &http::request::Parts,
    ) -> Result<Arc<Api>, GrpcJsonError> {
        let state = match &self.source {
            Source::Loaded(api) => return Ok(api.clone()),
            Source::Reflection(state) => state,
        };
        let mut state = state.lock().await;
        match &*state {
            Some(Reflected::Ready(api)) => return Ok(api.clone()),
            Some(Reflected::Failed { at, reason }) if at.elapsed() < REFLECTION_RETRY => {
                return Err(GrpcJsonError::Descriptors(reason.clone()))
            }
            _ => {}
        }
        let reflector = descriptors::Reflector {
            inner: inner.clone(),
            template: parts,
        };
        let fetched = match tokio::time::timeout(REFLECTION_TIMEOUT, reflector.fetch()).await {
            Ok(result) => result,
            Err(_) => Err("reflection timed out".to_string()),
        }
        .and_then(|pool| Api::new(pool, &self.services).map_err(|e| e.join("; ")));
        match fetched {
            Ok(api) => {
                tracing::info!(
                    bindings = api.bindings.len(),
                    "gRPC descriptors fetched by reflection"
                );
                let api = Arc::new(api);
                *state = Some(Reflected::Ready(api.clone()));
                Ok(api)
            }
            Err(reason) => {
                tracing::warn!(%reason, "gRPC reflection failed");
                *state = Some(Reflected::Failed {
                    at: Instant::now(),
                    reason: reason.clone(),
                });
                Err(GrpcJsonError::Descriptors(reason))
            }
        }
    }
}

/// Transcoding on the edge: reads the [`crate::edge::MatchedRoute`]'s settings.
pub fn edge_layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::shared_fn(move |req: Request<Body>| {
            let settings = req
                .extensions()
                .get::<crate::edge::MatchedRoute>()
                .and_then(|matched| matched.settings().grpc_json.clone());
            call(settings, inner.clone(), req)
        })
    })
}

/// Transcoding in front of the local app (`inbound.grpc_json`).
pub fn inbound_layer(
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let settings = settings.clone();
        crate::http::direct_fn(move |req: Request<Body>| {
            // Cloned only for a request it transcodes.
            let grpc_json = settings
                .load()
                .inbound
                .as_ref()
                .and_then(|inbound| inbound.grpc_json.as_ref())
                .filter(|_| !crate::http::is_grpc(req.headers()))
                .cloned();
            match grpc_json {
                Some(grpc_json) => Box::pin(call(Some(grpc_json), inner.clone(), req)),
                None => inner.call_ref(req),
            }
        })
    })
}

/// Transcodes when there are settings and the caller is not gRPC already.
async fn call(
    settings: Option<Arc<GrpcJsonSettings>>,
    inner: HttpService,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    match settings {
        Some(settings) if !crate::http::is_grpc(req.headers()) => {
            let version = req.version();
            let mut response = transcode(&settings, inner, req).await?;
            *response.version_mut() = version;
            Ok(response)
        }
        _ => inner.call_ref(req).await,
    }
}

/// One REST/JSON call as a gRPC call.
async fn transcode(
    settings: &GrpcJsonSettings,
    inner: HttpService,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let api = settings.api(&inner, &parts).await?;
    let path = parts.uri.path();
    let (binding, captures) = rules::find(&api.bindings, &parts.method, path)
        .ok_or_else(|| GrpcJsonError::NoMethod(format!("{} {path}", parts.method)))?;
    let rpc = &binding.rpc;
    let input = rpc.input();
    let base = json::base_object(&input, &captures, parts.uri.query(), &binding.body)
        .map_err(GrpcJsonError::Json)?;
    let failed: stream::LineError = Arc::new(Mutex::new(None));
    let grpc_body = if rpc.is_client_streaming() {
        stream::request_body(body, input, base, settings.max_body, failed.clone())
    } else {
        let bytes = read_body(body, settings.max_body).await?;
        let parsed = json::parse_body(&bytes).map_err(GrpcJsonError::Json)?;
        let value = json::merge_body(base, &binding.body, parsed).map_err(GrpcJsonError::Json)?;
        let message = json::to_message(&input, value).map_err(GrpcJsonError::Json)?;
        full(stream::frame(&message))
    };
    let request = grpc_request(settings, &parts, binding, grpc_body)?;
    let bad_line = || failed.lock().ok().and_then(|mut slot| slot.take());
    let response = match inner.call_ref(request).await {
        Ok(response) => response,
        Err(err) => return Err(bad_line().map_or(err, |e| GrpcJsonError::Json(e).into())),
    };
    let (head, body) = response.into_parts();
    // Telemetry sees JSON; it reports the status seen here.
    let info = parts.extensions.get::<crate::telemetry::RequestInfo>();
    let body = crate::telemetry::watch_grpc_status(info, &head.headers, body);
    let mut headers = metadata(&head.headers);
    if let Some(status) = GrpcStatus::from_headers(&head.headers, &api.pool) {
        // Trailers-only.
        if let Some(err) = bad_line() {
            return Err(GrpcJsonError::Json(err).into());
        }
        if status.code != 0 || !rpc.is_server_streaming() {
            let status = match status.code {
                0 => GrpcStatus::new(13, "the upstream sent no response message"),
                _ => status,
            };
            return Ok(status_response(&status, headers));
        }
        let format = stream_format(settings, &parts.headers);
        return Ok(json_response(
            StatusCode::OK,
            format.content_type(),
            full(""),
            headers,
        ));
    }
    if !crate::http::is_grpc(&head.headers) {
        return Err(GrpcJsonError::NotGrpc(head.status).into());
    }
    let printer = Printer {
        output: rpc.output(),
        pool: api.pool.clone(),
        print: settings.print,
        field: binding.response_body.clone(),
        format: stream_format(settings, &parts.headers),
    };
    if rpc.is_server_streaming() {
        return server_stream(body, printer, headers).await;
    }
    let collected = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| bad_line().map_or(e, |e| GrpcJsonError::Json(e).into()))?;
    if let Some(err) = bad_line() {
        return Err(GrpcJsonError::Json(err).into());
    }
    let status = collected
        .trailers()
        .and_then(|t| GrpcStatus::from_headers(t, &api.pool))
        .unwrap_or_else(|| GrpcStatus::new(13, "the upstream sent no grpc-status"));
    if let Some(trailers) = collected.trailers() {
        headers.extend(metadata(trailers));
    }
    if status.code != 0 {
        return Ok(status_response(&status, headers));
    }
    let mut decoder = FrameDecoder::default();
    decoder.push(&collected.to_bytes());
    let message = decoder
        .next_message()
        .ok()
        .flatten()
        .and_then(|payload| DynamicMessage::decode(rpc.output(), payload).ok());
    let Some(message) = message else {
        let status = GrpcStatus::new(13, "the upstream sent no readable response message");
        return Ok(status_response(&status, headers));
    };
    let json = json::render(&message, settings.print, binding.response_body.as_ref())?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        full(json.to_string()),
        headers,
    ))
}

/// The JSON body, at most `max` bytes.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, BoxError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(GrpcJsonError::BodyTooLarge(max).into())
        }
        Err(err) => Err(err),
    }
}

/// The gRPC request for a binding: HTTP/2 (whatever the caller spoke, so
/// `protocol: auto` upstreams get gRPC too), kept and configured headers.
fn grpc_request(
    settings: &GrpcJsonSettings,
    parts: &http::request::Parts,
    binding: &Binding,
    body: Body,
) -> Result<Request<Body>, BoxError> {
    let path = format!(
        "/{}/{}",
        binding.rpc.parent_service().full_name(),
        binding.rpc.name()
    );
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(path.parse()?);
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_parts(uri)?;
    *request.version_mut() = Version::HTTP_2;
    *request.extensions_mut() = parts.extensions.clone();
    let headers = request.headers_mut();
    for name in KEPT_HEADERS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(settings.headers.iter().cloned())
    {
        for value in parts.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if !headers.contains_key("grpc-timeout") {
        headers.insert("grpc-timeout", HeaderValue::from_static(OPEN_DEADLINE));
    }
    Ok(request)
}

/// NDJSON or SSE: the configured format, else by `Accept`.
fn stream_format(settings: &GrpcJsonSettings, headers: &HeaderMap) -> StreamFormat {
    if let Some(format) = settings.stream {
        return format;
    }
    let sse = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if sse {
        StreamFormat::Sse
    } else {
        StreamFormat::Ndjson
    }
}

/// A server stream: read until the first message (so a stream that fails
/// before any message gets its HTTP status), then stream the rest.
async fn server_stream(
    mut body: Body,
    printer: Printer,
    headers: HeaderMap,
) -> Result<Response<Body>, BoxError> {
    let mut decoder = FrameDecoder::default();
    let content_type = printer.format.content_type();
    while !decoder.has_message() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| e.0)?;
        match frame.into_data() {
            Ok(data) => decoder.push(&data),
            Err(frame) => {
                let status = frame
                    .trailers_ref()
                    .and_then(|t| GrpcStatus::from_headers(t, &printer.pool))
                    .unwrap_or_else(|| GrpcStatus::new(13, "the upstream sent no grpc-status"));
                if status.code != 0 {
                    return Ok(status_response(&status, headers));
                }
                return Ok(json_response(
                    StatusCode::OK,
                    content_type,
                    full(""),
                    headers,
                ));
            }
        }
    }
    let mut response = json_response(
        StatusCode::OK,
        content_type,
        stream::response_body(body, decoder, printer),
        headers,
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Response metadata worth showing an HTTP caller (gRPC framing headers
/// and the status go).
fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let skip = matches!(
            name.as_str(),
            "content-type"
                | "content-length"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "grpc-status"
                | "grpc-message"
                | "grpc-status-details-bin"
                | "grpc-encoding"
                | "grpc-accept-encoding"
        );
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A gRPC status as its HTTP status and `google.rpc.Status` JSON.
fn status_response(status: &GrpcStatus, headers: HeaderMap) -> Response<Body> {
    json_response(
        status.http_status(),
        "application/json",
        full(status.to_json().to_string()),
        headers,
    )
}

fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: Body,
    headers: HeaderMap,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
