//! Routing: which cluster a request or connection goes to. Each listener
//! has a [`RouteKind`]: the inbound listener goes to the local app, an
//! upstream's own port to that upstream, and the forward proxy looks the
//! request's authority up among the upstreams' names and hosts (or, with
//! passthrough, sends it where it asks). The transparent listener (traffic
//! redirected by iptables) tries the authority too, then the connection's
//! original destination among the upstreams' endpoints, else sends the
//! request on to that original destination.
//! Reads: the current [`RouteTable`], swapped whole on reload, once per
//! request. Writes: the [`Target`] into the request's extensions and the
//! upstream name into [`RequestInfo`].
//! Errors: [`RouteError::NoRoute`]; malformed targets are `RequestError`s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::Authority;
use http::{Request, Version};
use tower::layer::layer_fn;
use tower::Layer;

use crate::cluster::Cluster;
use crate::config::{Settings, UpstreamSettings};
use crate::http::{Body, HttpService, RequestError};
use crate::telemetry::{Metrics, RequestInfo};
use crate::tls::IdentityStore;
use crate::BoxError;

/// No upstream for the request's target.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Nothing claims this authority (or listener).
    #[error("no upstream is configured for {0:?}")]
    NoRoute(String),
}

/// What a listener routes by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Everything to the local app.
    Inbound,
    /// Everything to one named upstream.
    Upstream(Arc<str>),
    /// By the request's authority (HTTP forward proxy).
    Proxy,
    /// By authority, then original destination (iptables-redirected traffic).
    Transparent,
    /// By the edge routes (`edge.routes`); the listener's index in `edge.listeners`.
    Edge(usize),
}

/// Where a request goes, decided by routing, read by `forward`.
#[derive(Clone)]
pub struct Target {
    /// The cluster to send to.
    pub cluster: Arc<Cluster>,
    /// For passthrough only: the address the caller asked for.
    pub passthrough: Option<Authority>,
    /// The request's authority, forwarded as `Host` / `:authority`.
    pub authority: Authority,
}

/// Every cluster and how to reach it; rebuilt on each reload.
#[derive(Default)]
pub struct RouteTable {
    clusters: HashMap<Arc<str>, Arc<Cluster>>,
    by_host: HashMap<String, Arc<Cluster>>,
    inbound: Option<Arc<Cluster>>,
    passthrough: Option<Arc<Cluster>>,
    /// Whether the forward proxy may use `passthrough` (the transparent listener always may).
    proxy_passthrough: bool,
    /// The edge routes, their upstreams resolved to these clusters.
    edge: crate::edge::EdgeRoutes,
    /// The edge authenticators, kept across reloads while their settings are unchanged.
    auth: Arc<crate::policy::auth::Authenticators>,
    /// The edge rate limiters, kept across reloads while a limit's settings are unchanged.
    limiters: Arc<crate::policy::rate_limit::Limiters>,
    /// The edge response cache, kept across reloads.
    cache: Arc<crate::edge::cache::CacheStore>,
}

impl RouteTable {
    /// The table for `settings`, reusing clusters of `previous` whose settings are unchanged.
    pub fn build(
        settings: &Settings,
        previous: &RouteTable,
        metrics: &Metrics,
        identity: &Arc<IdentityStore>,
    ) -> Self {
        let reuse = |spec: &UpstreamSettings, old: Option<&Arc<Cluster>>| match old {
            Some(old) if old.settings == *spec => old.clone(),
            _ => Arc::new(Cluster::new(spec.clone(), metrics, identity)),
        };
        let mut table = RouteTable::default();
        for spec in &settings.outbound.upstreams {
            let cluster = reuse(spec, previous.clusters.get(&spec.name));
            // UDP upstreams are reached through their own listener only, never by authority.
            let udp = spec.protocol == mesh_api::config::Protocol::Udp;
            for host in spec.hosts.iter().filter(|_| !udp) {
                table.by_host.insert(host.clone(), cluster.clone());
            }
            table.clusters.insert(spec.name.clone(), cluster);
        }
        table.inbound = settings
            .inbound
            .as_ref()
            .map(|i| reuse(&i.app, previous.inbound.as_ref()));
        table.proxy_passthrough = settings.outbound.passthrough;
        if let Some(edge) = &settings.edge {
            table.edge =
                crate::edge::EdgeRoutes::build(edge, |name| table.clusters.get(name).cloned());
            table.auth = Arc::new(crate::policy::auth::Authenticators::build(
                &edge.auth,
                &previous.auth,
            ));
        }
        table.limiters = Arc::new(crate::policy::rate_limit::Limiters::build(
            settings.edge.as_ref().map(|edge| &edge.rate_limits),
            &previous.limiters,
            metrics,
        ));
        table.cache = crate::edge::cache::CacheStore::build(
            settings.edge.as_ref().map(|edge| &edge.cache),
            &previous.cache,
        );
        if settings.outbound.passthrough || settings.outbound.transparent.is_some() {
            let spec = UpstreamSettings {
                name: Arc::from("passthrough"),
                listen: None,
                hosts: Vec::new(),
                discovery: crate::discovery::Source::Static(Vec::new()),
                balance: crate::balance::Policy::P2cEwma,
                resilience: crate::config::ResilienceSettings::defaults(),
                health: None,
                protocol: mesh_api::config::Protocol::Auto,
                connect_timeout: std::time::Duration::from_secs(1),
                idle_timeout: std::time::Duration::from_secs(60),
                tls: None,
                public_tls: None,
                locality: None,
                grpc_bridge: None,
            };
            table.passthrough = Some(reuse(&spec, previous.passthrough.as_ref()));
        }
        table
    }

    /// The edge routes (empty outside edge mode).
    pub fn edge_routes(&self) -> &crate::edge::EdgeRoutes {
        &self.edge
    }

    /// The edge authenticators (none outside edge mode).
    pub fn authenticators(&self) -> &crate::policy::auth::Authenticators {
        &self.auth
    }

    /// The edge response cache (empty outside edge mode).
    pub fn cache(&self) -> &Arc<crate::edge::cache::CacheStore> {
        &self.cache
    }

    /// The edge rate limiters (none outside edge mode).
    pub fn limiters(&self) -> &Arc<crate::policy::rate_limit::Limiters> {
        &self.limiters
    }

    /// The cluster a whole listener is bound to (inbound or an upstream's port).
    pub fn listener_cluster(&self, kind: &RouteKind) -> Option<Arc<Cluster>> {
        match kind {
            RouteKind::Inbound => self.inbound.clone(),
            RouteKind::Upstream(name) => self.clusters.get(name).cloned(),
            RouteKind::Proxy | RouteKind::Transparent | RouteKind::Edge(_) => None,
        }
    }

    /// The upstream one of whose endpoints is `addr` (first by name), for the
    /// transparent listener.
    pub fn cluster_with_endpoint(&self, addr: SocketAddr) -> Option<Arc<Cluster>> {
        let mut names: Vec<&Arc<str>> = self.clusters.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| &self.clusters[name])
            .filter(|cluster| cluster.settings.protocol != mesh_api::config::Protocol::Udp)
            .find(|cluster| cluster.balancer.endpoints().iter().any(|e| e.addr == addr))
            .cloned()
    }

    /// The upstream claiming `authority` by name or host (`host:port` first).
    pub fn by_authority(&self, authority: &Authority) -> Option<&Arc<Cluster>> {
        let exact = authority.as_str().to_ascii_lowercase();
        let host = authority.host().to_ascii_lowercase();
        self.by_host.get(&exact).or_else(|| self.by_host.get(&host))
    }

    /// Transparent routing: authority, then original destination, else
    /// straight on to the original destination.
    fn route_transparent(
        &self,
        authority: Option<Authority>,
        original: Option<SocketAddr>,
    ) -> Result<Target, BoxError> {
        if let Some(cluster) = authority.as_ref().and_then(|a| self.by_authority(a)) {
            return Ok(Target {
                cluster: cluster.clone(),
                passthrough: None,
                authority: authority.ok_or(RequestError::MissingHost)?,
            });
        }
        let original =
            original.ok_or_else(|| RouteError::NoRoute("no original destination".into()))?;
        let original_authority = Authority::try_from(original.to_string())?;
        let authority = authority.unwrap_or_else(|| original_authority.clone());
        if let Some(cluster) = self.cluster_with_endpoint(original) {
            return Ok(Target {
                cluster,
                passthrough: None,
                authority,
            });
        }
        match &self.passthrough {
            Some(cluster) => Ok(Target {
                cluster: cluster.clone(),
                passthrough: Some(original_authority),
                authority,
            }),
            None => Err(RouteError::NoRoute(original.to_string()).into()),
        }
    }

    /// Every cluster, for the admin API.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let mut all: Vec<Arc<Cluster>> = self
            .inbound
            .iter()
            .chain(self.clusters.values())
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Where a request goes. `authority` is `None` only for HTTP/1.0
    /// callers without `Host` on a listener bound to one cluster.
    fn route(
        &self,
        kind: &RouteKind,
        authority: Option<Authority>,
        original: Option<SocketAddr>,
    ) -> Result<Target, BoxError> {
        if *kind == RouteKind::Transparent {
            return self.route_transparent(authority, original);
        }
        if let Some(cluster) = self.listener_cluster(kind) {
            let authority = match authority {
                Some(authority) => authority,
                None => first_endpoint(&cluster)?,
            };
            return Ok(Target {
                cluster,
                passthrough: None,
                authority,
            });
        }
        let authority = authority.ok_or(RequestError::MissingHost)?;
        if *kind != RouteKind::Proxy {
            return Err(RouteError::NoRoute(authority.to_string()).into());
        }
        if let Some(cluster) = self.by_authority(&authority) {
            return Ok(Target {
                cluster: cluster.clone(),
                passthrough: None,
                authority,
            });
        }
        match self.passthrough.as_ref().filter(|_| self.proxy_passthrough) {
            Some(cluster) => Ok(Target {
                cluster: cluster.clone(),
                passthrough: Some(authority.clone()),
                authority,
            }),
            None => Err(RouteError::NoRoute(authority.to_string()).into()),
        }
    }
}

/// Routes one request.
fn target_of(
    table: &RouteTable,
    kind: &RouteKind,
    req: &Request<Body>,
) -> Result<Target, BoxError> {
    let authority = match crate::http::authority(req) {
        Ok(authority) => Some(authority),
        // HTTP/1.0 predates Host; such callers can still reach a listener's own cluster.
        Err(RequestError::MissingHost) if req.version() == Version::HTTP_10 => None,
        Err(err) => return Err(err.into()),
    };
    let original = req
        .extensions()
        .get::<crate::http::ConnInfo>()
        .and_then(|conn| conn.original_dst);
    table.route(kind, authority, original)
}

/// The authority of a cluster's first endpoint, for callers that named none.
fn first_endpoint(cluster: &Cluster) -> Result<Authority, BoxError> {
    let endpoints = cluster.balancer.endpoints();
    let endpoint = endpoints.first().ok_or(RequestError::MissingHost)?;
    Ok(Authority::try_from(endpoint.addr.to_string())?)
}

/// The routing layer of a listener of kind `kind`.
pub fn layer(
    table: Arc<ArcSwap<RouteTable>>,
    kind: RouteKind,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let table = table.clone();
        let kind = kind.clone();
        crate::http::direct_fn(move |mut req: Request<Body>| {
            let target = match target_of(&table.load(), &kind, &req) {
                Ok(target) => target,
                Err(err) => return crate::http::ready(Err(err)),
            };
            if let Some(info) = req.extensions().get::<RequestInfo>() {
                info.set_upstream(target.cluster.name().clone());
            }
            req.extensions_mut().insert(target);
            inner.call_ref(req)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{reason, Reason};

    fn table(yaml: &str) -> RouteTable {
        let settings = crate::config::load_str(yaml).unwrap();
        RouteTable::build(
            &settings,
            &RouteTable::default(),
            &Metrics::new(),
            &identity(),
        )
    }

    fn identity() -> Arc<IdentityStore> {
        Arc::new(IdentityStore::new(Default::default()))
    }

    fn request(uri: &str, version: Version) -> Request<Body> {
        Request::builder()
            .uri(uri)
            .version(version)
            .body(crate::http::empty())
            .unwrap()
    }

    const PROXY: &str = "service: web\noutbound:\n  upstreams:\n    orders:\n      hosts: [orders.mesh.local, \"api.test:8443\"]\n      discovery: { endpoints: [127.0.0.1:7001] }\n";

    #[tokio::test]
    async fn proxy_routes_by_name_host_and_host_port() {
        let table = table(PROXY);
        for uri in [
            "http://orders/x",
            "http://orders:80/x",
            "http://ORDERS.mesh.local/",
            "http://api.test:8443/",
        ] {
            let target =
                target_of(&table, &RouteKind::Proxy, &request(uri, Version::HTTP_11)).unwrap();
            assert_eq!(&**target.cluster.name(), "orders", "{uri}");
        }
        let err = target_of(
            &table,
            &RouteKind::Proxy,
            &request("http://api.test:9999/", Version::HTTP_11),
        )
        .err()
        .unwrap();
        assert_eq!(reason(&err), Reason::NoRoute);
    }

    #[tokio::test]
    async fn passthrough_keeps_the_asked_authority() {
        let table = table("service: web\noutbound: { passthrough: true }\n");
        let target = target_of(
            &table,
            &RouteKind::Proxy,
            &request("http://example.test:8080/", Version::HTTP_11),
        )
        .unwrap();
        assert_eq!(target.passthrough.unwrap().as_str(), "example.test:8080");
    }

    #[tokio::test]
    async fn http10_without_host_reaches_the_listener_cluster_only() {
        let table = table(PROXY);
        let kind = RouteKind::Upstream(Arc::from("orders"));
        let target = target_of(&table, &kind, &request("/x", Version::HTTP_10)).unwrap();
        assert_eq!(target.authority.as_str(), "127.0.0.1:7001");
        let err = target_of(&table, &kind, &request("/x", Version::HTTP_11))
            .err()
            .unwrap();
        assert_eq!(reason(&err), Reason::BadRequest);
        let err = target_of(&table, &RouteKind::Proxy, &request("/x", Version::HTTP_10))
            .err()
            .unwrap();
        assert_eq!(reason(&err), Reason::BadRequest);
    }

    #[tokio::test]
    async fn transparent_routes_by_authority_then_original_destination() {
        let table = table(&format!("{PROXY}  transparent: 127.0.0.1:15002\n"));
        let routed = |uri: &str, original: &str| {
            let mut req = request(uri, Version::HTTP_11);
            req.extensions_mut().insert(crate::http::ConnInfo {
                original_dst: Some(original.parse().unwrap()),
                ..Default::default()
            });
            target_of(&table, &RouteKind::Transparent, &req).unwrap()
        };
        let target = routed("http://orders.mesh.local/", "10.0.0.9:80");
        assert_eq!(&**target.cluster.name(), "orders");
        assert!(target.passthrough.is_none());
        let target = routed("http://10.1.2.3:7001/", "127.0.0.1:7001");
        assert_eq!(&**target.cluster.name(), "orders");
        assert_eq!(target.authority.as_str(), "10.1.2.3:7001");
        let target = routed("http://example.test/", "10.0.0.9:8081");
        assert_eq!(target.passthrough.unwrap().as_str(), "10.0.0.9:8081");
        assert_eq!(target.authority.as_str(), "example.test");
        // The forward proxy does not inherit the transparent passthrough.
        let err = target_of(
            &table,
            &RouteKind::Proxy,
            &request("http://example.test/", Version::HTTP_11),
        )
        .err()
        .unwrap();
        assert_eq!(reason(&err), Reason::NoRoute);
    }

    #[tokio::test]
    async fn unchanged_clusters_survive_a_rebuild() {
        let settings = crate::config::load_str(PROXY).unwrap();
        let metrics = Metrics::new();
        let first = RouteTable::build(&settings, &RouteTable::default(), &metrics, &identity());
        let second = RouteTable::build(&settings, &first, &metrics, &identity());
        assert!(Arc::ptr_eq(
            &first.clusters["orders"],
            &second.clusters["orders"]
        ));
        let changed = crate::config::load_str(&PROXY.replace("7001", "7002")).unwrap();
        let third = RouteTable::build(&changed, &second, &metrics, &identity());
        assert!(!Arc::ptr_eq(
            &second.clusters["orders"],
            &third.clusters["orders"]
        ));
    }
}
