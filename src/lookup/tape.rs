//! The tape: the one seam through which a policy decision's answers from outside —
//! SQL table lookups, DNS answers (DNS lists, hooks' lookups), policy services' actions,
//! rate counters — pass on the thread that evaluates it.
//!
//! While a decision is [recorded](record), every answer is copied onto the tape as it
//! comes back from where it was asked (the decision log writes them with the decision);
//! while one is [replayed](replay), the answers come from the tape instead, and a
//! question the tape has no answer for is noted as *unknown* (and answered as a
//! temporary failure, never guessed): `mtactl replay` then reports the decision as
//! unknown. With no tape (the daemon when the decision log is off, dry runs), every
//! function here just asks.
//!
//! The tape is thread-local because evaluation is synchronous: every lookup of one
//! decision is made on the thread that evaluates it (SQL and DNS wait on their own
//! runtime, but the answer comes back here).

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::LookupError;

/// Most answers one decision's tape holds (a hook looping over lookups): what comes
/// after is still answered, not recorded, and the record says it was cut.
pub const MAX_ANSWERS: usize = 256;

/// One answer from outside, as a decision got it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Answer {
    /// A lookup in an SQL table (by the table's name in the configuration).
    Table {
        table: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// The database gave no answer (the decision deferred).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A DNS query (`a`, `aaaa`, `txt`, `ptr`): the records, or a temporary failure.
    Dns {
        name: String,
        query: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        records: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// What a policy service answered (its `action=`), or the default action it got
    /// and why.
    Policy {
        service: String,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A rate-limit counter as read (`None`: no limit of that kind).
    Rate {
        rate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
}

enum Mode {
    Record {
        answers: Vec<Answer>,
        cut: bool,
    },
    Replay {
        answers: Vec<Answer>,
        unknown: Vec<String>,
    },
    /// A dry run's fixtures (a suite's `table` and `rate`): a question they answer is
    /// answered from them, any other is asked.
    Fixture {
        answers: Vec<Answer>,
    },
}

thread_local! {
    static TAPE: RefCell<Option<Mode>> = const { RefCell::new(None) };
}

/// A tape in force on this thread until [`Tape::finish`] (or drop), which puts back
/// the one before.
pub struct Tape {
    before: Option<Mode>,
    done: bool,
}

/// What a recorded decision got from outside.
#[derive(Debug, Default)]
pub struct Recorded {
    pub answers: Vec<Answer>,
    /// More than [`MAX_ANSWERS`] were asked: the rest are not on the tape.
    pub cut: bool,
}

/// Starts recording on this thread.
pub fn record() -> Tape {
    install(Mode::Record {
        answers: Vec::new(),
        cut: false,
    })
}

/// Starts replaying `answers` on this thread.
pub fn replay(answers: Vec<Answer>) -> Tape {
    install(Mode::Replay {
        answers,
        unknown: Vec::new(),
    })
}

/// Starts answering from a dry run's fixtures on this thread: SQL tables' answers and
/// rate counters given in a suite; what they do not give is asked as usual.
pub fn fixture(answers: Vec<Answer>) -> Tape {
    install(Mode::Fixture { answers })
}

fn install(mode: Mode) -> Tape {
    Tape {
        before: TAPE.with(|t| t.replace(Some(mode))),
        done: false,
    }
}

impl Tape {
    /// Ends the tape: what was recorded (recording), or the questions it had no answer
    /// for (replaying, in `unknown`).
    pub fn finish(mut self) -> (Recorded, Vec<String>) {
        self.done = true;
        let mode = TAPE.with(|t| t.replace(self.before.take()));
        match mode {
            Some(Mode::Record { answers, cut }) => (Recorded { answers, cut }, Vec::new()),
            Some(Mode::Replay { unknown, .. }) => (Recorded::default(), unknown),
            Some(Mode::Fixture { .. }) | None => (Recorded::default(), Vec::new()),
        }
    }
}

impl Drop for Tape {
    fn drop(&mut self) {
        if !self.done {
            let before = self.before.take();
            TAPE.with(|t| *t.borrow_mut() = before);
        }
    }
}

/// What the tape says of a question: `Some` while replaying (the recorded answer, or
/// `None` inside when it has none, noted as unknown), `None` otherwise.
fn replayed<T>(
    what: impl FnOnce() -> String,
    find: impl Fn(&Answer) -> Option<T>,
) -> Option<Option<T>> {
    TAPE.with(|t| match &mut *t.borrow_mut() {
        Some(Mode::Replay { answers, unknown }) => {
            let found = answers.iter().find_map(&find);
            if found.is_none() {
                let what = what();
                if !unknown.contains(&what) {
                    unknown.push(what);
                }
            }
            Some(found)
        }
        // a fixture answers what it gives; the rest is asked
        Some(Mode::Fixture { answers }) => answers.iter().find_map(&find).map(Some),
        _ => None,
    })
}

/// Puts `answer` on the tape, when recording.
fn put(answer: impl FnOnce() -> Answer) {
    TAPE.with(|t| {
        if let Some(Mode::Record { answers, cut }) = &mut *t.borrow_mut() {
            if answers.len() < MAX_ANSWERS {
                answers.push(answer());
            } else {
                *cut = true;
            }
        }
    })
}

/// Whether a tape is replaying on this thread (nothing may then be asked outside).
pub fn replaying() -> bool {
    TAPE.with(|t| matches!(&*t.borrow(), Some(Mode::Replay { .. })))
}

/// A lookup of `key` in the SQL table `table`, asked with `ask`.
pub fn table(
    table: &str,
    key: &str,
    ask: impl FnOnce() -> Result<Option<String>, LookupError>,
) -> Result<Option<String>, LookupError> {
    let found = replayed(
        || format!("table {table} {key:?}"),
        |a| match a {
            Answer::Table {
                table: t,
                key: k,
                value,
                error,
            } if t == table && k.eq_ignore_ascii_case(key) => Some(match error {
                Some(e) => Err(LookupError(e.clone())),
                None => Ok(value.clone()),
            }),
            _ => None,
        },
    );
    match found {
        Some(Some(answer)) => answer,
        Some(None) => Err(LookupError(format!(
            "table {table}: no recorded answer for {key:?} (replay)"
        ))),
        None => {
            let answer = ask();
            put(|| Answer::Table {
                table: table.to_owned(),
                key: key.to_owned(),
                value: answer.as_ref().ok().cloned().flatten(),
                error: answer.as_ref().err().map(|e| e.0.clone()),
            });
            answer
        }
    }
}

/// A DNS query (`query`: `a`, `aaaa`, `txt`, `ptr`) for `name`, asked with `ask`.
pub fn dns(
    name: &str,
    query: &str,
    ask: impl FnOnce() -> Result<Vec<String>, String>,
) -> Result<Vec<String>, String> {
    let wanted = name.trim_end_matches('.');
    let found = replayed(
        || format!("dns {query} {wanted}"),
        |a| match a {
            Answer::Dns {
                name: n,
                query: q,
                records,
                error,
            } if q == query && n.trim_end_matches('.').eq_ignore_ascii_case(wanted) => {
                Some(match error {
                    Some(e) => Err(e.clone()),
                    None => Ok(records.clone()),
                })
            }
            _ => None,
        },
    );
    match found {
        Some(Some(answer)) => answer,
        Some(None) => Err(format!("{wanted}: no recorded answer (replay)")),
        None => {
            let answer = ask();
            record_dns(name, query, &answer);
            answer
        }
    }
}

/// Puts a DNS answer that was asked elsewhere (a DNS list's parallel queries) on the
/// tape, when recording.
pub fn record_dns(name: &str, query: &str, answer: &Result<Vec<String>, String>) {
    put(|| Answer::Dns {
        name: name.trim_end_matches('.').to_owned(),
        query: query.to_owned(),
        records: answer.as_ref().ok().cloned().unwrap_or_default(),
        error: answer.as_ref().err().cloned(),
    });
}

/// What the policy service `service` answered while replaying (`Some(None)`: the
/// tape has no answer), or `None` when not replaying.
pub fn replayed_policy(service: &str) -> Option<Option<(String, Option<String>)>> {
    replayed(
        || format!("policy-service {service}"),
        |a| match a {
            Answer::Policy {
                service: s,
                action,
                error,
            } if s == service => Some((action.clone(), error.clone())),
            _ => None,
        },
    )
}

/// Puts a policy service's answer on the tape, when recording.
pub fn record_policy(service: &str, action: &str, error: Option<&str>) {
    put(|| Answer::Policy {
        service: service.to_owned(),
        action: action.to_owned(),
        error: error.map(str::to_owned),
    });
}

/// A rate counter (`rate`: `messages`, `recipients`...), read with `read`.
pub fn rate(rate: &str, read: impl FnOnce() -> Option<u32>) -> Option<u32> {
    let found = replayed(
        || format!("rate {rate}"),
        |a| match a {
            Answer::Rate { rate: r, count } if r == rate => Some(*count),
            _ => None,
        },
    );
    match found {
        Some(Some(count)) => count,
        // unknown: as if no limit of that kind were set (noted as unknown)
        Some(None) => None,
        None => {
            let count = read();
            put(|| Answer::Rate {
                rate: rate.to_owned(),
                count,
            });
            count
        }
    }
}
