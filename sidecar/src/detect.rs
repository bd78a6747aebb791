//! Protocol detection: reads a connection's first bytes, at most for a
//! bounded time, and says what the client speaks: HTTP/2 (the connection
//! preface), HTTP/1 (a request line), TLS (a ClientHello record), or
//! anything else, opaque TCP. The bytes read are handed back in front of the
//! stream ([`Rewind`]), so whoever serves the connection sees all of them.
//! Errors: only I/O errors while reading; a timeout is not an error (opaque).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// A TLS ClientHello.
    Tls,
    /// Anything else, or nothing within the detection timeout.
    Opaque,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token the HTTP/1 check accepts before the space.
const MAX_METHOD: usize = 20;

/// Reads from `io` until the protocol is known, the client stops sending,
/// or `timeout` passes.
pub async fn detect<I>(mut io: I, timeout: Duration) -> io::Result<(Protocol, Rewind<I>)>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    let protocol = loop {
        if let Some(protocol) = classify(&buf) {
            break protocol;
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_elapsed) => break Protocol::Opaque,
            Ok(Ok(0)) => break classify(&buf).unwrap_or(Protocol::Opaque),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
        }
    };
    Ok((protocol, Rewind::new(buf.freeze(), io)))
}

/// Decides from the bytes so far, or `None` when more bytes could change the answer.
pub fn classify(bytes: &[u8]) -> Option<Protocol> {
    if bytes.is_empty() {
        return None;
    }
    let common = bytes.len().min(H2_PREFACE.len());
    if bytes[..common] == H2_PREFACE[..common] {
        return if common == H2_PREFACE.len() {
            Some(Protocol::Http2)
        } else {
            None
        };
    }
    // TLS handshake record: content type 22, major version 3.
    if bytes[0] == 0x16 {
        return match bytes.get(1) {
            None => None,
            Some(3) => Some(Protocol::Tls),
            Some(_) => Some(Protocol::Opaque),
        };
    }
    // HTTP/1: a method token (RFC 9110 tchar, upper-case in practice) then a space.
    for (i, &b) in bytes.iter().enumerate().take(MAX_METHOD + 1) {
        if b == b' ' {
            return Some(if i > 0 {
                Protocol::Http1
            } else {
                Protocol::Opaque
            });
        }
        if !b.is_ascii_uppercase() && b != b'-' && b != b'_' {
            return Some(Protocol::Opaque);
        }
    }
    if bytes.len() > MAX_METHOD {
        Some(Protocol::Opaque)
    } else {
        None
    }
}

pin_project! {
    /// A stream with bytes already read put back in front of it.
    #[derive(Debug)]
    pub struct Rewind<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
    }
}

impl<I> Rewind<I> {
    /// `prefix` is read before `inner`.
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }

    /// The stream, without what of the prefix was not read.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Frees the detection buffer for the connection's lifetime.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST"), None);
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Protocol::Http2)
        );
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Protocol::Tls));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Protocol::Opaque));
        assert_eq!(classify(b" GET"), Some(Protocol::Opaque));
        assert_eq!(
            classify(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            Some(Protocol::Opaque)
        );
    }

    #[tokio::test]
    async fn detection_rewinds_what_it_read() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (protocol, mut io) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut out = vec![0u8; 18];
        io.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_opaque_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let (protocol, _) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Opaque);
    }
}
