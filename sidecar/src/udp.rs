//! UDP upstreams (`protocol: udp`): one UDP socket on the upstream's
//! `listen` address, balanced per client flow. A flow is a client address;
//! its first datagram picks an endpoint (the route table is read then, so a
//! reload reaches new flows), opens a connected UDP socket to it, and
//! spawns a task that relays the endpoint's replies back to the client
//! through the listener socket. The flow sticks to its endpoint until
//! `timeouts.idle` passes with no traffic either way, its socket fails
//! (ICMP port unreachable is ECONNREFUSED on a connected socket: the next
//! datagram picks again), or the listener stops (reload removed it, drain).
//! Reads: the route table at each new flow, the cluster's idle timeout.
//! Writes: endpoint outlier state (a failed socket is a connect failure, a
//! reply a success), `mesh_udp_flows_total`, `mesh_udp_flows_open`,
//! `mesh_udp_flows_refused_total` (flow cap reached, no endpoint).
//! Errors: none raised; socket errors end the flow, logged at debug.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::balance::{sticky, EndpointState, Policy};
use crate::cluster::Cluster;
use crate::listen::Shared;
use crate::lock;
use crate::resilience::outlier::{self, Outcome};
use crate::route::RouteKind;
use crate::telemetry::Metrics;

/// Flows one listener keeps at once; datagrams of new clients past it are dropped.
pub const MAX_FLOWS: usize = 10_000;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// A UDP listener's flow counters.
#[derive(Clone)]
pub struct FlowMetrics {
    /// Flows opened.
    pub opened: Counter,
    /// Flows open now.
    pub open: Gauge,
    /// Datagrams dropped because no flow could be opened.
    pub refused: Counter,
}

/// Binds a UDP socket on `addr` (no address reuse: a busy port fails the bind).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Starts relaying the datagrams `socket` receives to the cluster of
/// `upstream`, until `stop` fires.
pub fn spawn(socket: UdpSocket, upstream: Arc<str>, shared: &Shared, stop: CancellationToken) {
    let runtime = &shared.runtime;
    let listener = Listener {
        socket: Arc::new(socket),
        kind: RouteKind::Upstream(upstream.clone()),
        flow_metrics: runtime.metrics.udp_flows(&upstream),
        metrics: runtime.metrics.clone(),
        routes: runtime.routes.clone(),
        shared: shared.clone(),
    };
    let span = tracing::info_span!("udp_listener", upstream = %upstream);
    shared.tracker.spawn(listener.run(stop).instrument(span));
}

/// When a flow last carried a datagram, either way.
struct Activity(Mutex<Instant>);

impl Activity {
    fn new() -> Self {
        Self(Mutex::new(Instant::now()))
    }

    fn touch(&self) {
        *lock(&self.0) = Instant::now();
    }

    /// When the flow is idle if nothing passes before.
    fn idle_at(&self, idle: Duration) -> Instant {
        *lock(&self.0) + idle
    }
}

/// The flows of one listener by client address, at most `cap`. Each
/// entry has an id, so the end of an old flow never removes a newer one
/// of the same client.
struct FlowTable<F> {
    flows: HashMap<SocketAddr, (u64, F)>,
    cap: usize,
    next_id: u64,
}

impl<F> FlowTable<F> {
    fn new(cap: usize) -> Self {
        Self {
            flows: HashMap::new(),
            cap,
            next_id: 0,
        }
    }

    fn get(&self, client: SocketAddr) -> Option<&(u64, F)> {
        self.flows.get(&client)
    }

    fn has_room(&self) -> bool {
        self.flows.len() < self.cap
    }

    /// An id for the next flow.
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn insert(&mut self, client: SocketAddr, id: u64, flow: F) {
        self.flows.insert(client, (id, flow));
    }

    /// Removes the flow of `client` if it is still flow `id`.
    fn remove(&mut self, client: SocketAddr, id: u64) {
        if self
            .flows
            .get(&client)
            .is_some_and(|(current, _)| *current == id)
        {
            self.flows.remove(&client);
        }
    }

    fn len(&self) -> usize {
        self.flows.len()
    }
}

/// A client's flow, as the listener sees it.
struct Flow {
    upstream: Arc<UdpSocket>,
    activity: Arc<Activity>,
    /// Fired by the reply task when it ends, or by the listener.
    stop: CancellationToken,
    cluster: Arc<Cluster>,
    endpoint: Arc<EndpointState>,
}

struct Listener {
    socket: Arc<UdpSocket>,
    kind: RouteKind,
    flow_metrics: FlowMetrics,
    metrics: Arc<Metrics>,
    routes: Arc<arc_swap::ArcSwap<crate::route::RouteTable>>,
    shared: Shared,
}

impl Listener {
    async fn run(self, stop: CancellationToken) {
        let mut flows = FlowTable::new(MAX_FLOWS);
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some((client, id)) = ended_rx.recv() => flows.remove(client, id),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, client)) => {
                        let datagram = buf.get(..len).unwrap_or_default();
                        self.datagram(&mut flows, datagram, client, &stop, &ended_tx).await;
                    }
                    Err(err) => {
                        debug!(error = %err, "udp receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        debug!(flows = flows.len(), "udp listener stopped");
    }

    /// Sends a client's datagram on its flow, opening one if needed.
    async fn datagram(
        &self,
        flows: &mut FlowTable<Flow>,
        datagram: &[u8],
        client: SocketAddr,
        stop: &CancellationToken,
        ended: &mpsc::UnboundedSender<(SocketAddr, u64)>,
    ) {
        // A flow whose task ended (idle, failed) but whose end is not read yet is gone.
        if let Some((id, flow)) = flows.get(client) {
            if flow.stop.is_cancelled() {
                let id = *id;
                flows.remove(client, id);
            }
        }
        if flows.get(client).is_none() {
            if !flows.has_room() {
                self.flow_metrics.refused.inc();
                return debug!(%client, cap = MAX_FLOWS, "udp flow cap reached: datagram dropped");
            }
            let id = flows.next_id();
            match self.open(client, id, stop, ended).await {
                Some(flow) => flows.insert(client, id, flow),
                None => {
                    self.flow_metrics.refused.inc();
                    return;
                }
            }
        }
        let Some((id, flow)) = flows.get(client) else {
            return;
        };
        match flow.upstream.send(datagram).await {
            Ok(_) => flow.activity.touch(),
            Err(err) => {
                debug!(%client, endpoint = %flow.endpoint.addr, error = %err, "udp send failed: flow dropped");
                failed(&self.metrics, &flow.cluster, &flow.endpoint);
                flow.stop.cancel();
                let id = *id;
                flows.remove(client, id);
            }
        }
    }

    /// Picks an endpoint for a new flow, connects a socket to it and
    /// spawns the task relaying its replies.
    async fn open(
        &self,
        client: SocketAddr,
        id: u64,
        stop: &CancellationToken,
        ended: &mpsc::UnboundedSender<(SocketAddr, u64)>,
    ) -> Option<Flow> {
        let Some(cluster) = self.routes.load().listener_cluster(&self.kind) else {
            debug!(%client, "no cluster for this udp listener: datagram dropped");
            return None;
        };
        let picked = match cluster.balancer.policy() {
            Policy::RingHash(_) => cluster
                .balancer
                .pick_avoiding(&[], Some(sticky::hash(&client.ip()))),
            _ => cluster.balancer.pick(),
        };
        let Some(endpoint) = picked else {
            debug!(%client, upstream = %cluster.name(), "no endpoint for udp flow: datagram dropped");
            return None;
        };
        let upstream = match connect(endpoint.addr).await {
            Ok(socket) => Arc::new(socket),
            Err(err) => {
                debug!(%client, endpoint = %endpoint.addr, error = %err, "udp connect failed");
                failed(&self.metrics, &cluster, &endpoint);
                return None;
            }
        };
        let flow = Flow {
            upstream: upstream.clone(),
            activity: Arc::new(Activity::new()),
            stop: stop.child_token(),
            cluster: cluster.clone(),
            endpoint: endpoint.clone(),
        };
        self.flow_metrics.opened.inc();
        self.flow_metrics.open.inc();
        let replies = Replies {
            listener: self.socket.clone(),
            client,
            upstream,
            activity: flow.activity.clone(),
            stop: flow.stop.clone(),
            idle: cluster.settings.idle_timeout,
            cluster,
            endpoint,
            metrics: self.metrics.clone(),
            open: self.flow_metrics.open.clone(),
            ended: (ended.clone(), id),
        };
        let span = tracing::debug_span!("udp_flow", %client, endpoint = %replies.endpoint.addr);
        self.shared.tracker.spawn(replies.run().instrument(span));
        Some(flow)
    }
}

/// A socket connected to `endpoint` (so only its datagrams are received,
/// and ICMP errors surface as socket errors).
async fn connect(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if endpoint.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(endpoint).await?;
    Ok(socket)
}

/// Feeds a failed socket to outlier ejection.
fn failed(metrics: &Metrics, cluster: &Cluster, endpoint: &EndpointState) {
    let settings = &cluster.settings.resilience.outlier;
    if outlier::observe(
        &cluster.balancer,
        endpoint,
        Outcome::ConnectFailure,
        settings,
    ) {
        metrics.resilience(cluster.name(), "ejected");
    }
}

/// The task of one flow: the endpoint's replies back to the client.
struct Replies {
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
    activity: Arc<Activity>,
    stop: CancellationToken,
    idle: Duration,
    cluster: Arc<Cluster>,
    endpoint: Arc<EndpointState>,
    metrics: Arc<Metrics>,
    open: Gauge,
    ended: (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
}

impl Replies {
    async fn run(self) {
        let _active = self.endpoint.start();
        let why = loop {
            let idle_at = self.activity.idle_at(self.idle);
            tokio::select! {
                () = self.stop.cancelled() => break "stopped",
                () = tokio::time::sleep_until(idle_at) => {
                    if self.activity.idle_at(self.idle) <= Instant::now() {
                        break "idle";
                    }
                }
                // An ICMP error sets only EPOLLERR, never readable: wait for both.
                ready = self.upstream.ready(Interest::READABLE | Interest::ERROR) => {
                    let relayed = ready.and_then(|ready| {
                        if ready.is_error() {
                            self.take_error()?;
                        }
                        self.relay_one()
                    });
                    match relayed {
                        Ok(false) => {}
                        Ok(true) => {
                            self.activity.touch();
                            let settings = &self.cluster.settings.resilience.outlier;
                            outlier::observe(&self.cluster.balancer, &self.endpoint, Outcome::Success, settings);
                        }
                        Err(err) => {
                            debug!(error = %err, "udp endpoint socket failed: flow dropped");
                            failed(&self.metrics, &self.cluster, &self.endpoint);
                            break "failed";
                        }
                    }
                }
            }
        };
        debug!(why, "udp flow ended");
        self.stop.cancel();
        self.open.dec();
        let (ended, id) = &self.ended;
        // The listener may be gone already (stopped): nothing to tell.
        let _ = ended.send((self.client, *id));
    }

    /// The socket's pending error (ECONNREFUSED after an ICMP port
    /// unreachable) as `Err`. tokio's `try_recv` does not read the socket
    /// while it is not marked readable, so the error is fetched here
    /// (`SO_ERROR`); a spurious error readiness is cleared, or `ready`
    /// would return at once forever.
    fn take_error(&self) -> std::io::Result<()> {
        if let Some(err) = self.upstream.take_error()? {
            return Err(err);
        }
        let _ = self.upstream.try_io(Interest::ERROR, || {
            Err::<(), _>(std::io::Error::from(ErrorKind::WouldBlock))
        });
        Ok(())
    }

    /// Moves one waiting reply to the client; false when none was waiting.
    /// A reply the listener socket cannot take at once is dropped, as UDP may.
    fn relay_one(&self) -> std::io::Result<bool> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let len = match self.upstream.try_recv(&mut buf) {
            Ok(len) => len,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(err) => return Err(err),
        };
        let reply = buf.get(..len).unwrap_or_default();
        if let Err(err) = self.listener.try_send_to(reply, self.client) {
            debug!(error = %err, "udp reply to client dropped");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn flow_table_caps_and_never_removes_a_newer_flow() {
        let mut table = FlowTable::new(2);
        let first = table.next_id();
        table.insert(client(1), first, ());
        let second = table.next_id();
        table.insert(client(2), second, ());
        assert!(!table.has_room(), "two flows fill a table of two");
        // Client 1's flow ended and a new one replaced it before the end was read.
        let newer = table.next_id();
        table.insert(client(1), newer, ());
        table.remove(client(1), first);
        assert_eq!(table.get(client(1)).map(|(id, ())| *id), Some(newer));
        table.remove(client(1), newer);
        assert!(table.get(client(1)).is_none());
        assert!(table.has_room());
    }

    #[tokio::test(start_paused = true)]
    async fn activity_either_way_pushes_the_idle_time() {
        let idle = Duration::from_secs(1);
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.idle_at(idle), start + idle);
        tokio::time::advance(Duration::from_millis(700)).await;
        activity.touch();
        tokio::time::advance(Duration::from_millis(700)).await;
        assert!(
            activity.idle_at(idle) > Instant::now(),
            "traffic 700 ms ago: not idle yet"
        );
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(activity.idle_at(idle) <= Instant::now(), "idle after 1 s");
    }
}
