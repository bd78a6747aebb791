//! `GET /tap`: live request metadata as NDJSON, one finished request per
//! line, flushed per line. The data path only offers events to the
//! telemetry tap feed ([`Tap`](crate::telemetry::tap::Tap)); each tap
//! filters and rate-limits on its own task, and says how many events it
//! left out (`{"skipped":N,"reason":"lagged"|"rate"}`) before the next
//! one it sends, or within a second.
//! Query parameters: `authority`, `path_prefix`, `method`, `status` (`503`
//! or `5xx`), `identity`, `direction`, `route`, `upstream` (exact; all must
//! hold), `limit` (end after N events), `rate` (events per second, default
//! [`DEFAULT_RATE`], at most [`MAX_RATE`]).
//! Ends when the client goes, after `limit` events, or on drain.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::Frame;
use mesh_api::admin::{TapEvent, TapSkipped};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::edge::matcher::query_pairs;
use crate::http::{Body, BodyError};
use crate::telemetry::tap::Subscription;

/// Events per second a tap sends unless it asks otherwise.
pub const DEFAULT_RATE: u32 = 100;
/// The most events per second a tap may ask for.
pub const MAX_RATE: u32 = 1000;

/// What one tap wants to see.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TapFilter {
    authority: Option<String>,
    path_prefix: Option<String>,
    method: Option<String>,
    status: Option<StatusFilter>,
    identity: Option<String>,
    direction: Option<String>,
    route: Option<String>,
    upstream: Option<String>,
    /// End after this many events.
    pub limit: Option<u64>,
    /// Events per second.
    pub rate: u32,
}

/// A status code, or a class (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    Code(u16),
    Class(u16),
}

impl TapFilter {
    /// Parses the query string; an unknown parameter or a bad value is an error.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut filter = TapFilter {
            rate: DEFAULT_RATE,
            ..TapFilter::default()
        };
        for (name, value) in query_pairs(query) {
            let value = value.into_owned();
            match &*name {
                "authority" => filter.authority = Some(value.to_ascii_lowercase()),
                "path_prefix" => filter.path_prefix = Some(value),
                "method" => filter.method = Some(value.to_ascii_uppercase()),
                "status" => filter.status = Some(parse_status(&value)?),
                "identity" => filter.identity = Some(value),
                "direction" => match &*value {
                    "inbound" | "outbound" | "edge" => filter.direction = Some(value),
                    _ => return Err("direction: expected inbound, outbound or edge".into()),
                },
                "route" => filter.route = Some(value),
                "upstream" => filter.upstream = Some(value),
                "limit" => {
                    let limit = value
                        .parse::<u64>()
                        .ok()
                        .filter(|l| *l > 0)
                        .ok_or("limit: expected a positive number")?;
                    filter.limit = Some(limit);
                }
                "rate" => {
                    let rate = value
                        .parse::<u32>()
                        .ok()
                        .filter(|r| (1..=MAX_RATE).contains(r))
                        .ok_or_else(|| format!("rate: expected 1 to {MAX_RATE}"))?;
                    filter.rate = rate;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(filter)
    }

    /// Whether `event` is one this tap wants.
    pub fn matches(&self, event: &TapEvent) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        let authority_matches = self.authority.as_deref().is_none_or(|want| {
            event.authority.as_deref().is_some_and(|have| {
                have.eq_ignore_ascii_case(want)
                    || have
                        .split(':')
                        .next()
                        .is_some_and(|host| host.eq_ignore_ascii_case(want))
            })
        });
        authority_matches
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| event.path.starts_with(prefix))
            && same(&self.method, Some(&event.method))
            && self.status.is_none_or(|status| match status {
                StatusFilter::Code(code) => event.status == code,
                StatusFilter::Class(class) => event.status / 100 == class,
            })
            && same(&self.identity, event.peer_identity.as_deref())
            && same(&self.direction, Some(&event.direction))
            && same(&self.route, event.route.as_deref())
            && same(&self.upstream, event.upstream.as_deref())
    }
}

fn parse_status(value: &str) -> Result<StatusFilter, String> {
    let bad = || format!("status: expected a code (503) or a class (5xx), got {value:?}");
    let lower = value.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        return match class.parse::<u16>() {
            Ok(class @ 1..=5) => Ok(StatusFilter::Class(class)),
            _ => Err(bad()),
        };
    }
    match value.parse::<u16>() {
        Ok(code @ 100..=599) => Ok(StatusFilter::Code(code)),
        _ => Err(bad()),
    }
}

/// A token bucket: `rate` events a second, bursts of `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Lines buffered between the tap's task and the connection.
const LINES: usize = 64;

/// Starts a tap with `filter` on `subscription`; the response streams its lines.
pub fn stream(
    subscription: Subscription,
    filter: TapFilter,
    drain: CancellationToken,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(LINES);
    tokio::spawn(
        run(subscription, filter, tx, drain).instrument(tracing::debug_span!("admin_tap")),
    );
    let mut response = Response::new(crate::http::boxed(Lines(rx)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The tap's task: filter, limit, format; ends with the client, the
/// limit, the feed or the drain.
async fn run(
    mut subscription: Subscription,
    filter: TapFilter,
    tx: mpsc::Sender<Bytes>,
    drain: CancellationToken,
) {
    let mut bucket = Bucket::new(filter.rate);
    let (mut lagged, mut limited, mut sent) = (0u64, 0u64, 0u64);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            () = drain.cancelled() => return,
            () = tx.closed() => return,
            _ = report.tick() => {
                if !send_skipped(&tx, &mut lagged, &mut limited, &drain).await {
                    return;
                }
                continue;
            }
            received = subscription.rx.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    lagged += n;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !filter.matches(&event) {
            continue;
        }
        if !bucket.take() {
            limited += 1;
            continue;
        }
        if !send_skipped(&tx, &mut lagged, &mut limited, &drain).await
            || !send(&tx, line(&*event), &drain).await
        {
            return;
        }
        sent += 1;
        if filter.limit.is_some_and(|limit| sent >= limit) {
            return;
        }
    }
}

/// Says how many events were left out, if any.
async fn send_skipped(
    tx: &mpsc::Sender<Bytes>,
    lagged: &mut u64,
    limited: &mut u64,
    drain: &CancellationToken,
) -> bool {
    for (count, reason) in [(lagged, "lagged"), (limited, "rate")] {
        if *count > 0 {
            let notice = TapSkipped {
                skipped: *count,
                reason: reason.into(),
            };
            *count = 0;
            if !send(tx, line(&notice), drain).await {
                return false;
            }
        }
    }
    true
}

/// Hands a line to the connection; `false` once the client or the proxy is gone.
async fn send(tx: &mpsc::Sender<Bytes>, line: Bytes, drain: &CancellationToken) -> bool {
    tokio::select! {
        sent = tx.send(line) => sent.is_ok(),
        () = drain.cancelled() => false,
    }
}

fn line<T: serde::Serialize>(value: &T) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The response body: the lines the tap's task sends, each its own chunk.
struct Lines(mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16, path: &str) -> TapEvent {
        TapEvent {
            direction: "outbound".into(),
            method: "GET".into(),
            authority: Some("Orders:8080".into()),
            path: path.into(),
            status,
            upstream: Some("orders".into()),
            ..TapEvent::default()
        }
    }

    #[test]
    fn filters_by_every_parameter() {
        let filter =
            TapFilter::parse(Some("status=5xx&path_prefix=%2Fapi&authority=orders")).unwrap();
        assert_eq!(filter.rate, DEFAULT_RATE);
        assert!(filter.matches(&event(503, "/api/x")));
        assert!(!filter.matches(&event(200, "/api/x")));
        assert!(!filter.matches(&event(503, "/other")));
        let filter = TapFilter::parse(Some("status=404&method=get&direction=outbound")).unwrap();
        assert!(filter.matches(&event(404, "/")));
        assert!(!filter.matches(&event(403, "/")));
        assert!(TapFilter::parse(Some("upstream=web"))
            .map(|f| !f.matches(&event(200, "/")))
            .unwrap());
    }

    #[test]
    fn refuses_bad_parameters() {
        for query in [
            "status=6xx",
            "status=abc",
            "rate=0",
            "rate=1001",
            "limit=0",
            "direction=up",
            "colour=red",
        ] {
            assert!(TapFilter::parse(Some(query)).is_err(), "{query}");
        }
        let filter = TapFilter::parse(Some("rate=1000&limit=3")).unwrap();
        assert_eq!((filter.rate, filter.limit), (1000, Some(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_a_token_bucket() {
        let mut bucket = Bucket::new(2);
        assert!(bucket.take() && bucket.take());
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
    }

    #[tokio::test]
    async fn a_tap_sends_matching_events_then_ends_at_its_limit() {
        let feed = crate::telemetry::tap::Tap::default();
        let filter = TapFilter::parse(Some("path_prefix=/a&limit=2")).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(run(feed.subscribe(), filter, tx, CancellationToken::new()));
        tokio::task::yield_now().await;
        for path in ["/a/1", "/b", "/a/2", "/a/3"] {
            feed.publish(event(200, path));
        }
        task.await.unwrap();
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(serde_json::from_slice::<TapEvent>(&line).unwrap().path);
        }
        assert_eq!(lines, ["/a/1", "/a/2"]);
        assert!(!feed.is_active(), "the subscription ends with the tap");
    }
}
