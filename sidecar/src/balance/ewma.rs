//! Peak-EWMA latency (as in Finagle and Linkerd): a new sample above the
//! estimate replaces it at once (peaks are believed immediately), a sample
//! below it is blended in with a weight that grows with the time since the
//! last sample, so the estimate decays toward recent latency over `DECAY`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How fast the estimate forgets: after this long, old samples weigh ~37%.
const DECAY: Duration = Duration::from_secs(10);

/// What a fresh endpoint is assumed to cost, so new endpoints get tried.
const INITIAL: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct PeakEwma {
    state: Mutex<(f64, Instant)>,
}

impl PeakEwma {
    pub fn new() -> Self {
        Self {
            state: Mutex::new((INITIAL.as_secs_f64(), Instant::now())),
        }
    }

    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_secs_f64();
        let mut state = crate::lock(&self.state);
        let (estimate, at) = *state;
        let next = if sample > estimate {
            sample
        } else {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let keep = (-elapsed / DECAY.as_secs_f64()).exp();
            estimate * keep + sample * (1.0 - keep)
        };
        *state = (next, now);
    }

    pub fn estimate(&self) -> Duration {
        Duration::from_secs_f64(crate::lock(&self.state).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peaks_at_once_and_decays_over_time() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(100), Instant::now());
        assert_eq!(ewma.estimate(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(1)).await;
        ewma.observe(Duration::from_millis(10), Instant::now());
        let after_1s = ewma.estimate();
        assert!(
            after_1s > Duration::from_millis(80) && after_1s < Duration::from_millis(100),
            "{after_1s:?}"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        ewma.observe(Duration::from_millis(10), Instant::now());
        assert!(ewma.estimate() < Duration::from_millis(11));
    }
}
