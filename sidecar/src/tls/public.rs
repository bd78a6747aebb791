//! Public TLS on edge listeners: certificates chosen by SNI (exact host,
//! then a one-label wildcard `*.suffix`, else the listener's default),
//! TLS 1.2 and 1.3 (1.3 only when asked), ALPN from the settings.
//! Reads: the certificate and key files of a listener's `tls` settings,
//! and again whenever they change (a watcher calls [`CertStore::refresh`]
//! every second): a file that does not load, or a key that does not match
//! its certificate, keeps the certificate in use and says why, once.
//! Writes: the `ServerConfig` each new connection handshakes with,
//! swapped whole, so rotation reaches new connections and established
//! ones keep theirs.
//! Every store is also listed, weakly, for the metrics, which read the
//! loaded certificates' expiry at scrape time ([`expiries`]).
//! Errors: [`super::TlsError`] (files, rustls refusing the material).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::{info, warn};

use super::TlsError;
use crate::config::{ServerCertSettings, ServerTlsSettings};
use crate::lock;

/// One loaded certificate and what it was loaded from.
struct Entry {
    settings: ServerCertSettings,
    key: Arc<CertifiedKey>,
    /// Digest of the cert and key files' contents.
    digest: u64,
}

/// A listener's certificates, loaded, and the config built from them.
struct Loaded {
    settings: ServerTlsSettings,
    entries: Vec<Entry>,
    server: Arc<ServerConfig>,
}

/// The loaded material of every [`CertStore`] of a proxy, for the
/// certificate-expiry metric; a store leaves the list once dropped.
#[derive(Debug, Default)]
pub struct CertRegistry(Mutex<Vec<Weak<ArcSwapOption<Loaded>>>>);

impl CertRegistry {
    fn add(&self, loaded: &Arc<ArcSwapOption<Loaded>>) {
        let mut stores = lock(&self.0);
        stores.retain(|s| s.strong_count() > 0);
        stores.push(Arc::downgrade(loaded));
    }

    /// Every loaded edge certificate: its file and its `notAfter` (seconds
    /// since the Unix epoch), once per file.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        expiries(&self.0)
    }
}

fn expiries(stores: &Mutex<Vec<Weak<ArcSwapOption<Loaded>>>>) -> Vec<(String, i64)> {
    let mut stores = lock(stores);
    stores.retain(|s| s.strong_count() > 0);
    let mut found = BTreeMap::new();
    for loaded in stores.iter().filter_map(Weak::upgrade) {
        let Some(loaded) = loaded.load_full() else {
            continue;
        };
        for entry in &loaded.entries {
            let not_after = entry
                .key
                .cert
                .first()
                .and_then(|leaf| super::cert_facts(leaf))
                .map(|(_, _, not_after)| not_after);
            if let Some(not_after) = not_after {
                found
                    .entry(entry.settings.cert.display().to_string())
                    .or_insert(not_after);
            }
        }
    }
    found.into_iter().collect()
}

/// The TLS material of one edge listener, swapped whole on change.
pub struct CertStore {
    loaded: Arc<ArcSwapOption<Loaded>>,
    /// Settings that failed to load (retried by `refresh`, not per connection).
    failed: Mutex<Option<(ServerTlsSettings, String)>>,
    /// The last rotation error per certificate file, said once.
    rejected: Mutex<HashMap<std::path::PathBuf, String>>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// An empty store, listed in `registry`.
    pub fn new(registry: &CertRegistry) -> Self {
        let loaded = Arc::new(ArcSwapOption::empty());
        registry.add(&loaded);
        Self {
            loaded,
            failed: Mutex::new(None),
            rejected: Mutex::new(HashMap::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// Loads `settings` unless they are what is loaded. Fails (changing
    /// nothing) if a certificate cannot be used.
    pub fn configure(&self, settings: &ServerTlsSettings) -> Result<(), TlsError> {
        if self
            .loaded
            .load()
            .as_ref()
            .is_some_and(|l| l.settings == *settings)
        {
            return Ok(());
        }
        let current = self.loaded.load_full();
        let mut entries = Vec::with_capacity(settings.certs.len());
        for cert in &settings.certs {
            // Unchanged files of a certificate already loaded are not read twice.
            let reused = current.as_ref().and_then(|c| {
                c.entries
                    .iter()
                    .find(|e| e.settings == *cert && files_digest(cert).ok() == Some(e.digest))
            });
            match reused {
                Some(entry) => entries.push(Entry {
                    settings: cert.clone(),
                    key: entry.key.clone(),
                    digest: entry.digest,
                }),
                None => entries.push(self.load_entry(cert)?),
            }
        }
        let loaded = self.build(settings.clone(), entries)?;
        *lock(&self.failed) = None;
        self.loaded.store(Some(Arc::new(loaded)));
        Ok(())
    }

    /// The config for a new connection under `settings`: loads them first
    /// if they changed (a reload pointing at other files). Settings that
    /// cannot be loaded are tried once here (then by `refresh`), and the
    /// config in use stays; `None` only when nothing was ever loaded.
    pub fn server_config(&self, settings: &ServerTlsSettings) -> Option<Arc<ServerConfig>> {
        let current = self.loaded.load();
        let changed = current.as_ref().is_none_or(|l| l.settings != *settings);
        if changed {
            let tried = lock(&self.failed)
                .as_ref()
                .is_some_and(|(failed, _)| failed == settings);
            if !tried {
                self.try_configure(settings);
            }
        }
        self.loaded.load().as_ref().map(|l| l.server.clone())
    }

    /// Re-reads certificate files whose content changed; retries settings
    /// that failed to load. Called every second by the listener's watcher.
    pub fn refresh(&self) {
        let failed = lock(&self.failed).as_ref().map(|(s, _)| s.clone());
        if let Some(settings) = failed {
            self.try_configure(&settings);
        }
        let Some(current) = self.loaded.load_full() else {
            return;
        };
        let mut changed = false;
        let mut entries = Vec::with_capacity(current.entries.len());
        for entry in &current.entries {
            let path = &entry.settings.cert;
            if files_digest(&entry.settings).ok() == Some(entry.digest) {
                lock(&self.rejected).remove(path);
                entries.push(Entry {
                    settings: entry.settings.clone(),
                    key: entry.key.clone(),
                    digest: entry.digest,
                });
                continue;
            }
            match self.load_entry(&entry.settings) {
                Ok(fresh) => {
                    info!(cert = %path.display(), hosts = ?fresh.settings.hosts, "public certificate reloaded");
                    lock(&self.rejected).remove(path);
                    changed = true;
                    entries.push(fresh);
                }
                Err(err) => {
                    let message = err.to_string();
                    let mut rejected = lock(&self.rejected);
                    if rejected.get(path) != Some(&message) {
                        warn!(cert = %path.display(), error = %message, "new certificate files rejected; the current certificate stays");
                        rejected.insert(path.clone(), message);
                    }
                    entries.push(Entry {
                        settings: entry.settings.clone(),
                        key: entry.key.clone(),
                        digest: entry.digest,
                    });
                }
            }
        }
        if changed {
            match self.build(current.settings.clone(), entries) {
                Ok(loaded) => self.loaded.store(Some(Arc::new(loaded))),
                Err(err) => {
                    warn!(error = %err, "public TLS config rejected; the current one stays")
                }
            }
        }
    }

    fn try_configure(&self, settings: &ServerTlsSettings) {
        if let Err(err) = self.configure(settings) {
            let message = err.to_string();
            let mut failed = lock(&self.failed);
            let repeated = failed
                .as_ref()
                .is_some_and(|(s, m)| s == settings && *m == message);
            if !repeated {
                warn!(error = %message, "public TLS settings not loaded; the current certificates stay");
            }
            *failed = Some((settings.clone(), message));
        }
    }

    fn load_entry(&self, cert: &ServerCertSettings) -> Result<Entry, TlsError> {
        let digest = files_digest(cert)?;
        let (chain, key) = super::read_cert_and_key(&cert.cert, &cert.key)?;
        let certified =
            CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| TlsError::File {
                what: "key",
                path: cert.key.display().to_string(),
                message: format!("does not fit certificate {}: {e}", cert.cert.display()),
            })?;
        Ok(Entry {
            settings: cert.clone(),
            key: Arc::new(certified),
            digest,
        })
    }

    fn build(&self, settings: ServerTlsSettings, entries: Vec<Entry>) -> Result<Loaded, TlsError> {
        let resolver = SniResolver::new(&settings, &entries);
        let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        server.alpn_protocols = settings.alpn.clone();
        Ok(Loaded {
            settings,
            entries,
            server: Arc::new(server),
        })
    }
}

/// Picks a certificate by SNI: exact host, then `*.suffix` for one label,
/// else the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.test` under `example.test`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(settings: &ServerTlsSettings, entries: &[Entry]) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for entry in entries {
            for host in &entry.settings.hosts {
                match host.strip_prefix("*.") {
                    Some(suffix) => wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| entry.key.clone()),
                    None => exact
                        .entry(host.clone())
                        .or_insert_with(|| entry.key.clone()),
                };
            }
        }
        let default = entries
            .get(settings.default)
            .or_else(|| entries.first())
            .map(|e| e.key.clone());
        Self {
            exact,
            wildcard,
            default,
        }
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).cloned().or_else(|| {
                let (label, suffix) = name.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcard.get(suffix).cloned()
            })
        });
        found.or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}

/// A digest of a certificate's two files, to notice a change.
fn files_digest(cert: &ServerCertSettings) -> Result<u64, TlsError> {
    super::files_digest(&[("certificate", &cert.cert), ("key", &cert.key)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    /// A key that never signs: the resolver only hands keys out.
    #[derive(Debug)]
    struct NoSigning;

    impl rustls::sign::SigningKey for NoSigning {
        fn choose_scheme(
            &self,
            _offered: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }

        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    fn key(name: &str) -> Arc<CertifiedKey> {
        let cert = CertificateDer::from(name.as_bytes().to_vec());
        Arc::new(CertifiedKey::new(vec![cert], Arc::new(NoSigning)))
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_default() {
        let a = key("a.example.test");
        let wild = key("*.example.test");
        let default = key("default.test");
        let resolver = SniResolver {
            exact: HashMap::from([("a.example.test".to_string(), a.clone())]),
            wildcard: HashMap::from([("example.test".to_string(), wild.clone())]),
            default: Some(default.clone()),
        };
        let same = |got: Option<Arc<CertifiedKey>>, want: &Arc<CertifiedKey>| {
            Arc::ptr_eq(&got.unwrap(), want)
        };
        assert!(same(resolver.pick(Some("a.example.test")), &a));
        assert!(same(resolver.pick(Some("A.Example.Test.")), &a));
        assert!(same(resolver.pick(Some("b.example.test")), &wild));
        // A wildcard covers one label only.
        assert!(same(resolver.pick(Some("x.b.example.test")), &default));
        assert!(same(resolver.pick(Some("example.test")), &default));
        assert!(same(resolver.pick(None), &default));
    }
}
