//! The bridged connections of this process: their send queues, close
//! signals and info, for the connections API, the admin API and metrics.
//! One registry per process ([`hub`]); with `edge.redis` it also holds the
//! link to the other replicas ([`super::redis`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::redis::RedisLink;
use crate::config::Settings;
use crate::policy::rate_limit::redis::RedisAddr;

/// Why a session is asked to close: a close code and reason.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// The close code.
    pub code: u16,
    /// The reason.
    pub reason: String,
}

/// A live connection: what the outside may do to it.
#[derive(Clone)]
pub struct Handle {
    /// Its send queue.
    pub out: mpsc::Sender<Message>,
    /// Asks it to close.
    pub close: mpsc::Sender<CloseRequest>,
    /// What it says about itself.
    pub record: Arc<Record>,
}

/// A connection's info.
#[derive(Debug)]
pub struct Record {
    /// Its ID.
    pub id: Arc<str>,
    /// The edge route's name.
    pub route: Arc<str>,
    /// When it was accepted.
    pub connected_at: SystemTime,
    /// Last frame from the client, ms since the epoch.
    pub last_active: AtomicU64,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// The authenticated caller (consumer, `sub` or mTLS identity).
    pub identity: Option<String>,
}

impl Record {
    /// Marks client activity now.
    pub fn touch(&self) {
        self.last_active
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// The info the connections API and the admin API show.
    pub fn info(&self) -> Value {
        json!({
            "id": &*self.id,
            "route": &*self.route,
            "connected_at": rfc3339_ms(unix_ms(self.connected_at)),
            "last_active": rfc3339_ms(self.last_active.load(Ordering::Relaxed)),
            "source_ip": self.source_ip.map(|ip| ip.to_string()),
            "identity": self.identity,
        })
    }
}

/// What became of a message for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued.
    Queued,
    /// No such connection (any more).
    Gone,
    /// The queue was full: the connection is being closed with 1013.
    SlowReader,
}

/// The bridge's metrics (`mesh_ws_bridge_*`).
#[derive(Clone, Default)]
pub struct BridgeMetrics {
    /// Open bridged connections.
    pub open: Gauge,
    /// Messages by direction (`in`: from clients, `out`: to clients).
    pub messages: Family<DirectionLabels, Counter>,
    /// Closes by code.
    pub closes: Family<CodeLabels, Counter>,
    /// Slow readers closed (1013).
    pub slow_readers: Counter,
}

/// `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `in` or `out`.
    pub direction: &'static str,
}

/// `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The close code.
    pub code: u16,
}

impl BridgeMetrics {
    /// Registers the families under `registry` (prefixed `mesh_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ws_bridge_connections_open",
            "Open bridged WebSocket connections",
            self.open.clone(),
        );
        registry.register(
            "ws_bridge_messages",
            "Bridged WebSocket messages, by direction (in, out)",
            self.messages.clone(),
        );
        registry.register(
            "ws_bridge_closes",
            "Bridged WebSocket connections closed, by close code",
            self.closes.clone(),
        );
        registry.register(
            "ws_bridge_slow_readers",
            "Bridged WebSocket clients closed because their send queue overflowed (1013)",
            self.slow_readers.clone(),
        );
    }

    /// Counts a message.
    pub fn message(&self, direction: &'static str) {
        self.messages
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }
}

/// The process's bridged connections.
pub struct Hub {
    local: Mutex<HashMap<Arc<str>, Handle>>,
    /// The metrics.
    pub metrics: BridgeMetrics,
    /// This replica's ID on Redis.
    pub replica: Arc<str>,
    redis: Mutex<Option<Arc<RedisLink>>>,
}

/// The registry of this process.
pub fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        local: Mutex::new(HashMap::new()),
        metrics: BridgeMetrics::default(),
        replica: random_id().into(),
        redis: Mutex::new(None),
    })
}

impl Hub {
    /// The Redis link for the running `edge.redis`, started on first use.
    pub fn redis(&self, settings: &ArcSwap<Settings>) -> Option<Arc<RedisLink>> {
        let settings = settings.load();
        let addr: &RedisAddr = settings.edge.as_ref()?.rate_limits.redis.as_ref()?;
        let mut link = crate::lock(&self.redis);
        match &*link {
            Some(current) if current.addr == *addr => Some(current.clone()),
            _ => {
                let started = RedisLink::start(addr.clone(), self.replica.clone());
                *link = Some(started.clone());
                Some(started)
            }
        }
    }

    /// Adds a connection.
    pub fn insert(&self, handle: Handle) {
        let id = handle.record.id.clone();
        crate::lock(&self.local).insert(id, handle);
        self.metrics.open.inc();
    }

    /// Removes a connection.
    pub fn remove(&self, id: &str) {
        if crate::lock(&self.local).remove(id).is_some() {
            self.metrics.open.dec();
        }
    }

    /// A local connection.
    pub fn get(&self, id: &str) -> Option<Handle> {
        crate::lock(&self.local).get(id).cloned()
    }

    /// The local connections' records, oldest first.
    pub fn records(&self) -> Vec<Arc<Record>> {
        let mut records: Vec<Arc<Record>> = crate::lock(&self.local)
            .values()
            .map(|handle| handle.record.clone())
            .collect();
        records.sort_by_key(|record| record.connected_at);
        records
    }

    /// Queues `message` for local connection `id`; a full queue closes it
    /// with 1013.
    pub fn deliver(&self, id: &str, message: Message) -> Delivery {
        match self.get(id) {
            None => Delivery::Gone,
            Some(handle) => handle.send(message, &self.metrics),
        }
    }

    /// Asks local connection `id` to close.
    pub fn close(&self, id: &str, request: CloseRequest) -> bool {
        self.get(id)
            .is_some_and(|handle| handle.close.try_send(request).is_ok())
    }
}

impl Handle {
    /// Queues `message`; a full queue closes the connection with 1013.
    pub fn send(&self, message: Message, metrics: &BridgeMetrics) -> Delivery {
        match self.out.try_send(message) {
            Ok(()) => {
                metrics.message("out");
                Delivery::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let request = CloseRequest {
                    code: 1013,
                    reason: "send queue full".into(),
                };
                if self.close.try_send(request).is_ok() {
                    metrics.slow_readers.inc();
                }
                Delivery::SlowReader
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

/// A fresh connection ID: 128 random bits, hex.
pub fn random_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-24T15:13:35.123Z`.
fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_964_015_123), "2026-11-29T14:53:35.123Z");
    }

    #[tokio::test]
    async fn a_full_send_queue_closes_the_connection_as_a_slow_reader() {
        let (out, _out_rx) = mpsc::channel(1);
        let (close, mut close_rx) = mpsc::channel(4);
        let handle = Handle {
            out,
            close,
            record: Arc::new(Record {
                id: "a".into(),
                route: "r".into(),
                connected_at: SystemTime::now(),
                last_active: AtomicU64::new(0),
                source_ip: None,
                identity: None,
            }),
        };
        let metrics = BridgeMetrics::default();
        let send = |text: &str| handle.send(Message::text(text), &metrics);
        assert_eq!(send("one"), Delivery::Queued);
        assert_eq!(send("two"), Delivery::SlowReader);
        assert_eq!(close_rx.try_recv().map(|r| r.code).ok(), Some(1013));
        assert_eq!(metrics.slow_readers.get(), 1);
    }
}
