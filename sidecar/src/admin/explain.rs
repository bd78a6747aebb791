//! `POST /explain`: what the proxy would do with a request, without
//! sending anything. The synthetic request goes through the listener's
//! real layers (hygiene, then the edge front and routes, or inbound policy
//! and routing) down to a stub that records where it would have been sent
//! instead of the resilience and forward layers.
//! Reads: the running settings and route table, the cluster's balancer
//! (one pick, nothing sent). Writes: nothing.
//! Errors: a request that cannot be built is a 400 of the admin API; a
//! request the proxy would refuse is an answer (`status`, `error`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use mesh_api::admin::{ExplainAnswer, ExplainRequest, PolicyOutcome, SkippedRoute};
use mesh_api::config::Mode;
use tower::layer::layer_fn;
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::edge::matcher::{Captures, RequestView};
use crate::errors::{Reason, REASON_HEADER};
use crate::http::{hygiene, Body, ConnInfo, HttpService};
use crate::policy::authz;
use crate::route::{RouteKind, Target};
use crate::stack::Runtime;
use crate::telemetry::RequestInfo;
use crate::{edge, lock, policy, route, BoxError};

/// What the probes saw on the way down.
#[derive(Default)]
struct Seen {
    /// The path right above routing: hygiene's normal form.
    normalized: Option<String>,
    /// Edge routes tried before the one that matched (or all).
    skipped: Vec<SkippedRoute>,
    /// Where the request would go, and its target as forwarded.
    target: Option<(Target, String)>,
}

/// Explains `ask` on this proxy; `Err` when the request cannot be built.
pub async fn explain(rt: &Runtime, ask: ExplainRequest) -> Result<ExplainAnswer, String> {
    let settings = rt.settings.load_full();
    let table = rt.routes.load_full();
    let kind = listener_kind(&settings, &table, &ask)?;
    let listener = listener_name(&kind);
    let mut req = synthetic_request(&settings, &kind, &listener, &ask)?;
    let method = req.method().clone();
    let info = RequestInfo::default();
    req.extensions_mut().insert(info.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let service = stack(rt, &kind, seen.clone());
    let result = service.oneshot(req).await;

    let mut seen = std::mem::take(&mut *lock(&seen));
    let mut answer = ExplainAnswer {
        listener: listener.to_string(),
        direction: match kind {
            RouteKind::Edge(_) => "edge",
            RouteKind::Inbound => "inbound",
            _ => "outbound",
        }
        .into(),
        normalized_path: seen.normalized.clone(),
        route: info.route().map(|r| r.to_string()),
        skipped_routes: std::mem::take(&mut seen.skipped),
        ..ExplainAnswer::default()
    };
    match result {
        // The proxy answers itself: a refusal (the edge front turns errors
        // into answers) or a redirect.
        Ok(response) if seen.target.is_none() => {
            answer.status = Some(response.status().as_u16());
            answer.error = response
                .headers()
                .get(REASON_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| format!("redirect to {l}"));
            let body = response.into_body().collect().await.ok();
            answer.message = location.or_else(|| {
                let body: serde_json::Value = serde_json::from_slice(&body?.to_bytes()).ok()?;
                body["message"].as_str().map(str::to_string)
            });
        }
        Ok(_) => {}
        Err(err) => {
            let refusal = crate::errors::response(&err, false);
            answer.status = Some(refusal.status().as_u16());
            answer.error = Some(crate::errors::reason(&err).as_str().to_string());
            answer.message = Some(err.to_string());
        }
    }
    answer.policies.push(match &seen.normalized {
        Some(path) => PolicyOutcome {
            policy: "hygiene".into(),
            outcome: "pass".into(),
            detail: format!("path {path}"),
        },
        None => PolicyOutcome {
            policy: "hygiene".into(),
            outcome: "reject".into(),
            detail: answer.error.clone().unwrap_or_default(),
        },
    });
    if kind == RouteKind::Inbound && seen.normalized.is_some() {
        answer
            .policies
            .push(authz_outcome(&settings, &ask, &method, &seen));
    }
    if let (RouteKind::Edge(_), Some(name)) = (&kind, info.route()) {
        if let Some(route) = table
            .edge_routes()
            .routes()
            .iter()
            .find(|r| r.name == *name)
            .filter(|r| !r.allow.is_empty() || !r.deny.is_empty())
        {
            let denied = answer.error.as_deref() == Some(Reason::Forbidden.as_str());
            answer.policies.push(PolicyOutcome {
                policy: "route_access".into(),
                outcome: if denied { "deny" } else { "allow" }.into(),
                detail: format!(
                    "route {} (allow {}, deny {}), client {}",
                    route.name,
                    route.allow.len(),
                    route.deny.len(),
                    ask.client.as_deref().unwrap_or("not given")
                ),
            });
        }
    }
    if let Some((target, forwarded)) = seen.target {
        let cluster = &target.cluster;
        answer.cluster = Some(cluster.name().to_string());
        answer.upstream_path = Some(forwarded);
        answer.endpoints = cluster.info().endpoints;
        answer.preferred_endpoint = cluster.balancer.pick().map(|e| e.addr.to_string());
    }
    Ok(answer)
}

/// The listener named in `ask`, else the one the request would most likely
/// meet: the first edge listener, the forward proxy when an upstream claims
/// the authority, else inbound.
fn listener_kind(
    settings: &crate::config::Settings,
    table: &route::RouteTable,
    ask: &ExplainRequest,
) -> Result<RouteKind, String> {
    let Some(name) = ask.listener.as_deref() else {
        if settings.mode == Mode::Edge {
            return Ok(RouteKind::Edge(0));
        }
        let claimed = http::uri::Authority::try_from(ask.authority.as_str())
            .ok()
            .is_some_and(|a| table.by_authority(&a).is_some());
        return Ok(if claimed || settings.inbound.is_none() {
            RouteKind::Proxy
        } else {
            RouteKind::Inbound
        });
    };
    let edge_listeners = settings.edge.as_ref().map_or(0, |e| e.listeners.len());
    match name {
        "inbound" => Ok(RouteKind::Inbound),
        "proxy" => Ok(RouteKind::Proxy),
        "transparent" => Ok(RouteKind::Transparent),
        "edge" if edge_listeners > 0 => Ok(RouteKind::Edge(0)),
        _ => {
            if let Some(index) = name.strip_prefix("edge:") {
                return index
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < edge_listeners)
                    .map(RouteKind::Edge)
                    .ok_or_else(|| format!("no edge listener {name:?}"));
            }
            let upstream = name.strip_prefix("outbound:").unwrap_or(name);
            settings
                .outbound
                .upstreams
                .iter()
                .find(|u| &*u.name == upstream && u.listen.is_some())
                .map(|u| RouteKind::Upstream(u.name.clone()))
                .ok_or_else(|| format!("no listener {name:?}"))
        }
    }
}

/// The listener's name on metrics and in the access log.
fn listener_name(kind: &RouteKind) -> String {
    match kind {
        RouteKind::Inbound => "inbound".into(),
        RouteKind::Proxy => "proxy".into(),
        RouteKind::Transparent => "transparent".into(),
        RouteKind::Upstream(name) => format!("outbound:{name}"),
        RouteKind::Edge(index) => format!("edge:{index}"),
    }
}

/// The request as the listener would receive it (HTTP/1.1, origin form).
fn synthetic_request(
    settings: &crate::config::Settings,
    kind: &RouteKind,
    listener: &str,
    ask: &ExplainRequest,
) -> Result<Request<Body>, String> {
    let method = Method::from_bytes(ask.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|_| "method: not a valid HTTP method".to_string())?;
    let path = ask.path.as_deref().unwrap_or("/");
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("path: not a valid request target: {e}"))?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(crate::http::empty())
        .map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    for (name, value) in &ask.headers {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header {name:?}: not a valid name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header {name}: not a valid value"))?;
        headers.append(name, value);
    }
    if !headers.contains_key(http::header::HOST) {
        let host = HeaderValue::from_str(&ask.authority)
            .map_err(|_| "authority: not a valid host".to_string())?;
        headers.insert(http::header::HOST, host);
    }
    let peer = match ask.client.as_deref() {
        Some(client) => Some(
            client
                .parse::<SocketAddr>()
                .or_else(|_| client.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
                .map_err(|_| format!("client: {client:?} is not an IP address"))?,
        ),
        None => None,
    };
    let tls = match kind {
        RouteKind::Edge(index) => settings
            .edge
            .as_ref()
            .and_then(|e| e.listeners.get(*index))
            .is_some_and(|l| l.tls.is_some()),
        _ => false,
    };
    req.extensions_mut().insert(ConnInfo {
        peer_identity: ask.identity.as_deref().map(Arc::from),
        peer,
        tls,
        listener: Some(Arc::from(listener)),
        ..ConnInfo::default()
    });
    Ok(req)
}

/// The listener's layers from hygiene to routing, then a stub.
fn stack(rt: &Runtime, kind: &RouteKind, seen: Arc<Mutex<Seen>>) -> HttpService {
    let probe = probe_layer(rt, seen.clone());
    let stub = stub(seen);
    match kind {
        RouteKind::Edge(_) => ServiceBuilder::new()
            .layer(hygiene::layer(rt.settings.clone()))
            .layer(edge::front_layer(rt.settings.clone()))
            .layer(probe)
            .layer(edge::route_layer(rt.routes.clone()))
            .layer(edge::dispatch_layer())
            .service(stub),
        RouteKind::Inbound => ServiceBuilder::new()
            .layer(hygiene::layer(rt.settings.clone()))
            .layer(probe)
            .layer(policy::layer(rt.settings.clone()))
            .layer(route::layer(rt.routes.clone(), kind.clone()))
            .service(stub),
        _ => ServiceBuilder::new()
            .layer(hygiene::layer(rt.settings.clone()))
            .layer(probe)
            .layer(route::layer(rt.routes.clone(), kind.clone()))
            .service(stub),
    }
}

/// Records the normalised path and, for edge routes, why each route
/// before the matching one did not match.
fn probe_layer(
    rt: &Runtime,
    seen: Arc<Mutex<Seen>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    let routes = rt.routes.clone();
    layer_fn(move |inner: HttpService| {
        let seen = seen.clone();
        let routes = routes.clone();
        crate::http::shared_fn(move |req: Request<Body>| {
            let mut seen_now = lock(&seen);
            seen_now.normalized = Some(req.uri().path().to_string());
            let table = routes.load();
            let authority = crate::http::authority(&req).ok();
            let view = RequestView {
                host: authority.as_ref().map(|a| a.host()),
                path: req.uri().path(),
                query: req.uri().query(),
                method: req.method(),
                headers: req.headers(),
            };
            for route in table.edge_routes().routes() {
                match route
                    .matches
                    .first_mismatch(&view, &mut Captures::default())
                {
                    Some(condition) => seen_now.skipped.push(SkippedRoute {
                        name: route.name.to_string(),
                        reason: condition.to_string(),
                    }),
                    None => break,
                }
            }
            drop(seen_now);
            inner.call_ref(req)
        })
    })
}

/// Where `forward` would be: records the target and answers 200.
fn stub(seen: Arc<Mutex<Seen>>) -> HttpService {
    crate::http::shared_fn(move |req: Request<Body>| {
        if let Some(target) = req.extensions().get::<Target>() {
            let forwarded = req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
            lock(&seen).target = Some((target.clone(), forwarded));
        }
        async move { Ok::<_, BoxError>(Response::new(crate::http::empty())) }
    })
}

/// The inbound authz rules' verdict on the normalised request.
fn authz_outcome(
    settings: &crate::config::Settings,
    ask: &ExplainRequest,
    method: &Method,
    seen: &Seen,
) -> PolicyOutcome {
    let caller = ask.identity.as_deref();
    let rules = settings.inbound.as_ref().and_then(|i| i.authz.as_ref());
    let (outcome, detail) = match (rules, &seen.normalized) {
        (None, _) => ("allow", "no authz rules".to_string()),
        (Some(rules), Some(path)) => {
            let access = authz::Access::Http {
                method: method.as_str(),
                path,
            };
            let allowed = authz::allows(rules, caller, access);
            (
                if allowed { "allow" } else { "deny" },
                format!("caller {}", caller.unwrap_or("(no verified identity)")),
            )
        }
        (Some(_), None) => ("deny", String::new()),
    };
    PolicyOutcome {
        policy: "authz".into(),
        outcome: outcome.into(),
        detail,
    }
}
