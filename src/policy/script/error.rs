//! The two error types of hooks: [`ScriptError`] when a hook file does not compile
//! (reported with the configuration errors), [`HookError`] when a call fails (the
//! caller answers `451 4.3.0`).

use std::fmt;
use std::sync::Arc;

use rhai::{EvalAltResult, Position};

use super::ScriptLimits;
use super::engine::WALL_TIME_TOKEN;
use crate::config::Reply;

/// A hook file that does not compile: where, and why. `source_text` and
/// `byte_offset` (when known) let the caller point a caret at the spot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// The file as the configuration names it.
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: u32,
    /// 1-based, in characters; 0 when the error concerns the whole file.
    pub column: u32,
    pub message: String,
    /// The file's text, shared by all errors of one file.
    pub source_text: Option<Arc<String>>,
    /// Where `line:column` is in `source_text`, in bytes.
    pub byte_offset: Option<usize>,
}

impl ScriptError {
    /// An error at `pos` in `text`.
    pub(crate) fn at(file: &str, text: &Arc<String>, pos: Position, message: String) -> Self {
        let (line, column) = line_col(pos);
        ScriptError {
            file: file.to_owned(),
            line,
            column,
            message,
            byte_offset: byte_offset(text, line, column),
            source_text: Some(Arc::clone(text)),
        }
    }

    /// An error about the whole file (it cannot be read, say).
    pub(crate) fn whole_file(file: &str, message: String) -> Self {
        ScriptError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message,
            source_text: None,
            byte_offset: None,
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ScriptError {}

/// A hook call that failed: a script error, an exceeded limit, a wrong return value
/// or bad reply codes. It is never a decision: the caller answers
/// [`HookError::tempfail_reply`] (`451 4.3.0`) and logs this (DESIGN §5.2, fail
/// closed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct HookError {
    pub file: String,
    /// 1-based; 0 when the error has no position (the call itself failed).
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl HookError {
    /// What a client is told when a hook fails: a temporary failure that says
    /// nothing about the script.
    pub fn tempfail_reply() -> Reply {
        Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
    }

    pub(crate) fn at(file: &str, pos: Position, message: String) -> Self {
        let (line, column) = line_col(pos);
        HookError {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    }

    /// Turns a Rhai error into a hook error positioned in the hook's own file: for an
    /// error inside `mta`'s functions, at the call in the hook file.
    /// `fallback` is where to point when Rhai gives no position (the operations
    /// limit): the hook function.
    pub(crate) fn from_rhai(
        file: &str,
        err: Box<EvalAltResult>,
        limits: &ScriptLimits,
        fallback: Position,
    ) -> Self {
        let mut pos = err.position();
        let mut cur = err;
        let mut foreign: Option<String> = None;
        loop {
            let (name, inner, call_pos, in_file) = match *cur {
                EvalAltResult::ErrorInFunctionCall(name, source, inner, call_pos) => {
                    let in_file = source.is_empty() || source == file;
                    (name, inner, call_pos, in_file)
                }
                EvalAltResult::ErrorInModule(name, inner, call_pos) => {
                    (name, inner, call_pos, false)
                }
                other => {
                    *cur = other;
                    break;
                }
            };
            if foreign.is_none() {
                if in_file {
                    pos = inner.position();
                } else {
                    pos = call_pos;
                    foreign = Some(name);
                }
            }
            cur = inner;
        }
        if pos.is_none() {
            pos = cur.position();
        }
        if pos.is_none() {
            pos = fallback;
        }
        let mut message = match *cur {
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "the hook ran too long: more than {} operations",
                limits.max_operations
            ),
            EvalAltResult::ErrorTerminated(ref token, _)
                if token
                    .clone()
                    .into_immutable_string()
                    .is_ok_and(|t| t == WALL_TIME_TOKEN) =>
            {
                format!(
                    "the hook ran too long: more than {} ms",
                    limits.wall_time.as_millis()
                )
            }
            EvalAltResult::ErrorRuntime(ref value, _) => value.to_string(),
            mut other => {
                other.clear_position();
                other.to_string()
            }
        };
        if let Some(name) = foreign {
            message.push_str(&format!(" (in mta::{name})"));
        }
        HookError::at(file, pos, message)
    }
}

fn line_col(pos: Position) -> (u32, u32) {
    let line = pos.line().unwrap_or(0);
    let column = if line == 0 {
        0
    } else {
        pos.position().unwrap_or(1)
    };
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// The byte offset of 1-based `line:column` (column in characters) in `text`.
fn byte_offset(text: &str, line: u32, column: u32) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let start = if line == 1 {
        0
    } else {
        text.match_indices('\n').nth(line as usize - 2)?.0 + 1
    };
    let rest = &text[start..];
    let end = rest.find('\n').unwrap_or(rest.len());
    let offset = rest[..end]
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map_or(end, |(i, _)| i);
    Some(start + offset)
}
