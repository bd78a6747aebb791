//! Layers as shared functions: every layer clones its inner service once per
//! request (tower's `oneshot` needs an owned service), and a boxed
//! `service_fn` clone copies its closure, which holds the next layer's boxed
//! service, which clones its own closure, and so on down the stack: one
//! allocation and a few reference-count increments per layer *below* it, for
//! every layer, on every request. [`shared_fn`] puts the closure behind an
//! `Arc`, so a clone is one allocation and one increment, however deep the
//! stack. Chosen by measurement (bench/callgrind, see bench/README.md).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::Service;

use super::{Body, HttpService};
use crate::BoxError;

/// An [`HttpService`] from an async function of the request, always ready,
/// cheap to clone (see the module doc). A drop-in for
/// `BoxCloneSyncService::new(tower::service_fn(f))` where `f` is `Fn`.
pub fn shared_fn<F, Fut>(f: F) -> HttpService
where
    F: Fn(Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    BoxCloneSyncService::new(SharedFn(Arc::new(f)))
}

/// The service behind [`shared_fn`].
struct SharedFn<F>(Arc<F>);

impl<F> Clone for SharedFn<F> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<F, Fut> Service<Request<Body>> for SharedFn<F>
where
    F: Fn(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Fut {
        (self.0)(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

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
