//! Edge mode (`mode: edge`, the `edge:` section): the public gateway's
//! listeners, routes and upstreams, and the request limits every listener
//! (edge and sidecar) enforces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{default_true, Upstream};

/// The public gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Public listeners: HTTPS (with `tls`), plain HTTP, or HTTP that only
    /// redirects to HTTPS.
    #[serde(default)]
    pub listeners: Vec<EdgeListener>,
    /// Connections open at once across every edge listener; further
    /// connections are closed at accept. Omitted: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Networks (`10.0.0.0/8`, `192.168.1.7`) whose `X-Forwarded-For` /
    /// `Forwarded` and `X-Forwarded-Proto` are believed: the client is the
    /// last address in the chain not in this list. Others' are replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Response headers removed from every upstream answer.
    #[serde(default = "default_strip_response_headers")]
    pub strip_response_headers: Vec<String>,
    /// Redis for global rate limits and quotas (`redis://host:port[/db]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Named authenticators routes refer to.
    #[serde(default)]
    pub auth: super::Auth,
    /// Named rate limits and quotas routes refer to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, super::RateLimit>,
    /// The response store cached routes share.
    #[serde(default)]
    pub cache: super::CacheStore,
    /// Routes, first match wins. No route matched: 404 `no_route`.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The services routes send to; the same shape as `outbound.upstreams`,
    /// names shared with them.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
}

fn default_strip_response_headers() -> Vec<String> {
    vec!["server".into(), "x-powered-by".into()]
}

/// One public listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeListener {
    /// `ip:port`; port 0 picks a free port.
    pub listen: String,
    /// Terminate TLS here (HTTPS); omitted: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Answer every request with a redirect to `https://<host>:<port>`
    /// (the port omitted when 443); `redirect_status` picks the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<u16>,
    /// Status of `redirect_https` answers: 301, 302, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub redirect_status: u16,
    /// Every connection starts with a PROXY protocol header (v1 or v2),
    /// sent by an L4 balancer in front: the client address is taken from it.
    /// Connections without one are closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Connections open at once on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connections open at once from one client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// Client networks admitted (`203.0.113.0/24`, an address); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Client networks refused (checked after `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

fn default_redirect_status() -> u16 {
    301
}

/// Public TLS termination: certificates chosen by SNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// Certificates and the host names each serves (`*.example.test`
    /// matches one label). Files are watched and reloaded when they change.
    pub certs: Vec<ServerCert>,
    /// A host of one of `certs`: served to clients that send no SNI or an
    /// unknown name. Omitted: the first certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Oldest TLS version accepted: `"1.2"` or `"1.3"`.
    #[serde(default = "default_min_tls")]
    pub min_version: String,
    /// ALPN protocols offered, in order of preference.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
}

fn default_min_tls() -> String {
    "1.2".into()
}

fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCert {
    /// Host names (exact, or `*.` + suffix) this certificate serves.
    pub hosts: Vec<String>,
    /// Leaf then chain, PEM (relative paths: from the config file's directory).
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
}

/// One route: what it matches, then what it does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name on metrics and in the access log; default `route-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, all of which must hold; empty: every request.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Client networks admitted on this route; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Client networks refused on this route (403 `forbidden`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Authenticators (names in `edge.auth`), any of which admits a
    /// request; empty: no authentication.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<String>,
    /// What an authenticated caller must have (403 `forbidden` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<super::Require>,
    /// Rate limits (names in `edge.rate_limits`), all of which apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit: Vec<String>,
    /// CORS: preflights answered here, response headers added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<super::Cors>,
    /// The upstream (an `edge.upstreams` or `outbound.upstreams` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Weighted split between upstreams (canary), instead of `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitTarget>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Hold WebSocket clients and call REST backends, instead of `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_bridge: Option<super::WebsocketBridge>,
    /// Send each request as a message over a pooled WebSocket connection to
    /// the upstream and answer with its correlated reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_to_websocket: Option<super::RestToWebsocket>,
    /// Call several upstreams and merge their JSON, instead of `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<super::Aggregate>,
    /// Response compression (and request decompression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<super::Compress>,
    /// Response caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::Cache>,
    /// Body transformation: XML ↔ JSON, SOAP ↔ REST, JSON reshaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<super::Transform>,
    /// REST/JSON callers translated to the upstream's gRPC methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_json: Option<super::GrpcJson>,
    /// Path and Host rewrites before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Query parameter changes before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryOps>,
    /// Header changes on the request and on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// Percent-encoded slashes (`%2F`, `%5C`) in the path: `decode` (match
    /// and forward them as `/`), `reject` (400), or `keep` (match and
    /// forward them encoded).
    #[serde(default)]
    pub encoded_slashes: EncodedSlashes,
    /// Largest request body on this route (`10MiB`), instead of `limits.max_body`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_size"
    )]
    pub max_body: Option<String>,
}

/// What a route matches. Every condition set must hold. At most one of
/// `path`, `path_prefix`, `path_regex` and `path_template` (two path
/// conditions on one route are refused: split them into two routes).
/// Paths are matched in their normalised, decoded form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names, exact or `*.suffix` (one or more labels); the port is ignored.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub host: OneOrMany,
    /// The whole path, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A path prefix, on segment boundaries (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// A regular expression the whole path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// A template: `/users/{id}/orders/{order}`, `{rest=**}` for the rest;
    /// captured names are usable in `rewrite.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_template: Option<String>,
    /// Methods (upper case); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Cookie conditions by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookies: BTreeMap<String, ValueMatch>,
    /// Query parameter conditions by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, ValueMatch>,
}

/// One string or a list of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "OneOrManyRepr", into = "Vec<String>")]
pub struct OneOrMany(pub Vec<String>);

impl OneOrMany {
    /// No value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<OneOrMany> for Vec<String> {
    fn from(value: OneOrMany) -> Self {
        value.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrManyRepr {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrManyRepr> for OneOrMany {
    fn from(repr: OneOrManyRepr) -> Self {
        match repr {
            OneOrManyRepr::One(one) => OneOrMany(vec![one]),
            OneOrManyRepr::Many(many) => OneOrMany(many),
        }
    }
}

/// A condition on one header, cookie or query value: a string is an exact
/// match; a map picks another kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValueMatch {
    /// Exactly this value.
    Exact(String),
    /// Another kind of condition.
    Spec(ValueMatchSpec),
}

/// A condition on a value; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// Exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: present with any value; `false`: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// One side of a weighted split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    /// The upstream.
    pub to: String,
    /// Relative share (0 allowed: no traffic).
    pub weight: u32,
}

/// A redirect answer. `to` replaces the whole URL; otherwise each part set
/// replaces that part of the request's URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// An absolute URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path (template captures usable as `{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replace the matched `path_prefix` with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Drop the query string.
    #[serde(default)]
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

/// Path and Host rewrites; at most one path rewrite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replace the matched `path_prefix` with this (`/` or `""` strips it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Replace the whole path; `{name}` inserts a `path_template` capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replace what a regular expression matches in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<RegexRewrite>,
    /// The `Host` / `:authority` sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A regular-expression substitution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// The expression.
    pub pattern: String,
    /// The replacement; `$1` / `${name}` insert groups.
    pub replace: String,
}

/// Query parameter changes, applied remove → set → add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryOps {
    /// Parameters appended (kept if already there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Parameters replaced (every existing value of the name goes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Parameters removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Header changes on both directions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// On the request, before it is forwarded.
    #[serde(default)]
    pub request: HeaderOps,
    /// On the response, before the client sees it.
    #[serde(default)]
    pub response: HeaderOps,
}

/// Header changes, applied remove → set → add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers appended (kept if already there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers replaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// What a route does with percent-encoded slashes in the path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodedSlashes {
    /// Decode to `/` before matching and forwarding.
    #[default]
    Decode,
    /// Refuse the request (400).
    Reject,
    /// Leave encoded: they never split path segments.
    Keep,
}

/// Request limits on every HTTP listener (edge and sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLimits {
    /// Request line and headers together (431 beyond; at least 8KiB).
    #[serde(default = "default_max_header_bytes", deserialize_with = "super::size")]
    pub max_header_bytes: String,
    /// Header fields (431 beyond).
    #[serde(default = "default_max_headers")]
    pub max_headers: u32,
    /// Request target length (414 beyond).
    #[serde(default = "default_max_uri", deserialize_with = "super::size")]
    pub max_uri: String,
    /// Request body (413 beyond); `0`: no limit.
    #[serde(default = "default_max_body", deserialize_with = "super::size")]
    pub max_body: String,
    /// Time a client has to send the request head; the connection is
    /// closed after it (slowloris).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// HTTP/2 connection limits (abuse defences: floods, rapid reset, stalls).
    #[serde(default)]
    pub http2: Http2Limits,
    /// Connections open at once across the sidecar listeners (inbound,
    /// outbound, proxy, transparent); beyond it new ones are closed at
    /// accept. Omitted: no limit. Edge listeners use `edge.max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connections open at once from one client address on one sidecar
    /// listener. Omitted: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// TLS handshakes started per second across the inbound mTLS and edge
    /// public TLS listeners (a burst of the same size allowed); beyond it
    /// connections are closed before the handshake. Omitted: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshakes_per_second: Option<u32>,
}

/// HTTP/2 limits per downstream connection (`limits.http2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Limits {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// PING, SETTINGS, PRIORITY, RST_STREAM, empty DATA and surplus
    /// WINDOW_UPDATE frames a client may send per second; beyond it the
    /// connection ends with GOAWAY(ENHANCE_YOUR_CALM).
    #[serde(default = "default_max_control_frames_per_second")]
    pub max_control_frames_per_second: u32,
    /// Streams a client may reset before the proxy accepts them (rapid
    /// reset); beyond it GOAWAY(ENHANCE_YOUR_CALM).
    #[serde(default = "default_max_pending_resets")]
    pub max_pending_resets: u32,
    /// A header block (HEADERS plus CONTINUATION frames) as sent, encoded;
    /// beyond it GOAWAY(ENHANCE_YOUR_CALM).
    #[serde(default = "default_max_header_block", deserialize_with = "super::size")]
    pub max_header_block: String,
    /// Interval of keep-alive PINGs the proxy sends.
    #[serde(default = "default_keepalive_interval")]
    pub keepalive_interval: String,
    /// Time to wait for a PING's answer before closing the connection (a
    /// stalled or vanished client).
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: String,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: default_max_concurrent_streams(),
            max_control_frames_per_second: default_max_control_frames_per_second(),
            max_pending_resets: default_max_pending_resets(),
            max_header_block: default_max_header_block(),
            keepalive_interval: default_keepalive_interval(),
            keepalive_timeout: default_keepalive_timeout(),
        }
    }
}

fn default_max_concurrent_streams() -> u32 {
    100
}

fn default_max_control_frames_per_second() -> u32 {
    1000
}

fn default_max_pending_resets() -> u32 {
    20
}

fn default_max_header_block() -> String {
    "256KiB".into()
}

fn default_keepalive_interval() -> String {
    "30s".into()
}

fn default_keepalive_timeout() -> String {
    "20s".into()
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri: default_max_uri(),
            max_body: default_max_body(),
            header_timeout: default_header_timeout(),
            http2: Http2Limits::default(),
            max_connections: None,
            max_connections_per_ip: None,
            tls_handshakes_per_second: None,
        }
    }
}

fn default_max_header_bytes() -> String {
    "64KiB".into()
}

fn default_max_headers() -> u32 {
    100
}

fn default_max_uri() -> String {
    "8KiB".into()
}

fn default_max_body() -> String {
    "0".into()
}

fn default_header_timeout() -> String {
    "10s".into()
}

/// TLS to an upstream outside the mesh (public CAs or a given one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Trust anchors, PEM; omitted: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Server name sent (SNI) and verified; default: the `dns` discovery
    /// name, else the upstream's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Verify the certificate (`false` only for tests; logged loudly).
    #[serde(default = "default_true")]
    pub verify: bool,
}
