//! The connections API for backends on the edge listeners:
//! `POST /@connections/{id}` (the body becomes a message: text for
//! `text/*` and JSON content types, binary otherwise), `GET` (the
//! connection's info) and `DELETE` (closes it with 1000, or `?code=`
//! (1000, 3000-4999) and `?reason=`). Sits above the route layer, so
//! `/@connections/` never reaches the routes.
//!
//! Authentication: a bearer token (`Authorization: Bearer ..`) or a
//! verified mTLS peer identity listed in a bridge route's
//! `connections_api` (any bridge route of the running config). No
//! credentials: 401; credentials no bridge route accepts, or no
//! `connections_api` at all: 403.
//!
//! A connection held by another replica is found and reached through
//! Redis ([`super::redis`]); an unknown or closed ID answers 410, Redis
//! down 503.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tower::layer::layer_fn;
use tower::Layer;

use super::redis::{RedisLink, Remote};
use super::registry::{hub, CloseRequest, Delivery};
use super::{sha256, ApiAuth};
use crate::config::Settings;
use crate::edge::action::RouteAction;
use crate::http::{Body, ConnInfo, HttpService};
use crate::route::RouteTable;

/// The path prefix of the API.
pub const PREFIX: &str = "/@connections/";
/// Largest message body a push may carry.
const MAX_PUSH: usize = 1 << 20;

/// Answers `/@connections/{id}` before the routes see it.
pub fn connections_layer(
    routes: Arc<ArcSwap<RouteTable>>,
    settings: Arc<ArcSwap<Settings>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let routes = routes.clone();
        let settings = settings.clone();
        crate::http::direct_fn(move |req: Request<Body>| {
            if !req.uri().path().starts_with(PREFIX) {
                return inner.call_ref(req);
            }
            let routes = routes.clone();
            let settings = settings.clone();
            Box::pin(async move {
                let table = routes.load_full();
                Ok(serve(&table, &settings, req).await)
            })
        })
    })
}

/// A JSON answer.
fn answer(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(crate::http::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error answer with its `x-mesh-error` reason.
fn refuse(status: StatusCode, reason: &'static str) -> Response<Body> {
    let body = json!({ "error": { "status": status.as_u16(), "reason": reason } });
    let mut response = answer(status, &body);
    response
        .headers_mut()
        .insert("x-mesh-error", HeaderValue::from_static(reason));
    response
}

async fn serve(
    table: &RouteTable,
    settings: &ArcSwap<Settings>,
    req: Request<Body>,
) -> Response<Body> {
    if let Some(refusal) = refusal(table, &req) {
        return refusal;
    }
    let id = req.uri().path()[PREFIX.len()..].to_string();
    if id.is_empty() || id.contains('/') {
        return refuse(StatusCode::NOT_FOUND, "no_route");
    }
    let redis = hub().redis(settings);
    match req.method().clone() {
        Method::POST => push(&id, req, redis.as_deref()).await,
        Method::GET => info(&id, redis.as_deref()).await,
        Method::DELETE => match close_request(req.uri().query()) {
            Ok(request) => close(&id, request, redis.as_deref()).await,
            Err(refusal) => refusal,
        },
        _ => {
            let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            let allow = HeaderValue::from_static("GET, POST, DELETE");
            response.headers_mut().insert(ALLOW, allow);
            response
        }
    }
}

/// `None` for a caller any bridge route's `connections_api` accepts;
/// the refusal otherwise.
fn refusal(table: &RouteTable, req: &Request<Body>) -> Option<Response<Body>> {
    let auths: Vec<&ApiAuth> = table
        .edge_routes()
        .routes()
        .iter()
        .filter_map(|route| match &route.action {
            RouteAction::WebsocketBridge(bridge) if bridge.api.enabled => Some(&bridge.api),
            _ => None,
        })
        .collect();
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|token| sha256(token.trim().as_bytes()));
    let peer = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|conn| conn.peer_identity.clone());
    let admitted = auths.iter().any(|auth| {
        let by_token =
            token.is_some_and(|hash| auth.token_hashes.iter().any(|h| constant_eq(h, &hash)));
        let by_identity = peer
            .as_ref()
            .is_some_and(|peer| auth.identities.iter().any(|id| id == peer));
        by_token || by_identity
    });
    if admitted {
        return None;
    }
    if token.is_none() && peer.is_none() {
        let mut response = refuse(StatusCode::UNAUTHORIZED, "unauthenticated");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(response);
    }
    Some(refuse(StatusCode::FORBIDDEN, "forbidden"))
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The pushed body as a message: text for text and JSON content types
/// (and none), binary otherwise.
fn message_of(content_type: Option<&HeaderValue>, body: Bytes) -> Option<Message> {
    let textual = content_type
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .is_none_or(|ct| {
            ct.starts_with("text/") || ct.starts_with("application/json") || ct.contains("+json")
        });
    if !textual {
        return Some(Message::Binary(body));
    }
    String::from_utf8(body.to_vec()).ok().map(Message::text)
}

/// Redis failures as answers.
fn unavailable() -> Response<Body> {
    refuse(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable")
}

fn gone() -> Response<Body> {
    refuse(StatusCode::GONE, "connection_gone")
}

async fn push(id: &str, req: Request<Body>, redis: Option<&RedisLink>) -> Response<Body> {
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let body = match Limited::new(req.into_body(), MAX_PUSH).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    };
    let Some(message) = message_of(content_type.as_ref(), body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad_request");
    };
    let hub = hub();
    if let Some(handle) = hub.get(id) {
        return match handle.send(message, &hub.metrics) {
            Delivery::Queued => answer(StatusCode::OK, &json!({ "delivered": true })),
            Delivery::Gone | Delivery::SlowReader => gone(),
        };
    }
    let Some(redis) = redis else { return gone() };
    match redis.lookup(id).await {
        Err(_) => unavailable(),
        Ok(None) => gone(),
        Ok(Some((owner, _))) => match redis.send(&owner, id, Remote::Push(message)).await {
            Ok(true) => answer(StatusCode::OK, &json!({ "delivered": true })),
            Ok(false) => gone(),
            Err(_) => unavailable(),
        },
    }
}

async fn info(id: &str, redis: Option<&RedisLink>) -> Response<Body> {
    if let Some(handle) = hub().get(id) {
        return answer(StatusCode::OK, &handle.record.info());
    }
    let Some(redis) = redis else { return gone() };
    match redis.lookup(id).await {
        Err(_) => unavailable(),
        Ok(None) => gone(),
        Ok(Some((_, info))) => answer(StatusCode::OK, &info),
    }
}

/// The close code and reason a `DELETE` asks for.
#[allow(clippy::result_large_err)]
fn close_request(query: Option<&str>) -> Result<CloseRequest, Response<Body>> {
    let mut request = CloseRequest {
        code: 1000,
        reason: String::new(),
    };
    for (name, value) in crate::edge::matcher::query_pairs(query) {
        match &*name {
            "code" => match value.parse::<u16>() {
                Ok(code) if code == 1000 || (3000..5000).contains(&code) => request.code = code,
                _ => return Err(refuse(StatusCode::BAD_REQUEST, "bad_close_code")),
            },
            "reason" if value.len() <= 123 => request.reason = value.to_string(),
            _ => {}
        }
    }
    Ok(request)
}

async fn close(id: &str, request: CloseRequest, redis: Option<&RedisLink>) -> Response<Body> {
    if hub().close(id, request.clone()) {
        return answer(StatusCode::OK, &json!({ "closed": true }));
    }
    let Some(redis) = redis else { return gone() };
    match redis.lookup(id).await {
        Err(_) => unavailable(),
        Ok(None) => gone(),
        Ok(Some((owner, _))) => match redis.send(&owner, id, Remote::Close(request)).await {
            Ok(true) => answer(StatusCode::OK, &json!({ "closed": true })),
            Ok(false) => gone(),
            Err(_) => unavailable(),
        },
    }
}
