//! RCPT TO: the recipient limit, `<postmaster>`, the recipient's syntax and canonical
//! form, and the rcpt stage of the policy.
//!
//! smtp-proto reads the verb and the parameters; the path itself is read again from
//! the line by [`crate::policy::Pipeline::recipient`] — the function the dry run uses
//! too — because smtp-proto drops the quotes of a quoted local part and refuses
//! address literals (`user@[192.0.2.1]`), which must get the relay decision instead.

use std::borrow::Cow;

use smtp_proto::RcptTo;
use tracing::info;

use super::reply;
use super::session::{Flow, Session};
use crate::logsafe::esc;
use crate::policy::{Context, Stage, Verdict};

/// What smtp-proto is given in place of a path it cannot read, so that it still
/// checks the verb and the parameters.
const PLACEHOLDER: &[u8] = b"<placeholder@placeholder.invalid>";

impl Session {
    pub(super) async fn handle_rcpt(&mut self, _to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Flow {
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
        let Some(written) =
            path(line).and_then(|(start, end)| std::str::from_utf8(&line[start..end]).ok())
        else {
            return self.fail(reply::BAD_RECIPIENT);
        };
        let rcpt = match self.policy.recipient(written) {
            Ok(r) => r,
            Err(reply) => {
                info!(rcpt = %esc(written), "recipient refused: bad address syntax");
                return self.fail(&format!("{reply}\r\n"));
            }
        };
        if rcpt.bare_postmaster {
            // RFC 5321 §4.5.1: a server must accept mail for a bare `<postmaster>`;
            // it is ours, so no relay rule applies.
            info!(rcpt = %esc(&rcpt.address), "recipient accepted: bare <postmaster>");
            self.add_recipient(rcpt.address);
            return self.push_ok(reply::RCPT_OK);
        }
        if !written.is_ascii() && !self.tx.smtputf8 {
            return self.fail(reply::NEED_SMTPUTF8);
        }
        let wants = [super::shared::Want::Take(
            crate::policy::RateKind::Recipients,
        )];
        // the greylisting records the rcpt stage may need, unless MAIL read them: read
        // with this RCPT's limits call (alone without one), in this session's task
        let ahead = match (self.core.cluster.is_some(), self.tx.sender.as_deref()) {
            (true, Some(sender)) => self.greylist_reads(sender, &rcpt.address),
            _ => None,
        };
        let reads = ahead
            .as_ref()
            .map_or(&[][..], |(_, reads)| reads.as_slice());
        let (limited, read) = match self.tx.rcpt_slot.take() {
            // counted ahead (at connect, or with a MAIL that made a call)
            Some(slot) => {
                slot.use_it();
                let read = self
                    .core
                    .limit_reserving(self.peer.ip(), &[], &[], reads, &mut self.seen)
                    .await
                    .2;
                (super::shared::Limited::Allowed, read)
            }
            None => {
                let (limited, _, read) = self
                    .core
                    .limit_reserving(self.peer.ip(), &wants, &[], reads, &mut self.seen)
                    .await;
                (limited, read)
            }
        };
        if let (Some((keys, _)), Some(read)) = (ahead, read) {
            self.core.greylist.read_ahead_done(keys, &read);
        }
        let replies = (reply::TOO_MANY_RCPTS_RATE, reply::LIMITS_UNAVAILABLE);
        if let Some(flow) = self.refuse_limited(limited, "RCPT", "recipients", replies) {
            return flow;
        }
        self.address_in_hand = Some(rcpt.address.clone());
        let (decision, logged) = self.policy.evaluate_logged(
            Stage::Rcpt,
            &Context {
                rcpt: Some(&rcpt.address),
                ..self.policy_context()
            },
        );
        let accepted = !matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        if self.milters_apply() {
            // the stage's rules first, then the milters; a recipient the rules refused
            // goes only to milters that asked for those
            let mut args = vec![format!("<{}>", rcpt.address)];
            if let Some((_, end)) = path(line) {
                let params = String::from_utf8_lossy(&line[end..]);
                args.extend(params.split_ascii_whitespace().map(str::to_owned));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let refused_with = match &decision.verdict {
                Verdict::Reject(r) | Verdict::Defer(r) => {
                    Some(reply::line(r.code, r.enhanced, &r.text))
                }
                _ => None,
            };
            let refusal = self
                .milter_event(super::milter::Event::Rcpt {
                    args: &args,
                    rejected: refused_with.as_deref(),
                })
                .await;
            // (the answers about a recipient the rules refused are ignored)
            let answers = self.take_milter_answers();
            logged.finish(if accepted { answers } else { Vec::new() });
            if accepted && let Some(r) = refusal {
                self.address_in_hand = None;
                return self.milter_refused("RCPT", r, Some(&rcpt.address));
            }
        }
        if accepted {
            let rule = decision
                .rule
                .as_ref()
                .map_or_else(|| "default".to_owned(), ToString::to_string);
            info!(rcpt = %esc(&rcpt.address), %rule, revision = %self.policy.revision(), "recipient accepted");
        }
        let flow = self.apply(Stage::Rcpt, decision, reply::RCPT_OK);
        if accepted {
            self.add_recipient(rcpt.address);
        }
        flow
    }

    /// Adds an accepted recipient to the transaction, once: the same address given
    /// again (compared without case, in canonical form) is one recipient, as
    /// Postfix's duplicate filter makes it. The client gets its 250 either way.
    fn add_recipient(&mut self, address: String) {
        if self
            .tx
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address))
        {
            info!(rcpt = %address, "duplicate recipient: delivered once");
            return;
        }
        self.tx.recipients.push(address);
    }
}

/// Where the path of a `RCPT TO:` line is: after the colon (and any spaces), up to
/// the `>` that closes it outside a quoted string, or up to the next space when it has
/// no angle brackets. `None`: not a `RCPT TO:` line, or no end.
pub(super) fn path(line: &[u8]) -> Option<(usize, usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let verb: Vec<u8> = line[..colon]
        .iter()
        .filter(|b| **b != b' ')
        .map(u8::to_ascii_uppercase)
        .collect();
    if verb != b"RCPTTO" {
        return None;
    }
    let start = colon
        + 1
        + line[colon + 1..]
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(line.len() - colon - 1);
    let rest = &line[start..];
    if rest.first() != Some(&b'<') {
        let len = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
            .unwrap_or(rest.len());
        return (len > 0).then_some((start, start + len));
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' | b'\n' => return None,
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some((start, start + i + 1)),
            _ => {}
        }
    }
    None
}

/// A `RCPT TO:` line whose path smtp-proto could not read, with a placeholder in its
/// place (the parameters kept), so that the verb and parameters are still checked
/// and [`Session::handle_rcpt`] reads the path itself.
pub(super) fn with_placeholder(line: &[u8]) -> Option<Vec<u8>> {
    let (start, end) = path(line)?;
    let mut out = Vec::with_capacity(line.len() + PLACEHOLDER.len());
    out.extend_from_slice(&line[..start]);
    out.extend_from_slice(PLACEHOLDER);
    out.extend_from_slice(&line[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = |l: &str| path(l.as_bytes()).map(|(s, e)| l[s..e].to_owned());
        assert_eq!(p("RCPT TO:<a@b>\r\n").as_deref(), Some("<a@b>"));
        assert_eq!(
            p("rcpt to: <a@b> NOTIFY=NEVER\r\n").as_deref(),
            Some("<a@b>")
        );
        assert_eq!(
            p("RCPT TO:<\"a>b\"@x.test>\r\n").as_deref(),
            Some("<\"a>b\"@x.test>")
        );
        assert_eq!(
            p("RCPT TO:<\"a\\\">b\"@x.test>\r\n").as_deref(),
            Some("<\"a\\\">b\"@x.test>")
        );
        assert_eq!(p("RCPT TO:a@b\r\n").as_deref(), Some("a@b"));
        assert_eq!(p("RCPT TO:<a@b\r\n"), None);
        assert_eq!(p("MAIL FROM:<a@b>\r\n"), None);
        assert_eq!(p("RCPT TO:\r\n"), None);
    }

    #[test]
    fn placeholder_keeps_parameters() {
        assert_eq!(
            with_placeholder(b"RCPT TO:<u@[192.0.2.1]> NOTIFY=NEVER\r\n").as_deref(),
            Some(&b"RCPT TO:<placeholder@placeholder.invalid> NOTIFY=NEVER\r\n"[..])
        );
    }
}
