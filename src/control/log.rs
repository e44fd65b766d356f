//! Where mtad's log goes, and how each event is written there: the `log` block
//! ([`crate::config::LogSettings`]) with `mtad --log-output`, `--log-format` and
//! `--syslog-name` over it ([`Overrides`]).
//!
//! | output | what an event becomes |
//! | --- | --- |
//! | stderr, `text` | mtad's own line: time, level, message, every field |
//! | stderr, `postfix` | a Postfix mail log line, `Mmm dd HH:MM:SS host NAME/smtpd[pid]: text` |
//! | stderr, `json` | one JSON object: time, level, program, message, and every field |
//! | syslog | an RFC 3164 datagram to `/dev/log`, as Postfix's `syslog(3)` sends it: `<PRI>Mmm dd HH:MM:SS NAME/smtpd[pid]: text` |
//! | journal | journald's native protocol: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=NAME/smtpd`, `SYSLOG_PID`, `SYSLOG_FACILITY`, and each field |
//!
//! The text is the same in every output but `text` ([`Record::text`]): a mail log line
//! ([`crate::maillog`]) as it is, any other event's message with its fields after it,
//! prefixed `warning: ` or `error: ` as Postfix prefixes its own. The severity is the
//! event's level ([`severity`]): errors are `err`, warnings `warning`, the rest `info`.
//!
//! The journal is written natively rather than as `<N>`-prefixed stderr lines so that
//! each line keeps Postfix's program name as its `SYSLOG_IDENTIFIER` (`journalctl -t
//! mtad/smtpd`, and `journalctl -o short` reads like a mail log for pflogsumm), and the
//! fields stay fields. A datagram that cannot be sent (the log daemon is gone, its
//! buffer stays full for a second) is written to stderr instead: nothing is dropped
//! silently.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Facility, LogFormat, LogOutput, LogSettings, valid_syslog_name};
use crate::logsafe::OneLine;
use crate::maillog::TARGET;

/// Most bytes of one value in a datagram (syslog daemons cut lines near 8 KiB).
const MAX_DATAGRAM_VALUE: usize = 8192;

/// How long a datagram may wait for room in the log daemon's buffer.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// What the command line says about the log; each one given wins over the `log` block.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub output: Option<LogOutput>,
    /// `--log-format` alone means stderr in that format (what it always meant).
    pub format: Option<LogFormat>,
    pub syslog_name: Option<String>,
}

/// Why the log cannot start as asked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-format is the format of stderr; {0} lines are always Postfix's")]
    FormatWithOutput(&'static str),
    #[error("cannot log to {what} at {}: {reason}", path.display())]
    Socket {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the log is already set up")]
    AlreadySet,
}

/// A word that is not one of an option's values (`--log-output sylog`).
#[derive(Debug, thiserror::Error)]
#[error("`{word}` is not one of: {}", expected.join(", "))]
pub struct UnknownWord {
    word: String,
    expected: &'static [&'static str],
}

/// `--log-output`'s value.
pub fn parse_output(word: &str) -> Result<LogOutput, UnknownWord> {
    LogOutput::from_word(word).ok_or_else(|| UnknownWord {
        word: word.to_owned(),
        expected: LogOutput::WORDS,
    })
}

/// `--log-format`'s value.
pub fn parse_format(word: &str) -> Result<LogFormat, UnknownWord> {
    LogFormat::from_word(word).ok_or_else(|| UnknownWord {
        word: word.to_owned(),
        expected: LogFormat::WORDS,
    })
}

/// `--syslog-name`'s value (the `log { syslog-name }` rule).
pub fn parse_syslog_name(name: &str) -> Result<String, UnknownWord> {
    if valid_syslog_name(name) {
        Ok(name.to_owned())
    } else {
        Err(UnknownWord {
            word: name.to_owned(),
            expected: &["1 to 64 letters, digits, `.`, `_`, `-` and `/`"],
        })
    }
}

impl Overrides {
    /// `settings` with what the command line says over it.
    pub fn apply(&self, settings: &LogSettings) -> Result<LogSettings, LogError> {
        let mut out = settings.clone();
        if let Some(name) = &self.syslog_name {
            out.syslog_name = name.clone();
        }
        match (self.output, self.format) {
            (Some(LogOutput::Stderr) | None, Some(format)) => {
                out.output = LogOutput::Stderr;
                out.format = format;
            }
            (Some(LogOutput::Auto), Some(format)) => {
                out.output = LogOutput::Auto;
                out.format = format;
            }
            (Some(output), Some(_)) => return Err(LogError::FormatWithOutput(output.as_str())),
            (Some(output), None) => out.output = output,
            (None, None) => {}
        }
        Ok(out)
    }

    /// What logs while the configuration is read, before the `log` block is known: stderr,
    /// in the format the command line asks for (so that a configuration error is
    /// readable wherever the log is going). Dropping the guard ends it.
    pub fn early(&self) -> tracing::subscriber::DefaultGuard {
        let mut settings = self.apply(&LogSettings::default()).unwrap_or_default();
        settings.output = LogOutput::Stderr;
        // tracing's own set_default: tracing-subscriber's would take the `log` crate's
        // logger, which `init` takes for good
        let subscriber = tracing_subscriber::registry().with(filter());
        match settings.format {
            LogFormat::Text => tracing::subscriber::set_default(subscriber.with(text_layer())),
            _ => tracing::subscriber::set_default(subscriber.with(Output::stderr(&settings))),
        }
    }
}

/// `MTAD_LOG` (tracing's filter syntax), `info` unless set.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("MTAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

fn text_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        // one event, one line, whatever a value holds (see crate::logsafe)
        .with_writer(|| OneLine(std::io::stderr()))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
}

/// Sends the process's log where `settings` say, from now on.
pub fn init(settings: &LogSettings) -> Result<(), LogError> {
    let settings = &resolved(settings, stderr_is_journal());
    let subscriber = tracing_subscriber::registry().with(filter());
    let done = match (settings.output, settings.format) {
        (LogOutput::Stderr, LogFormat::Text) => subscriber.with(text_layer()).try_init(),
        _ => subscriber.with(Output::open(settings)?).try_init(),
    };
    done.map_err(|_| LogError::AlreadySet)
}

/// `settings` with `output "auto"` made stderr or the journal: the journal when
/// stderr is connected to it (`journal`) and the format is the default `text`, so a
/// systemd service logs with priorities (`journalctl -p warning`) and Postfix's
/// program names without being told; a `format` asked for means stderr lines in it.
pub fn resolved(settings: &LogSettings, journal: bool) -> LogSettings {
    let mut out = settings.clone();
    if out.output == LogOutput::Auto {
        out.output = if journal && out.format == LogFormat::Text {
            LogOutput::Journal
        } else {
            LogOutput::Stderr
        };
    }
    out
}

/// Whether stderr is a stream to the journal: systemd sets `JOURNAL_STREAM` to its
/// `DEVICE:INODE` (systemd.exec(5)); a stderr redirected elsewhere by the service
/// has another.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    names_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` (both decimal) is `dev`:`ino`.
fn names_stream(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// The syslog severity of an event at `level` (RFC 5424's numbers, as journald's
/// `PRIORITY`): Postfix's `msg_error` is `err`, `msg_warn` `warning`, `msg_info` `info`.
pub fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// One of the outputs that write [`Record`]s (all but stderr's `text`).
pub struct Output {
    name: String,
    hostname: String,
    pid: u32,
    facility: Facility,
    sink: Sink,
}

enum Sink {
    Stderr(LogFormat),
    Syslog(Datagrams),
    Journal(Datagrams),
}

/// An unconnected datagram socket and where its datagrams go: each is sent to the
/// path, so a log daemon that restarts is found again.
struct Datagrams {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Datagrams {
    fn open(what: &'static str, path: &Path) -> Result<Datagrams, LogError> {
        let fail = |reason: String| LogError::Socket {
            what,
            path: path.to_path_buf(),
            reason,
        };
        let is_socket = std::os::unix::fs::FileTypeExt::is_socket(
            &std::fs::metadata(path)
                .map_err(|e| fail(e.to_string()))?
                .file_type(),
        );
        if !is_socket {
            return Err(fail("not a socket".to_owned()));
        }
        let socket = UnixDatagram::unbound().map_err(|e| fail(e.to_string()))?;
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Datagrams {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Sends `datagram`; if it cannot go, `fallback` goes to stderr.
    fn send(&self, datagram: &[u8], fallback: impl FnOnce() -> String) {
        if self.socket.send_to(datagram, &self.path).is_err() {
            let _ = OneLine(std::io::stderr()).write_all(fallback().as_bytes());
        }
    }
}

impl Output {
    fn base(settings: &LogSettings, sink: Sink) -> Output {
        Output {
            name: settings.syslog_name.clone(),
            hostname: hostname(),
            pid: std::process::id(),
            facility: settings.facility,
            sink,
        }
    }

    /// stderr in `settings.format`.
    pub fn stderr(settings: &LogSettings) -> Output {
        Output::base(settings, Sink::Stderr(settings.format))
    }

    /// The output `settings` name; its socket must be there. `auto` is stderr here:
    /// [`init`] decides it first ([`resolved`]).
    pub fn open(settings: &LogSettings) -> Result<Output, LogError> {
        let sink = match settings.output {
            LogOutput::Stderr | LogOutput::Auto => Sink::Stderr(settings.format),
            LogOutput::Syslog => Sink::Syslog(Datagrams::open("syslog", &settings.syslog_socket)?),
            LogOutput::Journal => {
                Sink::Journal(Datagrams::open("the journal", &settings.journal_socket)?)
            }
        };
        Ok(Output::base(settings, sink))
    }

    /// `Mmm dd HH:MM:SS host NAME/agent[pid]: text`, a line of Postfix's mail log.
    fn postfix_line(&self, record: &Record) -> String {
        format!(
            "{} {} {}/{}[{}]: {}\n",
            chrono::Local::now().format("%b %e %H:%M:%S"),
            self.hostname,
            self.name,
            record.agent,
            self.pid,
            record.text()
        )
    }

    /// `<PRI>Mmm dd HH:MM:SS NAME/agent[pid]: text`, what glibc's `syslog(3)` sends
    /// (the syslog daemon adds the host).
    fn syslog_datagram(&self, record: &Record) -> String {
        let mut text = record.text();
        cut(&mut text, MAX_DATAGRAM_VALUE);
        format!(
            "<{}>{} {}/{}[{}]: {}",
            u16::from(self.facility.0) * 8 + u16::from(severity(&record.level)),
            chrono::Local::now().format("%b %e %H:%M:%S"),
            self.name,
            record.agent,
            self.pid,
            text
        )
    }

    /// One JSON object, on one line.
    fn json_line(&self, record: &Record) -> String {
        let fields: serde_json::Map<String, serde_json::Value> = record
            .fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.json()))
            .collect();
        let object = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": record.level.as_str().to_ascii_lowercase(),
            "host": self.hostname,
            "program": format!("{}/{}", self.name, record.agent),
            "pid": self.pid,
            "target": record.target,
            "message": record.message,
            "fields": fields,
        });
        format!("{object}\n")
    }

    /// journald's native datagram: `KEY=value` lines, or `KEY`, a newline, the
    /// length as 64-bit little-endian and the bytes, for a value with a newline.
    fn journal_datagram(&self, record: &Record) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut field = |key: &str, value: &str| {
            let mut value = value.to_owned();
            cut(&mut value, MAX_DATAGRAM_VALUE);
            out.extend_from_slice(key.as_bytes());
            if value.contains('\n') {
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            } else {
                out.push(b'=');
            }
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        };
        field("MESSAGE", &record.text());
        field("PRIORITY", &severity(&record.level).to_string());
        field(
            "SYSLOG_IDENTIFIER",
            &format!("{}/{}", self.name, record.agent),
        );
        field("SYSLOG_PID", &self.pid.to_string());
        field("SYSLOG_FACILITY", &self.facility.0.to_string());
        field("MTAD_TARGET", record.target);
        for (name, value) in &record.fields {
            field(&journal_key(name), &value.to_string());
        }
        out
    }
}

/// A field's journal name: `MTAD_` and the name in upper case, anything but letters
/// and digits as `_` (journald accepts `[A-Z0-9_]`, not starting with `_`).
fn journal_key(name: &str) -> String {
    let mut key = String::from("MTAD_");
    key.extend(name.chars().take(58).map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    key
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Output {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let record = Record::of(event);
        match &self.sink {
            Sink::Stderr(format) => {
                let line = match format {
                    LogFormat::Json => self.json_line(&record),
                    _ => self.postfix_line(&record),
                };
                // one event, one line, whatever a value holds
                let _ = OneLine(std::io::stderr()).write_all(line.as_bytes());
            }
            Sink::Syslog(socket) => socket.send(self.syslog_datagram(&record).as_bytes(), || {
                self.postfix_line(&record)
            }),
            Sink::Journal(socket) => socket.send(&self.journal_datagram(&record), || {
                self.postfix_line(&record)
            }),
        }
    }
}

/// An event, read once for every output.
pub struct Record {
    level: Level,
    target: &'static str,
    /// The Postfix program: a mail log line's own, else the one that stands for the
    /// part of mtad that logged it ([`agent_of`]).
    agent: String,
    message: String,
    /// Every field but `message` and a mail log line's `agent`, in the event's order.
    fields: Vec<(&'static str, Value)>,
}

/// A field's value, typed as it was recorded (JSON keeps numbers numbers).
enum Value {
    Text(String),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Bool(bool),
}

impl Value {
    fn json(&self) -> serde_json::Value {
        match self {
            Value::Text(s) => s.as_str().into(),
            Value::Signed(n) => (*n).into(),
            Value::Unsigned(n) => (*n).into(),
            Value::Float(n) => (*n).into(),
            Value::Bool(b) => (*b).into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Signed(n) => write!(f, "{n}"),
            Value::Unsigned(n) => write!(f, "{n}"),
            Value::Float(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Record {
    pub fn of(event: &tracing::Event<'_>) -> Record {
        let meta = event.metadata();
        let mut record = Record {
            level: *meta.level(),
            target: meta.target(),
            agent: String::new(),
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut record);
        if record.agent.is_empty() || meta.target() != TARGET {
            record.agent = agent_of(meta.target()).to_owned();
        }
        record
    }

    /// The line's text after `NAME/agent[pid]: `: the message, `warning: ` or
    /// `error: ` before it unless it is a mail log line (those say so themselves), the
    /// fields after it as ` key=value`.
    pub fn text(&self) -> String {
        let prefix = match self.level {
            Level::ERROR => "error: ",
            Level::WARN if self.target != TARGET => "warning: ",
            _ => "",
        };
        let mut text = format!("{prefix}{}", self.message);
        for (name, value) in &self.fields {
            let _ = write!(text, " {name}={value}");
        }
        text
    }

    fn push(&mut self, field: &tracing::field::Field, value: Value) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value}");
            }
            "agent" if self.target == TARGET => self.agent = value.to_string(),
            name => self.fields.push((name, value)),
        }
    }
}

impl tracing::field::Visit for Record {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.push(field, Value::Text(value.to_owned()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.push(field, Value::Signed(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.push(field, Value::Unsigned(value));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.push(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Text(format!("{value:?}")));
    }
}

/// The Postfix program that stands for the part of mtad an event comes from.
fn agent_of(target: &str) -> &'static str {
    if target.starts_with("mtad::smtp") {
        "smtpd"
    } else if target.starts_with("mtad::delivery") {
        "qmgr"
    } else if target.starts_with("mtad::policy") || target.starts_with("mtad::mailauth") {
        "cleanup"
    } else {
        "master"
    }
}

#[cfg(test)]
mod tests;
