//! The verbs that change little: RSET (NOOP, HELP, VRFY and QUIT are answered in
//! `session::command` with their named replies).

use tokio::io::{AsyncRead, AsyncWrite};

use super::reply;
use super::session::{Flow, Session, State};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn handle_rset(&mut self) -> Flow {
        self.reset_transaction();
        self.state = State::Command;
        self.push_ok(reply::OK)
    }
}
