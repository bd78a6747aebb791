//! Inbound: callers reach the local app through us.

use tower::ServiceBuilder;

use super::Runtime;
use crate::http::{hygiene, HttpService};
use crate::route::RouteKind;
use crate::telemetry::Direction;
use crate::{errors, forward, overload, policy, resilience, route, telemetry, translate};

/// The inbound HTTP stack.
pub fn inbound(rt: &Runtime) -> HttpService {
    ServiceBuilder::new()
        .layer(telemetry::layer(rt, Direction::Inbound)) // see every request, even rejected ones
        .layer(errors::layer()) // every failure below becomes the status the caller sees
        .layer(overload::layer()) // over an overload: threshold, new requests get 503 before any work
        .layer(hygiene::layer(rt.settings.clone())) // smuggling shapes, path normalisation, limits: before policy and routing
        .layer(translate::grpc_web::layer()) // browsers' gRPC-Web calls become gRPC
        .layer(translate::grpc_json::inbound_layer(rt.settings.clone())) // REST/JSON callers become gRPC calls, so authz sees gRPC methods
        .layer(policy::layer(rt.settings.clone())) // verified caller identity to the app; authz before anything is sent
        .layer(route::layer(rt.routes.clone(), RouteKind::Inbound)) // the local app, with the caller's authority
        .layer(resilience::layer(rt.metrics.clone())) // breaker limits, deadline, retries within budget: above the balancer, so a retry may pick another endpoint
        .service(forward::service(rt.metrics.clone())) // pooled connection to the app; upgrades spliced
}
