//! SMTP replies that policy decides: a basic code, an enhanced status code
//! (RFC 3463) and a text that is safe to put on the wire.
//!
//! Defined here, beside the configuration that writes them (`reject 554 "5.7.1"
//! "..."`), so that config does not depend on policy; [`crate::policy`] re-exports
//! [`Reply`] as its public home.

use std::fmt;

/// Longest reply text, in bytes. RFC 5321 bounds a reply line to 512 octets
/// including the code, the enhanced code and CRLF; 400 leaves room for both.
pub const MAX_REPLY_TEXT: usize = 400;

/// An SMTP reply a rule or the pipeline's default decides.
///
/// The text is always printable ASCII: [`Reply::new`] replaces anything else, and
/// the configuration refuses it, so a reply can never smuggle a CR/LF onto the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The basic reply code, 400..=599 for the replies policy produces.
    pub code: u16,
    /// The enhanced status code `class.subject.detail`; `class` is the first digit
    /// of `code`.
    pub enhanced: [u8; 3],
    /// Human-readable text, already sanitised.
    pub text: String,
}

impl Reply {
    /// Builds a reply, sanitising `text` (see [`sanitize_text`]). The codes are taken
    /// as given; use [`Reply::check_codes`] for values that come from outside.
    pub fn new(code: u16, enhanced: [u8; 3], text: &str) -> Self {
        Self {
            code,
            enhanced,
            text: sanitize_text(text, MAX_REPLY_TEXT),
        }
    }

    /// Whether `code` and `enhanced` make a negative reply policy may send: a 4xx or
    /// 5xx code whose enhanced class is its first digit.
    pub fn check_codes(code: u16, enhanced: [u8; 3]) -> Result<(), ReplyCodeError> {
        if !(400..=599).contains(&code) {
            return Err(ReplyCodeError::NotNegative { code });
        }
        let class = (code / 100) as u8;
        if enhanced[0] != class {
            return Err(ReplyCodeError::ClassMismatch { code, enhanced });
        }
        Ok(())
    }

    /// Parses an enhanced status code such as `5.7.1`: three dot-separated numbers,
    /// each 0..=255 (RFC 3463 allows three digits; registered codes stay far below).
    pub fn parse_enhanced(s: &str) -> Option<[u8; 3]> {
        let mut parts = s.split('.');
        let mut out = [0u8; 3];
        for slot in &mut out {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        if parts.next().is_some() || !(2..=5).contains(&out[0]) {
            return None;
        }
        Some(out)
    }

    /// Whether this is a temporary failure (4xx).
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [class, subject, detail] = self.enhanced;
        write!(f, "{} {class}.{subject}.{detail}", self.code)?;
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Codes that do not make a negative reply (see [`Reply::check_codes`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyCodeError {
    #[error("reply code {code} is not a 4xx or 5xx code")]
    NotNegative { code: u16 },
    #[error(
        "enhanced status code {}.{}.{} does not match reply code {code}: its class must be {}",
        enhanced[0], enhanced[1], enhanced[2], code / 100
    )]
    ClassMismatch { code: u16, enhanced: [u8; 3] },
}

/// Makes `text` safe for a reply line: every character outside printable ASCII
/// (CR, LF, other controls, DEL, non-ASCII) becomes `?`, and the result is cut to at
/// most `max` bytes.
pub fn sanitize_text(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if is_reply_char(c) { c } else { '?' })
        .take(max)
        .collect()
}

/// Printable ASCII, the character set of RFC 5321 reply text (plus space).
pub(crate) fn is_reply_char(c: char) -> bool {
    matches!(c, ' '..='~')
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn code_errors_say_what_is_wrong() {
        let e = Reply::check_codes(250, [2, 0, 0]).unwrap_err();
        assert_eq!(e.to_string(), "reply code 250 is not a 4xx or 5xx code");
        let e = Reply::check_codes(451, [5, 7, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "enhanced status code 5.7.1 does not match reply code 451: its class must be 4"
        );
    }
}
