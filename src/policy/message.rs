//! The message as the data stage sees it: its header lines, unfolded, one logical
//! header at a time (as Postfix's header_checks match them).

/// One logical header, unfolded: continuation lines joined with their leading
/// whitespace kept, the CRLFs removed. `line()` is `Name: value` as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderLine {
    line: String,
    name_len: usize,
}

impl HeaderLine {
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            line: format!("{name}: {value}"),
            name_len: name.len(),
        }
    }

    /// The whole unfolded header, `Name: value`.
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn name(&self) -> &str {
        &self.line[..self.name_len]
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
                Some(last) => last.line.push_str(&text),
                None => return (headers, pos),
            }
        } else {
            match text.find(':') {
                Some(colon) if colon > 0 && text[..colon].bytes().all(|b| b.is_ascii_graphic()) => {
                    headers.push(HeaderLine {
                        name_len: colon,
                        line: text.into_owned(),
                    });
                }
                _ => return (headers, pos),
            }
        }
        pos = end;
    }
    (headers, message.len())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn no_body_and_garbage() {
        let (headers, body) = parse_headers(b"Subject: x\r\n");
        assert_eq!((headers.len(), body), (1, 12));
        let (headers, body) = parse_headers(b"not a header line\r\nSubject: x\r\n");
        assert_eq!((headers.len(), body), (0, 0));
    }
}
