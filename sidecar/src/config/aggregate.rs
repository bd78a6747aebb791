//! `edge.routes[].aggregate` validated and compiled: every part's upstream
//! known, its path template parsed, the parts it reads from resolved and
//! ordered (dependencies first); unknown parts and cycles are refused.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::PathAndQuery;
use http::Method;
use mesh_api::config as raw;

use super::Errors;
use crate::edge::aggregate::{
    AggregateSettings, PartSettings, Piece, Source, TargetTemplate, RESERVED_SOURCES,
};

pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::Aggregate,
    upstreams: &[&str],
) -> Arc<AggregateSettings> {
    if raw.parts.is_empty() {
        errors.push(&format!("{at}.parts"), "needs at least one part");
    }
    let timeout = positive_duration(errors, &format!("{at}.timeout"), &raw.timeout);
    let max_part_body = match mesh_api::units::parse_size(&raw.max_part_body) {
        Ok(size) if size > 0 => usize::try_from(size).unwrap_or(usize::MAX),
        Ok(_) => {
            errors.push(&format!("{at}.max_part_body"), "must be more than 0");
            0
        }
        Err(err) => {
            errors.push(&format!("{at}.max_part_body"), err);
            0
        }
    };
    let names: Vec<&str> = raw.parts.keys().map(String::as_str).collect();
    let parts: Vec<PartSettings> = raw
        .parts
        .iter()
        .map(|(name, part)| {
            let at = format!("{at}.parts.{name}");
            validate_part(errors, &at, name, part, timeout, upstreams, &names)
        })
        .collect();
    let parts = order(errors, &format!("{at}.parts"), parts);
    Arc::new(AggregateSettings {
        parts,
        on_part_failure: raw.on_part_failure,
        max_part_body,
    })
}

/// A duration over zero.
fn positive_duration(errors: &mut Errors<'_>, at: &str, text: &str) -> Duration {
    let duration = errors.duration(at, text);
    if duration.is_zero() && mesh_api::units::parse_duration(text).is_ok() {
        errors.push(at, "must be more than 0");
    }
    duration
}

/// One part; its dependencies still as indices in name order.
fn validate_part(
    errors: &mut Errors<'_>,
    at: &str,
    name: &str,
    raw: &raw::AggregatePart,
    default_timeout: Duration,
    upstreams: &[&str],
    names: &[&str],
) -> PartSettings {
    let valid_name = !name.is_empty()
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        errors.push(
            at,
            format!("part name {name:?}: letters, digits, `-` and `_`, not starting with `_`"),
        );
    } else if RESERVED_SOURCES.contains(&name) {
        errors.push(
            at,
            format!("part name {name:?} is reserved (a placeholder source)"),
        );
    }
    if !upstreams.contains(&raw.to.as_str()) {
        let mut defined = upstreams.to_vec();
        defined.sort_unstable();
        let defined = if defined.is_empty() {
            "none".to_string()
        } else {
            defined.join(", ")
        };
        errors.push(
            &format!("{at}.to"),
            format!("unknown upstream {:?} (defined: {defined})", raw.to),
        );
    }
    let method = match &raw.method {
        None => Method::GET,
        Some(text) => match Method::from_bytes(text.as_bytes()) {
            Ok(method) if text.bytes().all(|b| b.is_ascii_uppercase()) => method,
            _ => {
                errors.push(
                    &format!("{at}.method"),
                    format!("invalid method {text:?} (upper case, e.g. GET)"),
                );
                Method::GET
            }
        },
    };
    let mut headers = Vec::new();
    for (i, header) in raw.headers.iter().enumerate() {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(header) => headers.push(header),
            Err(_) => errors.push(
                &format!("{at}.headers[{i}]"),
                format!("invalid header name {header:?}"),
            ),
        }
    }
    let timeout = match &raw.timeout {
        Some(text) => positive_duration(errors, &format!("{at}.timeout"), text),
        None => default_timeout,
    };
    let (target, depends_on) = validate_target(errors, &format!("{at}.path"), name, raw, names);
    PartSettings {
        name: Arc::from(name),
        upstream: Arc::from(raw.to.as_str()),
        method,
        target,
        headers,
        timeout,
        optional: raw.optional,
        depends_on,
    }
}

/// The part's path template, parsed and checked; the parts it reads from
/// (indices in name order).
fn validate_target(
    errors: &mut Errors<'_>,
    at: &str,
    name: &str,
    raw: &raw::AggregatePart,
    names: &[&str],
) -> (TargetTemplate, Vec<usize>) {
    let mut target = match TargetTemplate::parse(&raw.path) {
        Ok(target) => target,
        Err(err) => {
            errors.push(at, err);
            return (TargetTemplate::default(), Vec::new());
        }
    };
    // Every value stands as `x`: the literal text must make a request target.
    let sample = target.render(|_| Some("x".into())).unwrap_or_default();
    if !sample.starts_with('/') || PathAndQuery::try_from(sample.as_str()).is_err() {
        errors.push(
            at,
            format!(
                "{:?} is not a path (starting with /, optionally ?query)",
                raw.path
            ),
        );
    }
    let mut depends_on = Vec::new();
    for source in target.sources_mut() {
        let Source::Part {
            name: used, index, ..
        } = source
        else {
            continue;
        };
        if used == name {
            errors.push(at, format!("part {name:?} uses its own result"));
        } else if let Some(found) = names.iter().position(|n| n == used) {
            *index = found;
            if !depends_on.contains(&found) {
                depends_on.push(found);
            }
        } else {
            errors.push(
                at,
                format!(
                    "unknown part {used:?} (parts: {}; sources: {})",
                    names.join(", "),
                    RESERVED_SOURCES.join(", ")
                ),
            );
        }
    }
    (target, depends_on)
}

/// The parts, every one after those it reads from (a topological order,
/// name order among equals); a cycle is an error naming its parts.
fn order(errors: &mut Errors<'_>, at: &str, parts: Vec<PartSettings>) -> Vec<PartSettings> {
    let count = parts.len();
    let mut placed: Vec<Option<usize>> = vec![None; count];
    let mut sequence: Vec<usize> = Vec::with_capacity(count);
    while sequence.len() < count {
        let next = (0..count).find(|&i| {
            placed[i].is_none() && parts[i].depends_on.iter().all(|d| placed[*d].is_some())
        });
        let Some(next) = next else {
            let cycle: Vec<&str> = (0..count)
                .filter(|&i| placed[i].is_none())
                .map(|i| &*parts[i].name)
                .collect();
            errors.push(
                at,
                format!(
                    "parts depend on each other in a cycle: {}",
                    cycle.join(", ")
                ),
            );
            return Vec::new();
        };
        placed[next] = Some(sequence.len());
        sequence.push(next);
    }
    // Renumber dependencies and part references to the new positions.
    let position = |old: usize| placed.get(old).copied().flatten().unwrap_or(old);
    let mut slots: Vec<Option<PartSettings>> = parts.into_iter().map(Some).collect();
    sequence
        .into_iter()
        .filter_map(|old| slots[old].take())
        .map(|mut part| {
            part.depends_on = part.depends_on.iter().map(|d| position(*d)).collect();
            for piece in &mut part.target.pieces {
                if let Piece::Value(Source::Part { index, .. }) = piece {
                    *index = position(*index);
                }
            }
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::edge::action::RouteAction;
    use crate::edge::aggregate::{AggregateSettings, Source};

    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    users: { discovery: { endpoints: [127.0.0.1:7001] } }\n    billing: { discovery: { endpoints: [127.0.0.1:7002] } }\n  routes:\n    - match: { path: /dash }\n      aggregate:\n";

    fn load(aggregate: &str) -> Result<std::sync::Arc<AggregateSettings>, String> {
        let settings = crate::config::load_lines(&format!("{EDGE}{aggregate}"))
            .map_err(|errs| errs.join("\n"))?;
        match &settings.edge.as_ref().unwrap().routes[0].action {
            RouteAction::Aggregate(aggregate) => Ok(aggregate.clone()),
            _ => panic!("not an aggregate"),
        }
    }

    #[test]
    fn dependencies_come_first_and_resolve_to_positions() {
        let settings = load(
            "        parts:\n          a_account: { to: billing, path: \"/accounts/{profile.account.id}?x={b_extra.y}\" }\n          b_extra: { to: billing, path: \"/extra/{profile.id}\", timeout: 50ms }\n          profile: { to: users, path: \"/users/{query.user}\" }\n        timeout: 200ms\n",
        )
        .unwrap();
        let names: Vec<&str> = settings.parts.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["profile", "b_extra", "a_account"]);
        assert_eq!(settings.parts[1].depends_on, [0]);
        let mut deps = settings.parts[2].depends_on.clone();
        deps.sort_unstable();
        assert_eq!(deps, [0, 1]);
        let indices: Vec<usize> = settings.parts[2]
            .target
            .sources()
            .filter_map(|s| match s {
                Source::Part { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(indices, [0, 1]);
        assert_eq!(settings.parts[1].timeout.as_millis(), 50);
        assert_eq!(settings.parts[0].timeout.as_millis(), 200);
        assert_eq!(settings.max_part_body, 1 << 20);
    }

    #[test]
    fn unknown_parts_upstreams_and_cycles_name_the_path() {
        let err = load("        parts:\n          a: { to: users, path: \"/a/{nope.id}\" }\n          b: { to: nowhere, path: \"/b\" }\n").unwrap_err();
        assert!(
            err.contains("edge.routes[0].aggregate.parts.a.path: unknown part \"nope\""),
            "{err}"
        );
        assert!(
            err.contains("edge.routes[0].aggregate.parts.b.to: unknown upstream \"nowhere\""),
            "{err}"
        );
        let err = load("        parts:\n          a: { to: users, path: \"/a/{b.id}\" }\n          b: { to: users, path: \"/b/{a.id}\" }\n          c: { to: users, path: \"/c\" }\n").unwrap_err();
        assert!(
            err.contains(
                "edge.routes[0].aggregate.parts: parts depend on each other in a cycle: a, b"
            ),
            "{err}"
        );
        let err = load(
            "        parts:\n          query: { to: users, path: \"a/{x\" }\n        timeout: 0s\n",
        )
        .unwrap_err();
        assert!(
            err.contains("parts.query: part name \"query\" is reserved"),
            "{err}"
        );
        assert!(
            err.contains("parts.query.path: a `{` without its `}`"),
            "{err}"
        );
        assert!(
            err.contains("aggregate.timeout: must be more than 0"),
            "{err}"
        );
    }
}
