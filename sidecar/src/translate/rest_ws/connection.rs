//! One pooled WebSocket connection: requests register their correlation id
//! and hand their message to the connection's task; the task writes
//! messages, reads replies and hands each to the request waiting for its
//! id, pings, and ends when the upstream closes, stops answering pings,
//! the connection is idle for `pool.idle`, or the pool is dropped. Its
//! waiting requests then fail with `ConnectionLost`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use super::{PoolSettings, RestWsError};
use crate::balance::ActiveGuard;
use crate::lock;

/// Messages queued for the task before senders wait.
const QUEUE: usize = 64;

/// Requests waiting for their reply, by correlation id.
type Waiting = Mutex<HashMap<String, oneshot::Sender<Value>>>;

/// A pooled connection, as requests see it.
pub(super) struct Connection {
    outgoing: mpsc::Sender<String>,
    waiting: Arc<Waiting>,
}

impl Connection {
    /// Starts the task for an open WebSocket; `active` counts the
    /// connection on its endpoint while it lives.
    pub(super) fn start<S>(
        ws: WebSocketStream<S>,
        correlation: Arc<str>,
        settings: PoolSettings,
        active: ActiveGuard,
    ) -> Arc<Connection>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (outgoing, queue) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Waiting::default());
        let task = Task {
            ws,
            queue,
            waiting: waiting.clone(),
            correlation,
            settings,
        };
        let metrics = super::metrics();
        metrics.opened.inc();
        metrics.open.inc();
        tokio::spawn(
            async move {
                let _active = active;
                task.run().await;
                metrics.open.dec();
            }
            .instrument(tracing::debug_span!("rest_ws_connection")),
        );
        Arc::new(Connection { outgoing, waiting })
    }

    /// Whether the task still runs.
    pub(super) fn is_alive(&self) -> bool {
        !self.outgoing.is_closed()
    }

    /// Requests waiting on it now.
    pub(super) fn load(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Sends `text` (carrying correlation `id`) and waits for the reply
    /// with that id; the caller bounds the wait.
    pub(super) async fn call(&self, id: String, text: String) -> Result<Value, RestWsError> {
        let (reply, answered) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), reply);
        // Removes the entry however the wait ends (reply, timeout, client gone).
        let _entry = Entry {
            waiting: &self.waiting,
            id,
        };
        self.outgoing
            .send(text)
            .await
            .map_err(|_| RestWsError::ConnectionLost)?;
        answered.await.map_err(|_| RestWsError::ConnectionLost)
    }
}

/// A waiting request's entry, removed when dropped.
struct Entry<'a> {
    waiting: &'a Waiting,
    id: String,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.id);
    }
}

/// The connection's task: the WebSocket and what it serves.
struct Task<S> {
    ws: WebSocketStream<S>,
    queue: mpsc::Receiver<String>,
    waiting: Arc<Waiting>,
    correlation: Arc<str>,
    settings: PoolSettings,
}

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves the connection until it ends, then fails the waiting requests.
    async fn run(mut self) {
        let ending = self.serve().await;
        debug!(ending, "WebSocket connection ends");
        // Closed before the waiting are dropped: a request that registers
        // after this finds the queue closed.
        self.queue.close();
        lock(&self.waiting).clear();
        let _ = self.ws.close(None).await;
    }

    /// Writes, reads, pings; returns why it stopped.
    async fn serve(&mut self) -> &'static str {
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.settings.ping, self.settings.ping);
        let mut heard = true;
        let mut active_at = Instant::now();
        loop {
            let idle = lock(&self.waiting).is_empty();
            tokio::select! {
                message = self.queue.recv() => {
                    let Some(text) = message else { return "pool dropped" };
                    active_at = Instant::now();
                    if self.ws.send(Message::text(text)).await.is_err() {
                        return "write failed";
                    }
                }
                frame = self.ws.next() => {
                    heard = true;
                    match frame {
                        Some(Ok(Message::Text(text))) => self.deliver(text.as_bytes()),
                        Some(Ok(Message::Binary(bytes))) => self.deliver(&bytes),
                        Some(Ok(Message::Close(_))) | None => return "closed by the upstream",
                        Some(Err(_)) => return "read failed",
                        Some(Ok(_)) => continue,
                    }
                    active_at = Instant::now();
                }
                _ = ping.tick() => {
                    if !heard {
                        return "no answer to the last ping";
                    }
                    heard = false;
                    if self.ws.send(Message::Ping(Default::default())).await.is_err() {
                        return "write failed";
                    }
                }
                () = tokio::time::sleep_until(active_at + self.settings.idle), if idle => {
                    return "idle";
                }
            }
        }
    }

    /// Hands a reply to the request waiting for its id; others are dropped.
    fn deliver(&self, text: &[u8]) {
        let Ok(reply) = serde_json::from_slice::<Value>(text) else {
            debug!("a WebSocket message that is not JSON is dropped");
            return;
        };
        let id = match reply.get(&*self.correlation) {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => {
                debug!("a WebSocket message without a correlation id is dropped");
                return;
            }
        };
        match lock(&self.waiting).remove(&id) {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => debug!(%id, "a reply nobody waits for is dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::balance::EndpointState;
    use crate::discovery::Endpoint;

    /// A connection over an in-memory pipe, and the upstream's end.
    async fn pair(
        idle: Duration,
        ping: Duration,
    ) -> (Arc<Connection>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let endpoint = Arc::new(EndpointState::new(&Endpoint {
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
        }));
        let settings = PoolSettings {
            size: 1,
            idle,
            ping,
        };
        let connection = Connection::start(client, Arc::from("id"), settings, endpoint.start());
        (connection, server)
    }

    /// The next text message the upstream reads, as JSON.
    async fn read(server: &mut WebSocketStream<DuplexStream>) -> Value {
        loop {
            if let Some(Ok(Message::Text(text))) = server.next().await {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn replies_in_any_order_reach_their_own_request() {
        let (connection, mut server) =
            pair(Duration::from_secs(60), Duration::from_secs(3600)).await;
        let first = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .call("1".into(), json!({"id": "1"}).to_string())
                    .await
            }
        });
        let second = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .call("2".into(), json!({"id": "2"}).to_string())
                    .await
            }
        });
        read(&mut server).await;
        read(&mut server).await;
        assert_eq!(connection.load(), 2);
        // Numbers match string ids; an unknown id is dropped.
        server
            .send(Message::text(r#"{"id": 2, "n": "two"}"#))
            .await
            .unwrap();
        server.send(Message::text(r#"{"id": "9"}"#)).await.unwrap();
        server
            .send(Message::text(r#"{"id": "1", "n": "one"}"#))
            .await
            .unwrap();
        assert_eq!(first.await.unwrap().unwrap()["n"], "one");
        assert_eq!(second.await.unwrap().unwrap()["n"], "two");
        assert_eq!(connection.load(), 0);
        assert!(connection.is_alive());
    }

    #[tokio::test]
    async fn a_closed_connection_fails_its_waiting_requests() {
        let (connection, mut server) =
            pair(Duration::from_secs(60), Duration::from_secs(3600)).await;
        let waiting = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .call("1".into(), json!({"id": "1"}).to_string())
                    .await
            }
        });
        read(&mut server).await;
        server.close(None).await.unwrap();
        let result = waiting.await.unwrap();
        assert!(
            matches!(result, Err(RestWsError::ConnectionLost)),
            "{result:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while connection.is_alive() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_closes() {
        let (connection, mut server) =
            pair(Duration::from_millis(50), Duration::from_secs(3600)).await;
        let frame = tokio::time::timeout(Duration::from_secs(5), server.next()).await;
        assert!(
            matches!(frame, Ok(Some(Ok(Message::Close(_))) | None)),
            "{frame:?}"
        );
        assert!(!connection.is_alive());
    }

    #[tokio::test]
    async fn an_upstream_that_stops_answering_pings_is_dropped() {
        // The upstream end is never read: it answers no ping.
        let (connection, _server) = pair(Duration::from_secs(60), Duration::from_millis(30)).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while connection.is_alive() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }
}
