//! The edge routes, in two layers with the route's access control
//! (CORS, authentication, rate limits) between them, so those see the
//! request as the client sent it.
//! [`route_layer`], below the front layer: the first route of `edge.routes`
//! whose conditions hold decides. It checks the route's `allow` / `deny`
//! networks against the client address and its percent-encoded-slash
//! policy, answers redirects, and hands the [`MatchedRoute`] down. On the
//! way back it strips `edge.strip_response_headers` and applies the route's
//! response header changes.
//! [`dispatch_layer`], above resilience: the route's body limit, then the
//! rewrites (path, query, headers, Host) and the upstream (weighted split).
//! Reads: the current [`RouteTable`] (its [`EdgeRoutes`]) once per request,
//! [`ConnInfo`] and the client address the front layer put in
//! [`RequestInfo`]. Writes: the [`Target`] into the request's extensions,
//! the route and upstream names into [`RequestInfo`], and a refusal's
//! reason (`mesh_policy_denials_total`).
//! Errors: [`EdgeError`] (404 `no_route`), `policy::Forbidden` (403),
//! `HygieneError::EncodedSlash` (400) and `HygieneError::BodyTooLarge`
//! (413), `RouteError::NoRoute` when a route's upstream has no cluster.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use mesh_api::config::EncodedSlashes;
use tower::layer::layer_fn;
use tower::Layer;

use super::action::{RedirectSettings, RouteAction};
use super::matcher::{Captures, RequestView};
use crate::cidr::Cidr;
use crate::cluster::Cluster;
use crate::config::{EdgeSettings, RouteSettings};
use crate::http::hygiene::{limited, normalize_path, HygieneError, OriginalPath};
use crate::http::{Body, ConnInfo, HttpService, RequestError};
use crate::route::{RouteError, RouteTable, Target};
use crate::telemetry::RequestInfo;
use crate::BoxError;

/// Requests the edge routes refuse.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// No route matches (404 `no_route`).
    #[error("no route matches the request")]
    NoRoute,
    /// A rewrite produced a request target that is not valid.
    #[error("the rewritten request target is not valid")]
    InvalidRewrite,
}

/// The edge routes with their upstream clusters resolved; part of the
/// [`RouteTable`], so a reload swaps them with it.
#[derive(Default)]
pub struct EdgeRoutes {
    routes: Arc<Vec<RouteSettings>>,
    targets: Vec<Targets>,
    strip_response_headers: Vec<HeaderName>,
}

/// The clusters a route forwards to, with their weights.
#[derive(Default)]
struct Targets {
    clusters: Vec<(Arc<Cluster>, u32)>,
    total: u32,
}

impl Targets {
    /// A cluster picked by weight.
    fn pick(&self) -> Option<&Arc<Cluster>> {
        if self.clusters.len() == 1 {
            return self.clusters.first().map(|(cluster, _)| cluster);
        }
        if self.total == 0 {
            return None;
        }
        let mut ticket = fastrand::u32(0..self.total);
        for (cluster, weight) in &self.clusters {
            if ticket < *weight {
                return Some(cluster);
            }
            ticket -= weight;
        }
        None
    }
}

impl EdgeRoutes {
    /// Resolves the routes' upstreams with `cluster` (the table's clusters by name).
    pub fn build(edge: &EdgeSettings, cluster: impl Fn(&str) -> Option<Arc<Cluster>>) -> Self {
        let targets = edge
            .routes
            .iter()
            .map(|route| match &route.action {
                RouteAction::Forward(split) => {
                    let clusters: Vec<(Arc<Cluster>, u32)> = split
                        .iter()
                        .filter(|s| s.weight > 0)
                        .filter_map(|s| cluster(&s.upstream).map(|c| (c, s.weight)))
                        .collect();
                    let total = clusters
                        .iter()
                        .fold(0u32, |sum, (_, w)| sum.saturating_add(*w));
                    Targets { clusters, total }
                }
                RouteAction::Redirect(_)
                | RouteAction::Aggregate(_)
                | RouteAction::WebsocketBridge(_) => Targets::default(),
            })
            .collect();
        EdgeRoutes {
            routes: edge.routes.clone(),
            targets,
            strip_response_headers: edge.strip_response_headers.clone(),
        }
    }
}

impl EdgeRoutes {
    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &[RouteSettings] {
        &self.routes
    }
}

/// What routing decided before the request goes further.
enum Step {
    /// The proxy answers (a redirect).
    Respond(Response<Body>),
    /// Forward; the route's index.
    Forward(usize),
}

/// The route a request matched, in its extensions between
/// [`route_layer`] and [`dispatch_layer`]: the layers between read the
/// route's settings from it.
#[derive(Clone)]
pub struct MatchedRoute {
    table: Arc<RouteTable>,
    index: usize,
    captures: Captures,
    kept_slashes: Option<String>,
    authority: Option<Authority>,
}

impl MatchedRoute {
    /// The route `req` matched, if it `uses` the feature asked about: how
    /// a layer of the edge stack decides whether a request is its own
    /// (`None`: pass it on untouched).
    pub fn using(
        req: &Request<Body>,
        uses: impl FnOnce(&RouteSettings) -> bool,
    ) -> Option<&MatchedRoute> {
        req.extensions()
            .get::<MatchedRoute>()
            .filter(|matched| uses(matched.settings()))
    }

    /// The route table the route was matched in: the limiters and
    /// authenticators that go with its settings, whatever a reload put in
    /// place since.
    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    /// The matched route's settings.
    pub fn settings(&self) -> &RouteSettings {
        // The index comes from this very table.
        &self.table.edge_routes().routes[self.index]
    }

    /// What the route's path template captured (byte ranges of the path).
    pub fn captures(&self) -> &Captures {
        &self.captures
    }

    /// The cluster of upstream `name` in the table the route came from
    /// (an aggregate route's parts).
    pub fn cluster(&self, name: &Arc<str>) -> Option<Arc<Cluster>> {
        self.table
            .listener_cluster(&crate::route::RouteKind::Upstream(name.clone()))
    }

    /// The cluster the route forwards to, picked by weight as dispatch
    /// does; `None` for routes that do not forward (REST → WebSocket).
    pub fn forward_cluster(&self) -> Option<Arc<Cluster>> {
        let targets = self.table.edge_routes().targets.get(self.index)?;
        targets.pick().cloned()
    }

    /// The request's authority as routing saw it (REST → WebSocket).
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }
}

/// The edge routes: the first route that matches decides.
pub fn route_layer(
    routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let routes = routes.clone();
        crate::http::shared_fn(move |mut req: Request<Body>| {
            let table = routes.load_full();
            let step = route(&table, &mut req);
            if let (Err(refusal), Some(info)) = (&step, req.extensions().get::<RequestInfo>()) {
                if let Some(reason) = denial(&refusal.error) {
                    info.set_denied(reason.0, reason.1);
                }
            }
            let step = step.or_else(|refusal| refusal.answer(&table, &req));
            let inner = inner.clone();
            async move {
                let index = match step? {
                    Step::Respond(response) => return Ok(response),
                    Step::Forward(index) => index,
                };
                let mut response = inner.call_ref(req).await?;
                let edge = table.edge_routes();
                let headers = response.headers_mut();
                for name in &edge.strip_response_headers {
                    headers.remove(name);
                }
                if let Some(route) = edge.routes.get(index) {
                    route.response_headers.apply(headers);
                }
                Ok(response)
            }
        })
    })
}

/// The policy and reason on `mesh_policy_denials_total` of a request the
/// edge routes refuse: no route, the route's allow / deny, or its own
/// hygiene (encoded slashes, body size).
fn denial(err: &BoxError) -> Option<(&'static str, &'static str)> {
    if let Some(EdgeError::NoRoute) = err.downcast_ref::<EdgeError>() {
        Some(("edge_route", "no_route"))
    } else if err.downcast_ref::<crate::policy::Forbidden>().is_some() {
        Some(("edge_route", "client_address"))
    } else {
        err.downcast_ref::<HygieneError>()
            .map(|e| ("hygiene", e.label()))
    }
}

/// A request the edge routes refuse, and the route that refused it (if one
/// matched).
struct Refusal {
    error: BoxError,
    route: Option<usize>,
}

impl<E: Into<BoxError>> From<E> for Refusal {
    fn from(error: E) -> Self {
        Refusal {
            error: error.into(),
            route: None,
        }
    }
}

impl Refusal {
    /// The error as it goes up; when the refusing route has CORS and the
    /// request an `Origin`, already the answer, with the CORS headers a
    /// browser needs to read it.
    fn answer(self, table: &RouteTable, req: &Request<Body>) -> Result<Step, BoxError> {
        let cors = self
            .route
            .and_then(|index| table.edge_routes().routes.get(index))
            .and_then(|route| route.access.cors.as_ref());
        match cors {
            Some(cors) if req.headers().contains_key(http::header::ORIGIN) => {
                let mut response =
                    crate::errors::response(&self.error, crate::http::is_grpc(req.headers()));
                super::cors::add_response_headers(cors, req.headers(), response.headers_mut());
                Ok(Step::Respond(response))
            }
            _ => Err(self.error),
        }
    }
}

/// Matches and checks one request; a forwarded one carries its
/// [`MatchedRoute`] on.
fn route(table: &Arc<RouteTable>, req: &mut Request<Body>) -> Result<Step, Refusal> {
    let edge = table.edge_routes();
    let authority = match crate::http::authority(req) {
        Ok(authority) => Some(authority),
        Err(RequestError::MissingHost) => None,
        Err(err) => return Err(err.into()),
    };
    let mut captures = Captures::default();
    // A CORS preflight matches the route of the request it asks about.
    let preflight = preflight_method(req);
    let index = {
        let view = RequestView {
            host: authority.as_ref().map(Authority::host),
            path: req.uri().path(),
            query: req.uri().query(),
            method: preflight.as_ref().unwrap_or(req.method()),
            headers: req.headers(),
        };
        edge.routes
            .iter()
            .position(|route| route.matches.matches(&view, &mut captures))
            .ok_or(EdgeError::NoRoute)?
    };
    let route = &edge.routes[index];
    let info = req.extensions().get::<RequestInfo>().cloned();
    if let Some(info) = &info {
        info.set_route(route.name.clone());
    }
    if !route.allow.is_empty() || !route.deny.is_empty() {
        let admitted = client_ip(req).map_or(route.allow.is_empty(), |ip| {
            admits(&route.allow, &route.deny, ip)
        });
        if !admitted {
            return Err(Refusal {
                error: crate::policy::Forbidden.into(),
                route: Some(index),
            });
        }
    }
    let kept_slashes = encoded_slashes(route.encoded_slashes, req).map_err(|err| Refusal {
        error: err.into(),
        route: Some(index),
    })?;
    if let RouteAction::Redirect(redirect) = &route.action {
        let location = location(redirect, req, authority.as_ref(), &captures)?;
        let mut response = Response::new(crate::http::empty());
        *response.status_mut() = redirect.status;
        response.headers_mut().insert(LOCATION, location);
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        route.response_headers.apply(response.headers_mut());
        return Ok(Step::Respond(response));
    }
    req.extensions_mut().insert(MatchedRoute {
        table: table.clone(),
        index,
        captures,
        kept_slashes,
        authority,
    });
    Ok(Step::Forward(index))
}

/// The second half of the edge routes: the matched route's body limit,
/// rewrites and upstream.
pub fn dispatch_layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        crate::http::shared_fn(move |mut req: Request<Body>| {
            let dispatched = dispatch(&mut req);
            let inner = inner.clone();
            async move {
                dispatched?;
                inner.call_ref(req).await
            }
        })
    })
}

/// Rewrites the request as its route says and picks the upstream.
fn dispatch(req: &mut Request<Body>) -> Result<(), BoxError> {
    let Some(matched) = req.extensions_mut().remove::<MatchedRoute>() else {
        // An aggregate route's part: the aggregate layer chose its upstream.
        return match req.extensions().get::<Target>() {
            Some(_) => Ok(()),
            None => Err(EdgeError::NoRoute.into()),
        };
    };
    let route = matched.settings();
    if let Some(limit) = route.max_body {
        limit_body(req, limit)?;
    }
    rewrite_target(
        route,
        req,
        matched.kept_slashes.as_deref(),
        &matched.captures,
    )?;
    route.request_headers.apply(req.headers_mut());
    let authority = match &route.host_rewrite {
        Some(host) => host.clone(),
        None => matched.authority.clone().ok_or(RequestError::MissingHost)?,
    };
    let cluster = matched
        .table
        .edge_routes()
        .targets
        .get(matched.index)
        .and_then(Targets::pick)
        .ok_or_else(|| RouteError::NoRoute(format!("route {}", route.name)))?
        .clone();
    if let Some(info) = req.extensions().get::<RequestInfo>() {
        info.set_upstream(cluster.name().clone());
    }
    req.extensions_mut().insert(Target {
        cluster,
        passthrough: None,
        authority,
    });
    Ok(())
}

/// For a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), the method it asks about.
fn preflight_method(req: &Request<Body>) -> Option<http::Method> {
    if req.method() != http::Method::OPTIONS || !req.headers().contains_key(http::header::ORIGIN) {
        return None;
    }
    req.headers()
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| http::Method::from_bytes(v.as_bytes()).ok())
}

/// Whether `ip` passes an `allow` list (empty: everyone) and a `deny` list;
/// the edge routes and the edge listeners share it.
pub fn admits(allow: &[Cidr], deny: &[Cidr], ip: IpAddr) -> bool {
    (allow.is_empty() || Cidr::any_contains(allow, ip)) && !Cidr::any_contains(deny, ip)
}

/// The client's address: the front layer's, else the connection's peer.
fn client_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<RequestInfo>()
        .and_then(RequestInfo::client)
        .or_else(|| {
            req.extensions()
                .get::<ConnInfo>()
                .and_then(|conn| conn.peer)
                .map(|peer| peer.ip())
        })
}

/// The route's policy on `%2F` / `%5C` in the path as the client sent it
/// ([`OriginalPath`], recorded by the hygiene layer, which matched on the
/// decoded form): `reject` refuses them; `keep` returns the path to forward
/// with them still encoded (`None`: the routed path as is).
fn encoded_slashes(
    policy: EncodedSlashes,
    req: &Request<Body>,
) -> Result<Option<String>, HygieneError> {
    if policy == EncodedSlashes::Decode {
        return Ok(None);
    }
    let Some(OriginalPath(original)) = req.extensions().get::<OriginalPath>() else {
        return Ok(None);
    };
    let has_encoded = original.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
                || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    });
    if !has_encoded {
        return Ok(None);
    }
    normalize_path(original, policy).map(Some)
}

/// Refuses a declared body over `limit`; a body of unknown length fails
/// once over it.
fn limit_body(req: &mut Request<Body>, limit: u64) -> Result<(), HygieneError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(size) if size > limit => Err(HygieneError::BodyTooLarge),
        Some(_) => Ok(()),
        None => {
            let body = std::mem::replace(req.body_mut(), crate::http::empty());
            *req.body_mut() = limited(body, limit);
            Ok(())
        }
    }
}

/// Applies the route's path rewrite and query changes to the request target.
fn rewrite_target(
    route: &RouteSettings,
    req: &mut Request<Body>,
    kept_slashes: Option<&str>,
    captures: &Captures,
) -> Result<(), EdgeError> {
    if route.path_rewrite.is_none() && route.query.is_none() && kept_slashes.is_none() {
        return Ok(());
    }
    let uri = req.uri();
    // Captures are byte ranges of the routed path: a rewrite reads that one.
    let path = match (&route.path_rewrite, kept_slashes) {
        (None, Some(kept)) => kept,
        _ => uri.path(),
    };
    let new_path = route
        .path_rewrite
        .as_ref()
        .map(|rewrite| rewrite.apply(path, captures));
    let path = new_path.as_deref().unwrap_or(path);
    let new_query = route.query.as_ref().map(|query| query.apply(uri.query()));
    let query = match &new_query {
        Some(query) => query.as_deref(),
        None => uri.query(),
    };
    let mut target = String::with_capacity(path.len() + query.map_or(0, str::len) + 2);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|_| EdgeError::InvalidRewrite)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| EdgeError::InvalidRewrite)?;
    Ok(())
}

/// The `Location` of a redirect: `to`, or the request's URL with the parts
/// the redirect sets replaced.
fn location(
    redirect: &RedirectSettings,
    req: &Request<Body>,
    authority: Option<&Authority>,
    captures: &Captures,
) -> Result<HeaderValue, BoxError> {
    if let Some(to) = &redirect.to {
        return Ok(to.clone());
    }
    let scheme = redirect.scheme.unwrap_or_else(|| request_scheme(req));
    let host = match (&redirect.host, authority) {
        (Some(host), _) => host.as_str(),
        (None, Some(authority)) => authority.host(),
        (None, None) => return Err(RequestError::MissingHost.into()),
    };
    let port = redirect.port.or_else(|| {
        (redirect.scheme.is_none() && redirect.host.is_none())
            .then(|| authority.and_then(Authority::port_u16))
            .flatten()
    });
    let path = req.uri().path();
    let new_path = redirect
        .path
        .as_ref()
        .map(|rewrite| rewrite.apply(path, captures));
    let path = new_path.as_deref().unwrap_or(path);
    let query = req.uri().query().filter(|_| !redirect.strip_query);
    let mut url = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    match (scheme, port) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => {}
        (_, Some(port)) => {
            url.push(':');
            url.push_str(&port.to_string());
        }
    }
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(HeaderValue::try_from(url).map_err(|_| EdgeError::InvalidRewrite)?)
}

/// `https` or `http`, as the client sees the request: the URI's scheme,
/// else `X-Forwarded-Proto` (set by the front layer), else the connection.
fn request_scheme(req: &Request<Body>) -> &'static str {
    let named = req.uri().scheme_str().or_else(|| {
        req.headers()
            .get(super::front::X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
    });
    match named {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        _ => {
            let tls = req.extensions().get::<ConnInfo>().is_some_and(|c| c.tls);
            if tls {
                "https"
            } else {
                "http"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::{reason, Reason};
    use crate::telemetry::Metrics;
    use crate::tls::IdentityStore;

    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    v1: { discovery: { endpoints: [127.0.0.1:7001] } }\n    v2: { discovery: { endpoints: [127.0.0.1:7002] } }\n  routes:\n";

    fn table(routes: &str) -> Arc<RouteTable> {
        let settings = crate::config::load_str(&format!("{EDGE}{routes}")).unwrap();
        Arc::new(RouteTable::build(
            &settings,
            &RouteTable::default(),
            &Metrics::new(),
            &Arc::new(IdentityStore::new(Default::default())),
        ))
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(crate::http::empty()).unwrap();
        req.extensions_mut().insert(ConnInfo {
            peer: Some("192.0.2.10:5555".parse().unwrap()),
            ..Default::default()
        });
        req
    }

    fn forwarded(table: &Arc<RouteTable>, req: &mut Request<Body>) -> String {
        match route(table, req) {
            Ok(Step::Forward(_)) => {
                dispatch(req).unwrap();
                let target = req.extensions().get::<Target>().unwrap();
                target.cluster.name().to_string()
            }
            Ok(Step::Respond(res)) => panic!("answered {}", res.status()),
            Err(refusal) => panic!("refused: {}", refusal.error),
        }
    }

    #[tokio::test]
    async fn first_match_wins_and_conditions_combine() {
        let table = table(
            "    - { match: { host: api.test, path_prefix: /v2, headers: { x-beta: \"1\" } }, to: v2 }\n    - { match: { host: \"*.test\", methods: [POST] }, to: v2 }\n    - { match: { host: api.test, query: { version: \"2 b\" } }, to: v2 }\n    - { match: { host: api.test, cookies: { canary: { prefix: y } } }, to: v2 }\n    - { match: { host: api.test }, to: v1 }\n",
        );
        let cases = [
            ("GET", "http://api.test/v2/x", vec![("x-beta", "1")], "v2"),
            ("GET", "http://api.test/v2/x", vec![], "v1"),
            ("POST", "http://a.b.test/", vec![], "v2"),
            ("GET", "http://api.test/?version=2+b", vec![], "v2"),
            ("GET", "http://api.test/?version=2%20b", vec![], "v2"),
            (
                "GET",
                "http://api.test/",
                vec![("cookie", "a=1; canary=yes")],
                "v2",
            ),
            ("GET", "http://API.test:8080/", vec![], "v1"),
        ];
        for (method, uri, headers, upstream) in cases {
            let mut req = request(method, uri, &headers);
            assert_eq!(
                forwarded(&table, &mut req),
                upstream,
                "{method} {uri} {headers:?}"
            );
        }
        let err = route(&table, &mut request("GET", "http://other.example/", &[]))
            .err()
            .unwrap();
        assert_eq!(reason(&err.error), Reason::NoEdgeRoute);
    }

    #[tokio::test]
    async fn rewrites_change_path_query_headers_and_host() {
        let table = table(
            "    - match: { path_template: \"/users/{id}\" }\n      rewrite: { path: \"/v2/u/{id}\", host: \"internal.test:8080\" }\n      query: { remove: [debug], set: { page: \"1\" }, add: { tag: \"a b\" } }\n      headers: { request: { remove: [x-drop], set: { x-set: s }, add: { x-add: a } } }\n      to: v1\n",
        );
        let mut req = request(
            "GET",
            "http://api.test/users/42?debug=1&page=3&q=x",
            &[("x-drop", "1"), ("x-set", "old")],
        );
        forwarded(&table, &mut req);
        assert_eq!(req.uri().path(), "/v2/u/42");
        assert_eq!(req.uri().query(), Some("q=x&page=1&tag=a%20b"));
        assert!(!req.headers().contains_key("x-drop"));
        assert_eq!(req.headers()["x-set"], "s");
        assert_eq!(req.headers()["x-add"], "a");
        let target = req.extensions().get::<Target>().unwrap();
        assert_eq!(target.authority.as_str(), "internal.test:8080");
    }

    #[tokio::test]
    async fn redirects_build_the_location() {
        let table = table(
            "    - { match: { path_prefix: /old }, redirect: { prefix: /new, status: 308 } }\n    - { match: { path_template: \"/u/{id}\" }, redirect: { scheme: https, path: \"/users/{id}\", strip_query: true } }\n    - { match: { path: /x }, redirect: { to: \"https://example.test/y\", status: 302 } }\n",
        );
        let location = |uri: &str| match route(&table, &mut request("GET", uri, &[])) {
            Ok(Step::Respond(res)) => (
                res.status().as_u16(),
                res.headers()[LOCATION].to_str().unwrap().to_string(),
            ),
            _ => panic!("no redirect for {uri}"),
        };
        assert_eq!(
            location("http://a.test:8080/old/p?q=1"),
            (308, "http://a.test:8080/new/p?q=1".into())
        );
        assert_eq!(
            location("http://a.test:8080/u/7?q=1"),
            (301, "https://a.test/users/7".into())
        );
        assert_eq!(
            location("http://a.test/x"),
            (302, "https://example.test/y".into())
        );
    }

    #[tokio::test]
    async fn allow_deny_and_limits() {
        let table = table(
            "    - { match: { path: /deny }, deny: [192.0.2.0/24], to: v1 }\n    - { match: { path: /allow }, allow: [10.0.0.0/8], to: v1 }\n    - { match: { path: /small }, max_body: \"10\", to: v1 }\n    - { match: { path_prefix: /strict }, encoded_slashes: reject, to: v1 }\n",
        );
        for path in ["/deny", "/allow"] {
            let err = route(
                &table,
                &mut request("GET", &format!("http://a.test{path}"), &[]),
            )
            .err()
            .unwrap();
            assert_eq!(reason(&err.error), Reason::Forbidden, "{path}");
        }
        let mut large = request("POST", "http://a.test/small", &[("content-length", "11")]);
        assert!(matches!(route(&table, &mut large), Ok(Step::Forward(_))));
        let err = dispatch(&mut large).err().unwrap();
        assert_eq!(reason(&err), Reason::BodyTooLarge);
        let mut ok = request("POST", "http://a.test/small", &[("content-length", "10")]);
        forwarded(&table, &mut ok);
        let mut strict = request("GET", "http://a.test/strict/a/b", &[]);
        strict
            .extensions_mut()
            .insert(OriginalPath("/strict/a%2fb".into()));
        let err = route(&table, &mut strict).err().unwrap();
        assert_eq!(reason(&err.error), Reason::BadRequest);
    }

    #[tokio::test]
    async fn splits_follow_the_weights() {
        let table = table("    - { split: [{ to: v1, weight: 90 }, { to: v2, weight: 10 }, { to: v1, weight: 0 }] }\n");
        let mut v2 = 0;
        for _ in 0..10_000 {
            if forwarded(&table, &mut request("GET", "http://a.test/", &[])) == "v2" {
                v2 += 1;
            }
        }
        assert!((800..1200).contains(&v2), "{v2}");
    }
}
