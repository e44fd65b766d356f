//! Message data while it arrives: the process-wide memory budget for it
//! (`limits { data-memory }`) and the streaming checks of the text (`header-size`,
//! `text-line-length`), made as the bytes come in, so that nothing over a limit is
//! kept and no policy runs on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use memchr::memchr;

/// Bytes reserved for every message being received, in the whole process.
#[derive(Debug, Default)]
pub struct DataMemory {
    used: AtomicUsize,
}

impl DataMemory {
    /// Takes `bytes` of a budget of `limit`, or `None` when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<Reservation> {
        let mut r = Reservation {
            owner: self.clone(),
            held: 0,
        };
        r.grow_to(bytes, limit).then_some(r)
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A part of the budget, given back when dropped (whatever way the message ends).
#[derive(Debug)]
pub struct Reservation {
    owner: Arc<DataMemory>,
    held: usize,
}

impl Reservation {
    /// Holds `bytes` in all (at least what it holds now) if the budget allows it.
    pub fn grow_to(&mut self, bytes: usize, limit: usize) -> bool {
        let more = bytes.saturating_sub(self.held);
        if more == 0 {
            return true;
        }
        let got = self
            .owner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&n| n <= limit)
            });
        if got.is_ok() {
            self.held += more;
        }
        got.is_ok()
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.held {
            self.owner
                .used
                .fetch_sub(self.held - bytes, Ordering::AcqRel);
            self.held = bytes;
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// Where the header-section scan stands within a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// At the start of a line.
    Start,
    /// Inside a field name.
    Name,
    /// White space after a field name (RFC 5322 §4.5.3 obsolete syntax `Name :`).
    NameSpace,
    /// After the colon, or in a continuation line: the rest of the line is the field's.
    Field,
    /// The header section is over: body lines.
    Body,
}

/// What a streaming check of message text found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextError {
    /// The header section is larger than `header-size`.
    HeaderTooBig,
    /// A line is longer than `text-line-length` (CRLF included).
    LineTooLong,
}

/// Checks message text as it streams in: the size of the header section (up to the
/// empty line, or up to the first line that is neither a header field nor a
/// continuation, as Postfix's cleanup reads it), and the length of every line.
///
/// Lines are measured without their CRLF, as the message will be sent (dot-stuffing
/// undone), against RFC 5321's 998 octets (`text-line-length` 1000 with the CRLF).
#[derive(Debug)]
pub struct TextScan {
    head: Head,
    header_bytes: usize,
    header_limit: usize,
    /// Bytes of the current line so far (its CR included, if one came).
    line: usize,
    /// The longest line allowed, without its CRLF.
    line_limit: usize,
    last_cr: bool,
    /// The first limit broken.
    pub error: Option<TextError>,
}

impl TextScan {
    /// `text_line_length` counts the CRLF, as `limits` does.
    pub fn new(header_limit: usize, text_line_length: usize) -> Self {
        Self {
            head: Head::Start,
            header_bytes: 0,
            header_limit,
            line: 0,
            line_limit: text_line_length.saturating_sub(2),
            last_cr: false,
            error: None,
        }
    }

    fn fail(&mut self, e: TextError) {
        self.error.get_or_insert(e);
    }

    /// Feeds the next bytes of the message (as stored: after un-stuffing).
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            if self.head == Head::Body {
                // lines only: find each LF
                match memchr(b'\n', data) {
                    Some(pos) => {
                        self.end_line(pos, data[..pos].last().copied());
                        data = &data[pos + 1..];
                    }
                    None => {
                        self.line += data.len();
                        self.last_cr = data.last() == Some(&b'\r');
                        if self.line > self.line_limit + 1 {
                            self.fail(TextError::LineTooLong);
                        }
                        return;
                    }
                }
                continue;
            }
            // the header section, a byte at a time (bounded by `header-size`)
            let b = data[0];
            data = &data[1..];
            if b == b'\n' {
                let content = self.line - usize::from(self.last_cr);
                let was = self.head;
                self.end_line(0, None);
                if self.error.is_some() {
                    return;
                }
                self.head = match was {
                    // an empty line, or one that is no field: the body starts
                    Head::Start | Head::Name | Head::NameSpace => Head::Body,
                    _ if content == 0 => Head::Body,
                    _ => Head::Start,
                };
                if self.head == Head::Start {
                    self.header_bytes += content + 2;
                }
                continue;
            }
            self.line += 1;
            self.last_cr = b == b'\r';
            if b == b'\r' {
                continue;
            }
            self.head = match (self.head, b) {
                (Head::Start, b' ' | b'\t') => Head::Field,
                (Head::Name, b':') => Head::Field,
                (Head::Start | Head::Name, 0x21..=0x7e) if b != b':' => Head::Name,
                (Head::Name | Head::NameSpace, b' ' | b'\t') => Head::NameSpace,
                (Head::NameSpace, b':') => Head::Field,
                (Head::Field, _) => Head::Field,
                // no field name: this line is the first of the body
                _ => Head::Body,
            };
            if self.head != Head::Body && self.header_bytes + self.line > self.header_limit {
                self.fail(TextError::HeaderTooBig);
            }
            if self.line > self.line_limit + 1 {
                self.fail(TextError::LineTooLong);
            }
        }
    }

    /// A line ends with the LF after `more` further bytes (the last of which is `last`).
    fn end_line(&mut self, more: usize, last: Option<u8>) {
        let cr = match last {
            Some(b) => b == b'\r',
            None if more == 0 => self.last_cr,
            None => false,
        };
        let content = (self.line + more).saturating_sub(usize::from(cr));
        if content > self.line_limit {
            self.fail(TextError::LineTooLong);
        }
        self.line = 0;
        self.last_cr = false;
    }

    /// The end of the data: a last line without CRLF (BDAT) is measured too.
    pub fn finish(&mut self) {
        if self.line > self.line_limit {
            self.fail(TextError::LineTooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(data: &[u8], step: usize) -> Option<TextError> {
        let mut s = TextScan::new(100, 20);
        for chunk in data.chunks(step.max(1)) {
            s.feed(chunk);
        }
        s.finish();
        s.error
    }

    #[test]
    fn header_section_and_lines() {
        for step in [1, 2, 3, 7, 1000] {
            let ok = b"Subject: x\r\nX-A : y\r\n\tfolded\r\n\r\nbody line 18 chars\r\n";
            assert_eq!(scan(ok, step), None, "{step}");
            // 18 octets and CRLF is the limit of 20
            assert_eq!(scan(b"a: b\r\n\r\n123456789012345678\r\n", step), None);
            assert_eq!(
                scan(b"a: b\r\n\r\n1234567890123456789\r\n", step),
                Some(TextError::LineTooLong)
            );
            // the last line of BDAT data may lack its CRLF
            assert_eq!(
                scan(b"a: b\r\n\r\n1234567890123456789", step),
                Some(TextError::LineTooLong)
            );
            assert_eq!(scan(b"a: b\r\n\r\n123456789012345678", step), None);
            let many = b"a:\r\n".repeat(30);
            assert_eq!(scan(&many, step), Some(TextError::HeaderTooBig), "{step}");
            // the same after the empty line is body
            let mut body = b"a: b\r\n\r\n".to_vec();
            body.extend_from_slice(&many);
            assert_eq!(scan(&body, step), None);
            // a line that is no field ends the header section
            let mut body = b"a: b\r\nnot a header\r\n".to_vec();
            body.extend_from_slice(&many);
            assert_eq!(scan(&body, step), None);
            // folded lines count
            let mut folded = b"a: b\r\n".to_vec();
            folded.extend_from_slice(&b" c\r\n".repeat(30));
            assert_eq!(scan(&folded, step), Some(TextError::HeaderTooBig));
        }
    }

    #[test]
    fn the_budget_is_given_back() {
        let budget = Arc::new(DataMemory::default());
        let mut a = budget.reserve(60, 100).unwrap();
        assert!(budget.reserve(50, 100).is_none());
        assert!(!a.grow_to(101, 100));
        assert!(a.grow_to(100, 100));
        a.shrink_to(10);
        let b = budget.reserve(90, 100).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
