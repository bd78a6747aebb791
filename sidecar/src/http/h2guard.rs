//! HTTP/2 frame guard: sits between a downstream socket and hyper on HTTP/2
//! connections only. It reads the client's frames (after the 24-byte
//! preface) one header at a time and checks what RFC 9113 requires that the
//! `h2` crate misses or reports with another code: frame lengths per type,
//! SETTINGS values, CONTINUATION sequencing, frames on streams the client
//! itself closed, obviously malformed header blocks and pseudo-headers in
//! trailers. It also meets floods: control frames per second, header blocks
//! that never end (CONTINUATION flood), and clamps the HPACK table size a
//! client offers.
//! Reads: the client's bytes; hyper's written frame headers (for frame
//! boundaries and DATA frames sent). Writes: on a connection error a
//! `GOAWAY(last stream, code)` between two of hyper's frames, then the
//! connection ends (hyper sees end of stream; its later writes are dropped).
//! Memory: one buffer of one maximum frame, a small ring of closed streams.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::config::Http2Settings;

/// The client connection preface length (`PRI * HTTP/2.0...`).
const PREFACE_LEN: usize = 24;
/// A frame header's length.
const HEADER_LEN: usize = 9;
/// The largest frame the proxy accepts (SETTINGS_MAX_FRAME_SIZE, the default).
const MAX_FRAME: usize = 16_384;
/// Largest HPACK dynamic table the proxy's encoder will use for a client.
const MAX_TABLE_SIZE: u32 = 64 * 1024;
/// Streams the client closed that are remembered (frames on them are errors).
const CLOSED_RING: usize = 256;
/// CONTINUATION frames one header block may have.
const MAX_CONTINUATIONS: u32 = 64;
/// WINDOW_UPDATE frames free of the control budget: a base plus this many per
/// DATA frame the proxy sent.
const FREE_WINDOW_UPDATES: u64 = 100;
const WINDOW_UPDATES_PER_DATA: u64 = 10;

/// Frame types (RFC 9113 §6).
mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// Flags (RFC 9113 §6).
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Protocol = 0x1,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// One frame header as sent.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8]) -> FrameHead {
        FrameHead {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Frames checked whole (their payload decides), when they fit the buffer.
    fn checked_whole(&self) -> bool {
        match self.kind {
            kind::SETTINGS | kind::WINDOW_UPDATE => true,
            kind::HEADERS => self.flags & END_HEADERS != 0 && self.len <= MAX_FRAME,
            _ => false,
        }
    }
}

/// The client's side of the connection as the guard reads it.
#[derive(Debug)]
struct Inbound {
    preface_left: usize,
    payload_left: usize,
    /// An open header block: (stream, bytes, CONTINUATION frames).
    block: Option<(u32, usize, u32)>,
    highest_stream: u32,
    closed: VecDeque<u32>,
    window_start: Instant,
    control_frames: u32,
    window_updates: u64,
}

/// hyper's side: where its frames start and end.
#[derive(Debug, Default)]
struct Outbound {
    head: [u8; HEADER_LEN],
    head_have: usize,
    payload_left: usize,
    data_frames: u64,
}

impl Outbound {
    fn at_boundary(&self) -> bool {
        self.head_have == 0 && self.payload_left == 0
    }

    /// Bytes hyper may still write before the current frame ends.
    fn to_boundary(&self) -> usize {
        if self.head_have > 0 {
            HEADER_LEN - self.head_have
        } else {
            self.payload_left
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.head_have).min(bytes.len());
            self.head[self.head_have..self.head_have + n].copy_from_slice(&bytes[..n]);
            self.head_have += n;
            bytes = &bytes[n..];
            if self.head_have == HEADER_LEN {
                let head = FrameHead::parse(&self.head);
                if head.kind == kind::DATA {
                    self.data_frames += 1;
                }
                self.payload_left = head.len;
                self.head_have = 0;
            }
        }
    }
}

/// The GOAWAY the guard owes the client, and how much of it is written.
#[derive(Debug)]
struct Failure {
    frame: [u8; HEADER_LEN + 8],
    written: usize,
}

/// An HTTP/2 downstream connection with its client's frames checked.
pub struct H2Guard<I> {
    io: I,
    limits: Http2Settings,
    buf: Box<[u8]>,
    start: usize,
    pass: usize,
    end: usize,
    eof: bool,
    inbound: Inbound,
    outbound: Outbound,
    failure: Option<Failure>,
    read_waker: Option<Waker>,
}

impl<I> H2Guard<I> {
    /// Guards `io`, an HTTP/2 connection whose preface has not been read yet.
    pub fn new(io: I, limits: Http2Settings) -> Self {
        Self {
            io,
            limits,
            buf: vec![0; HEADER_LEN + MAX_FRAME].into_boxed_slice(),
            start: 0,
            pass: 0,
            end: 0,
            eof: false,
            inbound: Inbound {
                preface_left: PREFACE_LEN,
                payload_left: 0,
                block: None,
                highest_stream: 0,
                closed: VecDeque::with_capacity(CLOSED_RING),
                window_start: Instant::now(),
                control_frames: 0,
                window_updates: 0,
            },
            outbound: Outbound::default(),
            failure: None,
            read_waker: None,
        }
    }

    /// Advances `pass` over every buffered byte whose frame is acceptable.
    fn scan(&mut self) -> Result<(), Code> {
        loop {
            let available = self.end - self.pass;
            if self.inbound.preface_left > 0 {
                let n = self.inbound.preface_left.min(available);
                self.pass += n;
                self.inbound.preface_left -= n;
                if self.inbound.preface_left > 0 {
                    return Ok(());
                }
                continue;
            }
            if self.inbound.payload_left > 0 {
                let n = self.inbound.payload_left.min(available);
                self.pass += n;
                self.inbound.payload_left -= n;
                if n == 0 {
                    return Ok(());
                }
                continue;
            }
            if available < HEADER_LEN {
                return Ok(());
            }
            let head = FrameHead::parse(&self.buf[self.pass..self.pass + HEADER_LEN]);
            let whole = head.checked_whole();
            if whole {
                if head.len > MAX_FRAME {
                    return Err(Code::FrameSize);
                }
                if available < HEADER_LEN + head.len {
                    return Ok(());
                }
            }
            let body = self.pass + HEADER_LEN;
            let payload_end = if whole { body + head.len } else { body };
            check(
                &mut self.inbound,
                &self.outbound,
                &self.limits,
                head,
                &mut self.buf[body..payload_end],
            )?;
            if whole {
                self.pass = payload_end;
            } else {
                self.pass = body;
                self.inbound.payload_left = head.len;
            }
        }
    }

    fn fail(&mut self, code: Code) {
        debug!(
            ?code,
            "http/2 client broke the protocol or a limit; sending GOAWAY"
        );
        let mut frame = [0u8; HEADER_LEN + 8];
        frame[2] = 8;
        frame[3] = 7; // GOAWAY
        frame[9..13].copy_from_slice(&self.inbound.highest_stream.to_be_bytes());
        frame[13..17].copy_from_slice(&(code as u32).to_be_bytes());
        self.failure = Some(Failure { frame, written: 0 });
    }
}

impl<I: AsyncWrite + Unpin> H2Guard<I> {
    /// Writes what is left of the GOAWAY; ready once it is written and flushed.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(failure) = self.failure.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while failure.written < failure.frame.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &failure.frame[failure.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            };
            failure.written += n;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// Checks one client frame; `payload` is the whole payload for frames
/// [`FrameHead::checked_whole`], else empty. May rewrite SETTINGS values.
fn check(
    state: &mut Inbound,
    outbound: &Outbound,
    limits: &Http2Settings,
    head: FrameHead,
    payload: &mut [u8],
) -> Result<(), Code> {
    if let Some((stream, bytes, frames)) = state.block.as_mut() {
        if head.kind != kind::CONTINUATION || head.stream != *stream {
            return Err(Code::Protocol);
        }
        *bytes += head.len;
        *frames += 1;
        if *bytes > limits.max_header_block || *frames > MAX_CONTINUATIONS {
            return Err(Code::EnhanceYourCalm);
        }
        if head.flags & END_HEADERS != 0 {
            state.block = None;
        }
        return Ok(());
    }
    match head.kind {
        kind::CONTINUATION | kind::PUSH_PROMISE => Err(Code::Protocol),
        kind::PING => {
            exact_len(head, 8)?;
            if head.flags & ACK == 0 {
                control_frame(state, limits)?;
            }
            Ok(())
        }
        kind::RST_STREAM => {
            exact_len(head, 4)?;
            control_frame(state, limits)?;
            if head.stream != 0 && head.stream <= state.highest_stream {
                remember_closed(state, head.stream);
            }
            Ok(())
        }
        kind::PRIORITY => {
            exact_len(head, 5)?;
            control_frame(state, limits)
        }
        kind::WINDOW_UPDATE => {
            exact_len(head, 4)?;
            state.window_updates += 1;
            let free = FREE_WINDOW_UPDATES + WINDOW_UPDATES_PER_DATA * outbound.data_frames;
            if state.window_updates > free {
                control_frame(state, limits)?;
            }
            Ok(())
        }
        kind::SETTINGS => settings(state, limits, head, payload),
        kind::DATA => {
            stream_still_open(state, head.stream)?;
            if head.flags & END_STREAM != 0 {
                remember_closed(state, head.stream);
            } else if head.len == 0 {
                control_frame(state, limits)?;
            }
            Ok(())
        }
        kind::HEADERS => headers(state, limits, head, payload),
        _ => Ok(()),
    }
}

fn exact_len(head: FrameHead, len: usize) -> Result<(), Code> {
    if head.len == len {
        Ok(())
    } else {
        Err(Code::FrameSize)
    }
}

/// Counts a control frame against the per-second budget.
fn control_frame(state: &mut Inbound, limits: &Http2Settings) -> Result<(), Code> {
    let now = Instant::now();
    if now.duration_since(state.window_start) >= Duration::from_secs(1) {
        state.window_start = now;
        state.control_frames = 0;
    }
    state.control_frames += 1;
    if state.control_frames > limits.max_control_frames_per_second {
        return Err(Code::EnhanceYourCalm);
    }
    Ok(())
}

fn remember_closed(state: &mut Inbound, stream: u32) {
    if state.closed.contains(&stream) {
        return;
    }
    if state.closed.len() == CLOSED_RING {
        state.closed.pop_front();
    }
    state.closed.push_back(stream);
}

/// DATA or HEADERS on a stream the client ended or reset: STREAM_CLOSED.
fn stream_still_open(state: &Inbound, stream: u32) -> Result<(), Code> {
    if state.closed.contains(&stream) {
        Err(Code::StreamClosed)
    } else {
        Ok(())
    }
}

fn settings(
    state: &mut Inbound,
    limits: &Http2Settings,
    head: FrameHead,
    payload: &mut [u8],
) -> Result<(), Code> {
    if head.flags & ACK != 0 {
        return exact_len(head, 0);
    }
    if !head.len.is_multiple_of(6) {
        return Err(Code::FrameSize);
    }
    control_frame(state, limits)?;
    for entry in payload.chunks_exact_mut(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        match id {
            // SETTINGS_HEADER_TABLE_SIZE: our encoder never uses more than this.
            0x1 if value > MAX_TABLE_SIZE => {
                entry[2..6].copy_from_slice(&MAX_TABLE_SIZE.to_be_bytes());
            }
            // SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1.
            0x4 if value > 0x7fff_ffff => return Err(Code::FlowControl),
            _ => {}
        }
    }
    Ok(())
}

fn headers(
    state: &mut Inbound,
    limits: &Http2Settings,
    head: FrameHead,
    payload: &[u8],
) -> Result<(), Code> {
    stream_still_open(state, head.stream)?;
    let trailers = head.stream != 0 && head.stream <= state.highest_stream;
    if head.stream % 2 == 1 && head.stream > state.highest_stream {
        state.highest_stream = head.stream;
    }
    if head.flags & END_STREAM != 0 {
        remember_closed(state, head.stream);
    }
    if head.flags & END_HEADERS == 0 {
        if head.len > limits.max_header_block {
            return Err(Code::EnhanceYourCalm);
        }
        state.block = Some((head.stream, head.len, 0));
        return Ok(());
    }
    if payload.len() == head.len && head.len > 0 {
        if let Some(block) = header_block(head.flags, payload) {
            hpack::check(block, trailers)?;
        }
    }
    Ok(())
}

/// The header block fragment of a whole HEADERS payload (padding and
/// priority removed); `None` when malformed (h2 reports those itself).
fn header_block(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut block = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*block.first()?);
        block = &block[1..];
    }
    if flags & PRIORITY_FLAG != 0 {
        block = block.get(5..)?;
    }
    block.get(..block.len().checked_sub(pad)?)
}

/// Structural HPACK checks (RFC 7541) without decoding: every
/// representation complete, no index 0, and for trailers no pseudo-header
/// named through the static table or a literal name.
mod hpack {
    use super::Code;

    /// Static table entries 1..=14 are pseudo-headers.
    const LAST_PSEUDO_INDEX: u64 = 14;

    pub(super) fn check(mut block: &[u8], trailers: bool) -> Result<(), Code> {
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                if index == 0 {
                    return Err(Code::Compression);
                }
                pseudo_in_trailers(trailers, index)?;
            } else if first & 0xe0 == 0x20 {
                integer(&mut block, 5)?;
            } else {
                let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
                let index = integer(&mut block, prefix)?;
                if index == 0 {
                    let (huffman, name) = string(&mut block)?;
                    if trailers && !huffman && name.first() == Some(&b':') {
                        return Err(Code::Protocol);
                    }
                } else {
                    pseudo_in_trailers(trailers, index)?;
                }
                string(&mut block)?;
            }
        }
        Ok(())
    }

    fn pseudo_in_trailers(trailers: bool, index: u64) -> Result<(), Code> {
        if trailers && index <= LAST_PSEUDO_INDEX {
            Err(Code::Protocol)
        } else {
            Ok(())
        }
    }

    /// An HPACK integer with a `prefix`-bit prefix (RFC 7541 §5.1).
    fn integer(block: &mut &[u8], prefix: u32) -> Result<u64, Code> {
        let (&first, rest) = block.split_first().ok_or(Code::Compression)?;
        *block = rest;
        let max = (1u64 << prefix) - 1;
        let mut value = u64::from(first) & max;
        if value < max {
            return Ok(value);
        }
        for shift in (0..35).step_by(7) {
            let (&byte, rest) = block.split_first().ok_or(Code::Compression)?;
            *block = rest;
            value += u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Code::Compression)
    }

    /// An HPACK string literal: (Huffman-coded, bytes).
    fn string<'a>(block: &mut &'a [u8]) -> Result<(bool, &'a [u8]), Code> {
        let huffman = block.first().ok_or(Code::Compression)? & 0x80 != 0;
        let len = usize::try_from(integer(block, 7)?).map_err(|_| Code::Compression)?;
        if block.len() < len {
            return Err(Code::Compression);
        }
        let (bytes, rest) = block.split_at(len);
        *block = rest;
        Ok((huffman, bytes))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Frames before a broken one still reach hyper.
            if this.pass > this.start {
                let n = (this.pass - this.start).min(out.remaining());
                out.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                return Poll::Ready(Ok(()));
            }
            if this.failure.is_some() {
                if !this.outbound.at_boundary() {
                    // hyper is mid-frame: the GOAWAY goes after it (see poll_write).
                    this.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                return match this.poll_goaway(cx) {
                    // End of stream for hyper: the connection is over.
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
            if let Err(code) = this.scan() {
                this.fail(code);
                continue;
            }
            if this.pass > this.start {
                continue;
            }
            if this.eof {
                // Whatever is left is an incomplete frame: hyper reports it.
                this.pass = this.end;
                if this.pass > this.start {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            this.compact();
            let mut read = ReadBuf::new(&mut this.buf[this.end..]);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        this.eof = true;
                    }
                    this.end += n;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<I> H2Guard<I> {
    /// Moves the unread bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.pass -= self.start;
            self.start = 0;
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H2Guard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut limit = buf.len();
        if this.failure.is_some() {
            if this.outbound.at_boundary() {
                // After the GOAWAY nothing more reaches the client.
                if let Some(waker) = this.read_waker.take() {
                    waker.wake();
                }
                return Poll::Ready(Ok(buf.len()));
            }
            limit = limit.min(this.outbound.to_boundary());
        }
        let written = Pin::new(&mut this.io).poll_write(cx, &buf[..limit]);
        if let Poll::Ready(Ok(n)) = written {
            this.outbound.observe(&buf[..n]);
            if this.failure.is_some() && this.outbound.at_boundary() {
                if let Some(waker) = this.read_waker.take() {
                    waker.wake();
                }
            }
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failure.is_some() {
            // Byte-exact path to the frame boundary.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                let take = n.min(buf.len());
                this.outbound.observe(&buf[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let goaway_due = this.failure.is_some() && this.outbound.at_boundary();
        if goaway_due && this.poll_goaway(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// An HTTP/2 request RFC 9113 §8 calls malformed that `h2` lets through:
/// CONNECT without `:authority`, a `Host` naming another authority than
/// `:authority`, a field value with leading or trailing whitespace.
pub fn malformed_request<B>(req: &http::Request<B>) -> bool {
    let authority = req.uri().authority();
    if req.method() == http::Method::CONNECT && authority.is_none() {
        return true;
    }
    if let (Some(authority), Some(host)) = (authority, req.headers().get(http::header::HOST)) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return true;
        }
    }
    req.headers().values().any(|value| {
        let bytes = value.as_bytes();
        let blank = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        blank(bytes.first()) || blank(bytes.last())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_literal_is_a_compression_error() {
        assert_eq!(hpack::check(b"\x40", false), Err(Code::Compression));
        assert_eq!(hpack::check(b"\x80", false), Err(Code::Compression));
        assert_eq!(hpack::check(b"\x82\x86\x84", false), Ok(()));
    }

    #[test]
    fn pseudo_header_in_trailers_is_a_protocol_error() {
        // `:method: POST` from the static table.
        assert_eq!(hpack::check(b"\x83", true), Err(Code::Protocol));
        assert_eq!(hpack::check(b"\x83", false), Ok(()));
        // A literal `:foo: x` with a new name.
        assert_eq!(
            hpack::check(b"\x00\x04:foo\x01x", true),
            Err(Code::Protocol)
        );
        // A regular trailer, `grpc-status: 0` as a literal.
        assert_eq!(hpack::check(b"\x00\x0bgrpc-status\x010", true), Ok(()));
    }

    #[test]
    fn malformed_requests() {
        let req = |host: &str, value: &str| {
            http::Request::get("http://a.test/")
                .header("host", host)
                .header("x", value)
                .body(())
                .unwrap()
        };
        assert!(!malformed_request(&req("a.test", "v")));
        assert!(malformed_request(&req("b.test", "v")));
        assert!(malformed_request(&req("a.test", " v")));
        assert!(malformed_request(&req("a.test", "v\t")));
    }

    #[tokio::test]
    async fn short_ping_ends_the_connection_with_goaway_frame_size() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(1024);
        let mut guard = H2Guard::new(server, Http2Settings::default());
        let (mut from_proxy, mut to_proxy) = tokio::io::split(client);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        to_proxy.write_all(preface).await.unwrap();
        // PING with 7 bytes of payload instead of 8.
        to_proxy
            .write_all(&[0, 0, 7, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
            .await
            .unwrap();
        let mut seen = [0u8; 64];
        let n = guard.read(&mut seen).await.unwrap();
        assert_eq!(&seen[..n], preface);
        assert_eq!(
            guard.read(&mut seen).await.unwrap(),
            0,
            "hyper sees the end"
        );
        let mut goaway = [0u8; 17];
        from_proxy.read_exact(&mut goaway).await.unwrap();
        assert_eq!(&goaway[..4], &[0, 0, 8, 7]);
        assert_eq!(&goaway[13..], &[0, 0, 0, 6], "FRAME_SIZE_ERROR");
    }

    #[test]
    fn outbound_tracks_frame_boundaries() {
        let mut out = Outbound::default();
        // A DATA frame of 3 bytes on stream 1, written in two pieces.
        out.observe(&[0, 0, 3, 0, 1, 0, 0, 0]);
        assert!(!out.at_boundary());
        out.observe(&[1, b'a']);
        assert_eq!(out.to_boundary(), 2);
        out.observe(b"bc");
        assert!(out.at_boundary());
        assert_eq!(out.data_frames, 1);
    }
}
