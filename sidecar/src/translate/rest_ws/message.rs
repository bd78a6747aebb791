//! What a request becomes on the WebSocket (an envelope, or its JSON body
//! with the correlation id added) and what a reply becomes as the HTTP
//! response (an envelope with a `status` unwrapped, else the whole JSON).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use super::RestWsError;
use crate::edge::matcher::query_pairs;
use crate::http::hygiene::HygieneError;
use crate::http::{full, Body, BodyError};
use crate::BoxError;

/// Envelope keys besides the correlation field; it may not take one.
pub const ENVELOPE_KEYS: [&str; 6] = ["method", "path", "query", "headers", "body", "status"];

/// Headers that describe the client's hop, never put in an envelope or
/// taken from a reply.
const HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The request body, at most `max` bytes (over: 413).
pub(super) async fn read_body(body: Body, max: u64) -> Result<Bytes, BoxError> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(HygieneError::BodyTooLarge.into()),
        Err(err) => Err(match err.downcast::<BodyError>() {
            Ok(body_error) => body_error.0,
            Err(err) => err,
        }),
    }
}

/// The envelope: `{"<correlation>": id, "method", "path", "query",
/// "headers", "body"}`; the body is JSON when it parses, else text.
pub(super) fn envelope(
    head: &Parts,
    body: &[u8],
    correlation: &str,
    id: &str,
) -> Result<String, RestWsError> {
    let mut envelope = Map::new();
    envelope.insert(correlation.to_string(), Value::String(id.to_string()));
    envelope.insert("method".into(), head.method.as_str().into());
    envelope.insert("path".into(), head.uri.path().into());
    envelope.insert("query".into(), query_object(head.uri.query()));
    envelope.insert("headers".into(), headers_object(&head.headers));
    envelope.insert("body".into(), body_value(body)?);
    Ok(Value::Object(envelope).to_string())
}

/// The client's JSON object body with the correlation id set (an empty
/// body is an empty object).
pub(super) fn body_message(
    body: &[u8],
    correlation: &str,
    id: &str,
) -> Result<String, RestWsError> {
    let mut object = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(object)) => object,
            _ => {
                return Err(RestWsError::BadRequestBody(
                    "the body must be a JSON object",
                ))
            }
        }
    };
    object.insert(correlation.to_string(), Value::String(id.to_string()));
    Ok(Value::Object(object).to_string())
}

/// Query parameters as an object: one value a string, repeated ones an array.
fn query_object(query: Option<&str>) -> Value {
    let mut object = Map::new();
    for (name, value) in query_pairs(query) {
        let value = Value::String(value.into_owned());
        match object.get_mut(name.as_ref()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                object.insert(name.into_owned(), value);
            }
        }
    }
    Value::Object(object)
}

/// End-to-end headers as an object, repeated ones joined by `, `; values
/// that are not text are left out.
fn headers_object(headers: &HeaderMap) -> Value {
    let mut object = Map::new();
    for name in headers.keys() {
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            object.insert(name.as_str().to_string(), values.join(", ").into());
        }
    }
    Value::Object(object)
}

/// The body as JSON when it parses, else as text; empty: `null`.
fn body_value(body: &[u8]) -> Result<Value, RestWsError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    match std::str::from_utf8(body) {
        Ok(text) => Ok(Value::String(text.to_string())),
        Err(_) => Err(RestWsError::BadRequestBody(
            "the body is neither JSON nor UTF-8 text",
        )),
    }
}

/// The HTTP response for a reply: in envelope mode, a reply with a numeric
/// `status` gives status, `headers` and `body`; otherwise the whole reply
/// is a 200 JSON body.
pub(super) fn response(reply: Value, envelope: bool) -> Result<Response<Body>, RestWsError> {
    let status = envelope
        .then(|| reply.get("status").and_then(Value::as_u64))
        .flatten();
    match (status, reply) {
        (Some(status), Value::Object(mut fields)) => {
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or(RestWsError::BadReply("status must be between 200 and 599"))?;
            let headers = reply_headers(fields.get("headers"))?;
            let body = fields.remove("body").unwrap_or(Value::Null);
            Ok(build(status, headers, body))
        }
        (_, reply) => Ok(build(StatusCode::OK, HeaderMap::new(), reply)),
    }
}

/// An envelope reply's `headers`: an object of strings (or arrays of strings).
fn reply_headers(headers: Option<&Value>) -> Result<HeaderMap, RestWsError> {
    let mut map = HeaderMap::new();
    let Some(headers) = headers else {
        return Ok(map);
    };
    let bad = RestWsError::BadReply("headers must be an object of strings");
    let object = headers.as_object().ok_or(bad)?;
    for (name, value) in object {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| RestWsError::BadReply("a header name is not valid"))?;
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let values = match value {
            Value::Array(values) => values.iter().collect(),
            value => vec![value],
        };
        for value in values {
            let value = value
                .as_str()
                .and_then(|v| HeaderValue::from_str(v).ok())
                .ok_or(RestWsError::BadReply("a header value is not valid text"))?;
            map.append(name.clone(), value);
        }
    }
    Ok(map)
}

/// The response: a string body with its own `content-type` as text, any
/// other value as JSON; `null` as no body.
fn build(status: StatusCode, mut headers: HeaderMap, body: Value) -> Response<Body> {
    let bytes = match body {
        Value::Null => Bytes::new(),
        Value::String(text) if headers.contains_key(CONTENT_TYPE) => Bytes::from(text),
        value => {
            headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Bytes::from(value.to_string())
        }
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use serde_json::json;

    fn head(uri: &str) -> Parts {
        let (head, ()) = Request::post(uri)
            .header("content-type", "application/json")
            .header("x-tag", "a")
            .header("x-tag", "b")
            .header("connection", "keep-alive")
            .body(())
            .unwrap()
            .into_parts();
        head
    }

    #[test]
    fn envelope_carries_the_request() {
        let text = envelope(&head("/orders/7?x=1&y=2&x=3"), br#"{"n":1}"#, "cid", "42").unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({
                "cid": "42", "method": "POST", "path": "/orders/7",
                "query": {"x": ["1", "3"], "y": "2"},
                "headers": {"content-type": "application/json", "x-tag": "a, b"},
                "body": {"n": 1}
            })
        );
    }

    #[test]
    fn envelope_body_is_text_when_not_json_and_refused_when_not_utf8() {
        let text = envelope(&head("/"), b"hello", "id", "1").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["body"],
            "hello"
        );
        assert!(envelope(&head("/"), &[0xff, 0xfe], "id", "1").is_err());
    }

    #[test]
    fn body_message_adds_the_id_to_an_object_only() {
        let text = body_message(br#"{"a":1,"id":"mine"}"#, "id", "9").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"a": 1, "id": "9"})
        );
        assert!(body_message(b"[1]", "id", "9").is_err());
        assert!(body_message(b"nope", "id", "9").is_err());
    }

    #[test]
    fn envelope_reply_with_status_is_unwrapped() {
        let reply =
            json!({"id": "1", "status": 201, "headers": {"x-a": "b"}, "body": {"ok": true}});
        let response = response(reply, true).unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-a"], "b");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn other_replies_are_the_whole_json() {
        let reply = json!({"id": "1", "status": 201});
        let response = response(reply, false).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let reply = json!({"id": "1", "status": "done"});
        assert_eq!(
            super::response(reply, true).unwrap().status(),
            StatusCode::OK
        );
    }

    #[test]
    fn bad_envelope_replies_are_refused() {
        assert!(response(json!({"status": 42}), true).is_err());
        assert!(response(json!({"status": 200, "headers": {"x": 1}}), true).is_err());
        assert!(response(json!({"status": 200, "headers": "x"}), true).is_err());
    }
}
