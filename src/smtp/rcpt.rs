//! RCPT TO: the recipient limit, `<postmaster>`, and the rcpt stage of the policy.

use std::borrow::Cow;

use smtp_proto::RcptTo;
use tracing::info;

use super::reply;
use super::session::{Flow, Session};
use crate::logsafe::esc;
use crate::policy::{Context, Stage, Verdict};

impl Session {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Flow {
        if self.tx.sender.is_none() {
            return self.fail(reply::NEED_MAIL);
        }
        if self.tx.bdat {
            // RFC 3030: the envelope is complete once the first chunk is sent; a 250
            // here would name a recipient that is never queued
            return self.fail(reply::RCPT_AFTER_BDAT);
        }
        if self.tx.recipients.len() >= self.listen.settings.limits.recipients {
            return self.fail(reply::TOO_MANY_RECIPIENTS);
        }
        if to.address.is_empty() {
            // smtp-proto reads both `<>` and `<postmaster>` as "". RFC 5321 §4.5.1: a
            // server must accept mail for a bare `<postmaster>`; it is ours, so no relay
            // rule applies.
            if !contains_ignore_case(line, b"<postmaster>") {
                return self.fail(reply::BAD_RECIPIENT);
            }
            let address = format!("postmaster@{}", self.listen.settings.hostname);
            info!(rcpt = %esc(&address), "recipient accepted: bare <postmaster>");
            self.tx.recipients.push(address);
            return self.push_ok(reply::RCPT_OK);
        }
        if !to.address.is_ascii() && !self.tx.smtputf8 {
            return self.fail(reply::NEED_SMTPUTF8);
        }
        if !self
            .core
            .rate
            .allow(super::rate::Kind::Recipients, self.peer.ip())
        {
            tracing::warn!(limit = "recipients", "rate limit: RCPT refused");
            return self.fail(reply::TOO_MANY_RCPTS_RATE);
        }
        let decision = self.policy.evaluate(
            Stage::Rcpt,
            &Context {
                rcpt: Some(&to.address),
                ..self.policy_context()
            },
        );
        let accepted = !matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        if accepted {
            let rule = decision
                .rule
                .as_ref()
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            info!(rcpt = %esc(&to.address), %rule, revision = %self.policy.revision(), "recipient accepted");
        }
        let flow = self.apply(Stage::Rcpt, decision, reply::RCPT_OK);
        if accepted {
            self.tx.recipients.push(to.address.into_owned());
        }
        flow
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
