//! Overload shedding, like Envoy's overload manager: past a threshold the
//! proxy refuses new work cheaply instead of running out of memory.
//!
//! A watch task samples the process's resident memory (`VmRSS` in
//! `/proc/self/status`) every 250 ms and folds it and the `overload:`
//! thresholds into one number, the request limit; with no thresholds it
//! sleeps until a reload ([`settings_changed`]), so an idle proxy does not
//! wake for it. The layer near the top of
//! every stack reads that number with one atomic load per request:
//! - no threshold configured: the request passes untouched, uncounted;
//! - memory over `max_rss × shed_at`: the limit is 0, every new request is
//!   shed, and listeners refuse new connections;
//! - otherwise new requests past `max_active_requests × shed_at` in flight
//!   (a request stays in flight until its response body ends) are shed.
//!
//! A shed request gets 503 with `x-mesh-error: overloaded` (the
//! [`Overloaded`] error, mapped in `errors`), and HTTP/1 clients are told to
//! close the connection (keep-alive off while overloaded).
//! Writes: `mesh_overload_active` (1 while shedding),
//! `mesh_overload_shed_total`, `mesh_overload_active_requests`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, Version};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower::layer::layer_fn;
use tower::Layer;
use tracing::{info, Instrument};

use crate::config::{OverloadSettings, Settings};
use crate::http::{Body, Holding, HttpService};
use crate::BoxError;

/// How often resident memory is sampled.
const SAMPLE_PERIOD: Duration = Duration::from_millis(250);

/// The request limit meaning "nothing watched": requests are not counted.
const UNWATCHED: u64 = u64::MAX;

/// A request shed because the proxy is over an `overload:` threshold.
#[derive(Debug, thiserror::Error)]
#[error("the proxy is overloaded")]
pub struct Overloaded;

/// The process-wide overload state (one proxy process, one budget).
pub struct OverloadState {
    /// Requests in flight at which new ones are shed: 0 while memory is
    /// over its threshold, [`UNWATCHED`] when nothing is configured.
    limit: AtomicU64,
    /// Counted requests in flight.
    in_flight: AtomicU64,
    /// Memory is over its threshold: listeners refuse new connections.
    memory_over: AtomicBool,
    /// `mesh_overload_active`: 1 while shedding.
    active: Gauge,
    /// `mesh_overload_shed_total`: requests answered 503 `overloaded`.
    shed: Counter,
    /// `mesh_overload_active_requests`: counted requests in flight.
    in_flight_gauge: Gauge,
}

static STATE: LazyLock<OverloadState> = LazyLock::new(|| OverloadState {
    limit: AtomicU64::new(UNWATCHED),
    in_flight: AtomicU64::new(0),
    memory_over: AtomicBool::new(false),
    active: Gauge::default(),
    shed: Counter::default(),
    in_flight_gauge: Gauge::default(),
});

/// Whether the watch task runs (started by the first listener).
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Wakes the watch task after a reload.
static CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The settings were swapped (a reload): the watch task looks at the
/// thresholds again now rather than at its next sample, or at all when
/// none were set.
pub fn settings_changed() {
    CHANGED.notify_one();
}

/// The process's overload state.
pub fn state() -> &'static OverloadState {
    &STATE
}

impl OverloadState {
    /// Adds the overload metrics to `registry` (prefix `mesh`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "overload_active",
            "1 while the proxy sheds new work (overload: thresholds)",
            self.active.clone(),
        );
        registry.register(
            "overload_shed",
            "Requests answered 503 overloaded",
            self.shed.clone(),
        );
        registry.register(
            "overload_active_requests",
            "Requests in flight, counted while overload.max_active_requests is set",
            self.in_flight_gauge.clone(),
        );
    }

    /// Whether listeners should refuse new connections (memory over).
    pub fn refuses_connections(&self) -> bool {
        self.memory_over.load(Ordering::Relaxed)
    }

    /// Folds a memory sample and the thresholds into the request limit.
    fn update(&self, settings: OverloadSettings, rss: Option<u64>) {
        let memory_over =
            matches!((settings.shed_rss, rss), (Some(limit), Some(rss)) if rss >= limit);
        if memory_over != self.memory_over.swap(memory_over, Ordering::Relaxed) {
            info!(memory_over, rss, "overload: memory threshold crossed");
        }
        let limit = if memory_over {
            0
        } else {
            settings.shed_requests.unwrap_or(UNWATCHED)
        };
        self.limit.store(limit, Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        self.in_flight_gauge
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.active
            .set(i64::from(memory_over || in_flight >= limit));
    }

    /// Admits a request: `Ok(None)` uncounted (nothing watched), `Ok(Some)`
    /// counted until the guard drops, `Err` shed.
    fn admit(&'static self) -> Result<Option<InFlight>, Overloaded> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == UNWATCHED {
            return Ok(None);
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self);
        if before >= limit {
            drop(guard);
            self.shed.inc();
            self.active.set(1);
            return Err(Overloaded);
        }
        Ok(Some(guard))
    }
}

/// One counted request in flight; uncounted on drop.
struct InFlight(&'static OverloadState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the memory watch once per process; it re-reads the thresholds
/// from `settings` at every sample and after every reload, and ends when
/// `stop` fires.
pub fn watch(
    settings: &Arc<ArcSwap<Settings>>,
    tracker: &tokio_util::task::TaskTracker,
    stop: &CancellationToken,
) {
    if WATCHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let settings = settings.clone();
    let stop = stop.clone();
    let task = async move {
        loop {
            let thresholds = settings.load().overload;
            let rss = thresholds.shed_rss.and_then(|_| resident_bytes());
            state().update(thresholds, rss);
            let watched = thresholds != OverloadSettings::default();
            tokio::select! {
                () = stop.cancelled() => break,
                () = CHANGED.notified() => {}
                () = tokio::time::sleep(SAMPLE_PERIOD), if watched => {}
            }
        }
        WATCHING.store(false, Ordering::Release);
    };
    tracker.spawn(task.instrument(tracing::info_span!("overload_watch")));
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss(&status)
}

/// `VmRSS:   1234 kB` of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The shedding layer: first after `errors`, so shed requests are counted
/// by telemetry and cost nothing else.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| match state().admit() {
            Ok(None) => inner.call_ref(req),
            Ok(Some(guard)) => {
                let call = inner.call_ref(req);
                Box::pin(async move {
                    let response = call.await?;
                    Ok(response.map(|body| counted(body, guard)))
                })
            }
            Err(overloaded) => crate::http::ready(Ok(shed(&req, overloaded))),
        })
    })
}

/// The 503 `overloaded` answer; HTTP/1 clients are asked to reconnect later.
fn shed(req: &Request<Body>, overloaded: Overloaded) -> Response<Body> {
    let grpc = crate::http::is_grpc(req.headers());
    let mut response = crate::errors::response(&BoxError::from(overloaded), grpc);
    if req.version() <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `body`, keeping its request counted in flight until it ends.
fn counted(body: Body, guard: InFlight) -> Body {
    http_body_util::BodyExt::boxed_unsync(Holding::new(body, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> &'static OverloadState {
        Box::leak(Box::new(OverloadState {
            limit: AtomicU64::new(UNWATCHED),
            in_flight: AtomicU64::new(0),
            memory_over: AtomicBool::new(false),
            active: Gauge::default(),
            shed: Counter::default(),
            in_flight_gauge: Gauge::default(),
        }))
    }

    #[test]
    fn unwatched_requests_pass_uncounted() {
        let state = fresh();
        assert!(matches!(state.admit(), Ok(None)));
        assert_eq!(state.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn requests_past_the_limit_are_shed_until_one_ends() {
        let state = fresh();
        let settings = OverloadSettings {
            shed_rss: None,
            shed_requests: Some(2),
        };
        state.update(settings, None);
        let first = state.admit().unwrap();
        let _second = state.admit().unwrap();
        assert!(state.admit().is_err());
        assert_eq!(state.shed.get(), 1);
        assert_eq!(state.in_flight.load(Ordering::Relaxed), 2);
        drop(first);
        assert!(state.admit().is_ok());
    }

    #[test]
    fn memory_over_sheds_everything_and_refuses_connections() {
        let state = fresh();
        let settings = OverloadSettings {
            shed_rss: Some(100),
            shed_requests: None,
        };
        state.update(settings, Some(99));
        assert!(!state.refuses_connections());
        assert!(matches!(state.admit(), Ok(None)));
        state.update(settings, Some(100));
        assert!(state.refuses_connections());
        assert!(state.admit().is_err());
        assert_eq!(state.active.get(), 1);
        state.update(settings, Some(10));
        assert!(matches!(state.admit(), Ok(None)));
        assert_eq!(state.active.get(), 0);
    }

    #[test]
    fn vm_rss_reads_kib() {
        let status = "Name:\tsidecar\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("Name: x\n"), None);
        assert!(resident_bytes().is_some_and(|rss| rss > 0));
    }
}
