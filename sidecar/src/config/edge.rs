//! `edge:` validated (`mode: edge`): public listeners, routes, trusted
//! proxies. Edge upstreams are validated with the outbound ones (same
//! shape, one namespace) in the parent module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderName;
use mesh_api::config as raw;

use super::edge_routes::{validate_routes, RouteSettings};
use super::Errors;
use crate::cidr::Cidr;

/// The public gateway.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Public listeners.
    pub listeners: Vec<EdgeListenerSettings>,
    /// Connections open at once across every edge listener.
    pub max_connections: Option<u32>,
    /// Whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Response headers removed from every upstream answer.
    pub strip_response_headers: Vec<HeaderName>,
    /// Routes, first match wins.
    pub routes: Arc<Vec<RouteSettings>>,
    /// Authenticators routes refer to.
    pub auth: crate::policy::auth::AuthSettings,
    /// Rate limits and quotas routes refer to.
    pub rate_limits: crate::policy::rate_limit::RateLimitSettings,
    /// The response store cached routes share.
    pub cache: crate::edge::cache::CacheStoreSettings,
}

/// One public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeListenerSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// YAML path of the listener (`edge.listeners[0]`).
    pub path: String,
    /// HTTPS: certificates by SNI.
    pub tls: Option<ServerTlsSettings>,
    /// Answer everything with a redirect to HTTPS on this port, with this status.
    pub redirect_https: Option<(u16, http::StatusCode)>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Connections open at once on this listener.
    pub max_connections: Option<u32>,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: Option<u32>,
    /// Client networks admitted; empty: all.
    pub allow: Vec<Cidr>,
    /// Client networks refused.
    pub deny: Vec<Cidr>,
}

/// Public TLS termination, validated (files are read by `tls::public`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// Certificates and their host names.
    pub certs: Vec<ServerCertSettings>,
    /// Index in `certs` served without SNI or for unknown names.
    pub default: usize,
    /// TLS 1.2 accepted too (else 1.3 only).
    pub tls12: bool,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
}

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertSettings {
    /// Host names, lower case; `*.suffix` for wildcards.
    pub hosts: Vec<String>,
    /// Leaf + chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

pub(super) fn validate_edge(
    errors: &mut Errors<'_>,
    edge: &raw::Edge,
    upstreams: &[&str],
    base: &Path,
) -> EdgeSettings {
    let listeners = edge
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            validate_listener(errors, &format!("edge.listeners[{i}]"), listener, base)
        })
        .collect();
    let trusted_proxies = cidrs(errors, "edge.trusted_proxies", &edge.trusted_proxies);
    let mut strip_response_headers = Vec::new();
    for (i, name) in edge.strip_response_headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => strip_response_headers.push(name),
            Err(_) => errors.push(
                &format!("edge.strip_response_headers[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    if edge.max_connections == Some(0) {
        errors.push("edge.max_connections", "must be at least 1");
    }
    let auth = crate::policy::auth::validate(errors, &edge.auth, base);
    let rate_limits =
        crate::policy::rate_limit::validate(errors, &edge.rate_limits, edge.redis.as_deref());
    let known = super::edge_routes::Known {
        upstreams,
        auth: &auth.names,
        rate_limits: &rate_limits.names,
        base,
    };
    EdgeSettings {
        listeners,
        max_connections: edge.max_connections,
        trusted_proxies,
        strip_response_headers,
        routes: Arc::new(validate_routes(errors, &edge.routes, &known)),
        auth,
        rate_limits,
        cache: super::cache::validate_store(errors, "edge.cache", &edge.cache),
    }
}

/// A list of networks, each error at its index.
pub(super) fn cidrs(errors: &mut Errors<'_>, at: &str, list: &[String]) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match Cidr::parse(text) {
            Some(cidr) => out.push(cidr),
            None => errors.push(
                &format!("{at}[{i}]"),
                format!("invalid network {text:?} (expected address/prefix, e.g. 10.0.0.0/8, or an address)"),
            ),
        }
    }
    out
}

fn validate_listener(
    errors: &mut Errors<'_>,
    at: &str,
    listener: &raw::EdgeListener,
    base: &Path,
) -> EdgeListenerSettings {
    let listen = errors.addr(&format!("{at}.listen"), &listener.listen);
    let tls = listener
        .tls
        .as_ref()
        .map(|tls| validate_server_tls(errors, &format!("{at}.tls"), tls, base));
    let status = http::StatusCode::from_u16(listener.redirect_status)
        .ok()
        .filter(|s| matches!(s.as_u16(), 301 | 302 | 307 | 308));
    if status.is_none() {
        errors.push(
            &format!("{at}.redirect_status"),
            format!(
                "must be 301, 302, 307 or 308, got {}",
                listener.redirect_status
            ),
        );
    }
    let redirect_https = listener.redirect_https.map(|port| {
        if port == 0 {
            errors.push(&format!("{at}.redirect_https"), "port 0 is not a port");
        }
        if tls.is_some() {
            errors.push(
                &format!("{at}.redirect_https"),
                "a TLS listener cannot also redirect to HTTPS",
            );
        }
        (port, status.unwrap_or(http::StatusCode::MOVED_PERMANENTLY))
    });
    for (field, value) in [
        ("max_connections", listener.max_connections),
        ("max_connections_per_ip", listener.max_connections_per_ip),
    ] {
        if value == Some(0) {
            errors.push(&format!("{at}.{field}"), "must be at least 1");
        }
    }
    EdgeListenerSettings {
        listen,
        path: at.to_string(),
        tls,
        redirect_https,
        proxy_protocol: listener.proxy_protocol,
        max_connections: listener.max_connections,
        max_connections_per_ip: listener.max_connections_per_ip,
        allow: cidrs(errors, &format!("{at}.allow"), &listener.allow),
        deny: cidrs(errors, &format!("{at}.deny"), &listener.deny),
    }
}

fn validate_server_tls(
    errors: &mut Errors<'_>,
    at: &str,
    tls: &raw::ServerTls,
    base: &Path,
) -> ServerTlsSettings {
    if tls.certs.is_empty() {
        errors.push(
            &format!("{at}.certs"),
            "at least one certificate is required",
        );
    }
    let mut certs = Vec::new();
    for (i, cert) in tls.certs.iter().enumerate() {
        let hosts: Vec<String> = cert.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        for (j, host) in hosts.iter().enumerate() {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if !super::valid_hostname(name) {
                errors.push(
                    &format!("{at}.certs[{i}].hosts[{j}]"),
                    format!("invalid host name {host:?} (exact, or *. and a suffix)"),
                );
            }
        }
        if hosts.is_empty() {
            errors.push(
                &format!("{at}.certs[{i}].hosts"),
                "at least one host is required",
            );
        }
        certs.push(ServerCertSettings {
            hosts,
            cert: base.join(&cert.cert),
            key: base.join(&cert.key),
        });
    }
    let default = match &tls.default {
        None => 0,
        Some(host) => {
            let host = host.to_ascii_lowercase();
            certs
                .iter()
                .position(|c| c.hosts.contains(&host))
                .unwrap_or_else(|| {
                    errors.push(
                        &format!("{at}.default"),
                        format!("{host:?} is not a host of any of the certificates"),
                    );
                    0
                })
        }
    };
    let tls12 = match tls.min_version.as_str() {
        "1.2" => true,
        "1.3" => false,
        other => {
            errors.push(
                &format!("{at}.min_version"),
                format!("must be \"1.2\" or \"1.3\", got {other:?}"),
            );
            true
        }
    };
    let mut alpn = Vec::new();
    for (i, proto) in tls.alpn.iter().enumerate() {
        match proto.as_str() {
            "h2" | "http/1.1" => alpn.push(proto.as_bytes().to_vec()),
            other => errors.push(
                &format!("{at}.alpn[{i}]"),
                format!("unknown ALPN protocol {other:?} (h2, http/1.1)"),
            ),
        }
    }
    ServerTlsSettings {
        certs,
        default,
        tls12,
        alpn,
    }
}
