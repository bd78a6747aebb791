//! SOAP ↔ REST: the client's JSON becomes the operation element inside a
//! SOAP 1.1 or 1.2 envelope; the answer's Body content comes back as JSON,
//! and a Fault (1.1 `faultcode` / `faultstring` / `detail`, 1.2 `Code` /
//! `Reason` / `Detail`) becomes an HTTP status with a JSON error
//! `{"error": {"code", "message", "detail"}}`.

use std::collections::HashMap;

use http::header::HeaderValue;
use http::StatusCode;

use super::document::Json;
use super::xml::{self, XmlError, XmlSettings};

/// The SOAP version of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    /// SOAP 1.1: `text/xml` and a `SOAPAction` header.
    V11,
    /// SOAP 1.2: `application/soap+xml` with an `action` parameter.
    V12,
}

impl SoapVersion {
    /// The envelope's namespace URI.
    fn namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => "http://schemas.xmlsoap.org/soap/envelope/",
            SoapVersion::V12 => "http://www.w3.org/2003/05/soap-envelope",
        }
    }
}

/// A SOAP operation called as REST, compiled.
#[derive(Debug, Clone)]
pub struct SoapSettings {
    /// 1.1 or 1.2.
    pub version: SoapVersion,
    /// The operation element's name (no prefix).
    pub operation: String,
    /// The operation element as written: `ns:GetQuote` with a namespace.
    element: String,
    /// The operation element's namespace URI.
    pub namespace: Option<String>,
    /// Status per fault code, over the defaults.
    pub faults: HashMap<String, StatusCode>,
    /// The request's `Content-Type` (1.2: with the action).
    pub content_type: HeaderValue,
    /// The `SOAPAction` header (1.1 only).
    pub soap_action: Option<HeaderValue>,
}

impl SoapSettings {
    /// Compiles the headers an operation's requests carry; `None` when the
    /// action cannot be written in a header.
    pub fn new(
        version: SoapVersion,
        action: Option<&str>,
        operation: String,
        namespace: Option<String>,
        faults: HashMap<String, StatusCode>,
    ) -> Option<SoapSettings> {
        let (content_type, soap_action) = match version {
            SoapVersion::V11 => (
                HeaderValue::from_static("text/xml; charset=utf-8"),
                Some(HeaderValue::try_from(format!("\"{}\"", action.unwrap_or(""))).ok()?),
            ),
            SoapVersion::V12 => {
                let content_type = match action {
                    Some(action) => HeaderValue::try_from(format!(
                        "application/soap+xml; charset=utf-8; action=\"{action}\""
                    ))
                    .ok()?,
                    None => HeaderValue::from_static("application/soap+xml; charset=utf-8"),
                };
                (content_type, None)
            }
        };
        let element = match &namespace {
            Some(_) => format!("ns:{operation}"),
            None => operation.clone(),
        };
        Some(SoapSettings {
            version,
            element,
            operation,
            namespace,
            faults,
            content_type,
            soap_action,
        })
    }
}

/// The envelope carrying `content` (the client's JSON; `None`: an empty
/// operation element).
pub fn envelope(
    content: Option<&Json>,
    soap: &SoapSettings,
    mapping: &XmlSettings,
) -> Result<Vec<u8>, XmlError> {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"");
    out.push_str(soap.version.namespace());
    out.push_str("\"><soap:Body>");
    let content = content.unwrap_or(&Json::Null);
    let declaration = soap.namespace.as_deref().map(|ns| ("xmlns:ns", ns));
    xml::write_element(
        &mut out,
        &soap.element,
        declaration.as_slice(),
        content,
        mapping,
    )?;
    out.push_str("</soap:Body></soap:Envelope>");
    Ok(out.into_bytes())
}

/// What a SOAP answer says.
#[derive(Debug, PartialEq)]
pub enum SoapAnswer {
    /// The Body's content: the one element's value, or an object of them.
    Body(Json),
    /// A Fault: the status it maps to and the JSON error.
    Fault(StatusCode, Json),
}

/// Reads a SOAP answer (either version).
pub fn answer(
    body: &[u8],
    soap: &SoapSettings,
    mapping: &XmlSettings,
) -> Result<SoapAnswer, XmlError> {
    let doc = xml::to_json(body, mapping)?;
    let not_envelope = || XmlError("the answer is not a SOAP envelope with a Body".into());
    let envelope = match &doc {
        Json::Object(members) => members
            .first()
            .filter(|(name, _)| local(name) == "Envelope")
            .map(|(_, value)| value),
        _ => None,
    }
    .ok_or_else(not_envelope)?;
    let body = member(envelope, "Body", mapping).ok_or_else(not_envelope)?;
    let elements = elements(body, mapping);
    if let Some((_, fault)) = elements.iter().find(|(name, _)| local(name) == "Fault") {
        let (status, error) = fault_error(fault, soap, mapping);
        return Ok(SoapAnswer::Fault(status, error));
    }
    Ok(SoapAnswer::Body(match elements.as_slice() {
        [] => Json::Null,
        [(_, only)] => only.clone(),
        many => Json::Object(many.to_vec()),
    }))
}

/// The JSON error and status of a Fault.
fn fault_error(fault: &Json, soap: &SoapSettings, mapping: &XmlSettings) -> (StatusCode, Json) {
    let code_text = member(fault, "faultcode", mapping)
        .or_else(|| member(fault, "Code", mapping).and_then(|c| member(c, "Value", mapping)))
        .map(|code| text(code, mapping))
        .unwrap_or_default();
    let code = local(code_text.trim()).to_owned();
    let message = member(fault, "faultstring", mapping)
        .or_else(|| member(fault, "Reason", mapping).and_then(|r| member(r, "Text", mapping)))
        .map(|message| text(message, mapping))
        .unwrap_or_default();
    let detail = member(fault, "detail", mapping)
        .or_else(|| member(fault, "Detail", mapping))
        .cloned()
        .unwrap_or(Json::Null);
    let status = fault_status(&code, &soap.faults);
    let error = Json::Object(vec![(
        "error".into(),
        Json::Object(vec![
            ("code".into(), Json::String(code)),
            ("message".into(), Json::String(message.trim().to_owned())),
            ("detail".into(), detail),
        ]),
    )]);
    (status, error)
}

/// The status for a fault code: the configured one for the code or its
/// class (`Client` of `Client.Auth`), else 400 for the caller's faults
/// (`Client`, `Sender`) and 502 for the rest.
fn fault_status(code: &str, faults: &HashMap<String, StatusCode>) -> StatusCode {
    let class = code.split('.').next().unwrap_or(code);
    faults
        .get(code)
        .or_else(|| faults.get(class))
        .copied()
        .unwrap_or(match class {
            "Client" | "Sender" => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        })
}

/// A name without its namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The child element members of an element's value (attributes and text left out).
fn elements(value: &Json, mapping: &XmlSettings) -> Vec<(String, Json)> {
    match value {
        Json::Object(members) => members
            .iter()
            .filter(|(name, _)| is_element(name, mapping))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

fn is_element(name: &str, mapping: &XmlSettings) -> bool {
    !name.starts_with(&mapping.attribute_prefix) && *name != mapping.text_key
}

/// The child element `name` (any prefix) of an element's value.
fn member<'a>(value: &'a Json, name: &str, mapping: &XmlSettings) -> Option<&'a Json> {
    match value {
        Json::Object(members) => members
            .iter()
            .find(|(key, _)| is_element(key, mapping) && local(key) == name)
            .map(|(_, v)| v),
        _ => None,
    }
}

/// An element's text: a string, the text member, the first of several.
fn text(value: &Json, mapping: &XmlSettings) -> String {
    match value {
        Json::String(text) => text.clone(),
        Json::Object(_) => value
            .get(&mapping.text_key)
            .map(|t| text(t, mapping))
            .unwrap_or_default(),
        Json::Array(items) => items.first().map(|t| text(t, mapping)).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soap(version: SoapVersion) -> SoapSettings {
        SoapSettings::new(
            version,
            Some("http://example.test/GetQuote"),
            "GetQuote".into(),
            Some("http://example.test/stock".into()),
            HashMap::from([("Server.Busy".to_string(), StatusCode::SERVICE_UNAVAILABLE)]),
        )
        .unwrap()
    }

    fn json(doc: &Json) -> serde_json::Value {
        serde_json::from_slice(&doc.to_vec()).unwrap()
    }

    #[test]
    fn builds_envelopes_and_headers() {
        let v11 = soap(SoapVersion::V11);
        let content = Json::parse(br##"{"symbol":"A&B","@lang":"en"}"##).unwrap();
        let envelope = envelope(Some(&content), &v11, &XmlSettings::default()).unwrap();
        assert_eq!(
            String::from_utf8(envelope).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><ns:GetQuote xmlns:ns=\"http://example.test/stock\" lang=\"en\"><symbol>A&amp;B</symbol></ns:GetQuote></soap:Body></soap:Envelope>"
        );
        assert_eq!(v11.content_type, "text/xml; charset=utf-8");
        assert_eq!(v11.soap_action.unwrap(), "\"http://example.test/GetQuote\"");
        let v12 = soap(SoapVersion::V12);
        assert_eq!(
            v12.content_type,
            "application/soap+xml; charset=utf-8; action=\"http://example.test/GetQuote\""
        );
        let empty = String::from_utf8(envelope_of_nothing(&v12)).unwrap();
        assert!(
            empty.contains("www.w3.org/2003/05/soap-envelope"),
            "{empty}"
        );
        assert!(
            empty.contains("<ns:GetQuote xmlns:ns=\"http://example.test/stock\"/>"),
            "{empty}"
        );
    }

    fn envelope_of_nothing(soap: &SoapSettings) -> Vec<u8> {
        envelope(None, soap, &XmlSettings::default()).unwrap()
    }

    #[test]
    fn unwraps_the_body() {
        let xml = br##"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><t>1</t></s:Header><s:Body><m:GetQuoteResponse xmlns:m="urn:x"><Price>34.5</Price></m:GetQuoteResponse></s:Body></s:Envelope>"##;
        let SoapAnswer::Body(doc) =
            answer(xml, &soap(SoapVersion::V11), &XmlSettings::default()).unwrap()
        else {
            panic!("not a body");
        };
        assert_eq!(json(&doc), serde_json::json!({"Price": "34.5"}));
        let err = answer(b"<html/>", &soap(SoapVersion::V11), &XmlSettings::default()).unwrap_err();
        assert!(err.0.contains("SOAP envelope"), "{err}");
    }

    #[test]
    fn maps_faults_of_both_versions() {
        let v11 = br##"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Unknown symbol</faultstring><detail><symbol>ZZZ</symbol></detail></soap:Fault></soap:Body></soap:Envelope>"##;
        let settings = soap(SoapVersion::V11);
        let SoapAnswer::Fault(status, error) =
            answer(v11, &settings, &XmlSettings::default()).unwrap()
        else {
            panic!("not a fault");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&error),
            serde_json::json!({"error": {"code": "Client", "message": "Unknown symbol", "detail": {"symbol": "ZZZ"}}})
        );
        let v12 = br##"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Receiver</env:Value></env:Code><env:Reason><env:Text xml:lang="en">Backend down</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"##;
        let SoapAnswer::Fault(status, error) =
            answer(v12, &settings, &XmlSettings::default()).unwrap()
        else {
            panic!("not a fault");
        };
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            json(&error),
            serde_json::json!({"error": {"code": "Receiver", "message": "Backend down", "detail": null}})
        );
        assert_eq!(
            fault_status("Server.Busy", &settings.faults),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            fault_status("Client.Auth", &settings.faults),
            StatusCode::BAD_REQUEST
        );
    }
}
