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
    /// Clock skew allowed on `exp` / `nbf` / `iat`.
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

/// A JWKS: a file (reloaded when it changes) or a URL (cached).
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
    /// A shared secret for HS256, base64url (`secret:` is an alternative to a JWKS with `kty: oct`).
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

/// Token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The introspection endpoint (http or https URL).
    pub endpoint: String,
    /// Client credentials (HTTP Basic), if the endpoint wants them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Where the token is read (as for `jwt.from`).
    #[serde(default = "default_jwt_from")]
    pub from: Vec<String>,
    /// Longest an answer is cached (never past the token's `exp`).
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

/// An external authorization service: it gets the request's method, path
/// and headers and answers allow (2xx, headers to add) or deny.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAuthz {
    /// The service's URL (http or https); the request is POSTed to it as JSON.
    pub url: String,
    /// Per call.
    #[serde(default = "default_authz_timeout")]
    pub timeout: String,
    /// Request headers sent to it (lower case); empty: all but the body's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// When it cannot be reached: `deny` (503) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
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
    /// `claim:<name>`, `header:<name>`; empty: one bucket for everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// `100/s`, `1000/min`, `50000/day`, `1000000/month`.
    pub rate: String,
    /// Requests allowed at once above the steady rate (default: none
    /// beyond one request's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `local` (this process) or `global` (shared through `edge.redis`).
    #[serde(default)]
    pub scope: LimitScope,
    /// `reject` (429) or `throttle` (delay within `max_delay`, queue bound).
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
