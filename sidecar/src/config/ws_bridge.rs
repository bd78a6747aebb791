//! `edge.routes[].websocket_bridge` validated and compiled: every backend
//! upstream known, paths valid, the route selection expression parsed,
//! limits turned into sizes and durations, connections API credentials
//! checked.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::Method;
use mesh_api::config as raw;
use mesh_api::units::parse_size;

use super::Errors;
use crate::translate::ws_bridge::{ApiAuth, BackendCall, Limits, MessageRoute, WsBridgeSettings};

/// A backend call's time when the config gives none.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::WebsocketBridge,
    upstreams: &[&str],
) -> Arc<WsBridgeSettings> {
    let selection = selection(
        errors,
        &format!("{at}.route_selection"),
        &raw.route_selection,
    );
    let lifecycle = |errors: &mut Errors<'_>, field: &str, call: &Option<raw::BridgeCall>| {
        call.as_ref().map(|call| {
            let at = format!("{at}.{field}");
            let parts = (&call.to, &call.path, &call.method, &call.timeout);
            backend_call(errors, &at, parts, upstreams)
        })
    };
    let connect = lifecycle(errors, "connect", &raw.connect);
    let disconnect = lifecycle(errors, "disconnect", &raw.disconnect);
    let mut routes = std::collections::HashMap::new();
    let mut default = None;
    for (key, route) in &raw.routes {
        let at = format!("{at}.routes.{key}");
        let parts = (&route.to, &route.path, &route.method, &route.timeout);
        let compiled = MessageRoute {
            key: key.as_str().into(),
            call: backend_call(errors, &at, parts, upstreams),
            reply: route.reply,
            binary: route.binary,
        };
        if key == "$default" {
            default = Some(compiled);
        } else if key.starts_with('$') {
            errors.push(&at, "the only reserved route key is $default");
        } else {
            routes.insert(key.clone(), compiled);
        }
    }
    Arc::new(WsBridgeSettings {
        selection,
        connect,
        disconnect,
        routes,
        default,
        limits: limits(errors, &format!("{at}.limits"), &raw.limits),
        api: api_auth(
            errors,
            &format!("{at}.connections_api"),
            &raw.connections_api,
        ),
    })
}

/// `$request.body.a.b` → `["a", "b"]`.
fn selection(errors: &mut Errors<'_>, at: &str, text: &str) -> Vec<String> {
    let fields: Vec<String> = text
        .strip_prefix("$request.body.")
        .map(|rest| rest.split('.').map(str::to_string).collect())
        .unwrap_or_default();
    if fields.is_empty() || fields.iter().any(String::is_empty) {
        errors.push(
            at,
            format!("expected $request.body.<field>[.<field>...], got {text:?}"),
        );
    }
    fields
}

/// One backend call: upstream, path, method, timeout.
fn backend_call(
    errors: &mut Errors<'_>,
    at: &str,
    (to, path, method, timeout): (&String, &String, &Option<String>, &Option<String>),
    upstreams: &[&str],
) -> BackendCall {
    if !upstreams.contains(&to.as_str()) {
        errors.push(&format!("{at}.to"), format!("unknown upstream {to:?}"));
    }
    let path = match PathAndQuery::try_from(path.as_str()) {
        Ok(parsed) if path.starts_with('/') => parsed,
        _ => {
            errors.push(&format!("{at}.path"), format!("not a path: {path:?}"));
            PathAndQuery::from_static("/")
        }
    };
    let method = match method {
        None => Method::POST,
        Some(text) => {
            Method::from_bytes(text.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                errors.push(&format!("{at}.method"), format!("not a method: {text:?}"));
                Method::POST
            })
        }
    };
    let timeout = match timeout {
        None => DEFAULT_CALL_TIMEOUT,
        Some(text) => positive(errors, &format!("{at}.timeout"), text),
    };
    BackendCall {
        upstream: to.as_str().into(),
        path,
        method,
        timeout,
    }
}

/// A duration over zero.
fn positive(errors: &mut Errors<'_>, at: &str, text: &str) -> Duration {
    let duration = errors.duration(at, text);
    if duration.is_zero() && mesh_api::units::parse_duration(text).is_ok() {
        errors.push(at, "must be more than 0");
    }
    duration
}

/// A size over zero.
fn size(errors: &mut Errors<'_>, at: &str, text: &str) -> usize {
    match parse_size(text) {
        Ok(size) if size > 0 => usize::try_from(size).unwrap_or(usize::MAX),
        Ok(_) => {
            errors.push(at, "must be more than 0");
            0
        }
        Err(err) => {
            errors.push(at, err);
            0
        }
    }
}

fn limits(errors: &mut Errors<'_>, at: &str, raw: &raw::BridgeLimits) -> Limits {
    let rate =
        raw.rate
            .as_ref()
            .and_then(|text| match crate::policy::rate_limit::parse_rate(text) {
                Ok(rate) => Some(rate),
                Err(err) => {
                    errors.push(&format!("{at}.rate"), err);
                    None
                }
            });
    if raw.send_queue == 0 {
        errors.push(&format!("{at}.send_queue"), "must be more than 0");
    }
    let limits = Limits {
        frame: size(errors, &format!("{at}.frame"), &raw.frame),
        message: size(errors, &format!("{at}.message"), &raw.message),
        idle: positive(errors, &format!("{at}.idle"), &raw.idle),
        ping: positive(errors, &format!("{at}.ping"), &raw.ping),
        max_duration: positive(errors, &format!("{at}.max_duration"), &raw.max_duration),
        rate,
        send_queue: raw.send_queue.max(1),
    };
    if limits.frame > limits.message {
        errors.push(&format!("{at}.frame"), "must not exceed limits.message");
    }
    limits
}

fn api_auth(errors: &mut Errors<'_>, at: &str, raw: &Option<raw::ConnectionsApi>) -> ApiAuth {
    let Some(raw) = raw else {
        return ApiAuth::default();
    };
    let mut hashes = Vec::new();
    for token in &raw.tokens {
        hashes.push(crate::translate::ws_bridge::sha256(token.as_bytes()));
    }
    for (i, hex) in raw.token_sha256.iter().enumerate() {
        match decode_hex(hex) {
            Some(hash) => hashes.push(hash),
            None => errors.push(
                &format!("{at}.token_sha256[{i}]"),
                "expected 64 hex digits (a SHA-256)",
            ),
        }
    }
    for (i, id) in raw.identities.iter().enumerate() {
        if !id.starts_with("spiffe://") {
            errors.push(
                &format!("{at}.identities[{i}]"),
                format!("expected a spiffe:// ID, got {id:?}"),
            );
        }
    }
    ApiAuth {
        enabled: true,
        token_hashes: hashes,
        identities: raw.identities.iter().map(|id| id.as_str().into()).collect(),
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}
