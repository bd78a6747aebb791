//! Local limits: the generic cell rate algorithm (GCRA) per key, in this
//! process. A bucket is one number, its theoretical arrival time (TAT): a
//! request at `now` conforms when `max(TAT, now) + T - (τ + T) <= now`,
//! with `T = period / count` (the emission interval) and `τ = burst × T`;
//! then `TAT = max(TAT, now) + T`. A bucket whose TAT has passed is
//! indistinguishable from a new one, so idle buckets are dropped.
//! Keys live in a lock-sharded map, at most `max_keys` of them per limit
//! (the bucket refilled longest ago makes room). No lock is held across an
//! await: a throttled request reserves its slot, then sleeps unlocked.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Shards of a limiter's map (a power of two).
const SHARDS: usize = 32;

/// Keys per limit when nothing else is said.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// How often a shard drops its idle buckets at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a limit decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The request conforms (possibly after `delay`).
    pub allowed: bool,
    /// How long a throttled request waits before it goes on (zero otherwise).
    pub delay: Duration,
    /// Requests still allowed at once after this one.
    pub remaining: u64,
    /// Until the bucket is full again (allowed) or the next request
    /// conforms (refused).
    pub reset: Duration,
    /// The most requests allowed at once (`burst + 1`).
    pub limit: u64,
}

/// One bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Theoretical arrival time, nanoseconds since the limiter's epoch.
    tat: u64,
    /// Throttled requests sleeping on this bucket.
    waiting: u32,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    last_sweep: u64,
}

/// The GCRA state of one limit.
#[derive(Debug)]
pub struct Gcra {
    /// Emission interval `T`, nanoseconds.
    interval: u64,
    /// Burst tolerance `τ`, nanoseconds.
    tolerance: u64,
    burst: u64,
    max_keys_per_shard: usize,
    epoch: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl Gcra {
    /// `count` requests per `period`, `burst` more at once, at most `max_keys` buckets.
    pub fn new(count: u64, period: Duration, burst: u64, max_keys: usize) -> Self {
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / count.max(1)).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(burst),
            burst,
            max_keys_per_shard: (max_keys / SHARDS).max(1),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        last_sweep: 0,
                    })
                })
                .collect(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(key);
        // SHARDS is a power of two; the cast keeps the low bits.
        &self.shards[(hash as usize) & (SHARDS - 1)]
    }

    /// Counts one request on `key`. With `throttle = Some((max_delay,
    /// queue))` a request that does not conform yet reserves the next slot
    /// and is told to wait, if the wait is at most `max_delay` and fewer
    /// than `queue` requests already wait on the bucket; the caller then
    /// holds a [`Waiting`] while it sleeps.
    pub fn check(&self, key: &str, throttle: Option<(Duration, u32)>) -> Decision {
        let now = self.now();
        let mut shard = crate::lock(self.shard(key));
        let decision;
        let tat;
        let bucket = shard.buckets.get(key).copied();
        let current = bucket.map_or(now, |b| b.tat.max(now));
        let next = current.saturating_add(self.interval);
        let allow_at = next.saturating_sub(self.tolerance + self.interval);
        let waiting = bucket.map_or(0, |b| b.waiting);
        if allow_at <= now {
            tat = next;
            decision = Decision {
                allowed: true,
                delay: Duration::ZERO,
                remaining: self.remaining(now, next),
                reset: Duration::from_nanos(next - now),
                limit: self.burst + 1,
            };
        } else {
            let delay = Duration::from_nanos(allow_at - now);
            match throttle {
                Some((max_delay, queue)) if delay <= max_delay && waiting < queue => {
                    tat = next;
                    decision = Decision {
                        allowed: true,
                        delay,
                        remaining: 0,
                        reset: Duration::from_nanos(next - now),
                        limit: self.burst + 1,
                    };
                }
                _ => {
                    return Decision {
                        allowed: false,
                        delay: Duration::ZERO,
                        remaining: 0,
                        reset: delay,
                        limit: self.burst + 1,
                    }
                }
            }
        }
        let waiting = waiting + u32::from(!decision.delay.is_zero());
        match shard.buckets.get_mut(key) {
            Some(bucket) => {
                bucket.tat = tat;
                bucket.waiting = waiting;
            }
            None => {
                self.make_room(&mut shard, now);
                shard
                    .buckets
                    .insert(key.to_owned(), Bucket { tat, waiting });
            }
        }
        decision
    }

    /// The state of `key` without counting a request.
    pub fn peek(&self, key: &str) -> Decision {
        let now = self.now();
        let shard = crate::lock(self.shard(key));
        let tat = shard.buckets.get(key).map_or(now, |b| b.tat.max(now));
        Decision {
            allowed: true,
            delay: Duration::ZERO,
            remaining: (self.tolerance + self.interval)
                .saturating_sub(tat - now)
                .checked_div(self.interval)
                .unwrap_or(0),
            reset: Duration::from_nanos(tat - now),
            limit: self.burst + 1,
        }
    }

    /// Requests allowed at once after one that moved the TAT to `tat`.
    fn remaining(&self, now: u64, tat: u64) -> u64 {
        (self.tolerance + self.interval)
            .saturating_sub(tat.saturating_sub(now))
            .checked_div(self.interval)
            .unwrap_or(0)
    }

    /// Drops idle buckets now and then; when the shard is full, the bucket
    /// whose TAT is oldest (the fullest) makes room.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        let due = now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY.as_nanos() as u64;
        if due || shard.buckets.len() >= self.max_keys_per_shard {
            shard.last_sweep = now;
            shard.buckets.retain(|_, b| b.tat > now || b.waiting > 0);
        }
        if shard.buckets.len() >= self.max_keys_per_shard {
            let oldest = shard
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.tat)
                .map(|(key, _)| key.clone());
            if let Some(key) = oldest {
                shard.buckets.remove(&key);
            }
        }
    }

    /// A throttled request stops waiting on `key`.
    fn done_waiting(&self, key: &str) {
        let mut shard = crate::lock(self.shard(key));
        if let Some(bucket) = shard.buckets.get_mut(key) {
            bucket.waiting = bucket.waiting.saturating_sub(1);
        }
    }

    /// Buckets held now.
    pub fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::lock(s).buckets.len())
            .sum()
    }
}

/// A throttled request's place in its bucket's queue, given back when
/// the request goes on or is dropped while it waits.
pub struct Waiting<'a> {
    /// The limiter.
    pub gcra: &'a Gcra,
    /// The bucket's key.
    pub key: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gcra.done_waiting(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 5, DEFAULT_MAX_KEYS);
        let passed = (0..20).filter(|_| gcra.check("k", None).allowed).count();
        assert_eq!(passed, 6, "burst 5 plus one");
        let refused = gcra.check("k", None);
        assert!(!refused.allowed);
        assert!(refused.reset <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(gcra.check("k", None).allowed);
        assert!(!gcra.check("k", None).allowed);
        // Other keys have their own bucket.
        assert!(gcra.check("other", None).allowed);
        tokio::time::advance(Duration::from_secs(1)).await;
        let full = gcra.peek("k");
        assert_eq!((full.remaining, full.limit), (6, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_reserves_slots_within_the_bounds() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 0, DEFAULT_MAX_KEYS);
        let throttle = Some((Duration::from_millis(350), 100));
        let delays: Vec<_> = (0..6).map(|_| gcra.check("k", throttle)).collect();
        assert!(delays[..4].iter().all(|d| d.allowed));
        assert_eq!(delays[3].delay, Duration::from_millis(300));
        assert!(!delays[4].allowed, "beyond max_delay");
        let gcra = Gcra::new(10, Duration::from_secs(1), 0, DEFAULT_MAX_KEYS);
        let throttle = Some((Duration::from_secs(5), 2));
        let passed = (0..6).filter(|_| gcra.check("k", throttle).allowed).count();
        assert_eq!(passed, 3, "one at once, two queued");
        {
            let _waiting = Waiting {
                gcra: &gcra,
                key: "k".into(),
            };
        }
        assert!(gcra.check("k", throttle).allowed, "a place freed");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_bounded_and_idle_ones_dropped() {
        let gcra = Gcra::new(1, Duration::from_secs(60), 0, SHARDS * 4);
        for i in 0..1000 {
            gcra.check(&format!("k{i}"), None);
        }
        assert!(gcra.buckets() <= SHARDS * 4);
        tokio::time::advance(Duration::from_secs(61)).await;
        for i in 0..SHARDS * 8 {
            gcra.check(&format!("n{i}"), None);
        }
        assert!(gcra.buckets() <= SHARDS * 4);
    }
}
