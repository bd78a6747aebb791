//! One clock reading per poll of a connection's task.
//!
//! A proxied request wants the time at several points that lie within
//! microseconds of each other: the request's start, its deadline, the retry
//! budget's window, the attempt's send time, the pooled connection's idle
//! stamp. Reading the clock costs tens of nanoseconds on a VM, where the
//! vDSO often has to ask the hypervisor's clock, and every reading but the
//! first of a poll says the same thing.
//!
//! Inside [`Shared`] (the tasks that serve connections), the first [`now`]
//! of a poll reads the clock and the rest of that poll reuse the reading, as
//! Envoy's dispatcher does with its approximate time. A reading is never
//! older than the poll it was taken in: the work the proxy does for one
//! connection between being woken and yielding, which does not wait on
//! anything. Ends of intervals that CPU work in the same poll may precede
//! (a response's arrival, a request's end) take [`exact`], which reads the
//! clock and becomes the poll's reading from then on. Outside a shared poll
//! both read the clock.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Instant;

thread_local! {
    /// `None` outside a shared poll; inside one, the poll's reading once taken.
    static POLL: Cell<Option<Option<Instant>>> = const { Cell::new(None) };
}

/// The current poll's reading, taken now if it has none yet.
pub fn now() -> Instant {
    POLL.with(|slot| match slot.get() {
        Some(Some(at)) => at,
        Some(None) => {
            let at = Instant::now();
            slot.set(Some(Some(at)));
            at
        }
        None => Instant::now(),
    })
}

/// Reads the clock; inside a shared poll, the reading replaces the poll's.
pub fn exact() -> Instant {
    let at = Instant::now();
    POLL.with(|slot| {
        if slot.get().is_some() {
            slot.set(Some(Some(at)));
        }
    });
    at
}

pin_project_lite::pin_project! {
    /// `inner`, whose polls share one clock reading (see the module's docs).
    pub struct Shared<F> {
        #[pin]
        inner: F,
    }
}

/// Wraps `inner` so that its polls share one clock reading each.
pub fn shared<F: Future>(inner: F) -> Shared<F> {
    Shared { inner }
}

impl<F: Future> Future for Shared<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // A shared poll inside another (a connection's task polling a
        // request's future) keeps the outer one's reading.
        let _scope = POLL.with(|slot| slot.get().is_none().then(|| Scope::open(slot)));
        self.project().inner.poll(cx)
    }
}

/// Closes the shared poll when dropped, also when the poll panics.
struct Scope;

impl Scope {
    fn open(slot: &Cell<Option<Option<Instant>>>) -> Scope {
        slot.set(Some(None));
        Scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // `try_with`: a thread being torn down has no slot left to close.
        let _ = POLL.try_with(|slot| slot.set(None));
    }
}

/// hyper's executor for HTTP/2 streams, each spawned as a task of its own:
/// their polls share a reading like the connection's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(shared(fut));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outside_a_shared_poll_every_reading_is_taken_anew() {
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() - a >= Duration::from_millis(2));
    }

    #[tokio::test]
    async fn a_poll_shares_one_reading_until_an_exact_one_replaces_it() {
        let (first, second, after_exact, exact_reading) = shared(async {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            let second = now();
            std::thread::sleep(Duration::from_millis(2));
            let exact_reading = exact();
            (first, second, now(), exact_reading)
        })
        .await;
        assert_eq!(first, second, "one poll, one reading");
        assert!(exact_reading - first >= Duration::from_millis(4));
        assert_eq!(
            after_exact, exact_reading,
            "the exact reading is the poll's"
        );
    }

    #[tokio::test]
    async fn each_poll_takes_its_own_reading() {
        let (before, after) = shared(async {
            let before = now();
            std::thread::sleep(Duration::from_millis(2));
            tokio::task::yield_now().await;
            (before, now())
        })
        .await;
        assert!(after - before >= Duration::from_millis(2));
        // And the scope is closed once the poll is over.
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() - a >= Duration::from_millis(2));
    }

    #[tokio::test]
    async fn a_nested_shared_poll_keeps_the_outer_reading() {
        let (outer, inner, after) = shared(async {
            let outer = now();
            std::thread::sleep(Duration::from_millis(2));
            let inner = shared(async { now() }).await;
            // The inner poll did not close the outer scope.
            (outer, inner, now())
        })
        .await;
        assert_eq!(outer, inner);
        assert_eq!(outer, after);
    }
}
