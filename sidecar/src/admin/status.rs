//! `GET /status` (who this proxy is, how long it has run, which config)
//! and `GET /routes` (how it routes: the edge routes, or a sidecar's
//! listeners and the hosts of its upstreams).
//! Reads: the running settings, the route table, the identity store.

use std::fmt::Write as _;

use std::net::SocketAddr;

use mesh_api::admin::{config_hash, ListenerInfo, RouteInfo, RoutesInfo, StatusInfo};
use mesh_api::config::{Mode, RouteMatch, ValueMatch};

use crate::app::App;
use crate::config::Settings;
use crate::edge::action::RouteAction;

/// `GET /status`.
pub fn status(app: &App, uptime: std::time::Duration) -> StatusInfo {
    let config = app.config_status();
    let settings = app.runtime().settings.load();
    let cert = app.certs();
    StatusInfo {
        mode: mode(&settings).to_string(),
        service: settings.service.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: uptime.as_secs(),
        config_hash: config_hash(&config.config),
        generation: config.generation,
        last_error: config.last_error,
        identity: cert.as_ref().map(|c| c.identity.clone()),
        cert_expires_in_seconds: cert.as_ref().map(|c| c.expires_in_seconds),
        ready: app.is_ready(),
    }
}

fn mode(settings: &Settings) -> &'static str {
    match settings.mode {
        Mode::Sidecar => "sidecar",
        Mode::Edge => "edge",
    }
}

/// `GET /routes`.
pub async fn routes(app: &App) -> RoutesInfo {
    let listeners = app.listeners().await;
    let settings = app.runtime().settings.load();
    let routes = match &settings.edge {
        Some(edge) => {
            let raw = settings.raw.edge.as_ref().map(|e| e.routes.as_slice());
            edge.routes
                .iter()
                .enumerate()
                .map(|(i, route)| {
                    let (action, upstreams) = action(&route.action);
                    RouteInfo {
                        name: route.name.to_string(),
                        matches: raw
                            .and_then(|r| r.get(i))
                            .map_or_else(|| "*".into(), |r| match_summary(&r.matches)),
                        action,
                        upstreams,
                    }
                })
                .collect()
        }
        None => sidecar_routes(&settings, &listeners),
    };
    RoutesInfo {
        mode: mode(&settings).to_string(),
        routes,
    }
}

/// Inbound to the app, each upstream's own port, then the forward proxy by
/// host; each with the address its listener is bound to.
fn sidecar_routes(settings: &Settings, listeners: &[ListenerInfo]) -> Vec<RouteInfo> {
    let bound = |kind: &str, upstream: Option<&str>, configured: SocketAddr| {
        listeners
            .iter()
            .find(|l| l.kind == kind && l.upstream.as_deref() == upstream)
            .map_or_else(|| configured.to_string(), |l| l.addr.clone())
    };
    let to = |name: &str| RouteInfo {
        action: format!("to {name}"),
        upstreams: vec![name.to_string()],
        ..RouteInfo::default()
    };
    let mut routes = Vec::new();
    if let Some(inbound) = &settings.inbound {
        routes.push(RouteInfo {
            name: "inbound".into(),
            matches: format!("* on {}", bound("inbound", None, inbound.listen)),
            ..to(&inbound.app.name)
        });
    }
    for upstream in &settings.outbound.upstreams {
        if let Some(listen) = upstream.listen {
            routes.push(RouteInfo {
                name: format!("outbound:{}", upstream.name),
                matches: format!("* on {}", bound("outbound", Some(&upstream.name), listen)),
                ..to(&upstream.name)
            });
        }
    }
    for (listener, addr) in [
        ("proxy", settings.outbound.proxy),
        ("transparent", settings.outbound.transparent),
    ] {
        let Some(addr) = addr.map(|addr| bound(listener, None, addr)) else {
            continue;
        };
        for upstream in settings
            .outbound
            .upstreams
            .iter()
            .filter(|u| !u.hosts.is_empty())
        {
            routes.push(RouteInfo {
                name: listener.into(),
                matches: format!("host={} on {addr}", upstream.hosts.join(",")),
                ..to(&upstream.name)
            });
        }
        if settings.outbound.passthrough || listener == "transparent" {
            routes.push(RouteInfo {
                name: listener.into(),
                matches: format!("* on {addr}"),
                action: "passthrough".into(),
                upstreams: Vec::new(),
            });
        }
    }
    routes
}

/// `to orders`, `split a:90 b:10`, `redirect 301 https://...`.
fn action(action: &RouteAction) -> (String, Vec<String>) {
    match action {
        RouteAction::Forward(split) if split.len() == 1 => (
            format!("to {}", split[0].upstream),
            vec![split[0].upstream.to_string()],
        ),
        RouteAction::Forward(split) => {
            let mut text = "split".to_string();
            for side in split {
                let _ = write!(text, " {}:{}", side.upstream, side.weight);
            }
            (text, split.iter().map(|s| s.upstream.to_string()).collect())
        }
        RouteAction::WebsocketBridge(bridge) => {
            let upstreams: Vec<String> = bridge.upstreams().map(str::to_string).collect();
            (
                format!("websocket_bridge {}", upstreams.join(" ")),
                upstreams,
            )
        }
        RouteAction::Aggregate(aggregate) => {
            let upstreams: Vec<String> = aggregate.upstreams().map(str::to_string).collect();
            (format!("aggregate {}", upstreams.join(" ")), upstreams)
        }
        RouteAction::Redirect(redirect) => {
            let mut text = format!("redirect {}", redirect.status.as_u16());
            if let Some(to) = redirect.to.as_ref().and_then(|v| v.to_str().ok()) {
                let _ = write!(text, " {to}");
            }
            if let Some(scheme) = redirect.scheme {
                let _ = write!(text, " scheme={scheme}");
            }
            if let Some(host) = &redirect.host {
                let _ = write!(text, " host={host}");
            }
            if let Some(port) = redirect.port {
                let _ = write!(text, " port={port}");
            }
            (text, Vec::new())
        }
    }
}

/// `host=api.example.test path_prefix=/api methods=GET,POST header:x-v=2`; `*` for none.
pub fn match_summary(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    if !m.host.is_empty() {
        parts.push(format!("host={}", m.host.0.join(",")));
    }
    for (name, value) in [
        ("path", &m.path),
        ("path_prefix", &m.path_prefix),
        ("path_regex", &m.path_regex),
        ("path_template", &m.path_template),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    }
    if !m.methods.is_empty() {
        parts.push(format!("methods={}", m.methods.join(",")));
    }
    for (kind, conditions) in [
        ("header", &m.headers),
        ("cookie", &m.cookies),
        ("query", &m.query),
    ] {
        for (name, value) in conditions {
            parts.push(format!("{kind}:{name}{}", value_summary(value)));
        }
    }
    if parts.is_empty() {
        "*".into()
    } else {
        parts.join(" ")
    }
}

fn value_summary(value: &ValueMatch) -> String {
    match value {
        ValueMatch::Exact(exact) => format!("={exact}"),
        ValueMatch::Spec(spec) => {
            if let Some(exact) = &spec.exact {
                format!("={exact}")
            } else if let Some(prefix) = &spec.prefix {
                format!("^={prefix}")
            } else if let Some(regex) = &spec.regex {
                format!("~={regex}")
            } else if spec.present == Some(false) {
                " absent".into()
            } else {
                " present".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_summaries_name_every_condition() {
        let m: RouteMatch = serde_json::from_value(serde_json::json!({
            "host": "api.example.test",
            "path_prefix": "/api",
            "methods": ["GET"],
            "headers": { "x-api-version": "2", "x-canary": { "present": true } },
        }))
        .unwrap();
        assert_eq!(
            match_summary(&m),
            "host=api.example.test path_prefix=/api methods=GET header:x-api-version=2 header:x-canary present"
        );
        assert_eq!(match_summary(&RouteMatch::default()), "*");
    }
}
