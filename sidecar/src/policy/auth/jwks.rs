//! JWT verification keys: a JWKS document parsed into keys usable with
//! `ring`, and where they come from: a file (re-read when it changes,
//! checked once a second; a bad file keeps the old keys and warns), a URL
//! (fetched at start, every `refresh`, and on an unknown `kid` at most once
//! per `min_refresh`), or a shared `secret:` (HS256).
//! Every key keeps its type (`kty`, curve) and, when the JWKS names one, its
//! `alg`: a key verifies only tokens of its own algorithm family, so an RSA
//! key's bytes can never serve as an HMAC secret.
//! Refresh tasks hold only a weak reference to their key set and end when
//! the authenticator is dropped (a reload that changed it, or the end of
//! the process).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

use crate::config::UpstreamTlsSettings;
use crate::tls::upstream::PublicTls;

/// Largest JWKS document read (file or URL).
const MAX_JWKS: usize = 1024 * 1024;
/// How often a JWKS file is checked for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);
/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A signature algorithm of the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256.
    HS256,
}

impl Algorithm {
    /// Every algorithm, for error messages.
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];

    /// The algorithm a JOSE `alg` names (`none` is none of them).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Its JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        }
    }
}

/// A key's material, by type.
#[derive(Clone)]
enum Material {
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point.
    P256(Vec<u8>),
    /// An uncompressed P-384 point.
    P384(Vec<u8>),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
    /// An HMAC secret.
    Oct(Vec<u8>),
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material: a secret must not reach a log.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HMAC key from a shared secret.
    pub fn secret(bytes: Vec<u8>) -> Self {
        Key {
            kid: None,
            alg: Some(Algorithm::HS256),
            material: Material::Oct(bytes),
        }
    }

    /// Whether this key may verify tokens of `alg`: its type must be that
    /// algorithm's, and its own `alg`, if named, that very one.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
            ) | (Material::P256(_), Algorithm::ES256)
                | (Material::P384(_), Algorithm::ES384)
                | (Material::Ed25519(_), Algorithm::EdDSA)
                | (Material::Oct(_), Algorithm::HS256)
        )
    }

    /// The key's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Verifies `signature` over `message` with `alg` (which must fit).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
        if !self.fits(alg) {
            return false;
        }
        match &self.material {
            Material::Rsa { n, e } => {
                let params = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            Material::P256(point) => UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::P384(point) => UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::Ed25519(key) => UnparsedPublicKey::new(&sig::ED25519, key)
                .verify(message, signature)
                .is_ok(),
            Material::Oct(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::verify(&key, message, signature).is_ok()
            }
        }
    }
}

/// The keys of one JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Keys that may verify a token of `alg` with `kid` (any `kid` when the
    /// token names none).
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid() == Some(kid)))
            .filter(move |k| k.fits(alg))
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Decodes unpadded base64url (padding tolerated), strictly.
pub fn base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone 6-bit group, or leftover bits that are not zero, is not base64.
    (bits < 6 && acc == 0).then_some(out)
}

/// Parses a JWKS document (`{"keys": [..]}`). Keys for encryption
/// (`use: enc`) and of types this proxy does not verify with are skipped;
/// a malformed key of a known type is an error.
pub fn parse(json: &[u8]) -> Result<KeySet, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        if let Some(key) = parse_key(jwk).map_err(|e| format!("keys[{i}]: {e}"))? {
            keys.push(key);
        }
    }
    Ok(KeySet { keys })
}

fn parse_key(jwk: &serde_json::Value) -> Result<Option<Key>, String> {
    let text = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        text(name)
            .and_then(base64url)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("\"{name}\" is missing or not base64url"))
    };
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match text("alg") {
        None => None,
        Some(alg) => match Algorithm::parse(alg) {
            Some(alg) => Some(alg),
            // A key for an algorithm not on our list never verifies anything.
            None => return Ok(None),
        },
    };
    let material = match text("kty") {
        Some("RSA") => {
            let n = bytes("n")?;
            if n.len() < 256 {
                return Err("RSA modulus shorter than 2048 bits".into());
            }
            Material::Rsa { n, e: bytes("e")? }
        }
        Some("EC") => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            let (size, curve) = match text("crv") {
                Some("P-256") => (32, 256),
                Some("P-384") => (48, 384),
                _ => return Ok(None),
            };
            if x.len() != size || y.len() != size {
                return Err(format!("\"x\" and \"y\" must be {size} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if curve == 256 {
                Material::P256(point)
            } else {
                Material::P384(point)
            }
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Ok(None);
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("\"x\" must be 32 bytes".into());
            }
            Material::Ed25519(x)
        }
        Some("oct") => Material::Oct(bytes("k")?),
        Some(_) => return Ok(None),
        None => return Err("no \"kty\"".into()),
    };
    Ok(Some(Key {
        kid: text("kid").map(str::to_string),
        alg,
        material,
    }))
}

/// Reads and parses a JWKS file.
pub fn read_file(path: &Path) -> Result<KeySet, String> {
    parse_file(path, std::fs::read(path))
}

/// Parses what reading `path` gave.
fn parse_file(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<KeySet, String> {
    let data = read.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() > MAX_JWKS {
        return Err(format!(
            "{} is larger than {MAX_JWKS} bytes",
            path.display()
        ));
    }
    parse(&data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where a key set comes from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSettings {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS URL.
    Url {
        /// The URL (http or https).
        url: Uri,
        /// Regular refresh.
        refresh: Duration,
        /// Fewest time between refreshes for unknown `kid`s.
        min_refresh: Duration,
    },
    /// An HS256 secret (the decoded bytes).
    Secret(Vec<u8>),
}

/// A running key set.
pub struct Jwks {
    keys: ArcSwap<KeySet>,
    source: JwksSettings,
    /// When the URL was last fetched (also serialises unknown-`kid` fetches).
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// Names the authenticator in logs.
    name: Arc<str>,
    /// TLS for an https URL, built once (the system roots are read here,
    /// not on every fetch).
    tls: Option<PublicTls>,
}

impl Jwks {
    /// The key set of `settings`, loaded now for a file or a secret, and
    /// kept fresh by a task that ends when the returned value is dropped.
    pub fn start(name: &Arc<str>, settings: &JwksSettings) -> Arc<Self> {
        let initial = match settings {
            JwksSettings::File(path) => read_file(path).unwrap_or_else(|error| {
                warn!(authenticator = %name, %error, "JWKS file unreadable; no keys until it is fixed");
                KeySet::default()
            }),
            JwksSettings::Secret(secret) => KeySet {
                keys: vec![Key::secret(secret.clone())],
            },
            JwksSettings::Url { .. } => KeySet::default(),
        };
        let tls = match settings {
            JwksSettings::Url { url, .. } if url.scheme_str() == Some("https") => {
                let host = url.host().unwrap_or_default();
                let settings = UpstreamTlsSettings {
                    ca: None,
                    sni: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    verify: true,
                };
                Some(PublicTls::new(&settings, name))
            }
            _ => None,
        };
        let jwks = Arc::new(Jwks {
            keys: ArcSwap::from_pointee(initial),
            source: settings.clone(),
            fetched: tokio::sync::Mutex::new(None),
            name: name.clone(),
            tls,
        });
        // Without a runtime (unit tests), keys stay as loaded.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let span = tracing::debug_span!("jwks", authenticator = %name);
            match settings {
                JwksSettings::File(path) => {
                    runtime.spawn(watch_file(Arc::downgrade(&jwks), path.clone()).instrument(span));
                }
                JwksSettings::Url { refresh, .. } => {
                    runtime.spawn(poll_url(Arc::downgrade(&jwks), *refresh).instrument(span));
                }
                JwksSettings::Secret(_) => {}
            }
        }
        jwks
    }

    /// The current keys.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// A token named a `kid` no key has: a URL is fetched again, at most
    /// once per `min_refresh` (callers at once share one fetch). True when
    /// the keys may have changed.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let JwksSettings::Url { min_refresh, .. } = &self.source else {
            return false;
        };
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < *min_refresh) {
            // Another caller may have just fetched: worth a second look.
            return true;
        }
        self.fetch_locked(&mut fetched).await;
        true
    }

    /// Fetches the URL now (the caller holds `fetched`).
    async fn fetch_locked(&self, fetched: &mut Option<Instant>) {
        let JwksSettings::Url { url, .. } = &self.source else {
            return;
        };
        *fetched = Some(Instant::now());
        match fetch(url, self.tls.as_ref())
            .await
            .and_then(|body| parse(&body))
        {
            Ok(keys) => {
                debug!(authenticator = %self.name, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
            }
            Err(error) => {
                warn!(authenticator = %self.name, url = %url, %error, "JWKS fetch failed; keeping the previous keys");
            }
        }
    }
}

/// Re-reads the file when its modification time or size changes; ends when
/// the key set is dropped.
async fn watch_file(jwks: Weak<Jwks>, path: PathBuf) {
    async fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
        let meta = tokio::fs::metadata(path).await.ok()?;
        Some((meta.modified().ok(), meta.len()))
    }
    let mut seen = stamp(&path).await;
    loop {
        tokio::time::sleep(FILE_CHECK).await;
        let Some(jwks) = jwks.upgrade() else {
            return;
        };
        let now = stamp(&path).await;
        if now == seen {
            continue;
        }
        seen = now;
        match parse_file(&path, tokio::fs::read(&path).await) {
            Ok(keys) => {
                debug!(keys = keys.len(), "JWKS file changed; keys reloaded");
                jwks.keys.store(Arc::new(keys));
            }
            Err(error) => {
                warn!(%error, "JWKS file changed but cannot be used; keeping the previous keys")
            }
        }
    }
}

/// Fetches the URL at once, then every `refresh`; ends when the key set is dropped.
async fn poll_url(jwks: Weak<Jwks>, refresh: Duration) {
    loop {
        {
            let Some(jwks) = jwks.upgrade() else {
                return;
            };
            let mut fetched = jwks.fetched.lock().await;
            if fetched.is_none_or(|at| at.elapsed() >= refresh) {
                jwks.fetch_locked(&mut fetched).await;
            }
        }
        // Check the weak reference at least once a second so the task ends
        // soon after its authenticator.
        tokio::time::sleep(refresh.min(Duration::from_secs(1))).await;
    }
}

/// GETs `url` with the proxy's HTTP client stack (TLS verified against the
/// system roots for https); the body of a 200, at most [`MAX_JWKS`] bytes.
async fn fetch(url: &Uri, tls: Option<&PublicTls>) -> Result<Bytes, String> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_once(url, tls))
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
}

async fn fetch_once(url: &Uri, tls: Option<&PublicTls>) -> Result<Bytes, String> {
    let authority = url.authority().ok_or("no host in the URL")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let tcp = crate::connect::tcp(addr, FETCH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if let Some(public) = tls {
        let config = public
            .config(crate::tls::ALPN_HTTP1)
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(public.server_name(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(format!("answered {}", parts.status));
    }
    Limited::new(body, MAX_JWKS)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading the answer: {e}"))
}

/// One request on a fresh HTTP/1 connection; the connection's task ends
/// with the exchange (the sender is dropped after it).
async fn send<T>(
    io: TokioIo<T>,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(FETCH_TIMEOUT, conn).await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64url_is_strict() {
        assert_eq!(base64url("aGk").unwrap(), b"hi");
        assert_eq!(base64url("aGk=").unwrap(), b"hi");
        assert_eq!(base64url("").unwrap(), b"");
        assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url("a+b/").is_none());
        assert!(base64url("a").is_none());
        assert!(base64url("aGl").is_none()); // non-zero leftover bits
    }

    #[test]
    fn keys_fit_only_their_family() {
        let set = parse(br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e","alg":"EdDSA"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"secp256k1","x":"AQ","y":"AQ"}
        ]}"#)
        .unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.candidates(Algorithm::HS256, None).count(), 1);
        assert_eq!(set.candidates(Algorithm::EdDSA, Some("e")).count(), 1);
        assert_eq!(set.candidates(Algorithm::EdDSA, Some("h")).count(), 0);
        assert_eq!(set.candidates(Algorithm::RS256, None).count(), 0);
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#).is_err());
    }

    #[test]
    fn hmac_verifies_with_its_secret() {
        let key = Key::secret(b"secret".to_vec());
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret"),
            b"msg",
        );
        assert!(key.verify(Algorithm::HS256, b"msg", mac.as_ref()));
        assert!(!key.verify(Algorithm::HS256, b"other", mac.as_ref()));
        assert!(!key.verify(Algorithm::RS256, b"msg", mac.as_ref()));
    }
}
