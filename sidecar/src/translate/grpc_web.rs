//! gRPC-Web ↔ gRPC, so browsers can call gRPC services. In the edge stack
//! it sits below auth and rate limits (they see the browser's call as it
//! came, CORS preflights are answered above it) and above compression and
//! the route's dispatch; in the inbound stack, right after hygiene.
//!
//! Request: `application/grpc-web[+proto]` becomes `application/grpc[+proto]`;
//! `application/grpc-web-text[+proto]` also has its body base64-decoded on
//! the fly (padded chunks anywhere, split anywhere by the network). The
//! request gets `te: trailers`, loses `Accept-Encoding` (gRPC compresses
//! per message; an HTTP-compressed reply could not be reframed) and, for
//! `-text`, `Content-Length`. It is marked HTTP/2, so `forward` sends it
//! upstream as HTTP/2 gRPC even for a `protocol: auto` upstream and an
//! HTTP/1.1 browser; the caller's version is put back on the response.
//!
//! Response: the gRPC data frames stream through unchanged (base64-encoded
//! per chunk, with padding, for `-text`); the HTTP/2 trailers become a last
//! frame flagged `0x80` holding `name: value\r\n` lines. A trailers-only
//! answer keeps its status in the headers and also gets the trailer frame.
//! An upstream failing mid-stream ends with a trailer frame carrying
//! `UNAVAILABLE` (14); a stream that ends without a status, with `INTERNAL`
//! (13). Proxy errors from below this layer come back as trailers-only
//! gRPC-Web answers (through `errors::response`).
//!
//! Requests of any other content type pass untouched after one header
//! compare. Reads: `Content-Type`. Errors: [`GrpcWebError`] in the request
//! body (a `-text` body that is not base64), a bad request.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tower::layer::layer_fn;
use tower::Layer;

use crate::http::{Body, BodyError, HttpService};
use crate::telemetry::{watch_grpc_status, RequestInfo};
use crate::BoxError;

/// The content type every gRPC-Web request starts with.
const GRPC_WEB: &[u8] = b"application/grpc-web";

/// The flag of a gRPC-Web frame that holds trailers, not a message.
const TRAILER_FLAG: u8 = 0x80;

/// A gRPC-Web request body the proxy cannot translate.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum GrpcWebError {
    /// A `grpc-web-text` body holds something that is not base64.
    #[error("the grpc-web-text request body is not valid base64")]
    InvalidBase64,
    /// A `grpc-web-text` body ends in the middle of a base64 group.
    #[error("the grpc-web-text request body ends inside a base64 group")]
    TruncatedBase64,
}

/// What a gRPC-Web caller's content type says about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WebCall {
    /// `application/grpc-web-text`: bodies are base64 both ways.
    text: bool,
    /// The message codec after `+` (`proto`, `json`), if named.
    codec: Option<String>,
}

impl WebCall {
    /// The call a `Content-Type` names, or `None` when it is not gRPC-Web.
    fn parse(content_type: &[u8]) -> Option<WebCall> {
        let head = content_type.get(..GRPC_WEB.len())?;
        if !head.eq_ignore_ascii_case(GRPC_WEB) {
            return None;
        }
        let rest = &content_type[GRPC_WEB.len()..];
        let (text, rest) = match rest.get(..5) {
            Some(dash) if dash.eq_ignore_ascii_case(b"-text") => (true, &rest[5..]),
            _ => (false, rest),
        };
        // Parameters (`; charset=…`) say nothing gRPC cares about.
        let subtype = rest.split(|&b| b == b';').next().unwrap_or_default();
        let subtype = std::str::from_utf8(subtype).ok()?.trim();
        let codec = match subtype.strip_prefix('+') {
            None if subtype.is_empty() => None,
            Some(codec)
                if !codec.is_empty()
                    && codec
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
            {
                Some(codec.to_ascii_lowercase())
            }
            _ => return None,
        };
        Some(WebCall { text, codec })
    }

    /// The content type of the gRPC request sent upstream.
    fn grpc_content_type(&self) -> HeaderValue {
        match self.codec.as_deref() {
            None => HeaderValue::from_static("application/grpc"),
            Some("proto") => HeaderValue::from_static("application/grpc+proto"),
            Some(codec) => content_type(&format!("application/grpc+{codec}")),
        }
    }

    /// The content type of the gRPC-Web answer.
    fn web_content_type(&self) -> HeaderValue {
        match (self.text, self.codec.as_deref()) {
            (false, None) => HeaderValue::from_static("application/grpc-web"),
            (false, Some("proto")) => HeaderValue::from_static("application/grpc-web+proto"),
            (true, None) => HeaderValue::from_static("application/grpc-web-text"),
            (true, Some("proto")) => HeaderValue::from_static("application/grpc-web-text+proto"),
            (false, Some(codec)) => content_type(&format!("application/grpc-web+{codec}")),
            (true, Some(codec)) => content_type(&format!("application/grpc-web-text+{codec}")),
        }
    }
}

/// A content type built from a checked codec name (token characters only).
fn content_type(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("application/grpc"))
}

/// The gRPC-Web layer: requests of another content type pass untouched.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let call = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|value| WebCall::parse(value.as_bytes()));
            let Some(call) = call else {
                return inner.call_ref(req);
            };
            let inner = inner.clone();
            Box::pin(async move {
                let version = req.version();
                let info = req.extensions().get::<RequestInfo>().cloned();
                let (req, undecodable) = to_grpc(req, &call);
                let response = match inner.call_ref(req).await {
                    Ok(response) => response,
                    // The upstream call failed because the body could not be decoded.
                    Err(err) => match undecodable.as_ref().and_then(|seen| seen.get()) {
                        Some(cause) => crate::errors::response(&BoxError::from(*cause), true),
                        None => crate::errors::response(&err, true),
                    },
                };
                // Telemetry sees the status in the body only; it reports the one seen here.
                let (head, body) = response.into_parts();
                let body = watch_grpc_status(info.as_ref(), &head.headers, body);
                let response = Response::from_parts(head, body);
                Ok(to_grpc_web(response, &call, version))
            })
        })
    })
}

/// Where a `-text` request body records why it could not be decoded: the
/// failure reaches the upstream client, which reports only a reset.
type Undecodable = Arc<OnceLock<GrpcWebError>>;

/// The gRPC request for a gRPC-Web one, and for `-text` where its body
/// records a decoding failure.
fn to_grpc(mut req: Request<Body>, call: &WebCall) -> (Request<Body>, Option<Undecodable>) {
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, call.grpc_content_type());
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.remove(ACCEPT_ENCODING);
    // `forward` picks HTTP/2 for a request marked so, whatever the caller spoke.
    *req.version_mut() = Version::HTTP_2;
    if !call.text {
        return (req, None);
    }
    req.headers_mut().remove(CONTENT_LENGTH);
    let undecodable = Undecodable::default();
    let seen = undecodable.clone();
    let req = req.map(|body| {
        TextRequestBody {
            inner: body,
            decoder: Base64Decoder::default(),
            undecodable: seen,
        }
        .boxed_unsync()
    });
    (req, Some(undecodable))
}

/// The gRPC-Web response for a gRPC one; other responses (an upstream that
/// is not gRPC) pass with only the caller's HTTP version put back.
fn to_grpc_web(mut response: Response<Body>, call: &WebCall, version: Version) -> Response<Body> {
    *response.version_mut() = version;
    if !crate::http::is_grpc(response.headers()) {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, call.web_content_type());
    headers.remove(CONTENT_LENGTH);
    let trailers_only = headers
        .contains_key("grpc-status")
        .then(|| trailer_frame(&status_headers(headers)));
    let text = call.text;
    response.map(|body| {
        WebResponseBody {
            inner: body,
            text,
            trailers_only,
            finished: false,
        }
        .boxed_unsync()
    })
}

/// The status headers of a trailers-only answer, for its trailer frame.
fn status_headers(headers: &HeaderMap) -> HeaderMap {
    let mut status = HeaderMap::new();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        for value in headers.get_all(name) {
            status.append(name, value.clone());
        }
    }
    status
}

/// A gRPC-Web trailer frame: flag `0x80`, the length, then one
/// `name: value\r\n` line per trailer (names are lower case in a `HeaderMap`).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut payload = BytesMut::new();
    for (name, value) in trailers {
        payload.put_slice(name.as_str().as_bytes());
        payload.put_slice(b": ");
        payload.put_slice(value.as_bytes());
        payload.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(TRAILER_FLAG);
    // Trailers are bounded by the h2 header list limit, far below 4 GiB.
    frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    frame.put_slice(&payload);
    frame.freeze()
}

/// The trailers ending a stream the upstream closed without a status.
fn missing_status() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(13u16));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("upstream%20ended%20the%20stream%20without%20a%20status"),
    );
    trailers
}

/// A gRPC response body as gRPC-Web: data as is (or base64), trailers as
/// the last data frame, and always a status at the end.
struct WebResponseBody {
    inner: Body,
    text: bool,
    /// The trailer frame of a trailers-only answer, sent when the body ends.
    trailers_only: Option<Bytes>,
    finished: bool,
}

impl WebResponseBody {
    /// `bytes` as the caller's format wants them.
    fn data(&self, bytes: Bytes) -> Frame<Bytes> {
        Frame::data(if self.text { encode(&bytes) } else { bytes })
    }

    /// The last frame: `trailers` as a trailer frame.
    fn last(&mut self, frame: Bytes) -> Frame<Bytes> {
        self.finished = true;
        self.data(frame)
    }
}

impl HttpBody for WebResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let frame = match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.data(data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => self.last(trailer_frame(&trailers)),
                    // Neither data nor trailers: nothing gRPC-Web can carry.
                    Err(_) => return Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
                },
            },
            Some(Err(err)) => {
                tracing::debug!(error = %err, "upstream failed mid gRPC-Web response");
                self.last(trailer_frame(&crate::errors::grpc_reset_trailers()))
            }
            None => {
                let frame = self
                    .trailers_only
                    .take()
                    .unwrap_or_else(|| trailer_frame(&missing_status()));
                self.last(frame)
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

/// A `grpc-web-text` request body, decoded from base64 as it arrives.
struct TextRequestBody {
    inner: Body,
    decoder: Base64Decoder,
    undecodable: Undecodable,
}

impl HttpBody for TextRequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
            let decoded = match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(text) => self.decoder.push(&text),
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => match self.decoder.finish() {
                    Ok(rest) if rest.is_empty() => return Poll::Ready(None),
                    other => other,
                },
            };
            match decoded {
                // A chunk of fewer than four characters decodes to nothing yet.
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(err) => {
                    let _ = self.undecodable.set(err);
                    return Poll::Ready(Some(Err(BodyError(Box::new(err)))));
                }
            }
        }
    }
}

/// The standard base64 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding: `-text` responses, one chunk at a time.
pub fn encode(input: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 0x3f) as usize];
        out.put_u8(sextet(18));
        out.put_u8(sextet(12));
        out.put_u8(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.put_u8(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    out.freeze()
}

/// The value of one base64 character.
fn sextet(c: u8) -> Option<u32> {
    let value = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// An incremental base64 decoder: input may be split anywhere and may be
/// several padded chunks one after the other (each padded group ends one).
/// ASCII whitespace is skipped.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    /// The characters of the group not yet complete.
    group: [u8; 4],
    filled: usize,
}

impl Base64Decoder {
    /// Decodes what `input` completes; keeps an unfinished group for later.
    pub fn push(&mut self, input: &[u8]) -> Result<Bytes, GrpcWebError> {
        let mut out = BytesMut::with_capacity((self.filled + input.len()) / 4 * 3);
        for &c in input.iter().filter(|c| !c.is_ascii_whitespace()) {
            self.group[self.filled] = c;
            self.filled += 1;
            if self.filled == 4 {
                self.filled = 0;
                decode_group(&self.group, &mut out)?;
            }
        }
        Ok(out.freeze())
    }

    /// The end of the input: an unpadded last group of two or three
    /// characters is accepted; a single character is a truncated body.
    pub fn finish(&mut self) -> Result<Bytes, GrpcWebError> {
        let filled = std::mem::take(&mut self.filled);
        match filled {
            0 => Ok(Bytes::new()),
            1 => Err(GrpcWebError::TruncatedBase64),
            _ => {
                let mut group = [b'='; 4];
                group[..filled].copy_from_slice(&self.group[..filled]);
                let mut out = BytesMut::with_capacity(2);
                decode_group(&group, &mut out)?;
                Ok(out.freeze())
            }
        }
    }
}

/// Decodes one group of four characters (`xx==`, `xxx=` or `xxxx`).
fn decode_group(group: &[u8; 4], out: &mut BytesMut) -> Result<(), GrpcWebError> {
    let value = |c: u8| sextet(c).ok_or(GrpcWebError::InvalidBase64);
    let n = (value(group[0])? << 18) | (value(group[1])? << 12);
    match (group[2], group[3]) {
        (b'=', b'=') => out.put_u8((n >> 16) as u8),
        (b'=', _) => return Err(GrpcWebError::InvalidBase64),
        (c, b'=') => {
            let n = n | (value(c)? << 6);
            out.put_u8((n >> 16) as u8);
            out.put_u8((n >> 8) as u8);
        }
        (c, d) => {
            let n = n | (value(c)? << 6) | value(d)?;
            out.put_u8((n >> 16) as u8);
            out.put_u8((n >> 8) as u8);
            out.put_u8(n as u8);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::http::{boxed, full};

    #[test]
    fn content_types_name_the_call() {
        let parse = |ct: &str| WebCall::parse(ct.as_bytes());
        let call = parse("application/grpc-web").unwrap();
        assert!(!call.text);
        assert_eq!(call.grpc_content_type(), "application/grpc");
        assert_eq!(call.web_content_type(), "application/grpc-web");
        let call = parse("application/grpc-web+proto").unwrap();
        assert_eq!(call.grpc_content_type(), "application/grpc+proto");
        assert_eq!(call.web_content_type(), "application/grpc-web+proto");
        let call = parse("Application/GRPC-Web-Text; charset=utf-8").unwrap();
        assert!(call.text);
        assert_eq!(call.grpc_content_type(), "application/grpc");
        assert_eq!(call.web_content_type(), "application/grpc-web-text");
        let call = parse("application/grpc-web-text+json").unwrap();
        assert_eq!(call.grpc_content_type(), "application/grpc+json");
        assert_eq!(call.web_content_type(), "application/grpc-web-text+json");
        for other in [
            "application/grpc",
            "application/grpc+proto",
            "application/json",
            "application/grpc-webby",
            "application/grpc-web+",
            "application/grpc-web+a b",
            "",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn trailer_frame_holds_lowercase_lines_after_flag_and_length() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("Grpc-Message", HeaderValue::from_static("all%20good"));
        trailers.insert("x-custom", HeaderValue::from_static("v"));
        let frame = trailer_frame(&trailers);
        let payload = b"grpc-status: 0\r\ngrpc-message: all%20good\r\nx-custom: v\r\n";
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[1..5], &(payload.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..], payload);
        assert_eq!(&trailer_frame(&HeaderMap::new())[..], &[0x80, 0, 0, 0, 0]);
    }

    #[test]
    fn base64_round_trips_whatever_the_split() {
        let data: Vec<u8> = (0..=255u8).chain(0..7).collect();
        for len in [0, 1, 2, 3, 4, 5, 100, data.len()] {
            let text = encode(&data[..len]);
            for split in 0..=text.len().min(9) {
                let mut decoder = Base64Decoder::default();
                let mut out = decoder.push(&text[..split]).unwrap().to_vec();
                out.extend_from_slice(&decoder.push(&text[split..]).unwrap());
                out.extend_from_slice(&decoder.finish().unwrap());
                assert_eq!(out, &data[..len], "len {len}, split {split}");
            }
        }
    }

    #[test]
    fn base64_decodes_padded_chunks_back_to_back_split_anywhere() {
        let chunks: [&[u8]; 3] = [b"\x00\x00\x00\x00\x02\x0a", b"\x00", b"\x80\x00\x00"];
        let text: Vec<u8> = chunks.iter().flat_map(|c| encode(c).to_vec()).collect();
        assert_eq!(text, b"AAAAAAIKAA==gAAA");
        let expected: Vec<u8> = chunks.concat();
        for size in 1..=5 {
            let mut decoder = Base64Decoder::default();
            let mut out = Vec::new();
            for piece in text.chunks(size) {
                out.extend_from_slice(&decoder.push(piece).unwrap());
            }
            out.extend_from_slice(&decoder.finish().unwrap());
            assert_eq!(out, expected, "pieces of {size}");
        }
        // Unpadded ends are accepted; line breaks are skipped.
        let mut decoder = Base64Decoder::default();
        let mut out = decoder.push(b"aGVs\r\nbG8").unwrap().to_vec();
        out.extend_from_slice(&decoder.finish().unwrap());
        assert_eq!(out, b"hello");
    }

    #[test]
    fn base64_refuses_what_is_not_base64() {
        assert_eq!(
            Base64Decoder::default().push(b"ab!d"),
            Err(GrpcWebError::InvalidBase64)
        );
        assert_eq!(
            Base64Decoder::default().push(b"a=bc"),
            Err(GrpcWebError::InvalidBase64)
        );
        let mut decoder = Base64Decoder::default();
        decoder.push(b"abcde").unwrap();
        assert_eq!(decoder.finish(), Err(GrpcWebError::TruncatedBase64));
    }

    fn web_call(text: bool) -> WebCall {
        WebCall {
            text,
            codec: Some("proto".into()),
        }
    }

    async fn collect(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    /// A gRPC response body: `data` then `trailers`.
    fn grpc_body(data: &'static [u8], trailers: Option<HeaderMap>) -> Body {
        let stream = futures_util::stream::iter(
            [Ok::<_, BodyError>(Frame::data(Bytes::from_static(data)))]
                .into_iter()
                .chain(trailers.map(|t| Ok(Frame::trailers(t)))),
        );
        boxed(http_body_util::StreamBody::new(stream))
    }

    fn grpc_response(body: Body) -> Response<Body> {
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }

    #[tokio::test]
    async fn trailers_become_the_last_frame_and_text_is_base64() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let message: &[u8] = b"\x00\x00\x00\x00\x02\x0a\x00";
        let response = grpc_response(grpc_body(message, Some(trailers.clone())));
        let response = to_grpc_web(response, &web_call(false), Version::HTTP_11);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/grpc-web+proto"
        );
        let mut expected = message.to_vec();
        expected.extend_from_slice(&trailer_frame(&trailers));
        assert_eq!(collect(response.into_body()).await, expected);

        let response = grpc_response(grpc_body(message, Some(trailers.clone())));
        let response = to_grpc_web(response, &web_call(true), Version::HTTP_2);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/grpc-web-text+proto"
        );
        let text = collect(response.into_body()).await;
        let mut decoder = Base64Decoder::default();
        assert_eq!(decoder.push(&text).unwrap().to_vec(), expected);
    }

    #[tokio::test]
    async fn failures_and_missing_statuses_end_with_a_status_frame() {
        let failing = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x00"))),
            Err(BodyError("reset".into())),
        ]);
        let response = grpc_response(boxed(http_body_util::StreamBody::new(failing)));
        let body = collect(to_grpc_web(response, &web_call(false), Version::HTTP_11).into_body());
        let body = body.await;
        let expected = trailer_frame(&crate::errors::grpc_reset_trailers());
        assert_eq!(&body[5..], &expected[..]);
        assert!(String::from_utf8_lossy(&body).contains("grpc-status: 14\r\n"));

        let response = grpc_response(grpc_body(b"", None));
        let body = collect(to_grpc_web(response, &web_call(false), Version::HTTP_11).into_body());
        assert!(String::from_utf8_lossy(&body.await).contains("grpc-status: 13\r\n"));
    }

    #[tokio::test]
    async fn trailers_only_answers_keep_the_headers_and_get_a_frame() {
        let mut response = grpc_response(full(""));
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("5"));
        response
            .headers_mut()
            .insert("grpc-message", HeaderValue::from_static("gone"));
        let response = to_grpc_web(response, &web_call(false), Version::HTTP_11);
        assert_eq!(response.headers()["grpc-status"], "5");
        let body = collect(response.into_body()).await;
        assert_eq!(&body[5..], b"grpc-status: 5\r\ngrpc-message: gone\r\n");
    }

    #[tokio::test]
    async fn other_content_types_pass_untouched_and_text_requests_are_decoded() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let inner: HttpService = crate::http::shared_fn(move |req: Request<Body>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = collect(body).await;
                log.lock()
                    .unwrap()
                    .push((parts.version, parts.headers, bytes));
                Ok::<_, BoxError>(grpc_response(grpc_body(b"", None)))
            }
        });
        let service = layer().layer(inner);
        let request = |ct: &str, body: &'static [u8]| {
            let mut req = Request::new(full(body));
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            req.headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            req.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            req
        };
        let plain = service
            .clone()
            .call_ref(request("application/json", b"{}"))
            .await
            .unwrap();
        assert_eq!(plain.headers()[CONTENT_TYPE], "application/grpc");
        let web = service
            .call_ref(request("application/grpc-web-text", b"AAAAAAIKAQ=="))
            .await
            .unwrap();
        assert_eq!(web.headers()[CONTENT_TYPE], "application/grpc-web-text");
        let seen = seen.lock().unwrap();
        let (version, headers, body) = &seen[0];
        assert_eq!(*version, Version::HTTP_11);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert!(headers.contains_key(ACCEPT_ENCODING));
        assert_eq!(body, b"{}");
        let (version, headers, body) = &seen[1];
        assert_eq!(*version, Version::HTTP_2);
        assert_eq!(headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(headers[TE], "trailers");
        assert!(!headers.contains_key(ACCEPT_ENCODING));
        assert!(!headers.contains_key(CONTENT_LENGTH));
        assert_eq!(body, b"\x00\x00\x00\x00\x02\x0a\x01");
    }
}
