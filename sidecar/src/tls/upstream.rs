//! TLS to upstreams outside the mesh (an upstream's `tls:` section): the
//! server's certificate is verified with webpki against the upstream's own
//! `ca` roots, or the system's roots when it names none, and must be for
//! the configured server name (sent as SNI). ALPN offers the HTTP version
//! of the wire (`h2` or `http/1.1`), nothing for opaque TCP. The configs
//! are built once per cluster and reused by every connection of its pool.
//! `verify: false` skips certificate checks (said once, when built).
//! Errors: [`PublicTlsError`] (the handshake failed: unknown CA, name
//! mismatch; or the roots could not be loaded), reason `upstream_tls`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::warn;

use super::{ALPN_H2, ALPN_HTTP1};
use crate::config::UpstreamTlsSettings;

/// TLS with an upstream outside the mesh failed.
#[derive(Debug, thiserror::Error)]
pub enum PublicTlsError {
    /// The handshake failed (certificate not trusted, not for the server
    /// name, expired; or the server refused us).
    #[error("TLS handshake with the upstream failed: {0}")]
    Handshake(#[source] std::io::Error),
    /// The cluster's TLS settings could not be turned into a client config.
    #[error("TLS to the upstream is not usable: {0}")]
    Config(Arc<str>),
}

/// One cluster's client configs, one per ALPN offer.
struct Configs {
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    opaque: Arc<ClientConfig>,
}

/// TLS to one upstream outside the mesh.
pub struct PublicTls {
    name: ServerName<'static>,
    /// A config that could not be built fails every connection (never plaintext).
    configs: Result<Configs, Arc<str>>,
}

impl PublicTls {
    /// Builds the configs of `upstream` from its validated settings.
    pub fn new(settings: &UpstreamTlsSettings, upstream: &str) -> Self {
        if !settings.verify {
            warn!(
                upstream,
                "tls.verify is false: the upstream's certificate is not checked"
            );
        }
        // Validation checked the name; an IP literal is a valid name too.
        let name = ServerName::try_from(settings.sni.clone())
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()));
        let configs = build(settings).map_err(|message| {
            warn!(upstream, error = %message, "upstream TLS cannot be set up; its connections fail");
            Arc::from(message)
        });
        Self { name, configs }
    }

    /// The server name sent and verified.
    pub fn server_name(&self) -> ServerName<'static> {
        self.name.clone()
    }

    /// The config offering `alpn` (`h2`, `http/1.1`; anything else: no ALPN).
    pub fn config(&self, alpn: &[u8]) -> Result<Arc<ClientConfig>, PublicTlsError> {
        let configs = self
            .configs
            .as_ref()
            .map_err(|message| PublicTlsError::Config(message.clone()))?;
        Ok(match alpn {
            ALPN_H2 => configs.http2.clone(),
            ALPN_HTTP1 => configs.http1.clone(),
            _ => configs.opaque.clone(),
        })
    }
}

fn build(settings: &UpstreamTlsSettings) -> Result<Configs, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let base = if settings.verify {
        let roots = match &settings.ca {
            Some(path) => load_roots(path)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth()
    };
    let offering = |alpn: &[&[u8]]| {
        let mut config = base.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    Ok(Configs {
        http1: offering(&[ALPN_HTTP1]),
        http2: offering(&[ALPN_H2]),
        opaque: offering(&[]),
    })
}

/// The PEM certificates of `path` as trust anchors; the error names the file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {shown}"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("cannot use a certificate of {shown}: {e}"))?;
    }
    Ok(roots)
}

/// The system's trust anchors.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        warn!(error = %err, "a system root certificate could not be read");
    }
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("no system root certificate found (give tls.ca)".into());
    }
    Ok(roots)
}

/// `verify: false`: any certificate, for any name. Handshake signatures
/// are still checked, so the peer holds the key of what it presented.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = tempfile_dir();
        let missing = dir.join("missing.pem");
        let err = load_roots(&missing).unwrap_err();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = load_roots(&empty).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_ca_fails_connections_instead_of_going_plaintext() {
        let settings = UpstreamTlsSettings {
            ca: Some(std::env::temp_dir().join("sidecar-no-such-dir/gone.pem")),
            sni: "ext.example.test".into(),
            verify: true,
        };
        let tls = PublicTls::new(&settings, "ext");
        assert!(matches!(
            tls.config(ALPN_H2),
            Err(PublicTlsError::Config(_))
        ));
    }

    #[test]
    fn alpn_follows_the_wire() {
        let settings = UpstreamTlsSettings {
            ca: None,
            sni: "ext.example.test".into(),
            verify: false,
        };
        let tls = PublicTls::new(&settings, "ext");
        assert_eq!(
            tls.config(ALPN_H2).unwrap().alpn_protocols,
            [b"h2".to_vec()]
        );
        assert_eq!(
            tls.config(ALPN_HTTP1).unwrap().alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        assert!(tls
            .config(super::super::ALPN_TCP)
            .unwrap()
            .alpn_protocols
            .is_empty());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sidecar-upstream-tls-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
