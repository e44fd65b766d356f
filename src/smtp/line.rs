//! Command-line framing: one CRLF-terminated line at a time, bounded in length.
//!
//! The line is framed here (not in smtp-proto's `RequestReceiver`) so that the length
//! limit is ours to configure and so that bare CR and bare LF are refused with a clear
//! reply instead of being read as line ends: a client that sends `\n` alone does not get
//! to end a command there (the same rule as in DATA, see [`super::dot`]).
//!
//! Unless the listener normalizes bare LF for this client (`bare-newline="normalize"`,
//! Postfix 3.9's `smtpd_forbid_bare_newline = normalize`): then a line that ends with
//! LF alone is read as if it ended with CRLF (the CR is added). A bare CR is refused
//! either way.

use memchr::memchr;

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line is in [`LineReader::line`], CRLF included.
    Line,
    /// The line exceeded the limit; its bytes up to and including the LF were dropped.
    TooLong,
    /// The line held a CR that is not followed by LF, or ended with LF alone.
    BareEol,
}

/// Accumulates bytes into at most `max` bytes of line; never grows beyond that.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
    overflow: bool,
    /// The first bytes of the last line that was too long (so that an over-long
    /// `AUTH` line gets RFC 4954's reply).
    long_prefix: [u8; 8],
    /// A line that ends with LF alone ends there, as if with CRLF.
    normalize_lf: bool,
}

impl LineReader {
    /// `max` counts the whole line, CRLF included (RFC 5321 §4.5.3.1.4 asks for 512 at least).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(8),
            overflow: false,
            long_prefix: [0; 8],
            normalize_lf: false,
        }
    }

    /// The same reader, reading a line that ends with LF alone as if it ended with
    /// CRLF (`true`), or refusing it ([`LineEvent::BareEol`], the default).
    pub fn normalize_bare_lf(mut self, normalize: bool) -> Self {
        self.normalize_lf = normalize;
        self
    }

    /// The line found by the last [`LineEvent::Line`], CRLF included.
    pub fn line(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the line buffer out (to parse it while the session is borrowed mutably);
    /// hand it back with [`LineReader::restore`] to keep its allocation.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn restore(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.buf = buf;
    }

    /// Whether the last [`LineEvent::TooLong`] line started with `prefix` (at most 8
    /// bytes, compared without case).
    pub fn long_line_starts(&self, prefix: &[u8]) -> bool {
        prefix.len() <= self.long_prefix.len()
            && self.long_prefix[..prefix.len()].eq_ignore_ascii_case(prefix)
    }

    /// Whether a partial line is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && !self.overflow
    }

    /// Consumes bytes from `input` up to the end of the next line. Returns `None` when
    /// the input ran out first (the partial line is kept).
    pub fn next(&mut self, input: &mut &[u8]) -> Option<LineEvent> {
        if self.buf.last() == Some(&b'\n') {
            self.buf.clear();
        }
        let rest = *input;
        let Some(pos) = memchr(b'\n', rest) else {
            self.append(rest);
            *input = &[];
            return None;
        };
        self.append(&rest[..=pos]);
        *input = &rest[pos + 1..];
        if std::mem::take(&mut self.overflow) {
            self.buf.clear();
            return Some(LineEvent::TooLong);
        }
        let body = &self.buf[..self.buf.len() - 1];
        let ok = body.last() == Some(&b'\r') && memchr(b'\r', &body[..body.len() - 1]).is_none();
        if ok {
            Some(LineEvent::Line)
        } else if self.normalize_lf && memchr(b'\r', body).is_none() {
            if self.buf.len() >= self.max {
                // with its CR the line would be over the limit
                self.long_prefix = [0; 8];
                for (slot, b) in self.long_prefix.iter_mut().zip(&self.buf) {
                    *slot = *b;
                }
                self.buf.clear();
                return Some(LineEvent::TooLong);
            }
            // `LINE\n` read as `LINE\r\n`
            let end = self.buf.len() - 1;
            self.buf.insert(end, b'\r');
            Some(LineEvent::Line)
        } else {
            self.buf.clear();
            Some(LineEvent::BareEol)
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.buf.len() + bytes.len() > self.max {
            self.overflow = true;
            self.long_prefix = [0; 8];
            for (slot, b) in self
                .long_prefix
                .iter_mut()
                .zip(self.buf.iter().chain(bytes))
            {
                *slot = *b;
            }
            self.buf.clear();
            self.buf.shrink_to(self.max.min(1024));
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_reads() {
        let mut r = LineReader::new(64);
        let mut a = &b"EHLO ex"[..];
        assert_eq!(r.next(&mut a), None);
        let mut b = &b"ample\r\nNOOP\r\n"[..];
        assert_eq!(r.next(&mut b), Some(LineEvent::Line));
        assert_eq!(r.line(), b"EHLO example\r\n");
        assert_eq!(r.next(&mut b), Some(LineEvent::Line));
        assert_eq!(r.line(), b"NOOP\r\n");
        assert!(b.is_empty());
    }

    #[test]
    fn too_long_is_dropped_to_its_end() {
        let mut r = LineReader::new(16);
        let long = [b'x'; 40];
        let mut a = &long[..];
        assert_eq!(r.next(&mut a), None);
        let mut b = &b"yyy\r\nNOOP\r\n"[..];
        assert_eq!(r.next(&mut b), Some(LineEvent::TooLong));
        assert_eq!(r.next(&mut b), Some(LineEvent::Line));
        assert_eq!(r.line(), b"NOOP\r\n");
    }

    #[test]
    fn an_over_long_line_keeps_its_start() {
        let mut r = LineReader::new(16);
        let mut a = &b"AUTH PLAIN AAAAAAAAAAAAAAAAAAAAAAAA\r\n"[..];
        assert_eq!(r.next(&mut a), Some(LineEvent::TooLong));
        assert!(r.long_line_starts(b"auth "));
        let mut b = &b"NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"[..];
        assert_eq!(r.next(&mut b), Some(LineEvent::TooLong));
        assert!(!r.long_line_starts(b"AUTH "));
    }

    #[test]
    fn normalized_a_line_ending_with_lf_alone_gets_its_cr_and_a_bare_cr_is_still_refused() {
        let mut r = LineReader::new(64).normalize_bare_lf(true);
        let mut i = &b"EHLO php.example\nNOOP\r\n\nNO\rOP\nNO\rOP\r\nQUIT\n"[..];
        assert_eq!(r.next(&mut i), Some(LineEvent::Line));
        assert_eq!(r.line(), b"EHLO php.example\r\n");
        assert_eq!(r.next(&mut i), Some(LineEvent::Line));
        assert_eq!(r.line(), b"NOOP\r\n");
        assert_eq!(r.next(&mut i), Some(LineEvent::Line));
        assert_eq!(r.line(), b"\r\n");
        assert_eq!(r.next(&mut i), Some(LineEvent::BareEol));
        assert_eq!(r.next(&mut i), Some(LineEvent::BareEol));
        assert_eq!(r.next(&mut i), Some(LineEvent::Line));
        assert_eq!(r.line(), b"QUIT\r\n");
        assert!(i.is_empty());
        // the limit counts the CR the line is given
        let mut r = LineReader::new(8).normalize_bare_lf(true);
        let mut i = &b"AUTH xx\nNOOP xx\n"[..];
        assert_eq!(r.next(&mut i), Some(LineEvent::TooLong));
        assert!(r.long_line_starts(b"AUTH "));
        assert_eq!(r.next(&mut i), Some(LineEvent::TooLong));
        assert!(!r.long_line_starts(b"AUTH "));
    }

    #[test]
    fn bare_eol_is_refused() {
        let mut r = LineReader::new(64);
        for bad in [&b"NOOP\n"[..], b"NO\rOP\r\n", b"\n"] {
            let mut i = bad;
            assert_eq!(r.next(&mut i), Some(LineEvent::BareEol));
        }
    }
}
