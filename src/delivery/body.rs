//! The DATA body on the wire: dot-stuffed, every line ending CRLF (DESIGN.md §5,
//! contract 4: a stray CR or LF never reaches the wire as anything but a CRLF).
//!
//! The encoder works on slices of the message, so the message is never copied whole:
//! the client encodes a chunk, writes it, and reuses the buffer.

/// How much of the message is encoded per write.
pub(crate) const CHUNK: usize = 32 * 1024;

/// Streaming DATA encoder.
///
/// - CRLF stays CRLF; a bare LF and a bare CR each become CRLF (a CR at the end of one
///   chunk waits for the next to know which it is);
/// - a line starting with `.` gets one more `.` (RFC 5321 §4.5.2);
/// - [`finish`](Self::finish) ends the last line with CRLF if it was not, then adds the
///   terminating `.` line.
#[derive(Debug)]
pub struct BodyEncoder {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyEncoder {
    pub fn new() -> Self {
        BodyEncoder {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the wire form of `input` to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 8 + 2);
        if self.pending_cr {
            if input.is_empty() {
                return;
            }
            self.pending_cr = false;
            self.end_line(out);
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while !input.is_empty() {
            let (run, delim) = match memchr::memchr2(b'\r', b'\n', input) {
                Some(i) => (&input[..i], Some(input[i])),
                None => (input, None),
            };
            if !run.is_empty() {
                if self.at_line_start && run[0] == b'.' {
                    out.push(b'.');
                }
                out.extend_from_slice(run);
                self.at_line_start = false;
            }
            let mut used = run.len();
            match delim {
                None => {}
                Some(b'\n') => {
                    self.end_line(out);
                    used += 1;
                }
                Some(_) => match input.get(run.len() + 1) {
                    Some(b'\n') => {
                        self.end_line(out);
                        used += 2;
                    }
                    Some(_) => {
                        self.end_line(out);
                        used += 1;
                    }
                    None => {
                        self.pending_cr = true;
                        used += 1;
                    }
                },
            }
            input = &input[used..];
        }
    }

    /// Ends the body: a last CRLF if needed, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            self.pending_cr = false;
            self.end_line(out);
        }
        out.extend_from_slice(b".\r\n");
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_in(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = BodyEncoder::new();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    fn encode(input: &[u8]) -> Vec<u8> {
        let whole = encode_in(&[input]);
        // Every split into two, and byte by byte, gives the same wire form.
        for i in 0..=input.len() {
            assert_eq!(
                encode_in(&[&input[..i], &input[i..]]),
                whole,
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(encode_in(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn crlf_passes_and_the_dot_line_ends() {
        assert_eq!(encode(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode(b""), b".\r\n");
    }

    #[test]
    fn dots_at_line_start_are_doubled() {
        assert_eq!(
            encode(b".\r\n..x\r\na.b\r\n.\r\n"),
            b"..\r\n...x\r\na.b\r\n..\r\n.\r\n"
        );
        // A lone "." after a bare LF is stuffed too: it is a line of its own on the wire.
        assert_eq!(encode(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        assert_eq!(encode(b"a\nb\rc\r\n"), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(encode(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(encode(b"a\n\rb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(encode(b"\r.\r"), b"\r\n..\r\n.\r\n");
        // The smuggling lookalikes: ".\n" and "\n.\r" end nothing.
        let out = encode(b"x\n.\ny\r.\r\nz");
        assert_eq!(out, b"x\r\n..\r\ny\r\n..\r\nz\r\n.\r\n");
    }

    #[test]
    fn no_lone_cr_or_lf_ever_reaches_the_wire() {
        let input: Vec<u8> = (0..2000u32)
            .map(|i| [b'\r', b'\n', b'.', b'x'][((i * 7919) % 13 % 4) as usize])
            .collect();
        let out = encode(&input);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'), "lone CR at {i}");
            }
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "lone LF at {i}");
            }
        }
        assert!(out.ends_with(b"\r\n.\r\n"));
        // The terminator appears once, at the end.
        let term = out.windows(5).filter(|w| w == b"\r\n.\r\n").count();
        assert_eq!(term, 1);
    }

    #[test]
    fn a_missing_final_line_ending_is_added() {
        assert_eq!(encode(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(encode(b"cr at end\r"), b"cr at end\r\n.\r\n");
        assert_eq!(encode(b"."), b"..\r\n.\r\n");
    }
}
