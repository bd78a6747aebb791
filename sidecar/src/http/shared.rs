//! [`HttpService`], what every layer of an HTTP stack is: a shared
//! function from request to boxed response future. Calling it needs only
//! `&self` ([`HttpService::call_ref`]), and a clone is one reference-count
//! increment. tower's boxed service (the earlier shape) needed an owned
//! service per call, so every layer cloned the next one once per request:
//! a boxed clone, an allocation, per layer, on every request; before that,
//! a boxed `service_fn` also copied its closure, and the one below, all the
//! way down. Chosen by measurement (bench/callgrind, see bench/README.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::Body;
use crate::BoxError;

/// A response on its way.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

type Handler = dyn Fn(Request<Body>) -> ResponseFuture + Send + Sync;

/// What every layer of an HTTP stack is, boxed at module seams: always
/// ready, cheap to clone, callable through a shared reference.
#[derive(Clone)]
pub struct HttpService(Arc<Handler>);

impl HttpService {
    /// Any tower service of the stack's shape; cloned per call, as tower
    /// wants an owned, ready service (for services not written as a
    /// function of the request: tower's own layers, tests).
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self(Arc::new(move |req| Box::pin(service.clone().oneshot(req))))
    }

    /// Sends `req` through the service.
    pub fn call_ref(&self, req: Request<Body>) -> ResponseFuture {
        (self.0)(req)
    }
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpService")
    }
}

impl Service<Request<Body>> for HttpService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        (self.0)(req)
    }
}

/// An [`HttpService`] from a function that returns the response future
/// itself, boxed: a layer that passes most requests on untouched returns
/// the next layer's future as is (`inner.call_ref(req)`), with no box and
/// no poll of its own on that path (~700 instructions a layer, measured);
/// its other paths box their own future.
pub fn direct_fn<F>(f: F) -> HttpService
where
    F: Fn(Request<Body>) -> ResponseFuture + Send + Sync + 'static,
{
    HttpService(Arc::new(f))
}

/// An answer already known, as a response future.
pub fn ready(result: Result<Response<Body>, BoxError>) -> ResponseFuture {
    Box::pin(std::future::ready(result))
}

/// An [`HttpService`] from an async function of the request.
pub fn shared_fn<F, Fut>(f: F) -> HttpService
where
    F: Fn(Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    HttpService(Arc::new(move |req| Box::pin(f(req))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_one_function_and_answer() {
        let svc = shared_fn(|req: Request<Body>| async move {
            Ok(Response::new(super::super::full(
                req.uri().path().to_owned(),
            )))
        });
        let clone = svc.clone();
        let res = clone
            .oneshot(
                Request::builder()
                    .uri("/x")
                    .body(super::super::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"/x");
        drop(svc);
    }
}
