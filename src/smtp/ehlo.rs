//! EHLO and HELO.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::reply;
use super::session::{Flow, Session};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Records the client's name and starts afresh (RFC 5321 §4.1.4: EHLO resets the
    /// transaction like RSET).
    pub(super) fn handle_ehlo(&mut self, host: &str, esmtp: bool) -> Flow {
        let host = reply::sanitize(host, 255);
        debug!(helo = %host, esmtp, "helo");
        self.reset_transaction();
        self.helo = Some(host);
        self.esmtp = esmtp;
        if esmtp {
            let ehlo = self.core.ehlo.clone();
            self.push(&ehlo);
        } else {
            let text = format!("250 {}\r\n", self.core.hostname);
            self.push(&text);
        }
        Flow::Continue
    }
}
