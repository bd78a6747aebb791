//! One bridged connection: the `$connect` call and the upgrade
//! ([`accept`]), then the connection task: a reader (client frames,
//! liveness, limits), a dispatcher (messages become backend calls, in
//! order) and a writer (the bounded send queue), and the `$disconnect`
//! call at the end.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use mesh_api::config::BinaryMode;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use super::redis::RedisLink;
use super::registry::{hub, random_id, CloseRequest, CodeLabels, Handle, Record};
use super::{BackendCall, MessageRoute, WsBridgeSettings, X_MESH_CONNECTION_ID, X_MESH_ROUTE_KEY};
use crate::edge::MatchedRoute;
use crate::http::{Body, ConnInfo, HttpService};
use crate::policy::auth::Principal;
use crate::route::Target;
use crate::telemetry::RequestInfo;

/// How long a closing connection may take to flush its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Messages read but not yet sent to the backend, per connection.
const DISPATCH_QUEUE: usize = 32;
/// Largest `$connect` / `$disconnect` answer body read.
const MAX_LIFECYCLE_BODY: usize = 64 * 1024;

/// Everything a connection needs to call its backends; kept by the
/// connection task, so a reload does not touch it.
#[derive(Clone)]
struct Backend {
    inner: HttpService,
    matched: MatchedRoute,
    authority: Option<Authority>,
    id: Arc<str>,
    /// Headers authentication set, plus `x-request-id` of the handshake.
    identity: Vec<(HeaderName, HeaderValue)>,
}

/// A backend's answer.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// Why a backend call failed (`reason` of the error message).
#[derive(Debug, Clone, Copy)]
enum CallFailure {
    Timeout,
    Upstream(StatusCode),
    TooLarge,
    Unroutable,
}

impl CallFailure {
    fn status(self) -> StatusCode {
        match self {
            CallFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            CallFailure::Upstream(status) => status,
            CallFailure::TooLarge | CallFailure::Unroutable => StatusCode::BAD_GATEWAY,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            CallFailure::Timeout => "timeout",
            CallFailure::Upstream(_) => "upstream_error",
            CallFailure::TooLarge => "too_large",
            CallFailure::Unroutable => "no_route",
        }
    }
}

impl Backend {
    /// Calls `call` at `path` with `body`; `headers` besides the ones
    /// every call gets.
    async fn call(
        &self,
        call: &BackendCall,
        path: PathAndQuery,
        route_key: &str,
        headers: HeaderMap,
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, CallFailure> {
        let cluster = self
            .matched
            .cluster(&call.upstream)
            .ok_or(CallFailure::Unroutable)?;
        let authority = match &self.authority {
            Some(authority) => authority.clone(),
            None => Authority::try_from(&*call.upstream).map_err(|_| CallFailure::Unroutable)?,
        };
        let mut request = Request::new(crate::http::full(body));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = Uri::from(path);
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        let out = request.headers_mut();
        for (name, value) in &self.identity {
            out.insert(name.clone(), value.clone());
        }
        if let Ok(id) = HeaderValue::from_str(&self.id) {
            out.insert(X_MESH_CONNECTION_ID, id);
        }
        if let Ok(key) = HeaderValue::from_str(route_key) {
            out.insert(X_MESH_ROUTE_KEY, key);
        }
        request.extensions_mut().insert(Target {
            cluster,
            passthrough: None,
            authority,
        });
        let exchange = async {
            let response = self.inner.call_ref(request).await.map_err(|err| {
                CallFailure::Upstream(crate::errors::response(&err, false).status())
            })?;
            let status = response.status();
            let content_type = response.headers().get(CONTENT_TYPE).cloned();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|_| CallFailure::TooLarge)?
                .to_bytes();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(call.timeout, exchange)
            .await
            .map_err(|_| CallFailure::Timeout)?
    }
}

/// A plain answer from the proxy.
fn refusal(status: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({ "error": { "status": status.as_u16(), "reason": reason } });
    let mut response = Response::new(crate::http::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(reason) = HeaderValue::from_str(reason) {
        response.headers_mut().insert("x-mesh-error", reason);
    }
    response
}

/// Answers a bridge route's request: the `$connect` call, then 101 and
/// the connection task; or the refusal.
pub(super) async fn accept(
    bridge: Arc<WsBridgeSettings>,
    mut req: Request<Body>,
    inner: HttpService,
    redis: Option<Arc<RedisLink>>,
) -> Response<Body> {
    let Some(key) = websocket_key(&req) else {
        return refusal(StatusCode::UPGRADE_REQUIRED, "upgrade_required");
    };
    let Some(matched) = req.extensions().get::<MatchedRoute>().cloned() else {
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    };
    let principal = req.extensions().get::<Principal>().cloned();
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let id: Arc<str> = random_id().into();
    let mut identity: Vec<(HeaderName, HeaderValue)> = principal
        .as_ref()
        .map(|p| p.headers.clone())
        .unwrap_or_default();
    if let Some(request_id) = req.headers().get("x-request-id") {
        identity.push((HeaderName::from_static("x-request-id"), request_id.clone()));
    }
    let backend = Backend {
        inner,
        matched: matched.clone(),
        authority: crate::http::authority(&req).ok(),
        id: id.clone(),
        identity,
    };
    if let Some(connect) = &bridge.connect {
        let path = with_query(&connect.path, req.uri().query());
        let headers = handshake_headers(req.headers());
        let answer = backend
            .call(
                connect,
                path,
                "$connect",
                headers,
                Bytes::new(),
                MAX_LIFECYCLE_BODY,
            )
            .await;
        match answer {
            Ok(answer) if answer.status.is_success() => {}
            Ok(answer) => return backend_refusal(answer),
            Err(failure) => return refusal(failure.status(), "connect_failed"),
        }
    }
    let record = Arc::new(Record {
        id: id.clone(),
        route: matched.settings().name.clone(),
        connected_at: SystemTime::now(),
        last_active: AtomicU64::new(0),
        source_ip: source_ip(&req, conn.as_ref()),
        identity: identity_of(principal.as_ref(), conn.as_ref()),
    });
    record.touch();
    let upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::debug_span!("ws_bridge", connection = %id);
    let task = async move {
        match upgrade.await {
            Ok(upgraded) => run(bridge, backend, record, TokioIo::new(upgraded), redis).await,
            Err(err) => debug!(error = %err, "upgrade failed"),
        }
    };
    tokio::spawn(task.instrument(span));
    let mut response = Response::new(crate::http::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Ok(id) = HeaderValue::from_str(&id) {
        headers.insert(X_MESH_CONNECTION_ID, id);
    }
    response
}

/// The client's `Sec-WebSocket-Key` of a valid upgrade request.
fn websocket_key(req: &Request<Body>) -> Option<String> {
    let upgrade_ok = crate::http::is_upgrade(req)
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !upgrade_ok || !version_ok || req.method() != http::Method::GET {
        return None;
    }
    let key = req.headers().get(SEC_WEBSOCKET_KEY)?.to_str().ok()?;
    Some(key.to_string())
}

/// The backend's refusal as the client's answer (status and body).
fn backend_refusal(answer: Answer) -> Response<Body> {
    let mut response = Response::new(crate::http::full(answer.body));
    *response.status_mut() = answer.status;
    if let Some(content_type) = answer.content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

/// `path` with the client's query appended.
fn with_query(path: &PathAndQuery, query: Option<&str>) -> PathAndQuery {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return path.clone();
    };
    let joined = match path.query() {
        Some(own) => format!("{}?{own}&{query}", path.path()),
        None => format!("{}?{query}", path.path()),
    };
    PathAndQuery::try_from(joined).unwrap_or_else(|_| path.clone())
}

/// The handshake's headers, minus hop-by-hop and WebSocket ones.
fn handshake_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let hop = [CONNECTION, UPGRADE, HOST, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name)
            || name.as_str().starts_with("sec-websocket-")
            || name.as_str() == "keep-alive";
        if !hop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn source_ip(req: &Request<Body>, conn: Option<&ConnInfo>) -> Option<IpAddr> {
    req.extensions()
        .get::<RequestInfo>()
        .and_then(RequestInfo::client)
        .or_else(|| conn.and_then(|c| c.peer).map(|peer| peer.ip()))
}

fn identity_of(principal: Option<&Principal>, conn: Option<&ConnInfo>) -> Option<String> {
    let from_principal = principal.and_then(|p| {
        p.consumer.as_deref().map(str::to_string).or_else(|| {
            p.claims
                .get("sub")
                .and_then(|sub| sub.as_str())
                .map(str::to_string)
        })
    });
    from_principal.or_else(|| conn.and_then(|c| c.peer_identity.as_deref().map(str::to_string)))
}

/// How a connection ended: the code and reason sent or received.
struct Ending {
    code: u16,
    reason: String,
    /// The proxy closes (a close frame goes to the client).
    by_proxy: bool,
}

impl Ending {
    fn proxy(code: u16, reason: &str) -> Self {
        Ending {
            code,
            reason: reason.into(),
            by_proxy: true,
        }
    }

    fn client(code: u16, reason: String) -> Self {
        Ending {
            code,
            reason,
            by_proxy: false,
        }
    }
}

/// The connection task.
async fn run<S>(
    bridge: Arc<WsBridgeSettings>,
    backend: Backend,
    record: Arc<Record>,
    io: S,
    redis: Option<Arc<RedisLink>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &bridge.limits;
    let config = WebSocketConfig::default()
        .max_frame_size(Some(limits.frame))
        .max_message_size(Some(limits.message));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Message>(limits.send_queue);
    let (close_tx, mut close_rx) = mpsc::channel::<CloseRequest>(4);
    let (finish_tx, finish_rx) = mpsc::channel::<Option<CloseFrame>>(1);
    let handle = Handle {
        out: out_tx,
        close: close_tx.clone(),
        record: record.clone(),
    };
    let hub = hub();
    hub.insert(handle.clone());
    if let Some(redis) = &redis {
        redis.register(&record);
    }
    let writer = tokio::spawn(write_loop(sink, out_rx, finish_rx, close_tx).in_current_span());
    let (dispatch_tx, dispatch_rx) = mpsc::channel::<Message>(DISPATCH_QUEUE);
    let dispatcher = tokio::spawn(
        dispatch_loop(bridge.clone(), backend.clone(), handle.clone(), dispatch_rx)
            .in_current_span(),
    );
    let mut rate = RateWindow::new(limits.rate);
    let mut idle_deadline = Instant::now() + limits.idle;
    let end = tokio::time::sleep(limits.max_duration);
    tokio::pin!(end);
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping, limits.ping);
    let ending = loop {
        tokio::select! {
            frame = stream.next() => {
                let message = match frame {
                    Some(Ok(message)) => message,
                    Some(Err(WsError::Capacity(_))) => break Ending::proxy(1009, "message too big"),
                    Some(Err(_)) | None => break Ending::client(1006, String::new()),
                };
                record.touch();
                idle_deadline = Instant::now() + limits.idle;
                match message {
                    Message::Text(_) | Message::Binary(_) => {
                        hub.metrics.message("in");
                        if !rate.admit() {
                            let error = error_message(StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
                            handle.send(error, &hub.metrics);
                        } else if dispatch_tx.send(message).await.is_err() {
                            break Ending::proxy(1011, "internal error");
                        }
                    }
                    Message::Close(frame) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        break Ending::client(code, reason);
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(idle_deadline) => break Ending::proxy(1001, "idle timeout"),
            _ = &mut end => break Ending::proxy(1001, "maximum connection duration reached"),
            _ = ping.tick() => {
                // A full queue here is a slow reader too.
                handle.send(Message::Ping(Bytes::new()), &hub.metrics);
            }
            request = close_rx.recv() => {
                let request = request.unwrap_or(CloseRequest { code: 1011, reason: String::new() });
                break Ending { by_proxy: request.code != 1006, code: request.code, reason: request.reason };
            }
        }
    };
    hub.remove(&record.id);
    if let Some(redis) = &redis {
        redis.unregister(&record.id);
    }
    hub.metrics
        .closes
        .get_or_create(&CodeLabels { code: ending.code })
        .inc();
    let frame = ending.by_proxy.then(|| CloseFrame {
        code: CloseCode::from(ending.code),
        reason: ending.reason.clone().into(),
    });
    let _ = finish_tx.try_send(frame);
    drop(dispatch_tx);
    // The close handshake: the writer flushes the close frame, then the
    // client's reply is read, so closing the socket never resets it
    // (which would discard what the client has not read yet).
    let mut writer = writer;
    let handshake = async {
        let _ = (&mut writer).await;
        while let Some(Ok(_)) = stream.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
    writer.abort();
    drop(stream);
    let mut dispatcher = dispatcher;
    if tokio::time::timeout(Duration::from_secs(1), &mut dispatcher)
        .await
        .is_err()
    {
        dispatcher.abort();
    }
    debug!(code = ending.code, "closed");
    if let Some(disconnect) = &bridge.disconnect {
        notify_disconnect(&backend, disconnect, &ending).await;
    }
}

/// The `$disconnect` call, best effort.
async fn notify_disconnect(backend: &Backend, call: &BackendCall, ending: &Ending) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-mesh-close-code", HeaderValue::from(ending.code));
    if let Ok(reason) = HeaderValue::from_str(&ending.reason) {
        headers.insert("x-mesh-close-reason", reason);
    }
    let body = json!({ "code": ending.code, "reason": ending.reason }).to_string();
    let path = call.path.clone();
    let result = backend
        .call(
            call,
            path,
            "$disconnect",
            headers,
            Bytes::from(body),
            MAX_LIFECYCLE_BODY,
        )
        .await;
    if let Err(failure) = result {
        debug!(reason = failure.reason(), "$disconnect call failed");
    }
}

/// Writes the send queue to the client until told to finish; a close
/// frame then, within [`CLOSE_GRACE`].
async fn write_loop<S>(
    mut sink: S,
    mut out: mpsc::Receiver<Message>,
    mut finish: mpsc::Receiver<Option<CloseFrame>>,
    close: mpsc::Sender<CloseRequest>,
) where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let frame = loop {
        tokio::select! {
            biased;
            frame = finish.recv() => break frame.flatten(),
            message = out.recv() => {
                let Some(message) = message else { break None };
                tokio::select! {
                    biased;
                    frame = finish.recv() => break frame.flatten(),
                    sent = sink.send(message) => {
                        if sent.is_err() {
                            let _ = close.try_send(CloseRequest { code: 1006, reason: String::new() });
                            return;
                        }
                    }
                }
            }
        }
    };
    let closing = async {
        if let Some(frame) = frame {
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}

/// Sends messages to their backends, in order; replies and errors go to
/// the send queue.
async fn dispatch_loop(
    bridge: Arc<WsBridgeSettings>,
    backend: Backend,
    handle: Handle,
    mut messages: mpsc::Receiver<Message>,
) {
    let metrics = &hub().metrics;
    while let Some(message) = messages.recv().await {
        let (payload, binary) = match message {
            Message::Text(text) => (Bytes::from(text), false),
            Message::Binary(bytes) => (bytes, true),
            _ => continue,
        };
        let Some(route) = bridge.select(&payload) else {
            let error = error_message(StatusCode::NOT_FOUND, "no_route", None);
            handle.send(error, metrics);
            continue;
        };
        let (headers, body) = message_request(route, payload, binary);
        let path = route.call.path.clone();
        let max = bridge.limits.message;
        let answer = backend
            .call(&route.call, path, &route.key, headers, body, max)
            .await;
        let reply = match answer {
            Ok(answer) if answer.status.is_success() => {
                route.reply.then(|| reply_message(answer)).flatten()
            }
            Ok(answer) => Some(error_message(
                answer.status,
                "upstream_status",
                Some(&route.key),
            )),
            Err(failure) => Some(error_message(
                failure.status(),
                failure.reason(),
                Some(&route.key),
            )),
        };
        if let Some(reply) = reply {
            handle.send(reply, metrics);
        }
    }
}

/// A message's backend request: headers and body.
fn message_request(route: &MessageRoute, payload: Bytes, binary: bool) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let kind = if binary { "binary" } else { "text" };
    headers.insert("x-mesh-message-type", HeaderValue::from_static(kind));
    let (content_type, body) = match (binary, route.binary) {
        (true, BinaryMode::Bytes) => ("application/octet-stream", payload),
        (true, BinaryMode::Base64) => {
            let encoded = crate::translate::grpc_json::status::base64_encode(&payload);
            let envelope = json!({ "base64": encoded }).to_string();
            ("application/json", Bytes::from(envelope))
        }
        (false, _) if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok() => {
            ("application/json", payload)
        }
        (false, _) => ("text/plain; charset=utf-8", payload),
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, body)
}

/// A two-way route's answer as a message: text unless it is bytes.
fn reply_message(answer: Answer) -> Option<Message> {
    if answer.body.is_empty() {
        return None;
    }
    let octets = answer
        .content_type
        .as_ref()
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/octet-stream"));
    if octets {
        return Some(Message::Binary(answer.body));
    }
    Some(match String::from_utf8(answer.body.to_vec()) {
        Ok(text) => Message::text(text),
        Err(_) => Message::Binary(answer.body),
    })
}

/// `{"error": {"status": .., "reason": .., "route": ..}}`.
fn error_message(status: StatusCode, reason: &str, route: Option<&str>) -> Message {
    let mut error = json!({ "status": status.as_u16(), "reason": reason });
    if let Some(route) = route {
        error["route"] = json!(route);
    }
    Message::text(json!({ "error": error }).to_string())
}

/// A connection's message rate: a fixed window.
struct RateWindow {
    limit: Option<(u64, Duration)>,
    started: Instant,
    count: u64,
}

impl RateWindow {
    fn new(limit: Option<(u64, Duration)>) -> Self {
        RateWindow {
            limit,
            started: Instant::now(),
            count: 0,
        }
    }

    /// Whether one more message fits.
    fn admit(&mut self) -> bool {
        let Some((limit, window)) = self.limit else {
            return true;
        };
        if self.started.elapsed() >= window {
            self.started = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_window_admits_its_count() {
        let mut window = RateWindow::new(Some((2, Duration::from_secs(60))));
        assert!(window.admit());
        assert!(window.admit());
        assert!(!window.admit());
        assert!(RateWindow::new(None).admit());
    }

    #[test]
    fn connect_gets_the_query_and_no_handshake_headers() {
        let path = PathAndQuery::from_static("/ws/connect?a=1");
        assert_eq!(
            with_query(&path, Some("t=x")).as_str(),
            "/ws/connect?a=1&t=x"
        );
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("k"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        let kept = handshake_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("authorization"));
    }
}
