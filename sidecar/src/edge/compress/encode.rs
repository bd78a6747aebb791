//! The compressing response body: every data frame from the upstream is
//! compressed and the encoder flushed (a sync flush), so the client gets
//! bytes as the upstream sends them; nothing is buffered past one frame.
//! Trailers pass through after the encoder's last bytes; an upstream error
//! mid-stream ends the body with that error, never with a clean end.

use std::io::Write;

use bytes::Bytes;
use mesh_api::config::Encoding;

use super::coded::{CodedBody, Coder};
use super::Levels;
use crate::http::{Body, BodyError};

/// Brotli's window (log2 bytes): 1 MiB per stream, plenty for responses
/// compressed on the fly.
const BROTLI_WINDOW: u32 = 20;

/// Brotli's internal buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// A streaming encoder writing into a buffer the body drains per frame.
pub(super) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(encoding: Encoding, levels: &Levels) -> std::io::Result<Encoder> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                levels.br,
                BROTLI_WINDOW,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?)
            }
        })
    }

    /// Compresses `data` and flushes: the bytes returned decode to all the
    /// input so far.
    fn compress(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(w) => {
                w.write_all(data)?;
                w.flush()?;
                w.get_mut()
            }
            Encoder::Br(w) => {
                w.write_all(data)?;
                w.flush()?;
                w.get_mut()
            }
            Encoder::Zstd(w) => {
                w.write_all(data)?;
                w.flush()?;
                w.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream: the encoder's last bytes.
    fn end(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(w) => w.finish()?,
            Encoder::Br(w) => w.into_inner(),
            Encoder::Zstd(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// A response body compressed as it streams.
pub(super) type CompressedBody = CodedBody<Encoder>;

impl CodedBody<Encoder> {
    /// `inner` compressed with `encoding`; `inner` back if the encoder
    /// cannot be created.
    pub(super) fn compressed(
        inner: Body,
        encoding: Encoding,
        levels: &Levels,
    ) -> Result<CompressedBody, (Body, std::io::Error)> {
        match Encoder::new(encoding, levels) {
            Ok(encoder) => Ok(CodedBody::new(inner, encoder)),
            Err(err) => Err((inner, err)),
        }
    }
}

impl Coder for Encoder {
    fn code(&mut self, data: &[u8]) -> Result<Bytes, BodyError> {
        self.compress(data).map_err(|err| BodyError(err.into()))
    }

    fn finish(self) -> Result<Bytes, BodyError> {
        self.end().map_err(|err| BodyError(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http::HeaderMap;
    use http_body::Frame;

    use http_body_util::BodyExt;

    use super::*;

    /// A body sending `chunks`, then `end`.
    fn upstream(chunks: &[&'static str], end: Result<Option<HeaderMap>, &'static str>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, BodyError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        match end {
            Ok(Some(trailers)) => frames.push(Ok(Frame::trailers(trailers))),
            Ok(None) => {}
            Err(why) => frames.push(Err(BodyError(why.into()))),
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn decode(encoding: Encoding, bytes: &[u8]) -> String {
        let mut out = String::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_string(&mut out)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_string(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => {
                zstd::stream::read::Decoder::new(bytes)
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
            }
        }
        out
    }

    /// What a streaming decoder has produced from a prefix of the stream.
    fn decode_prefix(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                let mut d = flate2::write::GzDecoder::new(&mut out);
                d.write_all(bytes).unwrap();
                d.flush().unwrap();
            }
            Encoding::Br => {
                let mut d = brotli::DecompressorWriter::new(&mut out, 4096);
                d.write_all(bytes).unwrap();
                d.flush().unwrap();
                drop(d);
            }
            Encoding::Zstd => {
                let mut d = zstd::stream::write::Decoder::new(&mut out).unwrap();
                d.write_all(bytes).unwrap();
                d.flush().unwrap();
            }
        }
        out
    }

    #[tokio::test]
    async fn each_frame_is_decodable_as_it_arrives_and_trailers_follow() {
        for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "abc".parse().unwrap());
            let mut body = CompressedBody::compressed(
                upstream(&["first chunk;", "second chunk;"], Ok(Some(trailers))),
                encoding,
                &Levels::default(),
            )
            .ok()
            .unwrap();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(
                decode_prefix(encoding, &first),
                b"first chunk;",
                "{encoding:?}"
            );
            let mut all = first.to_vec();
            let mut seen_trailers = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                match frame.into_data() {
                    Ok(data) => {
                        assert!(seen_trailers.is_none(), "data after trailers");
                        all.extend_from_slice(&data);
                    }
                    Err(frame) => seen_trailers = frame.into_trailers().ok(),
                }
            }
            assert_eq!(decode(encoding, &all), "first chunk;second chunk;");
            assert_eq!(seen_trailers.unwrap()["x-checksum"], "abc");
            assert!(http_body::Body::is_end_stream(&body));
        }
    }

    #[tokio::test]
    async fn an_upstream_error_is_not_a_clean_end() {
        let mut body = CompressedBody::compressed(
            upstream(&["some data"], Err("upstream reset")),
            Encoding::Gzip,
            &Levels::default(),
        )
        .ok()
        .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().err().unwrap();
        assert_eq!(err.to_string(), "upstream reset");
    }
}
