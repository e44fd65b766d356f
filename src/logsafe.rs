//! Values from clients and scripts, made safe to log.
//!
//! Log lines are records: one event, one line. A value a client or a script chose
//! (HELO name, addresses, AUTH user names, header values, a hook's error message or
//! thrown string, a next hop's reply) may hold CR, LF or terminal escapes; written
//! as it is (tracing's `%value`), it forges log lines. Log such values through
//! [`esc`]: `warn!(helo = %esc(&helo), ...)`.
//!
//! The escaping is reversible and plain: `\r`, `\n`, `\t`, `\\`, other control
//! characters (C0, DEL, C1) and the Unicode line and paragraph separators as
//! `\u{..}` (Rust's `escape_default` forms). Printable text, non-ASCII included, is
//! kept. A value is cut at [`MAX_LOGGED`] characters (`...` marks the cut), so
//! one value cannot make a log line of megabytes.
//!
//! Behind it, the daemon's log writer is [`OneLine`]: whatever an event holds (a
//! value logged without [`esc`], a multi-line error), it is written as one line.

use std::fmt::{self, Display, Write as _};
use std::io;

/// Most characters of one escaped value (before escaping).
pub const MAX_LOGGED: usize = 2048;

/// A value that displays escaped (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct Escaped<T>(pub T);

/// `value`, displayed escaped.
pub fn esc<T: Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

/// `text` escaped, as a `String`.
pub fn escape(text: &str) -> String {
    esc(text).to_string()
}

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = EscapingWriter {
            f,
            left: MAX_LOGGED,
        };
        match write!(out, "{}", self.0) {
            // the cut: stop formatting, mark it
            Err(_) if out.left == 0 => out.f.write_str("..."),
            r => r,
        }
    }
}

struct EscapingWriter<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    left: usize,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.left == 0 {
                return Err(fmt::Error);
            }
            self.left -= 1;
            match c {
                '\\' => self.f.write_str("\\\\")?,
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(self.f, "{}", c.escape_default())?
                }
                c => self.f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A log writer that keeps each event on one line: tracing's formatter writes an
/// event, ending in `\n`, with one `write`; any other CR or LF in it is written as
/// `\r` / `\n`. Use as `fmt().with_writer(|| OneLine(std::io::stderr()))`.
#[derive(Debug)]
pub struct OneLine<W>(pub W);

impl<W: io::Write> io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if memchr::memchr2(b'\r', b'\n', body).is_none() {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b => out.push(b),
            }
        }
        if body.len() < buf.len() {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_event() {
        use std::io::Write as _;
        let mut w = OneLine(Vec::new());
        w.write_all(b"ERROR x=a\r\nfake line\n").unwrap();
        w.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "ERROR x=a\\r\\nfake line\nINFO plain\n"
        );
    }

    #[test]
    fn line_breaks_and_controls_are_escaped() {
        assert_eq!(
            escape("a\r\nfake line\t\u{1b}[31m\\ é\u{2028}"),
            "a\\r\\nfake line\\t\\u{1b}[31m\\\\ é\\u{2028}"
        );
        assert_eq!(escape("plain text"), "plain text");
    }

    #[test]
    fn any_display_and_long_values_are_cut() {
        let long = "x".repeat(MAX_LOGGED + 10);
        let shown = esc(&long).to_string();
        assert_eq!(shown.len(), MAX_LOGGED + 3);
        assert!(shown.ends_with("x..."));
        let exact = "y".repeat(MAX_LOGGED);
        assert_eq!(esc(&exact).to_string(), exact);
        struct Two;
        impl Display for Two {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one\n")?;
                write!(f, "two")
            }
        }
        assert_eq!(esc(Two).to_string(), "one\\ntwo");
    }
}
