//! `edge.routes[].compress` validated: encodings without repeats, sizes,
//! content types compiled into [`MediaRange`]s, levels within each
//! encoding's range.

use std::sync::Arc;

use mesh_api::config as raw;
use mesh_api::units::parse_size;

use super::Errors;
use crate::edge::compress::{CompressSettings, Levels, MediaRange};

pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::Compress,
) -> Option<Arc<CompressSettings>> {
    let encodings_at = if raw.list_form {
        at.to_string()
    } else {
        format!("{at}.encodings")
    };
    if raw.encodings.is_empty() {
        errors.push(
            &encodings_at,
            "must name at least one encoding (br, zstd, gzip)",
        );
    }
    for (i, encoding) in raw.encodings.iter().enumerate() {
        if raw.encodings[..i].contains(encoding) {
            errors.push(
                &format!("{encodings_at}[{i}]"),
                format!("`{}` is listed twice", encoding.as_str()),
            );
        }
    }
    let mut size = |field: &str, text: &str| {
        parse_size(text).unwrap_or_else(|err| {
            errors.push(&format!("{at}.{field}"), err);
            0
        })
    };
    let min_size = size("min_size", &raw.min_size);
    let max_decoded = size("max_decoded", &raw.max_decoded);
    if max_decoded == 0 {
        errors.push(&format!("{at}.max_decoded"), "must be more than 0");
    }
    let content_types = raw
        .content_types
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match MediaRange::parse(text) {
            Ok(range) => Some(range),
            Err(why) => {
                errors.push(&format!("{at}.content_types[{i}]"), why);
                None
            }
        })
        .collect();
    let levels = levels(errors, &format!("{at}.level"), &raw.level);
    Some(Arc::new(CompressSettings {
        encodings: raw.encodings.clone(),
        min_size,
        content_types,
        levels,
        decompress_requests: raw.decompress_requests,
        max_decoded,
    }))
}

/// Each encoding's level, checked against its range.
fn levels(errors: &mut Errors<'_>, at: &str, raw: &raw::CompressLevel) -> Levels {
    let mut levels = Levels::default();
    let mut check = |name: &str, value: i64, range: std::ops::RangeInclusive<i64>| {
        if !range.contains(&value) {
            errors.push(
                &format!("{at}.{name}"),
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ),
            );
        }
    };
    if let Some(gzip) = raw.gzip {
        check("gzip", i64::from(gzip), 1..=9);
        levels.gzip = gzip;
    }
    if let Some(br) = raw.br {
        check("br", i64::from(br), 0..=11);
        levels.br = br;
    }
    if let Some(zstd) = raw.zstd {
        check("zstd", i64::from(zstd), 1..=19);
        levels.zstd = zstd;
    }
    levels
}

#[cfg(test)]
mod tests {
    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    v1: { discovery: { endpoints: [127.0.0.1:7001] } }\n  routes:\n";

    fn errors_of(compress: &str) -> String {
        crate::config::load_lines(&format!(
            "{EDGE}    - {{ match: {{ path_prefix: / }}, to: v1, compress: {compress} }}\n"
        ))
        .err()
        .unwrap_or_default()
        .join("\n")
    }

    #[test]
    fn both_forms_load() {
        assert_eq!(errors_of("[br, zstd, gzip]"), "");
        assert_eq!(
            errors_of("{ encodings: [gzip], min_size: 2KiB, content_types: [text/*, application/*+json, \"*/*\"], level: { gzip: 9, br: 11, zstd: 19 }, decompress_requests: true, max_decoded: 1MiB }"),
            ""
        );
        let settings = crate::config::load_str(&format!(
            "{EDGE}    - {{ match: {{ path_prefix: / }}, to: v1, compress: {{ min_size: 2KiB, level: {{ br: 5 }} }} }}\n"
        ))
        .unwrap();
        let route = &settings.edge.as_ref().unwrap().routes[0];
        let compress = route.compress.as_ref().unwrap();
        assert_eq!(compress.min_size, 2048);
        assert_eq!(compress.levels.br, 5);
        assert_eq!(compress.levels.gzip, 6);
        assert_eq!(compress.encodings.len(), 3);
    }

    #[test]
    fn every_mistake_is_named_by_its_path() {
        let errors = errors_of("[gzip, lz4]");
        assert!(
            errors.contains("edge.routes[0].compress[1]: unknown variant `lz4`"),
            "{errors}"
        );
        let errors = errors_of("[gzip, gzip]");
        assert!(
            errors.contains("edge.routes[0].compress[1]: `gzip` is listed twice"),
            "{errors}"
        );
        assert!(errors_of("[]").contains("edge.routes[0].compress: must name at least one"));
        // Structural mistakes are reported together, before validation.
        let errors = errors_of("{ encodings: [br, deflate], compression: 1 }");
        for expected in [
            "edge.routes[0].compress.encodings[1]: unknown variant `deflate`",
            "edge.routes[0].compress.compression: unknown field `compression`",
        ] {
            assert!(errors.contains(expected), "{expected} not in\n{errors}");
        }
        let errors = errors_of(
            "{ min_size: big, content_types: [json, \"text/*\", \"*/json\"], level: { gzip: 0, zstd: 30 }, max_decoded: 0 }",
        );
        for expected in [
            "edge.routes[0].compress.min_size: invalid size",
            "edge.routes[0].compress.content_types[0]: ",
            "edge.routes[0].compress.content_types[2]: ",
            "edge.routes[0].compress.level.gzip: must be between 1 and 9, got 0",
            "edge.routes[0].compress.level.zstd: must be between 1 and 19, got 30",
            "edge.routes[0].compress.max_decoded: must be more than 0",
        ] {
            assert!(errors.contains(expected), "{expected} not in\n{errors}");
        }
        assert!(!errors.contains("content_types[1]"), "{errors}");
    }
}
