//! The milter client: Sendmail's mail filter protocol (version 6), as Postfix's
//! `smtpd_milters` speak it, to the filters mail servers run (rspamd's proxy worker,
//! OpenDKIM, OpenDMARC, clamav-milter, spamass-milter).
//!
//! - [`codec`]: the packets, and the parser of the filter's replies (hostile input:
//!   strict sizes, every string checked).
//! - [`client`]: one connection to one filter for the life of an SMTP session:
//!   negotiation, the events of each stage with their macros, the message, and what
//!   the filter answered. Timeouts bound every wait; any error is a [`MilterError`],
//!   and what a session does then is the filter's [`FailureAction`].
//! - [`rspamd`]: rspamd's own HTTP protocol (`/checkv2`), one request per message,
//!   its JSON reply made a milter's answer, so the session applies both alike.
//!
//! What the session does with the answers (when each event is sent, how a verdict
//! becomes a reply, how the changes are made to the message) is in
//! `smtp::milter`; this module knows nothing of SMTP sessions.

pub mod client;
pub mod codec;
pub mod rspamd;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{Connection, MilterError, Verdict};
pub use codec::MacroStage;

/// A filter defined once by name (`milter "NAME" "inet:host:port" { ... }`) and used
/// by listeners and the local submission in the order they name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Milter {
    pub name: String,
    pub address: Address,
    /// Connecting and negotiating (Postfix's `milter_connect_timeout`, 30 s).
    pub connect_timeout: Duration,
    /// Each event's answer but the message's content (`milter_command_timeout`, 30 s).
    pub command_timeout: Duration,
    /// The body chunks' and the end of the message's answers (`milter_content_timeout`,
    /// 300 s).
    pub content_timeout: Duration,
    /// What the session does when this filter cannot be used (`on-failure=`).
    pub on_failure: FailureAction,
    /// The macros sent at each stage, by [`MacroStage`] (Postfix's `milter_*_macros`);
    /// a filter may ask for others when it negotiates (`SETSYMLIST`).
    pub macros: [Vec<String>; 7],
    /// `Some`: not a milter but rspamd over its HTTP protocol (`rspamd "NAME"
    /// "http://..."`), asked once per message, at its end (see [`rspamd`]).
    pub rspamd: Option<rspamd::Settings>,
}

impl Milter {
    /// A filter at `address` with Postfix's timeouts and macro lists, failing closed
    /// with `tempfail`.
    pub fn new(name: &str, address: Address) -> Self {
        Self {
            name: name.to_owned(),
            address,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            content_timeout: Duration::from_secs(300),
            on_failure: FailureAction::Tempfail,
            macros: default_macros(),
            rspamd: None,
        }
    }
}

/// Postfix's defaults (`postconf -d | grep milter_.*_macros`), by [`MacroStage`].
pub fn default_macros() -> [Vec<String>; 7] {
    let list = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    [
        list("j {daemon_name} {daemon_addr} v _"),
        list("{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"),
        list("i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"),
        list("i {rcpt_addr} {rcpt_host} {rcpt_mailer}"),
        list("i"),
        list("i"),
        list("i"),
    ]
}

/// The macros mtad can give a value (Postfix's list, MILTER_README "Sendmail macro
/// emulation"); a name outside it is a configuration error. Some have no value in
/// some sessions (`{auth_authen}` without AUTH): those are not sent.
pub const KNOWN_MACROS: &[&str] = &[
    "i",
    "j",
    "v",
    "_",
    "{auth_type}",
    "{auth_authen}",
    "{auth_author}",
    "{cert_issuer}",
    "{cert_subject}",
    "{cipher}",
    "{cipher_bits}",
    "{client_addr}",
    "{client_connections}",
    "{client_name}",
    "{client_port}",
    "{client_ptr}",
    "{daemon_addr}",
    "{daemon_name}",
    "{daemon_port}",
    "{if_addr}",
    "{if_name}",
    "{mail_addr}",
    "{mail_host}",
    "{mail_mailer}",
    "{rcpt_addr}",
    "{rcpt_host}",
    "{rcpt_mailer}",
    "{tls_version}",
];

/// Where a filter listens: Postfix's `inet:host:port` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Inet {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    /// rspamd's HTTP worker (`http://host:port`; see [`rspamd::parse_url`]).
    Http {
        host: String,
        port: u16,
    },
}

/// A filter address that is neither `inet:host:port` nor `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAddress(String);

impl Address {
    pub fn parse(s: &str) -> Result<Self, InvalidAddress> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(InvalidAddress(format!(
                    "`{s}`: a unix socket is an absolute path (unix:/run/milter.sock)"
                )));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("inet:") else {
            return Err(InvalidAddress(format!(
                "`{s}`: a milter is at \"inet:host:port\" or \"unix:/path\""
            )));
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
            None => ("", ""),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| InvalidAddress(format!("`{s}`: no port (inet:127.0.0.1:11332)")))?;
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(InvalidAddress(format!(
                "`{s}`: no host (inet:127.0.0.1:11332)"
            )));
        }
        Ok(Address::Inet {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Address::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Http { host, port } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}")
            }
            Address::Http { host, port } => write!(f, "http://{host}:{port}"),
        }
    }
}

/// What a session does when a filter cannot be reached, times out, or breaks the
/// protocol (Postfix's `milter_default_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureAction {
    /// `451 4.7.1` for the transaction (our default: fail closed, and the client
    /// retries later; see docs/milters.md).
    #[default]
    Tempfail,
    /// Go on without this filter for the rest of the session (fail open: only for
    /// filters whose verdict is advisory).
    Accept,
    /// `550 5.7.1` for the transaction.
    Reject,
    /// `421 4.7.0` and the session ends (Postfix 3.11's default).
    Shutdown,
}

impl FailureAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tempfail" => FailureAction::Tempfail,
            "accept" => FailureAction::Accept,
            "reject" => FailureAction::Reject,
            "shutdown" => FailureAction::Shutdown,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FailureAction::Tempfail => "tempfail",
            FailureAction::Accept => "accept",
            FailureAction::Reject => "reject",
            FailureAction::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("inet:127.0.0.1:11332"),
            Ok(Address::Inet {
                host: "127.0.0.1".into(),
                port: 11332
            })
        );
        assert_eq!(
            Address::parse("inet:[::1]:8891").map(|a| a.to_string()),
            Ok("inet:[::1]:8891".into())
        );
        assert_eq!(
            Address::parse("unix:/run/opendkim.sock"),
            Ok(Address::Unix("/run/opendkim.sock".into()))
        );
        for bad in [
            "inet:host",
            "inet::25",
            "unix:rel",
            "local:/x",
            "inet:h:0",
            "inet:h:99999",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn postfix_default_macros_are_known() {
        for list in default_macros() {
            for m in list {
                assert!(KNOWN_MACROS.contains(&m.as_str()), "{m}");
            }
        }
    }
}
