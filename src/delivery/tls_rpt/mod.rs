//! SMTP TLS Reporting (RFC 8460), opt-in (`delivery { tls-rpt #true }`,
//! docs/outbound-tls.md): what became of each TLS policy a delivery applied, per
//! policy domain, kept under the spool ([`store`]) and sent once per interval as the
//! RFC's JSON report to the addresses the domain publishes ([`report`]).
//!
//! Delivery records one [`Event`] per new connection (or per refusal before connecting)
//! to an MX host of a recipient domain, in [`super::hops`], where the policy is decided
//! and checked: a success, or a failure with its RFC 8460 result type. Connections
//! reused for another message are not counted again (as Postfix's
//! `smtp_tlsrpt_skip_reused_handshakes`), nor are deliveries of the reports themselves
//! (RFC 8460 §5.3: they are sent despite TLS failures and not reported on).

pub mod report;
pub mod store;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// RFC 8460 §4.3's result types, as its JSON names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    /// The MX host did not offer STARTTLS (or refused it).
    StarttlsNotSupported,
    /// The certificate names none of the names the policy accepts.
    CertificateHostMismatch,
    CertificateExpired,
    /// An unknown issuer, a broken chain, a bad signature...
    CertificateNotTrusted,
    /// Anything else (a handshake that failed or timed out; an MX host that an
    /// MTA-STS policy does not list).
    ValidationFailure,
    /// TLSA records, none of which matches or can be used.
    TlsaInvalid,
    /// DNSSEC said bogus, or the validated lookup failed.
    DnssecInvalid,
    /// `dane-only` and no DNSSEC-validated TLSA records.
    DaneRequired,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The result type of a failed TLS handshake (its rustls error).
    pub fn of_handshake(e: &rustls::Error) -> ResultType {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet => {
                    ResultType::CertificateExpired
                }
                C::NotValidYetContext { .. } => ResultType::CertificateExpired,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    ResultType::CertificateHostMismatch
                }
                C::Other(o) if o.0.is::<super::tls::NameMismatch>() => {
                    ResultType::CertificateHostMismatch
                }
                C::Other(o) if o.0.is::<super::dane::TlsaMismatch>() => ResultType::TlsaInvalid,
                _ => ResultType::CertificateNotTrusted,
            },
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => ResultType::CertificateNotTrusted,
            _ => ResultType::ValidationFailure,
        }
    }
}

/// RFC 8460 §4.1's policy types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    Tlsa,
    Sts,
    NoPolicyFound,
}

/// The policy a connection was held to, as the report names it: its type, its text
/// (the TLSA records, or the MTA-STS policy's lines) and its MX hosts (the MX host for
/// TLSA, the policy's `mx` patterns for MTA-STS).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportPolicy {
    #[serde(rename = "t")]
    pub kind: PolicyType,
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub strings: Vec<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

impl ReportPolicy {
    pub fn none() -> ReportPolicy {
        ReportPolicy {
            kind: PolicyType::NoPolicyFound,
            strings: Vec::new(),
            mx_host: Vec::new(),
        }
    }
}

/// One failure's details (a `failure-details` row once aggregated).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "r")]
    pub result: ResultType,
    /// Our address towards the MX host.
    #[serde(rename = "si", default, skip_serializing_if = "Option::is_none")]
    pub sending_ip: Option<IpAddr>,
    /// The MX host's name.
    #[serde(rename = "mx")]
    pub mx: String,
    #[serde(rename = "ri", default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
}

/// What one connection (or a refusal before connecting) came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The policy domain: the recipient domain whose MX host it was, lowercase.
    #[serde(rename = "d")]
    pub domain: String,
    #[serde(rename = "p")]
    pub policy: ReportPolicy,
    /// `None`: the policy was satisfied.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The failure's text (the report's `additional-information`), bounded.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// The longest `additional-information` kept.
pub const MAX_INFO: usize = 300;

impl Event {
    pub fn success(domain: &str, policy: ReportPolicy) -> Event {
        Event {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            policy,
            failure: None,
            info: None,
        }
    }

    pub fn failure(domain: &str, policy: ReportPolicy, failure: Failure, info: &str) -> Event {
        let mut info: String = info
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_INFO)
            .collect();
        info.truncate(MAX_INFO);
        Event {
            failure: Some(failure),
            info: (!info.is_empty()).then_some(info),
            ..Event::success(domain, policy)
        }
    }
}

/// Our address when talking to `ip` (the kernel's choice of source address, found by
/// "connecting" a UDP socket, which sends nothing): the report's `sending-mta-ip`.
pub fn source_address(ip: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match ip {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = std::net::UdpSocket::bind((any, 0)).ok()?;
    s.connect((ip, 25)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_are_the_rfcs_names() {
        for r in [
            ResultType::StarttlsNotSupported,
            ResultType::CertificateHostMismatch,
            ResultType::CertificateExpired,
            ResultType::CertificateNotTrusted,
            ResultType::ValidationFailure,
            ResultType::TlsaInvalid,
            ResultType::DnssecInvalid,
            ResultType::DaneRequired,
            ResultType::StsPolicyFetchError,
            ResultType::StsPolicyInvalid,
            ResultType::StsWebpkiInvalid,
        ] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&PolicyType::NoPolicyFound).unwrap(),
            "\"no-policy-found\""
        );
    }

    #[test]
    fn handshake_errors_have_their_result_types() {
        use rustls::CertificateError as C;
        let cert = |c| rustls::Error::InvalidCertificate(c);
        assert_eq!(
            ResultType::of_handshake(&cert(C::Expired)),
            ResultType::CertificateExpired
        );
        assert_eq!(
            ResultType::of_handshake(&cert(C::NotValidForName)),
            ResultType::CertificateHostMismatch
        );
        assert_eq!(
            ResultType::of_handshake(&cert(C::UnknownIssuer)),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            ResultType::of_handshake(&rustls::Error::HandshakeNotComplete),
            ResultType::ValidationFailure
        );
    }

    #[test]
    fn failure_text_is_bounded_and_clean() {
        let e = Event::failure(
            "Example.COM.",
            ReportPolicy::none(),
            Failure {
                result: ResultType::ValidationFailure,
                sending_ip: None,
                mx: "mx.example.com".into(),
                receiving_ip: None,
            },
            &format!("a\r\nb{}", "x".repeat(1000)),
        );
        assert_eq!(e.domain, "example.com");
        let info = e.info.unwrap();
        assert!(info.starts_with("ab") && info.len() <= MAX_INFO, "{info}");
    }
}
