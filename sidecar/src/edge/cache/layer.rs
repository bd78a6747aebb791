//! The cache layer of the edge stack: looks a request of a cached route up
//! in the store, answers hits, leads or follows misses, revalidates stale
//! entries, and stores responses while they stream to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::layer::layer_fn;
use tower::Layer;
use tracing::Instrument;

use super::policy::{self, CacheControl};
use super::store::{CacheStore, Entry, Flight, Freshness, Join, Outcome, Served};
use super::{key, CacheSettings};
use crate::edge::MatchedRoute;
use crate::http::{full, Body, BodyError, HttpService};
use crate::route::RouteTable;
use crate::telemetry::RequestInfo;
use crate::BoxError;

/// The header saying how the cache answered.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Longest a miss waits for the same key's miss in flight before going
/// upstream itself.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a background refresh (stale-while-revalidate) may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers a 304 answer from the store carries.
const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    LAST_MODIFIED,
    VARY,
];

/// The cache layer: reads the [`MatchedRoute`]'s policy; routes without
/// `cache:` pass through untouched.
pub fn layer(
    routes: Arc<ArcSwap<RouteTable>>,
) -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        let routes = routes.clone();
        crate::http::direct_fn(move |req: Request<Body>| {
            let cached = req.extensions().get::<MatchedRoute>().and_then(|matched| {
                let route = matched.settings();
                let policy = route.cache.clone()?;
                Some(Cached {
                    store: routes.load().cache().clone(),
                    policy,
                    route: route.name.clone(),
                    inner: inner.clone(),
                    background: false,
                })
            });
            match cached {
                Some(cached) => Box::pin(async move { cached.serve(req).await }),
                None => inner.call_ref(req),
            }
        })
    })
}

/// One request of a cached route.
#[derive(Clone)]
struct Cached {
    store: Arc<CacheStore>,
    policy: Arc<CacheSettings>,
    route: Arc<str>,
    inner: HttpService,
    /// A background refresh: nobody reads the answer, nothing is counted.
    background: bool,
}

impl Cached {
    async fn serve(self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let directives = CacheControl::of_request(req.headers());
        if !self.cacheable_request(&req, &directives) {
            return self.pass(req).await;
        }
        let key = key::compose(&self.route, &self.policy.key, &req);
        let mut followed = false;
        loop {
            let entry = self.store.lookup(&key, req.headers());
            if let Some(entry) = &entry {
                match entry.freshness(Instant::now(), &directives) {
                    Freshness::Fresh => return Ok(self.answer(entry, req.headers(), Served::Hit)),
                    Freshness::StaleWhileRevalidate => {
                        self.refresh_in_background(&req, &key, entry.clone());
                        return Ok(self.answer(entry, req.headers(), Served::Stale));
                    }
                    Freshness::StaleIfError | Freshness::Stale => {}
                }
            }
            if followed {
                return self.fetch(req, &key, None, entry).await;
            }
            match self.store.join(&key) {
                Join::Leader(flight) => return self.fetch(req, &key, Some(flight), entry).await,
                Join::Follower(rx) => match (follow(rx).await, entry) {
                    (Outcome::Failed, Some(entry)) if entry.usable_on_error(Instant::now()) => {
                        return Ok(self.answer(&entry, req.headers(), Served::Stale));
                    }
                    (Outcome::NotStored | Outcome::Failed, entry) => {
                        return self.fetch(req, &key, None, entry).await
                    }
                    (Outcome::Stored | Outcome::Pending, _) => followed = true,
                },
            }
        }
    }

    /// Whether the store may answer (and keep the answer to) `req`.
    fn cacheable_request(&self, req: &Request<Body>, directives: &CacheControl) -> bool {
        self.policy.methods.contains(req.method())
            && !directives.no_store
            && !req.headers().contains_key(RANGE)
            && (self.policy.keyed_by_caller || !key::has_credentials(req))
    }

    /// Straight upstream, nothing stored. A successful unsafe request
    /// (`POST`, `PUT`, `PATCH`, `DELETE`) removes the stored answers for
    /// its path and query.
    async fn pass(&self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let unsafe_target = (!req.method().is_safe()).then(|| target_of(req.uri()));
        let mut response = self.inner.call_ref(req).await?;
        let status = response.status();
        if let Some(target) = unsafe_target {
            if status.is_success() || status.is_redirection() {
                self.store.purge_key(&target);
            }
        }
        self.count(Served::Miss);
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(Served::Miss.as_str()));
        Ok(response)
    }

    /// Upstream for a miss or a stale entry (revalidated when it has
    /// validators); the response is stored as it streams when it may be.
    async fn fetch(
        &self,
        mut req: Request<Body>,
        key: &str,
        flight: Option<Flight>,
        stale: Option<Arc<Entry>>,
    ) -> Result<Response<Body>, BoxError> {
        let client = req.headers().clone();
        let target = target_of(req.uri());
        let headers = req.headers_mut();
        headers.remove(IF_NONE_MATCH);
        headers.remove(IF_MODIFIED_SINCE);
        let validating = stale
            .clone()
            .filter(|entry| policy::has_validator(&entry.headers));
        if let Some(entry) = &validating {
            if let Some(etag) = entry.headers.get(ETAG) {
                headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(modified) = entry.headers.get(LAST_MODIFIED) {
                headers.insert(IF_MODIFIED_SINCE, modified.clone());
            }
        }
        let result = self.inner.call_ref(req).await;
        let now = Instant::now();
        let on_error = stale.filter(|entry| entry.usable_on_error(now));
        let response = match (result, on_error) {
            (Ok(response), Some(entry)) if response.status().is_server_error() => {
                finish(flight, Outcome::Failed);
                return Ok(self.answer(&entry, &client, Served::Stale));
            }
            (Err(err), Some(entry)) => {
                tracing::debug!(route = %self.route, error = %err, "cache: upstream failed, serving stale");
                finish(flight, Outcome::Failed);
                return Ok(self.answer(&entry, &client, Served::Stale));
            }
            (result, _) => result?,
        };
        if let (StatusCode::NOT_MODIFIED, Some(entry)) = (response.status(), validating) {
            let refreshed = self.refreshed(&entry, response.headers(), now);
            let answer = self.answer(&refreshed, &client, Served::Revalidated);
            let stored = self.store.insert(key, refreshed);
            finish(flight, stored_outcome(stored));
            return Ok(answer);
        }
        Ok(self.store_through(response, key, &client, target, flight))
    }

    /// Passes `response` on, storing it as it streams when it may be stored.
    fn store_through(
        &self,
        mut response: Response<Body>,
        key: &str,
        client: &HeaderMap,
        target: String,
        flight: Option<Flight>,
    ) -> Response<Body> {
        self.count(Served::Miss);
        let entry = self.entry_for(&response, client, target);
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(Served::Miss.as_str()));
        let Some(entry) = entry else {
            finish(flight, Outcome::NotStored);
            return response;
        };
        let sink = Sink {
            store: self.store.clone(),
            key: key.to_string(),
            entry,
            buffer: BytesMut::new(),
            limit: self.store.max_object(),
            flight,
        };
        let (parts, body) = response.into_parts();
        if body.is_end_stream() {
            sink.complete();
            return Response::from_parts(parts, body);
        }
        let tee = TeeBody {
            inner: body,
            sink: Some(sink),
        };
        Response::from_parts(parts, tee.boxed_unsync())
    }

    /// The entry `response` makes (body still empty), `None` if it may not
    /// be stored.
    fn entry_for(
        &self,
        response: &Response<Body>,
        client: &HeaderMap,
        target: String,
    ) -> Option<Entry> {
        let headers = response.headers();
        let cc = CacheControl::parse(headers);
        if let Err(why) = policy::storable(response.status(), headers, &cc, &self.policy.statuses) {
            tracing::debug!(route = %self.route, ?why, "cache: response not stored");
            return None;
        }
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.store.max_object() as u64) {
            return None;
        }
        let vary = policy::vary_names(headers)?
            .into_iter()
            .map(|name| {
                let value = policy::vary_value(client, &name);
                (name, value)
            })
            .collect();
        let mut entry = Entry {
            status: response.status(),
            headers: stored_headers(headers),
            body: Bytes::new(),
            stored: Instant::now(),
            initial_age: policy::initial_age(headers),
            lifetime: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            always_revalidate: false,
            vary,
            target,
        };
        self.set_freshness(&mut entry, &cc);
        Some(entry)
    }

    /// Lifetime and stale windows from the entry's headers and the route.
    fn set_freshness(&self, entry: &mut Entry, cc: &CacheControl) {
        entry.lifetime = policy::freshness_lifetime(cc, &entry.headers, self.policy.ttl);
        entry.always_revalidate = cc.no_cache;
        if cc.must_revalidate {
            entry.stale_while_revalidate = Duration::ZERO;
            entry.stale_if_error = Duration::ZERO;
        } else {
            entry.stale_while_revalidate = cc
                .stale_while_revalidate
                .unwrap_or(self.policy.stale_while_revalidate);
            entry.stale_if_error = cc.stale_if_error.unwrap_or(self.policy.stale_if_error);
        }
    }

    /// `entry` updated by a 304's headers, fresh again from `now`.
    fn refreshed(&self, entry: &Entry, update: &HeaderMap, now: Instant) -> Entry {
        let mut headers = entry.headers.clone();
        let update = stored_headers(update);
        for name in update.keys() {
            if name == CONTENT_LENGTH {
                continue;
            }
            headers.remove(name);
            for value in update.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let cc = CacheControl::parse(&headers);
        let mut fresh = Entry {
            status: entry.status,
            headers,
            body: entry.body.clone(),
            stored: now,
            initial_age: policy::initial_age(&update),
            lifetime: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            always_revalidate: false,
            vary: entry.vary.clone(),
            target: entry.target.clone(),
        };
        self.set_freshness(&mut fresh, &cc);
        fresh
    }

    /// The answer from `entry`: 304 when the client's conditional holds.
    fn answer(&self, entry: &Entry, client: &HeaderMap, served: Served) -> Response<Body> {
        self.count(served);
        let mut response =
            if entry.status.is_success() && policy::not_modified(client, &entry.headers) {
                let mut response = Response::new(crate::http::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                let headers = response.headers_mut();
                for name in NOT_MODIFIED_HEADERS {
                    for value in entry.headers.get_all(&name) {
                        headers.append(name.clone(), value.clone());
                    }
                }
                response
            } else {
                let mut response = Response::new(full(entry.body.clone()));
                *response.status_mut() = entry.status;
                *response.headers_mut() = entry.headers.clone();
                response
            };
        let headers = response.headers_mut();
        headers.insert(AGE, HeaderValue::from(entry.age(Instant::now()).as_secs()));
        headers.insert(X_CACHE, HeaderValue::from_static(served.as_str()));
        response
    }

    /// Refreshes `entry` with one background request, unless a request for
    /// the key is already in flight.
    fn refresh_in_background(&self, req: &Request<Body>, key: &str, entry: Arc<Entry>) {
        let Join::Leader(flight) = self.store.join(key) else {
            return;
        };
        let mut copy = Request::new(crate::http::empty());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        // The client's request is answered and logged; this one is not its.
        copy.extensions_mut().remove::<RequestInfo>();
        let this = Cached {
            background: true,
            ..self.clone()
        };
        let key = key.to_string();
        let span = tracing::debug_span!("cache_refresh", route = %self.route);
        tokio::spawn(
            async move {
                let refresh = async {
                    match this.fetch(copy, &key, Some(flight), Some(entry)).await {
                        Ok(response) => drain(response.into_body()).await,
                        Err(err) => tracing::debug!(error = %err, "cache: refresh failed"),
                    }
                };
                if tokio::time::timeout(REFRESH_TIMEOUT, refresh)
                    .await
                    .is_err()
                {
                    tracing::debug!("cache: refresh timed out");
                }
            }
            .instrument(span),
        );
    }

    fn count(&self, served: Served) {
        if !self.background {
            self.store.count(&self.route, served);
        }
    }
}

/// Waits for the miss in flight; `Pending` if it went away unfinished (or
/// took too long): look again.
async fn follow(mut rx: watch::Receiver<Outcome>) -> Outcome {
    let done = tokio::time::timeout(FOLLOW_TIMEOUT, rx.wait_for(|o| *o != Outcome::Pending)).await;
    match done {
        Ok(Ok(outcome)) => *outcome,
        Ok(Err(_)) => Outcome::Pending,
        Err(_) => Outcome::NotStored,
    }
}

/// A request's path and query, as entries record it.
fn target_of(uri: &http::Uri) -> String {
    match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    }
}

fn finish(flight: Option<Flight>, outcome: Outcome) {
    if let Some(flight) = flight {
        flight.finish(outcome);
    }
}

fn stored_outcome(stored: bool) -> Outcome {
    if stored {
        Outcome::Stored
    } else {
        Outcome::NotStored
    }
}

/// Reads a body to its end, dropping the data (the tee keeps it).
async fn drain(mut body: Body) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

/// Response headers as stored: without hop-by-hop ones and the cache's own.
fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        AGE,
        X_CACHE,
    ] {
        kept.remove(name);
    }
    kept.remove("keep-alive");
    kept.remove("proxy-connection");
    kept
}

/// Where a response's body goes while it streams to the client.
struct Sink {
    store: Arc<CacheStore>,
    key: String,
    /// The entry, body still empty.
    entry: Entry,
    buffer: BytesMut,
    limit: usize,
    flight: Option<Flight>,
}

impl Sink {
    /// Keeps `data`; false once past the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        if self.buffer.len() + data.len() > self.limit {
            return false;
        }
        self.buffer.extend_from_slice(data);
        true
    }

    /// The whole body arrived: store it.
    fn complete(self) {
        let mut entry = self.entry;
        entry.body = self.buffer.freeze();
        let stored = self.store.insert(&self.key, entry);
        finish(self.flight, stored_outcome(stored));
    }

    /// Too large, trailers, or an error: nothing stored.
    fn give_up(self) {
        finish(self.flight, Outcome::NotStored);
    }
}

pin_project_lite::pin_project! {
    /// A response body that streams to the client and into a [`Sink`].
    struct TeeBody {
        #[pin]
        inner: Body,
        sink: Option<Sink>,
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let Some(mut sink) = this.sink.take() else {
            return Poll::Ready(polled);
        };
        match &polled {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) if sink.push(data) => {
                    if this.inner.is_end_stream() {
                        sink.complete();
                    } else {
                        *this.sink = Some(sink);
                    }
                }
                _ => sink.give_up(),
            },
            Some(Err(_)) => sink.give_up(),
            None => sink.complete(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        // Polled to the end while storing, so the store sees the end.
        self.sink.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::telemetry::Metrics;
    use crate::tls::IdentityStore;

    const EDGE: &str = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    v1: { discovery: { endpoints: [127.0.0.1:7001] } }\n  cache: { max_object: 64 }\n  routes:\n    - { match: { path_prefix: /plain }, to: v1 }\n    - { match: { path_prefix: / }, to: v1, cache: { ttl: 30s } }\n";

    /// An upstream that answers after 300 ms with the query's `cc` as
    /// Cache-Control, a body saying how many calls it had (100 bytes more
    /// on `/big`, no Content-Length), and 503 on `/down` once called before.
    fn upstream(calls: Arc<AtomicUsize>) -> HttpService {
        crate::http::shared_fn(move |req: Request<Body>| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut body = format!("call {n}");
                if req.uri().path() == "/big" {
                    body.push_str(&".".repeat(100));
                }
                let mut response = Response::new(full(body));
                if req.uri().path() == "/down" && n > 1 {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                let cc = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("cc="))
                    .map(|cc| cc.replace("%20", " "));
                if let Some(cc) = cc {
                    response
                        .headers_mut()
                        .insert(CACHE_CONTROL, HeaderValue::from_str(&cc).unwrap());
                }
                Ok::<_, BoxError>(response)
            }
        })
    }

    /// The route and cache layers over [`upstream`], and its call count.
    fn stack() -> (HttpService, Arc<AtomicUsize>) {
        let settings = crate::config::load_str(EDGE).unwrap();
        let table = Arc::new(RouteTable::build(
            &settings,
            &RouteTable::default(),
            &Metrics::new(),
            &Arc::new(IdentityStore::new(Default::default())),
        ));
        let routes = Arc::new(ArcSwap::new(table));
        let calls = Arc::new(AtomicUsize::new(0));
        let service = tower::ServiceBuilder::new()
            .layer(crate::edge::route_layer(routes.clone()))
            .layer(layer(routes))
            .service(upstream(calls.clone()));
        (crate::http::HttpService::new(service), calls)
    }

    /// `x-cache` and the body of a GET of `target`.
    async fn get(stack: &HttpService, target: &str) -> (String, String) {
        let mut req = Request::builder()
            .uri(format!("http://api.test{target}"))
            .body(crate::http::empty())
            .unwrap();
        req.extensions_mut().insert(RequestInfo::default());
        let response = stack.call_ref(req).await.unwrap();
        let cache = response
            .headers()
            .get(X_CACHE)
            .map_or("none", |v| v.to_str().unwrap())
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (cache, String::from_utf8(body.to_vec()).unwrap())
    }

    fn pair(cache: &str, body: &str) -> (String, String) {
        (cache.to_string(), body.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn the_route_ttl_applies_when_the_upstream_is_silent() {
        let (stack, calls) = stack();
        assert_eq!(get(&stack, "/a").await, pair("MISS", "call 1"));
        assert_eq!(get(&stack, "/a").await, pair("HIT", "call 1"));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(get(&stack, "/a").await, pair("MISS", "call 2"));
        // The upstream's max-age wins over the ttl.
        assert_eq!(get(&stack, "/b?cc=max-age=100").await.0, "MISS");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(get(&stack, "/b?cc=max-age=100").await.0, "HIT");
        // Routes without `cache:` are untouched.
        assert_eq!(get(&stack, "/plain").await.0, "none");
        assert_eq!(get(&stack, "/plain").await.0, "none");
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_call() {
        let (stack, calls) = stack();
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let stack = stack.clone();
                tokio::spawn(async move { get(&stack, "/slow").await })
            })
            .collect();
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|(_, body)| body == "call 1"));
        assert_eq!(answers.iter().filter(|(c, _)| c == "MISS").count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_while_revalidate_refreshes_once_in_the_background() {
        let (stack, calls) = stack();
        let target = "/w?cc=max-age=1,%20stale-while-revalidate=30";
        assert_eq!(get(&stack, target).await, pair("MISS", "call 1"));
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..3 {
            assert_eq!(get(&stack, target).await, pair("STALE", "call 1"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh");
        assert_eq!(get(&stack, target).await, pair("HIT", "call 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_only_within_its_window() {
        let (stack, calls) = stack();
        let target = "/down?cc=max-age=1,%20stale-if-error=10";
        assert_eq!(get(&stack, target).await, pair("MISS", "call 1"));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Concurrent requests wait for the one upstream failure, then all get the stale entry.
        let requests: Vec<_> = (0..5)
            .map(|_| {
                let stack = stack.clone();
                tokio::spawn(async move { get(&stack, target).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), pair("STALE", "call 1"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(get(&stack, target).await, pair("MISS", "call 3"));
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_past_max_object_stream_through_unstored() {
        let (stack, calls) = stack();
        let (cache, body) = get(&stack, "/big").await;
        assert_eq!((cache.as_str(), body.len()), ("MISS", 106));
        let (cache, body) = get(&stack, "/big").await;
        assert_eq!((cache.as_str(), &body[..6]), ("MISS", "call 2"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
