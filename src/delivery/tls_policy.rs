//! The TLS policy of one delivery to one host: the one decision that delivery
//! ([`super::hops`]), `mtactl test-policy` and `mtactl tls-probe` share
//! (docs/outbound-tls.md).
//!
//! [`crate::config::tls_policy::choose`] gives the configured level of the destination
//! (route `tls=`, `tls-policy-map`, `delivery { tls }`). [`Destination::new`] adds what
//! DNSSEC says of its MX records, once per destination; [`Destination::host`] what it
//! says of each host's TLSA records, and gives a [`HostPolicy`]: the TLS the connection
//! must achieve, the certificate check, or a refusal (defer without connecting).
//!
//! DANE's fallbacks are RFC 7672's and Postfix's: MX or TLSA records that DNSSEC says
//! are unsigned → not DANE (`dane` is then `opportunistic`; `dane-only` defers); bogus
//! → defer; a failed lookup → defer; TLSA records that are all unusable → mandatory TLS
//! without authentication (`dane-only` defers).

use std::fmt;
use std::sync::Arc;

use super::dane::{DaneVerifier, usable};
use super::mta_sts::{Cached, MtaSts};
use super::tls::{Check, TlsClient, TlsMode};
use super::tls_rpt::{PolicyType, ReportPolicy, ResultType};
use crate::config::route::{NextHop, TlsPolicy, Transport};
use crate::config::tls_policy::{CertName, ChosenRule};
use crate::net::dnssec::{Dnssec, Tlsa, Validated};

/// What DANE contributes to one host's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneState {
    /// The level does not use DANE.
    NotUsed,
    /// DNSSEC says the MX or TLSA records are not signed (or there are no TLSA
    /// records, provably): not DANE. The text says which.
    Insecure(String),
    /// Validated, usable TLSA records: the certificate must match one of them.
    Usable(Arc<Vec<Tlsa>>),
    /// Validated TLSA records, none usable: TLS is mandatory, not authenticated.
    Unusable(usize),
}

/// The TLS a connection to one host must achieve, and why.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    /// The configured level and where it came from.
    pub chosen: ChosenRule,
    /// What the connection requires.
    pub mode: TlsMode,
    /// For `verify`/`secure`: the names a trusted certificate may carry.
    pub names: Vec<CertName>,
    pub dane: DaneState,
    /// The destination's MTA-STS policy, when it has one: its mode and id.
    pub mta_sts: Option<(crate::net::mta_sts::Mode, String)>,
    /// Set when nothing may be sent to the host (a `dane-only` destination without
    /// DANE, bogus DNSSEC, a failed lookup): the reason, for the defer.
    pub refusal: Option<String>,
    /// The refusal's kind, as TLS reports name it.
    pub refusal_result: ResultType,
    /// The policy as TLS reports (RFC 8460) name it.
    pub report: ReportPolicy,
    /// A failure to report for any connection under this policy though it does not stop
    /// it (the MTA-STS policy that could not be fetched): its kind and text.
    pub report_failure: Option<(ResultType, String)>,
}

impl HostPolicy {
    /// The level as the log shows it: `dane`, `dane (no TLSA: opportunistic)`,
    /// `secure`... with where the level came from.
    pub fn label(&self) -> String {
        let level = self.chosen.rule.level;
        let detail = match (&self.dane, self.mode) {
            (DaneState::Usable(r), _) => format!(" ({} TLSA record(s))", r.len()),
            (DaneState::Unusable(n), _) => {
                format!(" ({n} TLSA record(s), none usable: unauthenticated TLS required)")
            }
            (DaneState::Insecure(why), mode) => format!(" ({why}: {mode})"),
            (DaneState::NotUsed, _) => String::new(),
        };
        let sts = match &self.mta_sts {
            Some((mode, id)) => format!(", mta-sts {} (id {id})", mode.as_str()),
            None => String::new(),
        };
        format!("{level}{detail} from {}{sts}", self.chosen.source)
    }

    /// The policy a connection met, as the delivery log line's `tls=` says it: `dane`
    /// (usable TLSA records), `mta-sts` (an enforced policy), `mta-sts-testing`, else the
    /// level (`secure`, `verify`, `required`, `opportunistic`; a DANE level without
    /// usable TLSA records as the TLS it required); `none` over plaintext.
    pub fn applied(&self, encrypted: bool) -> &'static str {
        use crate::net::mta_sts::Mode;
        if !encrypted {
            return "none";
        }
        if matches!(self.dane, DaneState::Usable(_)) {
            return "dane";
        }
        match &self.mta_sts {
            Some((Mode::Enforce, _)) => return "mta-sts",
            Some((Mode::Testing, _)) => return "mta-sts-testing",
            _ => {}
        }
        match self.chosen.rule.level {
            TlsPolicy::Dane | TlsPolicy::DaneOnly => match self.mode {
                TlsMode::Opportunistic => "opportunistic",
                _ => "required",
            },
            level => level.as_str(),
        }
    }

    /// The certificate check of a connection under this policy (`None`: the TLS
    /// client's own for [`HostPolicy::mode`]).
    pub fn check(
        &self,
        tls: &TlsClient,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, rustls::Error> {
        if let DaneState::Usable(records) = &self.dane {
            let check = Check::Dane(records.clone(), self.names.clone());
            let config = tls.checked(check, || {
                Arc::new(DaneVerifier::new(
                    records.clone(),
                    self.names.clone(),
                    tls.provider().clone(),
                ))
            })?;
            return Ok(Some(config));
        }
        if self.mode == TlsMode::Verify && !self.names.is_empty() {
            return Ok(Some(tls.config_for_names(&self.names)?));
        }
        Ok(None)
    }
}

impl fmt::Display for HostPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The next-hop name of a transport, as TLS policies name it: the domain of an MX next
/// hop, the host of a `[host]` one.
pub fn nexthop_name(transport: &Transport) -> Option<&str> {
    match transport {
        Transport::Smtp(NextHop::Mx { domain, .. }) => Some(domain),
        Transport::Smtp(NextHop::Host { host, .. }) => Some(host),
        _ => None,
    }
}

/// One destination's configured level and what DNSSEC said of its MX records.
#[derive(Clone, Debug)]
pub struct Destination {
    chosen: ChosenRule,
    nexthop: String,
    /// `Ok(true)`: validated MX (or not an MX next hop); `Ok(false)`: unsigned;
    /// `Err`: bogus or failed, the reason.
    mx: Result<bool, String>,
    /// The recipient domain's MTA-STS policy (MX next hops at `opportunistic`,
    /// `required` or `dane`: the levels it can raise).
    sts: Option<Cached>,
    /// Why the recipient domain's published MTA-STS policy could not be had (none
    /// being in force), for TLS reports.
    sts_failure: Option<(ResultType, String)>,
    /// The recipient domain of an MX next hop: the policy domain TLS reports name.
    policy_domain: Option<String>,
}

impl Destination {
    /// For `transport` (one destination of a route) under `chosen`. For a DANE level
    /// and an MX next hop, the MX records are looked up validated (`dnssec`; `None`:
    /// no validating resolver, so nothing is secure).
    pub async fn new(
        chosen: ChosenRule,
        transport: &Transport,
        dnssec: Option<&Dnssec>,
        mta_sts: Option<&MtaSts>,
    ) -> Destination {
        let sts = match (transport, mta_sts, chosen.rule.level) {
            (
                Transport::Smtp(NextHop::Mx { domain, .. }),
                Some(m),
                TlsPolicy::Opportunistic | TlsPolicy::Required | TlsPolicy::Dane,
            ) => m.lookup(domain).await,
            _ => (None, None),
        };
        let (sts, sts_failure) = sts;
        let nexthop = nexthop_name(transport).unwrap_or_default().to_owned();
        let mx = match (chosen.rule.level.uses_dane(), transport, dnssec) {
            (false, _, _) => Ok(true),
            (true, Transport::Smtp(NextHop::Mx { domain, .. }), Some(d)) => {
                match d.mx(domain).await {
                    Validated::Secure(_) => Ok(true),
                    Validated::Insecure(_) => Ok(false),
                    Validated::Bogus(e) => Err(format!("dane: MX records are bogus: {e}")),
                    Validated::Failed(e) => Err(format!("dane: MX lookup failed: {e}")),
                }
            }
            (true, Transport::Smtp(NextHop::Mx { .. }), None) => Ok(false),
            (true, _, _) => Ok(true),
        };
        let policy_domain = match transport {
            Transport::Smtp(NextHop::Mx { domain, .. }) => {
                Some(domain.trim_end_matches('.').to_ascii_lowercase())
            }
            _ => None,
        };
        Destination {
            chosen,
            nexthop,
            mx,
            sts,
            sts_failure,
            policy_domain,
        }
    }

    /// The recipient domain of an MX next hop (TLS reports are about those only).
    pub fn policy_domain(&self) -> Option<&str> {
        self.policy_domain.as_deref()
    }

    /// The policy of a connection to `host` on `port`: for a DANE level, from its
    /// validated TLSA records.
    pub async fn host(&self, host: &str, port: u16, dnssec: Option<&Dnssec>) -> HostPolicy {
        let rule = &self.chosen.rule;
        let level = rule.level;
        let mut policy = HostPolicy {
            chosen: self.chosen.clone(),
            mode: TlsMode::Opportunistic,
            names: Vec::new(),
            dane: DaneState::NotUsed,
            mta_sts: None,
            refusal: None,
            refusal_result: ResultType::ValidationFailure,
            report: ReportPolicy::none(),
            report_failure: None,
        };
        match level {
            TlsPolicy::None => policy.mode = TlsMode::None,
            TlsPolicy::Opportunistic => {}
            TlsPolicy::Required => policy.mode = TlsMode::Required,
            TlsPolicy::Verify | TlsPolicy::Secure => {
                policy.mode = TlsMode::Verify;
                policy.names = rule.cert_names(&self.nexthop, host);
            }
            TlsPolicy::Dane | TlsPolicy::DaneOnly => {
                let only = level == TlsPolicy::DaneOnly;
                // RFC 7672 §2.2.2: TLSA records only for a host whose addresses are
                // secure
                let mut addresses_insecure = false;
                let tlsa = match (&self.mx, dnssec) {
                    (Err(e), _) => Validated::Bogus(e.clone()),
                    (Ok(false), _) => Validated::Insecure(Vec::new()),
                    (Ok(true), None) => Validated::Insecure(Vec::new()),
                    (Ok(true), Some(d)) => match d.addresses(host).await {
                        Validated::Secure(_) => d.tlsa(host, port).await,
                        Validated::Insecure(_) => {
                            addresses_insecure = true;
                            Validated::Insecure(Vec::new())
                        }
                        Validated::Bogus(e) => {
                            Validated::Bogus(format!("dane: address records are bogus: {e}"))
                        }
                        Validated::Failed(e) => {
                            Validated::Failed(format!("dane: address lookup failed: {e}"))
                        }
                    },
                };
                let insecure = |why: String, p: &mut HostPolicy| {
                    p.dane = DaneState::Insecure(why.clone());
                    if only {
                        p.mode = TlsMode::Required;
                        p.refusal = Some(format!("dane-only: {why}"));
                        p.refusal_result = ResultType::DaneRequired;
                        p.report.kind = PolicyType::Tlsa;
                    }
                };
                match tlsa {
                    Validated::Bogus(e) | Validated::Failed(e) => {
                        policy.mode = TlsMode::Required;
                        policy.refusal_result = ResultType::DnssecInvalid;
                        policy.report.kind = PolicyType::Tlsa;
                        policy.refusal = Some(if e.starts_with("dane") {
                            e
                        } else {
                            format!("dane: TLSA lookup failed: {e}")
                        });
                    }
                    Validated::Insecure(_) if self.mx == Ok(false) => {
                        insecure("MX records not DNSSEC-signed".into(), &mut policy)
                    }
                    Validated::Insecure(_) if addresses_insecure => insecure(
                        format!("address records of {host} not DNSSEC-signed"),
                        &mut policy,
                    ),
                    Validated::Insecure(_) => insecure(
                        format!("TLSA records of {host} not DNSSEC-signed"),
                        &mut policy,
                    ),
                    Validated::Secure(records) if records.is_empty() => {
                        insecure(format!("no TLSA records for {host}"), &mut policy)
                    }
                    Validated::Secure(records) => {
                        let all = records.len();
                        policy.report = ReportPolicy {
                            kind: PolicyType::Tlsa,
                            strings: records.iter().take(16).map(ToString::to_string).collect(),
                            mx_host: vec![host.trim_end_matches('.').to_ascii_lowercase()],
                        };
                        let good: Vec<Tlsa> = records.into_iter().filter(usable).collect();
                        policy.mode = TlsMode::Required;
                        if good.is_empty() {
                            policy.dane = DaneState::Unusable(all);
                            policy.refusal_result = ResultType::TlsaInvalid;
                            if only {
                                policy.refusal = Some(format!(
                                    "dane-only: none of the {all} TLSA records of {host} is usable"
                                ));
                            }
                        } else {
                            policy.mode = TlsMode::Verify;
                            policy.names = rule.cert_names(&self.nexthop, host);
                            policy.dane = DaneState::Usable(Arc::new(good));
                        }
                    }
                }
            }
        }
        if let Some(failure) = &self.sts_failure
            && !matches!(policy.dane, DaneState::Usable(_))
            && policy.refusal.is_none()
        {
            policy.report = ReportPolicy {
                kind: PolicyType::Sts,
                ..ReportPolicy::none()
            };
            policy.report_failure = Some(failure.clone());
        }
        // MTA-STS (RFC 8461 §4, §5): DANE wins where both apply (§2)
        if let Some(sts) = &self.sts
            && !matches!(policy.dane, DaneState::Usable(_))
            && policy.refusal.is_none()
        {
            use crate::net::mta_sts::Mode;
            policy.mta_sts = Some((sts.policy.mode, sts.id.clone()));
            if sts.policy.mode != Mode::None {
                policy.report = sts_report(&sts.policy);
            }
            if sts.policy.mode == Mode::Enforce {
                if sts.policy.allows(host) {
                    policy.mode = TlsMode::Verify;
                    policy.names = vec![CertName::Exact(
                        host.trim_end_matches('.').to_ascii_lowercase(),
                    )];
                } else {
                    policy.refusal =
                        Some(format!("mta-sts: mx {host} not in policy (id {})", sts.id));
                    policy.refusal_result = ResultType::ValidationFailure;
                }
            }
        }
        policy
    }
}

/// An MTA-STS policy as TLS reports name it: its lines, and its `mx` patterns.
fn sts_report(p: &crate::net::mta_sts::Policy) -> ReportPolicy {
    let mut strings = vec![
        "version: STSv1".to_owned(),
        format!("mode: {}", p.mode.as_str()),
    ];
    strings.extend(p.mx.iter().take(32).map(|m| format!("mx: {m}")));
    strings.push(format!("max_age: {}", p.max_age));
    ReportPolicy {
        kind: PolicyType::Sts,
        strings,
        mx_host: p.mx.iter().take(32).cloned().collect(),
    }
}
