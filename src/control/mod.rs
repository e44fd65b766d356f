//! The operator side: what `mtactl` does, and the daemon's end of the control socket
//! ([`socket`]). Each function here prints its result to stdout and returns the error
//! text for stderr (the binary turns it into exit status 1).

/// `println!` for mtactl: through [`output::stdout`], which never panics (a closed
/// pipe ends the command quietly).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::control::output::stdout(), $($arg)*);
    }};
}

/// `print!` for mtactl, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($crate::control::output::stdout(), $($arg)*);
    }};
}

/// `eprintln!` for mtactl: never panics ([`output::error`]).
macro_rules! errln {
    ($($arg:tt)*) => {{
        $crate::control::output::error(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// `eprint!` for mtactl, as [`errln!`].
macro_rules! err {
    ($($arg:tt)*) => {{
        $crate::control::output::error(format_args!($($arg)*));
    }};
}

pub mod cluster_status;
pub mod config_path;
pub mod daemon;
pub mod dkim;
pub mod log;
pub mod mailq;
pub mod manual;
pub mod newaliases;
pub mod notify;
pub mod output;
pub mod pickup;
pub mod privileges;
pub mod qshape;
pub mod reload;
pub mod replay;
pub mod sendmail;
pub mod show_config;
pub mod socket;
pub mod status;
pub mod sysexits;
pub mod test_policy;
pub mod tls_probe;

use std::io::{BufRead, Read as _, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use tracing::error;

use crate::config::{Config, ConfigErrors, render};
use crate::policy::Pipeline;
use crate::queue::{self, MessageState, QueueId, QueuedMessage, RcptState, RcptStatus};
use socket::{QueueAction, Request};

/// What `--version` prints after the program's name: the package version and the
/// commit the binary was built from (`build.rs`: `-dirty` when the tree had changes,
/// `unknown` outside a git checkout unless `MTAD_COMMIT` was set).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MTAD_COMMIT"),
    ")"
);

/// Why a configuration cannot go live (at start or by a reload).
#[derive(Debug)]
pub enum Refusal {
    /// The configuration has errors (each with its file:line:col).
    Config(ConfigErrors),
    /// It is valid but cannot be put in force: a listener cannot be bound, a
    /// certificate read, a required test suite fails.
    Other(Vec<String>),
}

impl Refusal {
    /// Every error, as `mtactl reload` prints them.
    pub fn render(&self) -> String {
        match self {
            Refusal::Config(errors) => render(errors),
            Refusal::Other(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
        }
    }

    /// How many errors there are.
    pub fn count(&self) -> usize {
        match self {
            Refusal::Config(errors) => errors.errors.len(),
            Refusal::Other(lines) => lines.len(),
        }
    }

    /// Logs every error, with its place.
    pub fn log(&self) {
        match self {
            Refusal::Config(errors) => {
                for e in &errors.errors {
                    let at = e
                        .location
                        .as_ref()
                        .map_or_else(|| errors.file.clone(), ToString::to_string);
                    error!(at = %at, error = %e.message, "reload: configuration error");
                }
            }
            Refusal::Other(lines) => {
                for l in lines {
                    error!(error = %l, "reload: cannot put the configuration in force");
                }
            }
        }
    }
}

/// An `mtactl` command that failed: the text is what it prints on stderr (rendered
/// configuration errors, or `mtactl: ...` lines), before it exits non-zero.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(String);

impl From<String> for CommandError {
    fn from(text: String) -> Self {
        CommandError(text)
    }
}

/// Loads and compiles the configuration at `path` and runs the test suites it requires
/// (`reload { require-tests }`): what mtad's start, a reload and `mtactl
/// check`/`reload` do before a policy may go live.
pub fn load_live(path: &Path) -> Result<(Config, Arc<Pipeline>), Refusal> {
    let (config, pipeline) = Pipeline::load(path).map_err(Refusal::Config)?;
    let pipeline = Arc::new(pipeline);
    for warning in relay_check(&config, &pipeline)? {
        tracing::warn!(warning = %warning, "policy analysis");
    }
    let cases = test_policy::required(&config, &pipeline).map_err(Refusal::Other)?;
    if cases > 0 {
        tracing::info!(cases, "the required test suites pass");
    }
    if config.reload.replay.is_some() {
        let replayed = replay::gate(&config, &pipeline).map_err(Refusal::Other)?;
        tracing::info!(replayed, "the logged decisions replay without a change");
    }
    Ok((config, pipeline))
}

/// The open-relay analysis ([`Pipeline::relay_analysis`]) of a policy about to go
/// live: `Err` with the counterexample when an untrusted, unauthenticated client can
/// relay and no `open-relay="intended"` says that is meant; else what to warn about
/// (a hook or policy service that may accept, trust given to a network wider than a
/// /8, an intended relay, a search that could not be completed). A hook or policy
/// service that may relay is not warned of when a required suite case pins it
/// ([`test_policy::pin`]): logged, at info.
pub fn relay_check(config: &Config, pipeline: &Arc<Pipeline>) -> Result<Vec<String>, Refusal> {
    let relay = pipeline.relay_analysis(config);
    if let Some(f) = relay.refuses() {
        let details: String = f
            .to_string()
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        return Err(Refusal::Other(vec![format!(
            "{}: this policy is an open relay: `{}` accepts {}\n{details}  \
             a client that is neither trusted nor authenticated gets a recipient in a domain \
             that is not ours accepted: refuse it with a rule before this one or, if it is \
             meant, write open-relay=\"intended\" on the rule or on its listener \
             (docs/policy-analysis.md)",
            f.rule, f.action, f.envelope,
        )]));
    }
    let mut warnings = Vec::new();
    for w in &relay.wide_trust {
        warnings.push(format!(
            "{}: {} is trusted: wider than a /8 (IPv6: /16), that is much of the Internet",
            w.rule, w.network
        ));
    }
    for f in &relay.findings {
        let what = if f.intended {
            "relays, as open-relay=\"intended\" says, for"
        } else if let Some(case) = test_policy::pin(config, pipeline, f) {
            // a required case holds it to a refusal of that envelope: a note
            tracing::info!(rule = %f.rule, pinned = %case, "policy analysis: a hook that may relay is pinned by a suite case");
            continue;
        } else {
            "may relay (its code decides; pin what it does with a suite case) for"
        };
        warnings.push(format!("{}: `{}` {what} {}", f.rule, f.action, f.envelope));
    }
    for why in &relay.incomplete {
        warnings.push(format!("the open-relay analysis is incomplete: {why}"));
    }
    Ok(warnings)
}

/// `mtactl import postfix DIR --out OUT`: translates, writes, prints the report (text
/// or JSON) and checks the result as `mtactl check` does (its generated suite is a
/// `reload { require-tests }` of the configuration, so it runs too).
pub fn import_postfix(
    dir: &Path,
    out: &Path,
    options: &crate::import::postfix::Options,
    force: bool,
    json: bool,
) -> Result<(), CommandError> {
    use crate::import::postfix::{self, Status};
    let imported = postfix::import(dir, options).map_err(|e| format!("mtactl: {e}"))?;
    imported
        .write(out, force)
        .map_err(|e| format!("mtactl: {e}"))?;
    if json {
        outln!("{}", imported.report.json());
    } else {
        out_text(&imported.report.text());
    }
    let unsupported = imported.report.count(Status::Unsupported);
    if unsupported > 0 {
        errln!(
            "mtactl: warning: {unsupported} parameter(s) or restriction(s) not translated: where a restriction stood, the configuration defers (450 4.7.1); read {}",
            out.join("import-report.txt").display()
        );
    }
    let config = out.join("mtad.kdl");
    check(&config, false, false).map_err(|e| {
        CommandError::from(format!(
            "{e}
mtactl: the imported configuration {} does not pass `mtactl check`; it was written for you to look at",
            config.display()
        ))
    })
}

fn out_text(text: &str) {
    for line in text.lines() {
        outln!("{line}");
    }
}

/// `mtactl check`: exit 0 with a one-line summary, or every error rendered.
/// The second line is the policy's revision (what `mtactl status` reports once it runs).
pub fn check(path: &Path, connect: bool, strict: bool) -> Result<(), CommandError> {
    let (config, pipeline) = load_live(path).map_err(|refusal| refusal.render())?;
    let mut warnings = table_warnings(&config);
    // `load_live` refused a proven open relay; what is left are warnings
    warnings.extend(relay_check(&config, &pipeline).unwrap_or_default());
    warnings.extend(pipeline.lints(&config).iter().map(ToString::to_string));
    for w in &warnings {
        errln!("mtactl: warning: {w}");
    }
    outln!("{}", summary(&config));
    outln!("revision: {}", pipeline.revision());
    if let Some(c) = &config.cluster {
        outln!(
            "cluster: node {}, Redis {} (timeout {}, fallback {})",
            c.node,
            c.redis_shown(),
            humantime::format_duration(c.timeout),
            c.fallback.as_str()
        );
    }
    if connect {
        check_databases(&config)?;
    }
    if strict && !warnings.is_empty() {
        return Err(format!(
            "mtactl: {} warning(s), and --strict makes them errors",
            warnings.len()
        )
        .into());
    }
    Ok(())
}

/// `mtactl check --connect`: one query to each SQL table and users table, with a key
/// no row has, so that the database, the credentials and the query (its table and
/// columns) are all tried. A line per table; `Err` when one fails.
fn check_databases(config: &Config) -> Result<(), String> {
    const KEY: &str = "mtactl-check@invalid.invalid";
    let mut failed = Vec::new();
    let mut report =
        |what: String, shown: &str, started: std::time::Instant, r: Result<(), String>| match r {
            Ok(()) => outln!(
                "{what}: {shown} answers ({} ms)",
                started.elapsed().as_millis()
            ),
            Err(e) => {
                outln!("{what}: {e}");
                failed.push(what);
            }
        };
    for (name, table) in &config.tables {
        if let Some(sql) = table.as_sql() {
            let started = std::time::Instant::now();
            let r = sql.probe(KEY).map(|_| ()).map_err(|e| e.to_string());
            report(
                format!("table `{name}`"),
                sql.source().display(),
                started,
                r,
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("mtactl: cannot start a runtime: {e}"))?;
    for (name, users) in &config.users {
        if let Some((source, query)) = users.sql() {
            let started = std::time::Instant::now();
            let r = runtime
                .block_on(source.lookup(query, KEY))
                .map(|_| ())
                .map_err(|e| e.to_string());
            report(format!("users `{name}`"), source.display(), started, r);
        }
    }
    if let Some(settings) = &config.cluster {
        let started = std::time::Instant::now();
        let r = runtime
            .block_on(crate::cluster::Cluster::probe(settings))
            .map_err(|e| e.to_string());
        report(
            "cluster".to_owned(),
            &format!("Redis {}", settings.redis_shown()),
            started,
            r,
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("mtactl: no answer from {}", failed.join(", ")))
    }
}

/// `mtactl status`: asks the running daemon (over the control socket named by the
/// configuration) and prints [`status::render`]'s text, or the JSON object with `json`.
pub fn status(path: &Path, json: bool) -> Result<(), CommandError> {
    let config = load(path)?;
    let status =
        socket::status(&config.server.control_socket).map_err(|e| format!("mtactl: {e}"))?;
    if !status.ok {
        return Err(CommandError(format!(
            "mtactl status: mtad: {}",
            status.error
        )));
    }
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
        outln!("{text}");
    } else {
        out!("{}", status::render(&status));
    }
    Ok(())
}

/// `mtactl tls-report send [--now]`: asks the daemon to queue the TLS reports of the
/// periods that are over (with `now`, the open one closed first); prints a line per
/// domain.
pub fn tls_report_send(path: &Path, now: bool) -> Result<(), CommandError> {
    let config = load(path)?;
    let answer = socket::tls_report_send(&config.server.control_socket, now)
        .map_err(|e| format!("mtactl: {e}"))?;
    if !answer.ok {
        return Err(CommandError(format!(
            "mtactl tls-report send: mtad: {}",
            answer.error
        )));
    }
    for line in &answer.lines {
        outln!("{line}");
    }
    Ok(())
}

/// `mtactl reload`: checks the configuration here first (a broken one is reported and
/// never sent), then asks the daemon to reload and reports what it says.
pub fn reload(path: &Path) -> Result<(), CommandError> {
    let (config, _) = load_live(path)
        .inspect_err(|refusal| {
            // counted by the daemon as a refused SIGHUP is (if it runs, and the file says
            // where its control socket is)
            if let Some(socket) = Config::control_socket_of(path) {
                let _ = socket::reload_refused(&socket, refusal.count());
            }
        })
        .map_err(|refusal| refusal.render())?;
    let needs_restart = ask_reload(&config).map_err(|e| match e {
        ReloadError::Request(e) => format!("mtactl: {e}"),
        ReloadError::Refused(errors) => format!(
            "mtactl reload: mtad refused the new configuration; the running policy stays\n{errors}"
        ),
    })?;
    outln!("{}: reloaded", config.path.display());
    if !needs_restart.is_empty() {
        outln!(
            "changed, taking effect at the next restart: {}",
            needs_restart.join(", ")
        );
    }
    Ok(())
}

/// Why [`ask_reload`] did not reload.
#[derive(Debug)]
pub enum ReloadError {
    /// The daemon could not be asked (it is not running: `RequestError::NotRunning`).
    Request(socket::RequestError),
    /// The daemon refused the configuration (every error, rendered); its running
    /// policy stays.
    Refused(String),
}

/// Asks the mtad running with `config` (over its control socket) to reload, as
/// `mtactl reload` and `newaliases` do once they have checked the configuration
/// themselves. `Ok`: reloaded, with the settings that take effect only at the next
/// restart.
pub fn ask_reload(config: &Config) -> Result<Vec<String>, ReloadError> {
    let answer = socket::reload(&config.server.control_socket).map_err(ReloadError::Request)?;
    if answer.ok {
        Ok(answer.needs_restart)
    } else {
        Err(ReloadError::Refused(answer.errors))
    }
}

/// The one-line summary of a valid configuration.
pub fn summary(config: &Config) -> String {
    let rules: usize = config.stages.iter().map(Vec::len).sum();
    let stages = config.stages.iter().filter(|s| !s.is_empty()).count();
    format!(
        "{}: ok ({} listener{}, {} network set{}, {} domain set{}, {} rule{} in {} stage{})",
        config.path.display(),
        config.listeners.len(),
        plural(config.listeners.len()),
        config.networks.len(),
        plural(config.networks.len()),
        config.domains.len(),
        plural(config.domains.len()),
        rules,
        plural(rules),
        stages,
        plural(stages),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|errors| render(&errors))
}

/// `mtactl queue shape`: [`qshape::Shape::render`]'s table of the messages in `states`
/// (qshape's default, the active queue, when empty), by recipient or sender domain and
/// age now.
pub fn queue_shape(
    path: &Path,
    shape: &qshape::Shape,
    states: &[MessageState],
) -> Result<(), CommandError> {
    let config = load(path)?;
    let states = if states.is_empty() {
        &[MessageState::Active][..]
    } else {
        states
    };
    let entries = mailq::entries(&config)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| states.iter().any(|s| mailq::Queue::from(*s) == e.queue))
        .collect::<Vec<_>>();
    let now = Utc::now().timestamp();
    out!("{}", shape.render(&entries, now));
    Ok(())
}

/// `mtactl queue list`: one line per message (id, size, arrival, sender -> recipients,
/// `(held)`), then one indented line per recipient with its state, and its last reply
/// in parentheses. `json`: the [`QueuedMessage`]s as a JSON array (fields in
/// `docs/operations.md`).
/// `mtactl queue evacuate --to TRANSPORT`: asks the running mtad to hand its queue
/// over, then watches the spool until no message but held ones is left or `wait` has
/// passed. Exit status: 0 nothing left to evacuate, 1 messages left (listed with
/// their last error), 2 the request was refused (mtad not running, a bad transport).
pub fn queue_evacuate(path: &Path, to: &str, wait: std::time::Duration) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => {
            errln!("{e}");
            return 2;
        }
    };
    match socket::evacuate(&config.server.control_socket, to) {
        Ok(r) if r.is_ok() => {}
        Ok(r) => {
            errln!(
                "mtactl queue evacuate: mtad: {}",
                r.error.unwrap_or_default()
            );
            return 2;
        }
        Err(e) => {
            errln!("mtactl queue evacuate: {e}");
            return 2;
        }
    }
    let started = std::time::Instant::now();
    let spool = &config.server.spool;
    loop {
        let all = match crate::queue::scan(spool) {
            Ok(all) => all,
            Err(e) => {
                errln!("mtactl queue evacuate: the spool: {e}");
                return 2;
            }
        };
        let held = all.iter().filter(|m| m.envelope.held).count();
        let left: Vec<_> = all.into_iter().filter(|m| !m.envelope.held).collect();
        if left.is_empty() {
            outln!(
                "evacuated to {to}: the queue is empty{}",
                if held > 0 {
                    format!(" but for {held} held message(s), which stay")
                } else {
                    String::new()
                }
            );
            return 0;
        }
        if started.elapsed() >= wait {
            outln!("evacuating to {to}: {} message(s) left", left.len());
            for m in &left {
                let last = m
                    .rcpt_status
                    .iter()
                    .map(|s| s.detail.as_str())
                    .find(|d| !d.is_empty())
                    .unwrap_or("not attempted yet");
                outln!("  {} {}", m.id, crate::logsafe::esc(last));
            }
            return 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub fn queue_list(path: &Path, json: bool, states: &[MessageState]) -> Result<(), CommandError> {
    let config = load(path)?;
    let mut messages = queue::scan(&config.server.spool).map_err(|e| format!("mtactl: {e}"))?;
    messages.retain(|m| states.is_empty() || states.contains(&m.state()));
    let mut out = output::stdout();
    if json {
        let text = serde_json::to_string_pretty(&messages).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:<20} SENDER -> RECIPIENTS",
        "ID", "SIZE", "ARRIVAL (UTC)"
    );
    for m in &messages {
        let _ = writeln!(out, "{}", list_line(m));
        for (rcpt, status) in m.envelope.recipients.iter().zip(&m.rcpt_status) {
            let _ = writeln!(out, "    {rcpt}: {}", rcpt_state(status));
            if !status.detail.is_empty() {
                let _ = writeln!(out, "        ({})", status.detail);
            }
        }
    }
    let _ = writeln!(
        out,
        "-- {} message{}",
        messages.len(),
        plural(messages.len())
    );
    Ok(())
}

fn list_line(m: &QueuedMessage) -> String {
    let sender = if m.envelope.sender.is_empty() {
        "<>"
    } else {
        &m.envelope.sender
    };
    format!(
        "{:<16} {:>9} {:<20} {} -> {}{}",
        m.id,
        m.size,
        arrival(m.arrival_ms),
        sender,
        m.envelope.recipients.join(", "),
        if m.envelope.held { " (held)" } else { "" }
    )
}

/// `queued`, `deferred, 3 attempts, next 2024-01-12 10:15:00`, `delivered 2024-01-12
/// 10:00:02, 1 attempt`.
fn rcpt_state(status: &RcptStatus) -> String {
    let attempts = format!(
        "{} attempt{}",
        status.attempts,
        plural(status.attempts as usize)
    );
    match status.state {
        RcptState::Queued if status.attempts == 0 => "queued".to_owned(),
        RcptState::Queued => format!(
            "queued, {attempts}, next {}",
            arrival(status.next_attempt_ms)
        ),
        RcptState::Deferred => format!(
            "deferred, {attempts}, next {}",
            arrival(status.next_attempt_ms)
        ),
        RcptState::Delivered => format!("delivered {}, {attempts}", arrival(status.at_ms)),
        RcptState::Bounced => format!("bounced {}, {attempts}", arrival(status.at_ms)),
    }
}

/// A unix-ms time as UTC `YYYY-MM-DD HH:MM:SS`.
fn arrival(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `mtactl queue show ID`: the envelope and each recipient's state, then the message
/// as stored; `raw`: only the message; `json`: the [`QueuedMessage`] as JSON (as one
/// element of `queue list --format json`), without the message.
pub fn queue_show(path: &Path, id: &str, raw: bool, json: bool) -> Result<(), CommandError> {
    let config = load(path)?;
    let id: QueueId = id
        .parse()
        .map_err(|_| format!("mtactl: {id:?} is not a queue id"))?;
    let messages = queue::scan(&config.server.spool).map_err(|e| format!("mtactl: {e}"))?;
    let message = messages
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| format!("mtactl: no message {id} in the queue"))?;
    let mut out = output::stdout();
    if json {
        let text = serde_json::to_string_pretty(message).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    let body =
        queue::read_body(&config.server.spool, message).map_err(|e| format!("mtactl: {e}"))?;
    if !raw {
        let e = &message.envelope;
        let _ = writeln!(out, "id: {}", message.id);
        let _ = writeln!(out, "arrival: {} UTC", arrival(message.arrival_ms));
        let _ = writeln!(out, "size: {}", message.size);
        let _ = writeln!(out, "held: {}", if e.held { "yes" } else { "no" });
        let _ = writeln!(out, "sender: <{}>", e.sender);
        for (rcpt, status) in e.recipients.iter().zip(&message.rcpt_status) {
            let _ = writeln!(out, "recipient: <{rcpt}> {}", rcpt_state(status));
            if !status.detail.is_empty() {
                let _ = writeln!(out, "    ({})", status.detail);
            }
        }
        let client = e.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "client: {client} helo={} listener={}",
            e.helo, e.listener
        );
        if let Some(revision) = &e.revision {
            let _ = writeln!(out, "policy revision: {revision}");
        }
        let _ = writeln!(out);
    }
    let _ = out.write_all(&body);
    Ok(())
}

/// `mtactl queue flush|delete|hold|release [IDS...|ALL] [--state STATE]`: asks the
/// running daemon over its control socket, prints `ID: removed` (etc.) per message and
/// a count, and fails (exit 1) if an id was not queued, a flushed id is on hold, or the
/// daemon is not running. No ids, or `ALL`, means every message; `delete` needs one or
/// the other spelled out (`ALL`), like `postsuper -d ALL`. `states` (not empty) keeps
/// only the messages in those states, as `postsuper -d ALL deferred` does: they are
/// read from the spool here and sent as ids, so a message that changes state meanwhile
/// is acted on as it was seen. Many ids go in several requests.
pub fn queue_command(
    path: &Path,
    action: QueueAction,
    args: &[String],
    states: &[MessageState],
) -> Result<(), CommandError> {
    let name = action.name();
    let all = args.iter().any(|a| a == "ALL");
    if all && args.len() > 1 {
        return Err(CommandError(format!(
            "mtactl queue {name}: ALL cannot be combined with queue ids"
        )));
    }
    let mut ids = if all {
        Vec::new()
    } else {
        args.iter()
            .map(|a| a.parse::<QueueId>().map_err(|e| format!("mtactl: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    if action == QueueAction::Delete && !all && ids.is_empty() && states.is_empty() {
        return Err(
            "mtactl queue delete: give the queue ids to delete, or ALL to delete every message"
                .to_owned()
                .into(),
        );
    }
    let config = load(path)?;
    let (all, explicit) = if states.is_empty() {
        (all, !ids.is_empty())
    } else {
        let messages = queue::scan(&config.server.spool).map_err(|e| format!("mtactl: {e}"))?;
        let named: std::collections::HashSet<QueueId> = ids.iter().copied().collect();
        let chosen: Vec<QueueId> = selected(&messages, states)
            .map(|m| m.id)
            .filter(|id| named.is_empty() || named.contains(id))
            .collect();
        ids = chosen;
        if ids.is_empty() {
            outln!("{}: 0 messages", action_words(action).1);
            return Ok(());
        }
        (false, false)
    };
    let mut response = socket::Response::default();
    let requests: Vec<Request> = if all || ids.is_empty() {
        vec![Request {
            queue: action,
            ids: Vec::new(),
            all,
        }]
    } else {
        ids.chunks(IDS_PER_REQUEST)
            .map(|chunk| Request {
                queue: action,
                ids: chunk.to_vec(),
                all: false,
            })
            .collect()
    };
    for request in &requests {
        let part = socket::request(&config.server.control_socket, request)
            .map_err(|e| format!("mtactl: {e}"))?;
        response.done.extend(part.done);
        response.missing.extend(part.missing);
        response.held.extend(part.held);
        if part.error.is_some() {
            response.error = part.error;
            break;
        }
    }
    let (verb, summary) = action_words(action);
    let mut out = output::stdout();
    for id in &response.done {
        let _ = writeln!(out, "{id}: {verb}");
    }
    let _ = writeln!(
        out,
        "{summary}: {} message{}",
        response.done.len(),
        plural(response.done.len())
    );
    let mut problems = String::new();
    for id in &response.held {
        if explicit {
            problems.push_str(&format!(
                "mtactl: {id}: on hold, not flushed (mtactl queue release {id})\n"
            ));
        } else {
            let _ = writeln!(out, "{id}: on hold, not flushed");
        }
    }
    for id in &response.missing {
        problems.push_str(&format!("mtactl: {id}: no such message in the queue\n"));
    }
    if let Some(error) = &response.error {
        problems.push_str(&format!("mtactl: mtad: {error}\n"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CommandError(problems))
    }
}

/// Queue ids per control-socket request: about 400 KB of JSON, well under
/// [`socket::MAX_REQUEST_LINE`].
const IDS_PER_REQUEST: usize = 20_000;

/// What a queue action's lines say: per message, and in the count.
fn action_words(action: QueueAction) -> (&'static str, &'static str) {
    match action {
        QueueAction::Flush => ("delivery requested", "Flushed"),
        QueueAction::Delete => ("removed", "Deleted"),
        QueueAction::Hold => ("placed on hold", "Placed on hold"),
        QueueAction::Release => ("released from hold", "Released from hold"),
    }
}

/// The messages in one of `states`; every message when `states` is empty.
pub fn selected<'m>(
    messages: &'m [QueuedMessage],
    states: &'m [MessageState],
) -> impl Iterator<Item = &'m QueuedMessage> {
    messages
        .iter()
        .filter(move |m| states.is_empty() || states.contains(&m.state()))
}

/// The most queue ids `-` reads from standard input (80 MB of ids).
pub const MAX_STDIN_IDS: usize = 10_000_000;
/// The longest line `-` reads: an id with blanks around it, or a mailq line.
const MAX_ID_LINE: usize = 1024;

/// [`queue_command`] for `mtactl`, whose arguments may include `-`: the ids read from
/// `input` (standard input). When `-` brings no ids, nothing is done (no ids would
/// otherwise mean every message).
pub fn queue_command_reading(
    path: &Path,
    action: QueueAction,
    args: &[String],
    states: &[MessageState],
    input: &mut dyn BufRead,
) -> Result<(), CommandError> {
    let ids = ids_from_stdin(args, input)?;
    if ids.is_empty() && args.iter().any(|a| a == "-") {
        outln!("{}: 0 messages", action_words(action).1);
        return Ok(());
    }
    queue_command(path, action, &ids, states)
}

/// A queue command's arguments with `-` replaced by the ids read from `input`, one per
/// line (blank lines skipped, blanks around an id ignored), as `postsuper -d -` reads
/// them: `mtactl queue list --format postfix-json | jq -r ... | mtactl queue delete -`.
fn ids_from_stdin(args: &[String], input: &mut dyn BufRead) -> Result<Vec<String>, CommandError> {
    if args.iter().filter(|a| *a == "-").count() > 1 {
        return Err(CommandError(
            "mtactl: `-` (ids on standard input) may be given once".into(),
        ));
    }
    let mut out = Vec::new();
    for a in args {
        if a != "-" {
            out.push(a.clone());
            continue;
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut *input)
                .take(MAX_ID_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("mtactl: cannot read queue ids from standard input: {e}"))?;
            if n == 0 {
                break;
            }
            if line.len() > MAX_ID_LINE {
                return Err(CommandError(format!(
                    "mtactl: a line of standard input is longer than {MAX_ID_LINE} bytes: not a queue id"
                )));
            }
            let text = String::from_utf8_lossy(&line);
            let id = text.trim();
            if id.is_empty() {
                continue;
            }
            if out.len() >= MAX_STDIN_IDS {
                return Err(CommandError(format!(
                    "mtactl: more than {MAX_STDIN_IDS} queue ids on standard input"
                )));
            }
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

/// Prints what Postfix would have warned about while reading the tables (duplicate
/// keys in map files, duplicate aliases: the first is kept) to stderr.
fn print_table_warnings(config: &Config) {
    for w in table_warnings(config) {
        errln!("mtactl: warning: {w}");
    }
}

/// What Postfix would have warned about while reading the tables, the aliases and the
/// virtual(5) file: `table `NAME`, line N: ...`, `aliases file, line N: ...`.
pub fn table_warnings(config: &Config) -> Vec<String> {
    let named = config
        .tables
        .iter()
        .map(|(name, table)| (format!("table `{name}`"), table.as_ref()));
    // `aliases table="NAME"` is one of the named tables: its warnings are there
    let own_file =
        |t: &&Arc<crate::lookup::Table>| !config.tables.values().any(|named| Arc::ptr_eq(named, t));
    let files = [
        ("aliases file", config.aliases.as_ref()),
        ("virtual file", config.virtual_aliases.as_ref()),
    ]
    .into_iter()
    .filter_map(|(what, table)| Some((what.to_owned(), table.filter(own_file)?.as_ref())));
    named
        .chain(files)
        .flat_map(|(what, table)| {
            table
                .warnings()
                .iter()
                .map(move |w| format!("{what}, line {}: {}", w.line, w.message))
        })
        .collect()
}

/// `mtactl lookup TABLE KEY`, like `postmap -q KEY TABLE`: prints the value and
/// returns `Ok(true)`, or prints nothing and returns `Ok(false)` when there is none.
/// `TABLE` may also name a `networks` or `domains` set: `yes` is printed when `KEY` is
/// a member. When a name is used by several kinds, `table:NAME`, `networks:NAME` or
/// `domains:NAME` chooses. `Err` carries the rendered configuration errors, or an
/// unknown name with a suggestion (the binary exits 2).
pub fn lookup(path: &Path, name: &str, key: &str) -> Result<bool, CommandError> {
    let config = load(path)?;
    print_table_warnings(&config);
    let (only, bare) = match name.split_once(':') {
        Some((kind @ ("table" | "networks" | "domains"), rest)) => (Some(kind), rest),
        _ => (None, name),
    };
    let wants = |kind: &str| only.is_none_or(|k| k == kind);
    let mut found: Vec<&str> = Vec::new();
    if wants("table") && config.tables.contains_key(bare) {
        found.push("table");
    }
    if wants("networks") && config.networks.contains_key(bare) {
        found.push("networks");
    }
    if wants("domains") && config.domains.contains_key(bare) {
        found.push("domains");
    }
    let kind = match found.as_slice() {
        [kind] => *kind,
        [] => {
            let names = config
                .tables
                .keys()
                .chain(config.networks.keys())
                .chain(config.domains.keys());
            let hint = names
                .map(|n| (strsim::jaro_winkler(bare, n), n))
                .filter(|(score, _)| *score >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, n)| format!(": did you mean `{n}`?"))
                .unwrap_or_default();
            return Err(CommandError(format!(
                "mtactl: no table or set named `{bare}` in {}{hint}",
                config.path.display()
            )));
        }
        several => {
            let choices: Vec<String> = several.iter().map(|k| format!("`{k}:{bare}`")).collect();
            return Err(CommandError(format!(
                "mtactl: `{bare}` names a {}; write {}",
                several.join(" and a "),
                choices.join(" or ")
            )));
        }
    };
    let failed =
        |e: crate::lookup::LookupError| format!("mtactl: `{bare}`: temporary lookup failure: {e}");
    let answer = match kind {
        "table" => config.tables[bare]
            .lookup(key)
            .map_err(failed)?
            .map(|v| v.into_owned()),
        "networks" => key
            .parse::<std::net::IpAddr>()
            .ok()
            .filter(|ip| config.networks[bare].contains(*ip))
            .map(|_| "yes".to_owned()),
        _ => config.domains[bare]
            .contains(key)
            .map_err(failed)?
            .then(|| "yes".to_owned()),
    };
    match answer {
        Some(value) => {
            outln!("{value}");
            Ok(true)
        }
        None => Ok(false),
    }
}
