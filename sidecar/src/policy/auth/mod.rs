//! Edge authentication, between the edge route layer and the route's
//! rate limits: the matched route's authenticators (`auth: [..]`, any of
//! them admits a request) and its requirements (`require:`).
//! Reads: the [`MatchedRoute`](crate::edge::MatchedRoute), the
//! authenticators' runtime state ([`Authenticators`], kept across reloads
//! while their settings are unchanged).
//! Writes: the consumer into `RequestInfo`, forwarded claims / consumer
//! headers onto the request (client-sent copies of those headers removed
//! first), the admitting [`Principal`] into the request's extensions (rate
//! limits key on its consumer and claims), a denial's reason
//! (`mesh_policy_denials_total`, policy `auth`).
//! Errors: [`AuthDenied::Unauthenticated`] (401 `unauthenticated`, with
//! `WWW-Authenticate`), `policy::Forbidden` (403 `forbidden`),
//! [`AuthDenied::Unavailable`] (503 `auth_unavailable`).

pub mod apikey;
pub mod external;
pub mod introspect;
pub mod jwks;
pub mod jwt;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, COOKIE};
use http::request::Parts;
use http::Request;
use mesh_api::config as raw;
use tower::layer::layer_fn;
use tower::Layer;

use crate::config::Errors;
use crate::edge::MatchedRoute;
use crate::http::{Body, HttpService};
use crate::route::RouteTable;
use crate::telemetry::RequestInfo;

/// Who an authenticator says the caller is.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// The authenticator that admitted the request (its name in `edge.auth`).
    pub authenticator: Arc<str>,
    /// The consumer: an API key's owner, or the token's consumer claim.
    pub consumer: Option<Arc<str>>,
    /// The token's claims (JWT payload, introspection answer); empty for API keys.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Headers to set on the request sent upstream (forwarded claims,
    /// the consumer, an external authorizer's additions).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Why authentication did not admit a request.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials this authenticator reads (401 if no other admits).
    #[error("no credentials")]
    Missing,
    /// Credentials that do not hold (401 `unauthenticated`); the reason
    /// goes to the debug log and metrics, never to the client in detail.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// Authenticated, but not allowed (403 `forbidden`).
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// An authorization service could not be asked (503).
    #[error("authorization service unavailable: {0}")]
    Unavailable(String),
}

/// The refusal the layer hands to `errors` (a 403 is `policy::Forbidden`).
#[derive(Debug, thiserror::Error)]
pub enum AuthDenied {
    /// No authenticator admitted the request (401); the challenge goes in
    /// `WWW-Authenticate`.
    #[error("valid credentials are required")]
    Unauthenticated {
        /// The `WWW-Authenticate` value.
        challenge: HeaderValue,
    },
    /// An authorization service could not be asked (503).
    #[error("the authorization service is unavailable")]
    Unavailable,
}

/// Every authenticator of `edge.auth`, validated.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Names of every authenticator, for route references.
    pub names: Vec<Arc<str>>,
    /// Each authenticator's settings, by name.
    pub authenticators: BTreeMap<Arc<str>, AuthenticatorSettings>,
}

/// One authenticator's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthenticatorSettings {
    /// `edge.auth.jwt.<name>`.
    Jwt(jwt::JwtSettings),
    /// `edge.auth.api_keys.<name>`.
    ApiKeys(apikey::ApiKeySettings),
    /// `edge.auth.introspection.<name>`.
    Introspection(introspect::IntrospectionSettings),
    /// `edge.auth.external.<name>`.
    External(external::ExternalSettings),
}

/// What a route requires of an authenticated caller, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequireSettings {
    /// Scopes that must all be present.
    pub scopes: Vec<String>,
    /// Claims and the values they must have.
    pub claims: BTreeMap<String, String>,
    /// Consumers allowed; empty: any.
    pub consumers: Vec<String>,
}

/// One running authenticator.
pub enum Authenticator {
    /// JSON Web Tokens against a key set.
    Jwt(jwt::Jwt),
    /// API keys by their SHA-256.
    ApiKeys(apikey::ApiKeys),
    /// Opaque tokens asked of an introspection endpoint.
    Introspection(Box<introspect::Introspection>),
    /// An external authorization service.
    External(Box<external::External>),
}

impl Authenticator {
    /// Builds the running authenticator of `settings` (key-set refresh
    /// tasks start here and end when it is dropped).
    pub fn new(name: &Arc<str>, settings: &AuthenticatorSettings) -> Self {
        match settings {
            AuthenticatorSettings::Jwt(s) => Authenticator::Jwt(jwt::Jwt::new(name, s)),
            AuthenticatorSettings::ApiKeys(s) => {
                Authenticator::ApiKeys(apikey::ApiKeys::new(name, s))
            }
            AuthenticatorSettings::Introspection(s) => {
                Authenticator::Introspection(Box::new(introspect::Introspection::new(s)))
            }
            AuthenticatorSettings::External(s) => {
                Authenticator::External(Box::new(external::External::new(s)))
            }
        }
    }

    /// Checks the request's credentials.
    pub async fn check(
        &self,
        parts: &Parts,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        match self {
            Authenticator::Jwt(a) => a.check(parts, client).await,
            Authenticator::ApiKeys(a) => a.check(parts, client).await,
            Authenticator::Introspection(a) => a.check(parts, client).await,
            Authenticator::External(a) => a.check(parts, client).await,
        }
    }

    /// Header names this authenticator may set upstream: removed from every
    /// request of its routes, so a caller cannot send them itself.
    fn owned_headers(&self) -> &[HeaderName] {
        match self {
            Authenticator::Jwt(a) => a.owned_headers(),
            Authenticator::ApiKeys(a) => a.owned_headers(),
            Authenticator::Introspection(a) => a.owned_headers(),
            Authenticator::External(a) => a.owned_headers(),
        }
    }

    /// Removes the credentials the upstream must not see (a query-parameter
    /// key or token) from an admitted request's target.
    fn scrub(&self, uri: &mut http::Uri) {
        let sources = match self {
            Authenticator::Jwt(a) => a.sources(),
            Authenticator::ApiKeys(a) => std::slice::from_ref(a.source()),
            Authenticator::Introspection(a) => a.sources(),
            Authenticator::External(_) => &[],
        };
        for source in sources {
            if let CredentialSource::Query(name) = source {
                remove_query_param(uri, name);
            }
        }
    }

    fn is_api_key(&self) -> bool {
        matches!(self, Authenticator::ApiKeys(_))
    }
}

/// The running authenticators, by name; part of the [`RouteTable`].
#[derive(Default)]
pub struct Authenticators {
    by_name: HashMap<Arc<str>, Arc<Entry>>,
}

struct Entry {
    settings: AuthenticatorSettings,
    authenticator: Authenticator,
}

impl Authenticators {
    /// The authenticators of `settings`, reusing those of `previous` whose
    /// settings are unchanged (their key caches and refresh tasks go on).
    pub fn build(settings: &AuthSettings, previous: &Authenticators) -> Self {
        let by_name = settings
            .authenticators
            .iter()
            .map(|(name, spec)| {
                let entry = match previous.by_name.get(name) {
                    Some(old) if old.settings == *spec => old.clone(),
                    _ => Arc::new(Entry {
                        settings: spec.clone(),
                        authenticator: Authenticator::new(name, spec),
                    }),
                };
                (name.clone(), entry)
            })
            .collect();
        Self { by_name }
    }

    /// The authenticator called `name`.
    pub fn get(&self, name: &str) -> Option<&Authenticator> {
        self.by_name.get(name).map(|e| &e.authenticator)
    }
}

/// Where a credential is read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer <token>` (`header:authorization`).
    Bearer,
    /// A header's whole value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value (percent-decoded).
    Query(String),
}

impl CredentialSource {
    /// Parses `header:<name>`, `cookie:<name>` or `query:<name>`; the
    /// message says what is wrong.
    pub fn parse(text: &str, allow_cookie: bool) -> Result<Self, String> {
        let (kind, name) = text.split_once(':').unwrap_or((text, ""));
        let name = name.trim();
        if name.is_empty() {
            return Err(format!(
                "invalid source {text:?} (expected header:<name>, {}query:<name>)",
                if allow_cookie { "cookie:<name>, " } else { "" }
            ));
        }
        match kind {
            "header" => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) if header == http::header::AUTHORIZATION => Ok(Self::Bearer),
                Ok(header) => Ok(Self::Header(header)),
                Err(_) => Err(format!("invalid header name {name:?}")),
            },
            "cookie" if allow_cookie => {
                if name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,".contains(&b))
                {
                    Ok(Self::Cookie(name.to_string()))
                } else {
                    Err(format!("invalid cookie name {name:?}"))
                }
            }
            "query" => Ok(Self::Query(name.to_string())),
            _ => Err(format!(
                "invalid source {text:?} (expected header:<name>, {}query:<name>)",
                if allow_cookie { "cookie:<name>, " } else { "" }
            )),
        }
    }

    /// The credential this source finds in the request, if any.
    pub fn read<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        let found = match self {
            Self::Bearer => parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| Cow::Borrowed(token.trim()))
                }),
            Self::Header(name) => parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| Cow::Borrowed(v.trim())),
            Self::Cookie(name) => parts
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    (key == name).then(|| Cow::Borrowed(value.trim_matches('"')))
                }),
            Self::Query(name) => parts.uri.query().and_then(|query| {
                query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key).as_deref() == Some(name.as_str()))
                        .then(|| percent_decode(value).map(Cow::Owned))
                        .flatten()
                })
            }),
        };
        found.filter(|v| !v.is_empty())
    }
}

/// Parses a list of sources, each error at its index.
pub(crate) fn validate_sources(
    errors: &mut Errors<'_>,
    at: &str,
    list: &[String],
) -> Vec<CredentialSource> {
    if list.is_empty() {
        errors.push(at, "must name at least one source");
    }
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match CredentialSource::parse(text, true) {
            Ok(source) => out.push(source),
            Err(message) => errors.push(&format!("{at}[{i}]"), message),
        }
    }
    out
}

/// A header name of the config, or an error at `at`.
pub(crate) fn validate_header(errors: &mut Errors<'_>, at: &str, name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| {
        errors.push(at, format!("invalid header name {name:?}"));
        HeaderName::from_static("x-invalid")
    })
}

/// `%XX` and `+` decoded; `None` if the result is not UTF-8 or an escape is bad.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Removes every `name=` parameter from the query of `uri`.
fn remove_query_param(uri: &mut http::Uri, name: &str) {
    let Some(query) = uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(key).as_deref() != Some(name)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return;
    }
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let Ok(path_and_query) = path_and_query.parse() else {
        return;
    };
    let mut pieces = uri.clone().into_parts();
    pieces.path_and_query = Some(path_and_query);
    if let Ok(rebuilt) = http::Uri::from_parts(pieces) {
        *uri = rebuilt;
    }
}

/// Validates `edge.auth`: every authenticator, names unique across kinds.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    auth: &raw::Auth,
    base: &std::path::Path,
) -> AuthSettings {
    let mut settings = AuthSettings::default();
    let mut add = |errors: &mut Errors<'_>, at: String, name: &str, spec: AuthenticatorSettings| {
        let name: Arc<str> = Arc::from(name);
        if settings.authenticators.contains_key(&name) {
            errors.push(
                &at,
                format!("authenticator name {name:?} is used twice (names are shared by jwt, api_keys, introspection and external)"),
            );
            return;
        }
        settings.names.push(name.clone());
        settings.authenticators.insert(name, spec);
    };
    for (name, jwt) in &auth.jwt {
        let at = format!("edge.auth.jwt.{name}");
        let spec = jwt::validate(errors, &at, jwt, base);
        add(errors, at, name, AuthenticatorSettings::Jwt(spec));
    }
    for (name, keys) in &auth.api_keys {
        let at = format!("edge.auth.api_keys.{name}");
        let spec = apikey::validate(errors, &at, keys, base);
        add(errors, at, name, AuthenticatorSettings::ApiKeys(spec));
    }
    for (name, introspection) in &auth.introspection {
        let at = format!("edge.auth.introspection.{name}");
        let spec = introspect::validate(errors, &at, introspection);
        add(errors, at, name, AuthenticatorSettings::Introspection(spec));
    }
    for (name, external) in &auth.external {
        let at = format!("edge.auth.external.{name}");
        let spec = external::validate(errors, &at, external);
        add(errors, at, name, AuthenticatorSettings::External(spec));
    }
    settings
}

/// Validates a route's `require:`.
pub(crate) fn validate_require(
    errors: &mut Errors<'_>,
    at: &str,
    require: &raw::Require,
) -> RequireSettings {
    for (i, scope) in require.scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            errors.push(
                &format!("{at}.scopes[{i}]"),
                format!("invalid scope {scope:?} (one word, no spaces)"),
            );
        }
    }
    for name in require.claims.keys() {
        if name.is_empty() {
            errors.push(&format!("{at}.claims"), "a claim name is empty");
        }
    }
    for (i, consumer) in require.consumers.iter().enumerate() {
        if consumer.is_empty() {
            errors.push(&format!("{at}.consumers[{i}]"), "must not be empty");
        }
    }
    RequireSettings {
        scopes: require.scopes.clone(),
        claims: require.claims.clone(),
        consumers: require.consumers.clone(),
    }
}

impl RequireSettings {
    /// Why `principal` does not meet these requirements, if it does not.
    pub fn refuses(&self, principal: &Principal) -> Option<&'static str> {
        let claims = &principal.claims;
        if !self.scopes.is_empty() {
            let mut granted: Vec<&str> = Vec::new();
            if let Some(serde_json::Value::String(scope)) = claims.get("scope") {
                granted.extend(scope.split_whitespace());
            }
            match claims.get("scp") {
                Some(serde_json::Value::Array(list)) => {
                    granted.extend(list.iter().filter_map(serde_json::Value::as_str));
                }
                Some(serde_json::Value::String(scp)) => granted.extend(scp.split_whitespace()),
                _ => {}
            }
            if !self.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                return Some("forbidden_scope");
            }
        }
        for (name, wanted) in &self.claims {
            if !claim_has(claims.get(name), wanted) {
                return Some("forbidden_claim");
            }
        }
        if !self.consumers.is_empty()
            && !principal
                .consumer
                .as_deref()
                .is_some_and(|c| self.consumers.iter().any(|allowed| allowed == c))
        {
            return Some("forbidden_consumer");
        }
        None
    }
}

/// Whether a claim is `wanted` (a string, number or boolean written the same
/// way), or an array holding it.
fn claim_has(claim: Option<&serde_json::Value>, wanted: &str) -> bool {
    let scalar = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s == wanted,
        serde_json::Value::Number(n) => n.to_string() == wanted,
        serde_json::Value::Bool(b) => b.to_string() == wanted,
        _ => false,
    };
    match claim {
        Some(serde_json::Value::Array(list)) => list.iter().any(scalar),
        Some(value) => scalar(value),
        None => false,
    }
}

/// A claim's value as a header value: strings as they are, arrays joined
/// with spaces, anything else as JSON; `None` if it cannot be a header.
pub(crate) fn claim_header(value: &serde_json::Value) -> Option<HeaderValue> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(list) => list
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Null => return None,
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

/// The outcome of a route's authenticators and requirements.
enum Verdict {
    Admit(Principal),
    Unauthenticated {
        reason: &'static str,
        bad_token: bool,
        api_key_only: bool,
    },
    Forbidden(&'static str),
    Unavailable,
}

/// Tries the route's authenticators in order; the first that admits wins.
async fn decide(
    table: &RouteTable,
    names: &[Arc<str>],
    require: Option<&RequireSettings>,
    parts: &Parts,
    client: Option<IpAddr>,
) -> Verdict {
    let (mut invalid, mut forbidden, mut unavailable) = (None, None, false);
    let mut api_key_only = true;
    for name in names {
        let Some(authenticator) = table.authenticators().get(name) else {
            // The table changed under the route (a reload in between).
            unavailable = true;
            continue;
        };
        api_key_only &= authenticator.is_api_key();
        match authenticator.check(parts, client).await {
            Ok(principal) => {
                if let Some(reason) = require.and_then(|r| r.refuses(&principal)) {
                    return Verdict::Forbidden(reason);
                }
                return Verdict::Admit(principal);
            }
            Err(AuthError::Missing) => {}
            Err(AuthError::Invalid(reason)) => {
                tracing::debug!(authenticator = %name, reason, "credentials refused");
                invalid = invalid.or(Some(reason));
            }
            Err(AuthError::Forbidden(reason)) => forbidden = forbidden.or(Some(reason)),
            Err(AuthError::Unavailable(error)) => {
                tracing::debug!(authenticator = %name, %error, "authorization service unavailable");
                unavailable = true;
            }
        }
    }
    if let Some(reason) = forbidden {
        Verdict::Forbidden(reason)
    } else if unavailable {
        Verdict::Unavailable
    } else {
        Verdict::Unauthenticated {
            reason: invalid.unwrap_or("missing"),
            bad_token: invalid.is_some(),
            api_key_only,
        }
    }
}

/// The `WWW-Authenticate` challenge of a 401.
fn challenge(realm: &str, bad_token: bool, api_key_only: bool) -> HeaderValue {
    let realm: String = realm
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    let scheme = if api_key_only { "ApiKey" } else { "Bearer" };
    let mut text = format!("{scheme} realm=\"{realm}\"");
    if bad_token && !api_key_only {
        text.push_str(", error=\"invalid_token\"");
    }
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("Bearer"))
}

/// The authentication layer of the edge stack.
pub fn layer() -> impl Layer<HttpService, Service = HttpService> + Clone {
    layer_fn(move |inner: HttpService| {
        crate::http::direct_fn(move |req: Request<Body>| {
            let Some(matched) = MatchedRoute::using(&req, |r| !r.access.auth.is_empty()) else {
                return inner.call_ref(req);
            };
            let table = matched.table().clone();
            let inner = inner.clone();
            Box::pin(async move {
                // `Request<Body>` is not `Sync`: the body waits aside while
                // the authenticators borrow the head.
                let (mut parts, body) = req.into_parts();
                admit(&table, &mut parts).await?;
                inner.call_ref(Request::from_parts(parts, body)).await
            })
        })
    })
}

/// Runs the route's authenticators on the request's head; on success the
/// head carries the principal's headers and the principal.
async fn admit(table: &RouteTable, parts: &mut Parts) -> Result<(), crate::BoxError> {
    let info = parts.extensions.get::<RequestInfo>().cloned();
    let client = info.as_ref().and_then(RequestInfo::client);
    let (verdict, realm) = {
        let Some(matched) = parts.extensions.get::<MatchedRoute>() else {
            return Ok(());
        };
        let route = matched.settings();
        let verdict = decide(
            table,
            &route.access.auth,
            route.access.require.as_ref(),
            parts,
            client,
        )
        .await;
        (verdict, route.name.clone())
    };
    let deny = |reason: &'static str| {
        if let Some(info) = &info {
            info.set_denied("auth", reason);
        }
    };
    match verdict {
        Verdict::Admit(principal) => {
            let names = parts
                .extensions
                .get::<MatchedRoute>()
                .map_or(&[][..], |m| &m.settings().access.auth);
            for name in names {
                if let Some(authenticator) = table.authenticators().get(name) {
                    for header in authenticator.owned_headers() {
                        parts.headers.remove(header);
                    }
                    authenticator.scrub(&mut parts.uri);
                }
            }
            for (name, _) in &principal.headers {
                parts.headers.remove(name);
            }
            for (name, value) in &principal.headers {
                parts.headers.append(name.clone(), value.clone());
            }
            if let (Some(info), Some(consumer)) = (&info, &principal.consumer) {
                info.set_consumer(consumer.clone());
            }
            parts.extensions.insert(principal);
            Ok(())
        }
        Verdict::Unauthenticated {
            reason,
            bad_token,
            api_key_only,
        } => {
            deny(reason);
            Err(AuthDenied::Unauthenticated {
                challenge: challenge(&realm, bad_token, api_key_only),
            }
            .into())
        }
        Verdict::Forbidden(reason) => {
            deny(reason);
            Err(crate::policy::Forbidden.into())
        }
        Verdict::Unavailable => {
            deny("unavailable");
            Err(AuthDenied::Unavailable.into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn sources_read_their_credential() {
        let p = parts(
            "/x?a=1&access_token=abc%2Edef&b=2",
            &[
                ("authorization", "Bearer tok"),
                ("cookie", "x=1; session=ck; y=2"),
                ("x-api-key", "key"),
            ],
        );
        let read = |s: &str| {
            CredentialSource::parse(s, true)
                .unwrap()
                .read(&p)
                .map(|c| c.into_owned())
        };
        assert_eq!(read("header:authorization").as_deref(), Some("tok"));
        assert_eq!(read("header:x-api-key").as_deref(), Some("key"));
        assert_eq!(read("cookie:session").as_deref(), Some("ck"));
        assert_eq!(read("query:access_token").as_deref(), Some("abc.def"));
        assert_eq!(read("query:missing"), None);
        assert!(CredentialSource::parse("body:x", true).is_err());
        assert!(CredentialSource::parse("cookie:x", false).is_err());
        let basic = parts("/", &[("authorization", "Basic abc")]);
        assert!(CredentialSource::Bearer.read(&basic).is_none());
    }

    #[test]
    fn query_credentials_are_removed() {
        let mut p = parts("/x?a=1&api_key=k&b=2", &[]);
        remove_query_param(&mut p.uri, "api_key");
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");
        let mut p = parts("/x?api_key=k", &[]);
        remove_query_param(&mut p.uri, "api_key");
        assert_eq!(p.uri.to_string(), "/x");
    }

    #[test]
    fn requirements_read_scopes_claims_and_consumers() {
        let claims = serde_json::json!({
            "scope": "read write", "scp": ["admin"], "groups": ["a", "b"], "tier": 3
        });
        let principal = Principal {
            consumer: Some(Arc::from("alice")),
            claims: Arc::new(claims.as_object().unwrap().clone()),
            ..Principal::default()
        };
        let require = |scopes: &[&str], claims: &[(&str, &str)], consumers: &[&str]| {
            RequireSettings {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                claims: claims
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                consumers: consumers.iter().map(|s| s.to_string()).collect(),
            }
            .refuses(&principal)
        };
        assert_eq!(
            require(
                &["read", "admin"],
                &[("groups", "b"), ("tier", "3")],
                &["alice"]
            ),
            None
        );
        assert_eq!(require(&["delete"], &[], &[]), Some("forbidden_scope"));
        assert_eq!(
            require(&[], &[("groups", "c")], &[]),
            Some("forbidden_claim")
        );
        assert_eq!(require(&[], &[], &["bob"]), Some("forbidden_consumer"));
    }

    #[test]
    fn unchanged_authenticators_survive_a_rebuild() {
        let keys = |sha: u8| {
            AuthenticatorSettings::ApiKeys(apikey::ApiKeySettings {
                from: CredentialSource::Header(HeaderName::from_static("x-api-key")),
                keys: vec![([sha; 32], Arc::from("acme"))],
                forward_consumer: HeaderName::from_static("x-consumer"),
            })
        };
        let settings = |second: u8| AuthSettings {
            names: vec![Arc::from("a"), Arc::from("b")],
            authenticators: [(Arc::from("a"), keys(1)), (Arc::from("b"), keys(second))]
                .into_iter()
                .collect(),
        };
        let first = Authenticators::build(&settings(2), &Authenticators::default());
        let second = Authenticators::build(&settings(3), &first);
        assert!(Arc::ptr_eq(&first.by_name["a"], &second.by_name["a"]));
        assert!(!Arc::ptr_eq(&first.by_name["b"], &second.by_name["b"]));
    }

    #[test]
    fn challenges_name_the_scheme() {
        assert_eq!(
            challenge("api", true, false),
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        assert_eq!(challenge("a\"b", false, true), "ApiKey realm=\"ab\"");
    }
}
