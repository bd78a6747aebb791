//! The bridge across edge replicas, through `edge.redis`: a registry of
//! connections and delivery to the replica that holds one.
//!
//! Each connection is the hash `mesh:ws:conn:{id}` (`owner`: the replica
//! ID, `info`: its JSON info), with a TTL refreshed while it lives and
//! deleted when it ends. Each replica subscribes, on a dedicated
//! connection, to `mesh:ws:replica:{replica}`; a push or close for a
//! connection held elsewhere is published there as JSON
//! (`{"op": "push", "id": .., "text" | "base64": ..}`,
//! `{"op": "close", "id": .., "code": .., "reason": ..}`).
//! Redis down: local connections still work; remote ones answer 503.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, Instrument};

use super::registry::{hub, CloseRequest, Record};
use crate::policy::rate_limit::redis::{encode, parse, request, RedisAddr, RedisError, Value};
use crate::translate::grpc_json::status::{base64_decode, base64_encode};

/// A connection's registry entry lives this long without a refresh.
const ENTRY_TTL_SECS: u64 = 90;
/// How often live connections' entries are refreshed.
const REFRESH: Duration = Duration::from_secs(30);
/// Reconnection delay of the subscriber.
const RESUBSCRIBE: Duration = Duration::from_millis(200);
/// Time to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The link of this replica to Redis.
pub struct RedisLink {
    /// Where Redis is.
    pub addr: RedisAddr,
    replica: Arc<str>,
    commands: tokio::sync::Mutex<Option<(TcpStream, BytesMut)>>,
}

/// What the owner of a connection is asked.
pub enum Remote {
    /// A message for the client.
    Push(Message),
    /// Close it.
    Close(CloseRequest),
}

fn conn_key(id: &str) -> String {
    format!("mesh:ws:conn:{id}")
}

fn channel(replica: &str) -> String {
    format!("mesh:ws:replica:{replica}")
}

impl RedisLink {
    /// Connects lazily; starts the subscriber and the refresher (they end
    /// when the link is dropped).
    pub fn start(addr: RedisAddr, replica: Arc<str>) -> Arc<Self> {
        let link = Arc::new(RedisLink {
            addr,
            replica,
            commands: tokio::sync::Mutex::new(None),
        });
        let span = tracing::info_span!("ws_bridge_redis", addr = %link.addr.host_port);
        tokio::spawn(subscribe_loop(Arc::downgrade(&link)).instrument(span.clone()));
        tokio::spawn(refresh_loop(Arc::downgrade(&link)).instrument(span));
        link
    }

    /// One command on the shared command connection.
    async fn command(&self, args: &[&[u8]]) -> Result<Value, RedisError> {
        let mut slot = self.commands.lock().await;
        if slot.is_none() {
            let mut stream = connect(&self.addr.host_port).await?;
            let mut buf = BytesMut::with_capacity(1024);
            if self.addr.db != 0 {
                let db = self.addr.db.to_string();
                request(&mut stream, &mut buf, &[b"SELECT", db.as_bytes()]).await?;
            }
            *slot = Some((stream, buf));
        }
        let Some((stream, buf)) = slot.as_mut() else {
            return Err(RedisError::Down);
        };
        match request(stream, buf, args).await {
            Ok(Value::Error(err)) => Err(RedisError::Server(err)),
            Ok(value) => Ok(value),
            Err(err) => {
                *slot = None;
                Err(err)
            }
        }
    }

    /// Writes (or refreshes) a connection's entry.
    async fn put(&self, record: &Record) -> Result<(), RedisError> {
        let key = conn_key(&record.id);
        let info = record.info().to_string();
        let ttl = ENTRY_TTL_SECS.to_string();
        self.command(&[
            b"HSET",
            key.as_bytes(),
            b"owner",
            self.replica.as_bytes(),
            b"info",
            info.as_bytes(),
        ])
        .await?;
        self.command(&[b"EXPIRE", key.as_bytes(), ttl.as_bytes()])
            .await?;
        Ok(())
    }

    /// Registers a new connection, in the background.
    pub fn register(self: &Arc<Self>, record: &Arc<Record>) {
        let link = self.clone();
        let record = record.clone();
        let task = async move {
            if let Err(err) = link.put(&record).await {
                debug!(error = %err, "could not register the connection");
            }
        };
        tokio::spawn(task.in_current_span());
    }

    /// Removes an ended connection, in the background.
    pub fn unregister(self: &Arc<Self>, id: &str) {
        let link = self.clone();
        let key = conn_key(id);
        let task = async move {
            let _ = link.command(&[b"DEL", key.as_bytes()]).await;
        };
        tokio::spawn(task.in_current_span());
    }

    /// A connection's owner and info, if it is registered.
    pub async fn lookup(&self, id: &str) -> Result<Option<(String, Json)>, RedisError> {
        let key = conn_key(id);
        let reply = self
            .command(&[b"HMGET", key.as_bytes(), b"owner", b"info"])
            .await?;
        let Value::Array(Some(items)) = reply else {
            return Err(RedisError::Protocol);
        };
        let text = |value: Option<&Value>| match value {
            Some(Value::Bulk(Some(bytes))) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        };
        let (Some(owner), info) = (text(items.first()), text(items.get(1))) else {
            return Ok(None);
        };
        let info = info
            .and_then(|info| serde_json::from_str(&info).ok())
            .unwrap_or(Json::Null);
        Ok(Some((owner, info)))
    }

    /// Sends `what` for connection `id` to its owner; `false` when no
    /// replica listens there any more.
    pub async fn send(&self, owner: &str, id: &str, what: Remote) -> Result<bool, RedisError> {
        let payload = match what {
            Remote::Push(Message::Binary(bytes)) => {
                json!({ "op": "push", "id": id, "base64": base64_encode(&bytes) })
            }
            Remote::Push(Message::Text(text)) => {
                json!({ "op": "push", "id": id, "text": text.as_str() })
            }
            Remote::Push(_) => return Ok(true),
            Remote::Close(close) => {
                json!({ "op": "close", "id": id, "code": close.code, "reason": close.reason })
            }
        }
        .to_string();
        let channel = channel(owner);
        match self
            .command(&[b"PUBLISH", channel.as_bytes(), payload.as_bytes()])
            .await?
        {
            Value::Int(receivers) => Ok(receivers > 0),
            _ => Err(RedisError::Protocol),
        }
    }
}

async fn connect(host_port: &str) -> Result<TcpStream, RedisError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(host_port))
        .await
        .map_err(|_| RedisError::Timeout)?
        .map_err(|_| RedisError::Down)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Keeps live connections' entries from expiring.
async fn refresh_loop(link: Weak<RedisLink>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(link) = link.upgrade() else { return };
        for record in hub().records() {
            if link.put(&record).await.is_err() {
                break;
            }
        }
    }
}

/// Subscribes to this replica's channel and delivers what arrives, until
/// the link is dropped; reconnects after failures.
async fn subscribe_loop(link: Weak<RedisLink>) {
    loop {
        let Some((addr, channel)) = link
            .upgrade()
            .map(|l| (l.addr.host_port.clone(), channel(&l.replica)))
        else {
            return;
        };
        if let Err(err) = subscribe_once(&addr, &channel, &link).await {
            debug!(error = %err, "subscription lost");
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

async fn subscribe_once(
    addr: &str,
    channel: &str,
    link: &Weak<RedisLink>,
) -> Result<(), RedisError> {
    let mut stream = connect(addr).await?;
    stream
        .write_all(&encode(&[b"SUBSCRIBE", channel.as_bytes()]))
        .await
        .map_err(|_| RedisError::Down)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Some((value, used)) = parse(&buf)? {
            buf.advance(used);
            if let Some(payload) = message_payload(value) {
                deliver(&payload);
            }
        }
        if link.strong_count() == 0 {
            return Ok(());
        }
        let read = tokio::time::timeout(REFRESH, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(RedisError::Down),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

/// The payload of a pub/sub `message` push.
fn message_payload(value: Value) -> Option<Vec<u8>> {
    let Value::Array(Some(mut items)) = value else {
        return None;
    };
    if items.len() != 3 || items[0] != Value::Bulk(Some(b"message".to_vec())) {
        return None;
    }
    match items.pop() {
        Some(Value::Bulk(Some(payload))) => Some(payload),
        _ => None,
    }
}

/// Applies a published push or close to a local connection.
fn deliver(payload: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Json>(payload) else {
        return;
    };
    let Some(id) = json.get("id").and_then(Json::as_str) else {
        return;
    };
    let hub = hub();
    match json.get("op").and_then(Json::as_str) {
        Some("push") => {
            let text = json.get("text").and_then(Json::as_str);
            let bytes = json
                .get("base64")
                .and_then(Json::as_str)
                .and_then(|b| base64_decode(b.as_bytes()));
            let message = match (text, bytes) {
                (Some(text), _) => Message::text(text),
                (None, Some(bytes)) => Message::binary(bytes),
                (None, None) => return,
            };
            hub.deliver(id, message);
        }
        Some("close") => {
            let code = json
                .get("code")
                .and_then(Json::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(1000);
            let reason = json.get("reason").and_then(Json::as_str).unwrap_or("");
            let request = CloseRequest {
                code,
                reason: reason.into(),
            };
            hub.close(id, request);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_messages_yield_their_payload() {
        let push = Value::Array(Some(vec![
            Value::Bulk(Some(b"message".to_vec())),
            Value::Bulk(Some(b"mesh:ws:replica:a".to_vec())),
            Value::Bulk(Some(b"{}".to_vec())),
        ]));
        assert_eq!(message_payload(push), Some(b"{}".to_vec()));
        let ack = Value::Array(Some(vec![
            Value::Bulk(Some(b"subscribe".to_vec())),
            Value::Bulk(Some(b"mesh:ws:replica:a".to_vec())),
            Value::Int(1),
        ]));
        assert_eq!(message_payload(ack), None);
    }
}
