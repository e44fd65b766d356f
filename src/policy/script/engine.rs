//! The one sandboxed [`Engine`] every hook runs on, and the `mta` module.
//!
//! Sandbox: no `eval` (the keyword is disabled), strict variables, no module but
//! `mta` (a [`StaticModuleResolver`] holding only it: no file access), the
//! [`ScriptLimits`] on operations, call depth, expression depth and data sizes, and a
//! wall-time limit per call. `print` and `debug` go to the log, never to stdout.
//!
//! The engine is shared (`sync`): what differs between calls travels with the call.
//! The host's sets and tables ride in the call's tag ([`CallState`]); the wall-time
//! deadline sits in a thread-local for the duration of the call, because
//! `on_progress` sees nothing else (a call never leaves its thread).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use rhai::module_resolvers::StaticModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Module, NativeCallContext, Scope};

use rhai::Array;

use super::context::{self, Address};
use super::{Lookups, ScriptLimits, verdict};
use crate::config::sanitize_text;
use crate::net::dns::{Query, reversed};

/// The Rhai half of the `mta` module, compiled into the binary.
pub(crate) const STDLIB_MTA: &str = include_str!("../../../stdlib/mta.rhai");

/// What a native function needs from the current call: passed as the call's tag.
#[derive(Clone)]
pub(crate) struct CallState {
    pub lookups: Arc<dyn Lookups>,
}

/// The value `on_progress` stops a script with when its time is up; the error
/// mapping recognises it.
pub(crate) const WALL_TIME_TOKEN: &str = "mtad:wall-time";

/// `on_progress` looks at the clock every this many operations.
const CLOCK_EVERY: u64 = 256;

thread_local! {
    /// When the hook call running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Until when the hook call running on this thread may wait for the network (DNS
    /// lookups, DNS lists): [`NETWORK_BUDGET`] from its start.
    static NETWORK_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How long one hook call may wait for DNS in all (its lookups and DNS lists). Time
/// spent waiting is not counted against the wall time, which bounds computing.
pub const NETWORK_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one DNS lookup of a hook may wait (within [`NETWORK_BUDGET`]).
pub const DNS_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets this thread's deadline for the length of a call, restoring the previous one
/// (normally none) when dropped, also on unwinding.
pub(crate) struct DeadlineGuard(Option<Instant>, Option<Instant>);

impl DeadlineGuard {
    pub(crate) fn set(deadline: Instant) -> Self {
        let network = NETWORK_UNTIL.replace(Some(Instant::now() + NETWORK_BUDGET));
        DeadlineGuard(DEADLINE.replace(Some(deadline)), network)
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.set(self.0);
        NETWORK_UNTIL.set(self.1);
    }
}

/// Runs a native function that waits for the network (`f` gets how long it may
/// wait: `timeout`, or less when the call's [`NETWORK_BUDGET`] is nearly used up).
/// The wait moves the call's wall-time deadline on by as long as it took, so that
/// waiting for DNS does not eat the time a hook has to compute; it is bounded by
/// the budget instead.
pub(crate) fn with_network<T>(
    nc: &NativeCallContext,
    timeout: std::time::Duration,
    f: impl FnOnce(&dyn Lookups, std::time::Duration) -> Res<T>,
) -> Res<T> {
    check_time()?;
    let state = nc
        .tag()
        .and_then(|tag| tag.read_lock::<CallState>())
        .ok_or_else(|| error(nc, "DNS is not available here".to_owned()))?;
    let started = Instant::now();
    let left = NETWORK_UNTIL
        .get()
        .map_or(timeout, |u| u.saturating_duration_since(started))
        .min(timeout);
    if left.is_zero() {
        return Err(error(
            nc,
            format!("the hook has waited for DNS {NETWORK_BUDGET:?} already: no more lookups"),
        ));
    }
    let result = {
        let _limit = crate::lookup::sql_table::WaitLimit::set(started + left);
        f(&*state.lookups, left)
    };
    if let Some(d) = DEADLINE.get() {
        DEADLINE.set(Some(d + started.elapsed()));
    }
    check_time()?;
    result
}

fn past_deadline() -> bool {
    DEADLINE.get().is_some_and(|d| Instant::now() >= d)
}

/// The deadline of the hook call running on this thread, if any.
pub(crate) fn deadline() -> Option<Instant> {
    DEADLINE.get()
}

/// The error that stops a script whose time is up (what `on_progress` returns,
/// as an error a native function can give).
fn out_of_time() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(WALL_TIME_TOKEN),
        rhai::Position::NONE,
    ))
}

/// For native functions whose work grows with the message (header scans, lookups):
/// stop at entry when the call's time is up. `on_progress` only looks at the clock
/// between operations, every [`CLOCK_EVERY`] of them; a script calling such a
/// function in a loop would otherwise run that many calls past its deadline.
pub(crate) fn check_time() -> Result<(), Box<EvalAltResult>> {
    if past_deadline() {
        Err(out_of_time())
    } else {
        Ok(())
    }
}

type Res<T> = Result<T, Box<EvalAltResult>>;

/// An error from a native function, at the call (Rhai leaves calls through a
/// namespace without a position).
pub(crate) fn error(nc: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        nc.call_position(),
    ))
}

/// Runs a lookup for a hook. A lookup is one native call, which `on_progress`
/// cannot interrupt: its wait for a database (an SQL table) is capped at the hook's
/// deadline (see [`crate::lookup::sql_table::WaitLimit`]), and a lookup that ends
/// past the deadline is the wall-time error, whatever it found. Tables in files and
/// sets answer from memory.
fn with_lookups<T>(nc: &NativeCallContext, f: impl FnOnce(&dyn Lookups) -> Res<T>) -> Res<T> {
    check_time()?;
    let state = nc
        .tag()
        .and_then(|tag| tag.read_lock::<CallState>())
        .ok_or_else(|| error(nc, "sets and tables are not available here".to_owned()))?;
    let result = {
        let _limit = deadline().map(crate::lookup::sql_table::WaitLimit::set);
        f(&*state.lookups)
    };
    check_time()?;
    result
}

/// The native functions of `mta`.
fn native_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("parse_address", |s: &str| Ok(Address::parse(s)));
    m.set_native_fn(
        "listed",
        |nc: NativeCallContext, name: &str, value: &str| -> Res<bool> {
            with_lookups(&nc, |l| match l.in_set(name, value) {
                Some(Ok(listed)) => Ok(listed),
                Some(Err(e)) => Err(error(
                    &nc,
                    format!(
                        "mta::listed: {:?}: temporary lookup failure: {e}",
                        sanitize_text(name, 80)
                    ),
                )),
                None => Err(error(
                    &nc,
                    format!(
                        "mta::listed: no set or table named {:?}",
                        sanitize_text(name, 80)
                    ),
                )),
            })
        },
    );
    m.set_native_fn(
        "lookup",
        |nc: NativeCallContext, name: &str, key: &str| -> Res<ImmutableString> {
            with_lookups(&nc, |l| match l.table(name, key) {
                Some(Ok(value)) => Ok(value.map(Into::into).unwrap_or_default()),
                Some(Err(e)) => Err(error(
                    &nc,
                    format!(
                        "mta::lookup: {:?}: temporary lookup failure: {e}",
                        sanitize_text(name, 80)
                    ),
                )),
                None => Err(error(
                    &nc,
                    format!("mta::lookup: no table named {:?}", sanitize_text(name, 80)),
                )),
            })
        },
    );
    for (name, kind) in [
        ("dns_a", Query::A),
        ("dns_aaaa", Query::Aaaa),
        ("dns_txt", Query::Txt),
        ("dns_ptr", Query::Ptr),
    ] {
        m.set_native_fn(
            name,
            move |nc: NativeCallContext, target: &str| -> Res<Array> {
                let query = if kind == Query::Ptr {
                    match target.trim().parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V4(ip)) => reversed(ip.into(), "in-addr.arpa"),
                        Ok(std::net::IpAddr::V6(ip)) => reversed(ip.into(), "ip6.arpa"),
                        Err(_) => {
                            return Err(error(
                                &nc,
                                format!(
                                    "mta::dns_ptr: {:?} is not an IP address",
                                    sanitize_text(target, 80)
                                ),
                            ));
                        }
                    }
                } else {
                    target.to_owned()
                };
                with_network(&nc, DNS_LOOKUP_TIMEOUT, |l, wait| {
                    l.dns(&query, kind, wait)
                        .map(|records| {
                            records
                                .into_iter()
                                .map(|r| Dynamic::from(ImmutableString::from(r)))
                                .collect()
                        })
                        .map_err(|e| {
                            error(
                                &nc,
                                format!(
                                    "mta::{name}({:?}): temporary DNS failure: {}",
                                    sanitize_text(target, 80),
                                    sanitize_text(&e, 200)
                                ),
                            )
                        })
                })
            },
        );
    }
    m
}

/// Rhai built-ins that would escape the limits, replaced by safe versions. Functions
/// registered on the engine itself are found before those of its packages, so these
/// shadow the standard library's (also through `call(Fn("sleep"), ..)`).
///
/// - `sleep` blocks the thread (a hook runs inside an SMTP session): it is an error.
///   (Rhai's float `sleep` also panics on a huge value.)
/// - `replace` builds its result before Rhai checks the string size: a 64 KiB
///   string whose every character is replaced by a 64 KiB one is 4 GiB. Here the
///   result's length is computed first and refused past `max_string_size`.
///
/// Everything else that allocates in proportion to an argument (`pad` on strings,
/// arrays and blobs, `blob(n)`) checks the limits itself before allocating; loops
/// and ranges count operations.
fn restrict_builtins(engine: &mut Engine, limits: &ScriptLimits) {
    fn no_sleep() -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            "sleep() is not available in hooks: a hook must answer within its time limit".into(),
            rhai::Position::NONE,
        ))
    }
    engine
        .register_fn("sleep", |_: rhai::INT| -> Res<()> { Err(no_sleep()) })
        .register_fn("sleep", |_: rhai::FLOAT| -> Res<()> { Err(no_sleep()) });
    let max = limits.max_string_size;
    let replace = move |s: &mut ImmutableString, find: &str, with: &str| -> Res<()> {
        if s.is_empty() {
            return Ok(());
        }
        if with.len() > find.len() {
            let count = if find.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(find).count()
            };
            let len = count
                .saturating_mul(with.len() - find.len())
                .saturating_add(s.len());
            if max > 0 && len > max {
                return Err(Box::new(EvalAltResult::ErrorDataTooLarge(
                    "Length of string".into(),
                    rhai::Position::NONE,
                )));
            }
        }
        *s = s.replace(find, with).into();
        Ok(())
    };
    engine
        .register_fn("replace", replace)
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: &str, with: char| {
                replace(s, find, with.encode_utf8(&mut [0; 4]))
            },
        )
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: char, with: &str| {
                replace(s, find.encode_utf8(&mut [0; 4]), with)
            },
        )
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: char, with: char| {
                replace(
                    s,
                    find.encode_utf8(&mut [0; 4]),
                    with.encode_utf8(&mut [0; 4]),
                )
            },
        );
}

/// Builds the sandboxed engine with the verdicts, the context types and `mta`.
pub(crate) fn build(limits: &ScriptLimits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true)
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(limits.max_modules)
        .disable_symbol("eval");
    engine.on_progress(|ops| {
        (ops % CLOCK_EVERY == 0 && past_deadline()).then(|| Dynamic::from(WALL_TIME_TOKEN))
    });
    engine.on_print(|text| {
        tracing::info!(target: "mtad::hook", "print: {}", sanitize_text(text, 400));
    });
    engine.on_debug(|text, source, pos| {
        tracing::debug!(
            target: "mtad::hook",
            "{}:{}: {}",
            source.unwrap_or("?"),
            pos.line().unwrap_or(0),
            sanitize_text(text, 400)
        );
    });
    restrict_builtins(&mut engine, limits);
    // the unit tests' way to make policy evaluation panic (see policy::tests)
    #[cfg(test)]
    engine.register_fn("test_panic", |message: &str| -> bool {
        panic!("{message}")
    });
    verdict::register(&mut engine);
    context::register(&mut engine);

    // The Rhai half of `mta` calls the native half as `mta::...`: register the
    // natives under that name while compiling it, then the whole module.
    let natives = native_module();
    engine.register_static_module("mta", natives.clone().into());
    let mut ast = engine
        .compile(STDLIB_MTA)
        .unwrap_or_else(|e| panic!("stdlib/mta.rhai does not compile: {e}"));
    ast.set_source("mta");
    let mut module = Module::eval_ast_as_new(Scope::new(), &ast, &engine)
        .unwrap_or_else(|e| panic!("stdlib/mta.rhai does not load: {e}"));
    module.combine(natives);
    module.set_id("mta");
    module.build_index();
    let mut resolver = StaticModuleResolver::new();
    resolver.insert("mta", module.clone());
    engine.register_static_module("mta", module.into());
    engine.set_module_resolver(resolver);
    engine
}
