//! TLS material: the certificate and key a listener presents, CA files, and what a
//! session records of its handshake.
//!
//! Certificates are PEM files read with rustls-pki-types (chain first, leaf at the
//! top; the key PKCS#8, PKCS#1 or SEC1). Only the ring provider is used, passed
//! explicitly, with rustls's safe defaults: TLS 1.2 and 1.3, no renegotiation, no
//! compression. The same loader checks the files when the configuration is read, so
//! `mtactl check` reports a certificate that does not match its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate chain and its private key, PEM files (checked when the configuration
/// is loaded).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertKey {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A certificate or key file that cannot be used; the text names the file and what is
/// wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFileError(String);

/// Reads a certificate chain and its key into a server configuration; the error names
/// the file and what is wrong with it.
pub fn server_config(pair: &CertKey) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    build_server_config(pair).map_err(TlsFileError)
}

fn build_server_config(pair: &CertKey) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = certificates(&pair.certificate, "certificate file")?;
    let key = read_key(&pair.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS server configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} do not go together: {e}",
                pair.certificate.display(),
                pair.key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file, at least one; errors start with `what` and the path
/// (also for the delivery client's CA file).
pub fn read_certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    certificates(path, what).map_err(TlsFileError)
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {shown}: no CERTIFICATE in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("key file {}: no PRIVATE KEY in it", path.display())
        }
        e => format!("key file {}: {e}", path.display()),
    })
}

/// A client configuration that encrypts without authenticating the server: any
/// certificate chain and any name are accepted (opportunistic TLS, as Postfix's `may`
/// and `encrypt`), but the handshake's signatures are still checked with the
/// certificate's key, so the peer must hold the key of the certificate it shows.
pub fn unverified_client_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
        .with_no_client_auth())
}

/// The verifier of [`unverified_client_config`].
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a session knows of its TLS: for Received:, logs, rules and hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// The IANA name of the cipher suite: `TLS_AES_256_GCM_SHA384`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub cipher: String,
}

impl TlsInfo {
    /// From rustls's names (`TLSv1_3`, `TLS13_AES_256_GCM_SHA384`) to the ones mail
    /// administrators read in Postfix's logs and headers.
    pub fn from_rustls(version: &str, suite: &str) -> Self {
        let protocol = version.replace('_', ".");
        let cipher = suite
            .strip_prefix("TLS13_")
            .map_or_else(|| suite.to_owned(), |rest| format!("TLS_{rest}"));
        Self { protocol, cipher }
    }

    /// `TLSv1.3 TLS_AES_256_GCM_SHA384`: how the spool records it.
    pub fn to_record(&self) -> String {
        format!("{} {}", self.protocol, self.cipher)
    }

    pub fn from_record(s: &str) -> Option<Self> {
        let (protocol, cipher) = s.split_once(' ')?;
        Some(Self {
            protocol: protocol.to_owned(),
            cipher: cipher.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_names_become_iana_names() {
        let t = TlsInfo::from_rustls("TLSv1_3", "TLS13_AES_256_GCM_SHA384");
        assert_eq!(t.protocol, "TLSv1.3");
        assert_eq!(t.cipher, "TLS_AES_256_GCM_SHA384");
        let t = TlsInfo::from_rustls("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(t.protocol, "TLSv1.2");
        assert_eq!(t.cipher, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(TlsInfo::from_record(&t.to_record()), Some(t));
    }

    #[test]
    fn files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["mx.test".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["mx.test".into()]).unwrap();
        let (c, k, k2, junk) = (
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("k2.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(&k2, other.signing_key.serialize_pem()).unwrap();
        std::fs::write(&junk, "hello\n").unwrap();
        let pair = |c: &Path, k: &Path| CertKey {
            certificate: c.to_path_buf(),
            key: k.to_path_buf(),
        };
        assert!(server_config(&pair(&c, &k)).is_ok());
        let err = server_config(&pair(&c, &k2)).unwrap_err().to_string();
        assert!(err.contains("do not go together"), "{err}");
        let err = server_config(&pair(&junk, &k)).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = server_config(&pair(&c, &junk)).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PRIVATE KEY"),
            "{err}"
        );
        let err = server_config(&pair(&dir.path().join("missing"), &k))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
