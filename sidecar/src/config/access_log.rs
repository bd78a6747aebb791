//! `log.access` / `log.access_fields` validated.

use std::path::{Path, PathBuf};

use mesh_api::config as raw;

use super::Errors;

/// Every field an access log line can carry, in the order they are written.
pub const ACCESS_FIELDS: &[&str] = &[
    "time",
    "kind",
    "listener",
    "request_id",
    "trace_id",
    "client",
    "peer_identity",
    "consumer",
    "method",
    "scheme",
    "authority",
    "path",
    "protocol",
    "status",
    "grpc_status",
    "error",
    "route",
    "upstream",
    "endpoint",
    "attempts",
    "bytes_received",
    "bytes_sent",
    "duration_ms",
    "upstream_ms",
    "user_agent",
];

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Not written.
    Off,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where lines go.
    pub target: AccessLogTarget,
    /// Fields written (a subset of [`ACCESS_FIELDS`], in that order).
    pub fields: Vec<&'static str>,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            target: AccessLogTarget::Off,
            fields: ACCESS_FIELDS.to_vec(),
        }
    }
}

pub(super) fn validate_access_log(
    errors: &mut Errors<'_>,
    log: &raw::Log,
    base: &Path,
) -> AccessLogSettings {
    let target = match log.access.as_str() {
        "off" => AccessLogTarget::Off,
        "stdout" => AccessLogTarget::Stdout,
        "stderr" => AccessLogTarget::Stderr,
        "" => {
            errors.push(
                "log.access",
                "empty (use off, stdout, stderr or a file path)",
            );
            AccessLogTarget::Off
        }
        path => AccessLogTarget::File(base.join(path)),
    };
    let mut fields = Vec::new();
    for (i, name) in log.access_fields.iter().enumerate() {
        match ACCESS_FIELDS.iter().find(|f| **f == name) {
            Some(field) => fields.push(*field),
            None => errors.push(
                &format!("log.access_fields[{i}]"),
                format!(
                    "unknown field {name:?} (known: {})",
                    ACCESS_FIELDS.join(", ")
                ),
            ),
        }
    }
    let fields = if fields.is_empty() {
        ACCESS_FIELDS.to_vec()
    } else {
        ACCESS_FIELDS
            .iter()
            .filter(|f| fields.contains(f))
            .copied()
            .collect()
    };
    AccessLogSettings { target, fields }
}
