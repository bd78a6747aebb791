//! `edge.cache` and `edge.routes[].cache` validated: sizes, durations,
//! key parts, methods and statuses compiled once here.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_api::config as raw;
use mesh_api::units::parse_size;

use super::Errors;
use crate::edge::cache::{CacheSettings, CacheStoreSettings, KeyPart};

pub(super) fn validate_store(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::CacheStore,
) -> CacheStoreSettings {
    let mut size = |field: &str, text: &str| match parse_size(text) {
        Ok(0) => {
            errors.push(&format!("{at}.{field}"), "must be more than 0");
            0
        }
        Ok(bytes) => bytes,
        Err(err) => {
            errors.push(&format!("{at}.{field}"), err);
            0
        }
    };
    let max_bytes = size("max_bytes", &raw.max_bytes);
    let max_object = size("max_object", &raw.max_object);
    if max_object > max_bytes && max_bytes > 0 {
        errors.push(
            &format!("{at}.max_object"),
            format!("must not be more than max_bytes ({})", raw.max_bytes),
        );
    }
    CacheStoreSettings {
        max_bytes,
        max_object,
    }
}

pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::Cache,
) -> Option<Arc<CacheSettings>> {
    let ttl = errors.duration(&format!("{at}.ttl"), &raw.ttl);
    let mut window = |field: &str, text: &Option<String>| match text {
        Some(text) => errors.duration(&format!("{at}.{field}"), text),
        None => Duration::ZERO,
    };
    let stale_while_revalidate = window("stale_while_revalidate", &raw.stale_while_revalidate);
    let stale_if_error = window("stale_if_error", &raw.stale_if_error);
    let key = key_parts(errors, at, &raw.key);
    let methods = methods(errors, at, &raw.methods);
    let statuses = statuses(errors, at, &raw.statuses);
    Some(Arc::new(CacheSettings {
        ttl,
        keyed_by_caller: key.iter().any(KeyPart::names_caller),
        key,
        stale_while_revalidate,
        stale_if_error,
        methods,
        statuses,
    }))
}

fn key_parts(errors: &mut Errors<'_>, at: &str, parts: &[String]) -> Vec<KeyPart> {
    let mut compiled: Vec<KeyPart> = Vec::new();
    for (i, text) in parts.iter().enumerate() {
        match KeyPart::parse(text) {
            Ok(part) if compiled.contains(&part) => errors.push(
                &format!("{at}.key[{i}]"),
                format!("{text:?} is listed twice"),
            ),
            Ok(part) => compiled.push(part),
            Err(why) => errors.push(&format!("{at}.key[{i}]"), why),
        }
    }
    compiled
}

fn methods(errors: &mut Errors<'_>, at: &str, names: &[String]) -> Vec<Method> {
    if names.is_empty() {
        errors.push(&format!("{at}.methods"), "must name at least one method");
    }
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| match name.to_ascii_uppercase().as_str() {
            "GET" => Some(Method::GET),
            "HEAD" => Some(Method::HEAD),
            _ => {
                errors.push(
                    &format!("{at}.methods[{i}]"),
                    format!("{name:?} cannot be cached (expected GET or HEAD)"),
                );
                None
            }
        })
        .collect()
}

fn statuses(errors: &mut Errors<'_>, at: &str, codes: &[u16]) -> Vec<StatusCode> {
    codes
        .iter()
        .enumerate()
        .filter_map(|(i, code)| match StatusCode::from_u16(*code) {
            Ok(status)
                if (200..600).contains(code)
                    && status != StatusCode::PARTIAL_CONTENT
                    && status != StatusCode::NOT_MODIFIED =>
            {
                Some(status)
            }
            _ => {
                errors.push(
                    &format!("{at}.statuses[{i}]"),
                    format!("{code} cannot be stored (expected a final status from 200 to 599, not 206 or 304)"),
                );
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    v1: { discovery: { endpoints: [127.0.0.1:7001] } }\n";

    fn errors_of(store: &str, cache: &str) -> String {
        crate::config::load_lines(&format!(
            "{EDGE}  cache: {store}\n  routes:\n    - {{ match: {{ path_prefix: / }}, to: v1, cache: {cache} }}\n"
        ))
        .err()
        .unwrap_or_default()
        .join("\n")
    }

    #[test]
    fn short_and_long_forms_load() {
        assert_eq!(errors_of("{}", "{}"), "");
        assert_eq!(
            errors_of(
                "{}",
                "{ ttl: 30s, key: [path, query, \"header:accept-language\"] }"
            ),
            ""
        );
        assert_eq!(
            errors_of(
                "{ max_bytes: 64MiB, max_object: 1MiB }",
                "{ ttl: 1m, key: [method, host, path, query, \"cookie:x\", consumer, \"claim:sub\"], stale_while_revalidate: 10s, stale_if_error: 1m, methods: [GET, HEAD], statuses: [200, 404] }"
            ),
            ""
        );
    }

    #[test]
    fn every_mistake_is_named() {
        let errors = errors_of(
            "{ max_bytes: 1KiB, max_object: lots }",
            "{ ttl: soon, key: [path, body, path], methods: [POST], statuses: [206, 99, 304], stale_if_error: x }",
        );
        for expected in [
            "edge.cache.max_object: invalid size",
            "edge.routes[0].cache.ttl: invalid duration",
            "edge.routes[0].cache.stale_if_error: invalid duration",
            "edge.routes[0].cache.key[1]: unknown key part \"body\"",
            "edge.routes[0].cache.key[2]: \"path\" is listed twice",
            "edge.routes[0].cache.methods[0]: \"POST\" cannot be cached",
            "edge.routes[0].cache.statuses[0]: 206 cannot be stored",
            "edge.routes[0].cache.statuses[1]: 99 cannot be stored",
            "edge.routes[0].cache.statuses[2]: 304 cannot be stored",
        ] {
            assert!(
                errors.contains(expected),
                "{expected} missing from:\n{errors}"
            );
        }
        assert!(errors_of("{ max_bytes: 1KiB, max_object: 2KiB }", "{}")
            .contains("edge.cache.max_object: must not be more than max_bytes"));
        assert!(errors_of("{ unknown: 1 }", "{}").contains("unknown"));
    }

    #[test]
    fn credentials_need_a_caller_in_the_key() {
        let settings = |key: &str| {
            let loaded = crate::config::load_str(&format!(
                "{EDGE}  routes:\n    - {{ match: {{ path_prefix: / }}, to: v1, cache: {{ key: {key} }} }}\n"
            ))
            .unwrap();
            loaded.edge.unwrap().routes[0].cache.clone().unwrap()
        };
        assert!(!settings("[path, query]").keyed_by_caller);
        assert!(settings("[path, consumer]").keyed_by_caller);
        assert!(settings("[path, \"header:authorization\"]").keyed_by_caller);
    }
}
