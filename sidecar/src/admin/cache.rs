//! The edge response cache on the admin API: `GET /cache` (size and
//! counters; `?entries=N` also lists up to N entries, most recently used
//! first) and `POST /cache/purge` (by `key` or path `prefix`, as JSON
//! `{"key": ..}` / `{"prefix": ..}` or as query parameters).

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use super::json;
use crate::app::App;
use crate::http::Body;

/// Largest `POST /cache/purge` body.
const MAX_PURGE_BODY: usize = 16 * 1024;

/// Most entries `GET /cache?entries=` lists.
const MAX_LISTED: usize = 1000;

/// What a purge removes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    /// An entry's key, or a request's path and query (every variant).
    key: Option<String>,
    /// Every entry whose path starts with it.
    prefix: Option<String>,
}

/// `GET /cache`.
pub(super) fn stats(app: &App, query: Option<&str>) -> Response<Body> {
    let store = app.runtime().routes.load().cache().clone();
    let mut body = match serde_json::to_value(store.stats()) {
        Ok(value) => value,
        Err(err) => {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "error": err.to_string() }),
            )
        }
    };
    let listed = crate::edge::matcher::query_pairs(query)
        .find(|(name, _)| name == "entries")
        .map(|(_, value)| value.parse::<usize>().unwrap_or(100).min(MAX_LISTED));
    if let (Some(limit), Some(map)) = (listed, body.as_object_mut()) {
        map.insert(
            "list".into(),
            serde_json::to_value(store.entries(limit)).unwrap_or_default(),
        );
    }
    json(StatusCode::OK, &body)
}

/// `POST /cache/purge`.
pub(super) async fn purge(app: &App, req: Request<Incoming>) -> Response<Body> {
    let mut ask = Purge::default();
    for (name, value) in crate::edge::matcher::query_pairs(req.uri().query()) {
        match &*name {
            "key" => ask.key = Some(value.into_owned()),
            "prefix" => ask.prefix = Some(value.into_owned()),
            _ => {}
        }
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => return bad_request(format!("cannot read the body: {err}")),
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Purge>(&body) {
            Ok(sent) => {
                ask.key = sent.key.or(ask.key);
                ask.prefix = sent.prefix.or(ask.prefix);
            }
            Err(err) => {
                return bad_request(format!(
                    "expected {{\"key\": ..}} or {{\"prefix\": ..}}: {err}"
                ))
            }
        }
    }
    let store = app.runtime().routes.load().cache().clone();
    let purged = match (&ask.key, &ask.prefix) {
        (Some(key), None) => store.purge_key(key),
        (None, Some(prefix)) => store.purge_prefix(prefix),
        _ => return bad_request("name exactly one of `key` or `prefix`".into()),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({ "purged": purged, "key": ask.key, "prefix": ask.prefix }),
    )
}

fn bad_request(error: String) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": error }),
    )
}
