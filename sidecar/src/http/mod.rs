//! HTTP plumbing shared by every stack: the body and service types, serving
//! one downstream connection (HTTP/1.1 with upgrades, or HTTP/2), and request
//! hygiene (hop-by-hop headers, malformed requests).
//! Errors: [`RequestError`] for requests the proxy refuses to forward (400).

mod h1;
mod h2guard;
pub mod hygiene;
mod park;
mod serve;
mod shared;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

use crate::BoxError;

pub(crate) use h1::{first_head, head_end};
pub use serve::serve;
pub use shared::{direct_fn, ready, shared_fn, HttpService, ResponseFuture};

/// The rest of a parked HTTP/1 connection's life (see [`serve`]): waiting
/// for its next request with nothing but the socket, serving it, parking
/// again. Small, and apart from whatever its caller held for serving.
pub type Parked = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Every body the proxy moves: streamed, never buffered whole.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A body's failure (an upstream reset, a client gone). A concrete type
/// rather than a boxed trait object in `Body`, so request and response
/// types name no trait-object lifetime (which async blocks cannot prove
/// `Send` for).
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// `body`, holding `guard` until it is dropped: a count or a slot that
    /// lasts as long as the response is being sent.
    pub struct Holding<B, G> {
        #[pin]
        body: B,
        _guard: G,
    }
}

impl<B, G> Holding<B, G> {
    /// `body`, holding `guard`.
    pub fn new(body: B, guard: G) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body, G> http_body::Body for Holding<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|err| BodyError(err.into())).boxed_unsync()
}

/// What the connection knows about its client, handed to every request on it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The caller's SPIFFE ID, verified by mutual TLS.
    pub peer_identity: Option<std::sync::Arc<str>>,
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
    /// Where the client meant to connect, for connections redirected to the
    /// transparent listener (`SO_ORIGINAL_DST`).
    pub original_dst: Option<std::net::SocketAddr>,
    /// The client's connection is TLS this proxy terminated (edge HTTPS,
    /// or mesh mTLS): `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// The TLS server name (SNI) the client asked for.
    pub server_name: Option<std::sync::Arc<str>>,
    /// The listener's name on metrics and in the access log.
    pub listener: Option<std::sync::Arc<str>>,
}

/// What every request gets as it arrives, whichever server read it.
fn admit<B>(req: &mut Request<B>, conn: &std::sync::Arc<ConnInfo>) {
    crate::busy_poll::note_request();
    req.extensions_mut().insert(ConnInfo::clone(conn));
}

/// A request the proxy refuses before routing.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// HTTP/1.1 requires a Host header (RFC 9112 §3.2).
    #[error("request has no Host header")]
    MissingHost,
    /// More than one Host header: ambiguous target.
    #[error("request has more than one Host header")]
    DuplicateHost,
    /// Host header that is not a valid authority.
    #[error("request has an invalid Host header")]
    InvalidHost,
}

/// True for `application/grpc` and its `+proto` / `+json` variants.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Writes at most this many bytes split over several buffers as one.
const COALESCE_UP_TO: usize = 8 * 1024;

/// A vectored write of a few small buffers (a response head and a short
/// body, as hyper queues them) copied into one and written with `write`;
/// larger writes go as they are, without the copy. One buffer through
/// `write` costs the kernel less than two through `writev` (measured:
/// ~0.4 µs of system time per HTTP/1.1 response, bench/README.md).
pub fn poll_write_coalesced<W: tokio::io::AsyncWrite + ?Sized>(
    io: std::pin::Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    bufs: &[std::io::IoSlice<'_>],
) -> std::task::Poll<std::io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if bufs.len() < 2 || total > COALESCE_UP_TO {
        return io.poll_write_vectored(cx, bufs);
    }
    thread_local! {
        /// Kept between writes: the copy costs only the bytes copied.
        static JOINED: std::cell::RefCell<Vec<u8>> =
            std::cell::RefCell::new(Vec::with_capacity(COALESCE_UP_TO));
    }
    JOINED.with(|joined| {
        let mut joined = joined.borrow_mut();
        joined.clear();
        for buf in bufs {
            joined.extend_from_slice(buf);
        }
        io.poll_write(cx, &joined)
    })
}

/// An HTTP/1 request asking to switch protocols (WebSocket and the like).
pub fn is_upgrade(req: &Request<Body>) -> bool {
    req.version() <= Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), token.as_bytes()))
}

/// Whether the comma-separated field value `value` lists `token` (any case).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The authority a request is for: `Host`, else the URI's authority.
/// Refuses requests whose target is missing or ambiguous.
pub fn authority(req: &Request<Body>) -> Result<http::uri::Authority, RequestError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::DuplicateHost);
    }
    match (host, req.uri().authority()) {
        // An absolute-form target wins over Host (RFC 9112 §3.2.2).
        (_, Some(authority)) => Ok(authority.clone()),
        (Some(host), None) => parse_host(host).ok_or(RequestError::InvalidHost),
        (None, None) => Err(RequestError::MissingHost),
    }
}

/// `host` as an authority. A `Host` value parses the same every time, and
/// most requests a thread serves name the same host: the last one parsed
/// on this thread is kept with its authority, whose clone is a reference
/// count (a parse copies and validates the value: ~500 instructions).
fn parse_host(host: &HeaderValue) -> Option<http::uri::Authority> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Box<[u8]>, http::uri::Authority)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((bytes, authority)) = last.as_ref() {
            if **bytes == *host.as_bytes() {
                return Some(authority.clone());
            }
        }
        let authority: http::uri::Authority = host.to_str().ok()?.parse().ok()?;
        *last = Some((host.as_bytes().into(), authority.clone()));
        Some(authority)
    })
}

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1).
/// (`Trailer` is not one: it announces end-to-end trailer fields, and
/// hyper sends an HTTP/1 response's trailers only when it names them.)
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
];

/// Whether `name` is one [`strip_hop_by_hop`] may remove or rewrite.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TE || name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers, and every header the `Connection` header
/// names. `TE: trailers` survives (gRPC needs it); `Upgrade` survives when
/// `keep_upgrade` (the proxy is forwarding an upgrade).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Fast path (most requests and responses): nothing to strip or rewrite.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records how it was written to (a writer whose calls are the point).
    #[derive(Default)]
    struct Recording {
        writes: Vec<Vec<u8>>,
        vectored: Vec<Vec<Vec<u8>>>,
    }

    impl tokio::io::AsyncWrite for Recording {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.vectored
                .push(bufs.iter().map(|b| b.to_vec()).collect());
            std::task::Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn write_coalesced(io: &mut Recording, bufs: &[&[u8]]) -> usize {
        let slices: Vec<_> = bufs.iter().map(|b| std::io::IoSlice::new(b)).collect();
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match poll_write_coalesced(std::pin::Pin::new(io), &mut cx, &slices) {
            std::task::Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_head_and_a_short_body_are_written_as_one_buffer() {
        let mut io = Recording::default();
        let n = write_coalesced(&mut io, &[b"HTTP/1.1 200 OK\r\n\r\n", b"ok"]);
        assert_eq!(n, 21);
        assert_eq!(io.writes, [b"HTTP/1.1 200 OK\r\n\r\nok".to_vec()]);
        assert!(io.vectored.is_empty());
    }

    #[test]
    fn large_or_single_buffers_are_written_as_they_are() {
        let mut io = Recording::default();
        let big = vec![7u8; COALESCE_UP_TO];
        assert_eq!(
            write_coalesced(&mut io, &[b"head", &big]),
            COALESCE_UP_TO + 4
        );
        assert_eq!(write_coalesced(&mut io, &[b"one"]), 3);
        assert!(io.writes.is_empty(), "no copy");
        assert_eq!(io.vectored.len(), 2);
        assert_eq!(io.vectored[0][1].len(), COALESCE_UP_TO);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::UPGRADE).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn keeps_upgrade_when_forwarding_one() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn authority_refuses_ambiguous_targets() {
        let req = Request::builder()
            .uri("/")
            .header("host", "a")
            .header("host", "b")
            .body(empty())
            .unwrap();
        assert!(matches!(authority(&req), Err(RequestError::DuplicateHost)));
        let req = Request::builder().uri("/").body(empty()).unwrap();
        assert!(matches!(authority(&req), Err(RequestError::MissingHost)));
        let req = Request::builder()
            .uri("http://orders:80/x")
            .header("host", "web")
            .body(empty())
            .unwrap();
        assert_eq!(authority(&req).unwrap().as_str(), "orders:80");
    }

    #[test]
    fn each_host_gets_its_own_authority_whatever_came_before() {
        let with_host = |host: &str| {
            Request::builder()
                .uri("/")
                .header("host", host)
                .body(empty())
                .unwrap()
        };
        for host in ["a.test:8080", "a.test:8080", "b.test", "a.test:8080"] {
            assert_eq!(authority(&with_host(host)).unwrap().as_str(), host);
        }
        assert!(matches!(
            authority(&with_host("bad host")),
            Err(RequestError::InvalidHost)
        ));
        assert_eq!(authority(&with_host("b.test")).unwrap().as_str(), "b.test");
    }
}
