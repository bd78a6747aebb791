//! `edge.routes[].transform` validated: the XML conventions, the SOAP
//! operation (its headers built once here), the reshaping paths split once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::StatusCode;
use mesh_api::config as raw;
use mesh_api::config::{RequestConversion, ResponseConversion};

use super::Errors;
use crate::edge::transform::reshape::{FieldPath, Reshape};
use crate::edge::transform::soap::{SoapSettings, SoapVersion};
use crate::edge::transform::xml::{is_xml_name, XmlSettings};
use crate::edge::transform::{TransformSettings, DEFAULT_MAX_BODY};

/// A route's `transform`, compiled; `None` (with the errors pushed) when
/// any part of it is wrong.
pub(super) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::Transform,
) -> Option<Arc<TransformSettings>> {
    let before = errors.list.len();
    let xml = raw
        .xml
        .as_ref()
        .map(|mapping| xml_settings(errors, &format!("{at}.xml"), mapping))
        .unwrap_or_default();
    let soap = raw
        .soap
        .as_ref()
        .and_then(|soap| soap_settings(errors, &format!("{at}.soap"), soap));
    if raw.soap.is_some() {
        if raw.request != RequestConversion::None {
            errors.push(
                &format!("{at}.request"),
                "does not apply with soap (the request becomes the SOAP envelope)",
            );
        }
        if raw.response != ResponseConversion::None {
            errors.push(
                &format!("{at}.response"),
                "does not apply with soap (the SOAP answer becomes JSON)",
            );
        }
    }
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
    let json = raw.json.clone().unwrap_or_default();
    let request_reshape = json
        .request
        .as_ref()
        .map(|r| reshape(errors, &format!("{at}.json.request"), r));
    let response_reshape = json
        .response
        .as_ref()
        .map(|r| reshape(errors, &format!("{at}.json.response"), r));
    let settings = TransformSettings {
        json_to_xml: raw.request == RequestConversion::JsonToXml,
        xml_to_json: raw.response == ResponseConversion::XmlToJson,
        soap,
        xml,
        max_body,
        request_reshape,
        response_reshape,
    };
    let idle = !settings.json_to_xml
        && !settings.xml_to_json
        && raw.soap.is_none()
        && settings.request_reshape.is_none()
        && settings.response_reshape.is_none();
    if idle {
        errors.push(
            at,
            "nothing to transform: set request, response, soap or json",
        );
    }
    (errors.list.len() == before).then(|| Arc::new(settings))
}

/// `transform.xml`.
fn xml_settings(errors: &mut Errors<'_>, at: &str, raw: &raw::XmlMapping) -> XmlSettings {
    if let Some(root) = &raw.root {
        if !is_xml_name(root) {
            errors.push(
                &format!("{at}.root"),
                format!("{root:?} is not an XML name"),
            );
        }
    }
    if raw.attributes.is_empty() {
        errors.push(&format!("{at}.attributes"), "must not be empty");
    }
    if raw.text.is_empty() || raw.text.starts_with(&raw.attributes) || is_xml_name(&raw.text) {
        errors.push(
            &format!("{at}.text"),
            format!(
                "{:?} must be non-empty, not start with the attribute prefix and not be an XML name (it would clash with an element)",
                raw.text
            ),
        );
    }
    for (i, name) in raw.arrays.iter().enumerate() {
        if !is_xml_name(name) {
            errors.push(
                &format!("{at}.arrays[{i}]"),
                format!("{name:?} is not an XML name"),
            );
        }
    }
    XmlSettings {
        root: raw.root.clone(),
        attribute_prefix: raw.attributes.clone(),
        text_key: raw.text.clone(),
        arrays: raw.arrays.iter().cloned().collect::<HashSet<_>>(),
        namespaces: raw.namespaces,
    }
}

/// `transform.soap`.
fn soap_settings(errors: &mut Errors<'_>, at: &str, raw: &raw::Soap) -> Option<SoapSettings> {
    let version = match raw.version.as_str() {
        "1.1" => Some(SoapVersion::V11),
        "1.2" => Some(SoapVersion::V12),
        other => {
            errors.push(
                &format!("{at}.version"),
                format!("unknown SOAP version {other:?} (expected \"1.1\" or \"1.2\")"),
            );
            None
        }
    };
    if !is_xml_name(&raw.operation) || raw.operation.contains(':') {
        errors.push(
            &format!("{at}.operation"),
            format!("{:?} is not an XML name without prefix", raw.operation),
        );
    }
    if raw.namespace.as_deref().is_some_and(str::is_empty) {
        errors.push(&format!("{at}.namespace"), "must not be empty");
    }
    if raw.action.as_deref().is_some_and(|a| a.contains('"')) {
        errors.push(&format!("{at}.action"), "must not contain '\"'");
    }
    let mut faults = HashMap::new();
    for (code, status) in &raw.faults {
        match StatusCode::from_u16(*status) {
            Ok(status) if (200..600).contains(&status.as_u16()) && !code.is_empty() => {
                faults.insert(code.clone(), status);
            }
            _ => errors.push(
                &format!("{at}.faults.{code}"),
                format!("{status} is not an HTTP status for a fault code"),
            ),
        }
    }
    let settings = SoapSettings::new(
        version?,
        raw.action.as_deref(),
        raw.operation.clone(),
        raw.namespace.clone(),
        faults,
    );
    if settings.is_none() {
        errors.push(
            &format!("{at}.action"),
            "cannot be sent in an HTTP header (control characters)",
        );
    }
    settings
}

/// `transform.json.request` / `.response`.
fn reshape(errors: &mut Errors<'_>, at: &str, raw: &raw::Reshape) -> Reshape {
    let path = |errors: &mut Errors<'_>, field: &str, text: &str| {
        let parsed = FieldPath::parse(text);
        if parsed.is_none() {
            errors.push(
                &format!("{at}.{field}"),
                format!("{text:?} is not a field path (names joined by '.')"),
            );
        }
        parsed
    };
    let mut renames = Vec::new();
    for (from, to) in &raw.rename.0 {
        let Some(from_path) = path(errors, "rename", from) else {
            continue;
        };
        if to.is_empty() || to.contains('.') {
            errors.push(
                &format!("{at}.rename.{from}"),
                format!(
                    "{to:?} must be a field name (no '.'; the field stays where it is: use move)"
                ),
            );
        } else if from.rsplit('.').next() == Some(to.as_str()) {
            errors.push(
                &format!("{at}.rename.{from}"),
                "renames a field to its own name",
            );
        } else {
            renames.push((from_path, to.clone()));
        }
    }
    let mut moves = Vec::new();
    for (from, to) in &raw.moves.0 {
        let (Some(from_path), Some(to_path)) =
            (path(errors, "move", from), path(errors, "move", to))
        else {
            continue;
        };
        if to_path.starts_with(&from_path) {
            errors.push(
                &format!("{at}.move.{from}"),
                format!("cannot move {from:?} into itself ({to:?})"),
            );
        } else {
            moves.push((from_path, to_path));
        }
    }
    let removes = raw
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, text)| path(errors, &format!("remove[{i}]"), text))
        .collect();
    Reshape {
        renames,
        moves,
        removes,
    }
}

#[cfg(test)]
mod tests {
    fn errors_of(transform: &str) -> Vec<String> {
        let yaml = format!(
            "service: edge\nmode: edge\nedge:\n  listeners: [{{ listen: 127.0.0.1:0 }}]\n  upstreams:\n    legacy: {{ discovery: {{ endpoints: [127.0.0.1:7001] }} }}\n  routes:\n    - match: {{ path_prefix: / }}\n      to: legacy\n      transform: {transform}\n"
        );
        crate::config::load_lines(&yaml).err().unwrap_or_default()
    }

    #[test]
    fn accepts_the_documented_shapes() {
        for ok in [
            "{ request: json_to_xml, response: xml_to_json, xml: { root: order, arrays: [item] }, max_body: 64KiB }",
            "{ soap: { version: 1.2, action: \"urn:a\", operation: GetQuote, namespace: \"urn:s\", faults: { Client.Auth: 401 } } }",
            "{ json: { request: { rename: { a.b: c }, move: { x.y: z.w }, remove: [d] } } }",
        ] {
            assert_eq!(errors_of(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn moves_keep_the_written_order() {
        let yaml = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    legacy: { discovery: { endpoints: [127.0.0.1:7001] } }\n  routes:\n    - to: legacy\n      transform: { json: { response: { move: { z: a, b: c, a: y } } } }\n";
        let settings = crate::config::load_str(yaml).unwrap();
        let route = &settings.edge.unwrap().routes[0];
        let transform = route.transform.as_ref().unwrap();
        let moves = &transform.response_reshape.as_ref().unwrap().moves;
        let from: Vec<String> = moves.iter().map(|(from, _)| format!("{from:?}")).collect();
        assert_eq!(
            from,
            [
                "FieldPath([\"z\"])",
                "FieldPath([\"b\"])",
                "FieldPath([\"a\"])"
            ]
        );
        assert_eq!(transform.max_body, crate::edge::transform::DEFAULT_MAX_BODY);
    }

    #[test]
    fn names_every_bad_field() {
        let errors = errors_of(
            "{ request: json_to_xml, soap: { version: \"2.0\", operation: \"a:b\", faults: { X: 999 } }, max_body: 0, xml: { root: \"1x\", text: item }, json: { response: { rename: { a: b.c, \"x..y\": z }, move: { a: a.b } } } }",
        );
        let expected = [
            "edge.routes[0].transform.request:",
            "edge.routes[0].transform.soap.version:",
            "edge.routes[0].transform.soap.operation:",
            "edge.routes[0].transform.soap.faults.X:",
            "edge.routes[0].transform.max_body:",
            "edge.routes[0].transform.xml.root:",
            "edge.routes[0].transform.xml.text:",
            "edge.routes[0].transform.json.response.rename.a:",
            "edge.routes[0].transform.json.response.rename:",
            "edge.routes[0].transform.json.response.move.a:",
        ];
        for prefix in expected {
            assert!(
                errors.iter().any(|e| e.starts_with(prefix)),
                "{prefix} missing in {errors:#?}"
            );
        }
        assert!(errors_of("{ }")[0].contains("nothing to transform"));
    }
}
