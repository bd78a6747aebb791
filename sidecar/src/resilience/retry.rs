//! The attempts of one request: send, decide whether the outcome is worth
//! another try (by the policy, the method's idempotency and the budget),
//! back off with full jitter, send again. Connect failures come back with
//! their request unsent, so they are retried whatever the body; other
//! retries need the body kept for replay, which only small bodies of known
//! length are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{ResilienceError, Slot};
use crate::cluster::Cluster;
use crate::config::RetryPolicy;
use crate::connect::{Unsent, UpstreamError};
use crate::forward::TriedEndpoints;
use crate::http::{full, is_grpc, is_upgrade, Body, HttpService};
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
    req.extensions_mut().insert(TriedEndpoints::default());
    let (mut next, replay) = keep_for_replay(req, policy.max_body, idempotent).await?;
    let mut tries = 0;
    let mut _retry_slot = None;
    loop {
        let outcome = attempt(&inner, next, settings.per_try_timeout, expires).await;
        let Some(reason) = retry_reason(&outcome, policy, idempotent) else {
            return outcome;
        };
        let unsent = outcome
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<Unsent>())
            .and_then(Unsent::take_request);
        let Some(again) = unsent.or_else(|| replay.as_ref().map(Replay::request)) else {
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
        tokio::time::sleep(backoff(policy, tries)).await;
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

/// One attempt, bounded by the per-try deadline.
async fn attempt(
    inner: &HttpService,
    mut req: Request<Body>,
    per_try: Option<Duration>,
    expires: Option<tokio::time::Instant>,
) -> Outcome {
    // The upstream learns how long it has left, not how long the caller had.
    if let Some(expires) = expires {
        super::deadline::propagate(req.headers_mut(), expires);
    }
    let call = inner.clone().oneshot(req);
    match per_try {
        None => call.await,
        Some(deadline) => tokio::time::timeout(deadline, call)
            .await
            .unwrap_or_else(|_| Err(ResilienceError::Timeout.into())),
    }
}

/// Why this outcome deserves another try, if it does.
fn retry_reason(outcome: &Outcome, policy: &RetryPolicy, idempotent: bool) -> Option<&'static str> {
    match outcome {
        Ok(response) if idempotent => {
            let status = response.status().as_u16();
            if policy.statuses.iter().any(|range| range.contains(&status)) {
                return Some("status");
            }
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
        Ok(_) => None,
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

/// A request kept whole so it can be sent again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    body: Bytes,
}

impl Replay {
    fn request(&self) -> Request<Body> {
        let mut req = Request::new(full(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        req
    }
}

/// Reads the body now when it is small and of known length (or empty), so
/// the request can be replayed; otherwise leaves it streaming.
async fn keep_for_replay(
    req: Request<Body>,
    max_body: u64,
    idempotent: bool,
) -> Result<(Request<Body>, Option<Replay>), BoxError> {
    let body = req.body();
    let small = body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= max_body);
    if !idempotent || !small {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let replay = Replay {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        extensions: parts.extensions,
        body,
    };
    Ok((replay.request(), Some(replay)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResilienceSettings;

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
        assert_eq!(retry_reason(&outcome, &policy, false), None);
    }
}
