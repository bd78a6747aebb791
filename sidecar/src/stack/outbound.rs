//! Outbound: the local app calls another service through us, on the
//! upstream's own port or through the HTTP forward proxy.

use tower::ServiceBuilder;

use super::Runtime;
use crate::http::{hygiene, HttpService};
use crate::route::RouteKind;
use crate::telemetry::Direction;
use crate::{errors, forward, overload, resilience, route, telemetry, translate};

/// The outbound HTTP stack of a listener routing by `kind`.
pub fn outbound(rt: &Runtime, kind: RouteKind) -> HttpService {
    ServiceBuilder::new()
        .layer(telemetry::layer(rt, Direction::Outbound)) // see every request, even rejected ones
        .layer(errors::layer()) // every failure below becomes the status the caller sees
        .layer(overload::layer()) // over an overload: threshold, new requests get 503 before any work
        .layer(hygiene::layer(rt.settings.clone())) // smuggling shapes, path normalisation, limits: before policy and routing
        .layer(route::layer(rt.routes.clone(), kind)) // pick the upstream cluster (port, or authority)
        .layer(translate::grpc_json::reverse::layer()) // gRPC callers of a `grpc_bridge` upstream: the call as REST
        .layer(resilience::layer(rt.metrics.clone())) // breaker limits, deadline, retries within budget: above the balancer, so a retry may pick another endpoint
        .service(forward::service(rt.metrics.clone())) // balance over endpoints, pooled connection, upgrades and CONNECT
}
