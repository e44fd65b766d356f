//! The DATA framer: finds the end of a message and un-stuffs dots.
//!
//! Only `CRLF . CRLF` ends DATA (DESIGN.md §5.4). A line starts only after a real CRLF,
//! so a bare CR or a bare LF never starts a line, never makes a dot "leading", and never
//! ends the message: `\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r\r\n` are all content. They
//! are remembered ([`DotReceiver::bare_eol`]) so the session can refuse the message once
//! the real end arrives: a stray CR or LF must not become a line break on the way out.
//!
//! With `bare-newline="normalize"` (Postfix 3.9's `smtpd_forbid_bare_newline =
//! normalize`) a bare LF is read as a line end and stored as CRLF instead
//! ([`DotReceiver::normalizing`]): the line after it starts a line for dot-unstuffing,
//! but a dot line there never ends DATA, since only a real `CRLF . CRLF` does (`\n.\n`
//! and `\n.\r\n` are a line with its stuffing dot dropped: an empty line). A bare CR
//! is still flagged.
//!
//! We do not use smtp-proto's `DataReceiver` here: it ends DATA on `\r\n.\r\r\n`
//! (it accepts any `\r\n` after a dot line), one of the smuggling lookalikes above.

use memchr::memchr2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Inside a line; the last byte was neither CR nor LF.
    Mid,
    /// The last byte was CR (already emitted).
    Cr,
    /// Just after CRLF: the next byte starts a line.
    LineStart,
    /// Just after a bare LF read as a line end (normalizing): the next byte starts a
    /// line, but a dot line here does not end the message.
    LooseLineStart,
    /// `CRLF .` seen; the dot is held back (it is dropped either way).
    Dot,
    /// `CRLF . CR` seen; an LF now ends the message.
    DotCr,
}

/// Streams DATA content into a sink until the terminating `CRLF.CRLF`.
///
/// State survives across calls, so the terminator may be split across any number of
/// TCP reads.
#[derive(Debug)]
pub struct DotReceiver {
    state: State,
    bare_eol: bool,
    /// Content bytes so far, whether a sink kept them or not.
    emitted: u64,
    /// A bare LF is a line end, stored as CRLF (instead of flagged).
    normalize_lf: bool,
    /// How many bare LFs were stored as CRLF.
    normalized: u64,
}

impl Default for DotReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DotReceiver {
    /// A receiver positioned at the start of the first line (the DATA command itself
    /// ended with CRLF).
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
            bare_eol: false,
            emitted: 0,
            normalize_lf: false,
            normalized: 0,
        }
    }

    /// A receiver that reads a bare LF as a line end and stores it as CRLF (`true`),
    /// or flags it ([`DotReceiver::bare_eol`], as [`DotReceiver::new`]).
    pub fn normalizing(normalize_lf: bool) -> Self {
        Self {
            normalize_lf,
            ..Self::new()
        }
    }

    /// How many bare LFs were stored as CRLF so far.
    pub fn normalized(&self) -> u64 {
        self.normalized
    }

    /// Whether a CR not followed by LF, or an LF not preceded by CR, was seen.
    pub fn bare_eol(&self) -> bool {
        self.bare_eol
    }

    /// Content bytes so far (dot-stuffing undone), also those given to no sink: the
    /// size of a message that is being dropped.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Consumes bytes from `input` into `sink` (if any: `None` discards, for messages
    /// already refused). Returns `true` when the terminator was consumed; `input` then
    /// holds whatever followed it (pipelined commands). The terminator's dot line is not
    /// emitted; the CRLF before it is, as the end of the last line.
    pub fn ingest(&mut self, input: &mut &[u8], mut sink: Option<&mut Vec<u8>>) -> bool {
        let mut rest = *input;
        let mut emitted = 0u64;
        let mut emit = |bytes: &[u8]| {
            emitted += bytes.len() as u64;
            if let Some(sink) = sink.as_deref_mut() {
                sink.extend_from_slice(bytes);
            }
        };
        while !rest.is_empty() {
            match self.state {
                State::Mid => {
                    // Fast path: an ordinary CRLF followed by anything but a dot
                    // changes nothing, so keep scanning and emit the whole run at once.
                    let mut from = 0;
                    loop {
                        let Some(off) = memchr2(b'\r', b'\n', &rest[from..]) else {
                            emit(rest);
                            rest = &[];
                            break;
                        };
                        let pos = from + off;
                        if rest[pos] == b'\r'
                            && rest.get(pos + 1) == Some(&b'\n')
                            && rest.get(pos + 2).is_some_and(|&c| c != b'.')
                        {
                            from = pos + 2;
                            continue;
                        }
                        if rest[pos] == b'\r' {
                            emit(&rest[..=pos]);
                            self.state = State::Cr;
                        } else if self.normalize_lf {
                            emit(&rest[..pos]);
                            emit(b"\r\n");
                            self.normalized += 1;
                            self.state = State::LooseLineStart;
                        } else {
                            emit(&rest[..=pos]);
                            self.bare_eol = true;
                        }
                        rest = &rest[pos + 1..];
                        break;
                    }
                }
                State::Cr => {
                    let b = rest[0];
                    match b {
                        b'\n' => {
                            emit(b"\n");
                            self.state = State::LineStart;
                            rest = &rest[1..];
                        }
                        b'\r' => {
                            self.bare_eol = true;
                            emit(b"\r");
                            rest = &rest[1..];
                        }
                        _ => {
                            self.bare_eol = true;
                            self.state = State::Mid;
                        }
                    }
                }
                State::LineStart => {
                    if rest[0] == b'.' {
                        self.state = State::Dot;
                        rest = &rest[1..];
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::LooseLineStart => {
                    // a stuffing dot is dropped; the rest of the line is content, even
                    // a CRLF right after it
                    if rest[0] == b'.' {
                        rest = &rest[1..];
                    }
                    self.state = State::Mid;
                }
                State::Dot => {
                    if rest[0] == b'\r' {
                        self.state = State::DotCr;
                        rest = &rest[1..];
                    } else {
                        // A stuffed dot: drop it, the rest of the line is content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if rest[0] == b'\n' {
                        *input = &rest[1..];
                        self.emitted += emitted;
                        return true;
                    }
                    // `CRLF . CR x`: the dot is dropped, the CR is content.
                    emit(b"\r");
                    self.state = State::Cr;
                }
            }
        }
        *input = rest;
        self.emitted += emitted;
        false
    }
}

/// Whether `body` holds a CR not followed by LF or an LF not preceded by CR (for BDAT
/// content, which is not dot-framed but is held to the same policy).
pub fn has_bare_eol(body: &[u8]) -> bool {
    let mut rest = body;
    while let Some(pos) = memchr2(b'\r', b'\n', rest) {
        if rest[pos] == b'\n' || rest.get(pos + 1) != Some(&b'\n') {
            return true;
        }
        rest = &rest[pos + 2..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in chunks of `step` bytes; returns (body, ended, leftover, bare).
    fn run(data: &[u8], step: usize) -> (Vec<u8>, bool, Vec<u8>, bool) {
        let mut rx = DotReceiver::new();
        let mut out = Vec::new();
        for chunk in data.chunks(step.max(1)) {
            let mut input = chunk;
            if rx.ingest(&mut input, Some(&mut out)) {
                let consumed = chunk.len() - input.len();
                let at = data.as_ptr() as usize;
                let offset = chunk.as_ptr() as usize - at + consumed;
                return (out, true, data[offset..].to_vec(), rx.bare_eol());
            }
            assert!(input.is_empty());
        }
        (out, false, Vec::new(), rx.bare_eol())
    }

    /// As [`run`], normalizing bare LF; also returns how many were normalized.
    fn run_normalizing(data: &[u8], step: usize) -> (Vec<u8>, bool, Vec<u8>, bool, u64) {
        let mut rx = DotReceiver::normalizing(true);
        let mut out = Vec::new();
        for chunk in data.chunks(step.max(1)) {
            let mut input = chunk;
            if rx.ingest(&mut input, Some(&mut out)) {
                let offset =
                    chunk.as_ptr() as usize - data.as_ptr() as usize + chunk.len() - input.len();
                let rest = data[offset..].to_vec();
                return (out, true, rest, rx.bare_eol(), rx.normalized());
            }
        }
        (out, false, Vec::new(), rx.bare_eol(), rx.normalized())
    }

    #[test]
    fn normalizing_stores_bare_lf_as_crlf_and_still_ends_only_at_crlf_dot_crlf() {
        for step in [1, 2, 3, 1000] {
            // what PHP libraries send: LF lines, then a real CRLF . CRLF
            let (body, end, rest, bare, n) = run_normalizing(
                b"Subject: x\nFrom: a@b\n\nline\n..dot\n\r\n.\r\nQUIT\r\n",
                step,
            );
            assert!(end && !bare);
            assert_eq!(body, b"Subject: x\r\nFrom: a@b\r\n\r\nline\r\n.dot\r\n\r\n");
            assert_eq!(rest, b"QUIT\r\n");
            assert_eq!(n, 5);
            // the lookalikes do not end it: a dot line after a bare LF, or ended by one
            for evil in [&b"a\n.\r\n"[..], b"a\n.\n", b"a\r\n.\n", b"a\n.\r\r\n"] {
                let (body, end, _, _, _) = run_normalizing(evil, step);
                assert!(!end, "{:?} ended DATA", String::from_utf8_lossy(evil));
                assert!(!body.contains(&b'.'), "the stuffing dot is dropped");
            }
            let (body, end, rest, bare, _) = run_normalizing(b"a\n.\r\nb\r\n.\r\n", step);
            assert!(end && !bare && rest.is_empty());
            assert_eq!(body, b"a\r\n\r\nb\r\n");
            // a bare CR is still flagged
            let (body, end, _, bare, _) = run_normalizing(b"a\rb\n\r\n.\r\n", step);
            assert!(end && bare);
            assert_eq!(body, b"a\rb\r\n\r\n");
        }
    }

    #[test]
    fn plain_message_ends_at_crlf_dot_crlf() {
        for step in [1, 2, 3, 7, 1000] {
            let (body, end, rest, bare) = run(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", step);
            assert!(end);
            assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
            assert_eq!(rest, b"QUIT\r\n");
            assert!(!bare);
        }
    }

    #[test]
    fn empty_message() {
        let (body, end, rest, _) = run(b".\r\n", 1);
        assert!(end);
        assert!(body.is_empty());
        assert!(rest.is_empty());
    }

    #[test]
    fn dots_are_unstuffed() {
        let (body, end, _, bare) = run(b"..leading\r\n...\r\n.x\r\n.\r\n", 1);
        assert!(end);
        assert_eq!(body, b".leading\r\n..\r\nx\r\n");
        assert!(!bare);
    }

    #[test]
    fn smuggling_lookalikes_never_end_data() {
        for evil in [
            &b"a\n.\nMAIL FROM:<x@evil>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r.\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r\n.\r\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r\n.\n\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r\n.\rMAIL FROM:<x@evil>\r\n",
            b"a\n\r.\r\nMAIL FROM:<x@evil>\r\n",
        ] {
            for step in [1, 2, 5, 1000] {
                let (_, end, _, bare) = run(evil, step);
                assert!(
                    !end,
                    "{:?} ended DATA (step {step})",
                    String::from_utf8_lossy(evil)
                );
                assert!(bare, "{:?} not flagged", String::from_utf8_lossy(evil));
            }
        }
    }

    #[test]
    fn content_after_lookalike_is_kept_until_real_end() {
        let data = b"a\n.\nRSET\r\n.\r\nNOOP\r\n";
        let (body, end, rest, bare) = run(data, 3);
        assert!(end);
        assert!(bare);
        // after a bare LF the dot is not at a line start: it is content, kept as is
        assert_eq!(body, b"a\n.\nRSET\r\n");
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn a_real_end_after_a_bare_cr_ends_data_and_is_flagged() {
        // `\r\r\n.\r\n` holds a genuine CRLF.CRLF: it ends DATA; the bare CR before it
        // still gets the message refused.
        let (body, end, rest, bare) = run(b"a\r\r\n.\r\nQUIT\r\n", 1);
        assert!(end && bare);
        assert_eq!(body, b"a\r\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn discard_sink_still_finds_end() {
        let mut rx = DotReceiver::new();
        let mut input = &b"xxxx\r\n.\r\nQUIT\r\n"[..];
        assert!(rx.ingest(&mut input, None));
        assert_eq!(input, b"QUIT\r\n");
    }

    /// The definition, written plainly: lines end only at CRLF; at a line start,
    /// `.CRLF` ends DATA and a leading dot is dropped; anything else is copied, and a
    /// CR or LF that is not part of a CRLF is flagged.
    fn reference(data: &[u8]) -> (Vec<u8>, bool, Vec<u8>, bool) {
        let (mut out, mut i, mut bare) = (Vec::new(), 0, false);
        while i < data.len() {
            if data[i..].starts_with(b".\r\n") {
                return (out, true, data[i + 3..].to_vec(), bare);
            }
            if data[i] == b'.' {
                i += 1;
            }
            let end = data[i..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|p| i + p + 2);
            let line = &data[i..end.unwrap_or(data.len())];
            let body = line.strip_suffix(b"\r\n").unwrap_or(line);
            bare |= body.iter().any(|&b| b == b'\r' || b == b'\n');
            out.extend_from_slice(line);
            i += line.len();
        }
        (out, false, Vec::new(), bare)
    }

    #[test]
    fn matches_the_reference_on_random_input_and_chunking() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let data: Vec<u8> = (0..len).map(|_| b"\r\n.a"[(next() % 4) as usize]).collect();
            let step = 1 + (next() % 8) as usize;
            let (body, end, rest, bare) = run(&data, step);
            let (rbody, rend, rrest, rbare) = reference(&data);
            assert_eq!(end, rend, "{data:?} step {step}");
            if end {
                assert_eq!(
                    (&body, &rest, bare),
                    (&rbody, &rrest, rbare),
                    "{data:?} step {step}"
                );
            } else {
                // unterminated: a held-back `.` or `.CR` may still be pending
                assert!(
                    rbody.starts_with(&body) && rbody.len() - body.len() <= 2,
                    "{data:?} step {step}"
                );
            }
        }
    }

    #[test]
    fn bare_eol_scan() {
        assert!(!has_bare_eol(b"a\r\nb\r\n"));
        assert!(has_bare_eol(b"a\nb"));
        assert!(has_bare_eol(b"a\rb"));
        assert!(has_bare_eol(b"a\r"));
        assert!(has_bare_eol(b"a\r\r\n"));
        assert!(!has_bare_eol(b""));
    }
}
