//! Postfix's policy delegation protocol (SMTPD_POLICY_README), the wire side: a
//! request is `name=value` lines and an empty line; the reply is the same, and only
//! its `action` matters.
//!
//! Replies are untrusted input: [`parse_reply`] reads at most [`MAX_REPLY`] bytes,
//! never panics, and says what is wrong with a malformed reply (which then gets the
//! service's default action). Fuzzed by `fuzz/fuzz_targets/policy_reply.rs`.

/// The most a reply may take, terminator included (Postfix's attribute reader stops
/// at `line_length_limit`, 2048, per attribute; a whole reply of 8 KiB is plenty).
pub const MAX_REPLY: usize = 8192;
/// Longest value sent in a request (longer client data is cut).
pub const MAX_VALUE: usize = 2048;

/// Why a reply is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is longer than {MAX_REPLY} bytes")]
    TooLong,
    #[error("malformed reply line {0:?} (expected name=value)")]
    Malformed(String),
    #[error("the reply has no action")]
    NoAction,
    #[error("the reply is not UTF-8")]
    NotUtf8,
}

/// A request's bytes from its attributes, in order. Values are made safe for the
/// line protocol: CR, LF and other control characters become `?` (they could end an
/// attribute or the request early), and each value is cut to [`MAX_VALUE`] bytes.
pub fn encode(attrs: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    for (name, value) in attrs {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        let mut len = 0;
        for c in value.chars() {
            let c = if c.is_control() { '?' } else { c };
            len += c.len_utf8();
            if len > MAX_VALUE {
                break;
            }
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Reads a reply from the start of `buf`: `Ok(None)` while it is incomplete (read
/// more), `Ok(Some((action, used)))` once the empty line that ends it has arrived
/// (`used`: how many bytes it took), or why it is refused. Lines end with LF (a CR
/// before it is dropped); attributes other than `action` are ignored; the first
/// `action` counts.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(String, usize)>, ReplyError> {
    let mut action: Option<String> = None;
    let mut start = 0;
    loop {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            return if buf.len() >= MAX_REPLY {
                Err(ReplyError::TooLong)
            } else {
                Ok(None)
            };
        };
        let end = start + nl;
        if end + 1 > MAX_REPLY {
            return Err(ReplyError::TooLong);
        }
        let line = &buf[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        if line.is_empty() {
            return match action {
                Some(a) => Ok(Some((a, start))),
                None => Err(ReplyError::NoAction),
            };
        }
        let line = std::str::from_utf8(line).map_err(|_| ReplyError::NotUtf8)?;
        let Some((name, value)) = line.split_once('=') else {
            return Err(ReplyError::Malformed(line.chars().take(80).collect()));
        };
        if name.is_empty() {
            return Err(ReplyError::Malformed(line.chars().take(80).collect()));
        }
        if name == "action" && action.is_none() {
            action = Some(value.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_lines_and_an_empty_line() {
        let req = encode(&[
            ("request", "smtpd_access_policy".into()),
            ("helo_name", "evil\r\naction=OK\n\nx\u{7f}".into()),
            ("sender", "".into()),
        ]);
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "request=smtpd_access_policy\nhelo_name=evil??action=OK??x?\nsender=\n\n"
        );
        let long = encode(&[("sender", "é".repeat(MAX_VALUE))]);
        assert!(long.len() <= "sender=\n\n".len() + MAX_VALUE);
        assert!(std::str::from_utf8(&long).is_ok());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"action=DUNNO\n"), Ok(None));
        assert_eq!(
            parse_reply(b"action=DUNNO\n\nnext"),
            Ok(Some(("DUNNO".into(), 14)))
        );
        assert_eq!(
            parse_reply(b"x=y\r\naction=REJECT no=way\r\naction=OK\r\n\r\n"),
            Ok(Some(("REJECT no=way".into(), 40)))
        );
        assert_eq!(parse_reply(b"\n"), Err(ReplyError::NoAction));
        assert_eq!(parse_reply(b"other=1\n\n"), Err(ReplyError::NoAction));
        assert!(matches!(
            parse_reply(b"DUNNO\n\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"=x\n\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert_eq!(parse_reply(b"action=\xff\n\n"), Err(ReplyError::NotUtf8));
        let endless = vec![b'a'; MAX_REPLY];
        assert_eq!(parse_reply(&endless), Err(ReplyError::TooLong));
        let mut lines = b"x=y\n".repeat(MAX_REPLY / 4);
        lines.extend_from_slice(b"action=OK\n\n");
        assert_eq!(parse_reply(&lines), Err(ReplyError::TooLong));
    }
}
