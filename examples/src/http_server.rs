//! The hyper accept loop shared by `demo-rest` and `demo-ws`: every accepted
//! TCP connection is served by hyper-util's auto builder (HTTP/1.1 with
//! upgrades, or h2c with prior knowledge) in its own task. On SIGTERM/SIGINT
//! it stops accepting, lets in-flight requests finish for up to
//! [`DRAIN_DEADLINE`], then returns. Also the response helpers both share.
//! Errors: none; accept and connection errors are logged and skipped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::lifecycle::{shutdown_signal, DRAIN_DEADLINE};

/// Response body type of the hyper demos: a streamed request body (echo) or
/// bytes produced by the service.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Serves connections from `listener` until a shutdown signal, then drains.
/// `make_service` is called once per accepted connection with the peer address.
pub async fn serve<M, S>(listener: TcpListener, mut make_service: M)
where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), make_service(peer))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection closed with an error");
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(deadline = ?DRAIN_DEADLINE, "drain deadline passed, dropping open connections");
    }
}

/// A body from bytes the service produced.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, TEXT_PLAIN, full(body))
}

/// An `application/json` response; a value that cannot be serialized becomes a
/// plain 500.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(
            status,
            HeaderValue::from_static("application/json"),
            full(bytes),
        ),
        Err(error) => {
            tracing::error!(%error, "response does not serialize to JSON");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "response does not serialize to JSON",
            )
        }
    }
}

/// Content type of the plain-text responses.
pub const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A response with this status, content type and body.
pub fn respond(status: StatusCode, content_type: HeaderValue, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}
