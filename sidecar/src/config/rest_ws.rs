//! `edge.routes[].rest_to_websocket` validated: durations, sizes and the
//! WebSocket path parsed once; the pool made empty.

use std::sync::Arc;
use std::time::Duration;

use mesh_api::config as raw;
use mesh_api::config::RestWsMessage;

use super::Errors;
use crate::translate::rest_ws::{
    PoolSettings, Pools, RestWsSettings, DEFAULT_MAX_BODY, ENVELOPE_KEYS,
};

/// A route's `rest_to_websocket`, compiled; `None` (with the errors
/// pushed) when any part of it is wrong.
pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::RestToWebsocket,
) -> Option<Arc<RestWsSettings>> {
    let before = errors.list.len();
    if let Some(path) = &raw.path {
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            errors.push(
                &format!("{at}.path"),
                format!("{path:?} is not a path (it must start with `/`)"),
            );
        }
    }
    let correlation = raw.correlation.trim();
    if correlation.is_empty() {
        errors.push(&format!("{at}.correlation"), "must not be empty");
    } else if raw.message == RestWsMessage::Envelope && ENVELOPE_KEYS.contains(&correlation) {
        errors.push(
            &format!("{at}.correlation"),
            format!("{correlation:?} is an envelope field; pick another name"),
        );
    }
    let timeout = positive(errors, &format!("{at}.timeout"), &raw.timeout);
    let pool = pool(errors, &format!("{at}.pool"), &raw.pool);
    let max_body = match raw.max_body.as_deref().map(mesh_api::units::parse_size) {
        None => DEFAULT_MAX_BODY,
        Some(Ok(0)) => {
            errors.push(&format!("{at}.max_body"), "must be more than 0");
            DEFAULT_MAX_BODY
        }
        Some(Ok(size)) => size,
        Some(Err(err)) => {
            errors.push(&format!("{at}.max_body"), err);
            DEFAULT_MAX_BODY
        }
    };
    if errors.list.len() > before {
        return None;
    }
    let correlation: Arc<str> = Arc::from(correlation);
    Some(Arc::new(RestWsSettings {
        path: raw.path.clone(),
        correlation: correlation.clone(),
        timeout,
        message: raw.message,
        max_body,
        pools: Pools::new(pool, correlation),
    }))
}

/// `pool:` compiled.
fn pool(errors: &mut Errors<'_>, at: &str, raw: &raw::RestWsPool) -> PoolSettings {
    if raw.size == 0 || raw.size > 1024 {
        errors.push(
            &format!("{at}.size"),
            format!("must be between 1 and 1024, got {}", raw.size),
        );
    }
    PoolSettings {
        size: usize::try_from(raw.size).unwrap_or(1),
        idle: positive(errors, &format!("{at}.idle"), &raw.idle),
        ping: positive(errors, &format!("{at}.ping"), &raw.ping),
    }
}

/// A duration that must be more than zero.
fn positive(errors: &mut Errors<'_>, at: &str, text: &str) -> Duration {
    let duration = errors.duration(at, text);
    if duration.is_zero() && errors.list.last().is_none_or(|e| e.path != at) {
        errors.push(at, "must be more than 0");
    }
    duration
}

#[cfg(test)]
mod tests {
    use crate::config::load_lines;

    fn check(route: &str) -> Result<(), Vec<String>> {
        let yaml = format!(
            "service: edge
mode: edge
edge:
  listeners: [{{ listen: 127.0.0.1:0 }}]
  routes:
    - name: ws
      match: {{ path_prefix: / }}
      to: ws
      rest_to_websocket: {route}
  upstreams:
    ws:
      discovery: {{ endpoints: [127.0.0.1:9] }}
"
        );
        load_lines(&yaml).map(|_| ())
    }

    #[test]
    fn defaults_are_valid() {
        check("{}").unwrap();
        check("{ path: /socket, correlation: cid, timeout: 2s, pool: { size: 2, idle: 5s }, message: body, max_body: 1KiB }").unwrap();
    }

    #[test]
    fn every_error_names_its_field() {
        let errors = check("{ path: socket, correlation: body, timeout: 0s, pool: { size: 0, idle: soon }, max_body: 0 }")
            .unwrap_err()
            .join("\n");
        for field in [
            "path",
            "correlation",
            "timeout",
            "pool.size",
            "pool.idle",
            "max_body",
        ] {
            assert!(
                errors.contains(&format!("rest_to_websocket.{field}")),
                "{field} missing in {errors}"
            );
        }
    }
}
