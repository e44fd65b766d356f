//! INTERFACE SKELETON — replaced by the implementation (issue 9). Do not merge as is.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{AuthResults, Checks, Peer};

/// A cache of parsed DNS records in front of the resolver (mail-auth's
/// `ResolverCache` for TXT, MX, A, AAAA and PTR), bounded; shared across reloads.
/// Closed (a fixture's): a name it does not hold is NXDOMAIN, and nothing is queried.
pub struct DnsCache {}

impl DnsCache {
    /// An open cache of at most `entries` records per type.
    pub fn new(entries: usize) -> DnsCache {
        let _ = entries;
        todo!()
    }
}

/// Given DNS answers, for test-policy and tests.
#[derive(Clone, Debug, Default)]
pub struct DnsFixture {}

impl DnsFixture {
    pub fn txt(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = (name, value);
        todo!()
    }
    pub fn a(&mut self, name: &str, addr: std::net::Ipv4Addr) -> &mut Self {
        let _ = (name, addr);
        todo!()
    }
    pub fn aaaa(&mut self, name: &str, addr: std::net::Ipv6Addr) -> &mut Self {
        let _ = (name, addr);
        todo!()
    }
    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        let _ = (name, preference, exchange);
        todo!()
    }
    pub fn ptr(&mut self, addr: IpAddr, name: &str) -> &mut Self {
        let _ = (addr, name);
        todo!()
    }
    /// Every query for `name` fails temporarily (SERVFAIL): temperror results.
    pub fn fail(&mut self, name: &str) -> &mut Self {
        let _ = name;
        todo!()
    }
}

/// Runs the checks. Cheap to clone.
#[derive(Clone)]
pub struct Checker {}

/// The SPF outcome at MAIL, kept for DMARC and the header at DATA.
#[derive(Clone, Debug, Default)]
pub struct SpfState {
    /// spf, spf_helo and spf_domain are filled; the rest is Skipped.
    pub results: AuthResults,
}

/// The outcome at DATA.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Every result (SPF's copied from the SpfState).
    pub results: AuthResults,
    /// `Authentication-Results: AUTHSERV-ID; spf=... ; dkim=...\r\n`, folded, ending
    /// in CRLF: the one header to add.
    pub header: String,
}

impl Checker {
    /// Queries through `resolver` (the shared one), with `cache` in front; each of
    /// [`Checker::spf`] and [`Checker::message`] gives up after `timeout` (temperror).
    pub fn live(
        resolver: &crate::delivery::dns::Resolver,
        cache: Arc<DnsCache>,
        timeout: Duration,
    ) -> Checker {
        let _ = (resolver, cache, timeout);
        todo!()
    }

    /// Answers from `fixture` only: every other name is NXDOMAIN; never touches the
    /// network. Its futures complete at their first poll (see [`Checker::now`]).
    pub fn fixture(fixture: &DnsFixture) -> Checker {
        let _ = fixture;
        todo!()
    }

    /// At MAIL: SPF for the HELO identity, then for MAIL FROM (postmaster@HELO for the
    /// null sender), when `checks.spf`.
    pub async fn spf(&self, checks: Checks, peer: Peer<'_>, authserv_id: &str) -> SpfState {
        let _ = (checks, peer, authserv_id);
        todo!()
    }

    /// At DATA: DKIM (every signature), ARC, DMARC (with `spf`), iprev — each when its
    /// check is on — and the Authentication-Results header with all results.
    pub async fn message(
        &self,
        checks: Checks,
        peer: Peer<'_>,
        spf: &SpfState,
        raw: &[u8],
        authserv_id: &str,
    ) -> Verified {
        let _ = (checks, peer, spf, raw, authserv_id);
        todo!()
    }

    /// ARC-seals `modified` (the message as it will be queued: `original` after the
    /// content changes and our Authentication-Results) as `signer`'s domain and
    /// selector with its key: returns the ARC-Seal, ARC-Message-Signature and
    /// ARC-Authentication-Results headers (CRLF-terminated) to put on top. The chain of
    /// `original` is validated again (cached DNS) for the `cv=`.
    #[allow(clippy::too_many_arguments)]
    pub async fn seal(
        &self,
        checks: Checks,
        peer: Peer<'_>,
        spf: &SpfState,
        verified: &Verified,
        original: &[u8],
        modified: &[u8],
        authserv_id: &str,
        signer: &crate::dkim::Signer,
    ) -> Result<String, String> {
        let _ = (
            checks,
            peer,
            spf,
            verified,
            original,
            modified,
            authserv_id,
            signer,
        );
        todo!()
    }

    /// Runs a fixture checker's future to its end on the calling thread (test-policy is
    /// synchronous): a fixture never waits on the network. `None` if it would wait.
    pub fn now<F: std::future::Future>(future: F) -> Option<F::Output> {
        let _ = future;
        todo!()
    }
}
