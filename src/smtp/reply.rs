//! Every fixed reply the server sends, by name. Replies that carry text from elsewhere
//! (policy rules, the client's own address) go through [`sanitize`] first, so no reply
//! can be split into two by a CR or LF (DESIGN.md §5.5).

pub const OK: &str = "250 2.0.0 Ok\r\n";
pub const MAIL_OK: &str = "250 2.1.0 Ok\r\n";
pub const RCPT_OK: &str = "250 2.1.5 Ok\r\n";
pub const DATA_GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
pub const BYE: &str = "221 2.0.0 Bye\r\n";
pub const HELP: &str =
    "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP HELP VRFY QUIT\r\n";
/// RFC 5321 §3.5.3: 252 says neither yes nor no, so VRFY reveals no user.
pub const VRFY: &str =
    "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n";

pub const NEED_HELO: &str = "503 5.5.1 Error: send HELO/EHLO first\r\n";
pub const NESTED_MAIL: &str = "503 5.5.1 Error: nested MAIL command\r\n";
pub const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command\r\n";
pub const NEED_RCPT: &str = "503 5.5.1 Error: need RCPT command\r\n";
pub const BDAT_THEN_DATA: &str = "503 5.5.1 Error: DATA after BDAT in the same transaction\r\n";
pub const NO_AUTH: &str = "503 5.5.1 Error: authentication not enabled\r\n";

pub const STARTTLS_GO_AHEAD: &str = "220 2.0.0 Ready to start TLS\r\n";
pub const TLS_ALREADY_ACTIVE: &str = "554 5.5.1 Error: TLS already active\r\n";
pub const STARTTLS_SYNTAX: &str = "501 5.5.4 Syntax: STARTTLS\r\n";
pub const TRANSACTION_IN_PROGRESS: &str = "503 5.5.1 Error: MAIL transaction in progress\r\n";
pub const NEED_STARTTLS: &str = "530 5.7.0 Must issue a STARTTLS command first\r\n";

// AUTH (RFC 4954)
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";
pub const AUTH_EMPTY_CHALLENGE: &str = "334 \r\n";
pub const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required\r\n";
pub const AUTH_NEEDS_TLS: &str =
    "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
pub const ALREADY_AUTHENTICATED: &str = "503 5.5.1 Error: already authenticated\r\n";
pub const UNKNOWN_MECHANISM: &str = "504 5.5.4 Unrecognized authentication type\r\n";
pub const AUTH_LINE_TOO_LONG: &str = "500 5.5.6 Authentication Exchange line is too long\r\n";
pub const AUTH_CANCELLED: &str = "501 5.7.0 Authentication cancelled\r\n";
pub const AUTH_UNDECODABLE: &str = "501 5.5.2 Cannot decode response\r\n";
pub const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed\r\n";
pub const AUTH_TEMPORARY: &str = "454 4.7.0 Temporary authentication failure\r\n";
pub const TOO_MANY_AUTH_USER: &str =
    "454 4.7.0 Error: too many failed authentication attempts for this user; try again later\r\n";
pub const TOO_MANY_AUTH: &str =
    "454 4.7.0 Error: too many authentication attempts from your address; try again later\r\n";

pub const UNKNOWN_COMMAND: &str = "500 5.5.2 Error: command not recognized\r\n";
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Error: command not implemented\r\n";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Error: line too long\r\n";
pub const BARE_EOL_COMMAND: &str =
    "500 5.5.2 Error: bare <CR> or <LF> in command; lines end with <CR><LF>\r\n";
pub const BARE_EOL_DATA: &str =
    "550 5.5.2 Error: bare <CR> or <LF> in message data; lines end with <CR><LF>\r\n";
pub const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax\r\n";
pub const BAD_RECIPIENT: &str = "501 5.1.3 Bad recipient address syntax\r\n";
pub const NEED_SMTPUTF8: &str = "553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n";
pub const PIPELINING_VIOLATION: &str =
    "554 5.5.0 Error: SMTP protocol synchronization: data sent before the 354 reply\r\n";
pub const HTTP_REQUEST: &str = "221 2.7.0 Error: this is an SMTP server, not HTTP; closing\r\n";

pub const MESSAGE_TOO_BIG: &str = "552 5.3.4 Error: message file too big\r\n";
pub const HEADER_TOO_BIG: &str = "552 5.3.4 Error: message header size exceeds limit\r\n";
pub const TEXT_LINE_TOO_LONG: &str = "550 5.6.0 Error: text line too long in message data\r\n";
pub const NO_DATA_MEMORY: &str = "451 4.3.1 Insufficient system resources\r\n";
pub const RCPT_AFTER_BDAT: &str =
    "503 5.5.1 Error: RCPT after BDAT; all recipients go before the first chunk\r\n";
pub const NON_SMTP_COMMAND: &str = "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n";
pub const TOO_MANY_MESSAGES: &str =
    "450 4.7.1 Error: too many messages from your address; try again later\r\n";
pub const TOO_MANY_RCPTS_RATE: &str =
    "450 4.7.1 Error: too many recipients from your address; try again later\r\n";
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Error: too many recipients\r\n";
pub const INSUFFICIENT_STORAGE: &str = "452 4.3.1 Error: insufficient system storage\r\n";
pub const QUEUE_WRITE_ERROR: &str = "451 4.3.0 Error: queue file write error\r\n";

/// Builds a reply from parts; the text is sanitised.
pub fn line(code: u16, enhanced: [u8; 3], text: &str) -> String {
    let [a, b, c] = enhanced;
    format!("{code} {a}.{b}.{c} {}\r\n", sanitize(text, 400))
}

/// `421` replies name the host, as RFC 5321 §4.2 asks for service-closing replies.
pub fn closing(hostname: &str, enhanced: [u8; 3], text: &str) -> String {
    let [a, b, c] = enhanced;
    format!("421 {a}.{b}.{c} {hostname} {}\r\n", sanitize(text, 400))
}

pub const TIMEOUT: [u8; 3] = [4, 4, 2];
pub const TOO_MANY_ERRORS: [u8; 3] = [4, 7, 0];
pub const SHUTTING_DOWN: [u8; 3] = [4, 3, 2];
/// The cluster's Redis does not answer and the limits' fallback is `tempfail`.
pub const SYSTEM_TEMPORARY: [u8; 3] = [4, 3, 0];
pub const LIMITS_UNAVAILABLE: &str =
    "451 4.3.0 Error: temporary failure of the shared limits; try again later\r\n";
pub const AUTH_LIMITS_UNAVAILABLE: &str =
    "454 4.3.0 Error: temporary failure of the shared limits; try again later\r\n";

/// Every reply text from elsewhere goes through this one function: printable ASCII
/// only, cut to a length.
pub use crate::config::sanitize_text as sanitize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_never_carry_line_breaks() {
        let r = line(554, [5, 7, 1], "<a\r\n250 ok@x>: Relay access denied");
        assert_eq!(r.matches("\r\n").count(), 1);
        assert!(r.ends_with("\r\n"));
        assert_eq!(sanitize("héllo", 2), "h?");
    }
}
