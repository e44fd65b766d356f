//! The checks themselves, with mail-auth: SPF at MAIL, the rest at DATA, ARC sealing.
//!
//! Every mail-auth call that verifies something lives here (signing lives in
//! `crate::mailauth::dkim`); the rest of mtad sees [`AuthResults`] and header text only.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, IprevOutput, IprevResult, MX, MessageAuthenticator, Parameters, RecordSet,
    SpfOutput, SpfResult, Txt,
};

use super::cache::{DnsCache, Kind};
use super::fixture::{DnsFixture, RawTxt};
use super::{AuthResult, AuthResults, Checks, DkimSignature, DmarcPolicy, Peer};

/// Runs the checks. Cheap to clone.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    auth: MessageAuthenticator,
    cache: Arc<DnsCache>,
    /// The bound on each of `spf`, `message` and `seal` (live only: a fixture never
    /// waits, and tokio's timer would need a runtime).
    timeout: Option<Duration>,
    /// A fixture's TXT values as given, for DMARC's `pct=` (mail-auth does not keep
    /// it); live, the raw record is queried when needed.
    raw_txt: Option<RawTxt>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("cache", &self.inner.cache)
            .field("timeout", &self.inner.timeout)
            .field("fixture", &self.inner.raw_txt.is_some())
            .finish()
    }
}

/// The SPF outcome at MAIL, kept for DMARC and the header at DATA.
#[derive(Clone, Debug, Default)]
pub struct SpfState {
    /// spf, spf_helo and spf_domain are filled; the rest is Skipped.
    pub results: AuthResults,
    /// mail-auth's outputs, for the header and DMARC; None when SPF was not checked.
    helo: Option<SpfOutput>,
    mail_from: Option<SpfOutput>,
}

/// The outcome at DATA.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Every result (SPF's copied from the SpfState).
    pub results: AuthResults,
    /// `Authentication-Results: AUTHSERV-ID; spf=... ; dkim=...\r\n`, folded, ending
    /// in CRLF: the one header to add.
    pub header: String,
    /// mail-auth's outputs that own their data, for the ARC-Authentication-Results of
    /// [`Checker::seal`] (DKIM and ARC are verified again there).
    dmarc: Option<DmarcOutput>,
    iprev: Option<IprevOutput>,
}

type Params<'x, P> = Parameters<
    'x,
    P,
    Kind<Box<str>, Txt>,
    Kind<Box<str>, RecordSet<MX>>,
    Kind<Box<str>, RecordSet<Ipv4Addr>>,
    Kind<Box<str>, RecordSet<Ipv6Addr>>,
    Kind<IpAddr, RecordSet<Box<str>>>,
>;

fn params<P>(cache: &DnsCache, p: P) -> Params<'_, P> {
    Parameters::new(p)
        .with_txt_cache(&cache.txt)
        .with_mx_cache(&cache.mx)
        .with_ipv4_cache(&cache.ipv4)
        .with_ipv6_cache(&cache.ipv6)
        .with_ptr_cache(&cache.ptr)
}

/// mail-auth's outputs that go into an Authentication-Results header; None: the
/// check is off and left out.
struct Outputs<'a, 'x> {
    dkim: Option<&'a [DkimOutput<'x>]>,
    arc: Option<&'a ArcOutput<'x>>,
    dmarc: Option<&'a DmarcOutput>,
    iprev: Option<&'a IprevOutput>,
}

impl Checker {
    /// Queries through `resolver` (the shared one), with `cache` in front; each of
    /// [`Checker::spf`] and [`Checker::message`] gives up after `timeout` (temperror).
    pub fn live(
        resolver: &crate::net::dns::Resolver,
        cache: Arc<DnsCache>,
        timeout: Duration,
    ) -> Checker {
        Checker {
            inner: Arc::new(Inner {
                auth: MessageAuthenticator(resolver.hickory()),
                cache,
                timeout: Some(timeout),
                raw_txt: None,
            }),
        }
    }

    /// Answers from `fixture` only: every other name is NXDOMAIN; never touches the
    /// network. Its futures complete at their first poll (see [`Checker::now`]); the
    /// A, AAAA, MX and PTR names given to [`DnsFixture::fail`] reach a resolver without
    /// nameservers, which fails at once.
    pub fn fixture(fixture: &DnsFixture) -> Checker {
        // A resolver without a nameserver: only the fixture's failing names reach it,
        // and it has nobody to ask.
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_millis(100);
        options.attempts = 0;
        options.use_hosts_file = mail_auth::hickory_resolver::config::ResolveHosts::Never;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(Vec::new()),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .expect("a resolver without TLS always builds");
        Checker {
            inner: Arc::new(Inner {
                auth: MessageAuthenticator(resolver),
                cache: Arc::new(fixture.cache()),
                timeout: None,
                raw_txt: Some(fixture.raw()),
            }),
        }
    }

    /// At MAIL: SPF for the HELO identity, then for MAIL FROM (postmaster@HELO for the
    /// null sender), when `checks.spf`.
    pub async fn spf(&self, checks: Checks, peer: Peer<'_>, authserv_id: &str) -> SpfState {
        let mut state = SpfState::default();
        if !checks.spf {
            return state;
        }
        let auth = &self.inner.auth;
        let cache = &*self.inner.cache;
        // The HELO result survives a timeout of the MAIL FROM check.
        let mut finished_helo = None;
        let work = async {
            let helo = auth
                .verify_spf(params(
                    cache,
                    SpfParameters::verify_ehlo(peer.ip, peer.helo, authserv_id),
                ))
                .await;
            finished_helo = Some(helo.clone());
            let mail_from = auth
                .verify_spf(params(
                    cache,
                    SpfParameters::verify_mail_from(peer.ip, peer.helo, authserv_id, peer.sender),
                ))
                .await;
            (helo, mail_from)
        };
        let (helo, mail_from) = self.limit(work).await.unwrap_or_else(|| {
            let timed_out =
                |d: &str| SpfOutput::new(d.to_owned()).with_result(SpfResult::TempError);
            (
                finished_helo.unwrap_or_else(|| timed_out(peer.helo)),
                timed_out(mail_from_domain(peer)),
            )
        });
        state.results.spf_helo = spf_result(helo.result());
        state.results.spf = spf_result(mail_from.result());
        state.results.spf_domain = mail_from.domain().to_ascii_lowercase();
        state.helo = Some(helo);
        state.mail_from = Some(mail_from);
        state
    }

    /// At DATA: DKIM (every signature), ARC, DMARC (with `spf`), iprev — each when its
    /// check is on — and the Authentication-Results header with all results.
    ///
    /// DKIM signatures are verified for DMARC also when only `checks.dmarc` is on (the
    /// `dkim` result then stays Skipped). A message mail-auth cannot parse (no header
    /// section) has no signatures and no chain (`dkim=none`, `arc=none`) and DMARC
    /// `permerror` (no From to check). A body hash mismatch is `fail` (RFC 6376
    /// §6.1.3, PERMFAIL), where mail-auth says `neutral`. When the work takes longer
    /// than the live timeout, every check that was on and had not finished is
    /// `temperror`.
    pub async fn message(
        &self,
        checks: Checks,
        peer: Peer<'_>,
        spf: &SpfState,
        raw: &[u8],
        authserv_id: &str,
    ) -> Verified {
        let mut results = spf.results.clone();
        let work = self.verify(checks, peer, spf, raw, authserv_id, &mut results);
        match self.limit(work).await {
            Some((header, dmarc, iprev)) => Verified {
                results,
                header,
                dmarc,
                iprev,
            },
            None => {
                // What finished stays; what did not is temperror. The header says the
                // same, without the details mail-auth would have added.
                let mut items = Vec::new();
                for (on, result, name) in [
                    (checks.dkim, &mut results.dkim, "dkim"),
                    (checks.arc, &mut results.arc, "arc"),
                    (checks.dmarc, &mut results.dmarc, "dmarc"),
                    (checks.iprev, &mut results.iprev, "iprev"),
                ] {
                    if !on {
                        continue;
                    }
                    if *result == AuthResult::Skipped {
                        *result = AuthResult::TempError;
                        items.push(format!("{name}=temperror (timed out)"));
                    } else {
                        items.push(format!("{name}={result}"));
                    }
                }
                let none = Outputs {
                    dkim: None,
                    arc: None,
                    dmarc: None,
                    iprev: None,
                };
                let header = auth_results(authserv_id, peer, spf, &none, "").to_header();
                Verified {
                    results,
                    header: append_items(header, &items),
                    dmarc: None,
                    iprev: None,
                }
            }
        }
    }

    /// The checks at DATA: fills `results` as each check finishes (so that a timeout
    /// keeps what finished), and gives the header and the outputs [`Verified`] keeps.
    async fn verify(
        &self,
        checks: Checks,
        peer: Peer<'_>,
        spf: &SpfState,
        raw: &[u8],
        authserv_id: &str,
        results: &mut AuthResults,
    ) -> (String, Option<DmarcOutput>, Option<IprevOutput>) {
        let auth = &self.inner.auth;
        let cache = &*self.inner.cache;
        let parsed = parse(raw);
        let from = parsed
            .as_ref()
            .and_then(|m| m.from.first().cloned())
            .unwrap_or_default();

        let dkim = match &parsed {
            Some(m) if checks.dkim || checks.dmarc => self.dkim(m).await,
            _ => Vec::new(),
        };
        if checks.dkim {
            results.dkim = dkim_aggregate(&dkim);
            results.dkim_signatures = dkim.iter().map(dkim_signature).collect();
        }

        let arc = if checks.arc {
            let out = match &parsed {
                Some(m) => auth.verify_arc(params(cache, m)).await,
                None => ArcOutput::default(),
            };
            results.arc = arc_result(out.result());
            Some(out)
        } else {
            None
        };

        let dmarc = if checks.dmarc {
            let out = match &parsed {
                Some(m) => {
                    let unchecked;
                    let spf_output = match &spf.mail_from {
                        Some(o) => o,
                        None => {
                            unchecked = SpfOutput::new(mail_from_domain(peer).to_owned())
                                .with_result(SpfResult::None);
                            &unchecked
                        }
                    };
                    auth.verify_dmarc(params(
                        cache,
                        DmarcParameters::new(m, &dkim, spf_output.domain(), spf_output),
                    ))
                    .await
                }
                None => DmarcOutput::default()
                    .with_dkim_result(DmarcResult::PermError(mail_auth::Error::ParseError)),
            };
            let result = dmarc_result(&out.result());
            if result == AuthResult::Fail {
                results.dmarc_policy = self.applied_policy(&out).await;
            }
            results.dmarc = result;
            results.dmarc_domain = out.domain().to_owned();
            Some(out)
        } else {
            None
        };

        let iprev = if checks.iprev {
            let out = auth.verify_iprev(params(cache, peer.ip)).await;
            if out.result == IprevResult::Pass {
                results.iprev_name = self.iprev_name(peer.ip, &out).await;
            }
            results.iprev = iprev_result(&out.result);
            Some(out)
        } else {
            None
        };

        let outputs = Outputs {
            dkim: checks.dkim.then_some(dkim.as_slice()),
            arc: arc.as_ref(),
            dmarc: dmarc.as_ref(),
            iprev: iprev.as_ref(),
        };
        let header = auth_results(authserv_id, peer, spf, &outputs, &from).to_header();
        // mail-auth writes nothing for a message without signatures.
        let header = if checks.dkim && dkim.is_empty() {
            append_items(header, &["dkim=none".to_owned()])
        } else {
            header
        };
        (header, dmarc, iprev)
    }

    /// Every DKIM signature's output, a body hash mismatch made a `fail`.
    async fn dkim<'x>(&'x self, message: &'x AuthenticatedMessage<'x>) -> Vec<DkimOutput<'x>> {
        let out = self
            .inner
            .auth
            .verify_dkim(params(&self.inner.cache, message))
            .await;
        out.into_iter()
            .map(|o| {
                let DkimResult::Neutral(
                    e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch),
                ) = o.result()
                else {
                    return o;
                };
                // The output's signature, borrowed for as long as the message.
                let signature = message
                    .dkim_headers
                    .iter()
                    .map(|h| &h.header)
                    .find(|s| Some(*s) == o.signature());
                match signature {
                    Some(signature) => DkimOutput::fail(e.clone()).with_signature(signature),
                    None => o,
                }
            })
            .collect()
    }

    /// The policy of a failed DMARC check after `pct=` (RFC 7489 §6.6.4): a message
    /// outside the sampled percentage gets the next weaker policy. mail-auth 0.13
    /// follows DMARCbis, which dropped `pct=` (and already weakens the policy by one
    /// for `t=y`), so the raw record is read here: the fixture's, or queried live.
    async fn applied_policy(&self, out: &DmarcOutput) -> DmarcPolicy {
        let policy = match out.policy() {
            Policy::Reject => DmarcPolicy::Reject,
            Policy::Quarantine => DmarcPolicy::Quarantine,
            Policy::None | Policy::Unspecified => return DmarcPolicy::None,
        };
        let pct = self.dmarc_pct(out.domain()).await.unwrap_or(100);
        if pct >= 100 || sample_percent() < pct {
            policy
        } else {
            match policy {
                DmarcPolicy::Reject => DmarcPolicy::Quarantine,
                _ => DmarcPolicy::None,
            }
        }
    }

    /// `pct=` of the DMARC record that applies to `domain`: the first record found at
    /// `_dmarc.` of the domain or one of its parents (the DMARC tree walk, roughly).
    async fn dmarc_pct(&self, domain: &str) -> Option<u8> {
        let mut domain = domain.trim_end_matches('.');
        loop {
            let name = format!("_dmarc.{domain}").to_fqdn().into_owned();
            let record = match &self.inner.raw_txt {
                Some(raw) => raw
                    .get(name.as_str())
                    .and_then(|v| v.iter().find(|t| is_dmarc(t)).cloned()),
                None => self
                    .inner
                    .auth
                    .txt_raw_lookup(name.as_str())
                    .await
                    .ok()
                    .map(|r| String::from_utf8_lossy(&r).into_owned())
                    .filter(|t| is_dmarc(t)),
            };
            if let Some(record) = record {
                return Some(pct_of(&record));
            }
            match domain.split_once('.') {
                Some((_, parent)) if parent.contains('.') => domain = parent,
                _ => return None,
            }
        }
    }

    /// The first PTR name of `ip` that resolves back to it (from the cache mail-auth
    /// just filled), without the trailing dot.
    async fn iprev_name(&self, ip: IpAddr, out: &IprevOutput) -> String {
        let auth = &self.inner.auth;
        let cache = &*self.inner.cache;
        for host in out.ptr.iter().flat_map(|p| p.iter()).take(2) {
            let found = match ip {
                IpAddr::V4(ip) => auth
                    .ipv4_lookup(host.as_ref(), Some(&cache.ipv4))
                    .await
                    .is_ok_and(|s| s.rrset.contains(&ip)),
                IpAddr::V6(ip) => auth
                    .ipv6_lookup(host.as_ref(), Some(&cache.ipv6))
                    .await
                    .is_ok_and(|s| s.rrset.contains(&ip)),
            };
            if found {
                return host.trim_end_matches('.').to_owned();
            }
        }
        String::new()
    }

    /// ARC-seals `modified` (the message as it will be queued: `original` after the
    /// content changes and our Authentication-Results) as `signer`'s domain and
    /// selector with its key: returns the ARC-Seal, ARC-Message-Signature and
    /// ARC-Authentication-Results headers (CRLF-terminated) to put on top. The chain of
    /// `original` is validated again (cached DNS) for the `cv=`.
    ///
    /// The ARC-Authentication-Results say what our Authentication-Results say (DKIM
    /// is verified again, SPF, DMARC and iprev are taken from `spf` and `verified`),
    /// with the ARC result always in. An error when `original` has a chain that
    /// already failed (`cv=fail`, RFC 8617 §5.1.2), when a message cannot be parsed,
    /// when none of the signer's headers is present, or on the live timeout.
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
        signer: &crate::mailauth::dkim::Signer,
    ) -> Result<String, String> {
        let work = async {
            let message =
                parse(original).ok_or("the message cannot be parsed (no header section)")?;
            let dkim = if checks.dkim {
                self.dkim(&message).await
            } else {
                Vec::new()
            };
            let arc = self
                .inner
                .auth
                .verify_arc(params(&self.inner.cache, &message))
                .await;
            if !arc.can_be_sealed() {
                return Err("its ARC chain has already failed (cv=fail)".to_owned());
            }
            let from = message.from.first().cloned().unwrap_or_default();
            let outputs = Outputs {
                dkim: checks.dkim.then_some(dkim.as_slice()),
                arc: Some(&arc),
                dmarc: verified.dmarc.as_ref(),
                iprev: verified.iprev.as_ref(),
            };
            let results = auth_results(authserv_id, peer, spf, &outputs, &from);
            let modified = AuthenticatedMessage::parse(modified)
                .ok_or("the modified message cannot be parsed (no header section)")?;
            crate::mailauth::dkim::arc_seal(signer, &modified, &results, &arc)
                .map_err(|e| e.to_string())
        };
        match self.limit(work).await {
            Some(Ok(headers)) => Ok(headers),
            Some(Err(e)) => Err(format!("cannot ARC-seal: {e}")),
            None => Err("cannot ARC-seal: timed out verifying the chain".to_owned()),
        }
    }

    /// Runs a fixture checker's future to its end on the calling thread (test-policy is
    /// synchronous): a fixture never waits on the network. `None` if it would wait.
    ///
    /// The future is polled a few times with a waker that does nothing; no tokio
    /// runtime is needed (a live checker's futures need one, and give `None` here).
    pub fn now<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
        }
        None
    }

    /// `work`, bounded: live by the timeout; for a fixture, which never waits on the
    /// network, by [`Checker::now`]'s polls (what would wait is given up at once, as
    /// a timeout is). So a fixture checker's `spf`, `message` and `seal` always
    /// finish at their first poll, with temperror for what could not.
    async fn limit<F: Future>(&self, work: F) -> Option<F::Output> {
        match self.inner.timeout {
            Some(timeout) => tokio::time::timeout(timeout, work).await.ok(),
            None => Self::now(work),
        }
    }
}

/// The MAIL FROM domain SPF checks: the sender's, or the HELO name for the null
/// sender (or a sender without a domain).
fn mail_from_domain<'a>(peer: Peer<'a>) -> &'a str {
    peer.sender
        .rsplit_once('@')
        .map_or(peer.helo, |(_, domain)| domain)
}

/// The header for the checks in `outputs` and SPF (when it ran).
fn auth_results<'h>(
    authserv_id: &'h str,
    peer: Peer<'_>,
    spf: &SpfState,
    outputs: &Outputs<'_, '_>,
    from: &str,
) -> AuthenticationResults<'h> {
    let mut ar = AuthenticationResults::new(authserv_id);
    if let Some(helo) = &spf.helo {
        ar = ar.with_spf_ehlo_result(helo, peer.ip, peer.helo);
    }
    if let Some(mail_from) = &spf.mail_from {
        ar = ar.with_spf_mailfrom_result(mail_from, peer.ip, peer.sender, peer.helo);
    }
    if let Some(dkim) = outputs.dkim {
        ar = ar.with_dkim_results(dkim, from);
    }
    if let Some(arc) = outputs.arc {
        ar = ar.with_arc_result(arc, peer.ip);
    }
    if let Some(dmarc) = outputs.dmarc {
        ar = ar.with_dmarc_result(dmarc);
    }
    if let Some(iprev) = outputs.iprev {
        ar = ar.with_iprev_result(iprev, peer.ip);
    }
    ar
}

/// `header` (one CRLF-terminated header) with `items` added as further results.
fn append_items(header: String, items: &[String]) -> String {
    if items.is_empty() {
        return header;
    }
    let mut out = header.strip_suffix("\r\n").unwrap_or(&header).to_owned();
    if let Some(id_only) = out.strip_suffix("; none") {
        out.truncate(id_only.len());
    }
    for item in items {
        out.push_str(";\r\n\t");
        out.push_str(item);
    }
    out.push_str("\r\n");
    out
}

fn spf_result(r: SpfResult) -> AuthResult {
    match r {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

/// At most this many DKIM signatures of a message are verified (the topmost, the
/// latest added): each may cost a DNS query, and a message can carry thousands.
/// OpenDKIM's `MaximumSignaturesToVerify` is 3; mailing lists and forwarders add
/// theirs on top of the author's, so a few more are kept here.
pub const MAX_DKIM_SIGNATURES: usize = 10;

/// The message as mail-auth reads it, its DKIM signatures cut to
/// [`MAX_DKIM_SIGNATURES`].
fn parse(raw: &[u8]) -> Option<AuthenticatedMessage<'_>> {
    let mut message = AuthenticatedMessage::parse(raw)?;
    message.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
    Some(message)
}

fn dkim_result(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

/// `pass` when some signature passed, else the first of temperror, fail, permerror,
/// neutral that some signature had, else `none`.
fn dkim_aggregate(outputs: &[DkimOutput<'_>]) -> AuthResult {
    let results: Vec<AuthResult> = outputs.iter().map(|o| dkim_result(o.result())).collect();
    [
        AuthResult::Pass,
        AuthResult::TempError,
        AuthResult::Fail,
        AuthResult::PermError,
        AuthResult::Neutral,
    ]
    .into_iter()
    .find(|r| results.contains(r))
    .unwrap_or(AuthResult::None)
}

fn dkim_signature(o: &DkimOutput<'_>) -> DkimSignature {
    let reason = match o.result() {
        DkimResult::Pass | DkimResult::None => String::new(),
        DkimResult::Neutral(e)
        | DkimResult::Fail(e)
        | DkimResult::PermError(e)
        | DkimResult::TempError(e) => e.to_string(),
    };
    DkimSignature {
        result: dkim_result(o.result()),
        domain: o.signature().map(|s| s.d.clone()).unwrap_or_default(),
        selector: o.signature().map(|s| s.s.clone()).unwrap_or_default(),
        reason,
    }
}

/// ARC's result: pass, fail or none; a DNS failure is temperror, anything else that
/// is wrong with the chain (a broken or malformed set) is fail.
fn arc_result(r: &DkimResult) -> AuthResult {
    match r {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::None => AuthResult::None,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::Fail(_) | DkimResult::Neutral(_) | DkimResult::PermError(_) => AuthResult::Fail,
    }
}

fn dmarc_result(r: &DmarcResult) -> AuthResult {
    match r {
        DmarcResult::Pass => AuthResult::Pass,
        DmarcResult::Fail(_) => AuthResult::Fail,
        DmarcResult::TempError(_) => AuthResult::TempError,
        DmarcResult::PermError(_) => AuthResult::PermError,
        DmarcResult::None => AuthResult::None,
    }
}

fn iprev_result(r: &IprevResult) -> AuthResult {
    match r {
        IprevResult::Pass => AuthResult::Pass,
        IprevResult::Fail(_) => AuthResult::Fail,
        IprevResult::TempError(_) => AuthResult::TempError,
        IprevResult::PermError(_) => AuthResult::PermError,
        IprevResult::None => AuthResult::None,
    }
}

fn is_dmarc(record: &str) -> bool {
    record
        .trim_start()
        .get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
}

/// The `pct=` tag of a raw DMARC record: 0 to 100; 100 when absent or invalid.
pub(super) fn pct_of(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u8>().ok())
        .map_or(100, |p| p.min(100))
}

/// A number in 0..100, different every call (std's randomly keyed hasher).
fn sample_percent() -> u8 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() % 100) as u8
}
