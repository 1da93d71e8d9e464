//! TLS for the client endpoints: one certificate and key (PEM files from
//! `[tls]` in the config) serve both the gRPC API and the PostgreSQL
//! protocol. Without `[tls]` both are plain TCP.

use crate::config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::rustls;

/// The loaded certificate chain and key.
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Reads and checks the files; the error names the file and the cause.
    pub fn load(config: &TlsConfig) -> Result<Tls, String> {
        let cert_pem = std::fs::read(&config.cert).map_err(|e| format!("tls: cannot read certificate {}: {e}", config.cert.display()))?;
        let key_pem = std::fs::read(&config.key).map_err(|e| format!("tls: cannot read key {}: {e}", config.key.display()))?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<_, _>>().map_err(|e| format!("tls: certificate {}: {e}", config.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("tls: {} holds no certificate", config.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("tls: key {}: {e}", config.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("tls: certificate {} and key {} do not fit: {e}", config.cert.display(), config.key.display()))?;
        Ok(Tls { cert_pem, key_pem, server: Arc::new(server) })
    }

    /// For the gRPC server.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// For the PostgreSQL protocol (SSLRequest).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}
