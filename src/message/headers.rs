//! The message as the data stage sees it: its header lines, one logical header at a
//! time as Postfix's cleanup passes them to header_checks, and the header changes
//! data hooks make.
//!
//! What is a header, and what text a header check sees, follow Postfix (cleanup's
//! `mime_state`, checked with `postmap -h -q - regexp:...`):
//!
//! - a header line is `name:` where the name is one or more printable ASCII
//!   characters other than `:`; white space may stand between the name and the colon
//!   (RFC 5322 §4.5.3 obsolete syntax, `X-Mailer : x`), and is removed from the text
//!   checks see (`X-Mailer: x`);
//! - a line starting with a space or tab continues the header before it; the logical
//!   header keeps its line breaks as `\n` (the CRs are dropped): `Subject: a\n b`;
//! - the header block ends at the first empty line or the first line that is neither
//!   (a line without a colon, `From `, a name with 8-bit bytes or spaces, a
//!   continuation line before any header); that line is the first line of the body.
//!
//! Memory: a [`Headers`] holds the headers' text once (at most the header block's
//! size) and two 32-bit offsets per header, whatever the number of headers, so a
//! message of millions of tiny headers costs a small multiple of its own size.

/// The top-level (or a MIME part's) headers of a message (see the module
/// documentation). Iterate with [`Headers::iter`] or `for h in &headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every logical header's text, one after the other (`Name: value`, line breaks
    /// as `\n`).
    text: String,
    /// Per header: where its text starts in `text`, where its raw lines start
    /// (relative to `base`). Its ends are the next header's starts.
    starts: Vec<(u32, u32)>,
    /// Where the last header's raw lines end (relative to `base`).
    raw_end: u32,
    /// Added to raw offsets: where the parsed bytes are in the message.
    base: usize,
}

/// No headers (contexts outside the data stage).
pub static NO_HEADERS: Headers = Headers {
    text: String::new(),
    starts: Vec::new(),
    raw_end: 0,
    base: 0,
};

/// One logical header (see the module documentation), borrowed from [`Headers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLine<'a> {
    line: &'a str,
    name_len: usize,
    /// Where the header's raw lines (continuations and CRLF included) are in the message.
    raw: std::ops::Range<usize>,
}

impl<'a> HeaderLine<'a> {
    /// The whole logical header, `Name: value`, as header_checks match it.
    pub fn line(&self) -> &'a str {
        self.line
    }

    pub fn name(&self) -> &'a str {
        &self.line[..self.name_len]
    }

    /// Where the header's raw lines (continuations and CRLF included) are in the
    /// message it was parsed from.
    pub fn raw(&self) -> std::ops::Range<usize> {
        self.raw.clone()
    }

    /// The header unfolded: its line breaks removed, the white space after them kept
    /// (`Subject: a\n b` → `Subject: a b`), as rules' `header-matches` and hooks see
    /// it. Borrowed unless the header is folded.
    pub fn unfolded(&self) -> std::borrow::Cow<'a, str> {
        if self.line.contains('\n') {
            std::borrow::Cow::Owned(self.line.replace('\n', ""))
        } else {
            std::borrow::Cow::Borrowed(self.line)
        }
    }

    /// The value, without the colon and the whitespace after it; a folded value keeps
    /// its line breaks (`\n`).
    pub fn value(&self) -> &'a str {
        self.line
            .get(self.name_len + 1..)
            .unwrap_or("")
            .trim_start_matches([' ', '\t'])
    }
}

impl Headers {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The `i`th header, from 0.
    pub fn get(&self, i: usize) -> Option<HeaderLine<'_>> {
        (i < self.len()).then(|| self.at(i))
    }

    /// The `i`th header; `i < self.len()`.
    fn at(&self, i: usize) -> HeaderLine<'_> {
        let (text_start, raw_start) = self.starts[i];
        let (text_end, raw_end) = match self.starts.get(i + 1) {
            Some(&(t, r)) => (t as usize, r as usize),
            None => (self.text.len(), self.raw_end as usize),
        };
        let line = &self.text[text_start as usize..text_end];
        // the text always has its colon: names have none
        let name_len = memchr::memchr(b':', line.as_bytes()).unwrap_or(0);
        HeaderLine {
            line,
            name_len,
            raw: self.base + raw_start as usize..self.base + raw_end,
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = HeaderLine<'_>> + ExactSizeIterator + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// Headers from `(name, value)` pairs, as [`parse_headers`] reads `Name: value`
    /// lines (a value may be folded with CRLF and white space). For tests and
    /// benchmarks that need headers without a message.
    pub fn from_pairs<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> Headers {
        let mut text = Vec::new();
        for (name, value) in pairs {
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value.as_bytes());
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"\r\n");
        parse_headers(&text).0
    }

    /// The same headers, their raw offsets moved by `offset` (headers parsed from a
    /// slice, placed in the message).
    pub(crate) fn shifted(mut self, offset: usize) -> Self {
        self.base += offset;
        self
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = HeaderLine<'a>;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = HeaderLine<'a>> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// What one physical line of a header block is.
enum LineKind {
    /// `name:` with the name's length and where the colon is.
    Header {
        name_len: usize,
        colon: usize,
    },
    Continuation,
    /// The empty line, or the first line that is not part of the header block.
    End,
}

/// Postfix's `is_header()`: the length of the name of a header line and the colon's
/// position, or `None` when the line is not a header line.
fn header_name(line: &[u8]) -> Option<(usize, usize)> {
    let mut name_len = 0;
    let mut spaces = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            b':' => return (name_len > 0).then_some((name_len, i)),
            b' ' | b'\t' if name_len > 0 => spaces = true,
            b if b.is_ascii_graphic() && !spaces => name_len += 1,
            _ => return None,
        }
    }
    None
}

fn classify(line: &[u8], first: bool) -> LineKind {
    match line.first() {
        None => LineKind::End,
        Some(b' ' | b'\t') if !first => LineKind::Continuation,
        _ => match header_name(line) {
            Some((name_len, colon)) => LineKind::Header { name_len, colon },
            None => LineKind::End,
        },
    }
}

/// The physical lines of the header block at the top of `message`: `(line without
/// its CRLF, start, end)` and what each is, until the block ends. Offsets past
/// `u32::MAX` end the block (no message that large gets here).
fn lines(message: &[u8]) -> impl Iterator<Item = (&[u8], usize, usize, LineKind)> + '_ {
    let mut pos = 0;
    let mut first = true;
    let limit = message.len().min(u32::MAX as usize);
    std::iter::from_fn(move || {
        if pos >= limit {
            return None;
        }
        let end = memchr::memchr(b'\n', &message[pos..limit]).map_or(limit, |i| pos + i + 1);
        let raw = &message[pos..end];
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let kind = classify(line, first);
        first = false;
        let start = pos;
        pos = end;
        Some((line, start, end, kind))
    })
}

/// Reads the header block at the top of `message` (see the module documentation).
/// Returns the headers and the byte offset where the body starts (after the empty
/// line; at the first line that is not a header; `message.len()` when there is no
/// body). Non-UTF-8 bytes are replaced in the text checks see.
pub fn parse_headers(message: &[u8]) -> (Headers, usize) {
    // a first pass sizes the buffers exactly
    let (mut count, mut size, mut body) = (0usize, 0usize, message.len());
    for (line, start, end, kind) in lines(message) {
        match kind {
            LineKind::Header { .. } => {
                count += 1;
                size += line.len();
            }
            LineKind::Continuation => size += line.len() + 1,
            LineKind::End => {
                body = if line.is_empty() { end } else { start };
                break;
            }
        }
    }
    let mut headers = Headers {
        text: String::with_capacity(size),
        starts: Vec::with_capacity(count),
        raw_end: 0,
        base: 0,
    };
    for (line, start, end, kind) in lines(message) {
        let text_start = headers.text.len() as u32;
        match kind {
            LineKind::Header { name_len, colon } => {
                headers.starts.push((text_start, start as u32));
                push_text(&mut headers.text, &line[..name_len]);
                push_text(&mut headers.text, &line[colon..]);
            }
            LineKind::Continuation => {
                headers.text.push('\n');
                push_text(&mut headers.text, line);
            }
            LineKind::End => break,
        }
        headers.raw_end = end as u32;
    }
    (headers, body)
}

fn push_text(text: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => text.push_str(s),
        Err(_) => text.push_str(&String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{HeaderChange, apply_header_edits};

    #[test]
    fn unfolds_and_stops_at_the_body() {
        let msg = b"Received: from a\r\n\tby b; date\r\nSubject: hi\r\n there\r\nX-Empty:\r\n\r\nbody: not a header\r\n";
        let (headers, body) = parse_headers(msg);
        assert_eq!(headers.len(), 3);
        let h: Vec<HeaderLine<'_>> = headers.iter().collect();
        // line breaks kept as Postfix keeps them (LF, no CR)
        assert_eq!(h[0].line(), "Received: from a\n\tby b; date");
        assert_eq!(h[0].raw(), 0..31);
        assert_eq!(h[1].name(), "Subject");
        assert_eq!(h[1].value(), "hi\n there");
        assert_eq!(h[2].value(), "");
        assert_eq!(h[2].raw(), 52..62);
        assert_eq!(&msg[body..], b"body: not a header\r\n");
    }

    #[test]
    fn header_edits() {
        let msg = b"Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam: no\r\nx-spam: maybe\r\n\r\nbody\r\n";
        let out = apply_header_edits(
            msg,
            &[
                HeaderChange::Remove {
                    name: "X-SPAM".into(),
                },
                HeaderChange::Replace {
                    name: "subject".into(),
                    value: "[tagged] hi".into(),
                },
                HeaderChange::Add {
                    name: "X-Checked".into(),
                    value: "yes".into(),
                },
                HeaderChange::Replace {
                    name: "X-New".into(),
                    value: "1".into(),
                },
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from a\r\n\tby b\r\nsubject: [tagged] hi\r\nX-Checked: yes\r\nX-New: 1\r\n\r\nbody\r\n"
        );
        assert_eq!(apply_header_edits(msg, &[]), msg);
    }

    #[test]
    fn no_body_and_garbage() {
        let (headers, body) = parse_headers(b"Subject: x\r\n");
        assert_eq!((headers.len(), body), (1, 12));
        let (headers, body) = parse_headers(b"not a header line\r\nSubject: x\r\n");
        assert_eq!((headers.len(), body), (0, 0));
    }

    /// What Postfix 3.7 passes to header_checks (`postmap -h -q - regexp:t` printing
    /// each header); tests/postfix_headers.rs compares with postmap itself.
    #[test]
    fn header_lines_as_postfix_sees_them() {
        let lines = |msg: &[u8]| -> (Vec<String>, usize) {
            let (h, body) = parse_headers(msg);
            (h.iter().map(|h| h.line().to_owned()).collect(), body)
        };
        // white space before the colon: a header, shown without it
        let (h, _) = lines(b"X-Mailer : Evil\r\nX-B\t: 1\r\nX-C  :   v\r\n  more\r\n\r\nbody\r\n");
        assert_eq!(h, ["X-Mailer: Evil", "X-B: 1", "X-C:   v\n  more"]);
        // not headers: each ends the header block, and is the body's first line
        for bad in [
            &b"X Mailer: v\r\n"[..],
            b"From a@b Mon Jan  1 00:00:00 2024\r\n",
            b"no colon\r\n",
            b"X-\xc3\xa9: v\r\n",
            b": empty name\r\n",
            b"X-\x7f: del\r\n",
        ] {
            let mut msg = b"X-A: 1\r\n".to_vec();
            msg.extend_from_slice(bad);
            msg.extend_from_slice(b"X-C: 2\r\n\r\nbody\r\n");
            let (h, body) = lines(&msg);
            assert_eq!(h, ["X-A: 1"], "{bad:?}");
            assert_eq!(body, 8, "{bad:?}");
        }
        // a continuation line first: no headers at all
        assert_eq!(lines(b" cont\r\nX-C: 2\r\n"), (vec![], 0));
    }

    #[test]
    fn many_headers_cost_a_small_multiple_of_their_size() {
        let msg = b"a:\r\n".repeat(100_000);
        let (h, body) = parse_headers(&msg);
        assert_eq!((h.len(), body), (100_000, msg.len()));
        // 2 bytes of text and 8 of offsets per 4-byte header, allocated exactly
        assert_eq!(h.text.capacity(), 200_000);
        assert_eq!(h.starts.capacity(), 100_000);
        assert_eq!(h.get(99_999).unwrap().raw(), 399_996..400_000);
    }
}
