//! EHLO and HELO.

use tracing::debug;

use super::reply;
use super::session::{Flow, Session};
use crate::policy::{Context, Stage, Verdict};

impl Session {
    /// Records the client's name and starts afresh (RFC 5321 §4.1.4: EHLO resets the
    /// transaction like RSET).
    pub(super) async fn handle_ehlo(&mut self, host: &str, esmtp: bool) -> Flow {
        let host = reply::sanitize(host, 255);
        debug!(helo = %host, esmtp, "helo");
        self.reset_transaction();
        let (decision, logged) = self.policy.evaluate_logged(
            Stage::Helo,
            &Context {
                helo: Some(&host),
                protocol: Some(if esmtp { "ESMTP" } else { "SMTP" }),
                ..self.policy_context()
            },
        );
        let ok = if esmtp {
            self.listen.ehlo(self.tls.is_some()).to_owned()
        } else {
            format!("250 {}\r\n", self.listen.settings.hostname)
        };
        let refused = matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        // the stage's rules first, then the milters
        let milter = match !refused && self.milters_apply() {
            true => self.milter_event(super::milter::Event::Helo(&host)).await,
            false => None,
        };
        logged.finish(self.take_milter_answers());
        if let Some(r) = milter {
            return self.milter_refused(if esmtp { "EHLO" } else { "HELO" }, r, None);
        }
        let flow = self.apply(Stage::Helo, decision, &ok);
        if !refused {
            // a refused HELO leaves the client without a name: it must try again
            self.helo = Some(host);
            self.esmtp = esmtp;
        }
        flow
    }
}
