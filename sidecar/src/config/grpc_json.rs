//! `grpc_json` (inbound or an edge route) and an upstream's `grpc_bridge`
//! validated: descriptors loaded and rules mapped at load time, so a bad
//! `.proto` is a config error naming `...protos[i]` with the compiler's
//! message.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use mesh_api::config as raw;
use prost_reflect::DescriptorPool;

use super::Errors;
use crate::translate::grpc_json::json::Print;
use crate::translate::grpc_json::reverse::GrpcBridgeSettings;
use crate::translate::grpc_json::stream::StreamFormat;
use crate::translate::grpc_json::{descriptors, Api, GrpcJsonSettings, DEFAULT_MAX_BODY};

pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::GrpcJson,
    base: &Path,
) -> Option<Arc<GrpcJsonSettings>> {
    let sources = [
        !raw.protos.is_empty(),
        raw.descriptor_set.is_some(),
        raw.reflection,
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(
            at,
            "exactly one of protos, descriptor_set or reflection: true is needed",
        );
        return None;
    }
    if !raw.protos.is_empty() && raw.include.is_empty() {
        errors.push(
            &format!("{at}.include"),
            "protos need at least one include path",
        );
        return None;
    }
    let mut settings = if raw.reflection {
        GrpcJsonSettings::reflection(raw.services.clone())
    } else {
        let pool = load_pool(errors, at, raw, base)?;
        match Api::new(pool, &raw.services) {
            Ok(api) => GrpcJsonSettings::loaded(api),
            Err(failures) => {
                for err in failures {
                    errors.push(at, err);
                }
                return None;
            }
        }
    };
    settings.print = Print {
        emit_defaults: raw.print.emit_defaults,
        proto_names: raw.print.proto_names,
    };
    settings.stream = raw.stream.map(|s| match s {
        raw::GrpcJsonStream::Ndjson => StreamFormat::Ndjson,
        raw::GrpcJsonStream::Sse => StreamFormat::Sse,
    });
    for (i, name) in raw.headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => settings.headers.push(name),
            Err(_) => errors.push(
                &format!("{at}.headers[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    if let Some(text) = &raw.max_body {
        match mesh_api::units::parse_size(text) {
            Ok(0) => settings.max_body = usize::MAX,
            Ok(size) => settings.max_body = usize::try_from(size).unwrap_or(usize::MAX),
            Err(err) => errors.push(&format!("{at}.max_body"), err),
        }
    } else {
        settings.max_body = DEFAULT_MAX_BODY;
    }
    Some(Arc::new(settings))
}

/// The descriptors of `protos` + `include` or `descriptor_set` (shared by
/// `grpc_json` and `grpc_bridge`); failures pushed under `at`.
fn load_pool(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::GrpcJson,
    base: &Path,
) -> Option<DescriptorPool> {
    if let Some(set) = &raw.descriptor_set {
        return match descriptors::read_set(&base.join(set)) {
            Ok(pool) => Some(pool),
            Err(err) => {
                errors.push(&format!("{at}.descriptor_set"), err);
                None
            }
        };
    }
    let includes: Vec<_> = raw.include.iter().map(|i| base.join(i)).collect();
    match descriptors::compile(&raw.protos, &includes) {
        Ok(pool) => Some(pool),
        Err(failures) => {
            for (i, err) in failures {
                errors.push(&format!("{at}.protos[{i}]"), err);
            }
            None
        }
    }
}

/// An upstream's `grpc_bridge` validated: descriptors loaded (as for
/// `grpc_json`, reflection excepted: a REST upstream has none) and every
/// method given its REST binding.
pub(super) fn validate_bridge(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::GrpcJson,
    base: &Path,
) -> Option<Arc<GrpcBridgeSettings>> {
    if raw.reflection {
        errors.push(
            &format!("{at}.reflection"),
            "a REST upstream has no gRPC reflection; use protos or descriptor_set",
        );
        return None;
    }
    if raw.stream.is_some() {
        errors.push(
            &format!("{at}.stream"),
            "server streams are always read as NDJSON from a REST upstream",
        );
    }
    if raw.protos.is_empty() == raw.descriptor_set.is_none() {
        errors.push(at, "exactly one of protos or descriptor_set is needed");
        return None;
    }
    if !raw.protos.is_empty() && raw.include.is_empty() {
        errors.push(
            &format!("{at}.include"),
            "protos need at least one include path",
        );
        return None;
    }
    let pool = load_pool(errors, at, raw, base)?;
    let mut headers = Vec::new();
    for (i, name) in raw.headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => headers.push(name),
            Err(_) => errors.push(
                &format!("{at}.headers[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    let max_body = match raw.max_body.as_deref().map(mesh_api::units::parse_size) {
        None => DEFAULT_MAX_BODY,
        Some(Ok(0)) => usize::MAX,
        Some(Ok(size)) => usize::try_from(size).unwrap_or(usize::MAX),
        Some(Err(err)) => {
            errors.push(&format!("{at}.max_body"), err);
            DEFAULT_MAX_BODY
        }
    };
    let print = Print {
        emit_defaults: raw.print.emit_defaults,
        proto_names: raw.print.proto_names,
    };
    match GrpcBridgeSettings::new(raw, pool, print, headers, max_body) {
        Ok(settings) => Some(Arc::new(settings)),
        Err(failures) => {
            for err in failures {
                errors.push(at, err);
            }
            None
        }
    }
}
