//! `edge.routes` validated and compiled: matchers (regular expressions,
//! templates), rewrites and header changes built once here, never per
//! request. Every error names the route field (`edge.routes[2].match.path_regex`).

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, StatusCode};
use mesh_api::config as raw;
use mesh_api::config::EncodedSlashes;
use regex::Regex;

use super::Errors;
use crate::cidr::Cidr;
use crate::edge::action::{RedirectSettings, RouteAction, SplitSettings};
use crate::edge::matcher::{HostMatch, PathMatch, PathTemplate, RequestMatch, ValueMatcher};
use crate::edge::rewrite::{
    check_replacement, valid_path_text, HeaderChanges, PathRewrite, Pieces, QueryChanges,
};

/// One compiled route.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Name on metrics and in the access log.
    pub name: Arc<str>,
    /// Conditions, all of which must hold.
    pub matches: RequestMatch,
    /// Client networks admitted; empty: all.
    pub allow: Vec<Cidr>,
    /// Client networks refused.
    pub deny: Vec<Cidr>,
    /// Forward (to one upstream or a split) or redirect.
    pub action: RouteAction,
    /// The path rewrite, if any.
    pub path_rewrite: Option<PathRewrite>,
    /// The authority sent upstream instead of the request's.
    pub host_rewrite: Option<Authority>,
    /// Query parameter changes.
    pub query: Option<QueryChanges>,
    /// Header changes on the request.
    pub request_headers: HeaderChanges,
    /// Header changes on the response.
    pub response_headers: HeaderChanges,
    /// What percent-encoded slashes in the path do.
    pub encoded_slashes: EncodedSlashes,
    /// Largest request body in bytes; `None`: `limits.max_body` alone.
    pub max_body: Option<u64>,
    /// Authentication, requirements, rate limits and CORS.
    pub access: RouteAccess,
    /// Response compression (and request decompression).
    pub compress: Option<Arc<crate::edge::compress::CompressSettings>>,
    /// Response caching.
    pub cache: Option<Arc<crate::edge::cache::CacheSettings>>,
    /// Body transformation.
    pub transform: Option<Arc<crate::edge::transform::TransformSettings>>,
    /// REST/JSON ↔ gRPC transcoding.
    pub grpc_json: Option<Arc<crate::translate::grpc_json::GrpcJsonSettings>>,
    /// REST → WebSocket.
    pub rest_ws: Option<Arc<crate::translate::rest_ws::RestWsSettings>>,
}

/// A route's access control, validated; the names resolve.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    /// Authenticators, any of which admits a request; empty: none needed.
    pub auth: Vec<Arc<str>>,
    /// What an authenticated caller must have.
    pub require: Option<crate::policy::auth::RequireSettings>,
    /// Rate limits, all of which apply.
    pub rate_limits: Vec<Arc<str>>,
    /// CORS.
    pub cors: Option<crate::edge::cors::CorsSettings>,
}

/// Names a route may refer to.
pub(super) struct Known<'a> {
    /// Upstreams.
    pub upstreams: &'a [&'a str],
    /// Authenticators of `edge.auth`.
    pub auth: &'a [Arc<str>],
    /// Limits of `edge.rate_limits`.
    pub rate_limits: &'a [Arc<str>],
    /// The config file's directory: relative paths start here.
    pub base: &'a std::path::Path,
}

/// Methods a route may name.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn validate_routes(
    errors: &mut Errors<'_>,
    routes: &[raw::Route],
    known: &Known<'_>,
) -> Vec<RouteSettings> {
    let upstreams = known.upstreams;
    let mut compiled: Vec<RouteSettings> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("edge.routes[{i}]");
        let mut settings = validate_route(errors, &at, i, route, upstreams);
        settings.access = validate_access(errors, &at, route, known);
        validate_features(errors, &at, route, known, &mut settings);
        if compiled.iter().any(|r| r.name == settings.name) {
            errors.push(
                &format!("{at}.name"),
                format!("route name {:?} is used twice", settings.name),
            );
        }
        compiled.push(settings);
    }
    compiled
}

fn validate_route(
    errors: &mut Errors<'_>,
    at: &str,
    index: usize,
    route: &raw::Route,
    upstreams: &[&str],
) -> RouteSettings {
    let name: Arc<str> = match &route.name {
        Some(name) if name.trim().is_empty() => {
            errors.push(&format!("{at}.name"), "must not be empty");
            Arc::from(format!("route-{index}"))
        }
        Some(name) => Arc::from(name.as_str()),
        None => Arc::from(format!("route-{index}")),
    };
    let (matches, template, prefix) =
        validate_match(errors, &format!("{at}.match"), &route.matches);
    let action = validate_action(
        errors,
        at,
        route,
        upstreams,
        template.as_ref(),
        prefix.as_deref(),
    );
    let redirecting = matches!(action, RouteAction::Redirect(_));
    if redirecting {
        for (field, set) in [
            ("rewrite", route.rewrite.is_some()),
            ("query", route.query.is_some()),
            (
                "headers.request",
                route
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.request != raw::HeaderOps::default()),
            ),
            ("max_body", route.max_body.is_some()),
        ] {
            if set {
                errors.push(
                    &format!("{at}.{field}"),
                    "does not apply to a redirect route (nothing is forwarded)",
                );
            }
        }
    }
    let (path_rewrite, host_rewrite) = route
        .rewrite
        .as_ref()
        .map(|rewrite| {
            validate_rewrite(
                errors,
                &format!("{at}.rewrite"),
                rewrite,
                template.as_ref(),
                prefix.as_deref(),
            )
        })
        .unwrap_or((None, None));
    let query = route.query.as_ref().map(|query| QueryChanges {
        remove: query_names(errors, &format!("{at}.query.remove"), query.remove.iter()),
        set: query_pairs(errors, &format!("{at}.query.set"), &query.set),
        add: query_pairs(errors, &format!("{at}.query.add"), &query.add),
    });
    let (request_headers, response_headers) = match &route.headers {
        Some(rules) => (
            header_changes(errors, &format!("{at}.headers.request"), &rules.request),
            header_changes(errors, &format!("{at}.headers.response"), &rules.response),
        ),
        None => (HeaderChanges::default(), HeaderChanges::default()),
    };
    let max_body =
        route
            .max_body
            .as_ref()
            .and_then(|text| match mesh_api::units::parse_size(text) {
                Ok(0) => None,
                Ok(size) => Some(size),
                Err(err) => {
                    errors.push(&format!("{at}.max_body"), err);
                    None
                }
            });
    RouteSettings {
        name,
        matches,
        allow: super::edge::cidrs(errors, &format!("{at}.allow"), &route.allow),
        deny: super::edge::cidrs(errors, &format!("{at}.deny"), &route.deny),
        action,
        path_rewrite,
        host_rewrite,
        query,
        request_headers,
        response_headers,
        encoded_slashes: route.encoded_slashes,
        max_body,
        access: RouteAccess::default(),
        compress: None,
        cache: None,
        transform: None,
        grpc_json: None,
        rest_ws: None,
    }
}

/// A route's `compress`, `cache`, `transform` and `grpc_json`.
fn validate_features(
    errors: &mut Errors<'_>,
    at: &str,
    route: &raw::Route,
    known: &Known<'_>,
    settings: &mut RouteSettings,
) {
    settings.compress = route
        .compress
        .as_ref()
        .and_then(|raw| super::compress::validate(errors, &format!("{at}.compress"), raw));
    settings.cache = route
        .cache
        .as_ref()
        .and_then(|raw| super::cache::validate(errors, &format!("{at}.cache"), raw));
    settings.transform = route
        .transform
        .as_ref()
        .and_then(|raw| super::transform::validate(errors, &format!("{at}.transform"), raw));
    settings.rest_ws = route
        .rest_to_websocket
        .as_ref()
        .and_then(|raw| super::rest_ws::validate(errors, &format!("{at}.rest_to_websocket"), raw));
    settings.grpc_json = route.grpc_json.as_ref().and_then(|raw| {
        super::grpc_json::validate(errors, &format!("{at}.grpc_json"), raw, known.base)
    });
    let forwards = route.to.is_some() || !route.split.is_empty();
    for (field, set) in [
        ("rest_to_websocket", route.rest_to_websocket.is_some()),
        ("grpc_json", route.grpc_json.is_some()),
    ] {
        if set && !forwards {
            errors.push(
                &format!("{at}.{field}"),
                "needs an upstream to send to: set the route's `to` (or `split`)",
            );
        }
    }
    if route.grpc_json.is_some() {
        // The transcoder picks the gRPC path; a rewrite below it would change it.
        if route.rewrite.is_some() {
            errors.push(
                &format!("{at}.rewrite"),
                "does not apply to a grpc_json route (the gRPC method decides the path)",
            );
        }
        if route.encoded_slashes == EncodedSlashes::Keep {
            errors.push(
                &format!("{at}.encoded_slashes"),
                "keep does not apply to a grpc_json route (the gRPC method decides the path)",
            );
        }
    }
}

/// A route's `auth`, `require`, `rate_limit` and `cors`: every name known.
fn validate_access(
    errors: &mut Errors<'_>,
    at: &str,
    route: &raw::Route,
    known: &Known<'_>,
) -> RouteAccess {
    let mut resolve = |field: &str, names: &[String], defined: &[Arc<str>], what: &str| {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match defined.iter().find(|d| ***d == **name) {
                Some(found) => out.push(found.clone()),
                None => {
                    let list: Vec<&str> = defined.iter().map(|d| &**d).collect();
                    errors.push(
                        &format!("{at}.{field}[{i}]"),
                        format!(
                            "unknown {what} {name:?} (defined: {})",
                            if list.is_empty() {
                                "none".to_string()
                            } else {
                                list.join(", ")
                            }
                        ),
                    );
                }
            }
        }
        out
    };
    let auth = resolve("auth", &route.auth, known.auth, "authenticator");
    let rate_limits = resolve(
        "rate_limit",
        &route.rate_limit,
        known.rate_limits,
        "rate limit",
    );
    let require = route.require.as_ref().map(|require| {
        if route.auth.is_empty() {
            errors.push(&format!("{at}.require"), "needs `auth` on the route");
        }
        crate::policy::auth::validate_require(errors, &format!("{at}.require"), require)
    });
    let cors = route
        .cors
        .as_ref()
        .map(|cors| crate::edge::cors::validate(errors, &format!("{at}.cors"), cors));
    RouteAccess {
        auth,
        require,
        rate_limits,
        cors,
    }
}

/// The compiled conditions, the path template (for captures) and the path
/// prefix (for prefix rewrites), if the route has them.
fn validate_match(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::RouteMatch,
) -> (RequestMatch, Option<PathTemplate>, Option<String>) {
    let mut hosts = Vec::new();
    for (i, host) in raw.host.0.iter().enumerate() {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        match host.strip_prefix("*.") {
            Some(suffix) if super::valid_hostname(suffix) => {
                hosts.push(HostMatch::Suffix(format!(".{suffix}")))
            }
            None if super::valid_hostname(host) => hosts.push(HostMatch::Exact(host.to_string())),
            _ => errors.push(
                &format!("{at}.host[{i}]"),
                format!("invalid host name {host:?} (exact, or *. and a suffix; no port)"),
            ),
        }
    }
    let kinds: Vec<&str> = [
        ("path", raw.path.is_some()),
        ("path_prefix", raw.path_prefix.is_some()),
        ("path_regex", raw.path_regex.is_some()),
        ("path_template", raw.path_template.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    if kinds.len() > 1 {
        errors.push(
            at,
            format!(
                "at most one of path, path_prefix, path_regex, path_template; got {}",
                kinds.join(", ")
            ),
        );
    }
    let mut template = None;
    let mut prefix = None;
    let path = if let Some(path) = &raw.path {
        check_path(errors, &format!("{at}.path"), path);
        Some(PathMatch::Exact(path.clone()))
    } else if let Some(text) = &raw.path_prefix {
        check_path(errors, &format!("{at}.path_prefix"), text);
        let trimmed = match text.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        prefix = Some(trimmed.to_string());
        Some(PathMatch::Prefix(trimmed.to_string()))
    } else if let Some(pattern) = &raw.path_regex {
        anchored_regex(errors, &format!("{at}.path_regex"), pattern).map(PathMatch::Regex)
    } else if let Some(text) = &raw.path_template {
        match PathTemplate::parse(text) {
            Ok(parsed) => {
                let literal_ok = parsed.segments.iter().all(|s| match s {
                    crate::edge::matcher::Segment::Literal(text) => valid_path_text(text),
                    _ => true,
                });
                if !literal_ok {
                    errors.push(
                        &format!("{at}.path_template"),
                        format!("{text:?} has characters a path cannot carry unencoded"),
                    );
                }
                template = Some(parsed.clone());
                Some(PathMatch::Template(parsed))
            }
            Err(err) => {
                errors.push(&format!("{at}.path_template"), err);
                None
            }
        }
    } else {
        None
    };
    let mut methods = Vec::new();
    for (i, method) in raw.methods.iter().enumerate() {
        match METHODS.contains(&method.as_str()) {
            true => methods.extend(Method::from_bytes(method.as_bytes()).ok()),
            false => errors.push(
                &format!("{at}.methods[{i}]"),
                format!(
                    "unknown method {method:?} (upper case: {})",
                    METHODS.join(", ")
                ),
            ),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let path = format!("{at}.headers.{name}");
        let matcher = value_matcher(errors, &path, value);
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => headers.extend(matcher.map(|m| (header, m))),
            Err(_) => errors.push(&path, format!("invalid header name {name:?}")),
        }
    }
    let mut cookies = Vec::new();
    for (name, value) in &raw.cookies {
        let path = format!("{at}.cookies.{name}");
        let matcher = value_matcher(errors, &path, value);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            errors.push(&path, format!("invalid cookie name {name:?}"));
        }
        cookies.extend(matcher.map(|m| (name.clone(), m)));
    }
    let mut query = Vec::new();
    for (name, value) in &raw.query {
        let path = format!("{at}.query.{name}");
        let matcher = value_matcher(errors, &path, value);
        if name.is_empty() {
            errors.push(&path, "a query parameter name cannot be empty");
        }
        query.extend(matcher.map(|m| (name.clone(), m)));
    }
    let compiled = RequestMatch {
        hosts,
        path,
        methods,
        headers,
        cookies,
        query,
    };
    (compiled, template, prefix)
}

fn check_path(errors: &mut Errors<'_>, at: &str, path: &str) {
    if !path.starts_with('/') {
        errors.push(at, format!("must start with /, got {path:?}"));
    } else if !valid_path_text(path) {
        errors.push(
            at,
            format!("{path:?} has characters a path cannot carry unencoded"),
        );
    }
}

/// A regular expression the whole value must match.
fn anchored_regex(errors: &mut Errors<'_>, at: &str, pattern: &str) -> Option<Arc<Regex>> {
    regex(errors, at, &format!("^(?:{pattern})$"))
}

fn regex(errors: &mut Errors<'_>, at: &str, pattern: &str) -> Option<Arc<Regex>> {
    match Regex::new(pattern) {
        Ok(regex) => Some(Arc::new(regex)),
        Err(err) => {
            let err = err.to_string();
            let first = err.lines().last().unwrap_or_default().trim();
            errors.push(at, format!("invalid regular expression: {first}"));
            None
        }
    }
}

fn value_matcher(
    errors: &mut Errors<'_>,
    at: &str,
    value: &raw::ValueMatch,
) -> Option<ValueMatcher> {
    let spec = match value {
        raw::ValueMatch::Exact(exact) => return Some(ValueMatcher::Exact(exact.clone())),
        raw::ValueMatch::Spec(spec) => spec,
    };
    let set = [
        spec.exact.is_some(),
        spec.prefix.is_some(),
        spec.regex.is_some(),
        spec.present.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if set != 1 {
        errors.push(at, "exactly one of exact, prefix, regex, present");
        return None;
    }
    if let Some(exact) = &spec.exact {
        Some(ValueMatcher::Exact(exact.clone()))
    } else if let Some(prefix) = &spec.prefix {
        Some(ValueMatcher::Prefix(prefix.clone()))
    } else if let Some(pattern) = &spec.regex {
        anchored_regex(errors, &format!("{at}.regex"), pattern).map(ValueMatcher::Regex)
    } else {
        spec.present.map(ValueMatcher::Present)
    }
}

/// A `tchar` of RFC 9110 (header and cookie names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn validate_action(
    errors: &mut Errors<'_>,
    at: &str,
    route: &raw::Route,
    upstreams: &[&str],
    template: Option<&PathTemplate>,
    prefix: Option<&str>,
) -> RouteAction {
    let chosen = [
        route.to.is_some(),
        !route.split.is_empty(),
        route.redirect.is_some(),
        route.aggregate.is_some(),
        route.websocket_bridge.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if chosen != 1 {
        errors.push(
            at,
            "exactly one of to, split, redirect, aggregate, websocket_bridge",
        );
    }
    if let Some(bridge) = &route.websocket_bridge {
        return RouteAction::WebsocketBridge(super::ws_bridge::validate(
            errors,
            &format!("{at}.websocket_bridge"),
            bridge,
            upstreams,
        ));
    }
    if let Some(aggregate) = &route.aggregate {
        return RouteAction::Aggregate(super::aggregate::validate(
            errors,
            &format!("{at}.aggregate"),
            aggregate,
            upstreams,
        ));
    }
    let mut known = |path: &str, name: &str| {
        if !upstreams.contains(&name) {
            let mut defined: Vec<&str> = upstreams.to_vec();
            defined.sort_unstable();
            let defined = if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            };
            errors.push(
                path,
                format!("unknown upstream {name:?} (defined: {defined})"),
            );
        }
        Arc::from(name)
    };
    if let Some(to) = &route.to {
        let upstream = known(&format!("{at}.to"), to);
        return RouteAction::Forward(vec![SplitSettings {
            upstream,
            weight: 1,
        }]);
    }
    if !route.split.is_empty() {
        let split: Vec<SplitSettings> = route
            .split
            .iter()
            .enumerate()
            .map(|(i, target)| SplitSettings {
                upstream: known(&format!("{at}.split[{i}].to"), &target.to),
                weight: target.weight,
            })
            .collect();
        let total: u64 = split.iter().map(|s| u64::from(s.weight)).sum();
        if total == 0 {
            errors.push(&format!("{at}.split"), "weights are all zero");
        } else if total > u64::from(u32::MAX) {
            errors.push(
                &format!("{at}.split"),
                "weights add up to more than 2^32 - 1",
            );
        }
        return RouteAction::Forward(split);
    }
    match &route.redirect {
        Some(redirect) => RouteAction::Redirect(validate_redirect(
            errors,
            &format!("{at}.redirect"),
            redirect,
            template,
            prefix,
        )),
        None => RouteAction::Forward(Vec::new()),
    }
}

fn validate_redirect(
    errors: &mut Errors<'_>,
    at: &str,
    redirect: &raw::Redirect,
    template: Option<&PathTemplate>,
    prefix: Option<&str>,
) -> RedirectSettings {
    let status = StatusCode::from_u16(redirect.status)
        .ok()
        .filter(|s| matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308))
        .unwrap_or_else(|| {
            errors.push(
                &format!("{at}.status"),
                format!("must be 301, 302, 303, 307 or 308, got {}", redirect.status),
            );
            StatusCode::MOVED_PERMANENTLY
        });
    let to = redirect.to.as_ref().and_then(|to| {
        let absolute = to
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some());
        if absolute.is_none() {
            errors.push(
                &format!("{at}.to"),
                format!("must be an absolute http or https URL, got {to:?}"),
            );
        }
        let parts_set = redirect.scheme.is_some()
            || redirect.host.is_some()
            || redirect.port.is_some()
            || redirect.path.is_some()
            || redirect.prefix.is_some()
            || redirect.strip_query;
        if parts_set {
            errors.push(
                &format!("{at}.to"),
                "replaces the whole URL: scheme, host, port, path, prefix and strip_query cannot be set with it",
            );
        }
        absolute.and_then(|_| HeaderValue::from_str(to).ok())
    });
    let scheme = redirect.scheme.as_deref().and_then(|scheme| match scheme {
        "http" => Some("http"),
        "https" => Some("https"),
        other => {
            errors.push(
                &format!("{at}.scheme"),
                format!("must be http or https, got {other:?}"),
            );
            None
        }
    });
    let host = redirect.host.as_ref().map(|host| {
        let host = host.to_ascii_lowercase();
        if !super::valid_hostname(&host) && host.parse::<std::net::IpAddr>().is_err() {
            errors.push(&format!("{at}.host"), format!("invalid host name {host:?}"));
        }
        host
    });
    if redirect.port == Some(0) {
        errors.push(&format!("{at}.port"), "port 0 is not a port");
    }
    if redirect.path.is_some() && redirect.prefix.is_some() {
        errors.push(at, "at most one of path, prefix");
    }
    let path = if let Some(path) = &redirect.path {
        whole_path(errors, &format!("{at}.path"), path, template)
    } else if let Some(to) = &redirect.prefix {
        prefix_rewrite(errors, &format!("{at}.prefix"), to, prefix)
    } else {
        None
    };
    RedirectSettings {
        to,
        scheme,
        host,
        port: redirect.port,
        path,
        strip_query: redirect.strip_query,
        status,
    }
}

/// A whole-path replacement with `{capture}`s.
fn whole_path(
    errors: &mut Errors<'_>,
    at: &str,
    path: &str,
    template: Option<&PathTemplate>,
) -> Option<PathRewrite> {
    if !path.starts_with('/') {
        errors.push(at, format!("must start with /, got {path:?}"));
    }
    match Pieces::parse(path, template) {
        Ok(pieces) => {
            let literal_ok = pieces.0.iter().all(|p| match p {
                crate::edge::rewrite::Piece::Literal(text) => valid_path_text(text),
                crate::edge::rewrite::Piece::Capture(_) => true,
            });
            if !literal_ok {
                errors.push(
                    at,
                    format!("{path:?} has characters a path cannot carry unencoded"),
                );
            }
            Some(PathRewrite::Template(pieces))
        }
        Err(err) => {
            errors.push(at, err);
            None
        }
    }
}

/// A replacement of the matched `path_prefix`.
fn prefix_rewrite(
    errors: &mut Errors<'_>,
    at: &str,
    to: &str,
    prefix: Option<&str>,
) -> Option<PathRewrite> {
    let Some(from) = prefix else {
        errors.push(at, "needs a match.path_prefix to replace");
        return None;
    };
    if !to.is_empty() && !to.starts_with('/') {
        errors.push(at, format!("must be empty or start with /, got {to:?}"));
    } else if !valid_path_text(to) {
        errors.push(
            at,
            format!("{to:?} has characters a path cannot carry unencoded"),
        );
    }
    Some(PathRewrite::Prefix {
        from: from.to_string(),
        to: to.trim_end_matches('/').to_string(),
    })
}

fn validate_rewrite(
    errors: &mut Errors<'_>,
    at: &str,
    rewrite: &raw::Rewrite,
    template: Option<&PathTemplate>,
    prefix: Option<&str>,
) -> (Option<PathRewrite>, Option<Authority>) {
    let kinds = [
        rewrite.prefix.is_some(),
        rewrite.path.is_some(),
        rewrite.regex.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if kinds > 1 {
        errors.push(at, "at most one path rewrite: prefix, path or regex");
    }
    let path = if let Some(to) = &rewrite.prefix {
        prefix_rewrite(errors, &format!("{at}.prefix"), to, prefix)
    } else if let Some(path) = &rewrite.path {
        whole_path(errors, &format!("{at}.path"), path, template)
    } else if let Some(regex_rewrite) = &rewrite.regex {
        let compiled = regex(
            errors,
            &format!("{at}.regex.pattern"),
            &regex_rewrite.pattern,
        );
        compiled.and_then(|regex| {
            if let Err(err) = check_replacement(&regex, &regex_rewrite.replace) {
                errors.push(&format!("{at}.regex.replace"), err);
                return None;
            }
            Some(PathRewrite::Regex {
                regex,
                replace: regex_rewrite.replace.clone(),
            })
        })
    } else {
        None
    };
    let host = rewrite.host.as_ref().and_then(|host| {
        let parsed = host.parse::<Authority>().ok().filter(|a| {
            super::valid_hostname(a.host()) || a.host().parse::<std::net::IpAddr>().is_ok()
        });
        if parsed.is_none() {
            errors.push(
                &format!("{at}.host"),
                format!("invalid host {host:?} (a name, optionally with :port)"),
            );
        }
        parsed
    });
    (path, host)
}

fn query_names<'a>(
    errors: &mut Errors<'_>,
    at: &str,
    names: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    names
        .enumerate()
        .map(|(i, name)| {
            if name.is_empty() {
                errors.push(
                    &format!("{at}[{i}]"),
                    "a query parameter name cannot be empty",
                );
            }
            name.clone()
        })
        .collect()
}

fn query_pairs(
    errors: &mut Errors<'_>,
    at: &str,
    pairs: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| {
            if name.is_empty() {
                errors.push(at, "a query parameter name cannot be empty");
            }
            (name.clone(), value.clone())
        })
        .collect()
}

fn header_changes(errors: &mut Errors<'_>, at: &str, ops: &raw::HeaderOps) -> HeaderChanges {
    let mut name = |path: &str, text: &str| match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.push(path, format!("invalid header name {text:?}"));
            None
        }
    };
    let remove = ops
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, text)| name(&format!("{at}.remove[{i}]"), text))
        .collect();
    let mut pairs = |field: &str, map: &std::collections::BTreeMap<String, String>| {
        let mut out = Vec::new();
        for (text, value) in map {
            let path = format!("{at}.{field}.{text}");
            let header = match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    errors.push(&path, format!("invalid header name {text:?}"));
                    None
                }
            };
            let value = match HeaderValue::from_str(value) {
                Ok(value) => Some(value),
                Err(_) => {
                    errors.push(&path, format!("invalid header value {value:?}"));
                    None
                }
            };
            if let (Some(header), Some(value)) = (header, value) {
                out.push((header, value));
            }
        }
        out
    };
    let set = pairs("set", &ops.set);
    let add = pairs("add", &ops.add);
    HeaderChanges { remove, set, add }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_lines, RouteSettings};

    const BASE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    web: { discovery: { endpoints: [127.0.0.1:7001] } }\n    canary: { discovery: { endpoints: [127.0.0.1:7002] } }\n  routes:\n";

    fn routes(yaml: &str) -> Result<Vec<RouteSettings>, Vec<String>> {
        load_lines(&format!("{BASE}{yaml}")).map(|s| s.edge.unwrap().routes.to_vec())
    }

    fn errors(yaml: &str) -> Vec<String> {
        routes(yaml).expect_err("config should be refused")
    }

    #[test]
    fn translating_routes_need_an_upstream_and_keep_their_path() {
        let errors = routes(
            "    - match: { path_prefix: /ws }\n      rest_to_websocket: {}\n      redirect: { path: /x }\n    - match: { path_prefix: /v1 }\n      grpc_json: { reflection: true }\n      rewrite: { prefix: /v2 }\n      to: web\n",
        )
        .err()
        .unwrap_or_default()
        .join("\n");
        assert!(
            errors.contains("edge.routes[0].rest_to_websocket: needs an upstream"),
            "{errors}"
        );
        assert!(
            errors.contains("edge.routes[1].rewrite: does not apply to a grpc_json route"),
            "{errors}"
        );
    }

    #[test]
    fn a_valid_route_compiles() {
        let routes = routes(
            "    - name: users\n      match: { host: [\"*.Example.test\"], path_template: \"/users/{id}\", methods: [GET], headers: { x-v: \"2\" }, cookies: { beta: { present: true } }, query: { q: { prefix: a } } }\n      rewrite: { path: \"/v2/users/{id}\", host: internal.test }\n      query: { add: { a: \"1\" } }\n      headers: { request: { set: { x-edge: \"1\" } }, response: { remove: [x-internal] } }\n      split: [{ to: web, weight: 9 }, { to: canary, weight: 1 }]\n      max_body: 1KiB\n    - match: { path_prefix: /old/ }\n      redirect: { prefix: /new, status: 308 }\n",
        )
        .unwrap();
        assert_eq!(&*routes[0].name, "users");
        assert_eq!(&*routes[1].name, "route-1");
        assert_eq!(routes[0].max_body, Some(1024));
        assert_eq!(
            routes[0].host_rewrite.as_ref().unwrap().as_str(),
            "internal.test"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let errs = errors(
            "    - match: { path_regex: \"(\" }\n      to: web\n    - match: { path: /a, path_prefix: /b }\n      to: nowhere\n    - match: { methods: [get] }\n      to: web\n      split: [{ to: web, weight: 0 }]\n    - match: { path: /x }\n      rewrite: { prefix: /y }\n      to: web\n    - match: { path_template: \"/u/{id}\" }\n      rewrite: { path: \"/v/{other}\" }\n      to: web\n    - redirect: { status: 200 }\n    - split: [{ to: web, weight: 0 }]\n    - match: { headers: { \"bad header\": x, x-a: { prefix: a, exact: b } } }\n      to: web\n      deny: [nonsense]\n",
        );
        let has = |needle: &str| {
            assert!(
                errs.iter().any(|e| e.contains(needle)),
                "{needle} not in {errs:#?}"
            )
        };
        has("edge.routes[0].match.path_regex: invalid regular expression");
        has("edge.routes[1].match: at most one of path, path_prefix");
        has("edge.routes[1].to: unknown upstream \"nowhere\" (defined: canary, web)");
        has("edge.routes[2].match.methods[0]: unknown method \"get\"");
        has("edge.routes[2]: exactly one of to, split, redirect");
        has("edge.routes[3].rewrite.prefix: needs a match.path_prefix");
        has("edge.routes[4].rewrite.path: {other} is not a capture");
        has("edge.routes[5].redirect.status: must be 301, 302, 303, 307 or 308");
        has("edge.routes[6].split: weights are all zero");
        has("edge.routes[7].match.headers.bad header: invalid header name");
        has("edge.routes[7].match.headers.x-a: exactly one of exact, prefix");
        has("edge.routes[7].deny[0]: invalid network");
    }
}
