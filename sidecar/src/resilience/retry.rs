//! The attempts of one request: send, decide whether the outcome is worth
//! another try (by the policy, the method's idempotency and the budget),
//! back off with full jitter, send again. Connect failures come back with
//! their request unsent, so they are retried whatever the body; so do
//! resets of requests without a body sent by the pool's own HTTP/1 client
//! (`UpstreamError::take_request`), so for those no copy is made when no
//! other retry could need one. Other retries need the request kept for
//! replay, which only small bodies of known length are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::{ResilienceError, Slot};
use crate::cluster::Cluster;
use crate::config::RetryPolicy;
use crate::connect::{Unsent, UpstreamError};
use crate::forward::RetryExtensions;
use crate::http::{full, is_grpc, is_upgrade, Body, HttpService, ResponseFuture};
use crate::telemetry::Metrics;
use crate::BoxError;

type Outcome = Result<Response<Body>, BoxError>;

/// Runs the request's attempts against `inner`.
pub(super) async fn run(
    inner: HttpService,
    req: Request<Body>,
    cluster: &Arc<Cluster>,
    metrics: &Metrics,
    expires: Option<tokio::time::Instant>,
) -> Outcome {
    let settings = &cluster.settings.resilience;
    let policy = &settings.retry;
    let state = &cluster.resilience;
    state.budget.deposit();
    if policy.attempts == 0 || req.method() == Method::CONNECT || is_upgrade(&req) {
        return attempt(&inner, req, settings.per_try_timeout, expires).await;
    }
    let idempotent = policy.non_idempotent || is_idempotent(req.method());
    let mut req = req;
    let grpc = is_grpc(req.headers());
    // gRPC statuses are retried whatever the method (gRPC retry semantics):
    // gRPC bodies are kept for replay too. A request handed back with its
    // failure needs no copy, unless statuses or per-try timeouts (whose
    // outcomes do not carry it) may call for a retry.
    // The request as the caller sent it: its version must be the wire's
    // already, as a request comes back with the version it was sent with.
    let wire = crate::forward::wire(cluster.settings.protocol, req.version(), false);
    let comes_back = !grpc
        && policy.statuses.is_empty()
        && !policy.timeout
        && crate::connect::hands_back(&req, wire);
    let replayable = (idempotent || grpc) && !comes_back;
    let read = if replayable && read_first(&req, policy.max_body) {
        let body = std::mem::replace(req.body_mut(), crate::http::empty());
        Some(body.collect().await?.to_bytes())
    } else {
        None
    };
    let replay = keep_for_replay(&mut req, policy.max_body, replayable, read);
    let mut next = req;
    let mut tries = 0;
    let mut _retry_slot = None;
    loop {
        let outcome = attempt(&inner, next, settings.per_try_timeout, expires).await;
        let Some(reason) = retry_reason(&outcome, policy, idempotent) else {
            return outcome;
        };
        let returned = outcome.as_ref().err().and_then(|e| {
            e.downcast_ref::<Unsent>()
                .and_then(Unsent::take_request)
                .or_else(|| e.downcast_ref::<UpstreamError>()?.take_request())
        });
        let Some(again) = returned.or_else(|| replay.as_ref().and_then(Replay::request)) else {
            return outcome;
        };
        if tries >= policy.attempts {
            metrics.resilience(cluster.name(), "retries_exhausted");
            return outcome;
        }
        if !state.budget.try_withdraw() {
            metrics.resilience(cluster.name(), "budget_exhausted");
            return outcome;
        }
        metrics.resilience(cluster.name(), reason);
        tracing::debug!(upstream = %cluster.name(), reason, attempt = tries + 2, "retrying");
        drop(outcome);
        tries += 1;
        // Boxed: a timer is large, and few requests back off.
        Box::pin(tokio::time::sleep(backoff(policy, tries))).await;
        // The limit counts retries on the wire, not those backing off.
        _retry_slot = None;
        let Some(slot) = Slot::acquire(&state.retries, settings.max_retries) else {
            metrics.resilience(cluster.name(), "retry_limit");
            return Err(ResilienceError::RetryLimit.into());
        };
        _retry_slot = Some(slot);
        next = again;
    }
}

/// One attempt, bounded by the per-try deadline: the next layer's own
/// future when there is none (an attempt's future is awaited inside the
/// request's, so a small one keeps every request's future small).
fn attempt(
    inner: &HttpService,
    mut req: Request<Body>,
    per_try: Option<Duration>,
    expires: Option<tokio::time::Instant>,
) -> ResponseFuture {
    // The upstream learns how long it has left, not how long the caller had.
    if let Some(expires) = expires {
        super::deadline::propagate(req.headers_mut(), expires);
    }
    let call = inner.call_ref(req);
    match per_try {
        None => call,
        Some(deadline) => Box::pin(async move {
            tokio::time::timeout(deadline, call)
                .await
                .unwrap_or_else(|_| Err(ResilienceError::Timeout.into()))
        }),
    }
}

/// Why this outcome deserves another try, if it does.
fn retry_reason(outcome: &Outcome, policy: &RetryPolicy, idempotent: bool) -> Option<&'static str> {
    match outcome {
        Ok(response) => {
            let status = response.status().as_u16();
            if idempotent && policy.statuses.iter().any(|range| range.contains(&status)) {
                return Some("status");
            }
            // gRPC statuses (e.g. UNAVAILABLE: not processed) are retried
            // whatever the method, as gRPC clients do.
            let grpc_status = is_grpc(response.headers())
                .then(|| {
                    response
                        .headers()
                        .get("grpc-status")?
                        .to_str()
                        .ok()?
                        .parse::<u32>()
                        .ok()
                })
                .flatten();
            grpc_status
                .filter(|code| policy.grpc.contains(code))
                .map(|_| "grpc_status")
        }
        // Never sent: safe whatever the method.
        // Over the cluster's own connection limits: retrying would only add load.
        Err(err) if err.downcast_ref::<Unsent>().is_some_and(Unsent::overflowed) => None,
        Err(err) if err.is::<Unsent>() => policy.connect_failure.then_some("connect_failure"),
        Err(err) if err.is::<UpstreamError>() => (policy.reset && idempotent).then_some("reset"),
        Err(err) if err.is::<ResilienceError>() => {
            (policy.timeout && idempotent).then_some("per_try_timeout")
        }
        Err(_) => None,
    }
}

/// Methods that mean the same done twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Full jitter: a random wait up to `base × 2^(tries-1)`, capped at `max`.
fn backoff(policy: &RetryPolicy, tries: u32) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
        .min(policy.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

/// A request kept so it can be sent again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    extensions: RetryExtensions,
    body: Kept,
}

/// How a request's body is kept for replay.
enum Kept {
    /// Read whole before the first attempt (small, of known length).
    Whole(Bytes),
    /// Recorded while the first attempt streams it (length unknown, e.g. gRPC).
    Recorded(Arc<Recording>),
}

impl Replay {
    /// The request again, or `None` when its body could not be kept (too
    /// large, or not fully sent yet).
    fn request(&self) -> Option<Request<Body>> {
        let body = match &self.body {
            Kept::Whole(bytes) => bytes.clone(),
            Kept::Recorded(recording) => recording.replay()?,
        };
        let mut req = Request::new(full(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.to_extensions();
        Some(req)
    }
}

/// A copy of a streamed body, up to a limit.
struct Recording {
    max: u64,
    state: std::sync::Mutex<RecordingState>,
}

#[derive(Default)]
struct RecordingState {
    chunks: Vec<Bytes>,
    size: u64,
    complete: bool,
    spoiled: bool,
}

impl Recording {
    fn record(&self, frame: &http_body::Frame<Bytes>) {
        let mut state = crate::lock(&self.state);
        match frame.data_ref() {
            Some(data) if !state.spoiled => {
                state.size += data.len() as u64;
                if state.size > self.max {
                    state.spoiled = true;
                    state.chunks.clear();
                } else {
                    state.chunks.push(data.clone());
                }
            }
            Some(_) => {}
            // Trailers are not replayed: such a body is not kept.
            None => state.spoiled = true,
        }
    }

    fn replay(&self) -> Option<Bytes> {
        let state = crate::lock(&self.state);
        (state.complete && !state.spoiled).then(|| state.chunks.concat().into())
    }
}

/// The first attempt's body: streams as usual, recording as it goes.
struct Tee {
    inner: Body,
    recording: Arc<Recording>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                self.recording.record(frame);
                // The last frame may be the last one polled: the sender can stop
                // polling once the upstream answers (a unary gRPC call's one DATA
                // frame carries END_STREAM).
                if self.inner.is_end_stream() {
                    crate::lock(&self.recording.state).complete = true;
                }
            }
            std::task::Poll::Ready(None) => crate::lock(&self.recording.state).complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the body is read whole before the first attempt: not empty,
/// of known length, at most `max_body`.
fn read_first(req: &Request<Body>, max_body: u64) -> bool {
    let body = req.body();
    !body.is_end_stream() && body.size_hint().exact().is_some_and(|n| n <= max_body)
}

/// What a retry of `req` needs. The body: `read` when it was read whole
/// already ([`read_first`]), the empty body as it is, recorded while it
/// streams otherwise (up to `max_body`); `req` keeps going as it is, its
/// body swapped for what feeds the copy. (Changed in place: a request
/// moved through here and back was copied twice per request.)
fn keep_for_replay(
    req: &mut Request<Body>,
    max_body: u64,
    replayable: bool,
    read: Option<Bytes>,
) -> Option<Replay> {
    if !replayable {
        return None;
    }
    let kept = if let Some(bytes) = read {
        *req.body_mut() = full(bytes.clone());
        Kept::Whole(bytes)
    } else if req.body().is_end_stream() {
        // Most requests: nothing to read, and the empty body goes as it is.
        Kept::Whole(Bytes::new())
    } else {
        let recording = Arc::new(Recording {
            max: max_body,
            state: Default::default(),
        });
        let tee = Tee {
            inner: std::mem::replace(req.body_mut(), crate::http::empty()),
            recording: recording.clone(),
        };
        *req.body_mut() = crate::http::boxed(tee);
        Kept::Recorded(recording)
    };
    Some(Replay {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
        extensions: RetryExtensions::of(req.extensions()),
        body: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResilienceSettings;

    #[test]
    fn a_recording_replays_only_a_complete_body_within_its_limit() {
        let recording = Recording {
            max: 8,
            state: Default::default(),
        };
        recording.record(&http_body::Frame::data(Bytes::from_static(b"abc")));
        assert!(recording.replay().is_none(), "not complete yet");
        recording.record(&http_body::Frame::data(Bytes::from_static(b"de")));
        crate::lock(&recording.state).complete = true;
        assert_eq!(recording.replay().as_deref(), Some(&b"abcde"[..]));
        recording.record(&http_body::Frame::data(Bytes::from_static(b"fghij")));
        assert!(recording.replay().is_none(), "over the limit: not kept");
    }

    #[test]
    fn backoff_stays_under_its_growing_ceiling() {
        let policy = ResilienceSettings::defaults().retry;
        for tries in 1..8 {
            let ceiling = (policy.backoff_base * (1 << (tries - 1))).min(policy.backoff_max);
            assert!(backoff(&policy, tries) <= ceiling);
        }
    }

    #[test]
    fn only_idempotent_requests_retry_after_sending() {
        let policy = ResilienceSettings::defaults().retry;
        let reset: Outcome = Err(Box::new(ResilienceError::Timeout));
        assert_eq!(
            retry_reason(&reset, &policy, true),
            None,
            "timeout is not in the default policy"
        );
        let mut unavailable = Response::new(crate::http::empty());
        unavailable
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        unavailable
            .headers_mut()
            .insert("grpc-status", "14".parse().unwrap());
        let outcome: Outcome = Ok(unavailable);
        assert_eq!(retry_reason(&outcome, &policy, true), Some("grpc_status"));
        assert_eq!(
            retry_reason(&outcome, &policy, false),
            Some("grpc_status"),
            "gRPC retries whatever the method"
        );
    }
}
