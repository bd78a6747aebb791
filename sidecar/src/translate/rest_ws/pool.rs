//! The route's WebSocket connections: per upstream cluster and WebSocket
//! path, `pool.size` slots, each holding at most one live connection.
//! A request takes an idle live connection, else opens one in a free
//! slot, else shares the least busy one; requests that pick the same
//! empty slot wait for one handshake. Dead connections are replaced on
//! demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::uri::Authority;
use http::{HeaderValue, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::connection::Connection;
use super::{PoolSettings, RestWsError};
use crate::cluster::Cluster;
use crate::connect::Wire;
use crate::forward::ForwardError;
use crate::{lock, BoxError};

/// WebSocket paths with connections per route and cluster; past it,
/// paths without live connections are forgotten, then new ones refused.
const MAX_PATHS: usize = 64;

/// Largest reply accepted from the upstream.
const MAX_REPLY: usize = 16 << 20;

/// Every pool of a route, by cluster and WebSocket path.
pub struct Pools {
    settings: PoolSettings,
    correlation: Arc<str>,
    pools: Mutex<HashMap<Arc<str>, ByPath>>,
}

/// A cluster's pools by WebSocket path.
type ByPath = HashMap<String, Arc<Pool>>;

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Pools {
    /// No connections yet; replies carry their id in `correlation`.
    pub fn new(settings: PoolSettings, correlation: Arc<str>) -> Self {
        Pools {
            settings,
            correlation,
            pools: Mutex::default(),
        }
    }

    /// The pool for `path` on `cluster`, made on first use.
    pub(super) fn get(&self, cluster: &Arc<str>, path: &str) -> Result<Arc<Pool>, RestWsError> {
        let mut pools = lock(&self.pools);
        let paths = pools.entry(cluster.clone()).or_default();
        if let Some(pool) = paths.get(path) {
            return Ok(pool.clone());
        }
        if paths.len() >= MAX_PATHS {
            paths.retain(|_, pool| pool.has_live());
        }
        if paths.len() >= MAX_PATHS {
            return Err(RestWsError::TooManyPaths);
        }
        let pool = Arc::new(Pool::new(self.settings, self.correlation.clone()));
        paths.insert(path.to_string(), pool.clone());
        Ok(pool)
    }
}

/// Where a pool's connections go.
pub(super) struct Upstream {
    /// The cluster whose endpoint takes the handshake.
    pub cluster: Arc<Cluster>,
    /// Sent as `Host`.
    pub authority: Authority,
    /// The WebSocket path.
    pub path: String,
}

/// The connections to one cluster and path.
pub(super) struct Pool {
    slots: Vec<Slot>,
    ids: AtomicU64,
    settings: PoolSettings,
    correlation: Arc<str>,
}

/// Room for one connection.
#[derive(Default)]
struct Slot {
    connection: Mutex<Option<Arc<Connection>>>,
    /// Held while a connection is being opened here.
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        lock(&self.connection)
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }

    fn is_opening(&self) -> bool {
        self.opening.try_lock().is_err()
    }
}

impl Pool {
    fn new(settings: PoolSettings, correlation: Arc<str>) -> Self {
        Pool {
            slots: (0..settings.size.max(1)).map(|_| Slot::default()).collect(),
            ids: AtomicU64::new(1),
            settings,
            correlation,
        }
    }

    /// A fresh correlation id.
    pub(super) fn next_id(&self) -> String {
        self.ids.fetch_add(1, Ordering::Relaxed).to_string()
    }

    fn has_live(&self) -> bool {
        self.slots.iter().any(|slot| slot.live().is_some())
    }

    /// A live connection: an idle one, else a new one in a free slot,
    /// else the least busy.
    pub(super) async fn connection(
        &self,
        upstream: &Upstream,
    ) -> Result<Arc<Connection>, BoxError> {
        let slot = self.choose();
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let _opening = slot.opening.lock().await;
        // Whoever held the lock may have opened it.
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let connection = self.open(upstream).await?;
        *lock(&slot.connection) = Some(connection.clone());
        Ok(connection)
    }

    /// The slot a request uses, in order of preference: a live idle
    /// connection, an empty slot nobody is opening, the least busy live
    /// connection, a slot being opened.
    fn choose(&self) -> &Slot {
        let mut free = None;
        let mut busiest: Option<(&Slot, usize)> = None;
        for slot in &self.slots {
            match slot.live() {
                Some(connection) => {
                    let load = connection.load();
                    if load == 0 {
                        return slot;
                    }
                    if busiest.is_none_or(|(_, least)| load < least) {
                        busiest = Some((slot, load));
                    }
                }
                None if free.is_none() && !slot.is_opening() => free = Some(slot),
                None => {}
            }
        }
        free.or(busiest.map(|(slot, _)| slot))
            .unwrap_or_else(|| self.opening_slot())
    }

    /// A slot being opened (every slot is, when nothing else is usable).
    fn opening_slot(&self) -> &Slot {
        let index = usize::try_from(self.ids.load(Ordering::Relaxed)).unwrap_or(0);
        &self.slots[index % self.slots.len()]
    }

    /// The handshake with an endpoint the cluster's balancer picks, then
    /// the connection's task.
    async fn open(&self, upstream: &Upstream) -> Result<Arc<Connection>, BoxError> {
        let endpoint = upstream
            .cluster
            .balancer
            .pick()
            .ok_or(ForwardError::NoEndpoints)?;
        let key = generate_key();
        let mut request = Request::new(crate::http::empty());
        *request.uri_mut() = Uri::try_from(upstream.path.as_str())?;
        let headers = request.headers_mut();
        headers.insert(HOST, HeaderValue::from_str(upstream.authority.as_str())?);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_str(&key)?);
        let mut response = upstream
            .cluster
            .pool
            .send(&endpoint, Wire::Http1, request)
            .await?;
        let accepted = response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
        if response.status() != StatusCode::SWITCHING_PROTOCOLS || !accepted {
            return Err(RestWsError::UpgradeRefused(response.status()).into());
        }
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(|_| RestWsError::ConnectionLost)?;
        let config = WebSocketConfig::default().max_message_size(Some(MAX_REPLY));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config))
                .await;
        Ok(Connection::start(
            ws,
            self.correlation.clone(),
            self.settings,
            endpoint.start(),
        ))
    }
}
