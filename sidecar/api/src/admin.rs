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
