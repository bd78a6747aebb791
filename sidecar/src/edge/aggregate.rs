//! Aggregation routes: several upstream calls (concurrent, or chained on an
//! earlier part's result) merged into one JSON response.
//!
//! Sits right above `dispatch_layer`. A request whose [`MatchedRoute`] is
//! an `aggregate:` route is answered here: one sub-request per part, each
//! carrying its [`Target`] (so dispatch passes it through untouched) and
//! sent through the layers below (resilience, forward), so retries,
//! balancing and mTLS apply to every part. Other requests pass through.
//!
//! Decisions:
//! - A part's path is a template: `{claim.X}` (the authenticated
//!   [`Principal`]'s claims, dotted for nested ones), `{path.X}` (the route's
//!   `path_template` captures), `{query.X}`, `{header.X}` (the client's
//!   request) and `{<part>.<dotted.field>}` (a field of an earlier part's
//!   JSON answer; array elements by index). Values are percent-encoded.
//!   A part starts as soon as the parts it reads from have answered.
//! - Sub-requests carry no body; they forward `x-request-id`,
//!   `traceparent`, `tracestate`, the headers authentication set
//!   (forwarded claims, consumer) and the part's own `headers:` list.
//! - A part fails on its timeout (`timeout`, 504), a proxy error below
//!   (`upstream_error`, that error's status), a non-2xx answer
//!   (`upstream_status`, the upstream's status), a body over
//!   `max_part_body` (`too_large`, 502), a value its path needs that the
//!   request does not carry (`missing_value`, 400) or a failed dependency
//!   (`dependency`, 424).
//! - `partial`: 200 with every part that answered; failed ones are listed
//!   under `_errors` (`{"status": .., "reason": ..}`) and in
//!   `x-mesh-partial` (comma-separated). `fail`: the first failure of a
//!   non-optional part cancels the others and fails the request.
//!
//! Reads: the [`MatchedRoute`], the [`Principal`], the client's headers,
//! path and query. Writes: nothing on the client request (its body is
//! dropped). Errors: [`AggregateError`] (`fail` mode: 504 `part_timeout`,
//! 502 `part_failed`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use mesh_api::config::OnPartFailure;
use serde_json::{Map, Value};
use tower::layer::layer_fn;
use tower::{Layer, ServiceExt};

use super::action::RouteAction;
use super::matcher::{percent_decode, query_pairs, PathMatch};
use super::rewrite::encode_component;
use super::MatchedRoute;
use crate::errors::Reason;
use crate::http::{Body, HttpService};
use crate::policy::auth::Principal;
use crate::route::Target;
use crate::BoxError;

/// The header naming the failed parts of a partial answer.
pub const X_MESH_PARTIAL: &str = "x-mesh-partial";

/// Headers every part gets from the client request.
const ALWAYS_FORWARDED: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// Names a part may not take: they are placeholder sources.
pub const RESERVED_SOURCES: [&str; 4] = ["claim", "path", "query", "header"];

/// An aggregation request that fails as a whole (`on_part_failure: fail`).
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// A non-optional part did not answer within its timeout (504 `part_timeout`).
    #[error("aggregate part {0:?} timed out")]
    PartTimeout(Arc<str>),
    /// A non-optional part failed otherwise (502 `part_failed`).
    #[error("aggregate part {part:?} failed: {reason}")]
    PartFailed {
        /// The part's name.
        part: Arc<str>,
        /// Why (`upstream_status`, `too_large`, ...).
        reason: &'static str,
    },
}

/// An aggregation, compiled.
#[derive(Debug, Clone, Default)]
pub struct AggregateSettings {
    /// The parts, every one after the parts it depends on.
    pub parts: Vec<PartSettings>,
    /// What a failed part does to the whole.
    pub on_part_failure: OnPartFailure,
    /// Largest body a part may answer with, in bytes.
    pub max_part_body: usize,
}

impl AggregateSettings {
    /// The upstreams the parts call, in part order.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|part| &*part.upstream)
    }
}

/// One part, compiled.
#[derive(Debug, Clone)]
pub struct PartSettings {
    /// Its key in the merged response.
    pub name: Arc<str>,
    /// The upstream it calls.
    pub upstream: Arc<str>,
    /// The method sent.
    pub method: Method,
    /// Path and query, with placeholders.
    pub target: TargetTemplate,
    /// Client headers forwarded besides [`ALWAYS_FORWARDED`].
    pub headers: Vec<HeaderName>,
    /// Time for the whole exchange (answer and body).
    pub timeout: Duration,
    /// Its failure never fails the whole.
    pub optional: bool,
    /// Indices (in [`AggregateSettings::parts`]) of the parts it reads from.
    pub depends_on: Vec<usize>,
}

/// A part's path and query: literal text and placeholders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetTemplate {
    /// In order.
    pub pieces: Vec<Piece>,
}

/// A piece of a [`TargetTemplate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Sent as written.
    Literal(String),
    /// Replaced by a value, percent-encoded.
    Value(Source),
}

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A claim of the authenticated caller (dotted: nested).
    Claim(Vec<String>),
    /// A capture of the route's `path_template`.
    Path(String),
    /// A query parameter of the client's request (first value).
    Query(String),
    /// A header of the client's request (first value).
    Header(HeaderName),
    /// A field of an earlier part's JSON answer.
    Part {
        /// The part's name.
        name: String,
        /// Its index once validation resolved it.
        index: usize,
        /// The dotted field path.
        field: Vec<String>,
    },
}

impl TargetTemplate {
    /// Parses `"/users/{claim.sub}?x={profile.account.id}"`; the error says
    /// what is wrong.
    pub fn parse(text: &str) -> Result<TargetTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find(['{', '}']).unwrap_or(rest.len());
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            rest = &rest[open..];
            if rest.is_empty() {
                break;
            }
            if rest.starts_with('}') {
                return Err("a `}` without its `{`".into());
            }
            let close = rest
                .find('}')
                .ok_or_else(|| "a `{` without its `}`".to_string())?;
            pieces.push(Piece::Value(Source::parse(&rest[1..close])?));
            rest = &rest[close + 1..];
        }
        Ok(TargetTemplate { pieces })
    }

    /// The placeholders' sources.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Value(source) => Some(source),
            Piece::Literal(_) => None,
        })
    }

    /// The placeholders' sources, to resolve part names.
    pub fn sources_mut(&mut self) -> impl Iterator<Item = &mut Source> {
        self.pieces.iter_mut().filter_map(|piece| match piece {
            Piece::Value(source) => Some(source),
            Piece::Literal(_) => None,
        })
    }

    /// The text with each value given by `value`, percent-encoded; `None`
    /// when a value is missing.
    pub fn render(&self, mut value: impl FnMut(&Source) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Value(source) => encode_component(&mut out, &value(source)?),
            }
        }
        Some(out)
    }
}

impl Source {
    /// Parses what stands between `{` and `}`: `source.name`.
    fn parse(text: &str) -> Result<Source, String> {
        let (kind, name) = text
            .split_once('.')
            .filter(|(kind, name)| !kind.is_empty() && !name.is_empty())
            .ok_or_else(|| {
                format!("placeholder {{{text}}}: expected {{claim.X}}, {{path.X}}, {{query.X}}, {{header.X}} or {{<part>.<field>}}")
            })?;
        let dotted = || -> Result<Vec<String>, String> {
            let fields: Vec<String> = name.split('.').map(str::to_string).collect();
            if fields.iter().any(String::is_empty) {
                return Err(format!("placeholder {{{text}}}: an empty field name"));
            }
            Ok(fields)
        };
        Ok(match kind {
            "claim" => Source::Claim(dotted()?),
            "path" => Source::Path(name.to_string()),
            "query" => Source::Query(name.to_string()),
            "header" => Source::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("placeholder {{{text}}}: invalid header name"))?,
            ),
            part => Source::Part {
                name: part.to_string(),
                index: usize::MAX,
                field: dotted()?,
            },
        })
    }
}

/// Why a part failed, as listed under `_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureReason {
    Timeout,
    UpstreamError,
    UpstreamStatus,
    TooLarge,
    MissingValue,
    Dependency,
}

impl FailureReason {
    fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::UpstreamError => "upstream_error",
            FailureReason::UpstreamStatus => "upstream_status",
            FailureReason::TooLarge => "too_large",
            FailureReason::MissingValue => "missing_value",
            FailureReason::Dependency => "dependency",
        }
    }
}

/// A failed part: the status and reason listed under `_errors`.
#[derive(Debug, Clone, Copy)]
struct PartFailure {
    status: StatusCode,
    reason: FailureReason,
}

impl PartFailure {
    fn new(status: StatusCode, reason: FailureReason) -> Self {
        PartFailure { status, reason }
    }

    /// A proxy error below this layer: a timeout below counts as one.
    fn from_error(err: &BoxError) -> Self {
        let reason = crate::errors::reason(err);
        if reason == Reason::UpstreamTimeout {
            return PartFailure::new(StatusCode::GATEWAY_TIMEOUT, FailureReason::Timeout);
        }
        let status = crate::errors::response(err, false).status();
        PartFailure::new(status, FailureReason::UpstreamError)
    }

    /// The whole request's error, in `fail` mode.
    fn into_error(self, part: &Arc<str>) -> AggregateError {
        match self.reason {
            FailureReason::Timeout => AggregateError::PartTimeout(part.clone()),
            reason => AggregateError::PartFailed {
                part: part.clone(),
                reason: reason.as_str(),
            },
        }
    }
}

/// What a part ended with.
type Outcome = Result<Value, PartFailure>;

/// The aggregation layer: answers aggregate routes by calling the layers
/// below once per part.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let settings = aggregate_of(&req);
            match settings {
                None => inner.call_ref(req),
                Some(settings) => {
                    let inner = inner.clone();
                    Box::pin(async move { answer(&settings, req, inner).await })
                }
            }
        })
    })
}

/// The matched route's aggregation, if it is one.
fn aggregate_of(req: &Request<Body>) -> Option<Arc<AggregateSettings>> {
    let matched = req.extensions().get::<MatchedRoute>()?;
    match &matched.settings().action {
        RouteAction::Aggregate(settings) => Some(settings.clone()),
        _ => None,
    }
}

/// What the parts' placeholders read from the client's request.
struct Context<'a> {
    claims: Option<&'a Map<String, Value>>,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    matched: &'a MatchedRoute,
    /// Headers authentication set for the upstream.
    principal_headers: &'a [(HeaderName, HeaderValue)],
    /// The client's authority, sent as every part's `Host`.
    authority: Option<Authority>,
}

impl Context<'_> {
    /// A placeholder's value; `None` when the request does not carry it.
    fn value(&self, source: &Source, outcomes: &[Option<Outcome>]) -> Option<String> {
        match source {
            Source::Claim(field) => {
                let (first, rest) = field.split_first()?;
                text_of(lookup(self.claims?.get(first)?, rest)?)
            }
            Source::Path(name) => {
                let Some(PathMatch::Template(template)) = &self.matched.settings().matches.path
                else {
                    return None;
                };
                let index = template.capture(name)?;
                let raw = self.matched.captures().get(self.path, index);
                // Decoded, so it is encoded once when substituted; `+` is
                // no space in a path.
                Some(percent_decode(&raw.replace('+', "%2B")).into_owned())
            }
            Source::Query(name) => query_pairs(self.query)
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned()),
            Source::Header(name) => self
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Source::Part { index, field, .. } => match outcomes.get(*index)? {
                Some(Ok(value)) => text_of(lookup(value, field)?),
                _ => None,
            },
        }
    }
}

/// `value` at the dotted `field` path (array elements by index).
fn lookup<'v>(value: &'v Value, field: &[String]) -> Option<&'v Value> {
    field.iter().try_fold(value, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A JSON value as placeholder text: strings, numbers and booleans only.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Answers an aggregate route: runs the parts, merges their answers.
async fn answer(
    settings: &AggregateSettings,
    req: Request<Body>,
    inner: HttpService,
) -> Result<Response<Body>, BoxError> {
    let authority = crate::http::authority(&req).ok();
    let (mut head, _body) = req.into_parts();
    let matched = head
        .extensions
        .remove::<MatchedRoute>()
        .ok_or(super::EdgeError::NoRoute)?;
    let principal = head.extensions.get::<Principal>();
    let context = Context {
        claims: principal.map(|p| &*p.claims),
        path: head.uri.path(),
        query: head.uri.query(),
        headers: &head.headers,
        matched: &matched,
        principal_headers: principal.map_or(&[], |p| &p.headers),
        authority,
    };
    let outcomes = run(settings, &context, &inner).await?;
    Ok(merge(settings, outcomes))
}

/// Runs every part, each as soon as its dependencies answered; in `fail`
/// mode, stops at the first failure of a non-optional part.
async fn run(
    settings: &AggregateSettings,
    context: &Context<'_>,
    inner: &HttpService,
) -> Result<Vec<Option<Outcome>>, AggregateError> {
    let count = settings.parts.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    let mut started = vec![false; count];
    let mut running = FuturesUnordered::new();
    loop {
        // Parts come after their dependencies: one pass settles cascades.
        for (index, part) in settings.parts.iter().enumerate() {
            if started[index] || part.depends_on.iter().any(|d| outcomes[*d].is_none()) {
                continue;
            }
            started[index] = true;
            let dependency_failed = part
                .depends_on
                .iter()
                .any(|d| matches!(outcomes[*d], Some(Err(_))));
            let request = if dependency_failed {
                Err(PartFailure::new(
                    StatusCode::FAILED_DEPENDENCY,
                    FailureReason::Dependency,
                ))
            } else {
                sub_request(part, context, &outcomes)
            };
            match request {
                Ok(request) => {
                    let call = call(inner.clone(), request, part.timeout, settings.max_part_body);
                    running.push(async move { (index, call.await) });
                }
                Err(failure) => {
                    check(settings, index, &failure)?;
                    outcomes[index] = Some(Err(failure));
                }
            }
        }
        let Some((index, outcome)) = running.next().await else {
            break;
        };
        if let Err(failure) = &outcome {
            check(settings, index, failure)?;
        }
        outcomes[index] = Some(outcome);
    }
    Ok(outcomes)
}

/// In `fail` mode, a non-optional part's failure fails the whole.
fn check(
    settings: &AggregateSettings,
    index: usize,
    failure: &PartFailure,
) -> Result<(), AggregateError> {
    let part = &settings.parts[index];
    if settings.on_part_failure == OnPartFailure::Fail && !part.optional {
        return Err(failure.into_error(&part.name));
    }
    Ok(())
}

/// The request a part sends: its target rendered, the forwarded headers,
/// its upstream chosen.
fn sub_request(
    part: &PartSettings,
    context: &Context<'_>,
    outcomes: &[Option<Outcome>],
) -> Result<Request<Body>, PartFailure> {
    let missing = PartFailure::new(StatusCode::BAD_REQUEST, FailureReason::MissingValue);
    let target = part
        .target
        .render(|source| context.value(source, outcomes))
        .ok_or(missing)?;
    let unroutable = PartFailure::new(StatusCode::BAD_GATEWAY, FailureReason::UpstreamError);
    let uri = Uri::try_from(target).map_err(|_| missing)?;
    let cluster = context.matched.cluster(&part.upstream).ok_or(unroutable)?;
    // Without a client authority, the upstream's name.
    let authority = match &context.authority {
        Some(authority) => authority.clone(),
        None => Authority::try_from(&*part.upstream).map_err(|_| unroutable)?,
    };
    let mut request = Request::new(crate::http::empty());
    *request.method_mut() = part.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    let forwarded = ALWAYS_FORWARDED
        .iter()
        .map(|name| HeaderName::from_static(name))
        .chain(part.headers.iter().cloned());
    for name in forwarded {
        for value in context.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in context.principal_headers {
        headers.insert(name.clone(), value.clone());
    }
    request.extensions_mut().insert(Target {
        cluster,
        passthrough: None,
        authority,
    });
    Ok(request)
}

/// One part's exchange, within its timeout: a 2xx answer's body as JSON
/// (or as a string when it is not JSON).
async fn call(
    inner: HttpService,
    request: Request<Body>,
    timeout: Duration,
    max_body: usize,
) -> Outcome {
    let exchange = async {
        let response = inner
            .oneshot(request)
            .await
            .map_err(|err| PartFailure::from_error(&err))?;
        if !response.status().is_success() {
            return Err(PartFailure::new(
                response.status(),
                FailureReason::UpstreamStatus,
            ));
        }
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    PartFailure::new(StatusCode::BAD_GATEWAY, FailureReason::TooLarge)
                } else {
                    PartFailure::new(StatusCode::BAD_GATEWAY, FailureReason::UpstreamError)
                }
            })?;
        Ok(json_of(body.to_bytes()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(PartFailure::new(
            StatusCode::GATEWAY_TIMEOUT,
            FailureReason::Timeout,
        )))
}

/// A body as JSON, else as a string.
fn json_of(body: Bytes) -> Value {
    serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
}

/// The merged answer: each part's result under its name; failures under
/// `_errors` and named in `x-mesh-partial`.
fn merge(settings: &AggregateSettings, outcomes: Vec<Option<Outcome>>) -> Response<Body> {
    let mut body = Map::new();
    let mut errors = Map::new();
    let mut failed: Vec<&str> = Vec::new();
    for (part, outcome) in settings.parts.iter().zip(outcomes) {
        match outcome {
            Some(Ok(value)) => {
                body.insert(part.name.to_string(), value);
            }
            Some(Err(failure)) => {
                failed.push(&part.name);
                errors.insert(
                    part.name.to_string(),
                    serde_json::json!({
                        "status": failure.status.as_u16(),
                        "reason": failure.reason.as_str(),
                    }),
                );
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        body.insert("_errors".to_string(), Value::Object(errors));
    }
    let mut response = Response::new(crate::http::full(Value::Object(body).to_string()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !failed.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&failed.join(",")) {
            headers.insert(X_MESH_PARTIAL, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;
    use crate::telemetry::Metrics;
    use crate::tls::IdentityStore;
    use arc_swap::ArcSwap;
    use std::sync::Mutex;

    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    users: { discovery: { endpoints: [127.0.0.1:7001] } }\n    slow: { discovery: { endpoints: [127.0.0.1:7002] } }\n  routes:\n";

    /// The edge routes, this layer and dispatch over a stub upstream that
    /// records `upstream path` and answers by path (`/slow` after 10 s).
    fn stack(routes: &str) -> (HttpService, Arc<Mutex<Vec<String>>>) {
        let settings = crate::config::load_str(&format!("{EDGE}{routes}")).unwrap();
        let table = RouteTable::build(
            &settings,
            &RouteTable::default(),
            &Metrics::new(),
            &Arc::new(IdentityStore::new(Default::default())),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let upstream = crate::http::shared_fn(move |req: Request<Body>| {
            let target = req.extensions().get::<Target>().unwrap();
            let path = req.uri().path().to_string();
            record
                .lock()
                .unwrap()
                .push(format!("{} {}", target.cluster.name(), req.uri()));
            async move {
                let body = match path.as_str() {
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        "{}".to_string()
                    }
                    "/users/alice" => r#"{"account": {"id": "acc 1"}}"#.to_string(),
                    "/missing" => {
                        let mut res = Response::new(crate::http::empty());
                        *res.status_mut() = StatusCode::NOT_FOUND;
                        return Ok::<_, BoxError>(res);
                    }
                    other => format!("{other:?}"),
                };
                Ok(Response::new(crate::http::full(body)))
            }
        });
        let service = tower::ServiceBuilder::new()
            .layer(crate::edge::route_layer(Arc::new(ArcSwap::from_pointee(
                table,
            ))))
            .layer(layer())
            .layer(crate::edge::dispatch_layer())
            .service(upstream);
        (crate::http::HttpService::new(service), seen)
    }

    async fn get(service: &HttpService, uri: &str) -> Result<(Response<Body>, Value), BoxError> {
        let req = Request::get(uri).body(crate::http::empty()).unwrap();
        let res = service.clone().oneshot(req).await?;
        let (head, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Ok((
            Response::from_parts(head, crate::http::empty()),
            json_of(bytes),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn chained_parts_wait_and_a_slow_part_is_cut_at_its_timeout() {
        let (service, seen) = stack("    - match: { path: /dash }\n      aggregate:\n        parts:\n          profile: { to: users, path: \"/users/{query.user}\" }\n          account: { to: users, path: \"/accounts/{profile.account.id}\" }\n          slow: { to: slow, path: /slow }\n          missing: { to: users, path: /missing }\n        timeout: 200ms\n    - match: { path: /plain }\n      to: users\n");
        let started = tokio::time::Instant::now();
        let (res, body) = get(&service, "http://a.test/dash?user=alice")
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body["profile"]["account"]["id"], "acc 1");
        assert_eq!(body["account"], "/accounts/acc%201");
        assert_eq!(body["_errors"]["slow"]["reason"], "timeout");
        assert_eq!(body["_errors"]["missing"]["status"], 404);
        assert_eq!(res.headers()[X_MESH_PARTIAL], "missing,slow");
        let seen = seen.lock().unwrap().clone();
        let position = |call: &str| seen.iter().position(|s| s == call).unwrap();
        assert!(position("users /users/alice") < position("users /accounts/acc%201"));
        assert!(seen.contains(&"slow /slow".to_string()));

        // Other routes pass through to dispatch untouched.
        let (res, body) = get(&service, "http://a.test/plain").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body, "/plain");
    }

    #[tokio::test(start_paused = true)]
    async fn fail_mode_stops_at_the_first_failure_of_a_required_part() {
        let (service, seen) = stack("    - match: { path: /t }\n      aggregate:\n        parts:\n          slow: { to: slow, path: /slow, timeout: 100ms }\n          after: { to: users, path: \"/x/{slow.id}\" }\n        on_part_failure: fail\n    - match: { path: /s }\n      aggregate:\n        parts:\n          gone: { to: users, path: /missing }\n          extra: { to: users, path: /missing, optional: true }\n          slow: { to: slow, path: /slow }\n        on_part_failure: fail\n");
        let err = get(&service, "http://a.test/t").await.unwrap_err();
        assert_eq!(crate::errors::reason(&err), Reason::PartTimeout);
        assert!(err.to_string().contains("\"slow\""), "{err}");
        assert!(!seen.lock().unwrap().iter().any(|s| s.contains("/x/")));
        let started = tokio::time::Instant::now();
        let err = get(&service, "http://a.test/s").await.unwrap_err();
        assert_eq!(crate::errors::reason(&err), Reason::PartFailed);
        assert!(err.to_string().contains("\"gone\""), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn placeholders_parse_by_source() {
        let template = TargetTemplate::parse("/u/{claim.sub}/{path.id}?q={query.q}&a={profile.account.id}&h={header.x-tenant}&c={claim.org.name}").unwrap();
        let sources: Vec<&Source> = template.sources().collect();
        assert_eq!(sources[0], &Source::Claim(vec!["sub".into()]));
        assert_eq!(sources[1], &Source::Path("id".into()));
        assert_eq!(sources[2], &Source::Query("q".into()));
        assert!(matches!(
            sources[3],
            Source::Part { name, field, .. } if name == "profile" && field == &["account", "id"]
        ));
        assert_eq!(
            sources[4],
            &Source::Header(HeaderName::from_static("x-tenant"))
        );
        assert_eq!(
            sources[5],
            &Source::Claim(vec!["org".into(), "name".into()])
        );
        assert_eq!(template.pieces[0], Piece::Literal("/u/".into()));
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        for bad in [
            "/u/{claim}",
            "/u/{sub",
            "/u/}x",
            "/u/{.x}",
            "/u/{profile.}",
            "/u/{profile.a..b}",
            "/u/{header.bad name}",
        ] {
            assert!(TargetTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TargetTemplate::parse("/plain?a=1").unwrap().pieces,
            vec![Piece::Literal("/plain?a=1".into())]
        );
    }

    #[test]
    fn values_are_percent_encoded_and_missing_ones_stop_rendering() {
        let template = TargetTemplate::parse("/u/{query.name}?t={query.tag}").unwrap();
        let rendered = template.render(|source| match source {
            Source::Query(name) if name == "name" => Some("a b/c".into()),
            Source::Query(_) => Some("x&y=z".into()),
            _ => None,
        });
        assert_eq!(rendered.as_deref(), Some("/u/a%20b%2Fc?t=x%26y%3Dz"));
        assert_eq!(template.render(|_| None), None);
    }

    #[test]
    fn fields_are_looked_up_by_dotted_path() {
        let value = serde_json::json!({"a": {"b": [10, {"c": "x"}]}, "t": true});
        let field = |path: &str| -> Vec<String> { path.split('.').map(str::to_string).collect() };
        assert_eq!(
            lookup(&value, &field("a.b.0")).and_then(text_of),
            Some("10".into())
        );
        assert_eq!(
            lookup(&value, &field("a.b.1.c")).and_then(text_of),
            Some("x".into())
        );
        assert_eq!(
            lookup(&value, &field("t")).and_then(text_of),
            Some("true".into())
        );
        assert_eq!(lookup(&value, &field("a")).and_then(text_of), None);
        assert!(lookup(&value, &field("a.z")).is_none());
    }
}
