//! RCPT TO: the recipient limit, `<postmaster>`, and the rcpt stage of the policy.

use std::borrow::Cow;

use smtp_proto::RcptTo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::reply;
use super::session::{Flow, Session};
use crate::policy::{RcptContext, Verdict};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Flow {
        if self.tx.sender.is_none() {
            return self.fail(reply::NEED_MAIL);
        }
        if self.tx.recipients.len() >= self.core.limits.recipients {
            return self.fail(reply::TOO_MANY_RECIPIENTS);
        }
        if to.address.is_empty() {
            // smtp-proto reads both `<>` and `<postmaster>` as "". RFC 5321 §4.5.1: a
            // server must accept mail for a bare `<postmaster>`; it is ours, so no relay
            // rule applies.
            if !contains_ignore_case(line, b"<postmaster>") {
                return self.fail(reply::BAD_RECIPIENT);
            }
            let address = format!("postmaster@{}", self.core.hostname);
            info!(rcpt = %address, "recipient accepted: bare <postmaster>");
            self.tx.recipients.push(address);
            return self.push_ok(reply::RCPT_OK);
        }
        if !to.address.is_ascii() && !self.tx.smtputf8 {
            return self.fail(reply::NEED_SMTPUTF8);
        }
        let decision = self.policy.rcpt(&RcptContext {
            client_ip: self.peer.ip(),
            rcpt: &to.address,
        });
        let rule = decision
            .rule
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "default".into());
        match decision.verdict {
            Verdict::Accept => {
                info!(rcpt = %to.address, %rule, "recipient accepted");
                self.tx.recipients.push(to.address.into_owned());
                self.push_ok(reply::RCPT_OK)
            }
            Verdict::Reject(r) => {
                let text = reply::line(r.code, r.enhanced, &r.text);
                info!(rcpt = %reply::sanitize(&to.address, 256), %rule, reply = text.trim_end(), "recipient refused");
                self.fail(&text)
            }
            Verdict::Next => unreachable_default(self),
        }
    }
}

/// The pipeline always ends a stage with a decision; should it ever not, the recipient
/// is refused (fail closed), never accepted.
fn unreachable_default<S: AsyncRead + AsyncWrite + Unpin>(session: &mut Session<S>) -> Flow {
    session.fail("554 5.7.1 Error: Relay access denied\r\n")
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
