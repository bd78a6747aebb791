//! Global limits: a small RESP2 client over one pipelined TCP connection
//! to `edge.redis`, and the server-side script that decides and records a
//! request in one step, so replicas never race between a read and a write.
//!
//! The script counts a window per key: the first request of a window sets
//! the key's expiry to the window's length, later ones add to it while the
//! count stays within the limit; a refused request does not count. A
//! window therefore starts at a key's first request (no calendar
//! alignment; a month is 30 days). Read-only (cost 0) calls report the
//! remaining count for the admin API.
//!
//! One task owns the connection: it connects (with a timeout), loads the
//! script (`SCRIPT LOAD`, then `EVALSHA`; `EVAL` when the server answers
//! `NOSCRIPT`), writes queued commands in batches and matches replies in
//! order. When the connection fails it answers every waiting call with an
//! error, marks Redis down (`mesh_rate_limit_redis_up 0`) and reconnects
//! with a bounded backoff; while down, calls fail at once. The task ends
//! when the client (every limiter sharing it) is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

/// The window counter: KEYS[1] the bucket; ARGV[1] the count per window,
/// ARGV[2] the window in milliseconds, ARGV[3] the cost (0: read only).
/// Answers `{allowed, remaining, milliseconds until the window ends}`.
pub const SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = window end
if cost == 0 then
  return {1, math.max(limit - used, 0), ttl}
end
if used + cost > limit then
  return {0, math.max(limit - used, 0), ttl}
end
used = redis.call('INCRBY', KEYS[1], cost)
if used == cost or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {1, math.max(limit - used, 0), ttl}
";

/// Longest wait for one call's reply.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Calls queued for the connection at most.
const QUEUE: usize = 4096;
/// Largest bulk string or array accepted from the server.
const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1024;
const MAX_DEPTH: usize = 4;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Not connected, or the connection failed under the call.
    #[error("redis is unreachable")]
    Down,
    /// No answer in time.
    #[error("redis did not answer in time")]
    Timeout,
    /// The server answered with an error.
    #[error("redis error: {0}")]
    Server(String),
    /// The answer is not what the script returns.
    #[error("unexpected redis reply")]
    Protocol,
}

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$3\r\nfoo` (`None`: null).
    Bulk(Option<Vec<u8>>),
    /// `*2 …` (`None`: null).
    Array(Option<Vec<Value>>),
}

/// Where Redis is: `redis://host:port[/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// `host:port`.
    pub host_port: String,
    /// The database (`SELECT`), 0 by default.
    pub db: u32,
}

impl RedisAddr {
    /// Parses `redis://host:port[/db]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("expected redis://host:port[/db], got {url:?}"))?;
        let (host_port, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse::<u32>()
                    .map_err(|_| format!("database must be a number, got {db:?}"))?,
            ),
            None => (rest, 0),
        };
        if host_port.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or_else(|| format!("expected host:port, got {host_port:?}"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("expected host:port, got {host_port:?}"));
        }
        Ok(RedisAddr {
            host_port: host_port.to_owned(),
            db,
        })
    }
}

/// The health metrics of the Redis connection.
#[derive(Clone, Debug, Default)]
pub struct RedisMetrics {
    /// `mesh_rate_limit_redis_errors_total`.
    pub errors: Counter,
    /// `mesh_rate_limit_redis_up`.
    pub up: Gauge,
}

/// A call written to the connection, waiting for its reply: when it was
/// written, and where the reply goes.
type Pending = (
    tokio::time::Instant,
    oneshot::Sender<Result<Value, RedisError>>,
);

struct Call {
    command: Vec<u8>,
    reply: oneshot::Sender<Result<Value, RedisError>>,
}

/// A shared connection to Redis.
pub struct RedisClient {
    /// Where it connects.
    pub addr: RedisAddr,
    calls: mpsc::Sender<Call>,
    up: Arc<AtomicBool>,
    sha: Arc<Mutex<Option<String>>>,
    metrics: RedisMetrics,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("addr", &self.addr)
            .field("up", &self.is_up())
            .finish()
    }
}

impl RedisClient {
    /// A client for `addr`; its connection task starts at once (it needs a
    /// tokio runtime) and ends when the client is dropped.
    pub fn start(addr: RedisAddr, metrics: RedisMetrics) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let up = Arc::new(AtomicBool::new(false));
        let sha = Arc::new(Mutex::new(None));
        metrics.up.set(0);
        let conn = Connection {
            addr: addr.clone(),
            calls: rx,
            up: up.clone(),
            sha: sha.clone(),
            metrics: metrics.clone(),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let span = tracing::info_span!("redis", addr = %addr.host_port);
            handle.spawn(conn.run().instrument(span));
        }
        Arc::new(RedisClient {
            addr,
            calls: tx,
            up,
            sha,
            metrics,
        })
    }

    /// Whether the connection is established.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs the window script on `key`: `(allowed, remaining, until the window ends)`.
    pub async fn window(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<(bool, u64, Duration), RedisError> {
        let result = self.window_once(key, limit, window, cost).await;
        if result.is_err() {
            self.metrics.errors.inc();
        }
        result
    }

    async fn window_once(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<(bool, u64, Duration), RedisError> {
        if !self.is_up() {
            return Err(RedisError::Down);
        }
        let (limit, window, cost) = (
            limit.to_string(),
            window.as_millis().max(1).to_string(),
            cost.to_string(),
        );
        let sha = crate::lock(&self.sha).clone();
        let reply = match sha {
            Some(sha) => {
                let reply = self
                    .call(&[
                        b"EVALSHA",
                        sha.as_bytes(),
                        b"1",
                        key.as_bytes(),
                        limit.as_bytes(),
                        window.as_bytes(),
                        cost.as_bytes(),
                    ])
                    .await?;
                match reply {
                    Value::Error(e) if e.starts_with("NOSCRIPT") => None,
                    other => Some(other),
                }
            }
            None => None,
        };
        let reply = match reply {
            Some(reply) => reply,
            None => {
                self.call(&[
                    b"EVAL",
                    SCRIPT.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    limit.as_bytes(),
                    window.as_bytes(),
                    cost.as_bytes(),
                ])
                .await?
            }
        };
        match reply {
            Value::Array(Some(items)) => match items.as_slice() {
                [Value::Int(allowed), Value::Int(remaining), Value::Int(ttl)] => Ok((
                    *allowed == 1,
                    u64::try_from(*remaining).unwrap_or(0),
                    Duration::from_millis(u64::try_from(*ttl).unwrap_or(0)),
                )),
                _ => Err(RedisError::Protocol),
            },
            Value::Error(e) => Err(RedisError::Server(e)),
            _ => Err(RedisError::Protocol),
        }
    }

    /// Sends one command and waits for its reply, within [`CALL_TIMEOUT`].
    async fn call(&self, args: &[&[u8]]) -> Result<Value, RedisError> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .try_send(Call {
                command: encode(args),
                reply: tx,
            })
            .map_err(|_| RedisError::Down)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RedisError::Down),
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one value from the front of `buf`: `Ok(None)` when more bytes
/// are needed; the value and its length otherwise.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RedisError> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, RedisError> {
    if depth > MAX_DEPTH {
        return Err(RedisError::Protocol);
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err(RedisError::Protocol);
    };
    let line = std::str::from_utf8(line).map_err(|_| RedisError::Protocol)?;
    let head = end + 2;
    let number = || line.parse::<i64>().map_err(|_| RedisError::Protocol);
    match kind {
        b'+' => Ok(Some((Value::Simple(line.to_owned()), head))),
        b'-' => Ok(Some((Value::Error(line.to_owned()), head))),
        b':' => Ok(Some((Value::Int(number()?), head))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Value::Bulk(None), head)));
            }
            let len = usize::try_from(len).map_err(|_| RedisError::Protocol)?;
            if len > MAX_BULK {
                return Err(RedisError::Protocol);
            }
            if buf.len() < head + len + 2 {
                return Ok(None);
            }
            if &buf[head + len..head + len + 2] != b"\r\n" {
                return Err(RedisError::Protocol);
            }
            Ok(Some((
                Value::Bulk(Some(buf[head..head + len].to_vec())),
                head + len + 2,
            )))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Value::Array(None), head)));
            }
            let len = usize::try_from(len).map_err(|_| RedisError::Protocol)?;
            if len > MAX_ARRAY {
                return Err(RedisError::Protocol);
            }
            let mut items = Vec::with_capacity(len);
            let mut at = head;
            for _ in 0..len {
                match parse_at(&buf[at..], depth + 1)? {
                    Some((value, used)) => {
                        items.push(value);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(RedisError::Protocol),
    }
}

/// The task that owns the connection.
struct Connection {
    addr: RedisAddr,
    calls: mpsc::Receiver<Call>,
    up: Arc<AtomicBool>,
    sha: Arc<Mutex<Option<String>>>,
    metrics: RedisMetrics,
}

impl Connection {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    info!("redis connected");
                    backoff = BACKOFF_MIN;
                    self.set_up(true);
                    let ended = self.serve(stream).await;
                    self.set_up(false);
                    self.metrics.errors.inc();
                    if ended {
                        return;
                    }
                    warn!("redis connection lost");
                }
                Err(err) => {
                    debug!(error = %err, "redis connect failed");
                    self.metrics.errors.inc();
                }
            }
            // Fail calls at once while down; end when the client is gone.
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    () = &mut wake => break,
                    call = self.calls.recv() => match call {
                        Some(call) => { let _ = call.reply.send(Err(RedisError::Down)); }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.metrics.up.set(i64::from(up));
    }

    /// Connects, selects the database and loads the script.
    async fn connect(&self) -> Result<TcpStream, RedisError> {
        let mut stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr.host_port))
                .await
                .map_err(|_| RedisError::Timeout)?
                .map_err(|_| RedisError::Down)?;
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(4096);
        if self.addr.db != 0 {
            let db = self.addr.db.to_string();
            match request(&mut stream, &mut buf, &[b"SELECT", db.as_bytes()]).await? {
                Value::Simple(_) => {}
                Value::Error(e) => return Err(RedisError::Server(e)),
                _ => return Err(RedisError::Protocol),
            }
        }
        match request(
            &mut stream,
            &mut buf,
            &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()],
        )
        .await?
        {
            Value::Bulk(Some(sha)) => {
                let sha = String::from_utf8(sha).map_err(|_| RedisError::Protocol)?;
                *crate::lock(&self.sha) = Some(sha);
            }
            Value::Error(e) => return Err(RedisError::Server(e)),
            _ => return Err(RedisError::Protocol),
        }
        Ok(stream)
    }

    /// Pipelines calls until the connection fails (false) or the client is
    /// dropped (true).
    async fn serve(&mut self, stream: TcpStream) -> bool {
        let (mut read, mut write) = stream.into_split();
        let pending: Mutex<VecDeque<Pending>> = Mutex::new(VecDeque::new());
        let reader = async {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            loop {
                let n = match tokio::time::timeout(CALL_TIMEOUT, read.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => {
                        // A server that stops answering is as good as gone.
                        let oldest = crate::lock(&pending).front().map(|(at, _)| *at);
                        if oldest.is_some_and(|at| at.elapsed() > CALL_TIMEOUT * 4) {
                            return;
                        }
                        continue;
                    }
                };
                match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    match parse(&buf) {
                        Ok(Some((value, used))) => {
                            buf.advance(used);
                            if let Some((_, reply)) = crate::lock(&pending).pop_front() {
                                let _ = reply.send(Ok(value));
                            } else {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
        };
        let writer = async {
            let mut out = Vec::with_capacity(16 * 1024);
            loop {
                let Some(first) = self.calls.recv().await else {
                    return true;
                };
                out.clear();
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match self.calls.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                {
                    let mut pending = crate::lock(&pending);
                    let now = tokio::time::Instant::now();
                    for call in batch {
                        out.extend_from_slice(&call.command);
                        pending.push_back((now, call.reply));
                    }
                }
                if write.write_all(&out).await.is_err() {
                    return false;
                }
            }
        };
        let ended = tokio::select! {
            () = reader => false,
            ended = writer => ended,
        };
        for (_, reply) in crate::lock(&pending).drain(..) {
            let _ = reply.send(Err(RedisError::Down));
        }
        ended
    }
}

/// One command and its reply on a connection nothing else uses yet.
pub(crate) async fn request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    args: &[&[u8]],
) -> Result<Value, RedisError> {
    let exchange = async {
        stream
            .write_all(&encode(args))
            .await
            .map_err(|_| RedisError::Down)?;
        loop {
            if let Some((value, used)) = parse(buf)? {
                buf.advance(used);
                return Ok(value);
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Err(RedisError::Down),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| RedisError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_waits_for_more_bytes() {
        let reply = b"*3\r\n:1\r\n:99\r\n:10000\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        assert_eq!(
            value,
            Value::Array(Some(vec![Value::Int(1), Value::Int(99), Value::Int(10000)]))
        );
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap().unwrap().0,
            Value::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Value::Bulk(None));
        assert!(matches!(
            parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap().0,
            Value::Error(e) if e.starts_with("NOSCRIPT")
        ));
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(encode(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn parses_addresses() {
        let addr = RedisAddr::parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!((addr.host_port.as_str(), addr.db), ("127.0.0.1:6379", 2));
        assert_eq!(RedisAddr::parse("redis://cache:6379").unwrap().db, 0);
        for bad in [
            "cache:6379",
            "redis://cache",
            "redis://:1",
            "redis://a:0",
            "redis://a:1/x",
            "redis://u:p@a:1",
        ] {
            assert!(RedisAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
