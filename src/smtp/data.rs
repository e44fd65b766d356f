//! DATA and BDAT: the message is appended straight into its spool record, refused
//! whole when it breaks a rule (size, bare line endings), and acknowledged only after
//! the spool says it is on stable storage (DESIGN.md §5.1).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::dot::{DotReceiver, has_bare_eol};
use super::inflight::TextScan;
use super::milter::MessageOutcome;
use super::reply;
use super::session::{Disposition, Flow, INITIAL_DATA_MEMORY, Session, State};
use crate::cluster::filter_loops::FilterLoops;
use crate::mailauth::Peer;
use crate::maillog::{Addr, Agent, Client};
use crate::net::tls::TlsInfo;
use crate::policy::trace::{ReceivedInfo, local_received_header, protocol, received_header};
use crate::policy::{Context, Stage, Verdict, parse_headers};
use crate::queue::{Envelope, MessageRecord};

impl Session {
    pub(super) fn handle_data(&mut self) -> Flow {
        if let Some(reply) = self.transfer_out_of_sequence() {
            return self.fail(reply);
        }
        if self.tx.bdat {
            return self.fail(reply::BDAT_THEN_DATA);
        }
        if !self.start_message() {
            return self.fail(reply::NO_DATA_MEMORY);
        }
        self.state = State::Data(DotReceiver::normalizing(self.normalize_lf));
        self.push_ok(reply::DATA_GO_AHEAD)
    }

    pub(super) async fn handle_bdat(&mut self, size: usize, last: bool) -> Flow {
        if let Some(reply) = self.transfer_out_of_sequence() {
            // The chunk follows the command whatever we answer: read it to its end so
            // none of its bytes is taken for a command.
            if size > 0 {
                self.state = State::SkipBdat { left: size };
            }
            return self.fail(reply);
        }
        if self.tx.record.is_none() {
            if !self.start_message() {
                if size > 0 {
                    self.state = State::SkipBdat { left: size };
                }
                return self.fail(reply::NO_DATA_MEMORY);
            }
            self.tx.bdat = true;
        }
        if size == 0 {
            return self.end_of_chunk(last).await;
        }
        self.state = State::Bdat { left: size, last };
        Flow::Continue
    }

    fn transfer_out_of_sequence(&self) -> Option<&'static str> {
        if self.tx.sender.is_none() {
            Some(reply::NEED_MAIL)
        } else if self.tx.recipients.is_empty() {
            Some(reply::NEED_RCPT)
        } else {
            None
        }
    }

    /// Creates the spool record with our Received: header at its top, with its first
    /// share of `data-memory`; `false` (and nothing started) when the budget is used up.
    fn start_message(&mut self) -> bool {
        let limits = &self.listen.settings.limits;
        let Some(mut memory) = self
            .core
            .data_memory
            .reserve(INITIAL_DATA_MEMORY, limits.data_memory)
        else {
            warn!(
                budget = limits.data_memory,
                in_use = self.core.data_memory.used(),
                "data-memory used up: DATA/BDAT refused"
            );
            return false;
        };
        let id = self
            .next_id
            .take()
            .unwrap_or_else(|| self.core.spool.new_id());
        let arrival = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // a local submission has no client address: its origin is `Local` (ours)
        let client_ip = self.submitter.is_none().then(|| self.peer.ip());
        let envelope = Envelope {
            sender: self.tx.sender.clone().unwrap_or_default(),
            recipients: self.tx.recipients.clone(),
            listener: self.listen.name.to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            client_ip,
            auth_user: self.auth_user.clone(),
            tls: self.tls.as_ref().map(TlsInfo::to_record),
            body_8bit: self.tx.body_8bit,
            smtputf8: self.tx.smtputf8,
            held: self.tx.disposition.max(self.disposition) == Disposition::Hold,
            expanded: false,
            filter: None,
            revision: Some(self.policy.revision().to_owned()),
            // decided once, here; a content filter's re-injection gets the origin it
            // had going in (see `finish_message`)
            external: !self
                .policy
                .mail_origin(client_ip, self.auth_user.as_deref(), &self.listen.name)
                .is_ours(),
        };
        let mut record = MessageRecord::new(id, arrival, &envelope);
        let received = match &self.submitter {
            Some(who) => {
                local_received_header(&self.listen.settings.hostname, who.uid, &id.to_string())
            }
            None => received_header(ReceivedInfo {
                helo: self.helo.as_deref().unwrap_or(""),
                ip: self.peer.ip(),
                hostname: &self.listen.settings.hostname,
                protocol: &protocol(
                    self.esmtp,
                    self.tx.smtputf8,
                    self.tls.is_some(),
                    self.auth_user.is_some(),
                ),
                tls: self.tls.as_ref(),
                auth_user: self.auth_user.as_deref(),
                id: &id.to_string(),
                rcpt: (self.tx.recipients.len() == 1).then(|| self.tx.recipients[0].as_str()),
            }),
        };
        // PREPEND headers of policy services go above our Received:, as Postfix puts them
        for line in &self.tx.prepend {
            record
                .body_mut()
                .extend_from_slice(crate::policy::services::header_line(line).as_bytes());
        }
        record.body_mut().extend_from_slice(received.as_bytes());
        self.tx.trace_len = received.len();
        let limits = &self.listen.settings.limits;
        // the envelope (up to `recipients` addresses) is in the buffer too
        let buf = record.body_mut();
        let want = buf.len().max(INITIAL_DATA_MEMORY);
        if !memory.grow_to(want, limits.data_memory) {
            warn!(
                budget = limits.data_memory,
                "data-memory used up: DATA/BDAT refused"
            );
            return false;
        }
        buf.reserve_exact(want - buf.len());
        self.tx.text = Some(TextScan::new(limits.header_size, limits.text_line_length));
        self.tx.memory = Some(memory);
        self.tx.received = record.body_len() as u64;
        self.tx.record = Some(record);
        self.tx.data_started = Some(Instant::now());
        true
    }

    /// The reply to a BDAT chunk; the last one queues the message.
    pub(super) async fn end_of_chunk(&mut self, last: bool) -> Flow {
        if last {
            self.tx.finish_text();
            let bare_eol = self
                .tx
                .record
                .as_ref()
                .is_some_and(|r| has_bare_eol(r.body()));
            return self.finish_message(bare_eol).await;
        }
        if let Some(refusal) = self.tx.refusal_reply(&self.listen.settings.limits) {
            return self.fail(refusal);
        }
        let received = self.tx.record.as_ref().map_or(0, MessageRecord::body_len);
        let text = format!("250 2.0.0 Ok: {received} octets so far\r\n");
        self.push_ok(&text)
    }

    /// The end of DATA or of the last BDAT chunk: refuse, or run the data stage and
    /// queue durably, then say 250.
    pub(super) async fn finish_message(&mut self, bare_eol: bool) -> Flow {
        // the message's share of data-memory is held until it is queued or refused
        let _memory = self.tx.memory.take();
        // DATA succeeds with its message (BDAT's last chunk is counted with its reply)
        let bdat = self.tx.bdat;
        let data_succeeded = |s: &mut Self| {
            if !bdat {
                s.commands.succeeded("data");
            }
        };
        let Some(mut record) = self.tx.record.take() else {
            self.reset_transaction();
            return self.fail(reply::NEED_RCPT);
        };
        self.tx.finish_text();
        if let Some(refusal) = self.tx.refusal_reply(&self.listen.settings.limits) {
            self.reset_transaction();
            info!(queue_id = %record.id(), reply = refusal.trim_end(), "message refused");
            return self.fail(refusal);
        }
        if bare_eol {
            self.reset_transaction();
            info!(queue_id = %record.id(), "message refused: bare CR or LF");
            return self.fail(reply::BARE_EOL_DATA);
        }
        let id = record.id();
        let size = record.body_len();
        let (headers, body_start) = parse_headers(record.body());
        // for the log: the message's own id, as Postfix's cleanup logs it
        let message_id = headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case("Message-ID"))
            .map(|h| h.value().trim().to_owned());
        if let Some((hops, reply)) = self.policy.too_many_hops(&headers) {
            self.reset_transaction();
            warn!(queue_id = %id, hops, "message refused: too many hops (a mail loop?)");
            return self.fail(&format!("{reply}\r\n"));
        }
        // DKIM, ARC, DMARC and iprev on the message as received
        let auth = self.tx.auth.take();
        let helo = self.helo.clone().unwrap_or_default();
        let sender = self.tx.sender.clone().unwrap_or_default();
        let peer = Peer {
            ip: self.peer.ip(),
            helo: &helo,
            sender: &sender,
        };
        let verified = match &auth {
            Some(a) => {
                let v = a
                    .checker
                    .message(
                        a.settings.checks,
                        peer,
                        &a.spf,
                        record.body(),
                        &a.settings.authserv_id,
                    )
                    .await;
                let r = &v.results;
                info!(queue_id = %id, spf = %r.spf, dkim = %r.dkim, dmarc = %r.dmarc, dmarc_policy = r.dmarc_policy.as_str(), arc = %r.arc, iprev = %r.iprev, "authentication");
                crate::metrics::get().authenticated(r);
                self.core.tap(|| super::Tapped::Auth {
                    results: r.clone(),
                    data: true,
                });
                Some(v)
            }
            None => None,
        };
        // the milters, before the data stage's rules: these see what the milters changed
        let (headers, body_start, size) = if self.milters_apply() {
            match self
                .milter_message(id, record.body(), self.tx.trace_len)
                .await
            {
                MessageOutcome::Unchanged => (headers, body_start, size),
                MessageOutcome::Refused(r) => {
                    // the rules do not run: the record is the milters'
                    let answers = self.take_milter_answers();
                    if !answers.is_empty() {
                        let queue_id = id.to_string();
                        let context = Context {
                            size: Some(size as u64),
                            headers: &headers,
                            body: Some(record.body()),
                            auth: verified.as_ref().map(|v| &v.results),
                            queue_id: Some(&queue_id),
                            ..self.policy_context()
                        };
                        crate::policy::decision_log::milters_refused(
                            &self.policy,
                            Stage::Data,
                            &context,
                            answers,
                        );
                    }
                    self.reset_transaction();
                    if r.close {
                        self.push(&r.reply);
                        return Flow::Close;
                    }
                    return self.fail(&r.reply);
                }
                MessageOutcome::Changed {
                    message,
                    sender,
                    recipients,
                } => {
                    record.truncate_body();
                    record.body_mut().extend_from_slice(&message);
                    if recipients.is_empty() {
                        // as Postfix's cleanup: a message without recipients goes nowhere
                        info!(queue_id = %id, "milters deleted every recipient: discarded");
                        self.tx.disposition = Disposition::Discard;
                    }
                    let envelope = Envelope {
                        sender: sender.clone(),
                        recipients: recipients.clone(),
                        ..record.envelope().clone()
                    };
                    record = record.with_envelope(&envelope);
                    self.tx.sender = Some(sender);
                    if !recipients.is_empty() {
                        self.tx.recipients = recipients;
                    }
                    let size = record.body_len();
                    let (headers, body_start) = parse_headers(record.body());
                    (headers, body_start, size)
                }
            }
        } else {
            (headers, body_start, size)
        };
        let queue_id = id.to_string();
        let milter_answers = self.take_milter_answers();
        let context = Context {
            size: Some(size as u64),
            headers: &headers,
            body: Some(record.body()),
            auth: verified.as_ref().map(|v| &v.results),
            queue_id: Some(&queue_id),
            ..self.policy_context()
        };
        let (decision, logged) = self.policy.evaluate_logged(Stage::Data, &context);
        logged.finish(milter_answers);
        // ARC: sealed at arrival when a recipient's route asks for it, over the message
        // as it is queued; the chain is validated on the message as received
        let sealer = match &verified {
            Some(_) => self
                .policy
                .arc_sealer(&context, &self.tx.recipients)
                .cloned()
                .map(|s| (s, record.body().to_vec())),
            None => None,
        };
        // A message from a filter's host may be one coming back from that filter.
        let came_back = if self.policy.may_be_a_filter(self.peer.ip()) {
            let digest = FilterLoops::digest(
                self.tx.sender.as_deref().unwrap_or_default(),
                &self.tx.recipients,
                record.body().get(body_start..).unwrap_or_default(),
            );
            self.core.filter_loops.came_back(digest).await
        } else {
            None
        };
        let queued = format!("250 2.0.0 Ok: queued as {id}\r\n");
        let refused = matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        // what becomes of the message: decided by policy, as in `mtactl test-policy`
        let accepted = (!refused).then(|| {
            self.policy
                .accept(&self.listen.name, &decision, &headers, &self.tx.recipients)
        });
        let refusal = match &decision.verdict {
            Verdict::Reject(r) | Verdict::Defer(r) => {
                Some(reply::line(r.code, r.enhanced, &r.text))
            }
            _ => None,
        };
        let summary = self.envelope_summary(Stage::Data, None);
        // an accepting verdict answers nothing yet: the 250 waits for the disk
        let flow = self.apply(Stage::Data, decision, "");
        if let Some(text) = refusal {
            // Postfix's end-of-data reject line
            crate::mail!(
                Agent::Smtpd,
                INFO,
                "{id}: reject: END-OF-MESSAGE from {}: {}; {summary}",
                Client(self.peer.ip()),
                text.trim_end()
            );
        }
        let recipients = self.tx.recipients.len();
        let from = self.tx.sender.take().unwrap_or_default();
        let disposition = self.tx.disposition.max(self.disposition);
        self.reset_transaction();
        let Some(accepted) = accepted else {
            return flow;
        };
        if accepted.forged > 0 {
            info!(queue_id = %id, count = accepted.forged, "forged Authentication-Results removed");
        }
        if let Some(edited) = accepted.apply(record.body()) {
            record.truncate_body();
            record.body_mut().extend_from_slice(&edited);
        }
        if disposition == Disposition::Discard {
            crate::mail!(
                Agent::Smtpd,
                INFO,
                revision = %self.policy.revision(),
                "{id}: discard: END-OF-MESSAGE from {}: discarded by policy; {summary}",
                Client(self.peer.ip())
            );
            self.junk = 0;
            data_succeeded(self);
            return self.push_ok(&queued);
        }
        if let Some(v) = &verified {
            // our results on top, then the ARC set over all of it
            let mut body = Vec::with_capacity(v.header.len() + record.body_len());
            body.extend_from_slice(v.header.as_bytes());
            body.extend_from_slice(record.body());
            if let (Some(a), Some((signer, original))) = (&auth, &sealer) {
                match a
                    .checker
                    .seal(
                        a.settings.checks,
                        peer,
                        &a.spf,
                        v,
                        original,
                        &body,
                        &a.settings.authserv_id,
                        signer,
                    )
                    .await
                {
                    Ok(set) => {
                        info!(queue_id = %id, d = %signer.domain, s = %signer.selector, "ARC set added");
                        body.splice(0..0, set.into_bytes());
                    }
                    Err(e) => {
                        warn!(queue_id = %id, d = %signer.domain, error = %e, "cannot ARC-seal; queued without a seal")
                    }
                }
            }
            record.truncate_body();
            record.body_mut().extend_from_slice(&body);
        }
        let held = disposition == Disposition::Hold;
        // back from a content filter: the origin it had going in; on a `filtered`
        // listener, unrecognised mail is not ours (see `Pipeline::mail_origin`)
        let external = match &came_back {
            Some((_, external)) => *external,
            None => record.envelope().external,
        };
        let came_back = came_back.map(|(name, _)| name);
        let (filter, chosen_by) = match accepted.filter {
            Some((name, by)) => (Some(name), by),
            None => (None, None),
        };
        let filter = filter.filter(|name| {
            let back = came_back.as_deref() == Some(name.as_str());
            if back {
                warn!(queue_id = %id, filter = %name, "this message came back from its content filter on a listener that is not `filtered`: not filtering it again (a loop)");
            }
            !back
        });
        if let Some(name) = &filter {
            self.core.tap(|| super::Tapped::Filter {
                name: name.clone(),
                by: chosen_by.clone(),
            });
            info!(queue_id = %id, filter = %name, rule = %chosen_by.map_or_else(|| "listener".to_owned(), |r| r.to_string()), revision = %self.policy.revision(), "content filter");
        }
        let rcpts = accepted.recipients;
        if rcpts.is_some() {
            info!(queue_id = %id, recipients = ?rcpts, "recipients changed by content checks");
        }
        if held != record.envelope().held
            || filter != record.envelope().filter
            || external != record.envelope().external
            || rcpts.is_some()
        {
            let old = record.envelope();
            let envelope = Envelope {
                held,
                filter,
                external,
                recipients: rcpts.unwrap_or_else(|| old.recipients.clone()),
                ..old.clone()
            };
            record = record.with_envelope(&envelope);
        }
        match self.core.spool.commit(record).await {
            Ok(id) => {
                self.messages += 1;
                crate::metrics::get().received(&self.listen.name, size as u64);
                // as Postfix: a message received starts the junk count again
                self.junk = 0;
                // Postfix's lines for a message received: pflogsumm counts the
                // client= line, and reads the sender and size from the qmgr line
                if self.submitter.is_none() {
                    crate::mail!(
                        Agent::Smtpd,
                        INFO,
                        "{id}: client={}",
                        Client(self.peer.ip())
                    );
                }
                if let Some(mid) = &message_id {
                    let mid = mid.trim_start_matches('<').trim_end_matches('>');
                    crate::mail!(Agent::Cleanup, INFO, "{id}: message-id=<{}>", Addr(mid));
                }
                if held {
                    crate::mail!(
                        Agent::Cleanup,
                        INFO,
                        "{id}: hold: END-OF-MESSAGE from {}: held by policy; {summary}",
                        Client(self.peer.ip())
                    );
                }
                crate::mail!(
                    Agent::Qmgr,
                    INFO,
                    tls = self.tls.is_some(),
                    auth = self.auth_user.as_deref().map(|u| tracing::field::display(reply::sanitize(u, 255))),
                    revision = %self.policy.revision(),
                    "{id}: from=<{}>, size={size}, nrcpt={recipients} (queue active)",
                    Addr(&from)
                );
                if !held {
                    (self.core.on_queued)(id);
                }
                data_succeeded(self);
                self.push_ok(&queued)
            }
            Err(err) => {
                error!(%err, "spool write failed; message not accepted");
                self.fail(reply::QUEUE_WRITE_ERROR)
            }
        }
    }
}
