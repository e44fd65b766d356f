//! DANE's certificate check (RFC 7672 §3, RFC 6698): the server's chain against the
//! DNSSEC-validated TLSA records of the MX host.
//!
//! - DANE-EE (usage 3): the server's own certificate (or its public key) matches a
//!   record. Nothing else is checked: no name, no expiry, no CA (RFC 7672 §3.1.1).
//! - DANE-TA (usage 2): a certificate of the chain the server sent matches a record;
//!   it becomes the only trust anchor, and the server's certificate must chain to it
//!   and carry the MX host's name or the next-hop domain (RFC 7672 §3.1.2, §3.2.2).
//! - PKIX-TA/PKIX-EE (usages 0 and 1), unknown selectors and matching types, and data
//!   whose length does not fit its matching type are unusable (RFC 7672 §3.1.3).
//!
//! Selectors: 0 the full certificate, 1 its SubjectPublicKeyInfo; matching types: 0
//! exact, 1 SHA-256, 2 SHA-512.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, OtherError, RootCertStore};
use sha2::Digest;

use super::tls::NamesVerifier;
use crate::config::tls_policy::CertName;
use crate::net::dnssec::Tlsa;

/// Whether mtad can use this record for SMTP (RFC 7672 §3.1.3).
pub fn usable(t: &Tlsa) -> bool {
    matches!(t.usage, 2 | 3)
        && matches!(t.selector, 0 | 1)
        && match t.matching {
            0 => !t.data.is_empty(),
            1 => t.data.len() == 32,
            2 => t.data.len() == 64,
            _ => false,
        }
}

/// Whether record `t` matches certificate `der` (its selector and matching type).
fn matches(t: &Tlsa, der: &CertificateDer<'_>) -> bool {
    let spki;
    let content: &[u8] = match t.selector {
        0 => der.as_ref(),
        1 => match webpki::EndEntityCert::try_from(der) {
            Ok(c) => {
                spki = c.subject_public_key_info();
                spki.as_ref()
            }
            Err(_) => return false,
        },
        _ => return false,
    };
    match t.matching {
        0 => content == t.data.as_slice(),
        1 => sha2::Sha256::digest(content).as_slice() == t.data.as_slice(),
        2 => sha2::Sha512::digest(content).as_slice() == t.data.as_slice(),
        _ => false,
    }
}

/// The DANE check of one connection: its host's usable TLSA records and, for DANE-TA,
/// the names the certificate may carry.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Arc<Vec<Tlsa>>,
    names: Vec<CertName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// No TLSA record matches what the server showed; the text says what was tried.
#[derive(Debug, thiserror::Error)]
#[error("dane: TLSA mismatch: {0}")]
pub struct TlsaMismatch(String);

impl DaneVerifier {
    /// `records`: the usable ones only ([`usable`]).
    pub fn new(
        records: Arc<Vec<Tlsa>>,
        names: Vec<CertName>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> DaneVerifier {
        DaneVerifier {
            records,
            names,
            provider,
        }
    }

    fn mismatch(text: String) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            TlsaMismatch(text),
        ))))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .records
            .iter()
            .any(|t| t.usage == 3 && matches(t, end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let mut ta_error = None;
        for ta in intermediates {
            if !self.records.iter().any(|t| t.usage == 2 && matches(t, ta)) {
                continue;
            }
            let Ok(anchor) = webpki::anchor_from_trusted_cert(ta) else {
                continue;
            };
            let roots = RootCertStore {
                roots: vec![anchor.to_owned()],
            };
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            let check = NamesVerifier::new(inner, self.names.clone());
            match check.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(v) => return Ok(v),
                Err(e) => ta_error = Some(e),
            }
        }
        Err(match ta_error {
            Some(e) => Self::mismatch(format!("the chain matches a DANE-TA record but: {e}")),
            None => Self::mismatch(format!(
                "none of {} usable record(s) matches the certificate chain",
                self.records.len()
            )),
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn usable_records_are_dane_ee_and_ta_with_known_selectors_and_lengths() {
        assert!(usable(&tlsa(3, 1, 1, vec![0; 32])));
        assert!(usable(&tlsa(2, 0, 2, vec![0; 64])));
        assert!(usable(&tlsa(3, 0, 0, vec![1, 2, 3])));
        assert!(!usable(&tlsa(1, 1, 1, vec![0; 32])), "PKIX-EE");
        assert!(!usable(&tlsa(0, 1, 1, vec![0; 32])), "PKIX-TA");
        assert!(!usable(&tlsa(3, 2, 1, vec![0; 32])), "selector 2");
        assert!(!usable(&tlsa(3, 1, 3, vec![0; 32])), "matching 3");
        assert!(!usable(&tlsa(3, 1, 1, vec![0; 31])), "short SHA-256");
        assert!(!usable(&tlsa(3, 1, 2, vec![0; 32])), "short SHA-512");
        assert!(!usable(&tlsa(3, 1, 0, vec![])), "empty");
    }

    #[test]
    fn records_match_by_selector_and_matching_type() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let full = der.as_ref().to_vec();
        for t in [
            tlsa(3, 0, 0, full.clone()),
            tlsa(3, 0, 1, sha2::Sha256::digest(&full).to_vec()),
            tlsa(3, 0, 2, sha2::Sha512::digest(&full).to_vec()),
            tlsa(3, 1, 0, spki.clone()),
            tlsa(3, 1, 1, sha2::Sha256::digest(&spki).to_vec()),
            tlsa(3, 1, 2, sha2::Sha512::digest(&spki).to_vec()),
        ] {
            assert!(matches(&t, &der), "{t}");
            let mut wrong = t.clone();
            wrong.data[0] ^= 1;
            assert!(!matches(&wrong, &der), "{wrong}");
        }
        assert!(!matches(
            &tlsa(3, 1, 1, sha2::Sha256::digest(&full).to_vec()),
            &der
        ));
    }
}
