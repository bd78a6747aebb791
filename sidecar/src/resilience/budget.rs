//! The retry budget: retries may add at most `ratio` of the requests of the
//! last ten seconds, plus `min_per_second` × 10 so a quiet cluster can still
//! retry. A dead cluster therefore sees at most `(1 + ratio)` × requests +
//! the floor, never a retry storm.

use std::sync::Mutex;

use tokio::time::Instant;

/// Window length, in one-second buckets.
const SECONDS: usize = 10;

/// One cluster's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// The second (since `start`) that `buckets[current]` counts.
    second: u64,
    current: usize,
    /// (requests, retries) per second.
    buckets: [(u32, u32); SECONDS],
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio,
            floor: f64::from(min_per_second) * SECONDS as f64,
            window: Mutex::new(Window {
                start: Instant::now(),
                second: 0,
                current: 0,
                buckets: [(0, 0); SECONDS],
            }),
        }
    }

    /// Counts a request (a first attempt).
    pub fn deposit(&self) {
        let mut window = crate::lock(&self.window);
        window.advance();
        let current = window.current;
        window.buckets[current].0 = window.buckets[current].0.saturating_add(1);
    }

    /// Takes one retry from the budget, if it allows one.
    pub fn try_withdraw(&self) -> bool {
        let mut window = crate::lock(&self.window);
        window.advance();
        let (requests, retries) = window
            .buckets
            .iter()
            .fold((0u64, 0u64), |(q, r), (bq, br)| {
                (q + u64::from(*bq), r + u64::from(*br))
            });
        if (retries as f64) < self.ratio * requests as f64 + self.floor {
            let current = window.current;
            window.buckets[current].1 = window.buckets[current].1.saturating_add(1);
            true
        } else {
            false
        }
    }
}

impl Window {
    /// Moves to the current second, clearing the buckets that fell out.
    fn advance(&mut self) {
        let now = crate::clock::now()
            .saturating_duration_since(self.start)
            .as_secs();
        let steps = now.saturating_sub(self.second).min(SECONDS as u64);
        for _ in 0..steps {
            self.current = (self.current + 1) % SECONDS;
            self.buckets[self.current] = (0, 0);
        }
        self.second = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_by_ratio_plus_floor() {
        let budget = RetryBudget::new(0.2, 1);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..1000).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20 + 10, "20% of 100 requests plus 1/s over 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_old_traffic() {
        let budget = RetryBudget::new(0.5, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !budget.try_withdraw(),
            "old requests no longer fund retries"
        );
        budget.deposit();
        budget.deposit();
        assert!(budget.try_withdraw());
    }
}
