//! JWT authentication (`edge.auth.jwt.<name>`): a compact JWS read from
//! the first `from:` source that has one, verified with `ring` against the
//! key set ([`super::jwks`]), then its time and audience claims checked.
//! Parsing is strict: three base64url parts, at most [`MAX_TOKEN`] bytes,
//! JSON objects for header and payload; `alg` must be on the allow-list
//! (never `none`) and the key must be of that algorithm's family.
//! Writes: a [`Principal`] with the payload as claims, the consumer from
//! `consumer_claim`, `forward_claims` as headers.
//! Errors: [`AuthError::Missing`] (no token), [`AuthError::Invalid`] with
//! the reason counted on the metrics: `malformed`, `algorithm`,
//! `unknown_kid`, `bad_signature`, `expired`, `not_yet_valid`,
//! `issued_in_future`, `wrong_issuer`, `wrong_audience`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::request::Parts;
use mesh_api::config as raw;
use serde_json::{Map, Value};

use super::jwks::{self, Algorithm, Jwks, JwksSettings};
use super::{
    claim_header, validate_header, validate_sources, AuthError, CredentialSource, Principal,
};
use crate::config::Errors;

/// Longest token accepted.
pub const MAX_TOKEN: usize = 16 * 1024;

/// `edge.auth.jwt.<name>`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    /// Where the keys come from.
    pub jwks: JwksSettings,
    /// Accepted `iss`; empty: any.
    pub issuers: Vec<String>,
    /// Accepted `aud` (one must match); empty: any.
    pub audiences: Vec<String>,
    /// The allow-list.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` / `nbf` / `iat`.
    pub leeway: Duration,
    /// Where the token is read, in order.
    pub from: Vec<CredentialSource>,
    /// Claim → header sent upstream.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// The claim naming the consumer.
    pub consumer_claim: String,
}

/// Validates one JWT authenticator at `at`; a JWKS file must exist and parse.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    jwt: &raw::Jwt,
    base: &Path,
) -> JwtSettings {
    let mut algorithms = Vec::new();
    if jwt.algorithms.is_empty() {
        errors.push(
            &format!("{at}.algorithms"),
            "must name at least one algorithm",
        );
    }
    for (i, name) in jwt.algorithms.iter().enumerate() {
        match Algorithm::parse(name) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => errors.push(
                &format!("{at}.algorithms[{i}]"),
                format!("{name:?} is listed twice"),
            ),
            None => errors.push(
                &format!("{at}.algorithms[{i}]"),
                format!(
                    "unknown algorithm {name:?} (one of {}; `none` is never accepted)",
                    Algorithm::ALL.map(Algorithm::as_str).join(", ")
                ),
            ),
        }
    }
    let leeway = errors.duration(&format!("{at}.leeway"), &jwt.leeway);
    if leeway > Duration::from_secs(600) {
        errors.push(
            &format!("{at}.leeway"),
            format!("at most 10m, got {:?}", jwt.leeway),
        );
    }
    let from = validate_sources(errors, &format!("{at}.from"), &jwt.from);
    let forward_claims = jwt
        .forward_claims
        .iter()
        .map(|(claim, header)| {
            let name = validate_header(errors, &format!("{at}.forward_claims.{claim}"), header);
            (claim.clone(), name)
        })
        .collect();
    if jwt.consumer_claim.is_empty() {
        errors.push(&format!("{at}.consumer_claim"), "must not be empty");
    }
    for (field, list) in [("issuers", &jwt.issuers), ("audiences", &jwt.audiences)] {
        for (i, value) in list.iter().enumerate() {
            if value.is_empty() {
                errors.push(&format!("{at}.{field}[{i}]"), "must not be empty");
            }
        }
    }
    let jwks = validate_jwks(errors, &format!("{at}.jwks"), &jwt.jwks, base, &algorithms);
    JwtSettings {
        jwks,
        issuers: jwt.issuers.clone(),
        audiences: jwt.audiences.clone(),
        algorithms,
        leeway,
        from,
        forward_claims,
        consumer_claim: jwt.consumer_claim.clone(),
    }
}

fn validate_jwks(
    errors: &mut Errors<'_>,
    at: &str,
    jwks: &raw::Jwks,
    base: &Path,
    algorithms: &[Algorithm],
) -> JwksSettings {
    let refresh = errors.duration(&format!("{at}.refresh"), &jwks.refresh);
    let min_refresh = errors.duration(&format!("{at}.min_refresh"), &jwks.min_refresh);
    let fallback = JwksSettings::Secret(Vec::new());
    match (&jwks.file, &jwks.url, &jwks.secret) {
        (Some(file), None, None) => {
            let path = base.join(file);
            if let Err(message) = jwks::read_file(&path) {
                errors.push(&format!("{at}.file"), message);
            }
            JwksSettings::File(path)
        }
        (None, Some(url), None) => {
            let parsed: Option<http::Uri> = url.parse().ok().filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority()
                        .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty())
            });
            let Some(url) = parsed else {
                errors.push(
                    &format!("{at}.url"),
                    format!("invalid URL {url:?} (expected http:// or https:// with a host)"),
                );
                return fallback;
            };
            if refresh < Duration::from_secs(1) {
                errors.push(&format!("{at}.refresh"), "must be at least 1s");
            }
            if min_refresh < Duration::from_secs(1) {
                errors.push(&format!("{at}.min_refresh"), "must be at least 1s");
            }
            JwksSettings::Url {
                url,
                refresh,
                min_refresh,
            }
        }
        (None, None, Some(secret)) => {
            if !algorithms.contains(&Algorithm::HS256) {
                errors.push(
                    &format!("{at}.secret"),
                    "a secret is for HS256, which `algorithms` does not list",
                );
            }
            match jwks::base64url(secret) {
                Some(bytes) if bytes.len() >= 32 => JwksSettings::Secret(bytes),
                Some(_) => {
                    errors.push(
                        &format!("{at}.secret"),
                        "must be at least 32 bytes (base64url)",
                    );
                    fallback
                }
                None => {
                    errors.push(&format!("{at}.secret"), "not base64url");
                    fallback
                }
            }
        }
        (None, None, None) => {
            errors.push(at, "needs one of `file`, `url` or `secret`");
            fallback
        }
        _ => {
            errors.push(at, "takes only one of `file`, `url` or `secret`");
            fallback
        }
    }
}

/// A running JWT authenticator.
pub struct Jwt {
    name: Arc<str>,
    settings: JwtSettings,
    keys: Arc<Jwks>,
    headers: Vec<HeaderName>,
}

impl Jwt {
    /// Starts the authenticator (and its key set's refresh task).
    pub fn new(name: &Arc<str>, settings: &JwtSettings) -> Self {
        Self {
            name: name.clone(),
            keys: Jwks::start(name, &settings.jwks),
            headers: settings
                .forward_claims
                .iter()
                .map(|(_, h)| h.clone())
                .collect(),
            settings: settings.clone(),
        }
    }

    /// Header names this authenticator sets.
    pub(crate) fn owned_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Where tokens are read.
    pub(crate) fn sources(&self) -> &[CredentialSource] {
        &self.settings.from
    }

    /// Verifies the request's token.
    pub async fn check(
        &self,
        parts: &Parts,
        _client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let token = self
            .settings
            .from
            .iter()
            .find_map(|source| source.read(parts))
            .ok_or(AuthError::Missing)?;
        let token = Token::parse(&token)?;
        if !self.settings.algorithms.contains(&token.alg) {
            return Err(AuthError::Invalid("algorithm"));
        }
        let mut verified = self.verify(&token);
        if verified == Err("unknown_kid") && self.keys.refresh_for_unknown_kid().await {
            verified = self.verify(&token);
        }
        verified.map_err(AuthError::Invalid)?;
        check_claims(&self.settings, &token.claims, jwks::now_secs())
            .map_err(AuthError::Invalid)?;
        Ok(self.principal(token.claims))
    }

    fn verify(&self, token: &Token) -> Result<(), &'static str> {
        let keys = self.keys.current();
        if let Some(kid) = token.kid.as_deref() {
            if !keys.has_kid(kid) {
                return Err("unknown_kid");
            }
        }
        let mut candidates = keys.candidates(token.alg, token.kid.as_deref()).peekable();
        if candidates.peek().is_none() {
            return Err(if keys.is_empty() {
                "unknown_kid"
            } else {
                "algorithm"
            });
        }
        if candidates.any(|key| key.verify(token.alg, token.signed.as_bytes(), &token.signature)) {
            Ok(())
        } else {
            Err("bad_signature")
        }
    }

    fn principal(&self, claims: Map<String, Value>) -> Principal {
        let consumer = match claims.get(&self.settings.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() => Some(Arc::from(s.as_str())),
            Some(Value::Number(n)) => Some(Arc::from(n.to_string().as_str())),
            _ => None,
        };
        let headers = self
            .settings
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| Some((header.clone(), claim_header(claims.get(claim)?)?)))
            .collect();
        Principal {
            authenticator: self.name.clone(),
            consumer,
            claims: Arc::new(claims),
            headers,
        }
    }
}

/// A token, parsed but not yet verified.
struct Token<'a> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl<'a> Token<'a> {
    fn parse(text: &'a str) -> Result<Self, AuthError> {
        const MALFORMED: AuthError = AuthError::Invalid("malformed");
        if text.len() > MAX_TOKEN {
            return Err(MALFORMED);
        }
        let mut pieces = text.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (pieces.next(), pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(MALFORMED);
        };
        let signed = &text[..header.len() + 1 + payload.len()];
        let object = |part: &str| -> Result<Map<String, Value>, AuthError> {
            let bytes = jwks::base64url(part).ok_or(MALFORMED)?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(MALFORMED),
            }
        };
        let head = object(header)?;
        let alg = match head.get("alg") {
            Some(Value::String(alg)) => {
                Algorithm::parse(alg).ok_or(AuthError::Invalid("algorithm"))?
            }
            _ => return Err(MALFORMED),
        };
        // Critical extensions we do not know must be refused (RFC 7515 4.1.11).
        if head.contains_key("crit") {
            return Err(MALFORMED);
        }
        let kid = match head.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(MALFORMED),
        };
        let signature = jwks::base64url(signature)
            .filter(|s| !s.is_empty())
            .ok_or(MALFORMED)?;
        let claims = object(payload)?;
        Ok(Token {
            alg,
            kid,
            signed,
            signature,
            claims,
        })
    }
}

/// Time, issuer and audience checks of a verified payload at `now`.
fn check_claims(
    settings: &JwtSettings,
    claims: &Map<String, Value>,
    now: i64,
) -> Result<(), &'static str> {
    let leeway = i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX);
    let time = |name: &str| -> Result<Option<i64>, &'static str> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or("malformed"),
            Some(_) => Err("malformed"),
        }
    };
    if let Some(exp) = time("exp")? {
        if now >= exp.saturating_add(leeway) {
            return Err("expired");
        }
    }
    if let Some(nbf) = time("nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err("not_yet_valid");
        }
    }
    if let Some(iat) = time("iat")? {
        if now.saturating_add(leeway) < iat {
            return Err("issued_in_future");
        }
    }
    if !settings.issuers.is_empty() {
        match claims.get("iss") {
            Some(Value::String(iss)) if settings.issuers.contains(iss) => {}
            _ => return Err("wrong_issuer"),
        }
    }
    if !settings.audiences.is_empty() {
        let matches = |v: &Value| {
            v.as_str()
                .is_some_and(|a| settings.audiences.iter().any(|w| w == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(matches),
            Some(value) => matches(value),
            None => false,
        };
        if !ok {
            return Err("wrong_audience");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn settings() -> JwtSettings {
        JwtSettings {
            jwks: JwksSettings::Secret(b"0123456789abcdef0123456789abcdef".to_vec()),
            issuers: vec!["https://issuer".into()],
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::HS256],
            leeway: Duration::from_secs(30),
            from: vec![CredentialSource::Bearer],
            forward_claims: vec![("sub".into(), HeaderName::from_static("x-user"))],
            consumer_claim: "sub".into(),
        }
    }

    fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "{signed}.{}",
            b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
        )
    }

    fn request(token: &str) -> Parts {
        http::Request::get("/")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn check(token: &str) -> Result<Principal, AuthError> {
        let name = Arc::from("t");
        let jwt = Jwt::new(&name, &settings());
        futures_util::FutureExt::now_or_never(jwt.check(&request(token), None)).unwrap()
    }

    fn reason(result: Result<Principal, AuthError>) -> &'static str {
        match result {
            Err(AuthError::Invalid(reason)) => reason,
            Err(AuthError::Missing) => "missing",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_admits_with_claims_and_headers() {
        let now = jwks::now_secs();
        let claims = serde_json::json!({"sub": "alice", "iss": "https://issuer", "aud": ["x", "api"], "exp": now + 60});
        let token = hs256(
            &serde_json::json!({"alg": "HS256"}),
            &claims,
            b"0123456789abcdef0123456789abcdef",
        );
        let principal = check(&token).unwrap();
        assert_eq!(principal.consumer.as_deref(), Some("alice"));
        assert_eq!(principal.headers[0].1, "alice");
    }

    #[test]
    fn bad_tokens_are_refused_for_their_reason() {
        let now = jwks::now_secs();
        let secret = b"0123456789abcdef0123456789abcdef";
        let header = serde_json::json!({"alg": "HS256"});
        let good = serde_json::json!({"iss": "https://issuer", "aud": "api", "exp": now + 60});
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            hs256(&header, &c, secret)
        };
        assert_eq!(reason(check(&with("exp", (now - 100).into()))), "expired");
        assert_eq!(
            reason(check(&with("nbf", (now + 100).into()))),
            "not_yet_valid"
        );
        assert_eq!(reason(check(&with("iss", "evil".into()))), "wrong_issuer");
        assert_eq!(
            reason(check(&with("aud", "other".into()))),
            "wrong_audience"
        );
        assert_eq!(reason(check(&with("exp", "soon".into()))), "malformed");
        assert_eq!(
            reason(check(&hs256(
                &header,
                &good,
                b"another secret of enough length!"
            ))),
            "bad_signature"
        );
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(good.to_string().as_bytes())
        );
        assert_eq!(reason(check(&none)), "algorithm");
        let rs = hs256(&serde_json::json!({"alg": "RS256"}), &good, secret);
        assert_eq!(reason(check(&rs)), "algorithm");
        let kid = hs256(
            &serde_json::json!({"alg": "HS256", "kid": "k9"}),
            &good,
            secret,
        );
        assert_eq!(reason(check(&kid)), "unknown_kid");
        // Within the leeway.
        assert!(check(&with("exp", (now - 10).into())).is_ok());
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.***",
            "e30.e30.",
            "W10.e30.AA",
            &"a.".repeat(10_000),
        ] {
            let result = check(garbage);
            assert!(
                matches!(result, Err(AuthError::Invalid(_) | AuthError::Missing)),
                "{garbage:.20}"
            );
        }
        let tampered = {
            let token = with("sub", "alice".into());
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = b64(
                serde_json::json!({"iss": "https://issuer", "aud": "api", "sub": "admin"})
                    .to_string()
                    .as_bytes(),
            );
            parts[1] = &forged;
            parts.join(".")
        };
        assert_eq!(reason(check(&tampered)), "bad_signature");
    }
}
