//! The config file, one YAML document per proxy, as serde types.
//!
//! These types mirror the YAML exactly (`deny_unknown_fields`, defaults in
//! one place: the `default_*` functions below). They hold values as written
//! (`"1s"`, `"127.0.0.1:0"`); the proxy's validation turns them into runtime
//! types and is the only place that rejects a semantically wrong value.
//! [`load`] reads a file's text and lists every structural error with its
//! YAML path and line.

mod access;
mod aggregate;
mod cache;
mod compress;
mod edge;
mod grpc_json;
mod overload;
mod rest_ws;
mod transform;
mod ws_bridge;
mod yaml;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use access::*;
pub use aggregate::*;
pub use cache::*;
pub use compress::*;
pub use edge::*;
pub use grpc_json::*;
pub use overload::*;
pub use rest_ws::*;
pub use transform::*;
pub use ws_bridge::*;
pub use yaml::{load, ConfigError, LineIndex};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This proxy's service name (required).
    pub service: String,
    /// `sidecar` or `edge` (the public gateway: the `edge` section).
    #[serde(default)]
    pub mode: Mode,
    /// The admin API: health, config, listeners, clusters, metrics.
    #[serde(default)]
    pub admin: Admin,
    /// Process log format and level.
    #[serde(default)]
    pub log: Log,
    /// How config changes are picked up.
    #[serde(default)]
    pub reload: Reload,
    /// What SIGTERM does.
    #[serde(default)]
    pub drain: Drain,
    /// How DNS discovery resolves names.
    #[serde(default)]
    pub resolver: Resolver,
    /// Prefer endpoints in this proxy's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// This proxy's workload identity: omitted, traffic between proxies is plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Traffic that enters the service: omitted, the proxy has no inbound listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Inbound>,
    /// Traffic that leaves the service.
    #[serde(default)]
    pub outbound: Outbound,
    /// Request limits every HTTP listener enforces (431, 414, 413, header timeout).
    #[serde(default)]
    pub limits: RequestLimits,
    /// Overload shedding (503 `overloaded` past a memory or request
    /// threshold); omitted: never sheds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload: Option<Overload>,
    /// The public gateway (`mode: edge` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<Edge>,
    /// The NAT rules `sidecar iptables` writes (transparent interception);
    /// omitted: the defaults of [`Interception`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception: Option<Interception>,
    /// Distributed tracing (OTLP export); omitted: no spans, `traceparent`
    /// still passes through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// Which traffic `sidecar iptables apply` redirects to the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interception {
    /// The proxy runs as this user; its own traffic is never redirected.
    #[serde(default = "default_proxy_uid")]
    pub proxy_uid: u32,
    /// The proxy's group, also exempt (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_gid: Option<u32>,
    /// Inbound TCP ports redirected to the inbound listener; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never redirected (the admin port always is excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never redirected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks never redirected (`10.0.0.0/8`, `fd00::/8`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Also write the ip6tables rules.
    #[serde(default = "default_true")]
    pub ipv6: bool,
}

fn default_proxy_uid() -> u32 {
    1337
}

impl Default for Interception {
    fn default() -> Self {
        Self {
            proxy_uid: default_proxy_uid(),
            proxy_gid: None,
            inbound_ports: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            ipv6: true,
        }
    }
}

/// What the proxy is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Next to one service: inbound and outbound listeners.
    #[default]
    Sidecar,
    /// The public gateway: the `edge` section's listeners and routes.
    Edge,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin API; port 0 picks a free port.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Serve the dashboard page (`GET /dashboard`) and its data
    /// (`GET /dashboard/data`): golden signals and the service graph of
    /// this proxy. Off by default; edge proxies usually turn it on.
    #[serde(default)]
    pub dashboard: bool,
}

/// Process logs (the access log is separate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `json` (one object a line) or `pretty`; `--log-format` and
    /// `MESH_LOG_FORMAT` override it.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,sidecar::connect=debug`;
    /// `MESH_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// The access log, one JSON line per request or TCP connection:
    /// `off`, `stdout`, `stderr`, or a file path (appended to).
    #[serde(default = "default_access_log")]
    pub access: String,
    /// Fields of each access log line; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_fields: Vec<String>,
}

/// Process log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Hot reload. SIGHUP and `POST /config/reload` always work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Watch the file and reload when its content changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// How often the file is checked.
    #[serde(default = "default_reload_interval")]
    pub interval: String,
}

/// Graceful shutdown on SIGTERM / SIGINT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// `/ready` answers 503 at once; listeners keep accepting for this long,
    /// so a balancer in front has time to take the proxy out.
    #[serde(default = "default_drain_delay")]
    pub delay: String,
    /// Then in-flight requests and connections get this long to finish.
    #[serde(default = "default_drain_deadline")]
    pub deadline: String,
}

/// A workload identity: certificate, key and trust anchors, watched for rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The mesh's trust domain; this proxy is `spiffe://<trust_domain>/svc/<service>`.
    pub trust_domain: String,
    /// Leaf certificate then chain, PEM (relative paths: from the config file's directory).
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
    /// Trust anchors, PEM.
    pub bundle: String,
    /// `strict`: inbound accepts only mutual TLS; `permissive`: plaintext too.
    #[serde(default)]
    pub mode: TlsMode,
}

/// Whether the inbound listener also accepts plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Mutual TLS only.
    #[default]
    Strict,
    /// Mutual TLS and plaintext on the same port (migration).
    Permissive,
}

/// One authorization rule of the inbound side. A request is allowed when
/// any rule matches it; with no `authz` at all, every request is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Caller identities: exact, or ending in `*` (prefix); `"*"` is any caller.
    pub allow: Vec<String>,
    /// HTTP methods; empty: any. A rule with methods or paths applies to HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Paths (gRPC methods are paths: `/pkg.Service/Method`): exact, or ending in `*`; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// The inbound listener, in front of the local app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Where callers reach this service.
    #[serde(default = "default_inbound_listen")]
    pub listen: String,
    /// The local app (required), `host:port`.
    pub app: String,
    /// What the app speaks; `auto` detects it per connection.
    #[serde(default)]
    pub protocol: Protocol,
    /// How long protocol detection waits for the first bytes.
    #[serde(default = "default_detect_timeout")]
    pub detect_timeout: String,
    /// App ports never sniffed (server-speaks-first protocols): opaque TCP at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<u16>,
    /// Who may call: absent, everyone; present, only what a rule allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<Vec<AuthzRule>>,
    /// REST/JSON callers translated to the app's gRPC methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_json: Option<GrpcJson>,
}

/// Outbound: the local app calling other services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// HTTP forward proxy (absolute-form requests and CONNECT), routed by authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Forward-proxy requests for an authority no upstream claims go straight
    /// to that authority instead of failing with `no_route`.
    #[serde(default)]
    pub passthrough: bool,
    /// Transparent listener for traffic redirected by `sidecar iptables`
    /// (routed by the connection's original destination); omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent: Option<String>,
    /// How long protocol detection waits for the first bytes.
    #[serde(default = "default_detect_timeout")]
    pub detect_timeout: String,
    /// Named upstream services.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
}

/// One upstream service (a cluster of endpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Optional local port dedicated to this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Authorities (`host` or `host:port`) the forward proxy routes here;
    /// the upstream's own name always does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Where the endpoints come from (required).
    pub discovery: Discovery,
    /// What the upstream speaks. `auto` keeps the caller's HTTP version.
    #[serde(default)]
    pub protocol: Protocol,
    /// With an `identity`, connections to this upstream use mutual TLS
    /// (`false`: plaintext, for services outside the mesh).
    #[serde(default = "default_true")]
    pub mtls: bool,
    /// TLS to an upstream outside the mesh (public or private CA), instead
    /// of mesh mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// The SPIFFE ID the upstream must present; default
    /// `spiffe://<trust_domain>/svc/<upstream name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How an endpoint is chosen for each request or connection.
    #[serde(default)]
    pub balance: Balance,
    /// Connection and request timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// When and how often a failed request is tried again.
    #[serde(default)]
    pub retry: Retry,
    /// Circuit-breaker limits: over a limit, requests fail at once with
    /// 503 `circuit_open` instead of queueing.
    #[serde(default)]
    pub limits: Limits,
    /// Active health checks: omitted, endpoints are never checked (and
    /// stay healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Passive outlier ejection: endpoints that keep failing are taken out
    /// of rotation for a while.
    #[serde(default)]
    pub outlier: Outlier,
    /// gRPC → REST reverse bridge: callers speak gRPC, the upstream speaks
    /// REST/JSON; methods are mapped by their `google.api.http` rules
    /// (`protos` + `include`, or `descriptor_set`; `reflection` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_bridge: Option<GrpcJson>,
}

/// Endpoint sources; exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// A fixed list of endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSpec>,
    /// `name:port`: A and AAAA records of `name`, each address on `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// `_service._proto.name`: SRV records (priority, weight and port honoured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<String>,
}

/// How DNS discovery resolves names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    /// Nameservers (`ip:port`); empty: those of `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Record TTLs are clamped to this range before the next refresh.
    #[serde(default)]
    pub ttl: TtlRange,
    /// On SERVFAIL or timeout: keep the last known endpoints, or clear them.
    #[serde(default)]
    pub on_failure: OnResolveFailure,
    /// On NXDOMAIN (or no records): keep the last known endpoints, or clear them.
    #[serde(default)]
    pub on_nxdomain: OnResolveFailure,
    /// Per-query timeout.
    #[serde(default = "default_dns_timeout")]
    pub timeout: String,
}

/// Bounds on how long resolved records are trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlRange {
    /// Refresh no more often than this.
    #[serde(default = "default_ttl_min")]
    pub min: String,
    /// Refresh at least this often.
    #[serde(default = "default_ttl_max")]
    pub max: String,
}

/// What a failed resolution does to a cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnResolveFailure {
    /// Keep sending to the last endpoints that resolved.
    #[default]
    KeepLastKnown,
    /// Drop them: the cluster has no endpoints until the name resolves.
    Clear,
}

/// A static endpoint: `"127.0.0.1:7001"` or `{ addr: ..., weight: 3 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// Just the address, weight 1.
    Addr(String),
    /// Address and weight.
    Weighted(WeightedEndpoint),
}

/// An endpoint with a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    /// `ip:port`.
    pub addr: String,
    /// Relative share of traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The endpoint's zone, for `locality` (DNS endpoints have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// Locality preference: endpoints in this proxy's zone first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// This proxy's zone.
    pub zone: String,
    /// Stay in the zone while at least this share of its endpoints is
    /// available; below it, every zone's endpoints are used.
    #[serde(default = "default_percent")]
    pub min_local_percent: u8,
}

/// Upstream connection timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect (and the mTLS handshake).
    #[serde(default = "default_connect_timeout")]
    pub connect: String,
    /// Deadline for the response head, retries included; `0s`: none.
    /// Streaming bodies are not cut by it.
    #[serde(default = "default_request_timeout")]
    pub request: String,
    /// Deadline for each attempt's response head; `0s`: only `request` applies.
    #[serde(default = "default_zero")]
    pub per_try: String,
    /// A pooled connection unused this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle: String,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            ttl: TtlRange::default(),
            on_failure: OnResolveFailure::KeepLastKnown,
            on_nxdomain: OnResolveFailure::KeepLastKnown,
            timeout: default_dns_timeout(),
        }
    }
}

impl Default for TtlRange {
    fn default() -> Self {
        Self {
            min: default_ttl_min(),
            max: default_ttl_max(),
        }
    }
}

fn default_dns_timeout() -> String {
    "2s".into()
}
fn default_ttl_min() -> String {
    "1s".into()
}
fn default_ttl_max() -> String {
    "5m".into()
}

/// Load-balancing policy: a name, or `{ ring_hash: { key: ... } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BalanceRepr", into = "BalanceRepr")]
pub enum Balance {
    /// Power of two random choices, by peak-EWMA latency × load.
    #[default]
    P2cEwma,
    /// Weighted round robin.
    RoundRobin,
    /// Power of two random choices, by in-flight requests (and open
    /// connections, for opaque TCP) per unit of weight.
    LeastRequest,
    /// Consistent hashing: requests with the same key stick to one endpoint.
    RingHash(RingHash),
}

/// How `balance` is written: YAML has no enum-with-data syntax besides tags,
/// so the data-carrying policy is a one-key map.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum BalanceRepr {
    Name(BalanceName),
    RingHash {
        /// Consistent hashing.
        ring_hash: RingHash,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BalanceName {
    P2cEwma,
    RoundRobin,
    LeastRequest,
}

impl From<BalanceRepr> for Balance {
    fn from(repr: BalanceRepr) -> Self {
        match repr {
            BalanceRepr::Name(BalanceName::P2cEwma) => Balance::P2cEwma,
            BalanceRepr::Name(BalanceName::RoundRobin) => Balance::RoundRobin,
            BalanceRepr::Name(BalanceName::LeastRequest) => Balance::LeastRequest,
            BalanceRepr::RingHash { ring_hash } => Balance::RingHash(ring_hash),
        }
    }
}

impl From<Balance> for BalanceRepr {
    fn from(balance: Balance) -> Self {
        match balance {
            Balance::P2cEwma => BalanceRepr::Name(BalanceName::P2cEwma),
            Balance::RoundRobin => BalanceRepr::Name(BalanceName::RoundRobin),
            Balance::LeastRequest => BalanceRepr::Name(BalanceName::LeastRequest),
            Balance::RingHash(ring_hash) => BalanceRepr::RingHash { ring_hash },
        }
    }
}

/// What sticky sessions hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingHash {
    /// `header:<name>`, `cookie:<name>` (set by the proxy when absent) or `source_ip`.
    pub key: String,
}

/// Retry policy. Retries sit above the balancer, so a retry may pick
/// another endpoint, and are capped by a budget so a failing cluster never
/// sees a retry storm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first attempt (0: none).
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// What is retried: `connect_failure`, `reset` (upstream closed before
    /// answering), `timeout` (per-try), status codes (`"503"`, `"5xx"`), and
    /// gRPC statuses (`unavailable`, `resource_exhausted`).
    #[serde(default = "default_retry_on")]
    pub on: Vec<String>,
    /// Retry non-idempotent methods (POST, PATCH) too. Connect failures are
    /// always safe to retry.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Bodies up to this size are kept for replay; larger ones are not retried.
    #[serde(default = "default_retry_max_body", deserialize_with = "size")]
    pub max_body: String,
    /// Exponential backoff with full jitter between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// At most `ratio` × recent requests + `min_per_second` retries.
    #[serde(default)]
    pub budget: Budget,
}

/// Backoff between retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First backoff ceiling.
    #[serde(default = "default_backoff_base")]
    pub base: String,
    /// Largest backoff ceiling.
    #[serde(default = "default_backoff_max")]
    pub max: String,
}

/// Retry budget over a 10 s window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Retries allowed per request sent (0.2 = 20% extra load at most).
    #[serde(default = "default_budget_ratio")]
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic.
    #[serde(default = "default_budget_floor")]
    pub min_per_second: u32,
}

/// Outlier ejection of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Eject after this many 5xx answers (or resets) in a row; 0: never.
    #[serde(default = "default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Eject after this many failed connects in a row; 0: never.
    #[serde(default = "default_consecutive_connect_failures")]
    pub consecutive_connect_failures: u32,
    /// First ejection length; each later ejection of the endpoint lasts one more of these.
    #[serde(default = "default_base_ejection")]
    pub base_ejection: String,
    /// Longest ejection.
    #[serde(default = "default_max_ejection")]
    pub max_ejection: String,
    /// Never eject more than this share of the endpoints.
    #[serde(default = "default_percent")]
    pub max_ejected_percent: u8,
    /// Below this share of available endpoints, use every endpoint (panic mode).
    #[serde(default = "default_percent")]
    pub panic_below_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_5xx: default_consecutive_5xx(),
            consecutive_connect_failures: default_consecutive_connect_failures(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejected_percent: default_percent(),
            panic_below_percent: default_percent(),
        }
    }
}

fn default_consecutive_5xx() -> u32 {
    5
}
fn default_consecutive_connect_failures() -> u32 {
    3
}
fn default_base_ejection() -> String {
    "30s".into()
}
fn default_max_ejection() -> String {
    "5m".into()
}
fn default_percent() -> u8 {
    50
}

/// Circuit-breaker limits of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections open to the cluster's endpoints.
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    /// Connections being opened at once (requests waiting for a connection).
    #[serde(default = "default_limit")]
    pub max_pending: u32,
    /// Requests in flight to the cluster.
    #[serde(default = "default_limit")]
    pub max_requests: u32,
    /// Retries in flight to the cluster.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

/// Active health checks of a cluster's endpoints; exactly one of `http`,
/// `grpc` and `tcp` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `GET` this path (HTTP/1.1, `Host` = the upstream's name); up when the
    /// status is one of `statuses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `grpc.health.v1.Health/Check` for this service name (`""`: the whole
    /// server); up when it answers `SERVING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Up when a connection (and, to a mesh upstream, the mTLS handshake) succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// Time between checks of an endpoint (±10% jitter).
    #[serde(default = "default_health_interval")]
    pub interval: String,
    /// A check not done in this long failed.
    #[serde(default = "default_health_timeout")]
    pub timeout: String,
    /// Successes in a row that make an unhealthy endpoint healthy again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy: u32,
    /// Failures in a row that make an endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy: u32,
    /// HTTP statuses that count as up; empty: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

fn default_health_interval() -> String {
    "5s".into()
}
fn default_health_timeout() -> String {
    "1s".into()
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: default_retry_attempts(),
            on: default_retry_on(),
            non_idempotent: false,
            max_body: default_retry_max_body(),
            backoff: Backoff::default(),
            budget: Budget::default(),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: default_backoff_base(),
            max: default_backoff_max(),
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            ratio: default_budget_ratio(),
            min_per_second: default_budget_floor(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_limit(),
            max_pending: default_limit(),
            max_requests: default_limit(),
            max_retries: default_max_retries(),
        }
    }
}

fn default_request_timeout() -> String {
    "15s".into()
}
fn default_zero() -> String {
    "0s".into()
}
fn default_retry_attempts() -> u32 {
    2
}
fn default_retry_on() -> Vec<String> {
    vec![
        "connect_failure".into(),
        "reset".into(),
        "unavailable".into(),
    ]
}
fn default_retry_max_body() -> String {
    "64KiB".into()
}
fn default_backoff_base() -> String {
    "25ms".into()
}
fn default_backoff_max() -> String {
    "250ms".into()
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_floor() -> u32 {
    10
}
fn default_limit() -> u32 {
    1024
}
fn default_max_retries() -> u32 {
    256
}

/// Protocol of a listener or upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Detect per connection; HTTP keeps the caller's version.
    #[default]
    Auto,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (cleartext prior knowledge to the upstream).
    Http2,
    /// gRPC: HTTP/2, errors as gRPC statuses.
    Grpc,
    /// Opaque TCP, never sniffed.
    Tcp,
    /// UDP datagrams, balanced per client flow (outbound upstreams with
    /// `listen` only; a flow ends after `timeouts.idle` without traffic).
    Udp,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            dashboard: false,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
            access: default_access_log(),
            access_fields: Vec::new(),
        }
    }
}

impl Default for Reload {
    fn default() -> Self {
        Self {
            watch: true,
            interval: default_reload_interval(),
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            delay: default_drain_delay(),
            deadline: default_drain_deadline(),
        }
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            proxy: None,
            passthrough: false,
            transparent: None,
            detect_timeout: default_detect_timeout(),
            upstreams: BTreeMap::new(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
            per_try: default_zero(),
            idle: default_idle_timeout(),
        }
    }
}

impl EndpointSpec {
    /// The endpoint's address as written.
    pub fn addr(&self) -> &str {
        match self {
            EndpointSpec::Addr(addr) => addr,
            EndpointSpec::Weighted(w) => &w.addr,
        }
    }

    /// The endpoint's zone, if written.
    pub fn zone(&self) -> Option<&str> {
        match self {
            EndpointSpec::Addr(_) => None,
            EndpointSpec::Weighted(w) => w.zone.as_deref(),
        }
    }

    /// The endpoint's weight (1 when not written).
    pub fn weight(&self) -> u32 {
        match self {
            EndpointSpec::Addr(_) => 1,
            EndpointSpec::Weighted(w) => w.weight,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:15000".into()
}
/// A size as written: `64KiB`, or a bare number of bytes (`512`, `0`).
fn size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    Ok(match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => bytes.to_string(),
        Size::Text(text) => text,
    })
}

/// [`size`], optional.
fn optional_size<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    size(deserializer).map(Some)
}

fn default_access_log() -> String {
    "off".into()
}

fn default_log_level() -> String {
    "info".into()
}
fn default_true() -> bool {
    true
}
fn default_reload_interval() -> String {
    "1s".into()
}
fn default_drain_delay() -> String {
    "5s".into()
}
fn default_drain_deadline() -> String {
    "30s".into()
}
fn default_inbound_listen() -> String {
    "0.0.0.0:15006".into()
}
fn default_detect_timeout() -> String {
    "1s".into()
}
fn default_weight() -> u32 {
    1
}
fn default_connect_timeout() -> String {
    "1s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}

/// Distributed tracing: spans exported to an OpenTelemetry collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Where spans go.
    pub otlp: Otlp,
    /// Share of new traces recorded (0 to 1); a request that carries a
    /// trace context follows its sampled flag.
    #[serde(default = "default_trace_sampling")]
    pub sampling: f64,
    /// When spans are sent.
    #[serde(default)]
    pub batch: TraceBatch,
    /// Finished spans waiting for the exporter; more are dropped (counted).
    #[serde(default = "default_trace_queue")]
    pub queue: u32,
}

/// The OTLP collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// `grpc`: `host:port` (or `http://host:port`); `http`: a URL such as
    /// `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `grpc` (OTLP/gRPC) or `http` (OTLP/HTTP protobuf).
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Deadline of one export, connect included.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: String,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// `TraceService/Export` over HTTP/2 (plaintext, prior knowledge).
    #[default]
    Grpc,
    /// `POST` of `application/x-protobuf` over HTTP/1.1.
    Http,
}

/// Export batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceBatch {
    /// Spans sent in one export at most (an export starts once this many wait).
    #[serde(default = "default_trace_batch_spans")]
    pub max_spans: u32,
    /// The longest a finished span waits for its export.
    #[serde(default = "default_trace_batch_interval")]
    pub interval: String,
}

impl Default for TraceBatch {
    fn default() -> Self {
        Self {
            max_spans: default_trace_batch_spans(),
            interval: default_trace_batch_interval(),
        }
    }
}

fn default_trace_sampling() -> f64 {
    1.0
}
fn default_trace_queue() -> u32 {
    2048
}
fn default_otlp_timeout() -> String {
    "5s".into()
}
fn default_trace_batch_spans() -> u32 {
    512
}
fn default_trace_batch_interval() -> String {
    "1s".into()
}
