//! Verifying the upstream proxy's certificate: the chain against the trust
//! bundle (webpki, no host name: mesh certificates name a SPIFFE ID, not a
//! DNS name), then the SPIFFE ID in its URI SAN against the identity the
//! upstream must have.
//! Errors: an [`IdentityMismatch`] inside `rustls::Error::InvalidCertificate`
//! when the chain is good but the identity is not the expected one.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

/// The upstream presented a valid certificate for another identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream presented {presented}, expected {expected}")]
pub struct IdentityMismatch {
    /// The identity the config says the upstream has.
    pub expected: String,
    /// What its certificate says (empty when it names no SPIFFE ID).
    pub presented: String,
}

/// Chain + SPIFFE ID verifier for one expected upstream identity.
pub struct SpiffeVerifier {
    pub(super) anchors: Arc<Vec<TrustAnchor<'static>>>,
    pub(super) expected: Arc<str>,
    pub(super) provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(pki_error)?;
        let presented = super::spiffe_id(end_entity).unwrap_or_default();
        if presented != *self.expected {
            let mismatch = IdentityMismatch {
                expected: self.expected.to_string(),
                presented,
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )));
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pki_error(err: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let cert_error = match err {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}
