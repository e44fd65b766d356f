//! Server replies, read with bounded memory (DESIGN.md §5, contract 7).
//!
//! smtp-proto's `ResponseReceiver` grows its message without a limit, so the client reads
//! replies itself: a line may be at most [`MAX_LINE`] bytes and a whole (multi-line)
//! reply at most [`MAX_REPLY`] bytes, whatever the server sends.

use std::fmt;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest reply line we accept, CRLF included.
pub const MAX_LINE: usize = 4096;
/// The most bytes one reply (all its lines) may take.
pub const MAX_REPLY: usize = 64 * 1024;

/// An RFC 3463 enhanced status code (`5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A server's reply: its code, the enhanced code of its first line if any, and the text
/// of all its lines joined with a space (enhanced codes and control characters removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub text: String,
}

impl Reply {
    /// A reply the client makes up itself, for a failure found before sending anything.
    pub(crate) fn local(code: u16, enhanced: (u8, u16, u16), text: &str) -> Reply {
        Reply {
            code,
            enhanced: Some(EnhancedCode {
                class: enhanced.0,
                subject: enhanced.1,
                detail: enhanced.2,
            }),
            text: text.to_string(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 5xx: retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Why a reply could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// The connection closed before a complete reply.
    Eof,
    /// Not a reply: the message says what was wrong.
    Malformed(String),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A reply with its lines kept apart (EHLO needs them); `lines` holds the text after
/// each line's code and separator, sanitised.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl RawReply {
    pub fn to_reply(&self) -> Reply {
        let class = (self.code / 100) as u8;
        let mut enhanced = None;
        let mut parts = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.iter().enumerate() {
            let (code, rest) = split_enhanced(line, class);
            if i == 0 {
                enhanced = code;
            }
            if !rest.is_empty() {
                parts.push(rest);
            }
        }
        Reply {
            code: self.code,
            enhanced,
            text: parts.join(" "),
        }
    }
}

/// Splits a leading `class.subject.detail` off `text` when its class matches the reply.
fn split_enhanced(text: &str, class: u8) -> (Option<EnhancedCode>, &str) {
    let (word, rest) = match text.split_once(' ') {
        Some((w, r)) => (w, r.trim_start()),
        None => (text, ""),
    };
    let mut it = word.split('.');
    let parsed = (|| {
        let c: u8 = digits(it.next()?, 1)?.parse().ok()?;
        let s: u16 = digits(it.next()?, 3)?.parse().ok()?;
        let d: u16 = digits(it.next()?, 3)?.parse().ok()?;
        if it.next().is_some() || c != class {
            return None;
        }
        Some(EnhancedCode {
            class: c,
            subject: s,
            detail: d,
        })
    })();
    match parsed {
        Some(code) => (Some(code), rest),
        None => (None, text),
    }
}

fn digits(s: &str, max: usize) -> Option<&str> {
    (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// Reads one whole reply, multi-line included, within [`MAX_LINE`] and [`MAX_REPLY`].
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<RawReply, ReadError> {
    let mut total = 0;
    let mut code = 0;
    let mut lines = Vec::new();
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        read_line(r, &mut line).await?;
        total += line.len();
        if total > MAX_REPLY {
            return Err(ReadError::Malformed(format!(
                "reply longer than {MAX_REPLY} bytes"
            )));
        }
        // Without its line ending (a bare LF is tolerated from servers).
        let mut l = &line[..line.len() - 1];
        if let Some(stripped) = l.strip_suffix(b"\r") {
            l = stripped;
        }
        let (this_code, last, text) = parse_line(l)?;
        if lines.is_empty() {
            code = this_code;
        } else if this_code != code {
            return Err(ReadError::Malformed(format!(
                "reply lines with different codes ({code} then {this_code})"
            )));
        }
        lines.push(sanitise(text));
        if last {
            return Ok(RawReply { code, lines });
        }
    }
}

/// One line, LF included, into `out`; never more than [`MAX_LINE`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, out: &mut Vec<u8>) -> Result<(), ReadError> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(ReadError::Eof);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() + take > MAX_LINE {
            return Err(ReadError::Malformed(format!(
                "reply line longer than {MAX_LINE} bytes"
            )));
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(());
        }
    }
}

/// `250-text`, `250 text` or `250`: the code, whether it is the last line, the text.
fn parse_line(l: &[u8]) -> Result<(u16, bool, &[u8]), ReadError> {
    let bad = || {
        ReadError::Malformed(format!(
            "not a reply line: {:?}",
            sanitise(&l[..l.len().min(80)])
        ))
    };
    if l.len() < 3 || !l[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&l[0]) {
        return Err(bad());
    }
    let code = u16::from(l[0] - b'0') * 100 + u16::from(l[1] - b'0') * 10 + u16::from(l[2] - b'0');
    match l.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &l[4..])),
        Some(b'-') => Ok((code, false, &l[4..])),
        Some(_) => Err(bad()),
    }
}

/// Server text as a printable string: invalid UTF-8 and control characters become `?`.
fn sanitise(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8]) -> Result<Reply, ReadError> {
        let mut r = tokio::io::BufReader::with_capacity(7, input);
        read_reply(&mut r).await.map(|raw| raw.to_reply())
    }

    #[tokio::test]
    async fn single_line_with_enhanced_code() {
        let r = read(b"550 5.1.1 <a@b>: no such user\r\n").await.unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(r.text, "<a@b>: no such user");
        assert_eq!(r.to_string(), "550 5.1.1 <a@b>: no such user");
    }

    #[tokio::test]
    async fn multi_line_is_joined_and_codes_are_stripped() {
        let r = read(b"451-4.3.0 try\r\n451-4.3.0 again\r\n451 4.3.0 later\r\nNEXT")
            .await
            .unwrap();
        assert_eq!((r.code, r.text.as_str()), (451, "try again later"));
        assert!(!r.is_permanent());
    }

    #[tokio::test]
    async fn enhanced_code_of_another_class_is_text() {
        let r = read(b"250 5.1.1 odd\r\n").await.unwrap();
        assert_eq!((r.enhanced, r.text.as_str()), (None, "5.1.1 odd"));
        let r = read(b"250\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (250, ""));
    }

    #[tokio::test]
    async fn control_characters_are_replaced() {
        let r = read(b"250 ok\x1b[31m\xff\r\n").await.unwrap();
        assert_eq!(r.text, "ok?[31m\u{fffd}");
    }

    #[tokio::test]
    async fn malformed_replies_are_refused() {
        for bad in [
            &b"hello\r\n"[..],
            b"250-a\r\n251 b\r\n",
            b"25\r\n",
            b"250x\r\n",
            b"650 no\r\n",
        ] {
            assert!(
                matches!(read(bad).await, Err(ReadError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(read(b"250-a\r\n250 b").await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn a_long_line_is_refused() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(matches!(read(&long).await, Err(ReadError::Malformed(m)) if m.contains("line")));
        // Exactly at the cap is fine.
        let mut ok = b"250 ".to_vec();
        ok.resize(MAX_LINE - 2, b'x');
        ok.extend_from_slice(b"\r\n");
        assert!(read(&ok).await.is_ok());
    }

    #[tokio::test]
    async fn an_endless_multi_line_reply_is_refused() {
        let mut endless = Vec::new();
        while endless.len() < 2 * MAX_REPLY {
            endless.extend_from_slice(b"250-more and more\r\n");
        }
        assert!(
            matches!(read(&endless).await, Err(ReadError::Malformed(m)) if m.contains("reply longer"))
        );
    }
}
