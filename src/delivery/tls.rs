//! Client TLS (STARTTLS with rustls) and the TLS policy of a route.
//!
//! [`TlsMode`] is what one connection requires (the destination's TLS policy decides
//! it: `delivery::tls_policy`); [`TlsClient`] holds the two rustls configurations the
//! client needs, built once and shared by every connection. Only the ring crypto
//! provider is used, passed explicitly: nothing depends on a process-wide default.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tracing::{debug, warn};

use crate::config::tls_policy::CertName;
use crate::net::dnssec::Tlsa;

/// What one connection requires of TLS; `delivery::tls_policy` derives it from the
/// destination's level (a `dane` level becomes `Verify` with TLSA records, or
/// `Opportunistic` where DNSSEC says there are none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, any certificate; plaintext when not (Postfix's `may`).
    #[default]
    Opportunistic,
    /// STARTTLS must succeed, any certificate (`encrypt`).
    Required,
    /// STARTTLS must succeed and the certificate pass the check the connection carries:
    /// a trusted chain for its names, or DANE's TLSA records.
    Verify,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Opportunistic => "opportunistic",
            TlsMode::Required => "required",
            TlsMode::Verify => "verify",
        }
    }

    /// TLS must be in place before MAIL, and before AUTH.
    pub fn is_mandatory(self) -> bool {
        matches!(self, TlsMode::Required | TlsMode::Verify)
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rustls client configurations, built once (loading the system's roots is slow)
/// and shared by every connection through an `Arc`.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Checks the certificate chain against the roots and the name: for `verify`.
    verifying: Arc<rustls::ClientConfig>,
    /// Accepts any certificate but still checks the handshake's signatures: for
    /// `opportunistic` and `required`.
    unverified: Arc<rustls::ClientConfig>,
    /// The chain checker behind `verifying`, for connections whose certificate may
    /// carry any of several names ([`TlsClient::config_for_names`]).
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// How many trust anchors `verifying` has, for logs and tests.
    roots: usize,
    /// The configurations made for one check ([`Check`]), kept so that connections
    /// under the same check share one: built once, and their TLS sessions resumed. A
    /// session is resumed only under the check it was verified with (rustls does not
    /// verify a resumed session's certificate again), so new TLSA records or names
    /// make a new configuration and a full handshake.
    checked: Arc<Mutex<HashMap<Check, Arc<rustls::ClientConfig>>>>,
}

/// A certificate check one configuration is made for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Check {
    /// DANE: these usable TLSA records (DANE-TA also checks the names).
    Dane(Arc<Vec<Tlsa>>, Vec<CertName>),
    /// A trusted chain for one of these names.
    Names(Vec<CertName>),
}

/// Most configurations [`TlsClient::checked`] keeps (one per destination host with
/// DANE or names to match, usually); past it they are all dropped and made again.
const MAX_CHECKED: usize = 4096;

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
        let roots = Arc::new(roots);
        let config_error =
            |e: &dyn fmt::Display| TlsClientError(format!("TLS client configuration: {e}"));
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| config_error(&e))?;
        let verifying = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = crate::net::tls::unverified_client_config(provider.clone())
            .map_err(|e| config_error(&e))?;
        Ok(TlsClient {
            verifying: Arc::new(verifying),
            unverified: Arc::new(unverified),
            webpki,
            provider,
            roots: count,
            checked: Arc::default(),
        })
    }

    /// The configuration for `mode`: `None` for [`TlsMode::None`]. `Verify` checks the
    /// chain and the name the connection is made with (its SNI).
    pub fn config_for(&self, mode: TlsMode) -> Option<Arc<rustls::ClientConfig>> {
        match mode {
            TlsMode::None => None,
            TlsMode::Opportunistic | TlsMode::Required => Some(self.unverified.clone()),
            TlsMode::Verify => Some(self.verifying.clone()),
        }
    }

    /// A configuration that accepts a trusted chain whose certificate carries one of
    /// `names` (Postfix's `match=`; `.domain` for any name under it), whatever name the
    /// connection sends as SNI.
    pub fn config_for_names(
        &self,
        names: &[CertName],
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        self.checked(Check::Names(names.to_vec()), || {
            Arc::new(NamesVerifier::new(self.webpki.clone(), names.to_vec()))
        })
    }

    /// The configuration for `check`, with the verifier `make` gives: the one made for
    /// the same check earlier, or a new one (kept).
    pub(crate) fn checked(
        &self,
        check: Check,
        make: impl FnOnce() -> Arc<dyn ServerCertVerifier>,
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let mut kept = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = kept.get(&check) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.with_verifier(make())?);
        if kept.len() >= MAX_CHECKED {
            kept.clear();
        }
        kept.insert(check, config.clone());
        Ok(config)
    }

    /// A client configuration with this certificate check (and our provider).
    pub(crate) fn with_verifier(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        )
    }

    pub(crate) fn provider(&self) -> &Arc<rustls::crypto::CryptoProvider> {
        &self.provider
    }

    /// How many trust anchors verification uses (system roots plus the CA file).
    pub fn root_count(&self) -> usize {
        self.roots
    }
}

/// A trusted chain for any of several names: each exact name is checked with webpki's
/// own name matching; a `.domain` is tried with each DNS name of the certificate that
/// lies under it (a wildcard `*.domain` counts).
#[derive(Debug)]
pub(super) struct NamesVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<CertName>,
}

impl NamesVerifier {
    pub(super) fn new(inner: Arc<WebPkiServerVerifier>, names: Vec<CertName>) -> NamesVerifier {
        NamesVerifier { inner, names }
    }

    /// The names to check the chain against, from the certificate's own for `.domain`.
    fn candidates(&self, end_entity: &CertificateDer<'_>) -> Vec<String> {
        let presented: Vec<String> = webpki::EndEntityCert::try_from(end_entity)
            .map(|c| c.valid_dns_names().map(str::to_ascii_lowercase).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for n in &self.names {
            match n {
                CertName::Exact(name) => out.push(name.clone()),
                CertName::Under(domain) => {
                    let suffix = format!(".{domain}");
                    for p in &presented {
                        let p = p.trim_end_matches('.');
                        if let Some(base) = p.strip_prefix("*.") {
                            // a wildcard for the domain itself or one under it
                            if base == domain || base.ends_with(&suffix) {
                                out.push(format!("wildcard.{base}"));
                            }
                        } else if p.ends_with(&suffix) {
                            out.push(p.to_owned());
                        }
                    }
                }
            }
        }
        out
    }
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        for candidate in self.candidates(end_entity) {
            let Ok(name) = ServerName::try_from(candidate) else {
                continue;
            };
            match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                &name,
                ocsp_response,
                now,
            ) {
                Ok(v) => return Ok(v),
                // another candidate may fit
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        let wanted: Vec<String> = self.names.iter().map(ToString::to_string).collect();
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NameMismatch(
                wanted.join(", "),
            )))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A trusted certificate that carries none of the names the policy accepts.
#[derive(Debug, thiserror::Error)]
#[error("certificate not valid for any of: {0}")]
pub struct NameMismatch(String);

/// The client's TLS cannot be set up: the CA file (named) cannot be read or holds no
/// certificate, or rustls refuses the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsClientError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_under_one_check_share_a_configuration_and_its_sessions() {
        let tls = TlsClient::new(None).unwrap();
        let tlsa = |byte: u8| {
            Arc::new(vec![Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![byte; 32],
            }])
        };
        let names = vec![CertName::Exact("mx.example.test".into())];
        let dane = |records: Arc<Vec<Tlsa>>| {
            let made = std::cell::Cell::new(false);
            let config = tls
                .checked(Check::Dane(records, names.clone()), || {
                    made.set(true);
                    Arc::new(NamesVerifier::new(tls.webpki.clone(), names.clone()))
                })
                .unwrap();
            (config, made.get())
        };
        let (first, made) = dane(tlsa(1));
        assert!(made);
        // the same records: the same configuration (so its resumable sessions), no new
        // verifier
        let (again, made) = dane(tlsa(1));
        assert!(!made);
        assert!(Arc::ptr_eq(&first, &again));
        // other records: another configuration, whose sessions were never verified
        // under the first check
        let (other, made) = dane(tlsa(2));
        assert!(made);
        assert!(!Arc::ptr_eq(&first, &other));
        let a = tls.config_for_names(&names).unwrap();
        assert!(Arc::ptr_eq(&a, &tls.config_for_names(&names).unwrap()));
        assert!(!Arc::ptr_eq(&a, &first));
        let elsewhere = [CertName::Under("example.test".into())];
        assert!(!Arc::ptr_eq(&a, &tls.config_for_names(&elsewhere).unwrap()));
        // bounded: past MAX_CHECKED they are made again
        for i in 0..MAX_CHECKED {
            tls.config_for_names(&[CertName::Exact(format!("mx{i}.example.test"))])
                .unwrap();
        }
        assert!(tls.checked.lock().unwrap().len() <= MAX_CHECKED);
        assert!(!Arc::ptr_eq(&a, &tls.config_for_names(&names).unwrap()));
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
