//! External authorization (`edge.auth.external`): the request's method,
//! path, query and headers are POSTed as JSON to a configured service,
//! which decides. LDAP / Active Directory or custom logic plug in here
//! without code in the proxy.
//!
//! What the service receives (`Content-Type: application/json`, never the
//! request body):
//!
//! ```json
//! { "method": "GET", "path": "/orders/7", "query": "page=2",
//!   "headers": { "authorization": "Basic …", "x-team": "blue" },
//!   "client": "203.0.113.9", "route": "orders" }
//! ```
//!
//! `query` is `null` without one, `client` is `null` when unknown, `route`
//! is the matched edge route's name. `headers` holds the names listed in
//! `headers:` (all of the request's but `content-length` and
//! `transfer-encoding` when the list is empty); repeated headers are joined
//! with `", "`, values that are not text are left out.
//!
//! What it answers:
//! - **2xx**: allowed, unless the body is a JSON object with
//!   `"allow": false` (then denied as for 403). An optional JSON body
//!   `{ "allow": true, "headers": { "x-user": "alice" }, "consumer": "alice" }`
//!   adds `headers` to the request sent upstream — only those declared in
//!   `sets:`, whose client-sent copies are always removed, so a caller can
//!   never pass one off as the authorizer's — and names the consumer
//!   (rate-limit key, access log).
//! - **401**: the caller is not authenticated (401 `unauthenticated`).
//! - **403** or any other 4xx: denied (403 `forbidden`).
//! - **5xx**, anything else, no answer within `timeout`, or no connection:
//!   the service is unavailable; `on_error: deny` answers 503, `on_error:
//!   allow` admits the request with no principal headers.
//!
//! The HTTP client ([`ServiceClient`]) is shared with token introspection:
//! HTTP/1.1 over TCP, or HTTPS verified against the system's roots; a
//! handful of idle keep-alive connections are reused, calls at once are
//! bounded, every call has a deadline.
//! Errors: [`AuthError::Forbidden`], [`AuthError::Invalid`],
//! [`AuthError::Unavailable`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use mesh_api::config as raw;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use super::{AuthError, Principal};
use crate::config::{Errors, UpstreamTlsSettings};
use crate::tls::upstream::PublicTls;

/// Idle keep-alive connections kept per service.
const IDLE_CONNECTIONS: usize = 16;
/// Calls to one service at once; more wait (within their deadline).
const CALLS_AT_ONCE: usize = 64;
/// Idle connections older than this are not reused (servers close them).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Largest answer read from a service.
const MAX_ANSWER: usize = 64 * 1024;
/// Headers an authorizer may not set on the request.
const PROTECTED: [HeaderName; 4] = [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONTENT_TYPE];

/// An authorization service's URL, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// `https`?
    pub tls: bool,
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
    /// Path and query sent.
    pub path: String,
    /// The `Host` header.
    pub authority: String,
}

/// Validates an http or https URL at `at`.
pub(crate) fn validate_url(errors: &mut Errors<'_>, at: &str, text: &str) -> ServiceUrl {
    let fallback = ServiceUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: 0,
        path: "/".into(),
        authority: "127.0.0.1".into(),
    };
    let Ok(uri) = text.parse::<Uri>() else {
        errors.push(at, format!("invalid URL {text:?}"));
        return fallback;
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            errors.push(at, format!("{text:?}: the scheme must be http or https"));
            return fallback;
        }
    };
    let Some(authority) = uri.authority() else {
        errors.push(at, format!("{text:?}: a host is needed"));
        return fallback;
    };
    if authority.as_str().contains('@') {
        errors.push(at, format!("{text:?}: credentials do not go in the URL"));
        return fallback;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        errors.push(at, format!("{text:?}: a host is needed"));
        return fallback;
    }
    ServiceUrl {
        tls,
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        authority: authority.as_str().to_string(),
    }
}

/// Validates a per-call timeout at `at`: above zero, at most a minute.
pub(crate) fn validate_timeout(errors: &mut Errors<'_>, at: &str, text: &str) -> Duration {
    let timeout = errors.duration(at, text);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        errors.push(at, format!("must be above 0 and at most 60s, got {text:?}"));
    }
    timeout
}

/// An answer from an authorization service.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a service could not be asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answer unreadable or larger than {MAX_ANSWER} bytes")]
    Body,
}

/// An HTTP client for one authorization service.
pub(crate) struct ServiceClient {
    url: ServiceUrl,
    timeout: Duration,
    tls: Option<PublicTls>,
    /// Idle connections and when they became idle.
    idle: Mutex<Vec<(http1::SendRequest<Full<Bytes>>, Instant)>>,
    calls: Semaphore,
}

impl ServiceClient {
    /// A client for `url`; `name` names the service in logs.
    pub(crate) fn new(url: &ServiceUrl, timeout: Duration, name: &str) -> Self {
        let tls = url.tls.then(|| {
            let settings = UpstreamTlsSettings {
                ca: None,
                sni: url.host.clone(),
                verify: true,
            };
            PublicTls::new(&settings, name)
        });
        Self {
            url: url.clone(),
            timeout,
            tls,
            idle: Mutex::new(Vec::new()),
            calls: Semaphore::new(CALLS_AT_ONCE),
        }
    }

    /// POSTs `body` as `content_type` (with `authorization` if given);
    /// the whole call, waiting for a turn included, within the timeout.
    pub(crate) async fn post(
        &self,
        content_type: &'static str,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, CallError> {
        tokio::time::timeout(self.timeout, self.call(content_type, authorization, body))
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }

    async fn call(
        &self,
        content_type: &'static str,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, CallError> {
        // The semaphore is never closed.
        let _turn = self.calls.acquire().await.ok();
        let request = || {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(self.url.path.as_str())
                .header(HOST, self.url.authority.as_str())
                .header(CONTENT_TYPE, content_type)
                .header(http::header::ACCEPT, "application/json");
            if let Some(value) = authorization {
                builder = builder.header(http::header::AUTHORIZATION, value);
            }
            builder
                .body(Full::new(body.clone()))
                .map_err(|_| CallError::Body)
        };
        let reused = match self.checkout() {
            Some(mut sender) => match sender.send_request(request()?).await {
                Ok(response) => Some((sender, response)),
                // The server may have closed the idle connection as we
                // reused it: once more on a new one (the call asks, it
                // changes nothing).
                Err(err) => {
                    debug!(host = %self.url.host, error = %err, "reused connection failed; reconnecting");
                    None
                }
            },
            None => None,
        };
        let (sender, response) = match reused {
            Some(done) => done,
            None => {
                let mut sender = self.connect().await?;
                let response = sender.send_request(request()?).await?;
                (sender, response)
            }
        };
        let (parts, incoming) = response.into_parts();
        let body = Limited::new(incoming, MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| CallError::Body)?
            .to_bytes();
        let reusable = parts
            .headers
            .get(http::header::CONNECTION)
            .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"close"));
        if reusable {
            self.recycle(sender);
        }
        Ok(Answer {
            status: parts.status,
            body,
        })
    }

    fn checkout(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if sender.is_ready() && since.elapsed() < MAX_IDLE {
                return Some(sender);
            }
        }
        None
    }

    fn recycle(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, CallError> {
        let addr = self.resolve().await?;
        // The proxy's own connect (no Nagle); the call's deadline bounds it.
        let tcp = crate::connect::tcp(addr, self.timeout)
            .await
            .map_err(|e| match e {
                crate::connect::ConnectError::Io(e) => CallError::Connect(e),
                _ => CallError::Timeout(self.timeout),
            })?;
        let span =
            tracing::debug_span!("auth_service", host = %self.url.host, port = self.url.port);
        match &self.tls {
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
                // Ends when the server closes or every sender is dropped
                // (the idle list is bounded and dies with this client).
                tokio::spawn(conn.instrument(span));
                Ok(sender)
            }
            Some(tls) => {
                let config = tls
                    .config(crate::tls::ALPN_HTTP1)
                    .map_err(|e| CallError::Tls(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(tls.server_name(), tcp)
                    .await
                    .map_err(|e| CallError::Tls(e.to_string()))?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
                // Bounded as above.
                tokio::spawn(conn.instrument(span));
                Ok(sender)
            }
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, CallError> {
        if let Ok(ip) = self.url.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.url.port));
        }
        tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| CallError::Resolve(self.url.host.clone()))
    }
}

/// An external authorizer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSettings {
    /// Its name in `edge.auth.external`.
    pub name: Arc<str>,
    /// Where the request is POSTed.
    pub url: ServiceUrl,
    /// Per call.
    pub timeout: Duration,
    /// Request headers sent; empty: all but `content-length` / `transfer-encoding`.
    pub headers: Vec<HeaderName>,
    /// Admit when the service cannot be asked.
    pub allow_on_error: bool,
    /// Headers it may add upstream; the client's copies are always removed.
    pub sets: Vec<HeaderName>,
}

/// Validates `edge.auth.external.<name>` at `at`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::ExternalAuthz,
) -> ExternalSettings {
    let url = validate_url(errors, &format!("{at}.url"), &raw.url);
    let timeout = validate_timeout(errors, &format!("{at}.timeout"), &raw.timeout);
    let mut headers = Vec::new();
    for (i, name) in raw.headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if header.as_str() == name => headers.push(header),
            _ => errors.push(
                &format!("{at}.headers[{i}]"),
                format!("invalid header name {name:?} (lower case)"),
            ),
        }
    }
    let mut sets = Vec::new();
    for (i, name) in raw.sets.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if header.as_str() == name && !PROTECTED.contains(&header) => {
                sets.push(header)
            }
            _ => errors.push(
                &format!("{at}.sets[{i}]"),
                format!("invalid header name {name:?} (lower case, not a framing header)"),
            ),
        }
    }
    ExternalSettings {
        name: name_of(at),
        url,
        timeout,
        headers,
        allow_on_error: raw.on_error == raw::OnError::Allow,
        sets,
    }
}

/// The authenticator's name, from its YAML path
/// (`edge.auth.external.<name>`, `edge.auth.introspection.<name>`; a name
/// may hold dots).
pub(crate) fn name_of(at: &str) -> Arc<str> {
    let name = [".external.", ".introspection."]
        .iter()
        .find_map(|kind| at.split_once(kind).map(|(_, name)| name))
        .unwrap_or_else(|| at.rsplit('.').next().unwrap_or(at));
    Arc::from(name)
}

/// An external authorizer at run time (one pointer wide).
pub struct External(Box<State>);

struct State {
    settings: ExternalSettings,
    client: ServiceClient,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("name", &self.0.settings.name)
            .finish_non_exhaustive()
    }
}

/// What the authorizer may answer in a JSON body.
#[derive(Debug, Default, serde::Deserialize)]
struct Decision {
    allow: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    consumer: Option<String>,
}

impl External {
    /// Headers it may set upstream (`sets`): a caller's own copies are removed.
    pub fn owned_headers(&self) -> &[HeaderName] {
        &self.0.settings.sets
    }

    /// The authorizer of `settings`.
    pub fn new(settings: &ExternalSettings) -> Self {
        Self(Box::new(State {
            client: ServiceClient::new(&settings.url, settings.timeout, &settings.name),
            settings: settings.clone(),
        }))
    }

    /// Asks the service about the request of `parts` from `client`.
    pub async fn check(
        &self,
        parts: &Parts,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        self.0.check(parts, client).await
    }
}

impl State {
    async fn check(&self, parts: &Parts, client: Option<IpAddr>) -> Result<Principal, AuthError> {
        let body = self.describe(parts, client);
        let answer = match self.client.post("application/json", None, body).await {
            Ok(answer) if !answer.status.is_server_error() => answer,
            Ok(answer) => {
                return self.unavailable(format!("authorizer answered {}", answer.status));
            }
            Err(err) => return self.unavailable(err.to_string()),
        };
        let decision = || serde_json::from_slice::<Decision>(&answer.body).unwrap_or_default();
        match answer.status {
            status if status.is_success() => {
                let decision = decision();
                if decision.allow == Some(false) {
                    return Err(AuthError::Forbidden("denied by the external authorizer"));
                }
                Ok(self.principal(decision))
            }
            StatusCode::UNAUTHORIZED => Err(AuthError::Invalid(
                "not authenticated by the external authorizer",
            )),
            status if status.is_client_error() => {
                Err(AuthError::Forbidden("denied by the external authorizer"))
            }
            status => self.unavailable(format!("authorizer answered {status}")),
        }
    }

    fn unavailable(&self, why: String) -> Result<Principal, AuthError> {
        debug!(authorizer = %self.settings.name, error = %why, "external authorizer unavailable");
        if self.settings.allow_on_error {
            Ok(Principal {
                authenticator: self.settings.name.clone(),
                ..Principal::default()
            })
        } else {
            Err(AuthError::Unavailable(format!(
                "external authorizer {}",
                self.settings.name
            )))
        }
    }

    fn principal(&self, decision: Decision) -> Principal {
        let mut headers = Vec::with_capacity(decision.headers.len());
        for (name, value) in decision.headers {
            let parsed = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            );
            match parsed {
                (Ok(name), Ok(value)) if self.settings.sets.contains(&name) => {
                    headers.push((name, value))
                }
                _ => {
                    debug!(authorizer = %self.settings.name, header = %name, "authorizer header left out")
                }
            }
        }
        Principal {
            authenticator: self.settings.name.clone(),
            consumer: decision.consumer.map(Arc::from),
            claims: Arc::default(),
            headers,
        }
    }

    /// The JSON the service receives.
    fn describe(&self, parts: &Parts, client: Option<IpAddr>) -> Bytes {
        let mut headers = serde_json::Map::new();
        for name in parts.headers.keys() {
            let wanted = if self.settings.headers.is_empty() {
                name != CONTENT_LENGTH && name != TRANSFER_ENCODING
            } else {
                self.settings.headers.contains(name)
            };
            if !wanted {
                continue;
            }
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !values.is_empty() {
                headers.insert(name.as_str().into(), values.join(", ").into());
            }
        }
        let route = parts
            .extensions
            .get::<crate::edge::MatchedRoute>()
            .map(|m| m.settings().name.to_string());
        let value = serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "client": client.map(|ip| ip.to_string()),
            "route": route,
        });
        Bytes::from(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE: &str = "service: gw\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    app: { discovery: { endpoints: [127.0.0.1:1] } }\n  routes: [{ name: r, to: app }]\n  auth:\n";

    /// The errors of `auth` (YAML under `edge.auth`), as `path: message`.
    fn errors(auth: &str) -> Vec<String> {
        crate::config::load_lines(&format!("{EDGE}{auth}"))
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn every_field_is_checked_at_its_path() {
        let found = errors(
            "    external:\n      x: { url: ftp://a/b, timeout: 0s, headers: [X-Bad, ok] }\n    introspection:\n      i: { endpoint: \"http://u:p@h/\", client_secret: s, from: [body:x], cache: 1 hour, forward_claims: { sub: \"bad header\" } }\n",
        );
        for path in [
            "edge.auth.external.x.url:",
            "edge.auth.external.x.timeout:",
            "edge.auth.external.x.headers[0]:",
            "edge.auth.introspection.i.endpoint:",
            "edge.auth.introspection.i.client_secret:",
            "edge.auth.introspection.i.from[0]:",
            "edge.auth.introspection.i.cache:",
            "edge.auth.introspection.i.forward_claims.sub:",
        ] {
            assert!(
                found.iter().any(|e| e.starts_with(path)),
                "{path} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), 8, "{found:#?}");
    }

    #[test]
    fn urls_keep_host_port_and_path() {
        let yaml = format!(
            "{EDGE}    external:\n      x: {{ url: \"https://authz.example.test/v1/check?x=1\", on_error: allow }}\n      y: {{ url: \"http://[::1]:9000\", headers: [x-user] }}\n"
        );
        let settings = crate::config::load_str(&yaml).unwrap();
        let auth = &settings.edge.as_ref().unwrap().auth.authenticators;
        let external = |name: &str| match auth.get(name) {
            Some(super::super::AuthenticatorSettings::External(s)) => s.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let x = external("x");
        assert_eq!(
            (
                x.url.tls,
                x.url.host.as_str(),
                x.url.port,
                x.url.path.as_str()
            ),
            (true, "authz.example.test", 443, "/v1/check?x=1")
        );
        assert!(x.allow_on_error);
        assert_eq!(&*x.name, "x");
        assert_eq!(&*name_of("edge.auth.introspection.corp.eu"), "corp.eu");
        let y = external("y");
        assert_eq!(
            (
                y.url.tls,
                y.url.host.as_str(),
                y.url.port,
                y.url.path.as_str()
            ),
            (false, "::1", 9000, "/")
        );
        assert_eq!(y.headers, vec![HeaderName::from_static("x-user")]);
        assert!(!y.allow_on_error);
    }
}
