//! The mail log: what happens to each connection and message, in Postfix's line
//! grammar, so that the tools administrators run on a Postfix host (pflogsumm,
//! logwatch, fail2ban's `postfix` filters, `grep QUEUEID`) read mtad's log as they read
//! Postfix's.
//!
//! A line is a tracing event with the target [`TARGET`], its Postfix program in the
//! field `agent` (`smtpd`, `cleanup`, `qmgr`, `smtp`, ...), and the line itself as the
//! message. The outputs ([`crate::control::log`]) write it as Postfix would:
//! `mtad/smtpd[PID]: 4A2F...: client=unknown[192.0.2.1]` (the `mtad` part is
//! `log { syslog-name }`); mtad's extras (the deciding rule, the policy revision) come
//! at the end of a line, after what Postfix writes there.
//!
//! The lines, in the order a message sees them:
//!
//! ```text
//! smtpd:   connect from unknown[192.0.2.1]
//! smtpd:   NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<c>
//! smtpd:   QID: client=unknown[192.0.2.1]
//! cleanup: QID: message-id=<...>
//! qmgr:    QID: from=<a@b>, size=N, nrcpt=N (queue active)
//! smtpd:   disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6
//! smtp:    QID: to=<x@y>, relay=mx.y[192.0.2.9]:25, delay=0.2, delays=0.01/0/0.1/0.09, dsn=2.0.0, status=sent (250 ok)
//! bounce:  QID: sender non-delivery notification: QID2     (or: sender delay notification)
//! qmgr:    QID: removed
//! ```

use std::fmt;
use std::net::IpAddr;

/// The tracing target of mail log lines.
pub const TARGET: &str = "mail";

/// The Postfix program a line is written as (the part after `mtad/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// The SMTP server: connections, refusals, receptions.
    Smtpd,
    /// Message content: its Message-ID, content refusals.
    Cleanup,
    /// The queue: a message's sender and size when it is queued, its removal.
    Qmgr,
    /// Delivery over SMTP.
    Smtp,
    /// Delivery over LMTP.
    Lmtp,
    /// Delivery to a local Maildir.
    Local,
    /// Delivery to a virtual mailbox.
    Virtual,
    /// The `discard` transport.
    Discard,
    /// The `error:` transport, and recipients refused at delivery.
    Error,
    /// Bounces and delay notices.
    Bounce,
    /// Local submission (the `sendmail` command's maildrop).
    Pickup,
    /// The daemon itself: start, stop, reload.
    Master,
}

impl Agent {
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Smtpd => "smtpd",
            Agent::Cleanup => "cleanup",
            Agent::Qmgr => "qmgr",
            Agent::Smtp => "smtp",
            Agent::Lmtp => "lmtp",
            Agent::Local => "local",
            Agent::Virtual => "virtual",
            Agent::Discard => "discard",
            Agent::Error => "error",
            Agent::Bounce => "bounce",
            Agent::Pickup => "pickup",
            Agent::Master => "master",
        }
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes one mail log line: `mail!(Agent::Smtpd, INFO, "connect from {}", client)`.
#[macro_export]
macro_rules! mail {
    ($agent:expr, $level:ident, $($arg:tt)+) => {
        ::tracing::event!(
            target: "mail",
            ::tracing::Level::$level,
            agent = $crate::maillog::Agent::as_str($agent),
            $($arg)+
        )
    };
}

/// A client as Postfix names it: `host[ip]`, where the host is the verified name of
/// the address, `unknown` when it has none (mtad does not look client names up).
pub struct Client(pub IpAddr);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown[{}]", self.0)
    }
}

/// An address in a log line's `<...>`: printable, no `>` or line break, at most 256
/// characters (a client chose it).
pub struct Addr<'a>(pub &'a str);

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i >= 256 {
                return f.write_str("...");
            }
            match c {
                '>' | '<' => f.write_str("?")?,
                c if c.is_control() => f.write_str("?")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// How many of each command a session got, and how many of them succeeded: the
/// `ehlo=1 mail=1 rcpt=1/2 ... commands=5/6` of Postfix's `disconnect` line.
#[derive(Clone, Debug, Default)]
pub struct Commands {
    /// (name, succeeded, total), in the order first seen.
    counts: Vec<(&'static str, u32, u32)>,
}

impl Commands {
    /// Counts one `name` command; `ok`: it succeeded.
    pub fn count(&mut self, name: &'static str, ok: bool) {
        match self.counts.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, good, total)) => {
                *good += u32::from(ok);
                *total += 1;
            }
            None => self.counts.push((name, u32::from(ok), 1)),
        }
    }

    /// A command counted as failed earlier succeeded after all (DATA: its 354 is not
    /// yet success; the message's 250 is).
    pub fn succeeded(&mut self, name: &'static str) {
        if let Some((_, good, total)) = self.counts.iter_mut().find(|(n, _, _)| *n == name)
            && *good < *total
        {
            *good += 1;
        }
    }
}

impl fmt::Display for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |f: &mut fmt::Formatter<'_>, name: &str, good: u32, total: u32| {
            if good == total {
                write!(f, " {name}={good}")
            } else {
                write!(f, " {name}={good}/{total}")
            }
        };
        let (mut good, mut total) = (0, 0);
        for &(name, g, t) in &self.counts {
            part(f, name, g, t)?;
            good += g;
            total += t;
        }
        part(f, "commands", good, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_counts_read_as_postfix_writes_them() {
        let mut c = Commands::default();
        for (name, ok) in [
            ("ehlo", true),
            ("mail", true),
            ("rcpt", true),
            ("rcpt", false),
            ("data", false),
            ("quit", true),
        ] {
            c.count(name, ok);
        }
        c.succeeded("data");
        assert_eq!(
            c.to_string(),
            " ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6"
        );
        assert_eq!(Commands::default().to_string(), " commands=0");
    }

    #[test]
    fn addresses_cannot_break_a_line_or_its_brackets() {
        assert_eq!(Addr("a>b\r\n@x").to_string(), "a?b??@x");
        assert_eq!(
            Client("192.0.2.1".parse().unwrap()).to_string(),
            "unknown[192.0.2.1]"
        );
    }
}
