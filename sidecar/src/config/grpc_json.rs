//! `grpc_json` (inbound or an edge route) validated: descriptors loaded and
//! rules mapped at load time, so a bad `.proto` is a config error naming
//! `...grpc_json.protos[i]` with the compiler's message.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use mesh_api::config as raw;

use super::Errors;
use crate::translate::grpc_json::json::Print;
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
        let pool = if let Some(set) = &raw.descriptor_set {
            match descriptors::read_set(&base.join(set)) {
                Ok(pool) => pool,
                Err(err) => {
                    errors.push(&format!("{at}.descriptor_set"), err);
                    return None;
                }
            }
        } else {
            let includes: Vec<_> = raw.include.iter().map(|i| base.join(i)).collect();
            match descriptors::compile(&raw.protos, &includes) {
                Ok(pool) => pool,
                Err(failures) => {
                    for (i, err) in failures {
                        errors.push(&format!("{at}.protos[{i}]"), err);
                    }
                    return None;
                }
            }
        };
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
