//! The verbs that change little: RSET and STARTTLS (NOOP, HELP, VRFY and QUIT are
//! answered in `session::command` with their named replies).

use super::reply;
use super::session::{Flow, Session, State};

impl Session {
    pub(super) fn handle_rset(&mut self) -> Flow {
        self.reset_transaction();
        self.state = State::Command;
        self.push_ok(reply::OK)
    }

    /// RFC 3207. The handshake itself runs in `Session::run` once the 220 is out; the
    /// session forgets everything it learnt before it.
    pub(super) fn handle_starttls(&mut self, line: &[u8]) -> Flow {
        if self.tls.is_some() {
            return self.fail(reply::TLS_ALREADY_ACTIVE);
        }
        if self.listen.acceptor.is_none() {
            return self.fail(reply::NOT_IMPLEMENTED);
        }
        if !line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") {
            return self.fail(reply::STARTTLS_SYNTAX);
        }
        if self.tx.sender.is_some() {
            return self.fail(reply::TRANSACTION_IN_PROGRESS);
        }
        self.push(reply::STARTTLS_GO_AHEAD);
        Flow::StartTls
    }
}
