//! API keys (`edge.auth.api_keys.<name>`): a key read from a header or a
//! query parameter, hashed with SHA-256 and looked up among the configured
//! digests (inline `keys:` and a `file:` read at validation, so a config
//! reload re-reads it). Only digests are kept: a lookup by digest reveals
//! nothing about a key.
//! Writes: a [`Principal`] naming the key's consumer, forwarded upstream in
//! `forward_consumer`; a query-parameter key is removed from the query sent
//! upstream (by the layer, [`super::Authenticator`]).
//! Errors: [`AuthError::Missing`] (no key), [`AuthError::Invalid`]
//! (`invalid_key`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use mesh_api::config as raw;

use super::{validate_header, AuthError, CredentialSource, Principal};
use crate::config::Errors;

/// Longest key read.
const MAX_KEY: usize = 1024;

/// `edge.auth.api_keys.<name>`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySettings {
    /// Where the key is read (a header or a query parameter).
    pub from: CredentialSource,
    /// SHA-256 of each key → its consumer.
    pub keys: Vec<([u8; 32], Arc<str>)>,
    /// The header naming the consumer upstream.
    pub forward_consumer: HeaderName,
}

/// Validates one API-key authenticator at `at`, reading its `file:`.
pub(crate) fn validate(
    errors: &mut Errors<'_>,
    at: &str,
    keys: &raw::ApiKeys,
    base: &Path,
) -> ApiKeySettings {
    let from = match CredentialSource::parse(&keys.from, false) {
        Ok(CredentialSource::Bearer) => CredentialSource::Header(http::header::AUTHORIZATION),
        Ok(source) => source,
        Err(message) => {
            errors.push(&format!("{at}.from"), message);
            CredentialSource::Header(HeaderName::from_static("x-api-key"))
        }
    };
    let forward_consumer = validate_header(
        errors,
        &format!("{at}.forward_consumer"),
        &keys.forward_consumer,
    );
    let mut digests: Vec<([u8; 32], Arc<str>)> = Vec::new();
    // `label` names a file's entry (its errors sit at the `file:` path).
    let mut add = |errors: &mut Errors<'_>, path: &str, label: &str, key: &raw::ApiKey| {
        if key.consumer.is_empty() || HeaderValue::from_str(&key.consumer).is_err() {
            errors.push(
                path,
                format!(
                    "{label}invalid consumer {:?} (printable, not empty)",
                    key.consumer
                ),
            );
            return;
        }
        let Some(digest) = parse_digest(&key.sha256) else {
            errors.push(
                path,
                format!("{label}sha256: expected 64 hex digits (the SHA-256 of the key)"),
            );
            return;
        };
        if digests.iter().any(|(d, _)| *d == digest) {
            errors.push(path, format!("{label}the same key is listed twice"));
            return;
        }
        digests.push((digest, Arc::from(key.consumer.as_str())));
    };
    for (i, key) in keys.keys.iter().enumerate() {
        add(errors, &format!("{at}.keys[{i}]"), "", key);
    }
    if let Some(file) = &keys.file {
        let path = base.join(file);
        let at_file = format!("{at}.file");
        match std::fs::read_to_string(&path) {
            Err(e) => errors.push(&at_file, format!("cannot read {}: {e}", path.display())),
            Ok(text) => match raw::ApiKey::parse_file(&text) {
                Err(e) => errors.push(&at_file, format!("{}: {e}", path.display())),
                Ok(list) => {
                    for (i, key) in list.iter().enumerate() {
                        let label = format!("{}, entry {i}: ", path.display());
                        add(errors, &at_file, &label, key);
                    }
                }
            },
        }
    }
    if keys.keys.is_empty() && keys.file.is_none() {
        errors.push(at, "needs `keys` or a `file`");
    }
    ApiKeySettings {
        from,
        keys: digests,
        forward_consumer,
    }
}

/// 64 hex digits (either case) as bytes.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A running API-key authenticator.
pub struct ApiKeys {
    name: Arc<str>,
    from: CredentialSource,
    by_digest: HashMap<[u8; 32], Arc<str>>,
    headers: [HeaderName; 1],
}

impl ApiKeys {
    /// Builds the lookup table.
    pub fn new(name: &Arc<str>, settings: &ApiKeySettings) -> Self {
        Self {
            name: name.clone(),
            from: settings.from.clone(),
            by_digest: settings.keys.iter().cloned().collect(),
            headers: [settings.forward_consumer.clone()],
        }
    }

    /// Header names this authenticator sets.
    pub(crate) fn owned_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Where the key is read.
    pub(crate) fn source(&self) -> &CredentialSource {
        &self.from
    }

    /// Looks the request's key up.
    pub async fn check(
        &self,
        parts: &Parts,
        _client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let key = self.from.read(parts).ok_or(AuthError::Missing)?;
        if key.len() > MAX_KEY {
            return Err(AuthError::Invalid("invalid_key"));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        let consumer = self
            .by_digest
            .get(&bytes)
            .ok_or(AuthError::Invalid("invalid_key"))?;
        let headers = HeaderValue::from_str(consumer)
            .map(|value| vec![(self.headers[0].clone(), value)])
            .unwrap_or_default();
        Ok(Principal {
            authenticator: self.name.clone(),
            consumer: Some(consumer.clone()),
            claims: Arc::default(),
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_found_by_digest() {
        let settings = ApiKeySettings {
            from: CredentialSource::Query("api_key".into()),
            keys: vec![(
                parse_digest(&mesh_api::apikey::digest("sekret")).unwrap(),
                Arc::from("acme"),
            )],
            forward_consumer: HeaderName::from_static("x-consumer"),
        };
        let keys = ApiKeys::new(&Arc::from("k"), &settings);
        let check = |uri: &str| {
            let parts = http::Request::get(uri).body(()).unwrap().into_parts().0;
            futures_util::FutureExt::now_or_never(keys.check(&parts, None)).unwrap()
        };
        let principal = check("/x?api_key=sekret").unwrap();
        assert_eq!(principal.consumer.as_deref(), Some("acme"));
        assert_eq!(principal.headers[0].1, "acme");
        assert!(matches!(
            check("/x?api_key=wrong"),
            Err(AuthError::Invalid("invalid_key"))
        ));
        assert!(matches!(check("/x"), Err(AuthError::Missing)));
        assert!(parse_digest("zz").is_none());
        assert!(parse_digest(&"g".repeat(64)).is_none());
    }
}
