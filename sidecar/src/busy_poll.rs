//! Busy polling (`sidecar run --busy-poll WINDOW`): for WINDOW after each
//! HTTP request arrives, the worker keeps polling for I/O instead of
//! sleeping in the kernel.
//!
//! A proxied request wakes the proxy twice: its arrival, then the
//! upstream's answer. Between them the worker sleeps in `epoll_wait`, and
//! on a VM a sleeping vCPU is halted and handed back to the hypervisor:
//! waking it takes tens of microseconds, paid twice per request (measured
//! in bench/README.md). While a spinner task keeps yielding, the runtime
//! polls for I/O without a timeout and never sleeps, so an answer that
//! comes within the window is read at once, and so is the next request
//! when requests come more often than the window. The price is a core kept
//! busy for as long as they do (HAProxy's `busy-polling` makes the same
//! trade, without a window). Only requests count as traffic: a parked
//! keep-alive connection's timer, a health check or a DNS refresh does not
//! keep the worker spinning. Off by default.
//!
//! One worker only (a current-thread runtime): the spinner and the
//! activity it watches are the thread's own.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// Set by the spinner as it starts: busy polling is on.
static ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Requests that arrived on this thread so far (wrapping).
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// The spinner, while it waits for traffic.
    static WAITING: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// Called as each HTTP request arrives: wakes the spinner if it waits.
/// One relaxed load when busy polling is off.
pub fn note_request() {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    ACTIVITY.with(|n| n.set(n.get().wrapping_add(1)));
    if let Some(spinner) = WAITING.with(Cell::take) {
        spinner.wake();
    }
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

/// The spinner, spawned on the one worker's runtime: waits (asleep, no
/// cost) until a request arrives, then yields to the runtime again and
/// again until `window` has passed without one.
pub async fn spin(window: Duration) {
    ON.store(true, Ordering::Relaxed);
    let mut seen = activity();
    loop {
        std::future::poll_fn(|cx| {
            if activity() != seen {
                return Poll::Ready(());
            }
            WAITING.with(|w| w.set(Some(cx.waker().clone())));
            Poll::Pending
        })
        .await;
        seen = activity();
        let mut quiet_since = Instant::now();
        loop {
            // A yielded task makes the runtime poll for I/O without
            // waiting, then run the task again.
            tokio::task::yield_now().await;
            let now = activity();
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= window {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the spinner waits for traffic (asleep) rather than spins.
    fn resting() -> bool {
        WAITING.with(|w| {
            let waker = w.take();
            let resting = waker.is_some();
            w.set(waker);
            resting
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spins_for_the_window_after_a_request_then_rests() {
        let window = Duration::from_millis(50);
        let spinner = tokio::spawn(spin(window));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(resting(), "no traffic yet: asleep");
        note_request();
        let woken = Instant::now();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!resting(), "spinning after a request");
        while !resting() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(woken.elapsed() < Duration::from_secs(2), "never rested");
        }
        assert!(woken.elapsed() >= window, "rested before the window passed");
        spinner.abort();
    }
}
