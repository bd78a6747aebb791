//! A body whose bytes pass through a streaming coder (a compressor on
//! responses, a decompressor on requests): each data frame is coded as it
//! arrives, the coder's last bytes come at the end, then the trailers. An
//! error from the inner body or the coder ends the body with that error,
//! never with a clean end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::http::{Body, BodyError};

/// A streaming transformation of body bytes.
pub(super) trait Coder {
    /// Codes `data`: the bytes ready to send (possibly none).
    fn code(&mut self, data: &[u8]) -> Result<Bytes, BodyError>;
    /// The end of the input: the coder's last bytes.
    fn finish(self) -> Result<Bytes, BodyError>;
}

/// `inner` coded by `C` as it streams.
pub(super) struct CodedBody<C> {
    inner: Body,
    /// `None` once finished (or failed).
    coder: Option<C>,
    /// The inner body's trailers, sent after the coder's last bytes.
    trailers: Option<HeaderMap>,
}

impl<C: Coder> CodedBody<C> {
    pub(super) fn new(inner: Body, coder: C) -> Self {
        CodedBody {
            inner,
            coder: Some(coder),
            trailers: None,
        }
    }

    /// The coder's last bytes (then the trailers, on the next poll).
    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let last = match self.coder.take().map(Coder::finish) {
            Some(Ok(last)) => last,
            Some(Err(err)) => return Poll::Ready(Some(Err(err))),
            None => Bytes::new(),
        };
        if last.is_empty() {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        Poll::Ready(Some(Ok(Frame::data(last))))
    }
}

impl<C: Coder + Unpin> http_body::Body for CodedBody<C> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(coder) = this.coder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => {
                    this.coder = None;
                    return Poll::Ready(Some(Err(err)));
                }
                None => return this.finish(),
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match coder.code(&data) {
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(err) => {
                        this.coder = None;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                Err(frame) => {
                    this.trailers = frame.into_trailers().ok();
                    return this.finish();
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.coder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
