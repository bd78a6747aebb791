//! The access log: one JSON object per line for every HTTP request (written
//! when its response body ends or is dropped, so `bytes_sent` and
//! `duration_ms` cover the whole response) and every opaque TCP connection
//! (written when it closes). Only the fields of `log.access_fields` are
//! written, in [`ACCESS_FIELDS`](crate::config::ACCESS_FIELDS) order.
//!
//! Writing never waits on the data path: the request's task formats its
//! line and offers it to a bounded queue; a full queue drops the line and
//! counts it (`mesh_access_log_dropped_total`). One writer task owns the
//! output (a file, appended to; stdout; stderr) behind a buffer flushed
//! [`FLUSH_EVERY`] after its first unflushed line (so lines are batched
//! under load and out within that time when idle), re-opens it when the
//! config's `log.access` changes, and ends after the drain, flushing what
//! is left.
//! The same record of a finished request feeds the admin API's tap
//! ([`Tap`]) while one is connected, whether the access log is on or not.
//! Reads: `settings.access_log`, [`RequestInfo`], [`ConnInfo`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use crate::config::{AccessLogTarget, Settings};
use crate::errors::REASON_HEADER;
use crate::http::{is_grpc, Body, BodyError, ConnInfo};
use crate::telemetry::tap::Tap;
use crate::telemetry::trace::Recording;
use crate::telemetry::{Direction, Metrics, RequestInfo};
use crate::{lock, BoxError};

/// Lines waiting for the writer; more are dropped.
const QUEUE: usize = 8192;

/// The longest a written line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How often an idle writer looks for a changed `log.access`.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The queue of formatted lines, shared by every stack and relay.
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    dropped: Counter,
    tap: Tap,
}

impl AccessLog {
    /// An empty queue whose drops count on `dropped`.
    pub fn new(dropped: Counter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped,
            tap: Tap::default(),
        }
    }

    /// The feed of finished requests for `GET /tap`.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// Offers a line to the writer; drops it when the queue is full.
    fn push(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// Starts the one writer task (`None` if it was started already). It
    /// follows `log.access` in `settings` and ends once `stop` fires,
    /// after writing and flushing what is queued.
    pub fn spawn_writer(
        &self,
        settings: Arc<ArcSwap<Settings>>,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let rx = lock(&self.rx).take()?;
        let writer = Writer {
            settings,
            dropped: self.dropped.clone(),
            target: AccessLogTarget::Off,
            out: None,
            dirty: false,
            failing: false,
        };
        Some(tokio::spawn(
            writer
                .run(rx, stop)
                .instrument(tracing::info_span!("access_log")),
        ))
    }
}

type Output = BufWriter<Box<dyn AsyncWrite + Send + Unpin>>;

/// The writer task's state: where lines go now.
struct Writer {
    settings: Arc<ArcSwap<Settings>>,
    dropped: Counter,
    target: AccessLogTarget,
    out: Option<Output>,
    /// Lines written since the last flush.
    dirty: bool,
    /// The output failed and that was said.
    failing: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
        self.follow_config().await;
        // Without traffic, a reload still closes or moves the output.
        let mut reloads = tokio::time::interval(FOLLOW_EVERY);
        reloads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Lines are batched until this (FLUSH_EVERY after the first unflushed one).
        let mut flush_at: Option<Instant> = None;
        loop {
            let flush_due = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => {
                        // A reload moves lines to the new target from its first one.
                        self.follow_config().await;
                        self.write(&line).await;
                        flush_at = flush_at.or_else(|| Some(Instant::now() + FLUSH_EVERY));
                    }
                    None => break,
                },
                () = flush_due => {
                    self.flush().await;
                    flush_at = None;
                }
                _ = reloads.tick() => {
                    self.follow_config().await;
                    // An output that failed is tried again, at this pace.
                    if self.out.is_none() && self.target != AccessLogTarget::Off {
                        self.reopen().await;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        while let Ok(line) = rx.try_recv() {
            self.write(&line).await;
        }
        self.flush().await;
    }

    /// Re-opens the output when `log.access` changed.
    async fn follow_config(&mut self) {
        let wanted = self.settings.load().access_log.target.clone();
        if wanted == self.target {
            return;
        }
        self.flush().await;
        self.target = wanted;
        self.failing = false;
        self.reopen().await;
    }

    /// Opens the current target; a failure is said once until it works again.
    async fn reopen(&mut self) {
        self.out = match open(&self.target).await {
            Ok(out) => {
                self.failing = false;
                out
            }
            Err(err) => {
                self.fail("cannot open the access log", &err);
                None
            }
        };
    }

    async fn write(&mut self, line: &str) {
        let Some(out) = &mut self.out else {
            self.dropped.inc();
            return;
        };
        if let Err(err) = out.write_all(line.as_bytes()).await {
            self.dropped.inc();
            self.fail("access log write failed", &err);
            return;
        }
        self.dirty = true;
    }

    async fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(out) = &mut self.out {
            if let Err(err) = out.flush().await {
                self.fail("access log flush failed", &err);
            }
        }
    }

    /// Drops the output (re-opened at the next tick) and says why, once.
    fn fail(&mut self, what: &'static str, err: &std::io::Error) {
        if !self.failing {
            warn!(output = ?self.target, error = %err, "{what}; lines are dropped until it works again");
        }
        self.failing = true;
        self.out = None;
    }
}

async fn open(target: &AccessLogTarget) -> std::io::Result<Option<Output>> {
    let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
        AccessLogTarget::Stderr => Box::new(tokio::io::stderr()),
        AccessLogTarget::File(path) => Box::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?,
        ),
    };
    Ok(Some(BufWriter::with_capacity(64 * 1024, out)))
}

/// One line's values; `None` is written as `null`.
#[derive(Default)]
struct Entry {
    time: Option<SystemTime>,
    kind: &'static str,
    direction: Option<Direction>,
    listener: Option<Arc<str>>,
    request_id: Option<Arc<str>>,
    trace_id: Option<String>,
    client: Option<std::net::IpAddr>,
    peer_identity: Option<Arc<str>>,
    method: Option<Method>,
    scheme: Option<&'static str>,
    authority: Option<String>,
    path: Option<String>,
    protocol: Option<&'static str>,
    status: Option<u16>,
    grpc_status: Option<u32>,
    error: Option<String>,
    route: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    endpoint: Option<SocketAddr>,
    attempts: Option<u32>,
    bytes_received: Option<u64>,
    bytes_sent: Option<u64>,
    duration: Option<Duration>,
    upstream_time: Option<Duration>,
    user_agent: Option<String>,
}

impl Entry {
    /// The line: `fields` in order, then a newline.
    fn format(&self, fields: &[&str]) -> String {
        let mut out = String::with_capacity(512);
        out.push('{');
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(field);
            out.push_str("\":");
            self.value(field, &mut out);
        }
        out.push_str("}\n");
        out
    }

    fn value(&self, field: &str, out: &mut String) {
        let text = |out: &mut String, value: Option<&str>| match value {
            Some(value) => json_string(out, value),
            None => out.push_str("null"),
        };
        let number = |out: &mut String, value: Option<u64>| match value {
            Some(value) => {
                let _ = write!(out, "{value}");
            }
            None => out.push_str("null"),
        };
        let millis = |out: &mut String, value: Option<Duration>| match value {
            Some(value) => {
                let _ = write!(out, "{:.3}", value.as_secs_f64() * 1000.0);
            }
            None => out.push_str("null"),
        };
        let shown = |out: &mut String, value: Option<&dyn std::fmt::Display>| match value {
            Some(value) => {
                let _ = write!(out, "\"{value}\"");
            }
            None => out.push_str("null"),
        };
        match field {
            "time" => match self.time {
                Some(time) => {
                    out.push('"');
                    rfc3339(out, time);
                    out.push('"');
                }
                None => out.push_str("null"),
            },
            "kind" => text(out, Some(self.kind)),
            "listener" => text(out, self.listener.as_deref()),
            "request_id" => text(out, self.request_id.as_deref()),
            "trace_id" => text(out, self.trace_id.as_deref()),
            "client" => shown(out, self.client.as_ref().map(|c| c as _)),
            "peer_identity" => text(out, self.peer_identity.as_deref()),
            "method" => text(out, self.method.as_ref().map(Method::as_str)),
            "scheme" => text(out, self.scheme),
            "authority" => text(out, self.authority.as_deref()),
            "path" => text(out, self.path.as_deref()),
            "protocol" => text(out, self.protocol),
            "status" => number(out, self.status.map(u64::from)),
            "grpc_status" => number(out, self.grpc_status.map(u64::from)),
            "error" => text(out, self.error.as_deref()),
            "route" => text(out, self.route.as_deref()),
            "consumer" => text(out, self.consumer.as_deref()),
            "upstream" => text(out, self.upstream.as_deref()),
            "endpoint" => shown(out, self.endpoint.as_ref().map(|e| e as _)),
            "attempts" => number(out, self.attempts.map(u64::from)),
            "bytes_received" => number(out, self.bytes_received),
            "bytes_sent" => number(out, self.bytes_sent),
            "duration_ms" => millis(out, self.duration),
            "upstream_ms" => millis(out, self.upstream_time),
            "user_agent" => text(out, self.user_agent.as_deref()),
            _ => out.push_str("null"),
        }
    }

    /// The request as the tap shows it.
    fn tap_event(&self) -> mesh_api::admin::TapEvent {
        let mut time = String::with_capacity(24);
        if let Some(started) = self.time {
            rfc3339(&mut time, started);
        }
        let text = |value: &Option<Arc<str>>| value.as_deref().map(str::to_string);
        mesh_api::admin::TapEvent {
            time,
            direction: self.direction.map_or("", Direction::as_str).to_string(),
            listener: text(&self.listener),
            request_id: text(&self.request_id),
            method: self.method.as_ref().map_or("", Method::as_str).to_string(),
            authority: self.authority.clone(),
            path: self.path.clone().unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            grpc_status: self.grpc_status,
            error: self.error.clone(),
            route: text(&self.route),
            upstream: text(&self.upstream),
            endpoint: self.endpoint.map(|e| e.to_string()),
            attempts: self.attempts.unwrap_or_default(),
            peer_identity: text(&self.peer_identity),
            client: self.client.map(|c| c.to_string()),
            duration_ms: self.duration.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }

    /// What the layers below learned about the request.
    fn learn(&mut self, info: &RequestInfo) {
        if let Some(id) = info.request_id() {
            self.request_id = Some(id.clone());
        }
        if let Some(client) = info.client() {
            self.client = Some(client);
        }
        self.route = info.route().cloned();
        self.consumer = info.consumer().cloned();
        self.upstream = info.upstream().cloned();
        self.endpoint = info.endpoint();
        self.attempts = Some(info.attempts());
    }

    /// `grpc-status` and `x-mesh-error` from response headers or trailers.
    fn note(&mut self, headers: &HeaderMap, grpc: bool) {
        if grpc {
            if let Some(code) = super::grpc_status(headers) {
                self.grpc_status = Some(code);
            }
        }
        if let Some(reason) = header(headers, REASON_HEADER) {
            self.error = Some(reason.to_string());
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request being logged: what it said, taken before it went down the
/// stack, and when it started.
pub struct Request {
    entry: Entry,
    settings: Arc<Settings>,
    start: Instant,
    received: Arc<AtomicU64>,
}

impl Request {
    /// Takes the request's facts and counts its body's bytes from now on.
    pub fn new(
        req: &mut http::Request<Body>,
        settings: Arc<Settings>,
        start: Instant,
        direction: Direction,
    ) -> Self {
        let conn = req.extensions().get::<ConnInfo>();
        let headers = req.headers();
        let uri = req.uri();
        let entry = Entry {
            time: Some(SystemTime::now()),
            kind: "http",
            direction: Some(direction),
            listener: conn.and_then(|c| c.listener.clone()),
            request_id: header(headers, "x-request-id").map(Arc::from),
            trace_id: header(headers, "traceparent").and_then(trace_id),
            client: conn.and_then(|c| c.peer).map(|p| p.ip().to_canonical()),
            peer_identity: conn.and_then(|c| c.peer_identity.clone()),
            method: Some(req.method().clone()),
            scheme: Some(super::scheme(uri, conn)),
            authority: uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| header(headers, "host"))
                .map(str::to_string),
            path: uri.path_and_query().map(|p| p.as_str().to_string()),
            protocol: Some(match req.version() {
                Version::HTTP_09 => "HTTP/0.9",
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            }),
            user_agent: header(headers, "user-agent").map(str::to_string),
            ..Entry::default()
        };
        let received = Arc::new(AtomicU64::new(0));
        let body = std::mem::replace(req.body_mut(), crate::http::empty());
        *req.body_mut() = Counted {
            inner: body,
            count: received.clone(),
        }
        .boxed_unsync();
        Self {
            entry,
            settings,
            start,
            received,
        }
    }

    /// Hands back the outcome; its line is written (and `span` ended) when
    /// the response body ends or is dropped (at once when there is no response).
    pub fn respond(
        mut self,
        result: Result<Response<Body>, BoxError>,
        info: RequestInfo,
        metrics: Arc<Metrics>,
        mut span: Option<Recording>,
    ) -> Result<Response<Body>, BoxError> {
        let head = Instant::now();
        self.entry.learn(&info);
        self.entry.upstream_time = info.first_attempt().map(|sent| head - sent);
        let mut pending = Box::new(Pending {
            request: self,
            metrics,
            sent: 0,
            info: info.clone(),
        });
        match result {
            Ok(response) => {
                let grpc = is_grpc(response.headers());
                pending.request.entry.status = Some(response.status().as_u16());
                pending.request.entry.note(response.headers(), grpc);
                Ok(response.map(|body| {
                    Logged {
                        inner: body,
                        grpc,
                        pending: Some(pending),
                        span,
                    }
                    .boxed_unsync()
                }))
            }
            Err(err) => {
                pending.request.entry.status = Some(500);
                pending.finish();
                if let Some(span) = span.take() {
                    span.finish();
                }
                Err(err)
            }
        }
    }
}

/// Hands back the outcome of a request that is logged (`request`), traced
/// (`span`), both or neither: the line is written and the span ended when
/// the response body ends or is dropped, through one body wrapper.
pub fn respond(
    request: Option<Request>,
    mut span: Option<Recording>,
    result: Result<Response<Body>, BoxError>,
    info: RequestInfo,
    metrics: Arc<Metrics>,
) -> Result<Response<Body>, BoxError> {
    if let Some(span) = &mut span {
        span.respond(&result, &info);
    }
    match (request, span) {
        (Some(request), span) => request.respond(result, info, metrics, span),
        (None, None) => result,
        (None, Some(span)) => match result {
            Ok(response) => {
                let grpc = is_grpc(response.headers());
                Ok(response.map(|body| {
                    Logged {
                        inner: body,
                        grpc,
                        pending: None,
                        span: Some(span),
                    }
                    .boxed_unsync()
                }))
            }
            Err(err) => {
                span.finish();
                Err(err)
            }
        },
    }
}

/// A request whose response is on its way.
struct Pending {
    request: Request,
    metrics: Arc<Metrics>,
    sent: u64,
    /// For the gRPC status a translating layer recorded.
    info: RequestInfo,
}

impl Pending {
    fn finish(self: Box<Self>) {
        let Pending {
            request,
            metrics,
            sent,
            info,
        } = *self;
        let Request {
            mut entry,
            settings,
            start,
            received,
        } = request;
        entry.grpc_status = entry.grpc_status.or_else(|| info.grpc_status());
        entry.bytes_received = Some(received.load(Ordering::Relaxed));
        entry.bytes_sent = Some(sent);
        entry.duration = Some(start.elapsed());
        let log = metrics.access_log();
        if log.tap.is_active() {
            log.tap.publish(entry.tap_event());
        }
        if settings.access_log.target != AccessLogTarget::Off {
            log.push(entry.format(&settings.access_log.fields));
        }
    }
}

/// A request body that counts its bytes.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that writes the request's line and ends its span when
/// it ends or is dropped.
struct Logged {
    inner: Body,
    grpc: bool,
    pending: Option<Box<Pending>>,
    span: Option<Recording>,
}

impl Logged {
    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish();
        }
        if let Some(span) = self.span.take() {
            span.finish();
        }
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(pending) = &mut this.pending {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        pending.sent += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        pending.request.entry.note(trailers, this.grpc);
                    }
                }
                Some(Err(_)) => {
                    let error = &mut pending.request.entry.error;
                    error.get_or_insert_with(|| "upstream_reset".to_string());
                }
                None => {}
            }
        }
        if let Some(span) = &mut this.span {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        span.note(trailers);
                    }
                }
                Some(Err(_)) => span.reset(),
                None => {}
            }
        }
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One opaque TCP connection, logged when it closes.
pub struct TcpConnection<'a> {
    /// What the listener knows about the client.
    pub conn: &'a ConnInfo,
    /// The cluster.
    pub upstream: &'a Arc<str>,
    /// When the connection was accepted.
    pub started: SystemTime,
    /// How long it lasted.
    pub duration: Duration,
    /// The endpoint of the last connect attempt.
    pub endpoint: Option<SocketAddr>,
    /// Connect attempts.
    pub attempts: u32,
    /// Bytes from the client.
    pub received: u64,
    /// Bytes to the client.
    pub sent: u64,
    /// Why no endpoint took the connection (an `x-mesh-error` reason).
    pub error: Option<&'static str>,
}

/// Writes `connection`'s line if the access log is on.
pub fn log_tcp(metrics: &Metrics, settings: &Settings, connection: TcpConnection<'_>) {
    if settings.access_log.target == AccessLogTarget::Off {
        return;
    }
    let conn = connection.conn;
    let entry = Entry {
        time: Some(connection.started),
        kind: "tcp",
        listener: conn.listener.clone(),
        client: conn.peer.map(|p| p.ip().to_canonical()),
        peer_identity: conn.peer_identity.clone(),
        error: connection.error.map(str::to_string),
        upstream: Some(connection.upstream.clone()),
        endpoint: connection.endpoint,
        attempts: Some(connection.attempts),
        bytes_received: Some(connection.received),
        bytes_sent: Some(connection.sent),
        duration: Some(connection.duration),
        ..Entry::default()
    };
    metrics
        .access_log()
        .push(entry.format(&settings.access_log.fields));
}

/// The trace ID of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let _version = parts.next().filter(|v| v.len() == 2)?;
    let id = parts.next()?;
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

/// `value` as a JSON string.
fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 in UTC with milliseconds: `2026-01-31T12:00:00.123Z`.
fn rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days since the epoch to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ACCESS_FIELDS;

    #[tokio::test]
    async fn an_output_that_cannot_be_opened_drops_and_counts_lines() {
        let yaml = "service: web\nlog: { access: /nonexistent-dir/access.log }\n";
        let settings = Arc::new(ArcSwap::from_pointee(
            crate::config::load_str(yaml).unwrap(),
        ));
        let dropped = Counter::default();
        let log = AccessLog::new(dropped.clone());
        let stop = CancellationToken::new();
        let writer = log.spawn_writer(settings.clone(), stop.clone()).unwrap();
        assert!(
            log.spawn_writer(settings, stop.clone()).is_none(),
            "one writer"
        );
        log.push("{}\n".into());
        log.push("{}\n".into());
        stop.cancel();
        writer.await.unwrap();
        assert_eq!(dropped.get(), 2);
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        let mut out = String::new();
        rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        );
        assert_eq!(out, "2023-11-14T22:13:20.123Z");
        out.clear();
        rfc3339(&mut out, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(out, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn lines_are_json_with_the_chosen_fields_in_order() {
        let entry = Entry {
            kind: "http",
            method: Some(Method::GET),
            path: Some("/a?b=\"c\"\n".into()),
            status: Some(200),
            duration: Some(Duration::from_micros(1500)),
            ..Entry::default()
        };
        let line = entry.format(ACCESS_FIELDS);
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), ACCESS_FIELDS.len());
        assert_eq!(value["path"], "/a?b=\"c\"\n");
        assert_eq!(value["status"], 200);
        assert_eq!(value["duration_ms"], 1.5);
        assert!(value["consumer"].is_null());
        let line = entry.format(&["status", "path"]);
        assert_eq!(line, "{\"status\":200,\"path\":\"/a?b=\\\"c\\\"\\n\"}\n");
    }
}
