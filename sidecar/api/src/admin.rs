//! JSON documents of the admin API, shared by the proxy (which writes them)
//! and `mesh-ctl` (which reads them).

use serde::{Deserialize, Serialize};

/// `GET /listeners`: one entry per bound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// `admin`, `inbound`, `outbound` (one per upstream port) or `proxy`.
    pub kind: String,
    /// The upstream an `outbound` listener serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The address as configured.
    pub configured: String,
    /// The address actually bound (port 0 resolved).
    pub addr: String,
}

/// `GET /clusters`: one entry per upstream cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Upstream name (`inbound` for the local app).
    pub name: String,
    /// Configured protocol.
    pub protocol: String,
    /// Where the endpoints come from: `static`, `dns` (A/AAAA) or `srv`.
    pub source: String,
    /// The endpoints and their state.
    pub endpoints: Vec<EndpointInfo>,
    /// For `dns` and `srv` sources: what the resolver last did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
}

/// The state of a cluster's DNS discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    /// `dns` (A/AAAA records) or `srv`.
    pub source: String,
    /// The name resolved.
    pub name: String,
    /// The port every address gets (`dns` only; SRV records carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Last successful resolution, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<u64>,
    /// Seconds the last answer is trusted: its smallest record TTL,
    /// clamped to `resolver.ttl`; the next refresh is due then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Why the last failed resolution failed (kept after later successes;
    /// compare `last_error_at` with `last_refresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it failed, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
    /// Failed resolutions since the last successful one.
    #[serde(default)]
    pub failures: u32,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `ip:port`.
    pub addr: String,
    /// Relative share of traffic.
    pub weight: u32,
    /// `healthy`, `unhealthy` (active checks), `ejected` (outlier
    /// detection) or `maintenance` (drained by an operator).
    pub state: String,
    /// Requests in flight to this endpoint.
    pub active_requests: u64,
    /// Upstream connections open to this endpoint.
    pub connections: u64,
    /// The balancer's peak-EWMA latency estimate, in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
}

/// `GET /config`: the effective config and the last reload outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file the config comes from.
    pub path: String,
    /// How many times a config has been applied (1 after start).
    pub generation: u64,
    /// The running config, defaults filled in.
    pub config: serde_json::Value,
    /// Errors of the last reload attempt that failed, if the latest attempt failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_error: Vec<String>,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Package version.
    pub version: String,
}

/// `GET /certs`: the proxy's workload identity and its certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The SPIFFE ID in the certificate's URI SAN.
    pub identity: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end, seconds since the Unix epoch.
    pub not_after: i64,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in_seconds: i64,
    /// Trust anchors in the bundle.
    pub trust_anchors: usize,
    /// The cert, key and bundle files.
    pub files: CertFiles,
    /// Why the last attempt to load new files failed (the old identity stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where an identity is read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertFiles {
    /// Leaf certificate and chain (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: String,
    /// Trust anchors (PEM).
    pub bundle: String,
}

/// `GET /status`: who this proxy is and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// `sidecar` or `edge`.
    pub mode: String,
    /// The `service` of the config.
    pub service: String,
    /// Package version.
    pub version: String,
    /// Seconds since the proxy started.
    pub uptime_seconds: u64,
    /// SHA-256 (lower-case hex) of the running effective config, as
    /// `GET /config` shows it: equal files give equal hashes, whatever
    /// the number of reloads.
    pub config_hash: String,
    /// How many times a config has been applied (1 after start).
    pub generation: u64,
    /// Errors of the last reload attempt, if it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_error: Vec<String>,
    /// The SPIFFE ID of the workload certificate, if the proxy has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Seconds until that certificate expires (negative once expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_in_seconds: Option<i64>,
    /// `true` while `/ready` says 200.
    pub ready: bool,
}

/// `GET /routes`: how this proxy routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutesInfo {
    /// `sidecar` or `edge`.
    pub mode: String,
    /// One entry per route, in the order they are tried: the edge routes,
    /// or a sidecar's listeners (inbound → app, one per upstream port,
    /// the forward proxy by host).
    pub routes: Vec<RouteInfo>,
}

/// One route of `GET /routes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Route name (edge), or the listener (`inbound`, `outbound`, `proxy`).
    pub name: String,
    /// What the route matches, in short (`host=api.example.test path_prefix=/api`;
    /// `*` for everything).
    #[serde(rename = "match")]
    pub matches: String,
    /// What it does: `to orders`, `split a:90 b:10`, `redirect 301 ...`.
    pub action: String,
    /// The clusters it can send to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
}

/// `POST /explain`: a request to explain; nothing is sent anywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// `GET` when omitted.
    #[serde(default)]
    pub method: Option<String>,
    /// The host (and port) the request names.
    pub authority: String,
    /// Path and query, as the client would send them.
    #[serde(default)]
    pub path: Option<String>,
    /// Header name and value pairs.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The listener to explain for: `inbound`, `proxy`, an upstream's
    /// name (its own port) or `edge` / an edge listener's name; omitted:
    /// the first edge listener in edge mode, else the forward proxy when
    /// an upstream claims the authority, else inbound.
    #[serde(default)]
    pub listener: Option<String>,
    /// The client address (edge `allow` / `deny`).
    #[serde(default)]
    pub client: Option<String>,
    /// The caller's SPIFFE ID (inbound authz).
    #[serde(default)]
    pub identity: Option<String>,
}

/// The answer of `POST /explain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainAnswer {
    /// The listener the request was explained for.
    pub listener: String,
    /// `inbound`, `outbound` or `edge`.
    pub direction: String,
    /// The path after hygiene normalisation (dot segments, `//`, encoded
    /// dots): what policies and routes match on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
    /// The edge route that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The routes tried before it (or all of them when none matched) and
    /// the first condition each failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_routes: Vec<SkippedRoute>,
    /// Every policy met, in order, with its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyOutcome>,
    /// The cluster the request would go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The request target the upstream would receive (after rewrites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    /// The cluster's endpoints and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointInfo>,
    /// The endpoint the balancer picks now (a pick only: nothing is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_endpoint: Option<String>,
    /// The status the proxy itself would answer with (a redirect, or a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The `x-mesh-error` reason of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the request was refused, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An edge route that did not match, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkippedRoute {
    /// Route name.
    pub name: String,
    /// The first condition that failed: `host`, `method`, `path`,
    /// `header NAME`, `cookie NAME` or `query NAME`.
    pub reason: String,
}

/// One policy applied to an explained request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    /// `hygiene`, `authz` (inbound rules) or `route_access` (edge `allow` / `deny`).
    pub policy: String,
    /// `pass`, `allow`, `deny` or `reject`.
    pub outcome: String,
    /// Details: the normalised path, the caller, the client address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One line of `GET /tap`: a finished request (no bodies).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// When the request started (RFC 3339, UTC).
    pub time: String,
    /// `inbound`, `outbound` or `edge`.
    pub direction: String,
    /// The listener's name.
    #[serde(default)]
    pub listener: Option<String>,
    /// `X-Request-Id`.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Request method.
    pub method: String,
    /// Authority (or `Host`).
    #[serde(default)]
    pub authority: Option<String>,
    /// Path and query as received.
    pub path: String,
    /// Status the caller got.
    pub status: u16,
    /// `grpc-status`, for gRPC.
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// `x-mesh-error` reason.
    #[serde(default)]
    pub error: Option<String>,
    /// The edge route.
    #[serde(default)]
    pub route: Option<String>,
    /// The upstream cluster.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The endpoint of the last attempt.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Attempts sent to an endpoint.
    #[serde(default)]
    pub attempts: u32,
    /// The caller's verified SPIFFE ID.
    #[serde(default)]
    pub peer_identity: Option<String>,
    /// The client's address.
    #[serde(default)]
    pub client: Option<String>,
    /// Until the end of the response body, in milliseconds.
    pub duration_ms: f64,
}

/// A line of `GET /tap` that says events were left out: `lagged` (this
/// tap fell behind the proxy) or `rate` (over the tap's `rate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapSkipped {
    /// Events left out since the last such line.
    pub skipped: u64,
    /// `lagged` or `rate`.
    pub reason: String,
}

/// `GET /rate_limits` (also `GET /quotas`): every edge limit and, for the
/// key asked for (`?key=<value>` once per key part, or `?consumer=<value>`),
/// its bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitsView {
    /// The key's values, in the limits' key order.
    pub key: Vec<String>,
    /// Whether Redis is connected; absent without global limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<bool>,
    /// Every limit, by name.
    pub limits: Vec<RateLimitView>,
}

/// One limit of `edge.rate_limits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitView {
    /// Its name.
    pub name: String,
    /// `local` or `global`.
    pub scope: String,
    /// The rate as written (`100/10s`).
    pub rate: String,
    /// Requests per period.
    pub count: u64,
    /// The period (a global limit's window), seconds.
    pub period_seconds: u64,
    /// Extra requests at once (local counting).
    pub burst: u64,
    /// `reject` or `throttle`.
    pub mode: String,
    /// What a bucket is per (`consumer`, `header:x-consumer`, …).
    pub key: Vec<String>,
    /// The asked-for key's bucket, when the key has one value per part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketView>,
    /// Why the bucket could not be read (Redis down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One bucket's state, nothing counted by reading it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketView {
    /// `redis` (global) or `local`.
    pub source: String,
    /// Requests a full bucket or window allows.
    pub limit: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Until the window ends / the bucket is full again, seconds.
    pub reset_seconds: f64,
}

/// The `config_hash` of `GET /status`: SHA-256, lower-case hex, of the
/// effective config's JSON (object keys in a fixed order), so two files
/// that mean the same config hash the same.
pub fn config_hash(config: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_is_sha256_hex_and_stable() {
        let a = serde_json::json!({ "service": "web", "mode": "sidecar" });
        let b = serde_json::json!({ "mode": "sidecar", "service": "web" });
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a).len(), 64);
        assert_ne!(config_hash(&a), config_hash(&serde_json::json!({})));
    }
}
