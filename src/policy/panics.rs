//! Policy evaluation that panics answers 451 instead of killing its thread.
//!
//! A panic inside a stage (a bug in a native function a hook reached, in a parser,
//! in a lookup) must cost one transaction a temporary failure, never a tokio worker
//! (its other sessions), the scheduler or `mtactl test-policy` (exit 101).
//! [`Pipeline::evaluate`](super::Pipeline::evaluate), the one function every runner
//! calls, runs the stage inside [`catch`]. Where the panic happened (file:line of the
//! Rust source, and its message) comes from a panic hook that, while a [`catch`] runs
//! on its thread, records it instead of printing it (the default hook writes several
//! lines to stderr, the log, with whatever text the panic carried); panics elsewhere
//! go to the hook that was installed before.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// `Some` while a [`catch`] runs on this thread: what the last panic said.
    static CAUGHT: RefCell<Option<Option<Panicked>>> = const { RefCell::new(None) };
}

/// A panic that [`catch`] caught: `src/x.rs:12:5: text`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub(crate) struct Panicked {
    /// file:line:col of the Rust source, or `(unknown place)`.
    pub place: String,
    /// The panic's message, or `(no message)`.
    pub message: String,
}

/// Runs `f`; a panic is `Err` with its place and message.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    install();
    let outer = CAUGHT.with(|c| c.replace(Some(None)));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    let caught = CAUGHT.with(|c| c.replace(outer)).flatten();
    result.map_err(|payload| {
        caught.unwrap_or_else(|| Panicked {
            place: "(unknown place)".to_owned(),
            message: message(payload.as_ref()).to_owned(),
        })
    })
}

fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let recorded = CAUGHT
                .try_with(|c| match c.try_borrow_mut() {
                    Ok(mut slot) => match slot.as_mut() {
                        Some(last) => {
                            let place = info.location().map_or_else(
                                || "(unknown place)".to_owned(),
                                |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
                            );
                            *last = Some(Panicked {
                                place,
                                message: message(info.payload()).to_owned(),
                            });
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
            if !recorded {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_an_error_with_its_place() {
        let err = catch(|| -> u32 { panic!("boom {}", 7) })
            .unwrap_err()
            .to_string();
        assert!(err.contains("src/policy/panics.rs:"), "{err}");
        assert!(err.ends_with(": boom 7"), "{err}");
        assert_eq!(catch(|| 5), Ok(5));
        // nested: the inner catch does not end the outer one
        let outer = catch(|| {
            let inner = catch(|| -> () { panic!("inner") });
            assert_eq!(inner.unwrap_err().message, "inner");
            panic!("outer")
        });
        assert_eq!(outer.unwrap_err().message, "outer");
    }
}
