//! The OTLP exporter: one task that empties the span queue in batches and
//! sends them to the collector of `tracing.otlp`, as OTLP/gRPC
//! (`TraceService/Export`, unary, HTTP/2 with prior knowledge) or OTLP/HTTP
//! (`POST` of `application/x-protobuf`, HTTP/1.1), over one kept-alive
//! plaintext connection.
//!
//! A batch leaves when `tracing.batch.max_spans` spans wait or the oldest
//! has waited `tracing.batch.interval`. Each export has `tracing.otlp.timeout`;
//! a failed one drops its spans (`mesh_trace_spans_dropped_total`), counts
//! (`mesh_trace_exports_total{result="failed"}`) and backs off (1 s doubling
//! to 30 s) while the queue fills and, full, drops new spans on the request
//! path: a slow or absent collector never slows a request. The settings are
//! read at every batch, so a reload moves, re-times or stops the export;
//! with `tracing:` removed, queued spans are dropped. The task ends after
//! the drain, sending what is queued within [`FINAL_EXPORT`].
//! Errors: [`ExportError`], logged once per failing period.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_api::config::{Mode, OtlpProtocol};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::otlp::{self, KeyValue};
use super::Metrics;
use crate::config::{OtlpEndpoint, Settings};
use crate::http::Body;

/// How long the exporter may take to send what is queued at the end.
pub const FINAL_EXPORT: Duration = Duration::from_secs(2);

/// The first wait after a failed export; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The most of a collector's answer that is read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Batch size and wait while `tracing:` is absent (spans are dropped then).
const IDLE_BATCH: (usize, Duration) = (512, Duration::from_secs(1));

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No TCP connection to the collector.
    #[error("cannot connect to the collector: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the collector failed: {0}")]
    Http(#[source] hyper::Error),
    /// The request could not be built (an invalid endpoint).
    #[error("invalid export request: {0}")]
    Request(#[source] http::Error),
    /// The collector answered with this HTTP status.
    #[error("the collector answered HTTP {0}")]
    Status(StatusCode),
    /// The collector answered with this gRPC status.
    #[error("the collector answered grpc-status {0}")]
    Grpc(String),
    /// The answer's body failed or was too long.
    #[error("reading the collector's answer failed")]
    Body,
    /// Took longer than `tracing.otlp.timeout`.
    #[error("timed out")]
    Timeout,
}

/// Starts the one exporter task (`None` if it was started already). It
/// follows `tracing` in `settings` and ends once `stop` fires, after a
/// last export of what is queued.
pub fn spawn(
    metrics: Arc<Metrics>,
    settings: Arc<ArcSwap<Settings>>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    let rx = metrics.spans().take_receiver()?;
    let exporter = Exporter {
        metrics,
        settings,
        instance: format!("{:032x}", fastrand::u128(..)),
        client: Client::default(),
        backoff: Duration::ZERO,
        retry_at: None,
        failing: false,
        stop,
    };
    Some(tokio::spawn(
        exporter
            .run(rx)
            .instrument(tracing::info_span!("trace_exporter")),
    ))
}

struct Exporter {
    metrics: Arc<Metrics>,
    settings: Arc<ArcSwap<Settings>>,
    /// `service.instance.id`: one per process.
    instance: String,
    client: Client,
    backoff: Duration,
    /// No export before this, after a failure.
    retry_at: Option<Instant>,
    /// The last export failed and that was said.
    failing: bool,
    stop: CancellationToken,
}

impl Exporter {
    async fn run(mut self, mut rx: mpsc::Receiver<otlp::Span>) {
        let mut batch: Vec<otlp::Span> = Vec::new();
        let mut oldest = Instant::now();
        let stop = self.stop.clone();
        loop {
            let (max, interval) = self.batching();
            let due = (!batch.is_empty()).then(|| {
                let at = if batch.len() >= max {
                    Instant::now()
                } else {
                    oldest + interval
                };
                self.retry_at.map_or(at, |retry| retry.max(at))
            });
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = wait => {
                    let spans = std::mem::take(&mut batch);
                    self.export(spans).await;
                }
                span = rx.recv(), if batch.len() < max => match span {
                    Some(span) => {
                        self.metrics.spans().taken();
                        if batch.is_empty() {
                            oldest = Instant::now();
                        }
                        batch.push(span);
                    }
                    None => break,
                },
            }
        }
        // The queue is bounded, so this ends.
        while let Ok(span) = rx.try_recv() {
            self.metrics.spans().taken();
            batch.push(span);
        }
        if batch.is_empty() {
            return;
        }
        let (max, _) = self.batching();
        let last = async {
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(max));
                let spans = std::mem::replace(&mut batch, rest);
                self.export(spans).await;
            }
        };
        if tokio::time::timeout(FINAL_EXPORT, last).await.is_err() {
            warn!("the last span export did not finish in time");
        }
    }

    fn batching(&self) -> (usize, Duration) {
        self.settings
            .load()
            .tracing
            .as_ref()
            .map_or(IDLE_BATCH, |t| (t.max_spans, t.interval))
    }

    async fn export(&mut self, spans: Vec<otlp::Span>) {
        let counters = self.metrics.spans().counters().clone();
        let count = spans.len() as u64;
        let settings = self.settings.load_full();
        let Some(tracing) = settings.tracing.clone() else {
            counters.dropped.inc_by(count);
            return;
        };
        let body = encode(&settings, &self.instance, spans);
        let sent = tokio::time::timeout(
            tracing.timeout,
            self.client.send(&tracing.endpoint, body, &self.stop),
        )
        .await
        .unwrap_or(Err(ExportError::Timeout));
        match sent {
            Ok(()) => {
                counters.ok.inc();
                self.backoff = Duration::ZERO;
                self.retry_at = None;
                if self.failing {
                    info!(collector = %tracing.endpoint.authority, "span export works again");
                    self.failing = false;
                }
            }
            Err(err) => {
                counters.failed.inc();
                counters.dropped.inc_by(count);
                self.client.reset();
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.retry_at = Some(Instant::now() + self.backoff);
                if self.failing {
                    debug!(collector = %tracing.endpoint.authority, error = %err, spans = count, "span export failed");
                } else {
                    warn!(collector = %tracing.endpoint.authority, error = %err, "span export failed; spans are dropped until it works again");
                    self.failing = true;
                }
            }
        }
    }
}

/// One `ExportTraceServiceRequest` with this proxy as the resource.
fn encode(settings: &Settings, instance: &str, spans: Vec<otlp::Span>) -> Vec<u8> {
    let mode = match settings.mode {
        Mode::Sidecar => "sidecar",
        Mode::Edge => "edge",
    };
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![
                    KeyValue::string("service.name", settings.service.as_str()),
                    KeyValue::string("service.instance.id", instance),
                    KeyValue::string("mesh.mode", mode),
                ],
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "mesh-sidecar".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

/// The connection to the collector, kept while it works.
#[derive(Default)]
struct Client {
    conn: Option<(OtlpEndpoint, Sender)>,
}

enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

impl Client {
    fn reset(&mut self) {
        self.conn = None;
    }

    async fn send(
        &mut self,
        endpoint: &OtlpEndpoint,
        message: Vec<u8>,
        stop: &CancellationToken,
    ) -> Result<(), ExportError> {
        let reuse = self
            .conn
            .as_ref()
            .is_some_and(|(at, sender)| at == endpoint && !sender.is_closed());
        if !reuse {
            self.conn = None;
            let sender = connect(endpoint, stop).await?;
            self.conn = Some((endpoint.clone(), sender));
        }
        let Some((_, sender)) = &mut self.conn else {
            return Err(ExportError::Body);
        };
        let request = request(endpoint, message).map_err(ExportError::Request)?;
        let response = match sender {
            Sender::Http1(s) => {
                s.ready().await.map_err(ExportError::Http)?;
                s.send_request(request).await
            }
            Sender::Http2(s) => {
                s.ready().await.map_err(ExportError::Http)?;
                s.send_request(request).await
            }
        }
        .map_err(ExportError::Http)?;
        let status = response.status();
        let grpc = endpoint.protocol == OtlpProtocol::Grpc;
        let headers_status = super::grpc_status(response.headers());
        let collected = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| ExportError::Body)?;
        if !status.is_success() {
            return Err(ExportError::Status(status));
        }
        if grpc {
            match headers_status.or_else(|| collected.trailers().and_then(super::grpc_status)) {
                Some(0) => {}
                Some(code) => return Err(ExportError::Grpc(code.to_string())),
                None => return Err(ExportError::Grpc("missing".to_string())),
            }
        }
        Ok(())
    }
}

/// The export request: a gRPC unary call or an OTLP/HTTP `POST`.
fn request(endpoint: &OtlpEndpoint, message: Vec<u8>) -> Result<Request<Body>, http::Error> {
    match endpoint.protocol {
        OtlpProtocol::Grpc => {
            // Length-prefixed message: not compressed, 4-byte big-endian length.
            let mut framed = BytesMut::with_capacity(message.len() + 5);
            framed.put_u8(0);
            framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
            framed.put_slice(&message);
            Request::post(format!("http://{}{}", endpoint.authority, endpoint.path))
                .version(http::Version::HTTP_2)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers")
                .header(header::USER_AGENT, USER_AGENT)
                .body(crate::http::full(framed.freeze()))
        }
        OtlpProtocol::Http => Request::post(endpoint.path.as_str())
            .header(header::HOST, endpoint.authority.as_str())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, USER_AGENT)
            .body(crate::http::full(Bytes::from(message))),
    }
}

const USER_AGENT: &str = concat!("mesh-sidecar/", env!("CARGO_PKG_VERSION"));

/// A plaintext connection to the collector, driven by a task that ends
/// when the connection closes, its sender is dropped, or `stop` fires.
async fn connect(endpoint: &OtlpEndpoint, stop: &CancellationToken) -> Result<Sender, ExportError> {
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(ExportError::Connect)?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let stop = stop.clone();
    let span = tracing::debug_span!("otlp_conn", collector = %endpoint.authority);
    match endpoint.protocol {
        OtlpProtocol::Grpc => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ExportError::Http)?;
            tokio::spawn(drive(conn, stop).instrument(span));
            Ok(Sender::Http2(sender))
        }
        OtlpProtocol::Http => {
            let (sender, conn) = http1::handshake(io).await.map_err(ExportError::Http)?;
            tokio::spawn(drive(conn, stop).instrument(span));
            Ok(Sender::Http1(sender))
        }
    }
}

async fn drive<C>(conn: C, stop: CancellationToken)
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        result = conn => if let Err(err) = result {
            debug!(error = %err, "collector connection failed");
        },
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_names_the_proxy() {
        let settings = crate::config::load_str("service: web\n").unwrap();
        let bytes = encode(&settings, "i-1", vec![otlp::Span::default()]);
        let decoded = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
        let names: Vec<&str> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(names, ["service.name", "service.instance.id", "mesh.mode"]);
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 1);
    }

    #[test]
    fn grpc_requests_are_framed() {
        let yaml = "service: web\ntracing: { otlp: { endpoint: 127.0.0.1:4317 } }\n";
        let settings = crate::config::load_str(yaml).unwrap();
        let endpoint = &settings.tracing.as_ref().unwrap().endpoint;
        let req = request(endpoint, vec![1, 2, 3]).unwrap();
        assert_eq!(
            req.uri(),
            "http://127.0.0.1:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/grpc");
    }
}
