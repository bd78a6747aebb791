//! Serving one downstream connection whose protocol detection already chose
//! HTTP/1 or HTTP/2. On drain the connection is shut down gracefully:
//! HTTP/1 finishes the request in flight then closes, HTTP/2 sends GOAWAY and
//! lets open streams finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

use super::{boxed, Body, ConnInfo, HttpService};
use crate::config::LimitSettings;
use crate::errors;

/// Serves HTTP on `io` with `service` until the client leaves or `drain` fires.
pub async fn serve<I>(
    io: I,
    version: Version,
    service: HttpService,
    drain: CancellationToken,
    conn: ConnInfo,
    limits: &LimitSettings,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
        let service = service.clone();
        async move { Ok::<_, Infallible>(call(service, req.map(boxed)).await) }
    });
    let io = TokioIo::new(io);
    let result = if version == Version::HTTP_2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let conn = builder.serve_connection(io, hyper_service);
        until_drained(conn, &drain, |conn| conn.graceful_shutdown()).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers);
        let conn = builder.serve_connection(io, hyper_service).with_upgrades();
        until_drained(conn, &drain, |conn| conn.graceful_shutdown()).await
    };
    if let Err(err) = result {
        debug!(error = %err, "downstream connection ended with an error");
    }
}

/// Drives `conn` to its end; once `drain` fires, asks it to finish what is
/// in flight and close.
async fn until_drained<C>(
    conn: C,
    drain: &CancellationToken,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = drain.cancelled() => {
            graceful_shutdown(conn.as_mut());
            conn.await
        }
    }
}

/// The stack never fails a request outright: its last word is a response.
async fn call(service: HttpService, req: Request<Body>) -> Response<Body> {
    let grpc = super::is_grpc(req.headers());
    match service.oneshot(req).await {
        Ok(response) => response,
        Err(err) => errors::response(&err, grpc),
    }
}
