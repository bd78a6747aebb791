//! Edge: public clients reach the mesh through us.

use tower::ServiceBuilder;

use super::Runtime;
use crate::http::{hygiene, HttpService};
use crate::telemetry::Direction;
use crate::{edge, errors, forward, overload, policy, resilience, telemetry, translate};

/// The edge HTTP stack.
pub fn edge(rt: &Runtime) -> HttpService {
    ServiceBuilder::new()
        .layer(telemetry::layer(rt, Direction::Edge)) // see every request, even rejected ones
        .layer(errors::layer()) // every failure below becomes the status the caller sees
        .layer(overload::layer()) // over an overload: threshold, new requests get 503 before any work
        .layer(hygiene::layer(rt.settings.clone())) // smuggling shapes, path normalisation, limits: before anything reads the request
        .layer(edge::front_layer(rt.settings.clone())) // the client's address (trusted proxies), X-Forwarded-*, Forwarded, X-Request-Id
        .layer(translate::ws_bridge::connections_layer(
            rt.routes.clone(),
            rt.settings.clone(),
        )) // /@connections/{id}: the bridge's connections API for backends, before route matching
        .layer(edge::route_layer(rt.routes.clone())) // first matching route: allow / deny, encoded slashes, redirects; response header changes
        .layer(edge::cors::layer()) // preflights answered before authentication (they carry no credentials); CORS response headers
        .layer(policy::auth::layer()) // the route's authenticators (JWT, API keys, introspection, external) and requirements
        .layer(policy::rate_limit::layer()) // the route's limits, keyed by consumer, claim, client, header: after auth names the caller
        .layer(translate::grpc_web::layer()) // browsers' gRPC-Web calls become gRPC, answers go back with trailers in the body
        .layer(edge::compress::layer(rt.settings.clone())) // the route's response compression (Accept-Encoding) and request decompression
        .layer(edge::cache::layer(rt.routes.clone())) // the route's response cache: after auth and limits, so a hit never skips them
        .layer(edge::transform::layer()) // the route's body transformation: XML / SOAP ↔ JSON, JSON reshaping
        .layer(translate::grpc_json::edge_layer()) // the route's REST/JSON ↔ gRPC transcoding
        .layer(translate::ws_bridge::layer(rt.settings.clone())) // bridge routes: WebSocket clients held here, messages become REST calls through the layers below
        .layer(translate::rest_ws::layer()) // the route's requests sent as messages over pooled WebSocket connections
        .layer(edge::aggregate::layer()) // aggregate routes: one call per part through the layers below, merged
        .layer(edge::dispatch_layer()) // the route's body limit, rewrites, request header changes, upstream (weighted split)
        .layer(resilience::layer(rt.metrics.clone())) // breaker limits, deadline, retries within budget: above the balancer
        .service(forward::service(rt.metrics.clone())) // balance over endpoints, pooled connection (mTLS into the mesh, or public TLS), upgrades
}
