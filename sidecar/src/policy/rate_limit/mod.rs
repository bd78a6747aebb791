//! Edge rate limits and quotas, below authentication (keys may name the
//! consumer or a claim): the matched route's limits (`rate_limit: [..]`),
//! each counted in this process ([`gcra`]) or shared through Redis
//! ([`redis`]). Every limit of a route applies, in the route's order; the
//! first that refuses decides (limits checked before it have counted the
//! request).
//! Reads: the [`MatchedRoute`](crate::edge::MatchedRoute), the consumer and
//! client address in `RequestInfo` (else the connection's peer), claims of
//! the [`Principal`](crate::policy::auth::Principal) authentication leaves
//! in the request's extensions, the limiters' state ([`Limiters`], in the
//! `RouteTable`, kept across reloads while a limit's settings are unchanged).
//! Writes: `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
//! (the most constrained of the route's limits) on every response of a
//! limited route, a denial into `RequestInfo` and
//! `mesh_rate_limit_denials_total{route,limit,reason}`.
//! Errors: [`RateLimitError`]: 429 `rate_limited` with `Retry-After`; 503
//! `rate_limit_unavailable` when a global limit cannot reach Redis and its
//! `on_redis_down` is `deny`.
//!
//! Local limits are GCRA: `N/period` admits one request every `period / N`
//! and `burst` more at once. Global limits count `N` per window in Redis
//! (the window starts at a key's first request; `month` is 30 days);
//! while Redis is down, `on_redis_down: local` counts the same rate here
//! (GCRA with `burst`, default `N - 1`: the whole window at once).
//! Throttling (`mode: throttle`, local limits) delays a request until its
//! slot instead of refusing it, within `max_delay` and `queue`.

pub mod gcra;
pub mod redis;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response};
use mesh_api::config as raw;
use mesh_api::config::{LimitMode, LimitScope, OnRedisDown};
use tower::layer::layer_fn;
use tower::Layer;

use self::gcra::{Decision, Gcra, Waiting};
use self::redis::{RedisAddr, RedisClient, RedisMetrics};
use crate::config::Errors;
use crate::edge::MatchedRoute;
use crate::http::{Body, ConnInfo, HttpService};
use crate::telemetry::{Metrics, RequestInfo};
use crate::BoxError;

/// A request a limit did not let through.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Over the limit (429).
    #[error("rate limit exceeded")]
    Limited,
    /// A global limit could not reach Redis and fails closed (503).
    #[error("rate limiting is unavailable")]
    Unavailable,
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The consumer authentication named.
    Consumer,
    /// The client's address.
    ClientIp,
    /// The matched route's name.
    Route,
    /// A claim of the authenticated principal.
    Claim(String),
    /// A request header's first value.
    Header(HeaderName),
}

impl KeyPart {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "consumer" => Ok(KeyPart::Consumer),
            "client_ip" => Ok(KeyPart::ClientIp),
            "route" => Ok(KeyPart::Route),
            _ => {
                if let Some(claim) = text.strip_prefix("claim:") {
                    if claim.is_empty() {
                        return Err("claim: needs a claim name".into());
                    }
                    Ok(KeyPart::Claim(claim.to_owned()))
                } else if let Some(header) = text.strip_prefix("header:") {
                    HeaderName::from_bytes(header.as_bytes())
                        .map(KeyPart::Header)
                        .map_err(|_| format!("invalid header name {header:?}"))
                } else {
                    Err(format!(
                        "expected consumer, client_ip, route, claim:<name> or header:<name>, got {text:?}"
                    ))
                }
            }
        }
    }

    fn as_text(&self) -> String {
        match self {
            KeyPart::Consumer => "consumer".into(),
            KeyPart::ClientIp => "client_ip".into(),
            KeyPart::Route => "route".into(),
            KeyPart::Claim(claim) => format!("claim:{claim}"),
            KeyPart::Header(header) => format!("header:{header}"),
        }
    }
}

/// One limit, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Its name in `edge.rate_limits`.
    pub name: Arc<str>,
    /// What a bucket is per; empty: one bucket.
    pub key: Vec<KeyPart>,
    /// Requests per `period`.
    pub count: u64,
    /// The rate's period (the window of a global limit).
    pub period: Duration,
    /// The rate as written.
    pub rate: String,
    /// Extra requests at once (local GCRA).
    pub burst: u64,
    /// Local or global.
    pub scope: LimitScope,
    /// Throttle: the longest delay and the queue per bucket; `None`: reject.
    pub throttle: Option<(Duration, u32)>,
    /// A global limit's fallback.
    pub on_redis_down: OnRedisDown,
}

/// Every limit of `edge.rate_limits`, validated.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    /// Names of every limit, for route references.
    pub names: Vec<Arc<str>>,
    /// The limits by name.
    pub limits: BTreeMap<Arc<str>, LimitSettings>,
    /// `edge.redis`.
    pub redis: Option<RedisAddr>,
}

/// Parses `N/unit` or `N/<k><unit>` (`100/s`, `100/10s`, `1000/min`,
/// `5/15min`, `50000/day`, `1000000/month`; a month is 30 days).
pub fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let bad = || {
        format!(
            "expected N/s, N/min, N/hour, N/day, N/month or N/<k><unit> (100/10s), got {text:?}"
        )
    };
    let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let per = per.trim();
    let digits = per.bytes().take_while(u8::is_ascii_digit).count();
    let (factor, unit) = per.split_at(digits);
    let factor: u64 = if factor.is_empty() {
        1
    } else {
        factor.parse().map_err(|_| bad())?
    };
    let unit_secs: u64 = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        "month" => 30 * 86_400,
        _ => return Err(bad()),
    };
    if factor == 0 || factor > 1000 {
        return Err(format!(
            "the window multiplier must be 1..=1000, got {factor}"
        ));
    }
    Ok((count, Duration::from_secs(factor * unit_secs)))
}

/// Validates `edge.rate_limits` and `edge.redis`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    limits: &BTreeMap<String, raw::RateLimit>,
    redis: Option<&str>,
) -> RateLimitSettings {
    let redis = redis.and_then(|url| match RedisAddr::parse(url) {
        Ok(addr) => Some(addr),
        Err(err) => {
            errors.push("edge.redis", err);
            None
        }
    });
    let redis_given = redis.is_some();
    let mut out = RateLimitSettings {
        redis,
        ..RateLimitSettings::default()
    };
    for (name, limit) in limits {
        let at = format!("edge.rate_limits.{name}");
        let name: Arc<str> = Arc::from(name.as_str());
        out.names.push(name.clone());
        let (count, period) = match parse_rate(&limit.rate) {
            Ok(rate) => rate,
            Err(err) => {
                errors.push(&format!("{at}.rate"), err);
                (1, Duration::from_secs(1))
            }
        };
        let mut key = Vec::new();
        for (i, part) in limit.key.iter().enumerate() {
            match KeyPart::parse(part) {
                Ok(part) if key.contains(&part) => {
                    errors.push(&format!("{at}.key[{i}]"), "named twice");
                }
                Ok(part) => key.push(part),
                Err(err) => errors.push(&format!("{at}.key[{i}]"), err),
            }
        }
        let global = limit.scope == LimitScope::Global;
        if global && !redis_given {
            errors.push(
                &format!("{at}.scope"),
                "a global limit needs edge.redis (redis://host:port[/db])",
            );
        }
        let throttle = match limit.mode {
            LimitMode::Reject => None,
            LimitMode::Throttle => {
                if global {
                    errors.push(
                        &format!("{at}.mode"),
                        "throttle applies to local limits (a global window cannot be waited for)",
                    );
                }
                if limit.queue == 0 {
                    errors.push(&format!("{at}.queue"), "must be at least 1");
                }
                Some((
                    errors.duration(&format!("{at}.max_delay"), &limit.max_delay),
                    limit.queue,
                ))
            }
        };
        let burst = match limit.burst {
            Some(burst) => u64::from(burst),
            None if global => count - 1,
            None => 0,
        };
        out.limits.insert(
            name.clone(),
            LimitSettings {
                name,
                key,
                count,
                period,
                rate: limit.rate.clone(),
                burst,
                scope: limit.scope,
                throttle,
                on_redis_down: limit.on_redis_down,
            },
        );
    }
    out
}

/// The running state of one limit.
#[derive(Debug)]
pub struct Limiter {
    /// What it was built from.
    pub settings: LimitSettings,
    /// Local counting: the limit itself, or a global limit's fallback.
    local: Gcra,
    /// Redis, for a global limit.
    redis: Option<Arc<RedisClient>>,
    /// The limit's name with the `mesh:rl:` prefix, for Redis keys.
    redis_prefix: String,
}

/// Every limiter, by limit name; lives in the `RouteTable`.
#[derive(Debug, Default)]
pub struct Limiters {
    limiters: HashMap<Arc<str>, Arc<Limiter>>,
    redis: Option<Arc<RedisClient>>,
    metrics: Option<RateLimitMetrics>,
}

/// The counters the layer writes.
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    /// `mesh_rate_limit_denials_total{route,limit,reason}`.
    pub denials: prometheus_client::metrics::family::Family<
        DenialLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Redis health.
    pub redis: RedisMetrics,
}

/// Labels of `mesh_rate_limit_denials_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DenialLabels {
    /// The edge route.
    pub route: Arc<str>,
    /// The limit.
    pub limit: Arc<str>,
    /// `rate_limited` or `rate_limit_unavailable`.
    pub reason: &'static str,
}

impl Limiters {
    /// The limiters of `settings`, reusing those of `previous` whose
    /// settings are unchanged (and its Redis connection while `edge.redis`
    /// is the same).
    pub fn build(
        settings: Option<&RateLimitSettings>,
        previous: &Limiters,
        metrics: &Metrics,
    ) -> Self {
        let Some(settings) = settings else {
            return Limiters::default();
        };
        let metrics = metrics.rate_limit();
        let needs_redis = settings
            .limits
            .values()
            .any(|l| l.scope == LimitScope::Global);
        let redis = match (&settings.redis, &previous.redis) {
            (Some(addr), Some(old)) if needs_redis && old.addr == *addr => Some(old.clone()),
            (Some(addr), _) if needs_redis => {
                Some(RedisClient::start(addr.clone(), metrics.redis.clone()))
            }
            _ => None,
        };
        let mut limiters = HashMap::new();
        for (name, limit) in &settings.limits {
            let reusable = previous.limiters.get(name).filter(|old| {
                old.settings == *limit
                    && match (&old.redis, &redis) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, _) => limit.scope == LimitScope::Local,
                        _ => false,
                    }
            });
            let limiter = match reusable {
                Some(old) => old.clone(),
                None => Arc::new(Limiter {
                    local: Gcra::new(
                        limit.count,
                        limit.period,
                        limit.burst,
                        gcra::DEFAULT_MAX_KEYS,
                    ),
                    redis: (limit.scope == LimitScope::Global)
                        .then(|| redis.clone())
                        .flatten(),
                    redis_prefix: format!("mesh:rl:{name}:"),
                    settings: limit.clone(),
                }),
            };
            limiters.insert(name.clone(), limiter);
        }
        Limiters {
            limiters,
            redis,
            metrics: Some(metrics),
        }
    }

    /// A limiter by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Limiter>> {
        self.limiters.get(name)
    }

    /// Every limit and, for `key` (one value per key part), its bucket,
    /// for the admin API.
    pub async fn view(&self, key: &[String]) -> mesh_api::admin::RateLimitsView {
        let mut names: Vec<&Arc<str>> = self.limiters.keys().collect();
        names.sort();
        let mut limits = Vec::new();
        for name in names {
            let Some(limiter) = self.limiters.get(name) else {
                continue;
            };
            limits.push(limiter.view(key).await);
        }
        mesh_api::admin::RateLimitsView {
            key: key.to_vec(),
            redis: self.redis.as_ref().map(|r| r.is_up()),
            limits,
        }
    }
}

/// Separates key parts (a byte no header value can hold).
const KEY_SEPARATOR: char = '\u{1f}';

impl Limiter {
    /// The bucket key of a request.
    fn key(&self, req: &Request<Body>, route: &str) -> String {
        let mut key = String::with_capacity(64);
        if self.redis.is_some() {
            key.push_str(&self.redis_prefix);
        }
        for (i, part) in self.settings.key.iter().enumerate() {
            if i > 0 {
                key.push(KEY_SEPARATOR);
            }
            push_part(&mut key, part, req, route);
        }
        key
    }

    /// The bucket key for the admin API's values.
    fn key_of(&self, values: &[String]) -> String {
        let mut key = String::new();
        if self.redis.is_some() {
            key.push_str(&self.redis_prefix);
        }
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                key.push(KEY_SEPARATOR);
            }
            key.push_str(value);
        }
        key
    }

    async fn view(&self, values: &[String]) -> mesh_api::admin::RateLimitView {
        let s = &self.settings;
        let mut view = mesh_api::admin::RateLimitView {
            name: s.name.to_string(),
            scope: match s.scope {
                LimitScope::Local => "local".into(),
                LimitScope::Global => "global".into(),
            },
            rate: s.rate.clone(),
            count: s.count,
            period_seconds: s.period.as_secs(),
            burst: s.burst,
            mode: if s.throttle.is_some() {
                "throttle"
            } else {
                "reject"
            }
            .into(),
            key: s.key.iter().map(KeyPart::as_text).collect(),
            bucket: None,
            error: None,
        };
        if values.len() != s.key.len() {
            return view;
        }
        let key = self.key_of(values);
        match &self.redis {
            Some(redis) => match redis.window(&key, s.count, s.period, 0).await {
                Ok((_, remaining, reset)) => {
                    view.bucket = Some(mesh_api::admin::BucketView {
                        source: "redis".into(),
                        limit: s.count,
                        remaining,
                        reset_seconds: reset.as_secs_f64(),
                    });
                }
                Err(err) => view.error = Some(err.to_string()),
            },
            None => {
                let state = self.local.peek(&key);
                view.bucket = Some(mesh_api::admin::BucketView {
                    source: "local".into(),
                    limit: state.limit,
                    remaining: state.remaining,
                    reset_seconds: state.reset.as_secs_f64(),
                });
            }
        }
        view
    }

    /// Counts `req` on this limit.
    async fn check(&self, key: &str) -> Result<Decision, RateLimitError> {
        let s = &self.settings;
        if let Some(redis) = &self.redis {
            match redis.window(key, s.count, s.period, 1).await {
                Ok((allowed, remaining, reset)) => {
                    return Ok(Decision {
                        allowed,
                        delay: Duration::ZERO,
                        remaining,
                        reset,
                        limit: s.count,
                    })
                }
                Err(err) => {
                    tracing::debug!(limit = %s.name, error = %err, "global limit: redis unavailable");
                    return match s.on_redis_down {
                        OnRedisDown::Allow => Ok(Decision {
                            allowed: true,
                            delay: Duration::ZERO,
                            remaining: s.count,
                            reset: Duration::ZERO,
                            limit: s.count,
                        }),
                        OnRedisDown::Deny => Err(RateLimitError::Unavailable),
                        OnRedisDown::Local => Ok(self.local.check(key, None)),
                    };
                }
            }
        }
        Ok(self.local.check(key, s.throttle))
    }
}

/// Appends one key part's value (empty when the request has none).
fn push_part(key: &mut String, part: &KeyPart, req: &Request<Body>, route: &str) {
    use std::fmt::Write as _;
    let info = req.extensions().get::<RequestInfo>();
    match part {
        KeyPart::Consumer => {
            if let Some(consumer) = info.and_then(RequestInfo::consumer) {
                key.push_str(consumer);
            }
        }
        KeyPart::ClientIp => {
            let ip = info.and_then(RequestInfo::client).or_else(|| {
                req.extensions()
                    .get::<ConnInfo>()
                    .and_then(|c| c.peer)
                    .map(|p| p.ip())
            });
            if let Some(ip) = ip {
                let _ = write!(key, "{ip}");
            }
        }
        KeyPart::Route => key.push_str(route),
        KeyPart::Claim(claim) => {
            let value = req
                .extensions()
                .get::<crate::policy::auth::Principal>()
                .and_then(|p| p.claims.get(claim));
            match value {
                Some(serde_json::Value::String(s)) => key.push_str(s),
                Some(other) => {
                    let _ = write!(key, "{other}");
                }
                None => {}
            }
        }
        KeyPart::Header(name) => {
            if let Some(value) = req.headers().get(name) {
                match value.to_str() {
                    Ok(text) => key.push_str(text),
                    Err(_) => key.push_str(&String::from_utf8_lossy(value.as_bytes())),
                }
            }
        }
    }
}

/// What the response of a limited route reports: the most constrained limit.
#[derive(Clone, Copy)]
struct Report {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

impl Report {
    fn tighter(self, other: Report) -> Report {
        if (other.remaining, std::cmp::Reverse(other.reset))
            < (self.remaining, std::cmp::Reverse(self.reset))
        {
            other
        } else {
            self
        }
    }

    fn apply(self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(ceil_secs(self.reset)));
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The rate-limit layer of the edge stack.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let Some(matched) = MatchedRoute::using(&req, |r| !r.access.rate_limits.is_empty())
            else {
                return inner.call_ref(req);
            };
            let matched = matched.clone();
            let inner = inner.clone();
            Box::pin(async move { limit(matched, inner, req).await })
        })
    })
}

/// Applies the limits of `matched`, the route `req` matched.
async fn limit(
    matched: MatchedRoute,
    inner: HttpService,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let route = matched.settings();
    let limiters = matched.table().limiters();
    let mut report: Option<Report> = None;
    // Throttled places, given back once the request goes on (or is dropped).
    let mut waiting: Vec<Waiting<'_>> = Vec::new();
    let mut delay = Duration::ZERO;
    for name in &route.access.rate_limits {
        let Some(limiter) = limiters.get(name) else {
            continue;
        };
        let key = limiter.key(&req, &route.name);
        let decision = match limiter.check(&key).await {
            Ok(decision) => decision,
            Err(err) => {
                deny(&req, limiters, &route.name, name, "rate_limit_unavailable");
                let err: BoxError = err.into();
                return Ok(crate::errors::response(
                    &err,
                    crate::http::is_grpc(req.headers()),
                ));
            }
        };
        let this = Report {
            limit: decision.limit,
            remaining: decision.remaining,
            reset: decision.reset,
        };
        if !decision.allowed {
            deny(&req, limiters, &route.name, name, "rate_limited");
            let err: BoxError = RateLimitError::Limited.into();
            let mut response = crate::errors::response(&err, crate::http::is_grpc(req.headers()));
            let headers = response.headers_mut();
            this.apply(headers);
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(ceil_secs(decision.reset).max(1)),
            );
            return Ok(response);
        }
        report = Some(report.map_or(this, |r| r.tighter(this)));
        if !decision.delay.is_zero() {
            delay = delay.max(decision.delay);
            waiting.push(Waiting {
                gcra: &limiter.local,
                key,
            });
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(waiting);
    let mut response = inner.call_ref(req).await?;
    if let Some(report) = report {
        report.apply(response.headers_mut());
    }
    Ok(response)
}

/// Records a refusal on the request and the per-route counter.
fn deny(
    req: &Request<Body>,
    limiters: &Limiters,
    route: &Arc<str>,
    limit: &Arc<str>,
    reason: &'static str,
) {
    if let Some(info) = req.extensions().get::<RequestInfo>() {
        info.set_denied("rate_limit", reason);
    }
    if let Some(metrics) = &limiters.metrics {
        metrics
            .denials
            .get_or_create(&DenialLabels {
                route: route.clone(),
                limit: limit.clone(),
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_from_seconds_to_months() {
        let secs = |text| parse_rate(text).map(|(n, d)| (n, d.as_secs()));
        assert_eq!(secs("10/s"), Ok((10, 1)));
        assert_eq!(secs("100/10s"), Ok((100, 10)));
        assert_eq!(secs("1000/min"), Ok((1000, 60)));
        assert_eq!(secs("5/15min"), Ok((5, 900)));
        assert_eq!(secs("7/hour"), Ok((7, 3600)));
        assert_eq!(secs("50000/day"), Ok((50000, 86400)));
        assert_eq!(secs("1000000/month"), Ok((1_000_000, 2_592_000)));
        for bad in ["", "10", "0/s", "x/s", "10/fortnight", "10/0s", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(KeyPart::parse("consumer"), Ok(KeyPart::Consumer));
        assert_eq!(
            KeyPart::parse("claim:sub"),
            Ok(KeyPart::Claim("sub".into()))
        );
        assert!(matches!(
            KeyPart::parse("header:x-consumer"),
            Ok(KeyPart::Header(_))
        ));
        assert!(KeyPart::parse("header:bad name").is_err());
        assert!(KeyPart::parse("claim:").is_err());
        assert!(KeyPart::parse("ip").is_err());
    }

    #[test]
    fn validation_names_each_field() {
        let yaml = concat!(
            "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n",
            "  rate_limits:\n",
            "    a: { rate: 10/fortnight, key: [ip, consumer, consumer] }\n",
            "    b: { rate: 10/s, scope: global, mode: throttle, queue: 0 }\n",
            "    c: { rate: 100/10s, burst: 5, key: [claim:sub, header:x-consumer, route, client_ip] }\n",
            "  routes: [{ match: { path_prefix: / }, rate_limit: [c], to: app }]\n",
            "  upstreams: { app: { discovery: { endpoints: [127.0.0.1:9] } } }\n",
        );
        let errors: Vec<String> = match crate::config::load_str(yaml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.path.clone()).collect(),
        };
        assert_eq!(
            errors,
            [
                "edge.rate_limits.a.rate",
                "edge.rate_limits.a.key[0]",
                "edge.rate_limits.a.key[2]",
                "edge.rate_limits.b.scope",
                "edge.rate_limits.b.mode",
                "edge.rate_limits.b.queue",
            ]
        );
    }

    fn settings(rate: &str) -> RateLimitSettings {
        let (count, period) = parse_rate(rate).unwrap();
        let limit = LimitSettings {
            name: Arc::from("a"),
            key: vec![KeyPart::ClientIp],
            count,
            period,
            rate: rate.into(),
            burst: 0,
            scope: LimitScope::Local,
            throttle: None,
            on_redis_down: OnRedisDown::Local,
        };
        RateLimitSettings {
            names: vec![Arc::from("a")],
            limits: BTreeMap::from([(Arc::from("a"), limit)]),
            redis: None,
        }
    }

    #[test]
    fn limiter_state_survives_a_reload_while_its_settings_are_unchanged() {
        let metrics = Metrics::new();
        let first = Limiters::build(Some(&settings("1/min")), &Limiters::default(), &metrics);
        let limiter = first.get("a").unwrap();
        assert!(limiter.local.check("k", None).allowed);
        let same = Limiters::build(Some(&settings("1/min")), &first, &metrics);
        assert!(Arc::ptr_eq(limiter, same.get("a").unwrap()));
        assert!(!same.get("a").unwrap().local.check("k", None).allowed);
        let changed = Limiters::build(Some(&settings("2/min")), &same, &metrics);
        assert!(!Arc::ptr_eq(limiter, changed.get("a").unwrap()));
        assert!(Limiters::build(None, &changed, &metrics).get("a").is_none());
    }

    #[test]
    fn the_tighter_report_wins() {
        let a = Report {
            limit: 10,
            remaining: 3,
            reset: Duration::from_secs(1),
        };
        let b = Report {
            limit: 100,
            remaining: 1,
            reset: Duration::from_secs(5),
        };
        assert_eq!(a.tighter(b).limit, 100);
        assert_eq!(b.tighter(a).limit, 100);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
    }
}
