//! Which mail leaves DKIM-signed with our keys. Only mail that originates with us: a
//! signature from our domain on mail anyone on the Internet could have written (an
//! alias or `virtual` forwarding it outward, a REDIRECT, a BCC) would make us a DMARC
//! signing oracle. OpenDKIM draws the same line with `InternalHosts`.
//!
//! The origin is decided when the message is received ([`Pipeline::mail_origin`]) and
//! recorded with it in the queue (`Envelope::external`), so that every attempt, a
//! reload in between and `mtactl test-policy` agree; the signers are then chosen by
//! [`Pipeline::dkim_plan`], which the scheduler and the dry run both call.

use std::fmt;
use std::net::IpAddr;

use super::Pipeline;
use crate::config::route::{DkimSign, RouteOptions};
use crate::mailauth::dkim::Signer;

/// Where a message comes from, as far as DKIM signing is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailOrigin {
    /// The client authenticated (SMTP AUTH): one of our users.
    Authenticated,
    /// No network client: mail injected on this host.
    Local,
    /// A client in `dkim-internal` (loopback when none is configured).
    Internal(IpAddr),
    /// Any other client: mail from outside, which we only forward.
    External(IpAddr),
    /// Received on a `filtered` listener (a content filter's re-injection) and not
    /// recognised as a message we sent into the filter: its origin is unknown.
    Filtered,
}

impl MailOrigin {
    /// Whether the message originates with us (is signed without a `dkim-sign` rule).
    pub fn is_ours(&self) -> bool {
        matches!(
            self,
            MailOrigin::Authenticated | MailOrigin::Local | MailOrigin::Internal(_)
        )
    }
}

impl fmt::Display for MailOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailOrigin::Authenticated => f.write_str("ours: authenticated client"),
            MailOrigin::Local => f.write_str("ours: local submission"),
            MailOrigin::Internal(ip) => write!(f, "ours: internal client {ip} (dkim-internal)"),
            MailOrigin::External(ip) => {
                write!(f, "external client {ip} (not in dkim-internal)")
            }
            MailOrigin::Filtered => {
                f.write_str("back from a content filter, not recognised as ours")
            }
        }
    }
}

/// What signing a message on one route comes to.
#[derive(Debug, PartialEq, Eq)]
pub struct DkimPlan<'p> {
    /// The signers, in order (see [`crate::mailauth::dkim::signers_for`]); empty: unsigned.
    pub signers: Vec<&'p Signer>,
    /// Why nothing is signed, when nothing is.
    pub unsigned: Option<String>,
}

impl Pipeline {
    /// Where mail from this client on this listener comes from (decided once, at
    /// receipt): authenticated clients, local injection and `dkim-internal` clients
    /// are ours. On a `filtered` listener the origin is the one the message had when
    /// it went into the filter; the caller knows it when the message is recognised
    /// ([`crate::cluster::filter_loops::FilterLoops`]), else it is [`MailOrigin::Filtered`].
    pub fn mail_origin(
        &self,
        client: Option<IpAddr>,
        auth_user: Option<&str>,
        listener: &str,
    ) -> MailOrigin {
        if auth_user.is_some() {
            return MailOrigin::Authenticated;
        }
        if self
            .filters
            .listeners
            .get(listener)
            .is_some_and(|(_, filtered)| *filtered)
        {
            return MailOrigin::Filtered;
        }
        let Some(ip) = client else {
            return MailOrigin::Local;
        };
        let internal = match &self.dkim_internal {
            Some(sets) => sets.iter().any(|s| s.contains(ip)),
            None => ip.is_loopback() || ip.to_canonical().is_loopback(),
        };
        if internal {
            MailOrigin::Internal(ip)
        } else {
            MailOrigin::External(ip)
        }
    }

    /// The DKIM signatures a queued `message` (from `sender`) gets on a route: by the
    /// domain of its From header, else of its envelope sender ([`Pipeline::dkim_plan`]).
    /// What the scheduler signs at each attempt and the dry run reports.
    pub fn message_dkim_plan(
        &self,
        ours: bool,
        message: &[u8],
        sender: &str,
        route: &RouteOptions,
    ) -> DkimPlan<'_> {
        let domain = crate::mailauth::dkim::from_domain(message)
            .or_else(|| sender.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
        self.dkim_plan(ours, domain.as_deref(), route)
    }

    /// The DKIM signatures a message gets on a route: `ours` is its recorded origin,
    /// `domain` the domain of its From header (else of its envelope sender). Mail that
    /// is not ours is signed only on a route with `dkim-sign="always"`; a route with
    /// `dkim-sign="never"` signs nothing.
    pub fn dkim_plan(
        &self,
        ours: bool,
        domain: Option<&str>,
        route: &RouteOptions,
    ) -> DkimPlan<'_> {
        let unsigned = |why: String| DkimPlan {
            signers: Vec::new(),
            unsigned: Some(why),
        };
        if self.dkim.is_empty() {
            return unsigned("no dkim node".into());
        }
        match route.dkim_sign.unwrap_or_default() {
            DkimSign::Never => return unsigned("the route says dkim-sign=\"never\"".into()),
            DkimSign::Internal if !ours => {
                return unsigned("not mail from us".into());
            }
            DkimSign::Internal | DkimSign::Always => {}
        }
        let Some(domain) = domain else {
            return unsigned("no From or sender domain".into());
        };
        let signers = crate::mailauth::dkim::signers_for(&self.dkim, domain, route.dkim.as_deref());
        if signers.is_empty() {
            return unsigned(format!("no dkim node for {domain}"));
        }
        DkimPlan {
            signers,
            unsigned: None,
        }
    }
}
