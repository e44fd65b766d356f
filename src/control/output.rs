//! Where `mtactl` writes: standard output and standard error through writers that never
//! panic. `println!` panics when the reader has gone (`mtactl queue list | head`: the
//! pipe is closed, the write fails with EPIPE) and the command dies with exit status 101
//! and a backtrace hint on stderr. Rust ignores SIGPIPE, and this crate forbids the unsafe
//! code that restoring it would take, so the writers handle the error instead: a closed
//! standard output ends the command at once, quietly, with [`EXIT_CLOSED_PIPE`].

use std::io::{self, Write};

/// The exit status of `mtactl` when standard output was closed under it: 141 (128 +
/// SIGPIPE), what a shell reports for `cat` or `yes` killed by SIGPIPE in the same
/// place, so `set -o pipefail` scripts see the same thing as with other tools.
pub const EXIT_CLOSED_PIPE: i32 = 141;

/// Standard output, locked. A write to a closed pipe exits the process quietly with
/// [`EXIT_CLOSED_PIPE`]; any other write error (a full disk under a redirection) exits
/// with status 1 and one line on stderr. A write therefore never returns an error.
pub struct Stdout(io::StdoutLock<'static>);

pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

fn gone(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_CLOSED_PIPE);
    }
    let _ = writeln!(io::stderr(), "mtactl: cannot write to standard output: {e}");
    std::process::exit(1)
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => gone(&e),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => gone(&e),
            other => other,
        }
    }
}

/// Writes `text` to standard error, ignoring failure (`eprint!` panics when standard
/// error is a closed pipe: `mtactl ... 2>&1 | head`). Nothing is lost that anyone reads.
pub fn error(text: std::fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(text);
}
