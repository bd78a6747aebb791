//! CORS, right below the edge route layer: preflights (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) of a route with `cors:`
//! are answered here, before authentication (a preflight carries no
//! credentials) and never forwarded; other requests from an allowed origin
//! get the CORS response headers, also on the proxy's own refusals below
//! this layer (401, 403, 429, 5xx), so a page can read them.
//!
//! Decisions:
//! - An allowed preflight is answered 204 with `Access-Control-Allow-Origin`
//!   (the origin itself; `*` when the route allows any origin without
//!   credentials), `-Allow-Methods` (the configured ones, else the route's
//!   `match.methods`, else `GET, HEAD, POST`), `-Allow-Headers` (the
//!   configured ones, else the requested ones echoed), `-Allow-Credentials`,
//!   `-Max-Age` and `Vary`. Requested headers are not checked here: the
//!   browser compares them with `Access-Control-Allow-Headers`.
//! - A preflight from an origin not allowed, or for a method not allowed, is
//!   refused with 403 `forbidden` and no CORS headers, and counted on
//!   `mesh_policy_denials_total{policy="cors",reason="origin"|"method"}`.
//! - A response of a route with `cors:` carries `Vary: Origin` unless the
//!   route answers every origin alike (`*` without credentials); CORS
//!   headers an upstream sets are replaced by the route's (or removed, for
//!   an origin not allowed): the edge is the one place that decides.
//!
//! Reads: the [`MatchedRoute`](super::MatchedRoute). Writes: a refused
//! preflight's reason into [`RequestInfo`]. Errors: `policy::Forbidden`
//! (403) for a refused preflight; errors from below are answered here
//! (through `errors::response`) when the response gets CORS headers.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};
use mesh_api::config as raw;
use tower::layer::layer_fn;
use tower::Layer;

use super::MatchedRoute;
use crate::config::{Errors, RouteSettings};
use crate::http::{Body, HttpService};
use crate::telemetry::RequestInfo;
use crate::BoxError;

/// Methods a preflight may ask for when neither `cors.methods` nor the
/// route's `match.methods` name any.
const DEFAULT_METHODS: &str = "GET, HEAD, POST";

/// The `Vary` of a preflight answer.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// A route's CORS policy, validated.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Allowed origins as written.
    pub origins: Vec<String>,
    /// `*` is among the origins.
    any_origin: bool,
    /// Exact origins, normalised (`scheme://host[:port]`, lower case,
    /// default port dropped).
    exact: Vec<String>,
    /// Host-wildcard origins (`https://*.example.test`).
    wildcard: Vec<WildcardOrigin>,
    /// Allowed methods; empty: the route's, else `GET, HEAD, POST`.
    methods: Vec<Method>,
    /// `Access-Control-Allow-Methods` of the configured methods.
    methods_value: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers`; `None`: echo the requested ones.
    headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`.
    expose: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    credentials: bool,
    /// `Access-Control-Max-Age`, in seconds.
    max_age: Option<HeaderValue>,
}

/// `scheme://*.suffix[:port]`: any host with one or more labels before `suffix`.
#[derive(Debug, Clone)]
struct WildcardOrigin {
    /// Lower case.
    scheme: String,
    /// `.example.test`, lower case.
    suffix: String,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

/// An origin split into its parts, lower case, default port dropped.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, query or user info).
    fn parse(text: &str) -> Result<Origin, &'static str> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host[:port]")?;
        let scheme = scheme.to_ascii_lowercase();
        let mut chars = scheme.chars();
        let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !scheme_ok {
            return Err("the scheme is not valid");
        }
        if rest.is_empty() {
            return Err("the host is missing");
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err("an origin has no path, query or user info");
        }
        let (host, port) = split_port(rest)?;
        let host = host.to_ascii_lowercase();
        if !valid_host(&host) {
            return Err("the host is not valid");
        }
        let port = port.filter(|p| Some(*p) != default_port(&scheme));
        Ok(Origin { scheme, host, port })
    }

    /// `scheme://host[:port]`.
    fn normalized(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// `host[:port]` → host and port; `[v6]:port` kept bracketed.
fn split_port(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => {
                let (host, rest) = text.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return Err("the host is not valid"),
                }
            }
            None => return Err("the host is not valid"),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Some(p),
            _ => return Err("the port is not valid"),
        },
        None => None,
    };
    Ok((host, port))
}

/// A DNS name (letters, digits, `-`, `_`, dots between labels), an IPv4
/// address or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Validates a route's `cors:`.
pub(crate) fn validate(errors: &mut Errors<'_>, at: &str, cors: &raw::Cors) -> CorsSettings {
    let mut settings = CorsSettings {
        origins: cors.origins.clone(),
        credentials: cors.credentials,
        ..CorsSettings::default()
    };
    if cors.origins.is_empty() {
        errors.push(&format!("{at}.origins"), "must list at least one origin");
    }
    for (i, origin) in cors.origins.iter().enumerate() {
        let path = format!("{at}.origins[{i}]");
        let origin = origin.trim();
        if origin == "*" {
            settings.any_origin = true;
            if cors.credentials {
                errors.push(
                    &path,
                    "`*` cannot be used with `credentials: true` (list the origins)",
                );
            }
            continue;
        }
        if origin.eq_ignore_ascii_case("null") {
            errors.push(
                &path,
                "the `null` origin is shared by sandboxed documents and local files; it cannot be allowed",
            );
            continue;
        }
        // `*.example.test` alone means https.
        let written = if origin.starts_with("*.") {
            format!("https://{origin}")
        } else {
            origin.to_string()
        };
        let wildcard = written
            .split_once("://")
            .and_then(|(scheme, rest)| rest.strip_prefix("*.").map(|rest| (scheme, rest)));
        let parsed = match wildcard {
            Some((scheme, rest)) => Origin::parse(&format!("{scheme}://{rest}")).map(|o| (o, true)),
            None => Origin::parse(&written).map(|o| (o, false)),
        };
        match parsed {
            Ok((origin, true)) => settings.wildcard.push(WildcardOrigin {
                scheme: origin.scheme,
                suffix: format!(".{}", origin.host),
                port: origin.port,
            }),
            Ok((origin, false)) => settings.exact.push(origin.normalized()),
            Err(why) => errors.push(
                &path,
                format!(
                    "invalid origin {origin:?}: {why} (expected `*`, `https://app.example.test`, `https://*.example.test` or with a `:port`)"
                ),
            ),
        }
    }
    for (i, method) in cors.methods.iter().enumerate() {
        match Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes()) {
            Ok(method) => settings.methods.push(method),
            Err(_) => errors.push(
                &format!("{at}.methods[{i}]"),
                format!("invalid method {method:?}: must be a token (e.g. PUT)"),
            ),
        }
    }
    if !settings.methods.is_empty() {
        settings.methods_value = joined(settings.methods.iter().map(Method::as_str));
    }
    settings.headers = header_list(errors, &format!("{at}.headers"), &cors.headers, cors);
    settings.expose = header_list(errors, &format!("{at}.expose"), &cors.expose, cors);
    if let Some(max_age) = &cors.max_age {
        let max_age = errors.duration(&format!("{at}.max_age"), max_age);
        settings.max_age = Some(HeaderValue::from(max_age.as_secs()));
    }
    settings
}

/// A list of header names (or `*`, without credentials) as one value;
/// `None` when empty.
fn header_list(
    errors: &mut Errors<'_>,
    at: &str,
    names: &[String],
    cors: &raw::Cors,
) -> Option<HeaderValue> {
    let mut valid = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let name = name.trim();
        if name == "*" {
            if cors.credentials {
                errors.push(
                    &format!("{at}[{i}]"),
                    "`*` is not a wildcard with `credentials: true` (list the headers)",
                );
            } else {
                valid.push("*".to_string());
            }
            continue;
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => valid.push(header.as_str().to_string()),
            Err(_) => errors.push(
                &format!("{at}[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    joined(valid.iter().map(String::as_str))
}

/// `a, b, c` as a header value; `None` when there is nothing to join.
fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

impl CorsSettings {
    /// Whether `origin` (the request's `Origin`) is allowed.
    fn allows(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(text) = origin.to_str() else {
            return false;
        };
        let Ok(origin) = Origin::parse(text) else {
            return false;
        };
        if !self.exact.is_empty() {
            let normalized = origin.normalized();
            if self.exact.contains(&normalized) {
                return true;
            }
        }
        self.wildcard.iter().any(|w| {
            w.scheme == origin.scheme
                && w.port == origin.port
                && origin.host.len() > w.suffix.len()
                && origin.host.ends_with(&w.suffix)
        })
    }

    /// Whether every origin gets the same answer (`*` without credentials).
    fn same_for_every_origin(&self) -> bool {
        self.any_origin && !self.credentials
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.same_for_every_origin() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Whether a preflight may ask for `method`.
    fn allows_method(&self, method: &[u8], route: &RouteSettings) -> bool {
        let listed = if self.methods.is_empty() {
            &route.matches.methods
        } else {
            &self.methods
        };
        if listed.is_empty() {
            return matches!(method, b"GET" | b"HEAD" | b"POST");
        }
        listed.iter().any(|m| m.as_str().as_bytes() == method)
    }

    /// `Access-Control-Allow-Methods`.
    fn methods_value(&self, route: &RouteSettings) -> HeaderValue {
        if let Some(value) = &self.methods_value {
            return value.clone();
        }
        joined(route.matches.methods.iter().map(Method::as_str))
            .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_METHODS))
    }
}

/// What a request of a route with `cors:` gets.
enum Decision {
    /// An allowed preflight, answered here.
    Answer(Response<Body>),
    /// A refused preflight: policy reason.
    Refuse(&'static str),
    /// Forwarded; these headers go on the response.
    Forward(Decoration),
}

/// The CORS headers of a forwarded request's response.
struct Decoration {
    /// `Access-Control-Allow-Origin`; `None`: no origin, or not allowed.
    allow_origin: Option<HeaderValue>,
    credentials: bool,
    expose: Option<HeaderValue>,
    /// Add `Vary: Origin`.
    vary: bool,
}

impl Decoration {
    /// Replaces the response's CORS headers with the route's.
    fn apply(&self, headers: &mut HeaderMap) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        if let Some(origin) = &self.allow_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                headers.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(expose) = &self.expose {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        if self.vary {
            add_vary_origin(headers);
        }
    }
}

/// Adds `Origin` to `Vary` unless it is there already (or `Vary: *`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|item| item == "*" || item.eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// What the route's CORS policy makes of `req`.
fn decide(cors: &CorsSettings, route: &RouteSettings, req: &Request<Body>) -> Decision {
    let headers = req.headers();
    let origin = headers.get(ORIGIN);
    let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(origin), Some(method)) =
        (req.method() == Method::OPTIONS, origin, requested_method)
    {
        if !cors.allows(origin) {
            return Decision::Refuse("origin");
        }
        if !cors.allows_method(method.as_bytes(), route) {
            return Decision::Refuse("method");
        }
        return Decision::Answer(preflight(cors, route, origin, headers));
    }
    Decision::Forward(decoration(cors, origin))
}

/// The CORS headers of a response to a request from `origin`.
fn decoration(cors: &CorsSettings, origin: Option<&HeaderValue>) -> Decoration {
    let allow_origin = origin
        .filter(|origin| cors.allows(origin))
        .map(|origin| cors.allow_origin(origin));
    Decoration {
        allow_origin,
        credentials: cors.credentials,
        expose: cors.expose.clone(),
        vary: !cors.same_for_every_origin(),
    }
}

/// Sets the route's CORS response headers on an answer a layer above this
/// one gave itself (a route's `allow` / `deny` refusal), for a request
/// whose headers were `request`.
pub fn add_response_headers(cors: &CorsSettings, request: &HeaderMap, response: &mut HeaderMap) {
    decoration(cors, request.get(ORIGIN)).apply(response);
}

/// The 204 answer to an allowed preflight.
fn preflight(
    cors: &CorsSettings,
    route: &RouteSettings,
    origin: &HeaderValue,
    request: &HeaderMap,
) -> Response<Body> {
    let mut response = Response::new(crate::http::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, cors.allow_origin(origin));
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, cors.methods_value(route));
    let allow_headers = cors.headers.clone().or_else(|| requested_headers(request));
    if let Some(allow_headers) = allow_headers {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    }
    if cors.credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(max_age) = &cors.max_age {
        headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
    }
    headers.insert(VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    response
}

/// The preflight's `Access-Control-Request-Headers`, keeping the valid
/// header names only, lower case.
fn requested_headers(request: &HeaderMap) -> Option<HeaderValue> {
    let mut names = Vec::new();
    for value in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for name in value.split(',').map(str::trim) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    joined(names.iter().map(HeaderName::as_str))
}

/// The CORS layer of the edge stack.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let decision = req.extensions().get::<MatchedRoute>().and_then(|matched| {
                let route = matched.settings();
                let cors = route.access.cors.as_ref()?;
                Some(decide(cors, route, &req))
            });
            let Some(decision) = decision else {
                return inner.call_ref(req);
            };
            let inner = inner.clone();
            Box::pin(async move {
                let decoration = match decision {
                    Decision::Answer(response) => return Ok(response),
                    Decision::Refuse(reason) => {
                        if let Some(info) = req.extensions().get::<RequestInfo>() {
                            info.set_denied("cors", reason);
                        }
                        tracing::debug!(reason, "CORS preflight refused");
                        return Err(BoxError::from(crate::policy::Forbidden));
                    }
                    Decision::Forward(decoration) => decoration,
                };
                let grpc = crate::http::is_grpc(req.headers());
                let mut response = match inner.call_ref(req).await {
                    Ok(response) => response,
                    // The page may read the proxy's own refusals too.
                    Err(err) if decoration.allow_origin.is_some() => {
                        crate::errors::response(&err, grpc)
                    }
                    Err(err) => return Err(err),
                };
                decoration.apply(response.headers_mut());
                Ok(response)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::route::RouteTable;
    use crate::telemetry::Metrics;
    use crate::tls::IdentityStore;

    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    v1: { discovery: { endpoints: [127.0.0.1:7001] } }\n  routes:\n";

    fn errors_of(cors: &str) -> String {
        crate::config::load_lines(&format!(
            "{EDGE}    - {{ match: {{ path_prefix: / }}, to: v1, cors: {cors} }}\n"
        ))
        .err()
        .unwrap_or_default()
        .join("\n")
    }

    /// A service answering 200 (or failing, for `/fail`) and counting calls.
    fn service(calls: Arc<std::sync::atomic::AtomicUsize>) -> HttpService {
        let app = crate::http::shared_fn(move |req: Request<Body>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if req.uri().path() == "/fail" {
                    return Err(BoxError::from(crate::policy::Forbidden));
                }
                let mut response = Response::new(crate::http::empty());
                response.headers_mut().insert(
                    ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("https://upstream.test"),
                );
                Ok(response)
            }
        });
        layer().layer(app)
    }

    async fn call(
        routes: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Result<Response<Body>, BoxError>, usize) {
        let settings = crate::config::load_str(&format!("{EDGE}{routes}")).unwrap();
        let table = Arc::new(RouteTable::build(
            &settings,
            &RouteTable::default(),
            &Metrics::new(),
            &Arc::new(IdentityStore::new(Default::default())),
        ));
        let routes = Arc::new(arc_swap::ArcSwap::new(table));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stack = tower::ServiceBuilder::new()
            .layer(super::super::route_layer(routes))
            .service(service(calls.clone()));
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://api.test{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(crate::http::empty()).unwrap();
        req.extensions_mut().insert(RequestInfo::default());
        let result = stack.call_ref(req).await;
        (result, calls.load(std::sync::atomic::Ordering::Relaxed))
    }

    const ROUTES: &str = "    - match: { path_prefix: /any }\n      to: v1\n      cors: { origins: [\"*\"] }\n    - match: { path_prefix: / }\n      to: v1\n      cors:\n        origins: [\"https://app.example.test\", \"https://*.apps.example.test:8443\", \"*.wild.test\"]\n        methods: [GET, put]\n        expose: [x-total]\n        credentials: true\n        max_age: 10m\n";

    fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn validation_names_every_bad_field() {
        assert_eq!(errors_of("{ origins: [\"https://a.test\", \"*\"] }"), "");
        let errors = errors_of(
            "{ origins: [\"*\", \"ftp//x\", \"https://a.test/path\", \"https://a.test:0\"], credentials: true, methods: [\"GE T\"], headers: [\"bad header\", \"*\"], max_age: soon }",
        );
        for expected in [
            "cors.origins[0]: `*` cannot be used with `credentials: true`",
            "cors.origins[1]: invalid origin",
            "cors.origins[2]: invalid origin \"https://a.test/path\": an origin has no path",
            "cors.origins[3]: invalid origin \"https://a.test:0\": the port is not valid",
            "cors.methods[0]: invalid method",
            "cors.headers[0]: invalid header name",
            "cors.headers[1]: `*` is not a wildcard",
            "cors.max_age",
        ] {
            assert!(errors.contains(expected), "{expected} not in {errors}");
        }
        assert!(errors_of("{ origins: [] }").contains("at least one origin"));
    }

    #[test]
    fn origins_match_exactly_or_by_host_wildcard() {
        let settings = crate::config::load_str(&format!("{EDGE}{ROUTES}")).unwrap();
        let route = &settings.edge.as_ref().unwrap().routes[1];
        let cors = route.access.cors.as_ref().unwrap();
        let allows = |origin: &'static str| cors.allows(&HeaderValue::from_static(origin));
        assert!(allows("https://app.example.test"));
        assert!(allows("HTTPS://App.Example.Test:443"));
        assert!(!allows("http://app.example.test"));
        assert!(!allows("https://app.example.test.evil.test"));
        assert!(allows("https://a.apps.example.test:8443"));
        assert!(allows("https://a.b.apps.example.test:8443"));
        assert!(!allows("https://apps.example.test:8443"));
        assert!(!allows("https://a.apps.example.test"));
        assert!(!allows("https://xapps.example.test:8443"));
        assert!(allows("https://x.wild.test"));
        assert!(!allows("null"));
        assert!(!allows("https://x.wild.test/path"));
    }

    #[tokio::test]
    async fn preflights_are_answered_here_and_refusals_name_no_origin() {
        let headers = [
            ("origin", "https://app.example.test"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "X-A, x-b"),
        ];
        let (result, calls) = call(ROUTES, "OPTIONS", "/x", &headers).await;
        let response = result.unwrap();
        assert_eq!(calls, 0, "a preflight is never forwarded");
        assert_eq!(response.status(), 204);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.example.test")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("GET, PUT")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("x-a, x-b")
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(header(&response, "access-control-max-age"), Some("600"));
        assert_eq!(header(&response, "vary"), Some(PREFLIGHT_VARY));

        let any = [
            ("origin", "https://elsewhere.test"),
            ("access-control-request-method", "POST"),
        ];
        let (result, _) = call(ROUTES, "OPTIONS", "/any", &any).await;
        let response = result.unwrap();
        assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some(DEFAULT_METHODS)
        );

        for (origin, method, reason) in [
            ("https://evil.test", "PUT", "origin"),
            ("https://app.example.test", "DELETE", "method"),
        ] {
            let req_headers = [
                ("origin", origin),
                ("access-control-request-method", method),
            ];
            let (result, calls) = call(ROUTES, "OPTIONS", "/x", &req_headers).await;
            let err = result.err().unwrap();
            assert_eq!(
                crate::errors::reason(&err),
                crate::errors::Reason::Forbidden
            );
            assert_eq!(calls, 0, "{reason}");
        }
    }

    #[tokio::test]
    async fn responses_carry_cors_headers_for_allowed_origins_only() {
        let allowed = [("origin", "https://app.example.test")];
        let (result, calls) = call(ROUTES, "GET", "/x", &allowed).await;
        let response = result.unwrap();
        assert_eq!(calls, 1);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.example.test")
        );
        assert_eq!(
            header(&response, "access-control-expose-headers"),
            Some("x-total")
        );
        assert_eq!(header(&response, "vary"), Some("Origin"));

        // The proxy's own refusals below are readable by the page.
        let (result, _) = call(ROUTES, "GET", "/fail", &allowed).await;
        let response = result.unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.example.test")
        );

        let (result, _) = call(ROUTES, "GET", "/x", &[("origin", "https://evil.test")]).await;
        let response = result.unwrap();
        assert_eq!(header(&response, "access-control-allow-origin"), None);
        assert_eq!(header(&response, "access-control-allow-credentials"), None);
        assert_eq!(header(&response, "vary"), Some("Origin"));

        // Not a preflight without Access-Control-Request-Method: forwarded.
        let (result, calls) = call(ROUTES, "OPTIONS", "/x", &allowed).await;
        assert!(result.is_ok());
        assert_eq!(calls, 1);
    }
}
