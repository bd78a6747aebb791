//! Workload identity and mutual TLS between proxies.
//! Reads the identity's cert, key and bundle files (and again whenever
//! they change: rotation without restart, a bad file keeps the old
//! identity and says why). Builds the inbound `ServerConfig` (TLS 1.3,
//! client certificate required, ALPN `h2`, `http/1.1`, `mesh/tcp`) and
//! per-upstream `ClientConfig`s that present this proxy's certificate and
//! verify the upstream's SPIFFE ID ([`verify`]). ALPN tells the inbound
//! side what is inside, so it needs no sniffing.
//! Upstreams outside the mesh get server-verified TLS instead ([`upstream`]).
//! Writes: the cert-expiry gauge; `/certs`.
//! Errors: [`TlsError`] (files), `verify::IdentityMismatch` (handshakes).

pub mod public;
pub mod upstream;
pub mod verify;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use mesh_api::admin::{CertFiles, CertInfo};
use prometheus_client::metrics::gauge::Gauge;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

use crate::config::IdentitySettings;
use crate::lock;

/// ALPN for HTTP/2 between proxies.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1 between proxies.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN for opaque TCP between proxies.
pub const ALPN_TCP: &[u8] = b"mesh/tcp";

/// An identity's files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not PEM of the right kind.
    #[error("{what} {path}: {message}")]
    File {
        /// `certificate`, `key` or `bundle`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The certificate is for another workload.
    #[error("certificate {path} is for {found:?}, but this proxy is {expected}")]
    WrongIdentity {
        /// The certificate file.
        path: String,
        /// The SPIFFE ID in it.
        found: String,
        /// This proxy's SPIFFE ID.
        expected: String,
    },
    /// rustls refused the material (e.g. key does not match certificate).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// A client config is per expected upstream identity and ALPN.
type ClientKey = (Arc<str>, &'static [u8]);

/// Loaded identity material and the configs built from it.
pub struct Loaded {
    /// The settings it was loaded from.
    pub settings: IdentitySettings,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    /// Inbound TLS: client certificates required.
    pub server: Arc<ServerConfig>,
    clients: Mutex<HashMap<ClientKey, Arc<ClientConfig>>>,
    info: CertInfo,
    digest: u64,
}

/// This proxy's identity, swapped whole on rotation.
pub struct IdentityStore {
    loaded: ArcSwapOption<Loaded>,
    last_error: Mutex<Option<String>>,
    expiry: Gauge,
    provider: Arc<CryptoProvider>,
}

impl IdentityStore {
    /// An empty store; `expiry` is set to the seconds left on the certificate.
    pub fn new(expiry: Gauge) -> Self {
        Self {
            loaded: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            expiry,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// Applies the identity part of a config: loads new files, or clears
    /// the identity. Fails (changing nothing) if the files are unusable.
    pub fn configure(&self, settings: Option<&IdentitySettings>) -> Result<(), TlsError> {
        let Some(settings) = settings else {
            self.loaded.store(None);
            return Ok(());
        };
        if self.current().is_some_and(|l| l.settings == *settings) {
            return Ok(());
        }
        let loaded = self.load(settings)?;
        self.install(loaded);
        Ok(())
    }

    /// Re-reads the files when their content changed; a failure keeps the
    /// old identity and is shown on `/certs`.
    pub fn refresh(&self) {
        let Some(current) = self.current() else {
            return;
        };
        let settings = &current.settings;
        match files_digest(&[
            ("certificate", &settings.cert),
            ("key", &settings.key),
            ("bundle", &settings.bundle),
        ]) {
            // The files are what is loaded (again): nothing to rotate, nothing wrong.
            Ok(digest) if digest == current.digest => *lock(&self.last_error) = None,
            _ => match self.load(&current.settings) {
                Ok(loaded) => {
                    info!(identity = %loaded.settings.id, serial = %loaded.info.serial, "identity rotated");
                    self.install(loaded);
                }
                Err(err) => {
                    let message = err.to_string();
                    let mut last = lock(&self.last_error);
                    if last.as_deref() != Some(message.as_str()) {
                        warn!(error = %message, "new identity files rejected; the current identity stays");
                    }
                    *last = Some(message);
                }
            },
        }
        self.update_expiry();
    }

    /// The identity in use, if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded.load_full()
    }

    /// `/certs`.
    pub fn info(&self) -> Option<CertInfo> {
        let loaded = self.current()?;
        let mut info = loaded.info.clone();
        info.expires_in_seconds = info.not_after - now_unix();
        info.last_error = lock(&self.last_error).clone();
        Some(info)
    }

    /// A client config that presents this identity, verifies `expected`
    /// and offers `alpn`; `None` without an identity.
    pub fn client_config(
        &self,
        expected: &Arc<str>,
        alpn: &'static [u8],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let loaded = self.current().ok_or_else(|| TlsError::File {
            what: "identity",
            path: String::new(),
            message: "no identity is configured".into(),
        })?;
        let mut cache = lock(&loaded.clients);
        if let Some(config) = cache.get(&(expected.clone(), alpn)) {
            return Ok(config.clone());
        }
        let verifier = verify::SpiffeVerifier {
            anchors: loaded.anchors.clone(),
            expected: expected.clone(),
            provider: self.provider.clone(),
        };
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(loaded.chain.clone(), loaded.key.clone_key())?;
        config.alpn_protocols = vec![alpn.to_vec()];
        let config = Arc::new(config);
        cache.insert((expected.clone(), alpn), config.clone());
        Ok(config)
    }

    fn install(&self, loaded: Loaded) {
        *lock(&self.last_error) = None;
        self.loaded.store(Some(Arc::new(loaded)));
        self.update_expiry();
    }

    fn update_expiry(&self) {
        if let Some(loaded) = self.current() {
            self.expiry.set(loaded.info.not_after - now_unix());
        }
    }

    fn load(&self, settings: &IdentitySettings) -> Result<Loaded, TlsError> {
        let digest = files_digest(&[
            ("certificate", &settings.cert),
            ("key", &settings.key),
            ("bundle", &settings.bundle),
        ])?;
        let (chain, key) = read_cert_and_key(&settings.cert, &settings.key)?;
        let leaf = chain.first().ok_or_else(|| {
            file_error(
                "certificate",
                &settings.cert,
                "no certificate in the file".into(),
            )
        })?;
        let bundle = read_certs("bundle", &settings.bundle)?;
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::new();
        for cert in &bundle {
            roots.add(cert.clone())?;
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| file_error("bundle", &settings.bundle, e.to_string()))?;
            anchors.push(anchor.to_owned());
        }
        let found = spiffe_id(leaf).unwrap_or_default();
        if found != settings.id {
            return Err(TlsError::WrongIdentity {
                path: settings.cert.display().to_string(),
                found,
                expected: settings.id.clone(),
            });
        }
        let (serial, not_before, not_after) = cert_facts(leaf).ok_or_else(|| {
            file_error(
                "certificate",
                &settings.cert,
                "not a valid X.509 certificate".into(),
            )
        })?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| file_error("bundle", &settings.bundle, e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        let info = CertInfo {
            identity: found,
            serial,
            not_before,
            not_after,
            expires_in_seconds: not_after - now_unix(),
            trust_anchors: anchors.len(),
            files: CertFiles {
                cert: settings.cert.display().to_string(),
                key: settings.key.display().to_string(),
                bundle: settings.bundle.display().to_string(),
            },
            last_error: None,
        };
        Ok(Loaded {
            settings: settings.clone(),
            chain,
            key,
            anchors: Arc::new(anchors),
            server: Arc::new(server),
            clients: Mutex::new(HashMap::new()),
            info,
            digest,
        })
    }
}

/// The SPIFFE ID in a certificate's URI SAN.
pub fn spiffe_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
            Some(uri.to_string())
        }
        _ => None,
    })
}

/// Serial (hex), not-before and not-after (Unix seconds).
fn cert_facts(der: &[u8]) -> Option<(String, i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let serial = cert.tbs_certificate.raw_serial_as_string().replace(':', "");
    let validity = cert.validity();
    Some((
        serial,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// A digest of the three files' contents, to notice rotation.
/// A hash of the files' contents: a watcher reloads only when it changes.
pub(crate) fn files_digest(files: &[(&'static str, &std::path::Path)]) -> Result<u64, TlsError> {
    let mut hasher = DefaultHasher::new();
    for (what, path) in files {
        let bytes = std::fs::read(path).map_err(|e| file_error(what, path, e.to_string()))?;
        bytes.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

fn file_error(what: &'static str, path: &std::path::Path, message: String) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        message,
    }
}

/// Every certificate of a PEM file (`what` names it in errors); at least one.
pub(crate) fn read_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| file_error(what, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no certificate in the file".into()));
    }
    Ok(certs)
}

/// A certificate chain (leaf first) and its private key, from PEM files.
pub(crate) fn read_cert_and_key(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs("certificate", cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key", key, e.to_string()))?;
    Ok((chain, key))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
