//! gRPC statuses as HTTP: the code mapped per the standard table
//! (`google.rpc.Code` ↔ HTTP), and a `google.rpc.Status`-shaped JSON body
//! `{"code", "message", "details"}` whose details come from
//! `grpc-status-details-bin`, each `Any` printed as JSON when its type is
//! in the descriptors, else as `{"@type", "value": base64}`.

use http::{HeaderMap, StatusCode};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Map, Value};

use super::json::{render, Print};

/// `google.rpc.Status` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// A gRPC status read from headers or trailers.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcStatus {
    /// The code (`0` is OK).
    pub code: i32,
    /// `grpc-message`, percent-decoded.
    pub message: String,
    /// The details as JSON.
    pub details: Vec<Value>,
}

impl GrpcStatus {
    /// The status in `headers` (trailers, or the headers of a trailers-only
    /// response); `None` when there is no `grpc-status`.
    pub fn from_headers(headers: &HeaderMap, pool: &DescriptorPool) -> Option<GrpcStatus> {
        let code = headers
            .get("grpc-status")?
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(2);
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .and_then(|text| super::rules::percent_decode(text, false))
            .unwrap_or_default();
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|v| base64_decode(v.as_bytes()))
            .and_then(|bytes| RpcStatus::decode(bytes.as_slice()).ok())
            .map(|status| status.details.iter().map(|any| detail(any, pool)).collect())
            .unwrap_or_default();
        Some(GrpcStatus {
            code,
            message,
            details,
        })
    }

    /// A status the proxy makes up (an upstream gone mid-stream).
    pub fn new(code: i32, message: impl Into<String>) -> GrpcStatus {
        GrpcStatus {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// `{"code", "message", "details"}`.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message, "details": self.details })
    }

    /// The HTTP status of the code.
    pub fn http_status(&self) -> StatusCode {
        http_status(self.code)
    }
}

/// The standard gRPC code → HTTP status table.
pub fn http_status(code: i32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One `Any` detail as JSON.
fn detail(any: &prost_types::Any, pool: &DescriptorPool) -> Value {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let rendered = pool.get_message_by_name(name).and_then(|desc| {
        let message = DynamicMessage::decode(desc, any.value.as_slice()).ok()?;
        render(&message, Print::default(), None).ok()
    });
    match rendered {
        Some(Value::Object(fields)) => {
            let mut object = Map::new();
            object.insert("@type".into(), Value::String(any.type_url.clone()));
            object.extend(fields);
            Value::Object(object)
        }
        Some(value) => json!({ "@type": any.type_url, "value": value }),
        None => json!({ "@type": any.type_url, "value": base64_encode(&any.value) }),
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64, standard or URL-safe, padded or not (gRPC `-bin` metadata).
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text.iter().filter(|c| **c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn codes_map_to_the_standard_http_statuses() {
        let table = [
            (0, 200),
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
            (99, 500),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "code {code}");
        }
    }

    #[test]
    fn status_is_read_with_message_and_unknown_details() {
        let status = RpcStatus {
            code: 5,
            message: "gone".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/x.Unknown".into(),
                value: vec![1, 2, 3],
            }],
        };
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert("grpc-message", HeaderValue::from_static("no%20such%20book"));
        let bin = base64_encode(&status.encode_to_vec());
        headers.insert(
            "grpc-status-details-bin",
            HeaderValue::from_str(bin.trim_end_matches('=')).unwrap(),
        );
        let read = GrpcStatus::from_headers(&headers, &DescriptorPool::new()).unwrap();
        assert_eq!(read.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(
            read.to_json(),
            json!({"code": 5, "message": "no such book", "details": [
                {"@type": "type.googleapis.com/x.Unknown", "value": "AQID"}
            ]})
        );
        assert!(GrpcStatus::from_headers(&HeaderMap::new(), &DescriptorPool::new()).is_none());
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[255, 0, 128]] {
            assert_eq!(base64_decode(base64_encode(data).as_bytes()).unwrap(), data);
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }
}
