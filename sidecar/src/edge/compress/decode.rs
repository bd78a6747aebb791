//! Request decompression: a body sent with `Content-Encoding: gzip | br |
//! zstd` is decoded as it streams, before it is forwarded. The decoded size
//! is bounded while decoding (a decompression bomb stops at the bound with
//! [`HygieneError::BodyTooLarge`], 413), corrupt data fails the body with
//! [`DecompressError::Corrupt`] (400), and a coding the proxy cannot decode
//! is refused before forwarding with [`DecompressError::Unsupported`] (415).

use std::io::Write;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};
use mesh_api::config::Encoding;

use super::coded::{CodedBody, Coder};
use crate::http::hygiene::HygieneError;
use crate::http::{Body, BodyError};

/// Brotli's internal buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// Why a request body cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// A `Content-Encoding` other than gzip, br, zstd or identity, or more
    /// than one coding (415).
    #[error("request Content-Encoding {0:?} is not supported (gzip, br or zstd)")]
    Unsupported(String),
    /// The body is not valid data of its coding (400).
    #[error("request body is not valid {0} data")]
    Corrupt(&'static str),
}

/// What a request's `Content-Encoding` asks of the proxy.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RequestCoding {
    /// No coding (or `identity`).
    Plain,
    /// One coding the proxy decodes.
    Encoded(Encoding),
}

/// Reads a request's `Content-Encoding`.
pub(super) fn request_coding(headers: &HeaderMap) -> Result<RequestCoding, DecompressError> {
    let mut fields = headers.get_all(CONTENT_ENCODING).iter();
    let Some(field) = fields.next() else {
        return Ok(RequestCoding::Plain);
    };
    let text = String::from_utf8_lossy(field.as_bytes());
    let coding = text.trim();
    if fields.next().is_some() || coding.contains(',') {
        let all: Vec<_> = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        return Err(DecompressError::Unsupported(all.join(", ")));
    }
    if coding.eq_ignore_ascii_case("identity") {
        return Ok(RequestCoding::Plain);
    }
    super::negotiate::encoding_named(coding)
        .map(RequestCoding::Encoded)
        .ok_or_else(|| DecompressError::Unsupported(coding.to_string()))
}

/// Decoded bytes collected for the next frame, up to the bound.
struct Sink {
    out: Vec<u8>,
    /// Bytes decoded so far, in all.
    total: u64,
    max: u64,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.total = self.total.saturating_add(buf.len() as u64);
        if self.total > self.max {
            self.over = true;
            return Err(std::io::Error::other("decoded body over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A streaming decoder writing into a bounded [`Sink`].
enum Decoder {
    Gzip(flate2::write::GzDecoder<Sink>),
    Br(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
}

impl Decoder {
    fn new(encoding: Encoding, max: u64) -> Result<Decoder, BodyError> {
        let sink = Sink {
            out: Vec::new(),
            total: 0,
            max,
            over: false,
        };
        Ok(match encoding {
            Encoding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(sink)),
            Encoding::Br => Decoder::Br(Box::new(brotli::DecompressorWriter::new(
                sink,
                BROTLI_BUFFER,
            ))),
            Encoding::Zstd => Decoder::Zstd(
                zstd::stream::write::Decoder::new(sink).map_err(|err| BodyError(err.into()))?,
            ),
        })
    }

    fn encoding(&self) -> Encoding {
        match self {
            Decoder::Gzip(_) => Encoding::Gzip,
            Decoder::Br(_) => Encoding::Br,
            Decoder::Zstd(_) => Encoding::Zstd,
        }
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Br(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }

    /// Decodes `data`: the bytes decoded from it.
    fn decode(&mut self, data: &[u8]) -> Result<Bytes, BodyError> {
        let written = match self {
            Decoder::Gzip(d) => d.write_all(data).and_then(|()| d.flush()),
            Decoder::Br(d) => d.write_all(data).and_then(|()| d.flush()),
            Decoder::Zstd(d) => d.write_all(data).and_then(|()| d.flush()),
        };
        self.drain(written)
    }

    /// The end of the body: the encoded stream must be complete.
    fn end(&mut self) -> Result<Bytes, BodyError> {
        let finished = match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Br(d) => d.close(),
            Decoder::Zstd(d) => d.do_finish(),
        };
        self.drain(finished)
    }

    /// What the sink holds, or the error that stopped decoding.
    fn drain(&mut self, result: std::io::Result<()>) -> Result<Bytes, BodyError> {
        let encoding = self.encoding();
        let sink = self.sink();
        if sink.over {
            return Err(BodyError(Box::new(HygieneError::BodyTooLarge)));
        }
        if result.is_err() {
            return Err(BodyError(Box::new(DecompressError::Corrupt(
                encoding.as_str(),
            ))));
        }
        Ok(Bytes::from(std::mem::take(&mut sink.out)))
    }
}

impl Coder for Decoder {
    fn code(&mut self, data: &[u8]) -> Result<Bytes, BodyError> {
        self.decode(data)
    }

    fn finish(mut self) -> Result<Bytes, BodyError> {
        self.end()
    }
}

/// Decodes the request body as its `Content-Encoding` says, at most `max`
/// bytes; the coding and the (encoded) `Content-Length` are removed.
pub(super) fn decode_request(
    req: &mut http::Request<Body>,
    max: u64,
) -> Result<(), DecompressError> {
    let RequestCoding::Encoded(encoding) = request_coding(req.headers())? else {
        req.headers_mut().remove(CONTENT_ENCODING);
        return Ok(());
    };
    let headers = req.headers_mut();
    headers.remove(CONTENT_ENCODING);
    if http_body::Body::is_end_stream(req.body()) {
        // No body (a GET with a stray header): nothing to decode.
        return Ok(());
    }
    req.headers_mut().remove(CONTENT_LENGTH);
    let body = std::mem::replace(req.body_mut(), crate::http::empty());
    *req.body_mut() = match Decoder::new(encoding, max) {
        Ok(decoder) => http_body_util::BodyExt::boxed_unsync(CodedBody::new(body, decoder)),
        Err(err) => {
            tracing::debug!(error = %err, "request decoder");
            return Err(DecompressError::Corrupt(encoding.as_str()));
        }
    };
    Ok(())
}

/// The [`DecompressError`] an error is or carries (a request body that
/// failed while it was being forwarded).
pub fn decompress_error(err: &crate::BoxError) -> Option<&DecompressError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<DecompressError>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::BodyExt;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn request(coding: &str, body: Vec<u8>) -> http::Request<Body> {
        http::Request::builder()
            .header(CONTENT_ENCODING, coding)
            .header(CONTENT_LENGTH, body.len())
            .body(crate::http::full(body))
            .unwrap()
    }

    async fn decoded(coding: &str, body: Vec<u8>, max: u64) -> Result<Vec<u8>, BodyError> {
        let mut req = request(coding, body);
        decode_request(&mut req, max).unwrap();
        assert!(req.headers().get(CONTENT_ENCODING).is_none());
        assert!(req.headers().get(CONTENT_LENGTH).is_none());
        req.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn each_coding_decodes() {
        let text = b"hello, compressed world".repeat(100);
        assert_eq!(decoded("gzip", gzip(&text), 1 << 20).await.unwrap(), text);
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decoded("zstd", zstd, 1 << 20).await.unwrap(), text);
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 20)
            .write_all(&text)
            .unwrap();
        assert_eq!(decoded("BR", br, 1 << 20).await.unwrap(), text);
    }

    #[tokio::test]
    async fn bombs_stop_at_the_bound_and_corrupt_data_fails() {
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 10_000);
        let err = decoded("gzip", bomb, 1 << 20).await.unwrap_err();
        let err: crate::BoxError = Box::new(err);
        assert_eq!(
            crate::errors::reason(&err),
            crate::errors::Reason::BodyTooLarge
        );
        let mut corrupt = gzip(b"some text here");
        corrupt.truncate(corrupt.len() - 6);
        for (coding, body) in [("gzip", corrupt), ("zstd", b"not zstd".to_vec())] {
            let err: crate::BoxError = Box::new(decoded(coding, body, 1 << 20).await.unwrap_err());
            assert!(
                matches!(decompress_error(&err), Some(DecompressError::Corrupt(_))),
                "{coding}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_body_needs_no_decoding() {
        let mut req = http::Request::builder()
            .header(CONTENT_ENCODING, "br")
            .body(crate::http::empty())
            .unwrap();
        decode_request(&mut req, 10).unwrap();
        assert!(req.headers().get(CONTENT_ENCODING).is_none());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[test]
    fn codings_other_than_one_known_are_unsupported() {
        let coding = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_ENCODING, HeaderValue::from_static(value));
            }
            request_coding(&headers)
        };
        assert_eq!(coding(&[]).unwrap(), RequestCoding::Plain);
        assert_eq!(coding(&["identity"]).unwrap(), RequestCoding::Plain);
        assert_eq!(
            coding(&[" x-gzip "]).unwrap(),
            RequestCoding::Encoded(Encoding::Gzip)
        );
        for bad in [&["deflate"][..], &["gzip, br"], &["gzip", "br"], &["lz4"]] {
            assert!(
                matches!(coding(bad), Err(DecompressError::Unsupported(_))),
                "{bad:?}"
            );
        }
    }
}
