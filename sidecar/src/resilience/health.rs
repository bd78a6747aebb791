//! Active health checks, beside the data path: one task per cluster with
//! `health:`. Every `interval` (±10% jitter) it checks each current endpoint
//! at once, each check within `timeout`, over a fresh connection the
//! cluster's pool opens (so checks of mesh upstreams go through mutual TLS
//! like real traffic): an HTTP/1.1 `GET`, a gRPC
//! `grpc.health.v1.Health/Check` over HTTP/2, or just the connection.
//! `unhealthy` failures in a row take an endpoint out of rotation, `healthy`
//! successes in a row bring it back; endpoints start healthy. The task ends
//! when its cluster is dropped (the cluster holds its [`HealthChecker`]).
//! Reads: the balancer's current endpoints (discovery may change them
//! between rounds). Writes: each endpoint's health flag (read by the
//! balancer and `/clusters`), `mesh_resilience_total{decision="health_up"|"health_down"}`
//! and an info log per transition.
//! Errors: [`CheckError`], logged only: a failed check is an observation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, Instrument};

use crate::balance::{Balancer, EndpointState};
use crate::config::{HealthCheck, HealthSettings};
use crate::connect::{ConnectError, Pool};

/// The path of the standard gRPC health check.
const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Largest check response body read (gRPC); a health answer is a few bytes.
const MAX_BODY: usize = 64 * 1024;
/// What checks send as `User-Agent`.
const AGENT: &str = "mesh-health-check";

/// Why one check of one endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No connection (refused, timed out, TLS or identity failure).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// No answer within the check's timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// An HTTP status that does not count as up.
    #[error("status {0}")]
    Status(StatusCode),
    /// A gRPC status other than OK.
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    /// The health service answered, but not `SERVING`.
    #[error("health status {0}, not SERVING")]
    NotServing(u64),
    /// The gRPC answer could not be read.
    #[error("malformed gRPC health answer: {0}")]
    Malformed(&'static str),
}

/// A cluster's running health checker; dropping it stops the task.
pub struct HealthChecker {
    _stop: DropGuard,
}

/// Starts checking the endpoints of `balancer` (cluster `upstream`) as
/// `settings` say; `count` records `health_up` / `health_down`.
pub fn spawn(
    settings: HealthSettings,
    upstream: Arc<str>,
    balancer: Arc<Balancer>,
    pool: Pool,
    count: impl Fn(&'static str) + Send + Sync + 'static,
) -> HealthChecker {
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    let span = tracing::info_span!("health", upstream = %upstream, check = settings.check.label());
    // Upstream names are validated host names, so this only falls back for
    // internal clusters, which are never checked.
    let authority = Authority::try_from(&*upstream).unwrap_or(Authority::from_static("localhost"));
    let check = Arc::new(settings.check.clone());
    let probe = move |endpoint: Arc<EndpointState>| {
        let (check, pool, authority) = (check.clone(), pool.clone(), authority.clone());
        async move { run_check(&check, &pool, &endpoint, &authority).await }
    };
    let report = move |endpoint: &EndpointState, failure: Option<&CheckError>| match failure {
        None => {
            info!(upstream = %upstream, endpoint = %endpoint.addr, "endpoint healthy");
            count("health_up");
        }
        Some(reason) => {
            info!(upstream = %upstream, endpoint = %endpoint.addr, %reason, "endpoint unhealthy");
            count("health_down");
        }
    };
    tokio::spawn(
        async move {
            tokio::select! {
                () = cancelled.cancelled() => debug!("cluster dropped; health checks stop"),
                () = run(&settings, || balancer.endpoints(), probe, report) => {}
            }
        }
        .instrument(span),
    );
    HealthChecker {
        _stop: stop.drop_guard(),
    }
}

impl HealthCheck {
    /// `http`, `grpc` or `tcp`, for logs.
    fn label(&self) -> &'static str {
        match self {
            HealthCheck::Http { .. } => "http",
            HealthCheck::Grpc { .. } => "grpc",
            HealthCheck::Tcp => "tcp",
        }
    }
}

/// Consecutive results of one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Records one result; returns the endpoint's new health when it changes.
    fn observe(&mut self, ok: bool, healthy: bool, settings: &HealthSettings) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!healthy && self.successes >= settings.healthy).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (healthy && self.failures >= settings.unhealthy).then_some(false)
        }
    }
}

/// Rounds of checks, forever: `endpoints` gives the current list, `probe`
/// checks one endpoint, `report` hears each transition (after the
/// endpoint's flag is set) with the failure that caused a down one.
async fn run<E, P, F, R>(settings: &HealthSettings, endpoints: E, probe: P, report: R)
where
    E: Fn() -> Vec<Arc<EndpointState>>,
    P: Fn(Arc<EndpointState>) -> F,
    F: Future<Output = Result<(), CheckError>>,
    R: Fn(&EndpointState, Option<&CheckError>),
{
    // Keyed by the state's address in memory: the map holds the `Arc`, so the
    // key cannot be reused while present, and an endpoint that discovery
    // replaced (new weight) starts a new streak.
    let mut streaks: HashMap<usize, (Arc<EndpointState>, Streak)> = HashMap::new();
    loop {
        let started = Instant::now();
        let current = endpoints();
        let results = futures_util::future::join_all(current.iter().map(|endpoint| {
            let check = probe(endpoint.clone());
            async move {
                tokio::time::timeout(settings.timeout, check)
                    .await
                    .unwrap_or(Err(CheckError::Timeout))
            }
        }))
        .await;
        let mut next = HashMap::with_capacity(current.len());
        for (endpoint, result) in current.into_iter().zip(results) {
            let key = Arc::as_ptr(&endpoint) as usize;
            let mut streak = streaks.remove(&key).map(|(_, s)| s).unwrap_or_default();
            match streak.observe(result.is_ok(), endpoint.is_healthy(), settings) {
                Some(healthy) => {
                    endpoint.set_healthy(healthy);
                    report(&endpoint, result.as_ref().err());
                }
                None => {
                    if let Err(error) = &result {
                        debug!(endpoint = %endpoint.addr, %error, "health check failed");
                    }
                }
            }
            next.insert(key, (endpoint, streak));
        }
        streaks = next;
        tokio::time::sleep_until(started + jittered(settings.interval)).await;
    }
}

/// `interval` ±10%, so many proxies do not check in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// One check of one endpoint.
async fn run_check(
    check: &HealthCheck,
    pool: &Pool,
    endpoint: &Arc<EndpointState>,
    authority: &Authority,
) -> Result<(), CheckError> {
    match check {
        HealthCheck::Tcp => {
            pool.probe(endpoint, crate::tls::ALPN_TCP).await?;
            Ok(())
        }
        HealthCheck::Http { path, statuses } => {
            let status = http_status(pool, endpoint, authority, path).await?;
            if statuses
                .iter()
                .any(|range| range.contains(&status.as_u16()))
            {
                Ok(())
            } else {
                Err(CheckError::Status(status))
            }
        }
        HealthCheck::Grpc { service } => grpc_check(pool, endpoint, authority, service).await,
    }
}

/// `GET path` over HTTP/1.1 on a new connection; the response status.
async fn http_status(
    pool: &Pool,
    endpoint: &Arc<EndpointState>,
    authority: &Authority,
    path: &http::uri::PathAndQuery,
) -> Result<StatusCode, CheckError> {
    let io = pool.probe(endpoint, crate::tls::ALPN_HTTP1).await?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await?;
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = Uri::from(path.clone());
    let headers = req.headers_mut();
    headers.insert(HOST, header(authority.as_str()));
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let exchange = async move { Ok(sender.send_request(req).await?.status()) };
    drive(exchange, conn).await
}

/// `grpc.health.v1.Health/Check` over HTTP/2 on a new connection.
async fn grpc_check(
    pool: &Pool,
    endpoint: &Arc<EndpointState>,
    authority: &Authority,
    service: &str,
) -> Result<(), CheckError> {
    let io = pool.probe(endpoint, crate::tls::ALPN_H2).await?;
    let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(GRPC_HEALTH_PATH)
        .build()
        .map_err(|_| CheckError::Malformed("request URI"))?;
    let mut req = Request::new(Full::new(encode_request(service)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    let exchange = async move {
        let response = sender.send_request(req).await?;
        if response.status() != StatusCode::OK {
            return Err(CheckError::Status(response.status()));
        }
        let (head, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|err| match err.downcast::<hyper::Error>() {
                Ok(err) => CheckError::Http(*err),
                Err(_) => CheckError::Malformed("body too large"),
            })?;
        // A trailers-only answer carries grpc-status in the headers.
        let trailers = body.trailers().cloned().unwrap_or(head.headers);
        grpc_status(&trailers)?;
        match decode_response(body.to_bytes())? {
            SERVING => Ok(()),
            other => Err(CheckError::NotServing(other)),
        }
    };
    drive(exchange, conn).await
}

/// Runs `exchange` while driving its connection here rather than in a
/// spawned task, so the check owns all of it and ends with it.
async fn drive<T>(
    exchange: impl Future<Output = Result<T, CheckError>>,
    conn: impl Future<Output = Result<(), hyper::Error>>,
) -> Result<T, CheckError> {
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        // The connection may end right after delivering the answer (HTTP/1
        // `Connection: close`); with it gone, the exchange finishes at once.
        ended = conn => match (exchange.await, ended) {
            (Ok(answer), _) => Ok(answer),
            (Err(_), Err(err)) => Err(CheckError::Http(err)),
            (Err(err), Ok(())) => Err(err),
        },
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("localhost"))
}

/// `grpc-status: 0`, or the error it is.
fn grpc_status(trailers: &HeaderMap) -> Result<(), CheckError> {
    match trailers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(b"0") => Ok(()),
        Some(other) => Err(CheckError::GrpcStatus(
            String::from_utf8_lossy(other).into_owned(),
        )),
        None => Err(CheckError::Malformed("no grpc-status")),
    }
}

/// A `HealthCheckRequest { service = 1 }` in a gRPC frame (flag 0, length, message).
fn encode_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited); proto3 omits an empty string.
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    // Service names come from the config: far below 4 GiB.
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// The `status` (field 1) of a framed `HealthCheckResponse`; 0 (`UNKNOWN`) when absent.
fn decode_response(mut frame: Bytes) -> Result<u64, CheckError> {
    if frame.len() < 5 {
        return Err(CheckError::Malformed("no message"));
    }
    if frame.get_u8() != 0 {
        return Err(CheckError::Malformed("compressed message"));
    }
    let len = frame.get_u32() as usize;
    if frame.len() < len {
        return Err(CheckError::Malformed("truncated message"));
    }
    let mut message = frame.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message)?,
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let len = varint(&mut message)?;
                skip(&mut message, usize::try_from(len).unwrap_or(usize::MAX))?;
            }
            (_, 5) => skip(&mut message, 4)?,
            _ => return Err(CheckError::Malformed("unknown wire type")),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(buf: &mut Bytes) -> Result<u64, CheckError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return Err(CheckError::Malformed("truncated varint"));
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CheckError::Malformed("varint too long"))
}

fn skip(buf: &mut Bytes, n: usize) -> Result<(), CheckError> {
    if buf.remaining() < n {
        return Err(CheckError::Malformed("truncated field"));
    }
    buf.advance(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::connect::ConnectionMetrics;
    use crate::discovery::Endpoint;

    fn settings(check: HealthCheck) -> HealthSettings {
        HealthSettings {
            check,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
            healthy: 2,
            unhealthy: 3,
        }
    }

    fn endpoint(port: u16) -> Arc<EndpointState> {
        Arc::new(EndpointState::new(&Endpoint {
            addr: ([127, 0, 0, 1], port).into(),
            weight: 1,
        }))
    }

    #[derive(Clone, Copy)]
    enum Answer {
        Up,
        Down,
        Hang,
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_turn_endpoints_down_and_up_again() {
        let (a, b, c) = (endpoint(1), endpoint(2), endpoint(3));
        let list = Arc::new(Mutex::new(vec![a.clone(), b.clone(), c.clone()]));
        let answers = Arc::new(Mutex::new(HashMap::from([
            (1, Answer::Up),
            (2, Answer::Down),
            (3, Answer::Hang),
        ])));
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (list, answers, events) = (list.clone(), answers.clone(), events.clone());
            tokio::spawn(async move {
                let settings = settings(HealthCheck::Tcp);
                let probe = |ep: Arc<EndpointState>| {
                    let answer = answers.lock().unwrap()[&ep.addr.port()];
                    async move {
                        match answer {
                            Answer::Up => Ok(()),
                            Answer::Down => {
                                Err(CheckError::Status(StatusCode::SERVICE_UNAVAILABLE))
                            }
                            Answer::Hang => std::future::pending().await,
                        }
                    }
                };
                let report = |ep: &EndpointState, failure: Option<&CheckError>| {
                    let timeout = matches!(failure, Some(CheckError::Timeout));
                    events
                        .lock()
                        .unwrap()
                        .push((ep.addr.port(), ep.is_healthy(), timeout));
                };
                run(&settings, || list.lock().unwrap().clone(), probe, report).await;
            })
        };
        let at =
            |secs: f64| tokio::time::sleep_until(Instant::now() + Duration::from_secs_f64(secs));
        // Rounds start at 0 s and then every 0.9–1.1 s; a round's results
        // land 0.2 s after its start, when the hung check times out. The
        // checkpoints below hold for any jitter: round n lands in
        // [0.9 n + 0.2, 1.1 n + 0.2] s.
        at(1.5).await;
        assert!(
            a.is_healthy() && b.is_healthy() && c.is_healthy(),
            "2 failures < 3"
        );
        at(1.0).await; // 2.5 s: three rounds done
        assert!(a.is_healthy());
        assert!(!b.is_healthy() && !c.is_healthy());
        assert_eq!(
            *events.lock().unwrap(),
            [(2, false, false), (3, false, true)],
            "a hung check fails by the timeout"
        );
        answers.lock().unwrap().insert(2, Answer::Up);
        let d = endpoint(4);
        answers.lock().unwrap().insert(4, Answer::Down);
        list.lock().unwrap().push(d.clone());
        at(1.0).await; // 3.5 s: one success
        assert!(!b.is_healthy(), "1 success < 2");
        assert!(d.is_healthy(), "a new endpoint starts healthy");
        at(1.2).await; // 4.7 s: two successes (round 4 landed by 4.6 s)
        assert!(b.is_healthy());
        at(1.1).await; // 5.8 s: d's third failure (round 5 landed by 5.7 s)
        assert!(!d.is_healthy());
        assert!(!c.is_healthy(), "still hung");
        assert_eq!(
            *events.lock().unwrap(),
            [
                (2, false, false),
                (3, false, true),
                (2, true, false),
                (4, false, false)
            ],
            "one report per transition"
        );
        task.abort();
    }

    #[test]
    fn one_failure_between_successes_restarts_the_count() {
        let settings = settings(HealthCheck::Tcp);
        let mut streak = Streak::default();
        assert_eq!(streak.observe(false, true, &settings), None);
        assert_eq!(streak.observe(false, true, &settings), None);
        assert_eq!(streak.observe(true, true, &settings), None);
        assert_eq!(streak.observe(false, true, &settings), None);
        assert_eq!(streak.observe(false, true, &settings), None);
        assert_eq!(streak.observe(false, true, &settings), Some(false));
        assert_eq!(streak.observe(true, false, &settings), None);
        assert_eq!(streak.observe(false, false, &settings), None);
        assert_eq!(streak.observe(true, false, &settings), None);
        assert_eq!(streak.observe(true, false, &settings), Some(true));
    }

    #[test]
    fn grpc_health_request_is_framed_protobuf() {
        assert_eq!(&encode_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("orders")[..],
            b"\x00\x00\x00\x00\x08\x0a\x06orders"
        );
        let long = "s".repeat(200);
        let frame = encode_request(&long);
        // 200 needs a two-byte varint: 0xc8 0x01.
        assert_eq!(&frame[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn grpc_health_response_status_is_decoded() {
        let decode = |bytes: &'static [u8]| decode_response(Bytes::from_static(bytes));
        assert_eq!(decode(b"\x00\x00\x00\x00\x02\x08\x01").unwrap(), SERVING);
        assert_eq!(decode(b"\x00\x00\x00\x00\x02\x08\x02").unwrap(), 2);
        assert_eq!(decode(b"\x00\x00\x00\x00\x00").unwrap(), 0, "UNKNOWN");
        // Unknown fields of every wire type are skipped.
        assert_eq!(
            decode(b"\x00\x00\x00\x00\x17\x12\x02hi\x18\x96\x01\x21abcdefgh\x2dabcd\x08\x01")
                .unwrap(),
            SERVING
        );
        for bad in [
            &b"\x00\x00\x00"[..],
            b"\x01\x00\x00\x00\x02\x08\x01",
            b"\x00\x00\x00\x00\x05\x08\x01",
            b"\x00\x00\x00\x00\x01\x08",
            b"\x00\x00\x00\x00\x02\x0b\x01",
        ] {
            assert!(
                matches!(decode(bad), Err(CheckError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    fn pool() -> Pool {
        Pool::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            ConnectionMetrics::default(),
            None,
            crate::connect::ConnectionLimits {
                max_connections: 16,
                max_pending: 16,
            },
        )
    }

    #[tokio::test]
    async fn http_check_sends_host_and_judges_the_status() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = endpoint(listener.local_addr().unwrap().port());
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in ["204 No Content", "503 Service Unavailable"] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 1024];
                let n = stream.read(&mut buf).await.unwrap();
                requests.push(String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
                let reply = format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\n\r\n");
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            requests
        });
        let check = HealthCheck::Http {
            path: "/healthz".parse().unwrap(),
            statuses: vec![200..=299],
        };
        let authority = Authority::from_static("orders");
        let pool = pool();
        run_check(&check, &pool, &ep, &authority).await.unwrap();
        let err = run_check(&check, &pool, &ep, &authority).await.unwrap_err();
        assert!(
            matches!(err, CheckError::Status(StatusCode::SERVICE_UNAVAILABLE)),
            "{err}"
        );
        for request in server.await.unwrap() {
            assert!(
                request.starts_with("get /healthz http/1.1\r\n"),
                "{request}"
            );
            assert!(request.contains("\r\nhost: orders\r\n"), "{request}");
        }
    }

    #[tokio::test]
    async fn grpc_check_reads_the_status_from_a_real_http2_server() {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = endpoint(listener.local_addr().unwrap().port());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            // Answers SERVING for "orders", SERVICE_UNKNOWN (3) otherwise.
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = log.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push((path, body.clone()));
                        let status: &[u8] = if body.ends_with(b"orders") {
                            b"\x00\x00\x00\x00\x02\x08\x01"
                        } else {
                            b"\x00\x00\x00\x00\x02\x08\x03"
                        };
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        let body = Full::new(Bytes::from_static(status))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header(CONTENT_TYPE, "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let pool = pool();
        let authority = Authority::from_static("orders");
        let serving = HealthCheck::Grpc {
            service: "orders".into(),
        };
        run_check(&serving, &pool, &ep, &authority).await.unwrap();
        let unknown = HealthCheck::Grpc {
            service: "users".into(),
        };
        let err = run_check(&unknown, &pool, &ep, &authority)
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::NotServing(3)), "{err}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, GRPC_HEALTH_PATH);
        assert_eq!(seen[0].1, encode_request("orders"));
    }

    #[test]
    fn grpc_status_comes_from_trailers() {
        let mut trailers = HeaderMap::new();
        assert!(matches!(
            grpc_status(&trailers),
            Err(CheckError::Malformed(_))
        ));
        trailers.insert("grpc-status", HeaderValue::from_static("12"));
        assert!(matches!(grpc_status(&trailers), Err(CheckError::GrpcStatus(s)) if s == "12"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(grpc_status(&trailers).is_ok());
    }
}
