//! TLS for the WebSocket and the REST client: trust a given CA (the dev CA),
//! or, in development only, any certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Result, SdkError};

/// Which server certificates to trust.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates (one or more) to trust instead of the public roots,
    /// e.g. the gateway's dev CA.
    pub ca_pem: Option<String>,
    /// Accept any certificate. For development against self-signed servers only:
    /// it removes all protection against interception.
    pub danger_accept_invalid_certs: bool,
}

/// Installs ring as rustls' process-wide provider; harmless if one is installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A rustls configuration for the options, or `None` when the library
/// defaults (public web PKI roots) apply.
pub fn client_config(options: &TlsOptions) -> Result<Option<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SdkError::Tls(e.to_string()))?;
    if options.danger_accept_invalid_certs {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        return Ok(Some(config));
    }
    let Some(pem) = &options.ca_pem else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| SdkError::Tls(format!("ca_pem: {e}")))?;
        roots.add(cert).map_err(|e| SdkError::Tls(format!("ca_pem: {e}")))?;
    }
    if roots.is_empty() {
        return Err(SdkError::Tls("ca_pem holds no certificate".into()));
    }
    Ok(Some(builder.with_root_certificates(roots).with_no_client_auth()))
}

/// Accepts every certificate but still checks handshake signatures, so the
/// connection is at least bound to the key the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_use_library_roots() {
        assert!(client_config(&TlsOptions::default()).unwrap().is_none());
    }

    #[test]
    fn danger_option_builds_a_config() {
        let options = TlsOptions {
            danger_accept_invalid_certs: true,
            ..TlsOptions::default()
        };
        assert!(client_config(&options).unwrap().is_some());
    }

    #[test]
    fn ca_pem_is_parsed() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let options = TlsOptions {
            ca_pem: Some(cert.cert.pem()),
            ..TlsOptions::default()
        };
        assert!(client_config(&options).unwrap().is_some());
        let bad = TlsOptions {
            ca_pem: Some("not a pem".into()),
            ..TlsOptions::default()
        };
        assert!(matches!(client_config(&bad), Err(SdkError::Tls(_))));
    }
}
