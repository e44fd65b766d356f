//! The message as the data stage sees it: its header lines, unfolded, one logical
//! header at a time (as Postfix's header_checks match them), and the header
//! changes data hooks make.

use super::script::HeaderChange;

/// One logical header, unfolded: continuation lines joined with their leading
/// whitespace kept, the CRLFs removed. `line()` is `Name: value` as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLine {
    line: String,
    name_len: usize,
    /// Where the header's raw lines (continuations and CRLF included) are in the message.
    raw: std::ops::Range<usize>,
}

impl HeaderLine {
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            line: format!("{name}: {value}"),
            name_len: name.len(),
            raw: 0..0,
        }
    }

    /// The whole unfolded header, `Name: value`.
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn name(&self) -> &str {
        &self.line[..self.name_len]
    }

    /// Where the header's raw lines (continuations and CRLF included) are in the
    /// message it was parsed from (`0..0` for a header made with [`HeaderLine::new`]).
    pub fn raw(&self) -> std::ops::Range<usize> {
        self.raw.clone()
    }

    /// Moves the raw range (a header parsed from a slice, placed in its message).
    pub(crate) fn set_raw(&mut self, raw: std::ops::Range<usize>) {
        self.raw = raw;
    }

    /// The value, without the colon and the whitespace after it.
    pub fn value(&self) -> &str {
        self.line[self.name_len + 1..].trim_start_matches([' ', '\t'])
    }
}

/// Reads the header block at the top of `message` (up to the first empty line).
/// Returns the headers and the byte offset where the body starts (after the empty
/// line; `message.len()` when there is no body). Lines that are not headers end the
/// header block, as a MIME parser would; non-UTF-8 bytes are replaced.
pub fn parse_headers(message: &[u8]) -> (Vec<HeaderLine>, usize) {
    let mut headers: Vec<HeaderLine> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let raw = &message[pos..end];
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (headers, end);
        }
        let text = String::from_utf8_lossy(line);
        if matches!(line[0], b' ' | b'\t') {
            match headers.last_mut() {
                Some(last) => {
                    last.line.push_str(&text);
                    last.raw.end = end;
                }
                None => return (headers, pos),
            }
        } else {
            match text.find(':') {
                Some(colon) if colon > 0 && text[..colon].bytes().all(|b| b.is_ascii_graphic()) => {
                    headers.push(HeaderLine {
                        name_len: colon,
                        line: text.into_owned(),
                        raw: pos..end,
                    });
                }
                _ => return (headers, pos),
            }
        }
        pos = end;
    }
    (headers, message.len())
}

/// The message with `edits` applied in order; the body is untouched. Names and values
/// must already be clean (no CR/LF, names without `:` or spaces): the script host
/// checks them.
pub fn apply_header_edits(message: &[u8], edits: &[HeaderChange]) -> Vec<u8> {
    if edits.is_empty() {
        return message.to_vec();
    }
    let (headers, body_start) = parse_headers(message);
    // each original header: kept as its raw bytes, or replaced by a new line, or gone
    let mut lines: Vec<(String, Option<Vec<u8>>)> = headers
        .iter()
        .map(|h| (h.name().to_owned(), Some(message[h.raw.clone()].to_vec())))
        .collect();
    let render = |name: &str, value: &str| format!("{name}: {value}\r\n").into_bytes();
    for edit in edits {
        match edit {
            HeaderChange::Add { name, value } => {
                lines.push((name.clone(), Some(render(name, value))))
            }
            HeaderChange::Remove { name } => {
                for (n, raw) in &mut lines {
                    if n.eq_ignore_ascii_case(name) {
                        *raw = None;
                    }
                }
            }
            HeaderChange::Replace { name, value } => {
                match lines
                    .iter_mut()
                    .find(|(n, raw)| raw.is_some() && n.eq_ignore_ascii_case(name))
                {
                    Some((_, raw)) => *raw = Some(render(name, value)),
                    None => lines.push((name.clone(), Some(render(name, value)))),
                }
            }
        }
    }
    let header_end = headers.last().map_or(0, |h| h.raw.end);
    let mut out = Vec::with_capacity(message.len() + 256);
    for raw in lines.into_iter().filter_map(|(_, raw)| raw) {
        out.extend_from_slice(&raw);
    }
    // whatever separated headers and body (the empty line), then the body
    out.extend_from_slice(&message[header_end.min(body_start)..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::script::HeaderChange;

    #[test]
    fn unfolds_and_stops_at_the_body() {
        let msg = b"Received: from a\r\n\tby b; date\r\nSubject: hi\r\n there\r\nX-Empty:\r\n\r\nbody: not a header\r\n";
        let (headers, body) = parse_headers(msg);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[0].line(), "Received: from a\tby b; date");
        assert_eq!(headers[1].name(), "Subject");
        assert_eq!(headers[1].value(), "hi there");
        assert_eq!(headers[2].value(), "");
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
}
