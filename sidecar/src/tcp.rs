//! Opaque TCP: bytes relayed both ways between a client and an endpoint,
//! with half-close passed through (a client's FIN reaches the endpoint
//! while the endpoint may go on answering). Also used to splice upgraded
//! HTTP connections (WebSocket) and CONNECT tunnels.

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

/// Serves an opaque connection: one endpoint of `cluster`, bytes both ways.
pub async fn serve<I>(
    client: I,
    cluster: &crate::cluster::Cluster,
    metrics: &crate::telemetry::Metrics,
    listener: &std::sync::Arc<str>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    use crate::connect::ConnectError;
    use crate::resilience::outlier::{observe, Outcome};
    // Nothing has been relayed before a connect succeeds, so a failed connect
    // is tried again on another endpoint: the client never sees it.
    let attempts = 1 + cluster.settings.resilience.retry.attempts;
    let mut tried = Vec::new();
    for attempt in 1..=attempts {
        let Some(endpoint) = cluster.balancer.pick_avoiding(&tried, None) else {
            debug!(upstream = %cluster.name(), "no endpoint for opaque connection");
            return;
        };
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
                return;
            }
            Err(ConnectError::Overflow) => {
                return debug!(upstream = %cluster.name(), "opaque connection over the limit")
            }
            Err(err) => {
                debug!(endpoint = %endpoint.addr, error = %err, "opaque connect failed");
                if attempt < attempts {
                    metrics.resilience(cluster.name(), "connect_failure");
                }
            }
        }
    }
}
