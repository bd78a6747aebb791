//! OAuth2 token introspection (RFC 7662, `edge.auth.introspection`): an
//! opaque token is checked by asking the authorization server's
//! introspection endpoint.
//! Reads: the token from the first of the `from:` sources that has one
//! (`header:authorization` as a Bearer token, `header:<name>`,
//! `cookie:<name>`, `query:<name>`).
//! Sends: `POST` `token=<t>&token_type_hint=access_token`
//! (`application/x-www-form-urlencoded`) with the client credentials as
//! HTTP Basic, through the shared [`ServiceClient`].
//! Writes: a [`Principal`] whose claims are the answer's fields, consumer
//! from `consumer_claim`, `forward_claims` as headers.
//! Caches: each answer by the SHA-256 of its token (never the token),
//! an active one until the earlier of its `exp` and `cache`, an inactive
//! one for [`NEGATIVE_TTL`]; at most [`CACHE_ENTRIES`], the oldest evicted
//! first.
//! Errors: [`AuthError::Missing`] (no token), [`AuthError::Invalid`]
//! (`active: false`, or expired), [`AuthError::Unavailable`] (the endpoint
//! cannot be reached, times out, answers 5xx, a non-200 or no JSON with
//! `active`): never admitting when it cannot ask.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use mesh_api::config as raw;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::debug;

use super::external::{name_of, validate_timeout, validate_url, ServiceClient, ServiceUrl};
use super::{
    claim_header, validate_header, validate_sources, AuthError, CredentialSource, Principal,
};
use crate::config::Errors;

/// Answers cached per introspection endpoint.
pub const CACHE_ENTRIES: usize = 10_000;
/// How long an inactive answer is cached (never longer than `cache`).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Longest `cache:` allowed.
const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// Longest token read.
const MAX_TOKEN: usize = 8 * 1024;

/// Form-encodes `text` (`application/x-www-form-urlencoded`).
fn form_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// Standard base64 with padding (HTTP Basic credentials).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An introspection endpoint, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionSettings {
    /// Its name in `edge.auth.introspection`.
    pub name: Arc<str>,
    /// The endpoint.
    pub endpoint: ServiceUrl,
    /// `client_id` and `client_secret`, sent as HTTP Basic.
    pub credentials: Option<(String, String)>,
    /// Where the token is read, in order.
    pub from: Vec<CredentialSource>,
    /// Longest an active answer is cached.
    pub cache: Duration,
    /// Per call.
    pub timeout: Duration,
    /// Answer field → header sent upstream.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// The answer's field naming the consumer.
    pub consumer_claim: String,
}

/// Validates `edge.auth.introspection.<name>` at `at`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    raw: &raw::Introspection,
) -> IntrospectionSettings {
    let endpoint = validate_url(errors, &format!("{at}.endpoint"), &raw.endpoint);
    let credentials = match (&raw.client_id, &raw.client_secret) {
        (Some(id), secret) => {
            if id.is_empty() || id.contains(':') {
                errors.push(
                    &format!("{at}.client_id"),
                    "must be non-empty and without ':'",
                );
            }
            Some((id.clone(), secret.clone().unwrap_or_default()))
        }
        (None, Some(_)) => {
            errors.push(&format!("{at}.client_secret"), "needs `client_id`");
            None
        }
        (None, None) => None,
    };
    let from = validate_sources(errors, &format!("{at}.from"), &raw.from);
    let cache = errors.duration(&format!("{at}.cache"), &raw.cache);
    if cache > MAX_CACHE {
        errors.push(
            &format!("{at}.cache"),
            format!("must be at most 24h, got {:?}", raw.cache),
        );
    }
    let timeout = validate_timeout(errors, &format!("{at}.timeout"), &raw.timeout);
    let forward_claims = raw
        .forward_claims
        .iter()
        .map(|(claim, header)| {
            let at = format!("{at}.forward_claims.{claim}");
            (claim.clone(), validate_header(errors, &at, header))
        })
        .collect();
    if raw.consumer_claim.is_empty() {
        errors.push(&format!("{at}.consumer_claim"), "must not be empty");
    }
    IntrospectionSettings {
        name: name_of(at),
        endpoint,
        credentials,
        from,
        cache,
        timeout,
        forward_claims,
        consumer_claim: raw.consumer_claim.clone(),
    }
}

/// A cached answer: the claims of an active token, or `None` (inactive).
struct Entry {
    claims: Option<Arc<Map<String, Value>>>,
    until: Instant,
    /// Which insertion this is, so eviction skips replaced entries.
    serial: u64,
}

/// Answers by SHA-256 of the token, oldest evicted first.
#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], Entry>,
    order: VecDeque<([u8; 32], u64)>,
    serial: u64,
}

impl Cache {
    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Option<Arc<Map<String, Value>>>> {
        let entry = self.entries.get(key)?;
        if entry.until > now {
            return Some(entry.claims.clone());
        }
        self.entries.remove(key);
        None
    }

    fn insert(&mut self, key: [u8; 32], claims: Option<Arc<Map<String, Value>>>, until: Instant) {
        self.serial += 1;
        let serial = self.serial;
        self.entries.insert(
            key,
            Entry {
                claims,
                until,
                serial,
            },
        );
        self.order.push_back((key, serial));
        while self.entries.len() > CACHE_ENTRIES || self.order.len() > 2 * CACHE_ENTRIES {
            let Some((old, serial)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.serial == serial) {
                self.entries.remove(&old);
            }
        }
    }
}

/// An introspection endpoint at run time (one pointer wide).
pub struct Introspection(Box<State>);

struct State {
    settings: IntrospectionSettings,
    /// The `forward_claims` headers.
    owned: Vec<HeaderName>,
    client: ServiceClient,
    authorization: Option<HeaderValue>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("name", &self.0.settings.name)
            .finish_non_exhaustive()
    }
}

impl Introspection {
    /// The endpoint of `settings`, with an empty cache.
    pub fn new(settings: &IntrospectionSettings) -> Self {
        let authorization = settings.credentials.as_ref().and_then(|(id, secret)| {
            let mut value = HeaderValue::from_str(&format!(
                "Basic {}",
                base64(format!("{id}:{secret}").as_bytes())
            ))
            .ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Self(Box::new(State {
            owned: settings
                .forward_claims
                .iter()
                .map(|(_, h)| h.clone())
                .collect(),
            client: ServiceClient::new(&settings.endpoint, settings.timeout, &settings.name),
            settings: settings.clone(),
            authorization,
            cache: Mutex::new(Cache::default()),
        }))
    }

    /// Headers it sets upstream (`forward_claims`): a caller's own copies
    /// are removed.
    pub fn owned_headers(&self) -> &[HeaderName] {
        &self.0.owned
    }

    /// Where it reads the token (a query token is removed before upstream).
    pub fn sources(&self) -> &[CredentialSource] {
        &self.0.settings.from
    }

    /// Checks the request's token (`client` is not used).
    pub async fn check(
        &self,
        parts: &Parts,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let _ = client;
        self.0.check(parts).await
    }
}

impl State {
    async fn check(&self, parts: &Parts) -> Result<Principal, AuthError> {
        let token = self
            .settings
            .from
            .iter()
            .find_map(|source| source.read(parts))
            .ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN {
            return Err(AuthError::Invalid("token too long"));
        }
        let key = sha256(token.as_bytes());
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key, Instant::now());
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let (claims, ttl) = self.introspect(&token).await?;
                let until = Instant::now() + ttl.min(MAX_CACHE);
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    key,
                    claims.clone(),
                    until,
                );
                claims
            }
        };
        let claims = claims.ok_or(AuthError::Invalid("token not active"))?;
        Ok(self.principal(claims))
    }

    /// Asks the endpoint; the answer and how long it may be cached.
    async fn introspect(
        &self,
        token: &str,
    ) -> Result<(Option<Arc<Map<String, Value>>>, Duration), AuthError> {
        let mut form = String::with_capacity(token.len() + 40);
        form.push_str("token=");
        form_encode(token, &mut form);
        form.push_str("&token_type_hint=access_token");
        let unavailable = |why: String| {
            debug!(introspection = %self.settings.name, error = %why, "introspection endpoint unavailable");
            AuthError::Unavailable(format!("introspection endpoint {}", self.settings.name))
        };
        let answer = self
            .client
            .post(
                "application/x-www-form-urlencoded",
                self.authorization.as_ref(),
                Bytes::from(form),
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if answer.status != StatusCode::OK {
            return Err(unavailable(format!("answered {}", answer.status)));
        }
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&answer.body) else {
            return Err(unavailable("answer is not a JSON object".into()));
        };
        let negative = NEGATIVE_TTL.min(self.settings.cache);
        match claims.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Ok((None, negative)),
            _ => return Err(unavailable("answer has no boolean `active`".into())),
        }
        let mut ttl = self.settings.cache;
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            if exp <= now {
                return Ok((None, negative));
            }
            ttl = ttl.min(Duration::from_secs_f64((exp - now).min(1e9)));
        }
        Ok((Some(Arc::new(claims)), ttl))
    }

    fn principal(&self, claims: Arc<Map<String, Value>>) -> Principal {
        let consumer = claims
            .get(&self.settings.consumer_claim)
            .and_then(|value| match value {
                Value::String(s) => Some(Arc::from(s.as_str())),
                Value::Number(n) => Some(Arc::from(n.to_string())),
                _ => None,
            });
        let headers = self
            .settings
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| Some((header.clone(), claim_header(claims.get(claim)?)?)))
            .collect();
        Principal {
            authenticator: self.settings.name.clone(),
            consumer,
            claims,
            headers,
        }
    }
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"corp:s3cret"), "Y29ycDpzM2NyZXQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let mut out = String::new();
        form_encode("a b+c/=é", &mut out);
        assert_eq!(out, "a+b%2Bc%2F%3D%C3%A9");
    }

    #[test]
    fn cache_expires_and_evicts_oldest() {
        let now = Instant::now();
        let mut cache = Cache::default();
        cache.insert([1; 32], None, now + Duration::from_secs(5));
        assert!(matches!(cache.get(&[1; 32], now), Some(None)));
        assert!(cache.get(&[1; 32], now + Duration::from_secs(6)).is_none());
        for i in 0..=CACHE_ENTRIES {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(key, None, now + Duration::from_secs(60));
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        assert!(cache.get(&[0; 32], now).is_none(), "the oldest went first");
    }
}
