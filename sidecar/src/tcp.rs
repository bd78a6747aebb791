//! Opaque TCP: bytes relayed both ways between a client and an endpoint,
//! with half-close passed through (a client's FIN reaches the endpoint
//! while the endpoint may go on answering). Also used to splice upgraded
//! HTTP connections (WebSocket) and CONNECT tunnels. Each opaque
//! connection served from a listener gets an access log line when it closes.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Relays until both directions end; returns bytes (client→endpoint, endpoint→client).
pub async fn relay<A, B>(mut client: A, mut endpoint: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut client, &mut endpoint).await {
        Ok(counts) => counts,
        Err(err) => {
            debug!(error = %err, "opaque relay ended with an error");
            (0, 0)
        }
    }
}

/// [`relay`] when the byte counts do not matter.
pub async fn splice<A, B>(client: A, endpoint: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    relay(client, endpoint).await;
}

/// Serves an opaque connection from `listener`: one endpoint of `cluster`,
/// bytes both ways; then its access log line.
pub async fn serve<I>(
    client: I,
    cluster: &crate::cluster::Cluster,
    runtime: &crate::stack::Runtime,
    listener: &std::sync::Arc<str>,
    conn: &crate::http::ConnInfo,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let started = std::time::SystemTime::now();
    let start = tokio::time::Instant::now();
    let outcome = connect_and_relay(client, cluster, &runtime.metrics, listener).await;
    crate::telemetry::access_log::log_tcp(
        &runtime.metrics,
        &runtime.settings.load(),
        crate::telemetry::access_log::TcpConnection {
            conn,
            upstream: cluster.name(),
            started,
            duration: start.elapsed(),
            endpoint: outcome.endpoint,
            attempts: outcome.attempts,
            received: outcome.received,
            sent: outcome.sent,
            error: outcome.error,
        },
    );
}

/// What became of an opaque connection.
#[derive(Default)]
struct Relayed {
    endpoint: Option<std::net::SocketAddr>,
    attempts: u32,
    received: u64,
    sent: u64,
    /// Why no endpoint took it, as an `x-mesh-error` reason.
    error: Option<&'static str>,
}

async fn connect_and_relay<I>(
    client: I,
    cluster: &crate::cluster::Cluster,
    metrics: &crate::telemetry::Metrics,
    listener: &std::sync::Arc<str>,
) -> Relayed
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    use crate::connect::ConnectError;
    use crate::errors::Reason;
    use crate::resilience::outlier::{observe, Outcome};
    let mut relayed = Relayed::default();
    // Nothing has been relayed before a connect succeeds, so a failed connect
    // is tried again on another endpoint: the client never sees it.
    let attempts = 1 + cluster.settings.resilience.retry.attempts;
    let mut tried = Vec::new();
    for attempt in 1..=attempts {
        let Some(endpoint) = cluster.balancer.pick_avoiding(&tried, None) else {
            debug!(upstream = %cluster.name(), "no endpoint for opaque connection");
            relayed.error = Some(Reason::NoHealthyEndpoints.as_str());
            return relayed;
        };
        relayed.endpoint = Some(endpoint.addr);
        relayed.attempts = attempt;
        tried.push(endpoint.addr);
        let _active = endpoint.start();
        let connected = cluster.pool.connect_opaque(&endpoint).await;
        // The proxy's own connection limits say nothing about the endpoint.
        let outcome = match &connected {
            Ok(_) => Some(Outcome::Success),
            Err(ConnectError::Overflow) => None,
            Err(_) => Some(Outcome::ConnectFailure),
        };
        let outlier = &cluster.settings.resilience.outlier;
        if outcome.is_some_and(|o| observe(&cluster.balancer, &endpoint, o, outlier)) {
            metrics.resilience(cluster.name(), "ejected");
        }
        match connected {
            Ok((upstream, _guard)) => {
                let (received, sent) = relay(client, upstream).await;
                metrics.tcp_bytes(listener, received, sent);
                relayed.received = received;
                relayed.sent = sent;
                relayed.error = None;
                return relayed;
            }
            Err(ConnectError::Overflow) => {
                debug!(upstream = %cluster.name(), "opaque connection over the limit");
                relayed.error = Some(Reason::CircuitOpen.as_str());
                return relayed;
            }
            Err(err) => {
                debug!(endpoint = %endpoint.addr, error = %err, "opaque connect failed");
                if attempt < attempts {
                    metrics.resilience(cluster.name(), "connect_failure");
                }
                let err: crate::BoxError = Box::new(err);
                relayed.error = Some(crate::errors::reason(&err).as_str());
            }
        }
    }
    relayed
}
