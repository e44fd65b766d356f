//! Checking incoming mail (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489 DMARC, RFC 8617 ARC,
//! RFC 8601 iprev) and sealing forwarded mail with ARC, with mail-auth.
//!
//! The session asks [`Checker::spf`] at MAIL (the MAIL FROM and HELO identities) and
//! [`Checker::message`] at the end of DATA (every DKIM signature, the ARC chain, DMARC
//! with the SPF result from MAIL, iprev); the [`AuthResults`] they give are what rules
//! (`spf=`, `dkim=`, `dmarc=`, ...) and hooks (`ctx.spf`, ...) see, and what the one
//! `Authentication-Results:` header we add says.
//!
//! Outgoing mail is signed here too ([`dkim`]: DKIM signatures and ARC seals on what
//! delivery sends), so that every call into mail-auth is in this module.
//!
//! DNS goes through the shared hickory resolver (the one delivery uses) with a cache of
//! parsed records in front ([`DnsCache`]); mail-auth reads the cache before it asks
//! anything. A [`DnsFixture`] fills that cache with given answers and makes every other
//! name NXDOMAIN, so `mtactl test-policy` and tests get the same results every time and
//! never query the network.

use std::net::IpAddr;
use std::str::FromStr;

/// One check's result, as RFC 8601 names them (SPF's `softfail` included). `Skipped`:
/// the check did not run for this message (not configured, an authenticated or
/// skipped client, or the check's stage not reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
    #[default]
    Skipped,
}

impl AuthResult {
    pub const ALL: [AuthResult; 8] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
        AuthResult::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
            AuthResult::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for AuthResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthResult {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuthResult::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a result; one of {}",
                    AuthResult::ALL.map(AuthResult::as_str).join(", ")
                )
            })
    }
}

/// The DMARC policy that applies to a message: the record's `p=` (or `sp=` for a
/// subdomain of the organizational domain), after `pct=` (a message outside the
/// percentage gets the next weaker policy, RFC 7489 §6.6.4). `None` also when there
/// is no record or DMARC passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DmarcPolicy {
    #[default]
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub const ALL: [DmarcPolicy; 3] = [
        DmarcPolicy::None,
        DmarcPolicy::Quarantine,
        DmarcPolicy::Reject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl FromStr for DmarcPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DmarcPolicy::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a DMARC policy; one of none, quarantine, reject"))
    }
}

/// One DKIM signature's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimSignature {
    pub result: AuthResult,
    /// `d=` and `s=` of the signature (empty when it could not be parsed).
    pub domain: String,
    pub selector: String,
    /// Why it did not pass (mail-auth's error text), or "".
    pub reason: String,
}

/// Every result for one message. What exists at MAIL ([`Checker::spf`]) is filled
/// there; the rest at DATA ([`Checker::message`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthResults {
    /// SPF for the MAIL FROM identity (for the null sender: postmaster@HELO).
    pub spf: AuthResult,
    /// SPF for the HELO identity.
    pub spf_helo: AuthResult,
    /// The domain SPF checked (the MAIL FROM domain, or the HELO name).
    pub spf_domain: String,
    /// The message's DKIM result: `pass` when some signature passed, else the first
    /// of temperror, fail, permerror, neutral that some signature had, else `none`
    /// (no signature).
    pub dkim: AuthResult,
    pub dkim_signatures: Vec<DkimSignature>,
    pub dmarc: AuthResult,
    pub dmarc_policy: DmarcPolicy,
    /// The RFC5322.From domain DMARC looked up.
    pub dmarc_domain: String,
    pub arc: AuthResult,
    pub iprev: AuthResult,
    /// The client's name from iprev (its PTR that resolves back), or "".
    pub iprev_name: String,
}

/// Which checks run (`authentication { checks ... }`); all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    pub spf: bool,
    pub dkim: bool,
    pub dmarc: bool,
    pub arc: bool,
    pub iprev: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            iprev: true,
        }
    }
}

/// What the session needs at DATA besides the message: who sent it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// The MAIL FROM address ("" for the null sender).
    pub sender: &'a str,
}

/// Whether an Authentication-Results header value claims to come from `authserv_id`
/// (its first token, before `;` and an optional version, any case; RFC 8601 §2.2):
/// on mail arriving from outside, such a header is a forgery (RFC 8601 §5).
pub fn claims(value: &str, authserv_id: &str) -> bool {
    let mut rest = value.trim_start();
    // CFWS before the authserv-id: comments
    while let Some(after) = rest.strip_prefix('(') {
        rest = after.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let id = rest
        .split(|c: char| c == ';' || c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    id.trim_end_matches('.')
        .eq_ignore_ascii_case(authserv_id.trim_end_matches('.'))
}

/// Removals of the Authentication-Results headers among `headers` that claim
/// `authserv_id` ([`claims`]): forgeries on mail arriving from outside.
pub fn forged(
    headers: &crate::message::Headers,
    authserv_id: &str,
) -> Vec<crate::message::RawEdit> {
    headers
        .iter()
        .filter(|h| {
            h.name().eq_ignore_ascii_case("Authentication-Results")
                && claims(h.value(), authserv_id)
        })
        .map(|h| crate::message::RawEdit {
            range: h.raw(),
            text: Vec::new(),
        })
        .collect()
}

mod cache;
pub mod dkim;
mod engine;
mod fixture;
pub use cache::DnsCache;
pub use engine::{Checker, SpfState, Verified};
pub use fixture::{DnsFixture, FixtureFailure, GreylistFixture};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod claims_tests {
    use super::claims;

    #[test]
    fn the_authserv_id_is_the_first_token() {
        assert!(claims(" mx.example.test; spf=pass", "mx.example.test"));
        assert!(claims("MX.Example.Test 1; dkim=pass", "mx.example.test"));
        assert!(claims("mx.example.test;dkim=pass", "mx.example.test"));
        assert!(claims("(forged) mx.example.test; none", "mx.example.test"));
        assert!(claims("mx.example.test.; none", "mx.example.test"));
        assert!(!claims("other.example; spf=pass", "mx.example.test"));
        assert!(!claims("mx.example.test.evil; spf=pass", "mx.example.test"));
        assert!(!claims("", "mx.example.test"));
    }
}
