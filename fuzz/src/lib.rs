//! What each fuzz target does with its input. The targets in `targets/` are one line
//! each (`afl::fuzz!` around a function here); everything they call is mtad's own code,
//! through its public API: nothing here re-implements a parser.
//!
//! Inputs are bytes; where a target needs several values it reads them with
//! [`Bytes`], so that the seeds in `seeds/TARGET/` stay readable text.

pub mod checks;
pub mod config;
pub mod decision_record;
pub mod hook;
pub mod message;
pub mod milter;
pub mod policy_reply;
pub mod postfix_conf;
pub mod proxy;
pub mod rspamd_reply;
pub mod smtp;
pub mod suite;
pub mod table;
pub mod tls_policy;
pub mod tls_rpt;

use std::path::{Path, PathBuf};

/// A cursor over a fuzz input that hands out values; running out yields zeros and
/// empty strings, never a panic.
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { rest: data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// The bytes up to the next NUL (which is consumed), or all that is left.
    pub fn field(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|&b| b == 0) {
            Some(n) => {
                let (field, rest) = self.rest.split_at(n);
                self.rest = &rest[1..];
                field
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// [`Bytes::field`] as text (invalid UTF-8 replaced).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// `fuzz/data`: the configuration, tables and hooks the targets load beside the
/// fuzzed text (its files are committed).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// A scratch file of this process (`NAME` in a directory of its own under
/// `$TMPDIR`): the loaders that read files are fuzzed through a file, as mtad reads
/// them. Each afl-fuzz instance is a process of its own, so two never share one.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtad-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(name)
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// Quotes `text` as a KDL string (for paths put into a generated configuration).
pub fn kdl_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}
