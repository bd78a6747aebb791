//! The admin API: JSON over HTTP/1.1 on its own port, for operators,
//! balancers (`/ready`) and `mesh-ctl`. Never on the data path.
//!
//! | path | answers |
//! |---|---|
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200, or 503 once draining |
//! | `GET /config` | effective config, generation, last reload error |
//! | `POST /config/reload` | reloads now: 200, or 400 with the errors |
//! | `GET /listeners` | every listener, configured and bound address |
//! | `GET /clusters` | every cluster and its endpoints |
//! | `POST` / `DELETE /clusters/{c}/endpoints/{addr}/maintenance` | drain an endpoint (no new requests) / put it back |
//! | `GET /certs` | the workload identity and its certificate (404 without one) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /version` | build version |
//! | `GET /status` | mode, service, version, uptime, config hash, generation, identity, readiness |
//! | `GET /routes` | the edge routes, or a sidecar's listeners and hosts |
//! | `GET /connections` | the WebSocket bridge's open connections on this process ([`connections`]) |
//! | `POST /explain` | what the proxy would do with a request, nothing sent ([`explain`]) |
//! | `GET /tap` | live request metadata as NDJSON ([`tap`]) |
//! | `GET /cache` | the edge response cache: entries, bytes, hits, misses (`?entries=N` lists entries) ([`cache`]) |
//! | `POST /cache/purge` | removes cached responses by `key` or path `prefix` (JSON body or query) |
//! | `GET /rate_limits`, `GET /quotas` | edge limits; with `?key=` (once per key part) or `?consumer=`, the bucket's remaining count (Redis for global limits) |
//! | `GET /dashboard`, `GET /dashboard/data` | with `admin.dashboard: true`: the dashboard page and this proxy's golden signals (`dashboard.rs`) |

mod cache;
mod connections;
mod explain;
mod status;
mod tap;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_api::admin::VersionInfo;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, Instrument};

use crate::app::App;
use crate::http::{full, Body};

mod dashboard;

/// When the admin API started serving: the proxy's start, for `uptime_seconds`.
static STARTED: OnceLock<std::time::Instant> = OnceLock::new();

/// Largest `POST /explain` body.
const MAX_EXPLAIN_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    STARTED.get_or_init(std::time::Instant::now);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!(error = %err, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req).await) }
        });
        tokio::spawn(
            async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(err) = conn.await {
                    debug!(error = %err, "admin connection failed");
                }
            }
            .instrument(tracing::debug_span!("admin_conn")),
        );
    }
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    if let Some((cluster, endpoint)) = maintenance_target(req.uri().path()) {
        let on = match *req.method() {
            Method::POST => true,
            Method::DELETE => false,
            _ => {
                return json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({ "error": "use POST or DELETE" }),
                )
            }
        };
        return match app.set_maintenance(cluster, endpoint, on) {
            Ok(()) => json(
                StatusCode::OK,
                &serde_json::json!({ "cluster": cluster, "endpoint": endpoint, "maintenance": on }),
            ),
            Err(error) => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": error }),
            ),
        };
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => json(StatusCode::OK, &serde_json::json!({ "live": true })),
        (&Method::GET, "/ready") => {
            let ready = app.is_ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &serde_json::json!({ "ready": ready }))
        }
        (&Method::GET, "/config") => json(StatusCode::OK, &app.config_status()),
        (&Method::POST, "/config/reload") => match app.reload("admin").await {
            Ok(generation) => json(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "generation": generation }),
            ),
            Err(errors) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "reloaded": false, "errors": errors }),
            ),
        },
        (&Method::GET, "/listeners") => json(StatusCode::OK, &app.listeners().await),
        (&Method::GET, "/clusters") => json(StatusCode::OK, &app.clusters()),
        (&Method::GET, "/certs") => match app.certs() {
            Some(info) => json(StatusCode::OK, &info),
            None => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "this proxy has no identity" }),
            ),
        },
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full(app.metrics().encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET, "/dashboard") if dashboard::enabled(app) => dashboard::page(),
        (&Method::GET, "/dashboard/data") if dashboard::enabled(app) => dashboard::data(app),
        (&Method::GET, "/version") => json(
            StatusCode::OK,
            &VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        ),
        (&Method::GET, "/status") => {
            let uptime = STARTED.get().map(|s| s.elapsed()).unwrap_or_default();
            json(StatusCode::OK, &status::status(app, uptime))
        }
        (&Method::GET, "/routes") => json(StatusCode::OK, &status::routes(app).await),
        (&Method::GET, "/connections") => json(StatusCode::OK, &connections::list()),
        (&Method::POST, "/explain") => {
            let ask = match http_body_util::Limited::new(req.into_body(), MAX_EXPLAIN_BODY)
                .collect()
                .await
            {
                Ok(body) => serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string()),
                Err(err) => Err(format!("cannot read the body: {err}")),
            };
            match ask {
                Ok(ask) => match explain::explain(app.runtime(), ask).await {
                    Ok(answer) => json(StatusCode::OK, &answer),
                    Err(error) => json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({ "error": error }),
                    ),
                },
                Err(error) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error }),
                ),
            }
        }
        (&Method::GET, "/rate_limits" | "/quotas") => {
            let key: Vec<String> = crate::edge::matcher::query_pairs(req.uri().query())
                .filter(|(name, _)| name == "key" || name == "consumer")
                .map(|(_, value)| value.into_owned())
                .collect();
            let limiters = app.runtime().routes.load().limiters().clone();
            json(StatusCode::OK, &limiters.view(&key).await)
        }
        (&Method::GET, "/grpc_json/openapi") => json(
            StatusCode::OK,
            &crate::translate::grpc_json::openapi::document(&app.runtime().settings.load()),
        ),
        (&Method::GET, "/cache") => cache::stats(app, req.uri().query()),
        (&Method::POST, "/cache/purge") => cache::purge(app, req).await,
        (&Method::GET, "/tap") => match tap::TapFilter::parse(req.uri().query()) {
            Ok(filter) => tap::stream(
                app.metrics().access_log().tap().subscribe(),
                filter,
                app.drain_signal().clone(),
            ),
            Err(error) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": error }),
            ),
        },
        (
            _,
            "/live" | "/ready" | "/config" | "/config/reload" | "/listeners" | "/clusters"
            | "/metrics" | "/version" | "/status" | "/routes" | "/explain" | "/tap"
            | "/rate_limits" | "/quotas" | "/cache" | "/cache/purge",
        ) => json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({ "error": "method not allowed" }),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "not found" }),
        ),
    }
}

/// `/clusters/{cluster}/endpoints/{addr}/maintenance` → (cluster, addr).
fn maintenance_target(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/clusters/")?
        .strip_suffix("/maintenance")?;
    let (cluster, endpoint) = rest.split_once("/endpoints/")?;
    (!cluster.is_empty() && !endpoint.is_empty() && !endpoint.contains('/'))
        .then_some((cluster, endpoint))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
