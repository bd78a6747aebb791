//! The tap's feed: finished requests, offered to the admin API's `GET /tap`
//! streams. The telemetry layer publishes only while at least one tap is
//! connected (one atomic load per request otherwise), into a bounded
//! broadcast that never waits: a tap that falls behind loses the oldest
//! events and is told how many.
//! Reads: nothing. Writes: [`TapEvent`]s to every subscriber.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesh_api::admin::TapEvent;
use tokio::sync::broadcast;

/// Events a tap may fall behind by before it skips.
const BACKLOG: usize = 1024;

/// The broadcast of finished requests.
pub struct Tap {
    tx: broadcast::Sender<Arc<TapEvent>>,
    taps: Arc<AtomicUsize>,
}

impl Default for Tap {
    fn default() -> Self {
        Self::with_backlog(BACKLOG)
    }
}

impl Tap {
    /// A feed whose subscribers may fall `backlog` events behind.
    pub fn with_backlog(backlog: usize) -> Self {
        Self {
            tx: broadcast::channel(backlog.max(1)).0,
            taps: Arc::default(),
        }
    }

    /// Whether any tap is connected: the only cost on the data path without one.
    pub fn is_active(&self) -> bool {
        self.taps.load(Ordering::Relaxed) > 0
    }

    /// Offers `event` to every tap; never waits.
    pub fn publish(&self, event: TapEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new tap; the feed is active until it is dropped.
    pub fn subscribe(&self) -> Subscription {
        self.taps.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            taps: self.taps.clone(),
        }
    }
}

/// One connected tap.
pub struct Subscription {
    /// The events; `Lagged(n)` when `n` were lost.
    pub rx: broadcast::Receiver<Arc<TapEvent>>,
    taps: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_only_to_connected_taps_and_lagging_ones_skip() {
        let tap = Tap::with_backlog(2);
        assert!(!tap.is_active());
        let mut sub = tap.subscribe();
        assert!(tap.is_active());
        for status in [200, 201, 202] {
            tap.publish(TapEvent {
                status,
                ..TapEvent::default()
            });
        }
        assert!(matches!(
            sub.rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert_eq!(sub.rx.recv().await.map(|e| e.status).ok(), Some(201));
        drop(sub);
        assert!(!tap.is_active());
    }
}
