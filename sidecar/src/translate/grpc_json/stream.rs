//! Bodies that translate as they go, never buffering a stream: gRPC
//! length-prefixed frames decoded incrementally into NDJSON lines or SSE
//! events (each flushed as it arrives, a failed stream ending with an
//! error line / `event: error`), and an NDJSON request body turned into
//! gRPC frames line by line (client and bidi streams).

use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MessageDescriptor};
use serde_json::{Map, Value};

use super::json::{self, JsonError, Print};
use super::status::GrpcStatus;
use crate::http::{Body, BodyError};

/// One message in a gRPC frame (uncompressed).
pub fn frame(message: &DynamicMessage) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut out);
    out.freeze()
}

/// Splits a byte stream into gRPC message payloads.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

/// A frame the proxy cannot read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub &'static str);

impl FrameDecoder {
    /// Adds bytes from the body.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message payload, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(FrameError("compressed gRPC messages are not supported"));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Whether a whole frame is buffered.
    pub fn has_message(&self) -> bool {
        self.buf.len() >= 5
            && self.buf.len()
                >= 5 + u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize
    }

    /// Bytes left that are not a whole frame.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The body format of a server stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON message per line.
    Ndjson,
    /// `data: {json}` events.
    Sse,
}

impl StreamFormat {
    /// The response `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }

    /// One message as a chunk.
    fn message(self, json: &Value) -> Bytes {
        match self {
            StreamFormat::Ndjson => Bytes::from(format!("{json}\n")),
            StreamFormat::Sse => Bytes::from(format!("data: {json}\n\n")),
        }
    }

    /// The error that ends a failed stream.
    fn error(self, status: &GrpcStatus) -> Bytes {
        let json = status.to_json();
        match self {
            StreamFormat::Ndjson => {
                Bytes::from(format!("{}\n", serde_json::json!({ "error": json })))
            }
            StreamFormat::Sse => Bytes::from(format!("event: error\ndata: {json}\n\n")),
        }
    }
}

/// How a response stream is printed.
#[derive(Clone)]
pub struct Printer {
    /// The response message type.
    pub output: MessageDescriptor,
    /// For details in statuses.
    pub pool: DescriptorPool,
    /// JSON options.
    pub print: Print,
    /// `response_body`.
    pub field: Option<FieldDescriptor>,
    /// NDJSON or SSE.
    pub format: StreamFormat,
}

impl Printer {
    fn chunk(&self, payload: &[u8]) -> Result<Bytes, GrpcStatus> {
        let message = DynamicMessage::decode(self.output.clone(), payload)
            .map_err(|e| GrpcStatus::new(13, format!("undecodable response message: {e}")))?;
        let json = json::render(&message, self.print, self.field.as_ref())
            .map_err(|e| GrpcStatus::new(13, format!("unprintable response message: {e}")))?;
        Ok(self.format.message(&json))
    }
}

/// State of a translated response stream.
struct ResponseStream {
    upstream: Body,
    decoder: FrameDecoder,
    printer: Printer,
    done: bool,
}

/// The upstream's gRPC body as NDJSON / SSE; `decoder` may hold bytes
/// already read.
pub fn response_body(upstream: Body, decoder: FrameDecoder, printer: Printer) -> Body {
    let state = ResponseStream {
        upstream,
        decoder,
        printer,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let chunk = next_chunk(&mut state).await?;
        Some((Ok::<_, BodyError>(Frame::data(chunk)), state))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// The next chunk of a translated response stream; `None` once ended.
async fn next_chunk(state: &mut ResponseStream) -> Option<Bytes> {
    loop {
        if state.done {
            return None;
        }
        match state.decoder.next_message() {
            Ok(Some(payload)) => match state.printer.chunk(&payload) {
                Ok(chunk) => return Some(chunk),
                Err(status) => return Some(end(state, &status)),
            },
            Ok(None) => {}
            Err(err) => return Some(end(state, &GrpcStatus::new(13, err.0))),
        }
        match state.upstream.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => state.decoder.push(&data),
                Err(frame) => {
                    let status = frame
                        .trailers_ref()
                        .and_then(|t| GrpcStatus::from_headers(t, &state.printer.pool))
                        .unwrap_or_else(|| GrpcStatus::new(13, "the upstream sent no grpc-status"));
                    state.done = true;
                    if status.code != 0 {
                        return Some(state.printer.format.error(&status));
                    }
                }
            },
            Some(Err(err)) => {
                tracing::debug!(error = %err, "gRPC response stream failed");
                return Some(end(
                    state,
                    &GrpcStatus::new(14, "the upstream reset the stream"),
                ));
            }
            None => {
                let status = GrpcStatus::new(13, "the upstream ended the stream without a status");
                return Some(end(state, &status));
            }
        }
    }
}

fn end(state: &mut ResponseStream, status: &GrpcStatus) -> Bytes {
    state.done = true;
    state.printer.format.error(status)
}

/// Where a client stream's first bad line is kept, so the answer can be a
/// 400 naming it.
pub type LineError = Arc<Mutex<Option<JsonError>>>;

/// State of an NDJSON request body being framed.
struct RequestStream {
    body: Body,
    input: MessageDescriptor,
    base: Map<String, Value>,
    buf: BytesMut,
    line: usize,
    max_line: usize,
    failed: LineError,
    ended: bool,
}

/// An NDJSON request body as gRPC frames: one message per non-empty line,
/// each merged over `base` (path and query values).
pub fn request_body(
    body: Body,
    input: MessageDescriptor,
    base: Map<String, Value>,
    max_line: usize,
    failed: LineError,
) -> Body {
    let state = RequestStream {
        body,
        input,
        base,
        buf: BytesMut::new(),
        line: 0,
        max_line,
        failed,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let item = next_frame(&mut state).await?;
        Some((item.map(Frame::data), state))
    });
    StreamBody::new(stream.boxed()).boxed_unsync()
}

/// The next framed message of an NDJSON body.
async fn next_frame(state: &mut RequestStream) -> Option<Result<Bytes, BodyError>> {
    loop {
        if let Some(pos) = state.buf.iter().position(|b| *b == b'\n') {
            let line = state.buf.split_to(pos + 1);
            state.line += 1;
            if let Some(result) = line_frame(state, &line[..pos]) {
                return Some(result);
            }
            continue;
        }
        if state.ended {
            if state.buf.is_empty() {
                return None;
            }
            let line = state.buf.split();
            state.line += 1;
            if let Some(result) = line_frame(state, &line) {
                return Some(result);
            }
            return None;
        }
        if state.buf.len() > state.max_line {
            return Some(fail(
                state,
                JsonError {
                    path: String::new(),
                    message: format!("line {} is over {} bytes", state.line + 1, state.max_line),
                },
            ));
        }
        match state.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    state.buf.extend_from_slice(&data);
                }
            }
            Some(Err(err)) => return Some(Err(err)),
            None => state.ended = true,
        }
    }
}

/// One line framed; `None` for a blank line.
fn line_frame(state: &mut RequestStream, line: &[u8]) -> Option<Result<Bytes, BodyError>> {
    let parsed = match json::parse_body(line) {
        Ok(None) => return None,
        Ok(Some(value)) => value,
        Err(err) => return Some(fail(state, err)),
    };
    let merged = json::merge_body(
        state.base.clone(),
        &super::rules::BodyRule::All,
        Some(parsed),
    )
    .and_then(|value| json::to_message(&state.input, value));
    match merged {
        Ok(message) => Some(Ok(frame(&message))),
        Err(err) => Some(fail(state, err)),
    }
}

/// Records the bad line and fails the body, which resets the upstream call.
fn fail(state: &mut RequestStream, err: JsonError) -> Result<Bytes, BodyError> {
    let err = JsonError {
        path: err.path,
        message: format!("line {}: {}", state.line, err.message),
    };
    if let Ok(mut slot) = state.failed.lock() {
        slot.get_or_insert(err.clone());
    }
    state.ended = true;
    state.buf.clear();
    Err(BodyError(Box::new(super::GrpcJsonError::Json(err))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_across_chunks() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 0, 3, b'a']);
        assert!(decoder.next_message().unwrap().is_none());
        decoder.push(&[b'b', b'c', 0, 0, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message().unwrap().unwrap().as_ref(), b"abc");
        assert_eq!(decoder.next_message().unwrap().unwrap().as_ref(), b"");
        assert!(decoder.next_message().unwrap().is_none());
        assert!(!decoder.is_empty());
        decoder.push(&[0, 0, 0, 1, 9]);
        assert_eq!(decoder.next_message().unwrap().unwrap().as_ref(), b"\x09");
        decoder.push(&[1, 0, 0, 0, 0]);
        assert!(decoder.next_message().is_err());
    }
}
