//! Edge access control as written: authentication (`edge.auth`: JWT,
//! API keys, token introspection, an external authorizer), rate limits and
//! quotas (`edge.rate_limits`, local or shared through Redis), and the
//! per-route parts (`auth`, `require`, `rate_limit`, `cors`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named authenticators; a route lists the names it accepts (any of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// JSON Web Tokens, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jwt: BTreeMap<String, Jwt>,
    /// API keys, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_keys: BTreeMap<String, ApiKeys>,
    /// OAuth2 opaque tokens checked by token introspection (RFC 7662), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub introspection: BTreeMap<String, Introspection>,
    /// External authorization services, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external: BTreeMap<String, ExternalAuthz>,
}

/// JWT validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Where the verification keys come from.
    pub jwks: Jwks,
    /// Accepted `iss` values; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    /// Accepted `aud` values (one must match); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted algorithms: RS256, RS384, RS512, PS256, ES256, ES384, EdDSA,
    /// HS256 (`none` never); a key is used only with its own algorithm family.
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf` / `iat` (at most `10m`).
    #[serde(default = "default_leeway")]
    pub leeway: String,
    /// Where the token is read, in order: `header:authorization` (Bearer),
    /// `header:<name>`, `cookie:<name>`, `query:<name>`.
    #[serde(default = "default_jwt_from")]
    pub from: Vec<String>,
    /// Claims sent upstream as headers: claim name → header name (arrays
    /// are joined with spaces, objects as JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
    /// The claim that names the consumer (rate-limit key, access log).
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

/// Where the keys come from: exactly one of a JWKS file (re-read when it
/// changes), a JWKS URL (cached) or an HS256 `secret`. Keys with `use: enc`,
/// of another type or curve than RSA, EC P-256 / P-384, OKP Ed25519 and
/// oct, or for an unknown `alg` are skipped; a key with an `alg` verifies
/// only that algorithm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// A JWKS JSON file (relative paths: from the config file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A JWKS URL (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Refresh the URL's keys this often; also on an unknown `kid`, at most
    /// once per `min_refresh`.
    #[serde(default = "default_jwks_refresh")]
    pub refresh: String,
    /// Fewest time between two refreshes caused by unknown `kid`s.
    #[serde(default = "default_jwks_min_refresh")]
    pub min_refresh: String,
    /// A shared secret for HS256, base64url, at least 32 bytes (`secret:` is
    /// an alternative to a JWKS with `kty: oct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// API keys: each key names a consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// `header:<name>` or `query:<name>`.
    #[serde(default = "default_api_key_from")]
    pub from: String,
    /// Keys, stored as SHA-256 hex of the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ApiKey>,
    /// A YAML file with more `keys` (a list of `{consumer, sha256}`),
    /// read with the config and reloaded with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Header that carries the consumer's name upstream.
    #[serde(default = "default_consumer_header")]
    pub forward_consumer: String,
}

/// One API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who the key belongs to.
    pub consumer: String,
    /// SHA-256 of the key, lower-case hex (`mesh-ctl apikey create` prints it).
    pub sha256: String,
}

impl ApiKey {
    /// Parses an API-key file: a YAML list of `{consumer, sha256}`.
    pub fn parse_file(text: &str) -> Result<Vec<ApiKey>, String> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }
}

/// Token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The introspection endpoint (http or https URL).
    pub endpoint: String,
    /// Client credentials (HTTP Basic), if the endpoint wants them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client secret (with `client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Where the token is read (as for `jwt.from`).
    #[serde(default = "default_jwt_from")]
    pub from: Vec<String>,
    /// Longest an answer is cached (never past the token's `exp`; an
    /// inactive answer: at most 5 s), keyed by the token's SHA-256.
    #[serde(default = "default_introspection_cache")]
    pub cache: String,
    /// Per call.
    #[serde(default = "default_authz_timeout")]
    pub timeout: String,
    /// Claims of the answer sent upstream as headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
    /// The answer's field that names the consumer.
    #[serde(default = "default_introspection_consumer")]
    pub consumer_claim: String,
}

/// An external authorization service: it gets the request's method, path,
/// query, headers and client address as JSON (never the body) and answers
/// 2xx to allow (an optional JSON body `{"allow", "headers", "consumer"}`
/// adds headers upstream and names the consumer; `"allow": false` denies),
/// 401 (unauthenticated) or 403 / another 4xx (denied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAuthz {
    /// The service's URL (http or https); the request is POSTed to it as JSON.
    pub url: String,
    /// Per call.
    #[serde(default = "default_authz_timeout")]
    pub timeout: String,
    /// Request headers sent to it (lower case); empty: all but the body's
    /// (`content-length`, `transfer-encoding`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// When it cannot be reached, times out or answers 5xx: `deny` (503)
    /// or `allow` (admitted with no added headers).
    #[serde(default)]
    pub on_error: OnError,
    /// Headers it may add upstream (lower case). A client's own copies of
    /// them are always removed, whatever the answer; headers it answers
    /// that are not listed are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<String>,
}

/// What to do when a dependency (authorizer, Redis) cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Let the request through (fail open).
    Allow,
}

/// A named rate limit or quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// What a bucket is per: any of `consumer`, `client_ip`, `route`,
    /// `claim:<name>`, `header:<name>`; empty: one bucket for everyone. A
    /// part the request lacks counts as empty (such requests share a bucket).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// `100/s`, `1000/min`, `50000/day`, `1000000/month` (a month is 30
    /// days); a window of several units: `100/10s`, `5/15min`. Local
    /// limits spread it (GCRA: one request every period / N); global ones
    /// allow N per window, the window starting at a key's first request.
    pub rate: String,
    /// Requests allowed at once above the steady rate (default: none
    /// beyond one request's worth). For a global limit: the burst of its
    /// local fallback (default N - 1, the whole window at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `local` (this process) or `global` (shared through `edge.redis`).
    #[serde(default)]
    pub scope: LimitScope,
    /// `reject` (429) or `throttle` (delay within `max_delay`, queue bound;
    /// local limits only).
    #[serde(default)]
    pub mode: LimitMode,
    /// Throttle: longest delay a request may get; beyond it, 429.
    #[serde(default = "default_max_delay")]
    pub max_delay: String,
    /// Throttle: requests waiting at once per bucket; beyond it, 429.
    #[serde(default = "default_throttle_queue")]
    pub queue: u32,
    /// Global limits while Redis cannot be reached: `local` (this limit,
    /// counted in this process), `allow` or `deny` (503).
    #[serde(default)]
    pub on_redis_down: OnRedisDown,
}

/// Where a limit is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// In this process.
    #[default]
    Local,
    /// In Redis, shared by every edge replica.
    Global,
}

/// What happens to a request over a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// 429 at once.
    #[default]
    Reject,
    /// Delayed until it fits.
    Throttle,
}

/// A global limit's fallback while Redis is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisDown {
    /// Count it in this process instead.
    #[default]
    Local,
    /// No limit.
    Allow,
    /// Refuse (503).
    Deny,
}

/// Claims and scopes a route requires of an authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Require {
    /// Scopes that must all be in the `scope` (space-separated) or `scp` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Claims that must have these values (a list claim must contain it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// Consumers allowed (API keys or the consumer claim); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
}

/// CORS of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins (`https://app.example.test`, `*`, or `*.example.test` hosts over https).
    pub origins: Vec<String>,
    /// Allowed methods; empty: the route's, else GET, HEAD, POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed request headers; empty: what the preflight asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Response headers exposed to the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (never with `*`).
    #[serde(default)]
    pub credentials: bool,
    /// How long a preflight answer may be cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

fn default_jwt_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn default_leeway() -> String {
    "30s".into()
}

fn default_jwt_from() -> Vec<String> {
    vec!["header:authorization".into()]
}

fn default_consumer_claim() -> String {
    "sub".into()
}

fn default_jwks_refresh() -> String {
    "5m".into()
}

fn default_jwks_min_refresh() -> String {
    "10s".into()
}

fn default_api_key_from() -> String {
    "header:x-api-key".into()
}

fn default_consumer_header() -> String {
    "x-consumer".into()
}

fn default_introspection_cache() -> String {
    "5m".into()
}

fn default_introspection_consumer() -> String {
    "sub".into()
}

fn default_authz_timeout() -> String {
    "1s".into()
}

fn default_max_delay() -> String {
    "1s".into()
}

fn default_throttle_queue() -> u32 {
    100
}
