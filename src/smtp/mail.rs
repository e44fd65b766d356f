//! MAIL FROM: sequence, SIZE, BODY, SMTPUTF8, and free spool space.

use std::borrow::Cow;

use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8, MailFrom};
use tracing::{debug, warn};

use super::reply;
use super::session::{Flow, Session, TxAuth};
use crate::logsafe::esc;
use crate::mailauth::Peer;
use crate::policy::greylist::Keys;
use crate::policy::{Context, Stage, Verdict};

impl Session {
    pub(super) async fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Flow {
        if self.helo.is_none() {
            return self.fail(reply::NEED_HELO);
        }
        if self.tx.sender.is_some() {
            return self.fail(reply::NESTED_MAIL);
        }
        if self.listen.auth == crate::config::AuthMode::Required && self.auth_user.is_none() {
            return self.fail(reply::AUTH_REQUIRED);
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.fail(&reply::line(555, [5, 5, 4], "Unsupported BODY type"));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !from.address.is_ascii() && !smtputf8 {
            return self.fail(reply::NEED_SMTPUTF8);
        }
        let limit = self.listen.settings.limits.message_size;
        if from.size > limit {
            return self.fail(reply::MESSAGE_TOO_BIG);
        }
        if !self.enough_space() {
            return self.fail(reply::INSUFFICIENT_STORAGE);
        }
        // one canonical form, as recipients have (the dry run reads it the same way)
        let sender = crate::policy::address::canonical_or_same(&from.address);
        // A transaction runs with the policy in force when it starts, to its end.
        self.policy = self.core.policy.load_full();
        let (limited, slot) = self.count_message(&sender).await;
        let replies = (reply::TOO_MANY_MESSAGES, reply::LIMITS_UNAVAILABLE);
        if let Some(flow) = self.refuse_limited(limited, "MAIL", "messages", replies) {
            return flow;
        }
        debug!(from = %esc(&sender), size = from.size, "mail");
        let declared = (from.size > 0).then_some(from.size as u64);
        let auth = self.check_spf(&sender).await;
        if let Some(a) = &auth {
            self.core.tap(|| super::Tapped::Auth {
                results: a.spf.results.clone(),
                data: false,
            });
        }
        self.address_in_hand = Some(sender.clone());
        let (decision, logged) = self.policy.evaluate_logged(
            Stage::Mail,
            &Context {
                sender: Some(&sender),
                size: declared,
                auth: auth.as_ref().map(|a| &a.spf.results),
                ..self.policy_context()
            },
        );
        let refused = matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        // the stage's rules first, then the milters
        if !refused && self.milters_apply() {
            self.milters_new_transaction();
            if self.next_id.is_none() {
                // the queue id is known from MAIL on, as Postfix's (macro `i`)
                self.next_id = Some(self.core.spool.new_id());
            }
            let mut args = vec![format!("<{sender}>")];
            if from.size > 0 {
                args.push(format!("SIZE={}", from.size));
            }
            if from.flags & MAIL_BODY_8BITMIME != 0 {
                args.push("BODY=8BITMIME".to_owned());
            }
            if smtputf8 {
                args.push("SMTPUTF8".to_owned());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.tx.sender = Some(sender.clone());
            self.tx.auth_author = self.auth_author(from.auth.as_deref());
            let refusal = self.milter_event(super::milter::Event::Mail(&args)).await;
            self.tx.sender = None;
            logged.finish(self.take_milter_answers());
            if let Some(r) = refusal {
                self.tx.disposition = Default::default();
                self.address_in_hand = None;
                return self.milter_refused("MAIL", r, Some(&sender));
            }
        }
        let flow = self.apply(Stage::Mail, decision, reply::MAIL_OK);
        if !refused {
            // as Postfix: the transaction's instance exists once MAIL is accepted
            self.tx.instance = crate::policy::services::new_instance();
            self.tx.sender = Some(sender);
            self.tx.declared_size = declared;
            self.tx.body_8bit = from.flags & MAIL_BODY_8BITMIME != 0;
            self.tx.smtputf8 = smtputf8;
            self.tx.auth = auth;
            self.tx.auth_author = self.auth_author(from.auth.as_deref());
            self.tx.rcpt_slot = slot;
        } else {
            // a reserved recipient goes back with this node's next call
            self.tx.disposition = Default::default();
        }
        flow
    }

    /// Counts this MAIL's message and reserves its first recipient. In a cluster, a
    /// message counted ahead (at connect, or by the last MAIL, or for the node: its
    /// stash) is used without a call; else the call also counts the next message and its recipient ahead
    /// ([`super::shared::Ahead`]), and reads the greylisting records of a RCPT
    /// pipelined behind this MAIL (a round trip made anyway: when MAIL makes none, the
    /// RCPT reads them itself).
    async fn count_message(
        &mut self,
        sender: &str,
    ) -> (super::shared::Limited, Option<super::shared::Slot>) {
        use super::shared::{Limited, Reserve, Want};
        use crate::policy::RateKind::{Messages, Recipients};
        if let Some(message) = self.ahead.message.take() {
            self.seen.set(Messages, message.use_it());
            let slot = self.ahead.recipient.take();
            self.seen
                .set(Recipients, slot.as_ref().and_then(|r| r.used()));
            return (Limited::Allowed, slot);
        }
        let ahead = self.greylist_behind(sender);
        let reads = ahead
            .as_ref()
            .map_or(&[][..], |(_, reads)| reads.as_slice());
        let reserve = [
            Reserve::Now(Recipients),
            Reserve::Later(Messages),
            Reserve::Later(Recipients),
        ];
        let (limited, slots, read) = self
            .core
            .limit_reserving(
                self.peer.ip(),
                &[Want::Take(Messages)],
                &reserve,
                reads,
                &mut self.seen,
            )
            .await;
        if let (Some((keys, _)), Some(read)) = (ahead, read) {
            self.core.greylist.read_ahead_done(keys, &read);
        }
        let mut slots = slots.into_iter();
        let slot = slots.next().flatten();
        // (a recipient still ahead is given back: a session holds one at most)
        self.ahead.message = slots.next().flatten();
        self.ahead.recipient = slots.next().flatten();
        (limited, slot)
    }

    /// The greylisting keys of the RCPT pipelined behind this MAIL, and the Redis keys
    /// of their records, when the store reads ahead ([`crate::policy::greylist::Store::read_ahead`]).
    fn greylist_behind(&mut self, sender: &str) -> Option<(Keys, Vec<String>)> {
        let line = self.rcpt_behind.take()?;
        let (start, end) = super::rcpt::path(&line)?;
        let written = std::str::from_utf8(&line[start..end]).ok()?;
        let rcpt = self.policy.recipient(written).ok()?;
        if rcpt.bare_postmaster {
            return None;
        }
        self.greylist_reads(sender, &rcpt.address)
    }

    /// The greylisting keys of recipient `rcpt` (canonical) from `sender` (the rcpt
    /// stage's `greylist`), and the Redis keys of their records when the store reads
    /// ahead.
    pub(super) fn greylist_reads(&self, sender: &str, rcpt: &str) -> Option<(Keys, Vec<String>)> {
        let keys = self.policy.greylist_ahead(self.peer.ip(), sender, rcpt)?;
        let reads = self.core.greylist.read_ahead(&keys)?;
        Some((keys, reads))
    }

    /// MAIL FROM's `AUTH=` parameter as Postfix keeps it (`sasl_sender`, the milters'
    /// `{auth_author}`): only from a client that authenticated, not `<>`, printable
    /// and at most 512 bytes, else none (smtp-proto has decoded its xtext).
    fn auth_author(&self, param: Option<&str>) -> Option<String> {
        self.auth_user.as_ref()?;
        let author = param?;
        let ok = author != "<>"
            && !author.is_empty()
            && author.len() <= 512
            && author.bytes().all(|b| (0x21..=0x7e).contains(&b));
        ok.then(|| author.to_owned())
    }

    /// SPF for this transaction, when the `authentication` checks apply to this
    /// client (see [`crate::policy::AuthSettings::applies`]).
    async fn check_spf(&self, sender: &str) -> Option<TxAuth> {
        let settings = self.policy.authentication()?.clone();
        if !settings.applies(self.peer.ip(), &self.listen.name, self.auth_user.is_some()) {
            return None;
        }
        let checker = self.core.checker(settings.timeout);
        let peer = Peer {
            ip: self.peer.ip(),
            helo: self.helo.as_deref().unwrap_or_default(),
            sender,
        };
        let spf = checker
            .spf(settings.checks, peer, &settings.authserv_id)
            .await;
        debug!(spf = %spf.results.spf, spf_helo = %spf.results.spf_helo, "SPF");
        Some(TxAuth {
            settings,
            checker,
            spf,
        })
    }

    /// Postfix's rule: refuse new mail while free space is under `min-free-space`, or
    /// under 1.5 × the message size limit, whichever is larger — so a message we accept
    /// can be written whole.
    fn enough_space(&self) -> bool {
        let limits = &self.listen.settings.limits;
        let needed = limits
            .min_free_space
            .max((limits.message_size as u64).saturating_mul(3) / 2);
        match self.core.spool.free_space() {
            Ok(free) if free < needed => {
                warn!(free, needed, "spool is short of free space");
                false
            }
            Ok(_) => true,
            Err(err) => {
                warn!(%err, "cannot read the spool's free space");
                true
            }
        }
    }
}
