//! Config in two tiers: `mesh_api::config` mirrors the YAML; this module
//! validates it into [`Settings`], the runtime types layers take
//! (`Duration`, `SocketAddr`, endpoint lists). It is the only place that
//! rejects a config, and it lists every error with its YAML path and line.
//! Hot reload lives in `app`; it calls [`load_file`] and keeps the running
//! settings when this fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::config::{self as raw, Balance, ConfigError, LineIndex, Protocol, TlsMode};
use mesh_api::units::parse_duration;

mod access_log;
mod aggregate;
mod cache;
mod compress;
mod edge;
mod edge_routes;
mod grpc_json;
mod limits;
mod rest_ws;
mod tracing;
mod transform;
mod ws_bridge;

pub use self::tracing::{OtlpEndpoint, TracingSettings, MAX_TRACE_QUEUE};
pub use access_log::{AccessLogSettings, AccessLogTarget, ACCESS_FIELDS};
pub use edge::{EdgeListenerSettings, EdgeSettings, ServerCertSettings, ServerTlsSettings};
pub use edge_routes::RouteSettings;
pub use limits::{Http2Settings, LimitSettings, OverloadSettings};

use crate::balance::{HashKey, Policy};
use crate::discovery::{Endpoint, Source};

/// A validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config as written, defaults filled (for `GET /config`).
    pub raw: raw::Config,
    /// This proxy's service name.
    pub service: String,
    /// Sidecar or edge.
    pub mode: raw::Mode,
    /// Request limits of every HTTP listener.
    pub limits: LimitSettings,
    /// Overload shedding thresholds (`overload:`); default: never sheds.
    pub overload: OverloadSettings,
    /// The access log.
    pub access_log: AccessLogSettings,
    /// The public gateway (`mode: edge`).
    pub edge: Option<EdgeSettings>,
    /// Admin API address.
    pub admin: SocketAddr,
    /// How often to check the file for changes; `None`: no watching.
    pub watch: Option<Duration>,
    /// Drain on SIGTERM.
    pub drain: DrainSettings,
    /// How DNS discovery resolves names (`resolver:`).
    pub resolver: Arc<ResolverSettings>,
    /// This proxy's workload identity (mutual TLS between proxies).
    pub identity: Option<IdentitySettings>,
    /// The inbound listener and the local app.
    pub inbound: Option<InboundSettings>,
    /// Outbound listeners and upstreams.
    pub outbound: OutboundSettings,
    /// What `sidecar iptables` redirects (`interception:`, defaults filled).
    pub interception: InterceptionSettings,
    /// Distributed tracing (`tracing:`); `None`: no spans.
    pub tracing: Option<Arc<TracingSettings>>,
}

/// Transparent interception rules (`interception:`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptionSettings {
    /// The proxy's user: its traffic is never redirected.
    pub proxy_uid: u32,
    /// The proxy's group, also exempt.
    pub proxy_gid: Option<u32>,
    /// Inbound ports redirected; empty: all.
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never redirected.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks never redirected: (address, prefix length).
    pub exclude_outbound_cidrs: Vec<crate::cidr::Cidr>,
    /// Also write ip6tables rules.
    pub ipv6: bool,
}

/// What SIGTERM does.
#[derive(Debug, Clone, Copy)]
pub struct DrainSettings {
    /// Time between `/ready` turning 503 and listeners closing.
    pub delay: Duration,
    /// Time in-flight work gets after listeners close.
    pub deadline: Duration,
}

/// How DNS discovery resolves names (`resolver:`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Nameservers to ask; empty: those of /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Refresh no more often than this, whatever the records' TTL.
    pub ttl_min: Duration,
    /// Refresh at least this often; also the longest retry backoff.
    pub ttl_max: Duration,
    /// On SERVFAIL, timeouts and other failures.
    pub on_failure: raw::OnResolveFailure,
    /// On NXDOMAIN or an answer without records.
    pub on_nxdomain: raw::OnResolveFailure,
    /// Per-query timeout.
    pub timeout: Duration,
}

/// Where the workload identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// The trust domain.
    pub trust_domain: String,
    /// This proxy's SPIFFE ID, `spiffe://<trust_domain>/svc/<service>`.
    pub id: String,
    /// Leaf + chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// Trust anchors, PEM.
    pub bundle: PathBuf,
    /// Whether inbound also accepts plaintext.
    pub mode: TlsMode,
}

/// One inbound authorization rule, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRule {
    /// Caller identity patterns (`*` suffix = prefix match).
    pub allow: Vec<String>,
    /// Upper-case methods; empty = any.
    pub methods: Vec<String>,
    /// Path patterns; empty = any.
    pub paths: Vec<String>,
}

/// The inbound listener.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Where callers connect.
    pub listen: SocketAddr,
    /// The local app, as a cluster of one endpoint named `inbound`.
    pub app: UpstreamSettings,
    /// Protocol detection timeout.
    pub detect_timeout: Duration,
    /// Authorization rules; `None`: allow all.
    pub authz: Option<Vec<AuthzRule>>,
    /// REST/JSON ↔ gRPC transcoding in front of the app.
    pub grpc_json: Option<Arc<crate::translate::grpc_json::GrpcJsonSettings>>,
}

/// Outbound listeners and upstreams.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// HTTP forward proxy address.
    pub proxy: Option<SocketAddr>,
    /// Unknown authorities go direct instead of `no_route`.
    pub passthrough: bool,
    /// Transparent listener address (traffic redirected by iptables).
    pub transparent: Option<SocketAddr>,
    /// Protocol detection timeout.
    pub detect_timeout: Duration,
    /// Named upstreams, in name order.
    pub upstreams: Vec<UpstreamSettings>,
}

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// Cluster name.
    pub name: Arc<str>,
    /// Dedicated local port.
    pub listen: Option<SocketAddr>,
    /// Authorities the forward proxy routes here (lower case).
    pub hosts: Vec<String>,
    /// Where the endpoints come from.
    pub discovery: Source,
    /// What the upstream speaks; `Tcp`: never sniffed.
    pub protocol: Protocol,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle pooled connections close after this.
    pub idle_timeout: Duration,
    /// Mutual TLS to the endpoints, and the SPIFFE ID they must present.
    pub tls: Option<Arc<str>>,
    /// TLS to an upstream outside the mesh (instead of mutual TLS).
    pub public_tls: Option<UpstreamTlsSettings>,
    /// Prefer endpoints in this proxy's zone.
    pub locality: Option<LocalitySettings>,
    /// Endpoint choice.
    pub balance: Policy,
    /// Timeouts for the response head, retries and limits.
    pub resilience: ResilienceSettings,
    /// Active health checks; `None`: endpoints are never checked.
    pub health: Option<HealthSettings>,
    /// gRPC callers bridged onto this REST upstream (`grpc_bridge`).
    pub grpc_bridge: Option<Arc<crate::translate::grpc_json::reverse::GrpcBridgeSettings>>,
}

/// TLS to an upstream outside the mesh, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSettings {
    /// Trust anchors, PEM; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Server name sent and verified.
    pub sni: String,
    /// Verify the certificate chain and name.
    pub verify: bool,
}

/// Active health checking of one cluster, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    /// What a check does.
    pub check: HealthCheck,
    /// Time between rounds of checks (jittered ±10%).
    pub interval: Duration,
    /// A check not done in this long failed.
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy endpoint healthy.
    pub healthy: u32,
    /// Failures in a row that make a healthy endpoint unhealthy.
    pub unhealthy: u32,
}

/// One kind of health check.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheck {
    /// `GET path` over HTTP/1.1; up when the status is in `statuses`.
    Http {
        /// Path and query.
        path: http::uri::PathAndQuery,
        /// Statuses that count as up.
        statuses: Vec<std::ops::RangeInclusive<u16>>,
    },
    /// `grpc.health.v1.Health/Check` for `service`; up when `SERVING`.
    Grpc {
        /// The service name asked about (`""`: the whole server).
        service: String,
    },
    /// A connection (and the mTLS handshake, for mesh upstreams).
    Tcp,
}

/// Locality preference of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalitySettings {
    /// This proxy's zone.
    pub zone: Arc<str>,
    /// Stay local while at least this share of local endpoints is available.
    pub min_local_percent: u8,
    /// Zones of the static endpoints that name one.
    pub zones: Vec<(SocketAddr, Arc<str>)>,
}

/// Timeouts, retries and limits of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceSettings {
    /// Deadline for the response head, retries included.
    pub request_timeout: Option<Duration>,
    /// Deadline for each attempt's response head.
    pub per_try_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Requests in flight to the cluster.
    pub max_requests: u32,
    /// Retries in flight to the cluster.
    pub max_retries: u32,
    /// Connections open to the cluster.
    pub max_connections: u32,
    /// Connections being opened at once.
    pub max_pending: u32,
    /// Passive outlier ejection.
    pub outlier: OutlierSettings,
}

/// When endpoints are ejected, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    /// 5xx answers (or resets) in a row that eject; 0: never.
    pub consecutive_5xx: u32,
    /// Failed connects in a row that eject; 0: never.
    pub consecutive_connect_failures: u32,
    /// First ejection length (then ×2, ×3 … per ejection).
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Largest share of endpoints ejected at once.
    pub max_ejected_percent: u8,
    /// Below this share of available endpoints, all are used.
    pub panic_below_percent: u8,
}

/// When to retry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retry connect failures.
    pub connect_failure: bool,
    /// Retry resets before the response head.
    pub reset: bool,
    /// Retry per-try timeouts.
    pub timeout: bool,
    /// Retry these statuses (`5xx` is 500..=599).
    pub statuses: Vec<std::ops::RangeInclusive<u16>>,
    /// Retry these gRPC status codes.
    pub grpc: Vec<u32>,
    /// Retry POST, PATCH and the like.
    pub non_idempotent: bool,
    /// Largest body kept for replay.
    pub max_body: u64,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Retries per request sent.
    pub budget_ratio: f64,
    /// Retries per second always allowed.
    pub budget_min_per_second: u32,
}

impl ResilienceSettings {
    /// The settings of a cluster whose config says nothing about them.
    pub fn defaults() -> Self {
        let mut errors = Errors {
            index: &LineIndex::default(),
            list: Vec::new(),
        };
        validate_resilience(
            &mut errors,
            "",
            &raw::Timeouts::default(),
            &raw::Retry::default(),
            &raw::Limits::default(),
            &raw::Outlier::default(),
        )
    }
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Settings, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!("cannot read {}: {err}", path.display()),
        }]
    })?;
    load_str_in(&text, path.parent().unwrap_or(Path::new(".")))
}

/// Parses and validates config text (relative paths from the working directory).
pub fn load_str(text: &str) -> Result<Settings, Vec<ConfigError>> {
    load_str_in(text, Path::new("."))
}

/// For tests: [`load_str`] with its errors as `path: message` lines.
#[cfg(test)]
pub(crate) fn load_lines(text: &str) -> Result<Settings, Vec<String>> {
    load_str(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    })
}

/// Parses and validates config text; relative file paths are taken from `base`.
pub fn load_str_in(text: &str, base: &Path) -> Result<Settings, Vec<ConfigError>> {
    let (config, index) = raw::load(text)?;
    validate(config, &index, base)
}

/// Collects errors with their YAML lines.
pub(crate) struct Errors<'a> {
    index: &'a LineIndex,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.list.push(ConfigError {
            path: path.to_string(),
            line: self.index.line(path),
            message: message.into(),
        });
    }

    pub(crate) fn duration(&mut self, path: &str, text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|err| {
            self.push(path, err);
            Duration::ZERO
        })
    }

    pub(crate) fn addr(&mut self, path: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.push(
                path,
                format!("invalid address {text:?} (expected ip:port, e.g. 127.0.0.1:8080)"),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }
}

/// Turns a parsed config into settings, or every reason it cannot be.
pub fn validate(
    config: raw::Config,
    index: &LineIndex,
    base: &Path,
) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Errors {
        index,
        list: Vec::new(),
    };
    if !valid_name(&config.service) {
        errors.push(
            "service",
            format!(
                "invalid service name {:?} (use a-z, 0-9, '-', '.', '_')",
                config.service
            ),
        );
    }
    let admin = errors.addr("admin.listen", &config.admin.listen);
    let interval = errors.duration("reload.interval", &config.reload.interval);
    if config.reload.watch && interval.is_zero() {
        errors.push("reload.interval", "must be more than 0");
    }
    let drain = DrainSettings {
        delay: errors.duration("drain.delay", &config.drain.delay),
        deadline: errors.duration("drain.deadline", &config.drain.deadline),
    };
    let identity = config.identity.as_ref().map(|identity| {
        if !valid_name(&identity.trust_domain) {
            errors.push(
                "identity.trust_domain",
                format!("invalid trust domain {:?}", identity.trust_domain),
            );
        }
        IdentitySettings {
            trust_domain: identity.trust_domain.clone(),
            id: format!("spiffe://{}/svc/{}", identity.trust_domain, config.service),
            cert: base.join(&identity.cert),
            key: base.join(&identity.key),
            bundle: base.join(&identity.bundle),
            mode: identity.mode,
        }
    });
    let inbound = config.inbound.as_ref().map(|inbound| {
        let app = errors.addr("inbound.app", &inbound.app);
        if inbound.protocol == Protocol::Udp {
            errors.push(
                "inbound.protocol",
                "udp is not supported on the inbound listener (UDP upstreams are outbound only)",
            );
        }
        let opaque =
            inbound.protocol == Protocol::Tcp || inbound.opaque_ports.contains(&app.port());
        InboundSettings {
            listen: errors.addr("inbound.listen", &inbound.listen),
            detect_timeout: errors.duration("inbound.detect_timeout", &inbound.detect_timeout),
            app: UpstreamSettings {
                name: Arc::from("inbound"),
                listen: None,
                hosts: Vec::new(),
                discovery: Source::Static(vec![Endpoint {
                    addr: app,
                    weight: 1,
                }]),
                protocol: if opaque {
                    Protocol::Tcp
                } else {
                    inbound.protocol
                },
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
                tls: None,
                public_tls: None,
                locality: None,
                balance: Policy::P2cEwma,
                resilience: ResilienceSettings::defaults(),
                health: None,
                grpc_bridge: None,
            },
            authz: inbound
                .authz
                .as_ref()
                .map(|rules| validate_authz(&mut errors, rules)),
            grpc_json: inbound
                .grpc_json
                .as_ref()
                .and_then(|raw| grpc_json::validate(&mut errors, "inbound.grpc_json", raw, base)),
        }
    });
    let outbound = &config.outbound;
    let proxy = outbound
        .proxy
        .as_ref()
        .map(|p| errors.addr("outbound.proxy", p));
    let transparent = outbound
        .transparent
        .as_ref()
        .map(|t| errors.addr("outbound.transparent", t));
    let interception = validate_interception(
        &mut errors,
        &config.interception.clone().unwrap_or_default(),
    );
    let detect_timeout = errors.duration("outbound.detect_timeout", &outbound.detect_timeout);
    let resolver = Arc::new(validate_resolver(&mut errors, &config.resolver));
    let mut upstreams = Vec::new();
    let mut claimed: HashMap<String, String> = HashMap::new();
    let edge_upstreams = config.edge.iter().flat_map(|edge| &edge.upstreams);
    let all_upstreams = outbound
        .upstreams
        .iter()
        .map(|(name, upstream)| (format!("outbound.upstreams.{name}"), name, upstream))
        .chain(
            edge_upstreams
                .map(|(name, upstream)| (format!("edge.upstreams.{name}"), name, upstream)),
        );
    for (at, name, upstream) in all_upstreams {
        if outbound.upstreams.contains_key(name) && at.starts_with("edge.") {
            errors.push(
                &at,
                format!("upstream {name:?} is also defined in outbound.upstreams"),
            );
            continue;
        }
        let mut settings = validate_upstream(
            &mut errors,
            &at,
            name,
            upstream,
            &mut claimed,
            &resolver,
            base,
        );
        settings.locality = config.locality.as_ref().map(|locality| LocalitySettings {
            zone: Arc::from(locality.zone.as_str()),
            min_local_percent: locality.min_local_percent,
            zones: upstream
                .discovery
                .endpoints
                .iter()
                .filter_map(|e| Some((e.addr().parse().ok()?, Arc::from(e.zone()?))))
                .collect(),
        });
        settings.tls = match (&identity, upstream.mtls) {
            // No DTLS: UDP upstreams are always plaintext.
            _ if upstream.protocol == Protocol::Udp => None,
            // Outside the mesh: public TLS instead.
            _ if upstream.tls.is_some() => {
                if upstream.identity.is_some() {
                    errors.push(
                        &format!("{at}.identity"),
                        "an upstream with `tls` is outside the mesh: it has no SPIFFE identity",
                    );
                }
                None
            }
            (Some(identity), true) => {
                let expected = upstream
                    .identity
                    .clone()
                    .unwrap_or_else(|| format!("spiffe://{}/svc/{name}", identity.trust_domain));
                if mesh_api::ca::parse_spiffe_id(&expected).is_none() {
                    errors.push(
                        &format!("{at}.identity"),
                        format!("not a SPIFFE ID of the form spiffe://<trust-domain>/svc/<name>: {expected:?}"),
                    );
                }
                Some(Arc::from(expected))
            }
            (None, _) if upstream.identity.is_some() => {
                errors.push(
                    &format!("{at}.identity"),
                    "needs this proxy's own `identity` section",
                );
                None
            }
            _ => None,
        };
        upstreams.push(settings);
    }
    let limits = limits::validate_limits(&mut errors, &config.limits);
    let overload = config
        .overload
        .as_ref()
        .map(|raw_overload| limits::validate_overload(&mut errors, raw_overload))
        .unwrap_or_default();
    let access_log = access_log::validate_access_log(&mut errors, &config.log, base);
    let tracing = config
        .tracing
        .as_ref()
        .and_then(|raw_tracing| self::tracing::validate_tracing(&mut errors, raw_tracing))
        .map(Arc::new);
    let names: Vec<&str> = upstreams.iter().map(|u| &*u.name).collect();
    let edge = config
        .edge
        .as_ref()
        .map(|raw_edge| edge::validate_edge(&mut errors, raw_edge, &names, base));
    match (config.mode, &edge) {
        (raw::Mode::Edge, None) => errors.push("edge", "required with mode: edge"),
        (raw::Mode::Edge, Some(edge)) if edge.listeners.is_empty() => {
            errors.push("edge.listeners", "mode: edge needs at least one listener")
        }
        (raw::Mode::Sidecar, Some(_)) => errors.push("edge", "only with mode: edge"),
        _ => {}
    }
    let edge_listeners: Vec<(String, SocketAddr)> = edge
        .iter()
        .flat_map(|e| &e.listeners)
        .map(|l| (format!("{}.listen", l.path), l.listen))
        .collect();
    check_unique_listeners(
        &mut errors,
        admin,
        &inbound,
        proxy,
        transparent,
        &upstreams,
        &edge_listeners,
    );
    if !errors.list.is_empty() {
        return Err(errors.list);
    }
    Ok(Settings {
        service: config.service.clone(),
        mode: config.mode,
        limits,
        overload,
        access_log,
        edge,
        admin,
        watch: config.reload.watch.then_some(interval),
        drain,
        resolver,
        identity,
        inbound,
        outbound: OutboundSettings {
            proxy,
            passthrough: outbound.passthrough,
            transparent,
            detect_timeout,
            upstreams,
        },
        interception,
        tracing,
        raw: config,
    })
}

fn validate_upstream(
    errors: &mut Errors<'_>,
    at: &str,
    name: &str,
    upstream: &raw::Upstream,
    claimed: &mut HashMap<String, String>,
    resolver: &Arc<ResolverSettings>,
    base: &Path,
) -> UpstreamSettings {
    if !valid_name(name) {
        errors.push(
            at,
            format!("invalid upstream name {name:?} (use a-z, 0-9, '-', '.', '_')"),
        );
    }
    let listen = upstream
        .listen
        .as_ref()
        .map(|l| errors.addr(&format!("{at}.listen"), l));
    let mut hosts = vec![name.to_ascii_lowercase()];
    hosts.extend(upstream.hosts.iter().map(|h| h.to_ascii_lowercase()));
    for (i, host) in hosts.iter().enumerate() {
        let path = if i == 0 {
            at.to_string()
        } else {
            format!("{at}.hosts[{}]", i - 1)
        };
        if i > 0 && host.parse::<http::uri::Authority>().is_err() {
            errors.push(&path, format!("invalid host {host:?}"));
        }
        if let Some(owner) = claimed.insert(host.clone(), name.to_string()) {
            if owner != name {
                errors.push(
                    &path,
                    format!("host {host:?} is already routed to upstream {owner:?}"),
                );
            }
        }
    }
    let discovery = validate_discovery(errors, at, &upstream.discovery, resolver);
    if upstream.protocol == Protocol::Udp {
        check_udp_upstream(errors, at, upstream);
    }
    let public_tls = upstream.tls.as_ref().map(|tls| {
        if upstream.protocol == Protocol::Udp {
            errors.push(&format!("{at}.tls"), "not supported with protocol: udp");
        }
        let default_sni = upstream
            .discovery
            .dns
            .as_deref()
            .and_then(|dns| dns.rsplit_once(':').map(|(host, _)| host.to_string()))
            .unwrap_or_else(|| name.to_string());
        let sni = tls.sni.clone().unwrap_or(default_sni);
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            errors.push(
                &format!("{at}.tls.sni"),
                format!("invalid server name {sni:?}"),
            );
        }
        let ca = tls.ca.as_ref().map(|ca| base.join(ca));
        // A CA file that cannot be used is a config error now, not a 502 later.
        if let Some(Err(message)) = ca.as_deref().map(crate::tls::upstream::load_roots) {
            errors.push(&format!("{at}.tls.ca"), message);
        }
        UpstreamTlsSettings {
            ca,
            sni,
            verify: tls.verify,
        }
    });
    UpstreamSettings {
        name: Arc::from(name),
        listen,
        hosts,
        discovery,
        protocol: upstream.protocol,
        connect_timeout: errors.duration(
            &format!("{at}.timeouts.connect"),
            &upstream.timeouts.connect,
        ),
        idle_timeout: errors.duration(&format!("{at}.timeouts.idle"), &upstream.timeouts.idle),
        tls: None,
        public_tls,
        locality: None,
        balance: validate_balance(errors, at, &upstream.balance),
        resilience: validate_resilience(
            errors,
            at,
            &upstream.timeouts,
            &upstream.retry,
            &upstream.limits,
            &upstream.outlier,
        ),
        health: upstream
            .health
            .as_ref()
            .map(|health| validate_health(errors, &format!("{at}.health"), health)),
        grpc_bridge: validate_grpc_bridge(errors, at, upstream, base),
    }
}

/// `grpc_bridge`: only on an HTTP upstream (what the REST service speaks).
fn validate_grpc_bridge(
    errors: &mut Errors<'_>,
    at: &str,
    upstream: &raw::Upstream,
    base: &Path,
) -> Option<Arc<crate::translate::grpc_json::reverse::GrpcBridgeSettings>> {
    let bridge = upstream.grpc_bridge.as_ref()?;
    let at = format!("{at}.grpc_bridge");
    if matches!(
        upstream.protocol,
        Protocol::Grpc | Protocol::Tcp | Protocol::Udp
    ) {
        errors.push(
            &at,
            "needs the protocol the REST service speaks (http1, http2 or auto)",
        );
    }
    grpc_json::validate_bridge(errors, &at, bridge, base)
}

/// `protocol: udp`: a dedicated `listen` port is the only way in (no
/// forward proxy or transparent path carries UDP), and what only TCP or
/// HTTP can do is refused rather than silently ignored.
fn check_udp_upstream(errors: &mut Errors<'_>, at: &str, upstream: &raw::Upstream) {
    if upstream.listen.is_none() {
        errors.push(
            &format!("{at}.listen"),
            "required with protocol: udp (UDP reaches an upstream only through its own listen port)",
        );
    }
    if !upstream.hosts.is_empty() {
        errors.push(
            &format!("{at}.hosts"),
            "not supported with protocol: udp (the forward proxy carries HTTP only)",
        );
    }
    if parse_duration(&upstream.timeouts.idle).is_ok_and(|idle| idle.is_zero()) {
        errors.push(
            &format!("{at}.timeouts.idle"),
            "must be more than 0 with protocol: udp (it is the flow idle timeout)",
        );
    }
    if upstream.health.is_some() {
        errors.push(
            &format!("{at}.health"),
            "not supported with protocol: udp (passive outlier ejection still applies)",
        );
    }
    if let Balance::RingHash(ring) = &upstream.balance {
        if ring.key != "source_ip" {
            errors.push(
                &format!("{at}.balance.ring_hash.key"),
                format!(
                    "only source_ip is supported with protocol: udp, got {:?}",
                    ring.key
                ),
            );
        }
    }
}

/// `health:`: exactly one kind of check, durations more than 0, thresholds at least 1.
fn validate_health(errors: &mut Errors<'_>, at: &str, health: &raw::Health) -> HealthSettings {
    let kinds = [health.http.is_some(), health.grpc.is_some(), health.tcp];
    if kinds.iter().filter(|set| **set).count() != 1 {
        errors.push(at, "set exactly one of http, grpc and tcp");
    }
    let check = if let Some(path) = &health.http {
        let parsed = match path.parse::<http::uri::PathAndQuery>() {
            Ok(parsed) if path.starts_with('/') => parsed,
            _ => {
                errors.push(
                    &format!("{at}.http"),
                    format!("expected a path starting with / (e.g. /healthz), got {path:?}"),
                );
                http::uri::PathAndQuery::from_static("/")
            }
        };
        let mut statuses = Vec::new();
        for (i, status) in health.statuses.iter().enumerate() {
            if (100..=599).contains(status) {
                statuses.push(*status..=*status);
            } else {
                errors.push(
                    &format!("{at}.statuses[{i}]"),
                    format!("not an HTTP status (100-599): {status}"),
                );
            }
        }
        if health.statuses.is_empty() {
            statuses.push(200..=299);
        }
        HealthCheck::Http {
            path: parsed,
            statuses,
        }
    } else if let Some(service) = &health.grpc {
        HealthCheck::Grpc {
            service: service.clone(),
        }
    } else {
        HealthCheck::Tcp
    };
    if !health.statuses.is_empty() && health.http.is_none() {
        errors.push(&format!("{at}.statuses"), "applies to http checks only");
    }
    let mut positive = |field: &str, text: &str| {
        let path = format!("{at}.{field}");
        let value = errors.duration(&path, text);
        if parse_duration(text).is_ok() && value.is_zero() {
            errors.push(&path, "must be more than 0");
        }
        value
    };
    let interval = positive("interval", &health.interval);
    let timeout = positive("timeout", &health.timeout);
    if timeout > interval {
        errors.push(
            &format!("{at}.timeout"),
            format!(
                "must not be more than interval ({}), got {}",
                health.interval, health.timeout
            ),
        );
    }
    for (field, value) in [("healthy", health.healthy), ("unhealthy", health.unhealthy)] {
        if value == 0 {
            errors.push(&format!("{at}.{field}"), "must be at least 1");
        }
    }
    HealthSettings {
        check,
        interval,
        timeout,
        healthy: health.healthy,
        unhealthy: health.unhealthy,
    }
}

fn validate_resilience(
    errors: &mut Errors<'_>,
    at: &str,
    timeouts: &raw::Timeouts,
    retry: &raw::Retry,
    limits: &raw::Limits,
    outlier: &raw::Outlier,
) -> ResilienceSettings {
    let join = |field: &str| {
        if at.is_empty() {
            field.to_string()
        } else {
            format!("{at}.{field}")
        }
    };
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    let request_timeout = nonzero(errors.duration(&join("timeouts.request"), &timeouts.request));
    let per_try_timeout = nonzero(errors.duration(&join("timeouts.per_try"), &timeouts.per_try));
    let mut policy = RetryPolicy {
        attempts: retry.attempts,
        connect_failure: false,
        reset: false,
        timeout: false,
        statuses: Vec::new(),
        grpc: Vec::new(),
        non_idempotent: retry.non_idempotent,
        max_body: mesh_api::units::parse_size(&retry.max_body).unwrap_or_else(|err| {
            errors.push(&join("retry.max_body"), err);
            0
        }),
        backoff_base: errors.duration(&join("retry.backoff.base"), &retry.backoff.base),
        backoff_max: errors.duration(&join("retry.backoff.max"), &retry.backoff.max),
        budget_ratio: retry.budget.ratio,
        budget_min_per_second: retry.budget.min_per_second,
    };
    if retry.attempts > 10 {
        errors.push(
            &join("retry.attempts"),
            format!("at most 10, got {}", retry.attempts),
        );
    }
    for (i, condition) in retry.on.iter().enumerate() {
        match condition.as_str() {
            "connect_failure" => policy.connect_failure = true,
            "reset" => policy.reset = true,
            "timeout" => policy.timeout = true,
            "unavailable" => policy.grpc.push(14),
            "resource_exhausted" => policy.grpc.push(8),
            "5xx" => policy.statuses.push(500..=599),
            code => match code.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => policy.statuses.push(code..=code),
                _ => errors.push(
                    &join(&format!("retry.on[{i}]")),
                    format!("unknown retry condition {condition:?} (connect_failure, reset, timeout, unavailable, resource_exhausted, 5xx, or a status 400-599)"),
                ),
            },
        }
    }
    if !(0.0..=1.0).contains(&retry.budget.ratio) {
        errors.push(
            &join("retry.budget.ratio"),
            format!("must be between 0 and 1, got {}", retry.budget.ratio),
        );
    }
    if policy.backoff_max < policy.backoff_base {
        errors.push(
            &join("retry.backoff.max"),
            "must not be less than backoff.base",
        );
    }
    for (field, value) in [
        ("limits.max_requests", limits.max_requests),
        ("limits.max_connections", limits.max_connections),
        ("limits.max_pending", limits.max_pending),
    ] {
        if value == 0 {
            errors.push(&join(field), "must be at least 1");
        }
    }
    for (field, value) in [
        ("outlier.max_ejected_percent", outlier.max_ejected_percent),
        ("outlier.panic_below_percent", outlier.panic_below_percent),
    ] {
        if value > 100 {
            errors.push(&join(field), format!("a percentage (0-100), got {value}"));
        }
    }
    let outlier = OutlierSettings {
        consecutive_5xx: outlier.consecutive_5xx,
        consecutive_connect_failures: outlier.consecutive_connect_failures,
        base_ejection: errors.duration(&join("outlier.base_ejection"), &outlier.base_ejection),
        max_ejection: errors.duration(&join("outlier.max_ejection"), &outlier.max_ejection),
        max_ejected_percent: outlier.max_ejected_percent,
        panic_below_percent: outlier.panic_below_percent,
    };
    ResilienceSettings {
        request_timeout,
        per_try_timeout,
        retry: policy,
        max_requests: limits.max_requests,
        max_retries: limits.max_retries,
        max_connections: limits.max_connections,
        max_pending: limits.max_pending,
        outlier,
    }
}

fn validate_balance(errors: &mut Errors<'_>, at: &str, balance: &Balance) -> Policy {
    match balance {
        Balance::P2cEwma => Policy::P2cEwma,
        Balance::RoundRobin => Policy::RoundRobin,
        Balance::LeastRequest => Policy::LeastRequest,
        Balance::RingHash(ring) => {
            let key = match ring.key.split_once(':') {
                _ if ring.key == "source_ip" => Some(HashKey::SourceIp),
                Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(HashKey::Header),
                Some(("cookie", name)) if valid_cookie_name(name) => {
                    Some(HashKey::Cookie(name.to_string()))
                }
                _ => None,
            };
            key.map(Policy::RingHash).unwrap_or_else(|| {
                errors.push(
                    &format!("{at}.balance.ring_hash.key"),
                    format!(
                        "expected header:<name>, cookie:<name> or source_ip, got {:?}",
                        ring.key
                    ),
                );
                Policy::P2cEwma
            })
        }
    }
}

/// An RFC 6265 cookie name: visible ASCII, no separators that would break `Set-Cookie`.
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"=;,\"()<>@:/[]?{}\\".contains(&b))
}

/// Exactly one endpoint source; DNS sources take the `resolver` settings.
fn validate_discovery(
    errors: &mut Errors<'_>,
    at: &str,
    discovery: &raw::Discovery,
    resolver: &Arc<ResolverSettings>,
) -> Source {
    let at = format!("{at}.discovery");
    let set = [
        !discovery.endpoints.is_empty(),
        discovery.dns.is_some(),
        discovery.srv.is_some(),
    ];
    match set.iter().filter(|s| **s).count() {
        0 => errors.push(
            &at,
            "no endpoints: set one of discovery.endpoints, discovery.dns or discovery.srv",
        ),
        1 => {}
        _ => errors.push(
            &at,
            "set only one of discovery.endpoints, discovery.dns and discovery.srv",
        ),
    }
    if let Some(dns) = &discovery.dns {
        let parsed = dns
            .rsplit_once(':')
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)));
        return match parsed {
            Some((name, port)) if valid_hostname(name) && port > 0 => Source::Dns {
                name: name.to_string(),
                port,
                resolver: resolver.clone(),
            },
            _ => {
                errors.push(
                    &format!("{at}.dns"),
                    format!("expected name:port (e.g. orders.mesh.local:8080), got {dns:?}"),
                );
                Source::Static(Vec::new())
            }
        };
    }
    if let Some(srv) = &discovery.srv {
        if !srv.starts_with('_') || !valid_hostname(srv) {
            errors.push(
                &format!("{at}.srv"),
                format!("expected an SRV name like _http._tcp.orders.mesh.local, got {srv:?}"),
            );
        }
        return Source::Srv {
            name: srv.clone(),
            resolver: resolver.clone(),
        };
    }
    let mut endpoints = Vec::new();
    for (i, spec) in discovery.endpoints.iter().enumerate() {
        let path = format!("{at}.endpoints[{i}]");
        let addr = errors.addr(&path, spec.addr());
        if spec.weight() == 0 {
            errors.push(&format!("{path}.weight"), "must be at least 1");
        }
        endpoints.push(Endpoint {
            addr,
            weight: spec.weight(),
        });
    }
    Source::Static(endpoints)
}

/// `resolver:`: nameservers as addresses, durations parsed, `ttl.min` ≤ `ttl.max`.
fn validate_resolver(errors: &mut Errors<'_>, resolver: &raw::Resolver) -> ResolverSettings {
    let mut nameservers = Vec::new();
    for (i, server) in resolver.nameservers.iter().enumerate() {
        let path = format!("resolver.nameservers[{i}]");
        // A bare IP means the usual DNS port.
        let addr = match server.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => errors.addr(&path, server),
        };
        if addr.port() == 0 && server.parse::<SocketAddr>().is_ok() {
            errors.push(&path, "port must not be 0 (DNS is usually on 53)");
        }
        nameservers.push(addr);
    }
    let ttl_min = errors.duration("resolver.ttl.min", &resolver.ttl.min);
    let ttl_max = errors.duration("resolver.ttl.max", &resolver.ttl.max);
    if parse_duration(&resolver.ttl.min).is_ok() && ttl_min.is_zero() {
        errors.push("resolver.ttl.min", "must be more than 0");
    }
    if ttl_max < ttl_min {
        errors.push(
            "resolver.ttl.max",
            format!(
                "must not be less than ttl.min ({}), got {}",
                resolver.ttl.min, resolver.ttl.max
            ),
        );
    }
    let timeout = errors.duration("resolver.timeout", &resolver.timeout);
    if parse_duration(&resolver.timeout).is_ok() && timeout.is_zero() {
        errors.push("resolver.timeout", "must be more than 0");
    }
    ResolverSettings {
        nameservers,
        ttl_min,
        ttl_max,
        on_failure: resolver.on_failure,
        on_nxdomain: resolver.on_nxdomain,
        timeout,
    }
}

/// A DNS name: labels of letters, digits, `-` and `_`, dot separated, optional final dot.
fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn validate_authz(errors: &mut Errors<'_>, rules: &[raw::AuthzRule]) -> Vec<AuthzRule> {
    let mut compiled = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("inbound.authz[{i}]");
        if rule.allow.is_empty() {
            errors.push(
                &format!("{at}.allow"),
                "lists no caller; a rule must allow someone",
            );
        }
        for (j, pattern) in rule.allow.iter().enumerate() {
            let exact = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern != "*" && !exact.starts_with("spiffe://") {
                errors.push(
                    &format!("{at}.allow[{j}]"),
                    format!("{pattern:?} is not a SPIFFE ID pattern (spiffe://..., optionally ending in *, or \"*\")"),
                );
            }
        }
        let mut methods = Vec::new();
        for (j, method) in rule.methods.iter().enumerate() {
            match http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m.as_str().to_string()),
                Err(_) => errors.push(
                    &format!("{at}.methods[{j}]"),
                    format!("invalid method {method:?}"),
                ),
            }
        }
        for (j, path) in rule.paths.iter().enumerate() {
            if !path.starts_with('/') && path != "*" {
                errors.push(
                    &format!("{at}.paths[{j}]"),
                    format!("{path:?} must start with /"),
                );
            }
        }
        compiled.push(AuthzRule {
            allow: rule.allow.clone(),
            methods,
            paths: rule.paths.clone(),
        });
    }
    compiled
}

/// Two listeners on one fixed address would fail at bind time: say so now.
fn check_unique_listeners(
    errors: &mut Errors<'_>,
    admin: SocketAddr,
    inbound: &Option<InboundSettings>,
    proxy: Option<SocketAddr>,
    transparent: Option<SocketAddr>,
    upstreams: &[UpstreamSettings],
    edge_listeners: &[(String, SocketAddr)],
) {
    // A UDP and a TCP listener may share an address: the key holds the transport.
    let mut seen: HashMap<(SocketAddr, bool), String> = HashMap::new();
    let mut all = vec![("admin.listen".to_string(), admin, false)];
    all.extend(
        inbound
            .as_ref()
            .map(|i| ("inbound.listen".to_string(), i.listen, false)),
    );
    all.extend(proxy.map(|p| ("outbound.proxy".to_string(), p, false)));
    all.extend(transparent.map(|t| ("outbound.transparent".to_string(), t, false)));
    all.extend(
        edge_listeners
            .iter()
            .map(|(path, addr)| (path.clone(), *addr, false)),
    );
    all.extend(upstreams.iter().filter_map(|u| {
        u.listen.map(|l| {
            let path = format!("outbound.upstreams.{}.listen", u.name);
            (path, l, u.protocol == Protocol::Udp)
        })
    }));
    for (path, addr, udp) in all {
        if addr.port() == 0 {
            continue;
        }
        if let Some(first) = seen.insert((addr, udp), path.clone()) {
            errors.push(&path, format!("address {addr} is already used by {first}"));
        }
    }
}

fn validate_interception(errors: &mut Errors<'_>, raw: &raw::Interception) -> InterceptionSettings {
    for (field, ports) in [
        ("inbound_ports", &raw.inbound_ports),
        ("exclude_inbound_ports", &raw.exclude_inbound_ports),
        ("exclude_outbound_ports", &raw.exclude_outbound_ports),
    ] {
        if ports.contains(&0) {
            errors.push(&format!("interception.{field}"), "port 0 is not a port");
        }
    }
    let cidrs = edge::cidrs(
        errors,
        "interception.exclude_outbound_cidrs",
        &raw.exclude_outbound_cidrs,
    );
    InterceptionSettings {
        proxy_uid: raw.proxy_uid,
        proxy_gid: raw.proxy_gid,
        inbound_ports: raw.inbound_ports.clone(),
        exclude_inbound_ports: raw.exclude_inbound_ports.clone(),
        exclude_outbound_ports: raw.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: cidrs,
        ipv6: raw.ipv6,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_semantic_error_is_listed_with_its_line() {
        let text = "service: web\nadmin: { listen: nowhere }\ndrain: { delay: soon }\noutbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:9001\n      discovery: { endpoints: [] }\n    users:\n      listen: 127.0.0.1:9001\n      hosts: [orders]\n      discovery: { endpoints: [127.0.0.1:1] }\n";
        let errors = load_str(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "admin.listen",
                "drain.delay",
                "outbound.upstreams.orders.discovery",
                "outbound.upstreams.users.hosts[0]",
                "outbound.upstreams.users.listen"
            ],
            "{errors:#?}"
        );
        assert_eq!(errors[0].line, Some(2));
        assert_eq!(errors[4].line, Some(10));
    }

    #[test]
    fn opaque_app_port_makes_inbound_tcp() {
        let settings =
            load_str("service: db\ninbound: { app: 127.0.0.1:3306, opaque_ports: [3306] }\n")
                .unwrap();
        assert_eq!(settings.inbound.unwrap().app.protocol, Protocol::Tcp);
    }

    #[test]
    fn dns_sources_carry_the_validated_resolver() {
        let settings = load_str(
            "service: web\nresolver:\n  nameservers: [127.0.0.1:5353, \"::1\"]\n  ttl: { min: 2s, max: 1m }\n  on_nxdomain: clear\n  timeout: 500ms\noutbound:\n  upstreams:\n    a: { discovery: { dns: web.test:8080 } }\n    b: { discovery: { srv: _http._tcp.web.test } }\n",
        )
        .unwrap();
        let expected = ResolverSettings {
            nameservers: vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ],
            ttl_min: Duration::from_secs(2),
            ttl_max: Duration::from_secs(60),
            on_failure: raw::OnResolveFailure::KeepLastKnown,
            on_nxdomain: raw::OnResolveFailure::Clear,
            timeout: Duration::from_millis(500),
        };
        assert_eq!(*settings.resolver, expected);
        let sources: Vec<&Source> = settings
            .outbound
            .upstreams
            .iter()
            .map(|u| &u.discovery)
            .collect();
        assert!(matches!(
            sources[0],
            Source::Dns { name, port: 8080, resolver } if name == "web.test" && **resolver == expected
        ));
        assert!(matches!(
            sources[1],
            Source::Srv { name, resolver } if name == "_http._tcp.web.test" && **resolver == expected
        ));
        let defaults = load_str("service: web\n").unwrap().resolver;
        assert!(defaults.nameservers.is_empty(), "/etc/resolv.conf");
        assert_eq!(
            (defaults.ttl_min, defaults.ttl_max),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
    }

    #[test]
    fn resolver_errors_name_their_path() {
        let text = "service: web\nresolver:\n  nameservers: [\"10.0.0.1:x\", 127.0.0.1:0]\n  ttl: { min: 10m, max: 1m }\n  timeout: 0s\noutbound:\n  upstreams:\n    a: { discovery: { dns: web.test } }\n    b: { discovery: { srv: web.test } }\n";
        let errors = load_str(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "resolver.nameservers[0]",
                "resolver.nameservers[1]",
                "resolver.ttl.max",
                "resolver.timeout",
                "outbound.upstreams.a.discovery.dns",
                "outbound.upstreams.b.discovery.srv",
            ],
            "{errors:#?}"
        );
        assert_eq!(errors[2].line, Some(4));
        assert!(
            errors[2].message.contains("ttl.min (10m)"),
            "{}",
            errors[2].message
        );
    }

    #[test]
    fn health_checks_are_validated_with_defaults() {
        let settings = load_str(
            "service: web\noutbound:\n  upstreams:\n    a: { discovery: { endpoints: [127.0.0.1:1] }, health: { http: /healthz } }\n    b: { discovery: { endpoints: [127.0.0.1:1] }, health: { grpc: \"\", interval: 2s, timeout: 500ms, healthy: 1, unhealthy: 5 } }\n    c: { discovery: { endpoints: [127.0.0.1:1] } }\n",
        )
        .unwrap();
        let health: Vec<_> = settings
            .outbound
            .upstreams
            .iter()
            .map(|u| u.health.clone())
            .collect();
        assert_eq!(
            health,
            [
                Some(HealthSettings {
                    check: HealthCheck::Http {
                        path: http::uri::PathAndQuery::from_static("/healthz"),
                        statuses: vec![200..=299],
                    },
                    interval: Duration::from_secs(5),
                    timeout: Duration::from_secs(1),
                    healthy: 2,
                    unhealthy: 3,
                }),
                Some(HealthSettings {
                    check: HealthCheck::Grpc {
                        service: String::new()
                    },
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_millis(500),
                    healthy: 1,
                    unhealthy: 5,
                }),
                None,
            ]
        );
        let text = "service: web\noutbound:\n  upstreams:\n    a:\n      discovery: { endpoints: [127.0.0.1:1] }\n      health: { http: healthz, tcp: true, statuses: [700], interval: 0s, timeout: 1s, healthy: 0 }\n    b:\n      discovery: { endpoints: [127.0.0.1:1] }\n      health: { tcp: true, statuses: [200] }\n";
        let errors = load_str(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "outbound.upstreams.a.health",
                "outbound.upstreams.a.health.http",
                "outbound.upstreams.a.health.statuses[0]",
                "outbound.upstreams.a.health.interval",
                "outbound.upstreams.a.health.timeout",
                "outbound.upstreams.a.health.healthy",
                "outbound.upstreams.b.health.statuses",
            ],
            "{errors:#?}"
        );
        assert_eq!(errors[0].line, Some(6));
    }

    #[test]
    fn udp_upstreams_need_a_listener_and_refuse_what_only_tcp_does() {
        let text = "service: web\ninbound: { app: 127.0.0.1:8080, protocol: udp }\noutbound:\n  upstreams:\n    dns:\n      protocol: udp\n      hosts: [dns.local]\n      timeouts: { idle: 0s }\n      balance: { ring_hash: { key: header:x } }\n      health: { tcp: true }\n      discovery: { endpoints: [127.0.0.1:53] }\n";
        let errors = load_str(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "inbound.protocol",
                "outbound.upstreams.dns.listen",
                "outbound.upstreams.dns.hosts",
                "outbound.upstreams.dns.timeouts.idle",
                "outbound.upstreams.dns.health",
                "outbound.upstreams.dns.balance.ring_hash.key",
            ],
            "{errors:#?}"
        );
        assert_eq!(
            errors[1].line,
            Some(5),
            "a missing key points at its parent"
        );
        // UDP may share a TCP listener's address; two UDP listeners may not.
        let text = "service: web\noutbound:\n  upstreams:\n    dns:\n      listen: 127.0.0.1:5353\n      protocol: udp\n      discovery: { endpoints: [127.0.0.1:53] }\n    tcp-dns:\n      listen: 127.0.0.1:5353\n      protocol: tcp\n      discovery: { endpoints: [127.0.0.1:53] }\n";
        let settings = load_str(text).expect("udp and tcp share a port");
        assert!(settings.outbound.upstreams[0].tls.is_none());
        let text = text.replace("protocol: tcp", "protocol: udp");
        let errors = load_str(&text).expect_err("two udp listeners on one port");
        assert_eq!(errors[0].path, "outbound.upstreams.tcp-dns.listen");
    }
}
