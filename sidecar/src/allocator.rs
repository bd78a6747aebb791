//! Giving freed memory back to the system once the proxy goes quiet.
//!
//! The binary allocates through mimalloc (see `main.rs`). mimalloc keeps
//! pages freed by a burst — 10,000 connections opened, served and parked —
//! committed for its purge delay (1 s) and purges them only from a later
//! allocator call on a thread that allocates; a proxy that has gone idle
//! makes none, so the burst's memory stayed in RSS for good (54 MiB holding
//! 10,000 idle connections, 39 MiB with the delay at zero: bench/README.md,
//! "Memory per idle connection"). So every worker thread collects as it
//! parks ([`collect_when_due`]: its empty pages back to the arenas, expired
//! purges done; at most once a second per thread, a few microseconds), and
//! [`collector`] wakes the runtime once a second to purge what is free
//! whatever its delay, so a burst's memory is gone a second or so after
//! its connections park, not whenever the next allocation comes.
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a thread may collect: mimalloc's own purge delay.
const EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Collects on this thread unless it did within the last [`EVERY`]: for
/// the runtime's `on_thread_park` hook.
pub fn collect_when_due() {
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        collect(false);
    }
}

/// Wakes a worker once a second, forever, and purges what is free: spawn
/// it on the runtime, which drops it at exit. A forced collection also
/// visits full pages; once a second that is a few microseconds.
pub async fn collector() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collect(true);
    }
}

/// Frees this thread's empty pages to mimalloc's arenas and purges the
/// arena memory whose delay has passed, or (`force`) all that is free.
/// Harmless where another allocator is the global one (unit tests):
/// mimalloc then has nothing to free.
#[allow(unsafe_code)]
fn collect(force: bool) {
    // SAFETY: `mi_collect` has no preconditions: callable from any thread
    // at any time; it only walks this thread's heap and the arenas, under
    // mimalloc's own synchronization.
    unsafe { libmimalloc_sys::mi_collect(force) }
}
