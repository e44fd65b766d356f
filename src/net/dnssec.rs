//! DNSSEC-validated lookups for DANE (RFC 7672): the MX records of a destination and the
//! TLSA records of its hosts, each with what DNSSEC says of them — secure, insecure
//! (no chain of trust: an unsigned zone) or bogus (a chain that does not verify: an
//! attack or a broken zone).
//!
//! hickory-resolver validates itself (a stub validator, RFC 4035 §4.9.3: it asks the
//! configured nameservers for the DNSKEY and DS records too), from trust anchors: the
//! root zone's keys by default, or a file of DNSKEY records (`delivery {
//! dnssec-trust-anchors }`, as `keymgr ... dnskey` prints them). It does not trust
//! the AD bit of an upstream resolver.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// What DNSSEC says of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validated<T> {
    /// A chain of trust from an anchor proves it (records, or that there are none).
    Secure(T),
    /// Provably outside any chain of trust (an unsigned zone): usable, but not for DANE.
    Insecure(T),
    /// Signed, but the signatures do not verify: must not be used (defer).
    Bogus(String),
    /// No answer (timeout, SERVFAIL): try again later.
    Failed(String),
}

/// One TLSA record (RFC 6698): certificate usage, selector, matching type, data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl std::fmt::Display for Tlsa {
    /// `3 1 1 ABCD…` as in a zone file, the data in hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Most records kept from one answer: an RRset larger than this is an attack.
const MAX_RECORDS: usize = 64;

/// A validating resolver. Cheap to clone.
#[derive(Clone)]
pub struct Dnssec {
    inner: Arc<TokioResolver>,
    overall: Duration,
}

impl std::fmt::Debug for Dnssec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnssec").finish_non_exhaustive()
    }
}

/// The trust anchors cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("DNSSEC trust anchors {path}: {message}")]
pub struct TrustAnchorError {
    pub path: String,
    pub message: String,
}

impl Dnssec {
    /// Asks `server` (or /etc/resolv.conf's nameservers) and validates from the
    /// anchors in `anchors` (DNSKEY records), or the root zone's when `None`.
    pub fn new(
        server: Option<SocketAddr>,
        anchors: Option<&Path>,
        query_timeout: Duration,
    ) -> Result<Dnssec, TrustAnchorError> {
        let anchors = match anchors {
            Some(path) => {
                let fail = |message: String| TrustAnchorError {
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                check_anchors(&text).map_err(fail)?
            }
            None => TrustAnchors::default(),
        };
        let servers = match server {
            Some(addr) => {
                let mut s = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut s.connections {
                    c.port = addr.port();
                }
                vec![s]
            }
            None => match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, _)) => config.into_parts().2,
                Err(e) => {
                    return Err(TrustAnchorError {
                        path: "/etc/resolv.conf".into(),
                        message: e.to_string(),
                    });
                }
            },
        };
        let mut options = ResolverOpts::default();
        options.timeout = query_timeout;
        options.attempts = 2;
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.validate = true;
        let builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .with_trust_anchor(Arc::new(anchors));
        let inner = builder.build().map_err(|e| TrustAnchorError {
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok(Dnssec {
            inner: Arc::new(inner),
            overall: query_timeout * 6 + Duration::from_secs(1),
        })
    }

    /// The MX host names of `domain` (lowercase, no trailing dot), validated. No MX
    /// record is an empty list.
    pub async fn mx(&self, domain: &str) -> Validated<Vec<String>> {
        self.query(domain, RecordType::MX, |data| match data {
            RData::MX(mx) => Some(
                mx.exchange
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
            ),
            _ => None,
        })
        .await
    }

    /// The addresses of `host`, validated: its A records, or its AAAA records when it
    /// has no A record (a CNAME on the way counts: an alias into an unsigned zone is
    /// insecure). RFC 7672 §2.2.2: the TLSA records of an MX host whose addresses are
    /// insecure are not looked up.
    pub async fn addresses(&self, host: &str) -> Validated<Vec<std::net::IpAddr>> {
        let v4 = self
            .query(host, RecordType::A, |data| match data {
                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                _ => None,
            })
            .await;
        match v4 {
            Validated::Secure(v) if v.is_empty() => {
                self.query(host, RecordType::AAAA, |data| match data {
                    RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                    _ => None,
                })
                .await
            }
            other => other,
        }
    }

    /// The TLSA records of `_port._tcp.host`, validated.
    pub async fn tlsa(&self, host: &str, port: u16) -> Validated<Vec<Tlsa>> {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        self.query(&name, RecordType::TLSA, |data| match data {
            RData::TLSA(t) => Some(Tlsa {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .await
    }

    async fn query<T>(
        &self,
        name: &str,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Validated<Vec<T>> {
        let Ok(mut fq) = Name::from_utf8(name.trim_end_matches('.')) else {
            return Validated::Bogus(format!("{name}: not a DNS name"));
        };
        fq.set_fqdn(true);
        let lookup = self.inner.lookup(fq, kind);
        let answer = match tokio::time::timeout(self.overall, lookup).await {
            Err(_) => return Validated::Failed(format!("{name} {kind}: timed out")),
            Ok(Err(e)) => return negative(name, kind, &e),
            Ok(Ok(a)) => a,
        };
        let mut proof = Proof::Secure;
        let mut out = Vec::new();
        for r in answer.answers() {
            if r.record_type() != kind {
                // a CNAME on the way: its proof counts too
                proof = proof.min(r.proof);
                continue;
            }
            proof = proof.min(r.proof);
            if out.len() < MAX_RECORDS
                && let Some(v) = pick(&r.data)
            {
                out.push(v);
            }
        }
        match proof {
            Proof::Secure => Validated::Secure(out),
            Proof::Insecure => Validated::Insecure(out),
            Proof::Bogus => Validated::Bogus(format!("{name} {kind}: signatures do not verify")),
            Proof::Indeterminate => {
                Validated::Failed(format!("{name} {kind}: DNSSEC status indeterminate"))
            }
        }
    }
}

/// Trust anchors as a file holds them: DNSKEY records in zone-file form, with TTL and
/// class (`dane.test. 3600 IN DNSKEY 257 3 13 ...`). At least one is needed.
pub fn check_anchors(text: &str) -> Result<TrustAnchors, String> {
    let keys = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with(';')
                && l.split_ascii_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("DNSKEY"))
        })
        .count();
    if keys == 0 {
        return Err("no DNSKEY record (expected `NAME TTL IN DNSKEY 257 3 ALG KEY`)".into());
    }
    text.parse::<TrustAnchors>().map_err(|e| e.to_string())
}

/// An error answer: no records (with its proof), bogus, or a failure.
fn negative<T>(name: &str, kind: RecordType, e: &NetError) -> Validated<Vec<T>> {
    let text = e.to_string();
    if let NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(no)) = e
        && matches!(
            no.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        )
    {
        let proof = no
            .authorities
            .as_deref()
            .map(|a| a.iter().map(|r| r.proof).min().unwrap_or(Proof::Insecure))
            .unwrap_or(Proof::Insecure);
        return match proof {
            Proof::Secure => Validated::Secure(Vec::new()),
            Proof::Insecure => Validated::Insecure(Vec::new()),
            Proof::Bogus => Validated::Bogus(format!("{name} {kind}: {text}")),
            Proof::Indeterminate => Validated::Failed(format!("{name} {kind}: {text}")),
        };
    }
    if text.contains("DNSSEC") || text.to_ascii_lowercase().contains("bogus") {
        return Validated::Bogus(format!("{name} {kind}: {text}"));
    }
    Validated::Failed(format!("{name} {kind}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_anchors_need_a_dnskey_record_with_ttl_and_class() {
        let key = "dane.test. 3600 IN DNSKEY 257 3 13 jabec2+x78WJBBHGwkAt0xSexPKNMWYuYRFFY2HDCt5pRvFsemJjOgxWszYGFZrD0eurnN15CM8PFNG58YHohw==\n";
        assert!(check_anchors(key).is_ok());
        assert!(
            check_anchors("; nothing\n")
                .err()
                .unwrap()
                .contains("no DNSKEY record")
        );
        assert!(check_anchors("dane.test. DNSKEY 257 3 13 AAAA\n").is_err());
    }

    #[test]
    fn tlsa_records_show_as_in_a_zone_file() {
        let t = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0x0c, 0x72, 0xff],
        };
        assert_eq!(t.to_string(), "3 1 1 0C72FF");
    }
}
