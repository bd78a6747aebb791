//! `demo-rest`: a small HTTP service (HTTP/1.1 and h2c on one port) with a
//! route per behaviour the sidecar must carry: headers, slow answers, streamed
//! bodies both ways, arbitrary status codes, and a gRPC call to the orders
//! service (through the local sidecar in the demo). Reads: HTTP requests.
//! Writes: JSON or plain-text responses, and the counters behind `/stats`.
//! Errors: [`RouteError`], mapped to a status and a JSON body by
//! [`RouteError::into_response`] alone.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use mesh_examples::http_server::{self, json, respond, text, Body, TEXT_PLAIN};
use mesh_examples::lifecycle::{self, ListenArgs};
use mesh_examples::orders::orders_client::OrdersClient;
use mesh_examples::orders::GetOrderRequest;
use serde_json::json as json_value;
use sha2::{Digest as _, Sha256};
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument as _;

/// Longest sleep `/slow` and `/stream` accept, in milliseconds.
const MAX_SLEEP_MS: u64 = 60_000;
/// Most chunks `/stream` sends.
const MAX_CHUNKS: u64 = 100_000;
/// Deadline of one `GetOrder` call to the orders upstream.
const ORDERS_TIMEOUT: Duration = Duration::from_secs(10);

const ROUTES: &[&str] = &[
    "GET /healthz",
    "GET /",
    "GET /headers",
    "GET /slow?ms=N",
    "POST /echo",
    "POST /sha256",
    "GET /stream?chunks=N&interval_ms=M",
    "GET /stats",
    "GET /status/{code}",
    "GET /orders/{id}",
    "ANY /echo-request[/...]",
];

/// HTTP demo service (HTTP/1.1 and h2c on one port).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    /// Service name, reported by `GET /` and in logs.
    #[arg(long, default_value = "web")]
    name: String,
    /// gRPC URL of the orders service that `GET /orders/{id}` calls, e.g. the
    /// local sidecar's outbound port `http://127.0.0.1:9001`.
    #[arg(long, value_name = "URL")]
    orders_grpc: Option<String>,
    /// Extra latency added to every request (to show latency-aware balancing).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
}

struct App {
    name: String,
    delay: Duration,
    orders: Option<OrdersClient<Channel>>,
    connections_accepted: AtomicU64,
    requests: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("no route for {method} {path}")]
    NoRoute { method: Method, path: String },
    #[error("query parameter {name}: expected a non-negative integer, got {value:?}")]
    BadParam { name: &'static str, value: String },
    #[error("status code must be an integer from 200 to 599, got {0:?}")]
    BadStatus(String),
    #[error("reading the request body: {0}")]
    Body(#[source] hyper::Error),
    #[error("GET /orders needs the service to be started with --orders-grpc")]
    NoOrdersUpstream,
    #[error("{}", .0.message())]
    OrderNotFound(tonic::Status),
    #[error("orders upstream: {:?}: {}", .0.code(), .0.message())]
    OrdersUpstream(tonic::Status),
}

impl RouteError {
    /// The one place a route error becomes a response: `{"error": "..."}`.
    fn into_response(self) -> Response<Body> {
        let status = match &self {
            Self::NoRoute { .. } | Self::OrderNotFound(_) => StatusCode::NOT_FOUND,
            Self::BadParam { .. } | Self::BadStatus(_) | Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::NoOrdersUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Self::OrdersUpstream(_) => StatusCode::BAD_GATEWAY,
        };
        tracing::debug!(error = %self, %status, "request failed");
        json(status, &json_value!({ "error": self.to_string() }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifecycle::init_tracing();
    let args = Args::parse();
    let span = tracing::info_span!("demo-rest", service = %args.name);
    run(args).instrument(span).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let orders = args.orders_grpc.as_deref().map(orders_client).transpose()?;
    let app = Arc::new(App {
        name: args.name,
        delay: Duration::from_millis(args.delay_ms),
        orders,
        connections_accepted: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    let listener = lifecycle::bind_and_announce(args.listen.listen).await?;
    http_server::serve(listener, |_peer| {
        app.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let app = Arc::clone(&app);
        hyper::service::service_fn(move |request| {
            let app = Arc::clone(&app);
            async move {
                let response = route(&app, request).await;
                Ok::<_, Infallible>(response.unwrap_or_else(RouteError::into_response))
            }
        })
    })
    .await;
    Ok(())
}

/// A lazily connected plaintext (h2c) client: the service starts even when
/// the orders upstream is not up yet.
fn orders_client(url: &str) -> anyhow::Result<OrdersClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("--orders-grpc {url:?} is not a valid URL"))?
        .timeout(ORDERS_TIMEOUT);
    Ok(OrdersClient::new(endpoint.connect_lazy()))
}

async fn route(app: &App, request: Request<Incoming>) -> Result<Response<Body>, RouteError> {
    app.requests.fetch_add(1, Ordering::Relaxed);
    if !app.delay.is_zero() {
        tokio::time::sleep(app.delay).await;
    }
    let (parts, body) = request.into_parts();
    let query = parts.uri.query();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok")),
        (&Method::GET, "/") => Ok(json(
            StatusCode::OK,
            &json_value!({ "service": app.name, "routes": ROUTES }),
        )),
        (&Method::GET, "/headers") => Ok(json(StatusCode::OK, &headers(&parts))),
        (&Method::GET, "/slow") => slow(query).await,
        (&Method::POST, "/echo") => Ok(echo(&parts.headers, body)),
        (&Method::POST, "/sha256") => sha256(body).await,
        (&Method::GET, "/stream") => stream(query),
        (&Method::GET, "/stats") => Ok(json(
            StatusCode::OK,
            &json_value!({
                "connections_accepted": app.connections_accepted.load(Ordering::Relaxed),
                "requests": app.requests.load(Ordering::Relaxed),
            }),
        )),
        (&Method::GET, path) if path.starts_with("/status/") => status(&path["/status/".len()..]),
        (&Method::GET, path) if path.starts_with("/orders/") => {
            order(app, &parts.headers, &path["/orders/".len()..]).await
        }
        (_, path) if path == "/echo-request" || path.starts_with("/echo-request/") => {
            Ok(echo_request(app, &parts))
        }
        (method, path) => Err(RouteError::NoRoute {
            method: method.clone(),
            path: path.to_owned(),
        }),
    }
}

/// The request's headers (lowercase name → values joined by ", ") plus
/// `_method`, `_uri` and `_version`.
fn headers(parts: &Parts) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<_> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect();
        out.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    out.insert("_method".to_owned(), parts.method.as_str().into());
    out.insert("_uri".to_owned(), parts.uri.to_string().into());
    out.insert("_version".to_owned(), format!("{:?}", parts.version).into());
    out
}

/// What the service saw of the request (its name, method, path, query and
/// headers), with the `Server` and `X-Powered-By` headers an app
/// typically sends (so a gateway in front can be seen removing them).
fn echo_request(app: &App, parts: &Parts) -> Response<Body> {
    let mut response = json(
        StatusCode::OK,
        &json_value!({
            "service": app.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers(parts),
        }),
    );
    let headers = response.headers_mut();
    headers.insert(
        "server",
        hyper::header::HeaderValue::from_static("demo-rest"),
    );
    headers.insert(
        "x-powered-by",
        hyper::header::HeaderValue::from_static("demo"),
    );
    if let Ok(name) = hyper::header::HeaderValue::from_str(&app.name) {
        headers.insert("x-service", name);
    }
    response
}

async fn slow(query: Option<&str>) -> Result<Response<Body>, RouteError> {
    let ms = query_param(query, "ms", 0)?.min(MAX_SLEEP_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(json(StatusCode::OK, &json_value!({ "slept_ms": ms })))
}

/// Streams the request body back frame by frame as it arrives.
fn echo(request_headers: &HeaderMap, body: Incoming) -> Response<Body> {
    let mut response = Response::new(body.boxed());
    if let Some(content_type) = request_headers.get(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, content_type.clone());
    }
    response
}

/// Hashes the request body as it streams in.
async fn sha256(mut body: Incoming) -> Result<Response<Body>, RouteError> {
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(RouteError::Body)?.data_ref() {
            hasher.update(data);
            bytes += data.len() as u64;
        }
    }
    Ok(json(
        StatusCode::OK,
        &json_value!({ "bytes": bytes, "sha256": hex::encode(hasher.finalize()) }),
    ))
}

/// `chunks` lines `chunk <i>\n`, `interval_ms` apart, the first one at once;
/// chunked on HTTP/1.1 since the length is not known up front.
fn stream(query: Option<&str>) -> Result<Response<Body>, RouteError> {
    let chunks = query_param(query, "chunks", 3)?.min(MAX_CHUNKS);
    let interval = Duration::from_millis(query_param(query, "interval_ms", 0)?.min(MAX_SLEEP_MS));
    let frames = futures_util::stream::unfold(0, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, hyper::Error>(frame), i + 1))
    });
    Ok(respond(
        StatusCode::OK,
        TEXT_PLAIN,
        StreamBody::new(frames).boxed(),
    ))
}

fn status(code: &str) -> Result<Response<Body>, RouteError> {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| RouteError::BadStatus(code.to_owned()))?;
    Ok(json(status, &json_value!({ "status": status.as_u16() })))
}

/// Trace context headers a well-behaved app copies to the calls it makes,
/// so its outbound request joins the caller's trace.
const TRACE_CONTEXT: &[&str] = &["traceparent", "tracestate"];

async fn order(app: &App, headers: &HeaderMap, id: &str) -> Result<Response<Body>, RouteError> {
    let mut client = app.orders.clone().ok_or(RouteError::NoOrdersUpstream)?;
    let mut request = tonic::Request::new(GetOrderRequest { id: id.to_owned() });
    for name in TRACE_CONTEXT {
        let value = headers.get(*name).and_then(|v| v.to_str().ok());
        if let Some(value) = value.and_then(|v| v.parse().ok()) {
            request.metadata_mut().insert(*name, value);
        }
    }
    let order = client
        .get_order(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => RouteError::OrderNotFound(status),
            _ => RouteError::OrdersUpstream(status),
        })?
        .into_inner();
    Ok(json(StatusCode::OK, &order))
}

/// The integer query parameter `name`, or `default` when it is absent.
fn query_param(query: Option<&str>, name: &'static str, default: u64) -> Result<u64, RouteError> {
    let value = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            _ => None,
        });
    match value {
        None => Ok(default),
        Some(value) => value.parse().map_err(|_| RouteError::BadParam {
            name,
            value: value.to_owned(),
        }),
    }
}
