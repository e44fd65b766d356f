//! Client TLS (STARTTLS with rustls) and the TLS policy of a route.
//!
//! [`TlsMode`] is what a route asks for (Postfix's `smtp_tls_security_level`: `none`,
//! `may`, `encrypt`, `secure`); [`TlsClient`] holds the two rustls configurations the
//! client needs, built once and shared by every connection. Only the ring crypto
//! provider is used, passed explicitly: nothing depends on a process-wide default.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use tracing::{debug, warn};

/// Whether and how a delivery uses STARTTLS: the route's TLS policy.
pub use crate::config::route::TlsPolicy as TlsMode;

/// The rustls client configurations, built once (loading the system's roots is slow)
/// and shared by every connection through an `Arc`.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Checks the certificate chain against the roots and the name: for `verify`.
    verifying: Arc<rustls::ClientConfig>,
    /// Accepts any certificate but still checks the handshake's signatures: for
    /// `opportunistic` and `required`.
    unverified: Arc<rustls::ClientConfig>,
    /// How many trust anchors `verifying` has, for logs and tests.
    roots: usize,
}

impl TlsClient {
    /// Builds both configurations: the verifying one trusts the system's roots
    /// (rustls-native-certs) and, when given, every certificate in the PEM file
    /// `ca_file`. An unreadable or empty `ca_file` is an error naming it; unreadable
    /// system roots are only logged (verification then fails, the other modes work).
    pub fn new(ca_file: Option<&Path>) -> Result<TlsClient, TlsClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();

        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            warn!(error = %e, "Cannot load some of the system's CA certificates.");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!(added, ignored, "System CA certificates loaded.");

        if let Some(path) = ca_file {
            let shown = path.display();
            let certs = crate::net::tls::read_certificates(path, "CA file")
                .map_err(|e| TlsClientError(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| TlsClientError(format!("CA file {shown}: {e}")))?;
            }
        }

        let count = roots.len();
        let verifying = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsClientError(format!("TLS client configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = crate::net::tls::unverified_client_config(provider)
            .map_err(|e| TlsClientError(format!("TLS client configuration: {e}")))?;
        Ok(TlsClient {
            verifying: Arc::new(verifying),
            unverified: Arc::new(unverified),
            roots: count,
        })
    }

    /// The configuration for `mode`: `None` for [`TlsMode::None`].
    pub fn config_for(&self, mode: TlsMode) -> Option<Arc<rustls::ClientConfig>> {
        match mode {
            TlsMode::None => None,
            TlsMode::Opportunistic | TlsMode::Required => Some(self.unverified.clone()),
            TlsMode::Verify => Some(self.verifying.clone()),
        }
    }

    /// How many trust anchors verification uses (system roots plus the CA file).
    pub fn root_count(&self) -> usize {
        self.roots
    }
}

/// The client's TLS cannot be set up: the CA file (named) cannot be read or holds no
/// certificate, or rustls refuses the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsClientError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_with_postfix_aliases_and_display_canonically() {
        for (s, mode) in [
            ("none", TlsMode::None),
            ("may", TlsMode::Opportunistic),
            ("Opportunistic", TlsMode::Opportunistic),
            ("encrypt", TlsMode::Required),
            ("required", TlsMode::Required),
            ("secure", TlsMode::Verify),
            ("VERIFY", TlsMode::Verify),
        ] {
            assert_eq!(s.parse::<TlsMode>(), Ok(mode), "{s}");
        }
        assert_eq!(TlsMode::Opportunistic.to_string(), "opportunistic");
        let err = "dane".parse::<TlsMode>().unwrap_err().to_string();
        assert!(
            err.contains("`dane`") && err.contains("opportunistic"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = TlsClient::new(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsClient::new(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn modes_pick_their_configuration() {
        let client = TlsClient::new(None).unwrap();
        assert!(client.config_for(TlsMode::None).is_none());
        let verify = client.config_for(TlsMode::Verify).unwrap();
        let may = client.config_for(TlsMode::Opportunistic).unwrap();
        assert!(!Arc::ptr_eq(&verify, &may));
        assert!(Arc::ptr_eq(
            &may,
            &client.config_for(TlsMode::Required).unwrap()
        ));
    }
}
