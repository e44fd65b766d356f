//! Rhai hooks: a `hook "file.rhai" function="rcpt"` step in a stage's rule list
//! calls a script function that returns a verdict (docs/hooks.md is the user's
//! reference).
//!
//! - [`ScriptHost`] owns the one sandboxed engine (shared, `Send + Sync`) with the
//!   verdict constructors, the context types and the `mta` module (`stdlib/`,
//!   compiled into the binary). Build one per process, or per reload.
//! - [`ScriptHost::compile`] turns a file into a [`Hook`] once, at configuration
//!   time, checking what can be checked statically (see `check`): a `ctx` field that
//!   does not exist at the hook's stage is a compile error with file:line:col.
//! - [`Hook::call`] runs it against a [`HookInput`] and yields a [`HookOutput`], or a
//!   [`HookError`]. The result is a `Result`, never a default: any error — a script
//!   error, a limit, a wrong return value, bad reply codes — is something the caller
//!   must turn into `451 4.3.0` ([`HookError::tempfail_reply`]); nothing here can
//!   become an accept by accident (DESIGN §5.2).
//!
//! Reply text from scripts is sanitised by [`Reply::new`]; header names are checked
//! and values stripped of CR/LF and controls before they become [`HeaderChange`]s
//! (DESIGN §5.5).

mod check;
mod context;
mod engine;
mod error;
mod verdict;

#[cfg(test)]
mod tests;

use crate::lookup::LookupError;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, CallFnOptions, Dynamic, Engine, Position, Scope};

use crate::policy::{Stage, Verdict};
use context::{Ctx, FieldSet};

pub use crate::message::HeaderChange;
pub use error::{HookError, ScriptError};

/// The sandbox's limits. Every call is bounded by all of them; exceeding one is a
/// [`HookError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Rhai operations per call (roughly: expressions evaluated).
    pub max_operations: u64,
    /// Depth of nested function calls.
    pub max_call_levels: usize,
    /// Expression nesting, at top level and inside functions (checked at compile
    /// time).
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    /// Bytes in any string a script builds; also the cap on `ctx.body()`.
    pub max_string_size: usize,
    /// Elements in any array a script builds.
    pub max_array_size: usize,
    /// Entries in any object map a script builds.
    pub max_map_size: usize,
    /// Modules imported per call (only `mta` exists).
    pub max_modules: usize,
    /// Header changes one data hook call may make.
    pub max_header_changes: usize,
    /// Wall-clock time per call, from its start. Checked between operations, and
    /// by native functions whose work grows with the message or that wait before
    /// they start; a lookup's wait for a database ends at the deadline (see
    /// `engine::with_lookups`).
    pub wall_time: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_modules: 4,
            max_header_changes: 100,
            wall_time: Duration::from_millis(100),
        }
    }
}

/// The host's sets and tables, as `mta::listed` and `mta::lookup` see them. They
/// belong to one compiled policy and are passed with each call.
pub trait Lookups: Send + Sync {
    /// Whether `value` is in the set (networks or domains) or table named `name`
    /// (for a table: whether the key exists). `None`: no such name (a script error);
    /// `Err`: its table (a database) cannot answer (a script error too: the hook
    /// fails closed, 451).
    fn in_set(&self, name: &str, value: &str) -> Option<Result<bool, LookupError>>;
    /// The value for `key` in the table named `name`. Outer `None`: no such table (a
    /// script error); inner `None`: no such key (the script sees `""`); `Err`: the
    /// table cannot answer now (a script error).
    fn table(&self, name: &str, key: &str) -> Option<Result<Option<String>, LookupError>>;
    /// The records of `kind` at `name` (`mta::dns_a` ...), waiting at most `timeout`:
    /// empty when there are none; `Err` when DNS cannot say (a script error: the hook
    /// fails closed, 451).
    fn dns(
        &self,
        name: &str,
        kind: crate::net::dns::Query,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, String> {
        let _ = (name, kind, timeout);
        Err("DNS lookups are not available here".to_owned())
    }
    /// The score of the client (or HELO name, or sender domain) in the `dnsbl` list
    /// `list` (`ctx.dnsbl_score`): `None`: no such list; `Err`: the list cannot say.
    fn dnsbl_score(
        &self,
        list: &str,
        client: std::net::IpAddr,
        helo: Option<&str>,
        sender: Option<&str>,
    ) -> Option<Result<i64, String>> {
        let _ = (list, client, helo, sender);
        None
    }
}

/// No sets or tables at all: every name is unknown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLookups;

impl Lookups for NoLookups {
    fn in_set(&self, _: &str, _: &str) -> Option<Result<bool, LookupError>> {
        None
    }
    fn table(&self, _: &str, _: &str) -> Option<Result<Option<String>, LookupError>> {
        None
    }
}

/// The set and table names a policy defines, so that `mta::listed("name", ..)` and
/// `mta::lookup("name", ..)` with a literal name are checked at compile time.
/// [`KnownNames::default`] checks nothing (an unknown name is then a runtime error).
#[derive(Clone, Debug, Default)]
pub struct KnownNames {
    names: Option<(BTreeSet<String>, BTreeSet<String>)>,
}

impl KnownNames {
    /// The `sets` (networks, domains) and `tables` a policy defines.
    pub fn new<S: Into<String>, T: Into<String>>(
        sets: impl IntoIterator<Item = S>,
        tables: impl IntoIterator<Item = T>,
    ) -> Self {
        KnownNames {
            names: Some((
                sets.into_iter().map(Into::into).collect(),
                tables.into_iter().map(Into::into).collect(),
            )),
        }
    }

    fn has_set_or_table(&self, name: &str) -> bool {
        self.names
            .as_ref()
            .is_none_or(|(s, t)| s.contains(name) || t.contains(name))
    }

    fn has_table(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|(_, t)| t.contains(name))
    }

    fn set_and_table_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .flat_map(|(s, t)| s.iter().chain(t.iter()))
            .map(String::as_str)
    }

    fn table_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .flat_map(|(_, t)| t.iter())
            .map(String::as_str)
    }
}

/// The script engine and its `mta` module. Cheap to clone (an `Arc`); build one and
/// share it: every [`Hook`] is called with the host that compiled it.
#[derive(Clone)]
pub struct ScriptHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    limits: ScriptLimits,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Default for ScriptHost {
    fn default() -> Self {
        ScriptHost::new(ScriptLimits::default())
    }
}

impl ScriptHost {
    pub fn new(limits: ScriptLimits) -> Self {
        ScriptHost {
            inner: Arc::new(HostInner {
                engine: engine::build(&limits),
                limits,
            }),
        }
    }

    pub fn limits(&self) -> &ScriptLimits {
        &self.inner.limits
    }

    /// Compiles the hook `function` (by default the stage's name: `"rcpt"`, ...) of
    /// the file at `file`, named `display_name` in errors. Returns every error found:
    /// a syntax error (Rhai stops at the first), a missing function or one that does
    /// not take exactly one parameter, a `ctx` field or method that does not exist at
    /// `stage`, an import other than `mta`, top-level code, an unknown set or table.
    pub fn compile(
        &self,
        file: &Path,
        display_name: &str,
        function: Option<&str>,
        stage: Stage,
        known_names: &KnownNames,
    ) -> Result<Hook, Vec<ScriptError>> {
        let text = Self::read(file, display_name)?;
        self.compile_str(&text, display_name, function, stage, known_names)
    }

    /// Reads a hook file (for [`ScriptHost::compile_str`]), the error naming it.
    pub fn read(file: &Path, display_name: &str) -> Result<String, Vec<ScriptError>> {
        std::fs::read_to_string(file).map_err(|e| {
            vec![ScriptError::whole_file(
                display_name,
                format!("cannot read hook file {}: {e}", file.display()),
            )]
        })
    }

    /// [`ScriptHost::compile`] from a file's text.
    pub fn compile_str(
        &self,
        text: &str,
        display_name: &str,
        function: Option<&str>,
        stage: Stage,
        known_names: &KnownNames,
    ) -> Result<Hook, Vec<ScriptError>> {
        let text = Arc::new(text.to_owned());
        let err =
            |pos: Position, message: String| ScriptError::at(display_name, &text, pos, message);
        let function = function.unwrap_or(stage.as_str());
        let mut ast = self
            .inner
            .engine
            .compile(text.as_str())
            .map_err(|e| vec![err(e.1, e.0.to_string())])?;
        ast.set_source(display_name);

        let candidates: Vec<_> = ast.iter_fn_def().filter(|f| f.name == function).collect();
        let def = match candidates.as_slice() {
            [] => {
                let mut names: Vec<&str> = ast.iter_fn_def().map(|f| f.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                let found = if names.is_empty() {
                    "it defines no function".to_owned()
                } else {
                    format!("it defines: {}", names.join(", "))
                };
                return Err(vec![err(
                    Position::new(1, 1),
                    format!("no function `{function}` in {display_name} ({found})"),
                )]);
            }
            [def] if def.params.len() == 1 => def,
            [def, ..] => {
                let pos = def.body.start_position();
                return Err(vec![err(
                    pos,
                    format!(
                        "hook function `{function}` must take exactly one parameter (the context), as in `fn {function}(ctx)`"
                    ),
                )]);
            }
        };
        let position = def.body.start_position();

        let uses = check::check(&ast, function, stage, known_names).map_err(|findings| {
            findings
                .into_iter()
                .map(|f| err(f.pos, f.message))
                .collect::<Vec<_>>()
        })?;
        Ok(Hook {
            inner: Arc::new(HookInner {
                ast,
                file: display_name.to_owned(),
                function: function.to_owned(),
                stage,
                uses,
                position,
            }),
        })
    }
}

/// A compiled hook: immutable, `Send + Sync`, cheap to clone and to call from many
/// sessions at once.
#[derive(Clone)]
pub struct Hook {
    inner: Arc<HookInner>,
}

struct HookInner {
    ast: AST,
    file: String,
    function: String,
    stage: Stage,
    /// The `ctx` fields the function reads: the only ones a call copies.
    uses: FieldSet,
    /// Where the function's body starts: the position of errors about what it
    /// returned.
    position: Position,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("file", &self.inner.file)
            .field("function", &self.inner.function)
            .field("stage", &self.inner.stage)
            .finish_non_exhaustive()
    }
}

/// What a hook sees of the session and message. Fields that do not exist at the
/// stage are ignored (`None`, empty).
#[derive(Clone, Copy, Debug)]
pub struct HookInput<'a> {
    pub stage: Stage,
    pub client_ip: IpAddr,
    pub client_port: u16,
    /// The listener's name (`listen "mx" ...`).
    pub listener: &'a str,
    pub helo: Option<&'a str>,
    /// `(protocol, cipher)` when the session is under TLS.
    pub tls: Option<(&'a str, &'a str)>,
    pub auth_user: Option<&'a str>,
    /// Who submitted the message through `sendmail` (local submissions only).
    pub submitter: Option<&'a crate::policy::local::Submitter>,
    /// The reverse path without angle brackets (`""` for the null sender).
    pub sender: Option<&'a str>,
    pub rcpt: Option<&'a str>,
    /// Recipients accepted so far (rcpt) or all of them (data).
    pub recipients: &'a [String],
    /// Message size in bytes (data).
    pub size: Option<u64>,
    /// The header block, in order (the call copies it only for a hook that reads
    /// headers, once, unfolded).
    pub headers: &'a crate::policy::Headers,
    /// The body: what follows the empty line that ends the header block, as
    /// received (`ctx.body()`).
    pub body: Option<&'a [u8]>,
    /// The whole message, headers and body (for `ctx.parts()`).
    pub message: Option<&'a [u8]>,
    /// The client's rate-limit counters, for `ctx.rate(kind)`.
    pub rates: Option<&'a dyn crate::policy::RateView>,
    /// The `authentication` results so far.
    pub auth: Option<&'a crate::mailauth::AuthResults>,
}

impl<'a> HookInput<'a> {
    /// An input with only the connection fields set.
    pub fn new(stage: Stage, client_ip: IpAddr, client_port: u16, listener: &'a str) -> Self {
        HookInput {
            stage,
            client_ip,
            client_port,
            listener,
            helo: None,
            tls: None,
            auth_user: None,
            submitter: None,
            sender: None,
            rcpt: None,
            recipients: &[],
            size: None,
            headers: &crate::policy::NO_HEADERS,
            body: None,
            message: None,
            rates: None,
            auth: None,
        }
    }
}

/// What a hook decided: a stage verdict (reject always carries a 5xx reply, defer a
/// 4xx one), or at the route stage a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookDecision {
    Verdict(Verdict),
    /// `greylist()` at rcpt: the pipeline greylists the triplet, as a `greylist` rule
    /// does (no decision when it passes).
    Greylist,
    /// A route hook's transport, `method:nexthop` (`smtp:[10.0.0.5]:2525`).
    Transport(String),
}

impl HookDecision {
    /// The stage verdict this is (`None` for a transport).
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            HookDecision::Verdict(v) => Some(v.clone()),
            HookDecision::Transport(_) | HookDecision::Greylist => None,
        }
    }
}

/// A successful hook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutput {
    pub decision: HookDecision,
    /// In the order the script made them (data hooks only; empty otherwise).
    pub header_changes: Vec<HeaderChange>,
    /// `ctx.content_filter(NAME)` (data hooks): the message goes through that filter.
    pub filter: Option<String>,
}

/// Runs `f` (a hook call, which may compute for its whole wall-time budget) without
/// holding a tokio worker: on the server's multi-threaded runtime, inside
/// `block_in_place`, so that the worker's other sessions move to another thread
/// instead of waiting behind the hook. Elsewhere (`mtactl test-policy`, which is
/// synchronous, a single-threaded runtime) `f` just runs.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Hook {
    /// The file as the configuration names it.
    pub fn file(&self) -> &str {
        &self.inner.file
    }

    pub fn function(&self) -> &str {
        &self.inner.function
    }

    pub fn stage(&self) -> Stage {
        self.inner.stage
    }

    /// Whether the hook reads the message body (`ctx.body()`, `ctx.parts()`).
    pub fn reads_body(&self) -> bool {
        self.inner.uses.contains(context::Field::Body)
            || self.inner.uses.contains(context::Field::Parts)
    }

    /// Runs the hook. `host` must be the one that compiled it; `lookups` are the
    /// policy's sets and tables. Any failure is an `Err`: answer
    /// [`HookError::tempfail_reply`].
    pub fn call(
        &self,
        host: &ScriptHost,
        input: &HookInput<'_>,
        lookups: &Arc<dyn Lookups>,
    ) -> Result<HookOutput, HookError> {
        let hook = &*self.inner;
        let no_pos = |message: String| HookError::at(&hook.file, Position::NONE, message);
        if input.stage != hook.stage {
            return Err(no_pos(format!(
                "hook {} is a {} hook, called at the {} stage",
                hook.function, hook.stage, input.stage
            )));
        }
        off_the_workers(|| self.run(host, input, lookups))
    }

    /// [`Hook::call`] on the calling thread.
    fn run(
        &self,
        host: &ScriptHost,
        input: &HookInput<'_>,
        lookups: &Arc<dyn Lookups>,
    ) -> Result<HookOutput, HookError> {
        let hook = &*self.inner;
        let HostInner { engine, limits } = &*host.inner;
        // the budget counts from here: copying the context (MIME parts) is part of it
        let deadline = engine::DeadlineGuard::set(Instant::now() + limits.wall_time);
        let ctx = Ctx::build(
            input,
            hook.uses,
            limits.max_string_size,
            limits.max_header_changes,
            limits.max_array_size,
        );
        let state = engine::CallState {
            lookups: Arc::clone(lookups),
        };
        let options = CallFnOptions::new()
            .with_tag(Dynamic::from(state))
            .eval_ast(true)
            .rewind_scope(true);
        let result = engine.call_fn_with_options::<Dynamic>(
            options,
            &mut Scope::new(),
            &hook.ast,
            &hook.function,
            (ctx.clone(),),
        );
        drop(deadline);
        let value =
            result.map_err(|e| HookError::from_rhai(&hook.file, e, limits, hook.position))?;
        let decision = verdict::decide(engine, hook.stage, value)
            .map_err(|message| HookError::at(&hook.file, hook.position, message))?;
        Ok(HookOutput {
            decision,
            header_changes: ctx.take_changes(),
            filter: ctx.take_filter(),
        })
    }
}
