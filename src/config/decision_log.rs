//! The `decision-log` block: where every policy decision is written, one JSON line
//! each (see docs/decision-log.md and [`crate::policy::decision_log`]).

use std::path::{Path, PathBuf};

/// Where decisions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionOutput {
    /// A file of JSON lines, rotated by size (the default).
    File,
    /// The log stream (stderr, syslog or the journal), one line per decision.
    Log,
    /// Not written.
    Off,
}

impl DecisionOutput {
    pub const WORDS: &'static [&'static str] = &["file", "log", "off"];

    pub fn from_word(word: &str) -> Option<DecisionOutput> {
        match word {
            "file" => Some(DecisionOutput::File),
            "log" => Some(DecisionOutput::Log),
            "off" => Some(DecisionOutput::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutput::File => "file",
            DecisionOutput::Log => "log",
            DecisionOutput::Off => "off",
        }
    }
}

/// The `decision-log` block, with its defaults (read at start only, like `log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionLog {
    pub output: DecisionOutput,
    /// The file: `SPOOL/decisions/decisions.jsonl` unless set.
    pub path: PathBuf,
    /// A file is rotated (`NAME.1`, `NAME.2`, ...) once it is this large.
    pub max_size: u64,
    /// How many rotated files are kept.
    pub keep: u32,
    /// The first bytes of each message written with its data-stage decision; 0: no
    /// body is written (the header block and a digest always are).
    pub body: u64,
}

impl DecisionLog {
    /// Default size at which a file is rotated.
    pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;
    /// Default number of rotated files kept.
    pub const DEFAULT_KEEP: u32 = 5;

    /// The defaults for a server whose spool is `spool`.
    pub fn defaults_for(spool: &Path) -> DecisionLog {
        DecisionLog {
            output: DecisionOutput::File,
            path: spool.join("decisions").join("decisions.jsonl"),
            max_size: Self::DEFAULT_MAX_SIZE,
            keep: Self::DEFAULT_KEEP,
            body: 0,
        }
    }
}

/// What `mtactl replay --allow` and `reload { replay allow= }` let change: `OLD->NEW`
/// verdicts (`*`: any), optionally `@RULE` (a part of the old or new rule's
/// `file:line:col`); `unknown`; `open-relay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayAllow {
    Change {
        from: String,
        to: String,
        rule: Option<String>,
    },
    Unknown,
    OpenRelay,
}

impl ReplayAllow {
    pub fn parse(text: &str) -> Result<ReplayAllow, String> {
        match text.trim() {
            "unknown" => return Ok(ReplayAllow::Unknown),
            "open-relay" => return Ok(ReplayAllow::OpenRelay),
            _ => {}
        }
        let (change, rule) = match text.split_once('@') {
            Some((c, r)) => (c, Some(r.trim().to_owned())),
            None => (text, None),
        };
        let (from, to) = change
            .split_once("->")
            .ok_or_else(|| format!("{text:?}: write OLD->NEW[@RULE], `unknown` or `open-relay`"))?;
        let word = |w: &str| -> Result<String, String> {
            let w = w.trim();
            if matches!(w, "*" | "accept" | "reject" | "defer" | "discard" | "hold") {
                Ok(w.to_owned())
            } else {
                Err(format!(
                    "{text:?}: {w:?} is not a verdict (accept, reject, defer, discard, hold, *)"
                ))
            }
        };
        Ok(ReplayAllow::Change {
            from: word(from)?,
            to: word(to)?,
            rule,
        })
    }

    /// Whether it lets a decision change from `old` to `new` (verdicts), decided by
    /// the rules `old_rule` then `new_rule`.
    pub fn covers(&self, old: &str, new: &str, old_rule: &str, new_rule: &str) -> bool {
        match self {
            ReplayAllow::Change { from, to, rule } => {
                (from == "*" || from == old)
                    && (to == "*" || to == new)
                    && rule.as_ref().is_none_or(|r| {
                        new_rule.contains(r.as_str()) || old_rule.contains(r.as_str())
                    })
            }
            _ => false,
        }
    }
}

/// `reload { replay ... }`: a policy goes live only when the decisions of the last
/// `since` replay against it with no change beyond `allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayGate {
    /// The decision logs; empty: the `decision-log` file and its rotated ones.
    pub files: Vec<PathBuf>,
    /// How far back.
    pub since: std::time::Duration,
    pub allow: Vec<ReplayAllow>,
}
