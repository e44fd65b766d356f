//! The verdict constructors scripts call (`accept()`, `reject(550, "5.7.1", "...")`,
//! ...) and the checks on what a hook returns.
//!
//! Codes are checked where the script builds the verdict, so an error points at the
//! `reject(...)` call itself: `reject` needs a 5xx code, `defer` a 4xx code, and the
//! enhanced status code's class must be the code's first digit. Text is sanitised
//! (printable ASCII, at most [`crate::config::MAX_REPLY_TEXT`] bytes) by
//! [`Reply::new`].

use rhai::{Dynamic, EvalAltResult, Position};

use super::HookDecision;
use crate::config::Reply;
use crate::policy::{Stage, Verdict};

type Res<T> = Result<T, Box<EvalAltResult>>;

fn error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// A reply from script values, with `range` the codes this verb allows.
fn reply(
    verb: &str,
    code: i64,
    enhanced: &str,
    text: &str,
    range: std::ops::RangeInclusive<u16>,
) -> Res<Reply> {
    let code = u16::try_from(code)
        .ok()
        .filter(|c| range.contains(c))
        .ok_or_else(|| {
            let hint = if verb == "reject" {
                " (use defer() for a temporary failure)"
            } else {
                " (use reject() for a permanent failure)"
            };
            error(format!(
                "{verb}() needs a {}xx reply code, not {code}{hint}",
                range.start() / 100
            ))
        })?;
    let parsed = Reply::parse_enhanced(enhanced).ok_or_else(|| {
        error(format!(
            "{verb}(): {:?} is not an enhanced status code like \"{}.7.1\"",
            crate::config::sanitize_text(enhanced, 40),
            code / 100
        ))
    })?;
    Reply::check_codes(code, parsed).map_err(|e| error(format!("{verb}(): {e}")))?;
    Ok(Reply::new(code, parsed, text))
}

/// What `greylist()` returns: greylist this recipient's triplet (rcpt only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Greylist;

/// Registers the verdict type and its constructors as global functions.
pub(crate) fn register(engine: &mut rhai::Engine) {
    engine
        .register_type_with_name::<Greylist>("Greylist")
        .register_fn("greylist", || Greylist)
        .register_type_with_name::<Verdict>("Verdict")
        .register_fn("accept", || Verdict::Accept)
        .register_fn(
            "reject",
            |code: i64, enhanced: &str, text: &str| -> Res<Verdict> {
                reply("reject", code, enhanced, text, 500..=599).map(Verdict::Reject)
            },
        )
        .register_fn(
            "defer",
            |code: i64, enhanced: &str, text: &str| -> Res<Verdict> {
                reply("defer", code, enhanced, text, 400..=499).map(Verdict::Defer)
            },
        )
        .register_fn("discard", || Verdict::Discard)
        .register_fn("hold", || Verdict::Hold)
        .register_fn("next", || Verdict::Next)
        .register_fn("to_string", |v: &mut Verdict| v.name())
        .register_fn("to_debug", |v: &mut Verdict| format!("{v:?}"));
}

/// Longest transport a route hook may return.
const MAX_TRANSPORT: usize = 255;

/// Turns what the hook function returned into a decision, or says why it cannot.
pub(crate) fn decide(
    engine: &rhai::Engine,
    stage: Stage,
    value: Dynamic,
) -> Result<HookDecision, String> {
    if value.is::<Verdict>() {
        return match (stage, value.cast::<Verdict>()) {
            (Stage::Route, Verdict::Next) => Ok(HookDecision::Verdict(Verdict::Next)),
            (Stage::Route, other) => Err(format!(
                "a route hook returns a transport string or next(), not {}()",
                other.name()
            )),
            (_, verdict) => Ok(HookDecision::Verdict(verdict)),
        };
    }
    if value.is::<Greylist>() {
        return if stage == Stage::Rcpt {
            Ok(HookDecision::Greylist)
        } else {
            Err(format!(
                "greylist() decides about a recipient: return it from a rcpt hook, not at {stage}"
            ))
        };
    }
    if stage == Stage::Route && value.is_string() {
        let text = value.into_immutable_string().unwrap_or_default();
        return check_transport(&text).map(|()| HookDecision::Transport(text.to_string()));
    }
    let expected = if stage == Stage::Route {
        "a transport string such as \"smtp:[10.0.0.5]:2525\" or next()"
    } else {
        "a verdict: accept(), reject(...), defer(...), discard(), hold(), greylist() (rcpt) or next()"
    };
    Err(format!(
        "the hook returned {}, expected {expected}",
        if value.is_unit() {
            "nothing (a missing return?)".to_owned()
        } else {
            format!(
                "a value of type {}",
                engine.map_type_name(value.type_name())
            )
        }
    ))
}

/// A transport is `method:nexthop`: a lowercase method name, a colon, and printable
/// ASCII without spaces.
fn check_transport(text: &str) -> Result<(), String> {
    let valid = text.len() <= MAX_TRANSPORT
        && text.bytes().all(|b| b.is_ascii_graphic())
        && text.split_once(':').is_some_and(|(method, _)| {
            !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a transport: expected method:nexthop such as \"smtp:[10.0.0.5]:2525\" (printable ASCII, no spaces, at most {MAX_TRANSPORT} bytes)",
            crate::config::sanitize_text(text, 80)
        ))
    }
}
