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

use super::context::{self, Address};
use super::{Lookups, ScriptLimits, verdict};
use crate::config::sanitize_text;

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
}

/// Sets this thread's deadline for the length of a call, restoring the previous one
/// (normally none) when dropped, also on unwinding.
pub(crate) struct DeadlineGuard(Option<Instant>);

impl DeadlineGuard {
    pub(crate) fn set(deadline: Instant) -> Self {
        DeadlineGuard(DEADLINE.replace(Some(deadline)))
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.set(self.0);
    }
}

fn past_deadline() -> bool {
    DEADLINE.get().is_some_and(|d| Instant::now() >= d)
}

type Res<T> = Result<T, Box<EvalAltResult>>;

/// An error from a native function, at the call (Rhai leaves calls through a
/// namespace without a position).
fn error(nc: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        nc.call_position(),
    ))
}

fn with_lookups<T>(nc: &NativeCallContext, f: impl FnOnce(&dyn Lookups) -> Res<T>) -> Res<T> {
    let state = nc
        .tag()
        .and_then(|tag| tag.read_lock::<CallState>())
        .ok_or_else(|| error(nc, "sets and tables are not available here".to_owned()))?;
    f(&*state.lookups)
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
    m
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
