//! The dashboard on the admin API, when `admin.dashboard` is true:
//! `GET /dashboard` is the page (`mesh_api::golden::DASHBOARD_PAGE`, the
//! same one `mesh-ctl dashboard` serves) and `GET /dashboard/data` this
//! proxy's golden signals and service graph as JSON.
//! Reads: this proxy's own `/metrics` text and effective config, through
//! the same parser and arithmetic as `mesh-ctl stat`, so the numbers are
//! those of `/metrics`. Rates cover the time since a scrape kept about
//! 10 s earlier (`golden::History`); the first poll has totals only.
//! Errors: metrics text that does not parse answers 500 with the reason.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use mesh_api::golden::{Dashboard, History, Pair, ProxyState, Scrape, DASHBOARD_PAGE};

use crate::app::App;
use crate::http::{full, Body};

/// How far back the rates look.
const WINDOW: Duration = Duration::from_secs(10);

/// Recent scrapes of this process's metrics (one admin API per process).
static HISTORY: Mutex<History<Scrape>> = Mutex::new(History::new(WINDOW));

/// Whether the running config turns the dashboard on (read per request,
/// so a reload switches it).
pub fn enabled(app: &App) -> bool {
    app.config_status().config["admin"]["dashboard"].as_bool() == Some(true)
}

/// `GET /dashboard`.
pub fn page() -> Response<Body> {
    let mut response = Response::new(full(DASHBOARD_PAGE));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard/data`.
pub fn data(app: &App) -> Response<Body> {
    match signals(app) {
        Ok(dashboard) => super::json(StatusCode::OK, &dashboard),
        Err(error) => super::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": error }),
        ),
    }
}

fn signals(app: &App) -> Result<Dashboard, String> {
    let config = app.config_status().config;
    let exposition =
        mesh_api::prom::parse(&app.metrics().encode()).map_err(|err| err.to_string())?;
    let now = Scrape::new(&config, &exposition);
    let (before, window) = {
        let mut history = HISTORY.lock().unwrap_or_else(PoisonError::into_inner);
        match history.record(Instant::now(), now.clone()) {
            Some((before, window)) => (Some(before.clone()), Some(window)),
            None => (None, None),
        }
    };
    let proxy = ProxyState {
        admin: String::new(),
        service: Some(now.service.clone()),
        error: None,
    };
    let pair = Pair {
        before: before.as_ref(),
        now: &now,
    };
    Ok(Dashboard::new(vec![proxy], &[pair], window))
}
