//! The configuration: one KDL (v2) file read into typed, validated settings.
//!
//! [`Config::load`] / [`Config::parse`] check everything the grammar can check before
//! anything runs: unknown nodes and properties, argument counts and types, duplicate
//! names, references to undefined sets, addresses, CIDRs, sizes, durations and reply
//! codes. Every error is collected (never only the first), with the byte span it
//! refers to, so [`render`] shows each one as `[mtad.kdl:3:1]` with the offending
//! text underlined and, for misspelt names, a "did you mean" hint. A [`Config`]
//! therefore only exists when it is entirely valid, and [`crate::policy`] compiles
//! it without further checks.
//!
//! The grammar is documented in `docs/configuration.md`. In short:
//!
//! ```kdl
//! server { hostname "mx.example.test"; spool "var/spool" }
//! listen "mx" address="127.0.0.1:2525"
//! networks "trusted" "127.0.0.0/8"
//! domains "relay" "example.test" ".example.test"
//! stage "rcpt" {
//!     accept client="trusted"
//!     accept rcpt-domain="relay"
//!     reject 554 "5.7.1" "Relay access denied"
//! }
//! ```
//!
//! Layout: `parse` walks the KDL document (one file per part of the grammar), `units` reads sizes and durations,
//! `error` holds the diagnostics, and [`Reply`] and [`Stage`] live here (re-exported
//! by policy) so that the dependency stays one-way, config ← policy.

pub mod checks;
pub mod cluster;
pub mod decision_log;
mod error;
pub mod greylisting;
mod parse;
mod reply;
mod revision;
pub mod route;
pub mod services;
pub mod settings;
mod stage;
pub mod tls_policy;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::lookup::{DomainSet, NetworkSet, Table};

pub use crate::net::tls::CertKey;
pub use error::{ConfigError, ConfigErrors, render};
pub use reply::{MAX_REPLY_TEXT, Reply, ReplyCodeError, sanitize_text};
pub use revision::{Sources, Stamp};
pub use stage::Stage;
pub use units::{DurationError, SizeError, parse_duration, parse_size};

/// A complete, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from (absolute for [`Config::load`]; the display name
    /// for [`Config::parse`]). A reload reads it again.
    pub path: PathBuf,
    /// The `server` block.
    pub server: Server,
    /// The `listen` nodes, in file order; at least one.
    pub listeners: Vec<Listener>,
    /// The `limits` block, with defaults for everything not written.
    pub limits: Limits,
    /// The `rate-limits` block: per client address and time window.
    pub rate_limits: RateLimits,
    /// The `reload` block: watching the files, the tests a policy must pass.
    pub reload: ReloadSettings,
    /// The `log` block: where the log goes and how it is written (read at start only).
    pub log: LogSettings,
    /// The `decision-log` block: where every policy decision is written (read at
    /// start only).
    pub decision_log: decision_log::DecisionLog,
    /// `networks` sets by name.
    pub networks: BTreeMap<String, NetworkSet>,
    /// `domains` sets by name.
    pub domains: BTreeMap<String, DomainSet>,
    /// `table` nodes by name: inline maps and Postfix-format map, regexp and CIDR
    /// files, read and checked with the configuration.
    pub tables: BTreeMap<String, Arc<Table>>,
    /// The rules of `stage "rcpt"`, in order. Empty means "reject every
    /// recipient" (the pipeline's default), never an open relay.
    /// The ordered rules of each stage, indexed by [`Stage::index`].
    pub stages: [Vec<RuleConfig>; Stage::COUNT],
    /// `aliases file=...`: aliases(5), for recipients in local domains.
    pub aliases: Option<Arc<crate::lookup::Table>>,
    /// `virtual file=...`: virtual(5), for every recipient.
    pub virtual_aliases: Option<Arc<crate::lookup::Table>>,
    /// `virtual-mailboxes domains= table= transport=`: Postfix's virtual mailbox
    /// domains, which addresses exist in them, and where their mail goes.
    pub virtual_mailboxes: Option<VirtualMailboxes>,
    /// The `delivery` block, with defaults for everything not written.
    pub delivery: Delivery,
    /// `credentials NAME file=...`: Postfix sasl_passwd files (`[host]:port user:password`)
    /// by name, for the `auth=` of route rules.
    pub credentials: BTreeMap<String, Arc<crate::lookup::Table>>,
    /// `content-filter NAME "TRANSPORT"`: after-queue content filters by name.
    pub content_filters: BTreeMap<String, ContentFilter>,
    /// `policy-service NAME address=...`: policy servers rules ask
    /// (`check-policy-service NAME`), by name.
    pub policy_services: BTreeMap<String, services::PolicyService>,
    /// `dnsbl NAME "zone=filter*weight"...`: DNS block/allowlists, by name.
    pub dnsbls: BTreeMap<String, services::Dnsbl>,
    /// `milter NAME "inet:host:port"`: milters by name (see [`crate::milter`]).
    pub milters: BTreeMap<String, Arc<crate::milter::Milter>>,
    /// `users NAME file=...` or `users NAME sql=... query=...`: what SMTP AUTH
    /// verifies credentials against, by name. A file is read and checked with the
    /// configuration; a database is only connected to on first use.
    pub users: BTreeMap<String, crate::auth::Users>,
    /// `dkim DOMAIN selector= key=`: who signs outgoing mail, in file order, keys
    /// read and checked (see [`crate::mailauth::dkim`]).
    pub dkim: Vec<crate::mailauth::dkim::Signer>,
    /// `dkim-internal "SET" "CIDR" ...`: the clients whose mail originates with us and
    /// is DKIM-signed (OpenDKIM's InternalHosts), besides authenticated clients and
    /// mtad's own mail. `None`: loopback only.
    pub dkim_internal: Option<Vec<ClientRef>>,
    /// The `authentication` block: incoming mail is checked (SPF, DKIM, DMARC, ARC,
    /// iprev) only when it is present.
    pub authentication: Option<Authentication>,
    /// The `local-submission` block: programs on this host submit mail through the
    /// `sendmail` command into its maildrop. `None`: local submission is off.
    pub local_submission: Option<LocalSubmission>,
    /// The `cluster` block: the Redis server this node shares its rate limits and
    /// connection leases through. `None`: everything stays in this process.
    pub cluster: Option<cluster::Cluster>,
    /// The `greylisting` block: postgrey's options for `greylist` rules. `None`: its
    /// defaults (postgrey's).
    pub greylisting: Option<greylisting::Greylisting>,
    /// Every file read to build this configuration, with the digest of its bytes: the
    /// policy's revision is computed from these and the hooks ([`Sources`]).
    pub sources: Sources,
}

/// The `authentication` block (see [`crate::mailauth`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    /// The name our Authentication-Results headers carry; `None`: the server hostname.
    pub authserv_id: Option<String>,
    pub checks: crate::mailauth::Checks,
    /// Clients whose mail is not checked (besides authenticated ones).
    pub skip_clients: Vec<ClientRef>,
    /// Listeners whose mail is not checked.
    pub skip_listeners: Vec<String>,
    /// How long the checks of one stage may take before what is left is temperror.
    pub timeout: std::time::Duration,
    pub origin: Origin,
}

/// An after-queue content filter (Postfix's FILTER_README model): an SMTP or LMTP next
/// hop that takes the whole message and injects it again, on a `filtered` listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentFilter {
    pub name: String,
    pub transport: route::Transport,
    /// `on-failure="bypass"`: when the filter is down or answers 4xx, deliver the
    /// message unfiltered instead of keeping it queued (`retry`, the default).
    pub bypass: bool,
}

impl ContentFilter {
    /// Whether a client at `ip` may be this filter injecting mail back: a loopback
    /// address, or the filter's own address when its next hop is written as one.
    pub fn may_send_from(&self, ip: std::net::IpAddr) -> bool {
        let host = match &self.transport {
            route::Transport::Smtp(
                route::NextHop::Host { host, .. } | route::NextHop::Mx { domain: host, .. },
            )
            | route::Transport::Lmtp(route::LmtpTarget::Inet { host, .. }) => Some(host),
            _ => None,
        };
        ip.is_loopback() || host.and_then(|h| h.parse::<std::net::IpAddr>().ok()) == Some(ip)
    }
}

impl Config {
    /// The rules of one stage, in order.
    pub fn rules(&self, stage: Stage) -> &[RuleConfig] {
        &self.stages[stage.index()]
    }
}

/// The `server` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Our name, in the banner, the EHLO reply and Received headers. Required.
    pub hostname: String,
    /// The spool directory. Required; a relative path is resolved against the
    /// configuration file's directory, so the daemon's working directory never
    /// matters.
    pub spool: PathBuf,
    /// Text after the hostname in the `220` greeting. Default `ESMTP`.
    pub banner: String,
    /// The domain unqualified addresses get (`root` → `root@origin`), like Postfix's
    /// `myorigin`. Default: the hostname.
    pub origin: String,
    /// How long a shutdown waits for sessions to finish. Default 30s.
    pub shutdown_timeout: Duration,
    /// The unix socket `mtactl queue flush|delete|hold|release` talk to
    /// (`control-socket`). Whoever can connect to it administers the queue, so it is
    /// created mode 0600. Default `control.sock` in the spool directory; a relative path
    /// is resolved like `spool`.
    pub control_socket: PathBuf,
    /// `metrics "IP:PORT"`: where the Prometheus endpoint (`GET /metrics`, plain HTTP)
    /// listens. Off when not written.
    pub metrics: Option<SocketAddr>,
    /// `content-filter "NAME"`: the filter for mail from every listener that is not
    /// `filtered` and names none of its own (Postfix's `content_filter`).
    pub content_filter: Option<String>,
    /// `tls-certificate` and `tls-key`: the server's certificate for every listener
    /// that names none of its own. With one, STARTTLS is offered by default.
    pub tls: Option<CertKey>,
    /// `user "mtad"`: the account mtad runs as. Started as root, mtad binds its
    /// listeners, then takes this user's uid, gid and groups for good before it opens
    /// the spool (which that user must own). Started as this user (systemd's `User=`),
    /// nothing changes; as anyone else, mtad refuses to start. `None`: mtad runs as
    /// whoever started it, and refuses root unless `mtad --allow-root` says so
    /// (`control::privileges`).
    pub user: Option<String>,
}

impl Server {
    /// A `server` block that writes only the required `hostname` and `spool`: every
    /// other setting at its default (those that depend on them follow them).
    pub fn new(hostname: String, spool: PathBuf) -> Server {
        Server {
            origin: hostname.to_ascii_lowercase(),
            hostname,
            control_socket: spool.join("control.sock"),
            spool,
            banner: "ESMTP".to_owned(),
            shutdown_timeout: Duration::from_secs(30),
            content_filter: None,
            tls: None,
            metrics: None,
            user: None,
        }
    }
}

impl Listener {
    /// A listener named `name` on `address` with nothing on: no TLS, no AUTH, no
    /// proxy, no content filter (the built-in `sendmail` listener, tests).
    pub fn plain(name: &str, address: SocketAddr) -> Listener {
        Listener {
            name: name.to_owned(),
            address,
            content_filter: None,
            filtered: false,
            proxy: None,
            tls: ListenerTls::Off,
            certificate: None,
            auth: AuthMode::Off,
            users: None,
            auth_plaintext: false,
            bare_newline: BareNewline::Reject,
            milters: Vec::new(),
            milter_skip: None,
            open_relay: false,
        }
    }
}

/// How a listener uses TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenerTls {
    /// Plaintext only: STARTTLS is not offered (no certificate, or `starttls="off"`).
    #[default]
    Off,
    /// STARTTLS is offered; clients may go on in plaintext (`starttls="offered"`, the
    /// default when a certificate is configured).
    Offered,
    /// Nothing but EHLO, HELO, STARTTLS, NOOP, RSET and QUIT before STARTTLS
    /// (`starttls="required"`, Postfix's `smtpd_tls_security_level = encrypt`).
    Required,
    /// The handshake comes first, before the banner (`implicit-tls=#true`, port 465,
    /// Postfix's `smtpd_tls_wrappermode`).
    Implicit,
}

impl ListenerTls {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerTls::Off => "off",
            ListenerTls::Offered => "offered",
            ListenerTls::Required => "required",
            ListenerTls::Implicit => "implicit",
        }
    }
}

/// Whether a listener offers SMTP AUTH.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// AUTH is not offered (the default).
    #[default]
    Off,
    /// Clients may authenticate (`auth="offered"`).
    Offered,
    /// MAIL is refused until the client has authenticated (`auth="required"`).
    Required,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Offered => "offered",
            AuthMode::Required => "required",
        }
    }
}

/// One `listen` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The listener's name, unique; shown in logs and available to policy later.
    pub name: String,
    /// Where to listen, unique across listeners.
    pub address: SocketAddr,
    /// `content-filter="NAME"`: mail received here goes through this filter first.
    pub content_filter: Option<String>,
    /// `filtered=#true`: mail received here comes back from a content filter and is
    /// never filtered again (the re-injection listener).
    pub filtered: bool,
    /// `proxy-protocol=#true proxies="SET"`: every connection starts with a PROXY
    /// protocol header (v1 or v2) from an address in this networks set, and the
    /// session runs as the client it names.
    pub proxy: Option<String>,
    /// STARTTLS offered, required, or implicit TLS.
    pub tls: ListenerTls,
    /// The certificate this listener presents: its own `certificate=`/`key=`, else the
    /// server's. Always set when `tls` is not `Off`.
    pub certificate: Option<CertKey>,
    /// `auth="offered|required"`: SMTP AUTH (PLAIN, LOGIN).
    pub auth: AuthMode,
    /// `users="NAME"`: the users table AUTH checks passwords against (the only one
    /// defined, when not named).
    pub users: Option<String>,
    /// `auth-plaintext=#true`: AUTH is offered before TLS too. Off by default: passwords
    /// never cross the network in the clear (Postfix's `smtpd_tls_auth_only = yes`).
    pub auth_plaintext: bool,
    /// `bare-newline="reject|normalize"` and `bare-newline-clients="NETWORKS"`: what a
    /// line ending in LF alone gets from this listener.
    pub bare_newline: BareNewline,
    /// `milters="NAME ..."`: the milters this listener's sessions talk to, in order
    /// (Postfix's `smtpd_milters`).
    pub milters: Vec<String>,
    /// `milter-skip-clients="NETWORKS"`: clients whose sessions no milter sees
    /// (Postfix's `smtpd_milter_maps` with `DISABLE`).
    pub milter_skip: Option<String>,
    /// `open-relay="intended"`: clients of this listener may relay without being
    /// trusted or authenticated, and the operator says so (a listener only an
    /// internal network reaches); the open-relay analysis reports it instead of
    /// refusing the configuration.
    pub open_relay: bool,
}

/// What a listener does with a command or message line that ends in LF alone (and
/// with a bare CR, which is refused either way).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BareNewline {
    /// Refused: 500 for a command, 550 for the message (the default).
    #[default]
    Reject,
    /// Read as if it ended in CRLF, and stored so (Postfix 3.9's
    /// `smtpd_forbid_bare_newline = normalize`), for the clients in this networks set
    /// (`bare-newline-clients=`, like Postfix's `smtpd_forbid_bare_newline_exclusions`),
    /// or every client when `None`; the others are refused as with `Reject`. DATA still
    /// ends only at a real CRLF.CRLF.
    Normalize { clients: Option<String> },
}

/// How often `reload { watch #true }` looks at the files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// `virtual-mailboxes domains="SET" table="TABLE" [transport="..."]`: Postfix's
/// `virtual_mailbox_domains`, `virtual_mailbox_maps` and `virtual_transport`.
#[derive(Clone, Debug)]
pub struct VirtualMailboxes {
    /// The domain set whose recipients must exist (checked at RCPT).
    pub domains: String,
    /// Address → Maildir path (relative to `local-base`): the mailboxes that exist.
    pub table: Arc<crate::lookup::Table>,
    /// Where their mail goes; `None`: the Maildir the table gives (`virtual:PATH`).
    pub transport: Option<String>,
    pub origin: Origin,
}

/// The `local-submission` block: where the `sendmail` command drops messages for the
/// daemon to pick up, and who may submit which senders (see `docs/local-submission.md`).
#[derive(Clone, Debug)]
pub struct LocalSubmission {
    /// The maildrop directory: created by the daemon, mode 1730, owned by its user
    /// and `group`, never world-writable.
    pub maildrop: PathBuf,
    /// The group the `sendmail` program is setgid to (Postfix's `postdrop` group):
    /// the only one, besides the daemon's user, that may create files in the maildrop.
    /// `None`: only the daemon's user (and root) can submit.
    pub group: Option<String>,
    /// Postfix's `authorized_submit_users`: login names (or `uid:N`) that may submit.
    /// `None`: everyone (Postfix's default, `static:anyone`).
    pub authorized_users: Option<Vec<String>>,
    /// Postfix's `local_login_sender_maps`: a table from a login name (or `uid:N`)
    /// to the envelope senders it may claim (`*` any, `<>` the null sender, `@domain`,
    /// addresses; separated by spaces or commas). `None`: any sender (Postfix's
    /// default, `static:*`).
    pub sender_logins: Option<Arc<Table>>,
    /// `milters "NAME ..."`: the milters local submissions go through, in order
    /// (Postfix's `non_smtpd_milters`).
    pub milters: Vec<String>,
}

/// The `reload` block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSettings {
    /// `watch`: how often to look whether a file the configuration was built from
    /// changed, and reload if so. Off by default.
    pub watch: Option<Duration>,
    /// `require-tests`: test-policy suites every case of which must pass before a
    /// policy goes live (at start and at every reload).
    pub require_tests: Vec<PathBuf>,
    /// `replay`: the decisions of the last hours must not change beyond what it allows.
    pub replay: Option<decision_log::ReplayGate>,
}

/// The `log` block: where mtad's log goes (stderr, syslog, the systemd journal) and
/// how it is written. The command line's `--log-output`, `--log-format` and
/// `--syslog-name` win over it; it is read when mtad starts (a reload does not
/// change where the log goes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// `output`: stderr unless set.
    pub output: LogOutput,
    /// `format`: how stderr lines are written (syslog and the journal always get
    /// Postfix's line text). `text` unless set.
    pub format: LogFormat,
    /// `syslog-name`: the program name before `/smtpd` (Postfix's `syslog_name`),
    /// in every output but `text`. `mtad` unless set.
    pub syslog_name: String,
    /// `syslog-facility`: `mail` unless set (Postfix's `syslog_facility`); also the
    /// journal's `SYSLOG_FACILITY`.
    pub facility: Facility,
    /// `syslog-socket`: where syslog lines are sent, `/dev/log` unless set.
    pub syslog_socket: PathBuf,
    /// `journal-socket`: journald's native socket, `/run/systemd/journal/socket`
    /// unless set.
    pub journal_socket: PathBuf,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            output: LogOutput::Auto,
            format: LogFormat::Text,
            syslog_name: "mtad".to_owned(),
            facility: Facility::MAIL,
            syslog_socket: PathBuf::from("/dev/log"),
            journal_socket: PathBuf::from("/run/systemd/journal/socket"),
        }
    }
}

/// A `syslog-name`: what Postfix's `syslog_name` may hold and a log line can carry
/// unescaped, 1 to 64 letters, digits, `.`, `_`, `-` and `/` (`postfix/submission`).
pub fn valid_syslog_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// Where the log goes (`log { output }`, `mtad --log-output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    /// RFC 3164 datagrams to the syslog socket, as Postfix's `syslog(3)` sends them.
    Syslog,
    /// systemd-journald's native protocol, a datagram of fields per event.
    Journal,
    /// The default: the journal when stderr is connected to it (a systemd service:
    /// `$JOURNAL_STREAM` names stderr) and no `format` was asked for, else stderr.
    Auto,
}

/// How stderr lines are written (`log { format }`, `mtad --log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// mtad's own: level, message and every field.
    Text,
    /// Postfix's mail log lines: `Mmm dd HH:MM:SS host NAME/smtpd[pid]: ...`.
    Postfix,
    /// One JSON object per event, with every field (for log pipelines).
    Json,
}

impl LogOutput {
    pub const WORDS: &[&str] = &["stderr", "syslog", "journal", "auto"];

    pub fn from_word(word: &str) -> Option<LogOutput> {
        match word {
            "stderr" => Some(LogOutput::Stderr),
            "syslog" => Some(LogOutput::Syslog),
            "journal" => Some(LogOutput::Journal),
            "auto" => Some(LogOutput::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::WORDS[self as usize]
    }

    /// Whether `format` applies: stderr's, chosen or possibly chosen by `auto`.
    pub fn may_be_stderr(self) -> bool {
        matches!(self, LogOutput::Stderr | LogOutput::Auto)
    }
}

impl LogFormat {
    pub const WORDS: &[&str] = &["text", "postfix", "json"];

    pub fn from_word(word: &str) -> Option<LogFormat> {
        match word {
            "text" => Some(LogFormat::Text),
            "postfix" => Some(LogFormat::Postfix),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::WORDS[self as usize]
    }
}

/// A syslog facility (RFC 5424's numbers), by its `syslog.conf` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(pub u8);

impl Facility {
    pub const MAIL: Facility = Facility(2);
    /// The names a user process may log under, with their numbers.
    pub const NAMES: &[(&str, u8)] = &[
        ("user", 1),
        ("mail", 2),
        ("daemon", 3),
        ("auth", 4),
        ("syslog", 5),
        ("lpr", 6),
        ("news", 7),
        ("uucp", 8),
        ("cron", 9),
        ("authpriv", 10),
        ("ftp", 11),
        ("local0", 16),
        ("local1", 17),
        ("local2", 18),
        ("local3", 19),
        ("local4", 20),
        ("local5", 21),
        ("local6", 22),
        ("local7", 23),
    ];

    pub fn from_name(name: &str) -> Option<Facility> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, code)| Facility(code))
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|&&(_, code)| code == self.0)
            .map_or("user", |(n, _)| n)
    }
}

/// The `rate-limits` block: what one client address may do per window (Postfix's
/// anvil `smtpd_client_*_rate_limit`), none by default but failed AUTH attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// New connections: (count, window).
    pub connections: Option<(u32, Duration)>,
    /// Messages (accepted MAIL FROM commands).
    pub messages: Option<(u32, Duration)>,
    /// Accepted recipients.
    pub recipients: Option<(u32, Duration)>,
    /// AUTH commands (each attempt, successful or not).
    pub auth: Option<(u32, Duration)>,
    /// Failed AUTH attempts: once over, AUTH is refused until the window ends. On by
    /// default (10 per 15 minutes), also without a `rate-limits` block.
    pub auth_failures: Option<(u32, Duration)>,
    /// Failed AUTH attempts for one user name, from any client (`auth-failures-per-user`):
    /// once over, AUTH as that user is refused until the window ends. Off by default
    /// (anyone who knows a user name could lock that user out).
    pub auth_failures_per_user: Option<(u32, Duration)>,
    /// IPv6 clients are counted by this prefix (`ipv6-prefix`, default 64): one
    /// customer's /64 is one client, for these limits and for `connections-per-ip`.
    pub ipv6_prefix: u8,
    /// `networks` sets whose clients are never limited.
    pub exempt: Vec<String>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            connections: None,
            messages: None,
            recipients: None,
            auth: None,
            auth_failures: Some((10, Duration::from_secs(15 * 60))),
            auth_failures_per_user: None,
            ipv6_prefix: 64,
            exempt: Vec::new(),
        }
    }
}

/// The `limits` block. Defaults follow Postfix's where Postfix has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes (`message-size`, default 10M = 10 MiB).
    pub message_size: usize,
    /// Most recipients per transaction (`recipients`, default 1000).
    pub recipients: usize,
    /// Longest command line, CRLF included (`line-length`, default 2048).
    pub line_length: usize,
    /// Longest text line of message data, CRLF included (`text-line-length`, default
    /// 1000, RFC 5321 §4.5.3.1.6): a message with a longer line is refused whole.
    pub text_line_length: usize,
    /// Largest header section of a message, in bytes (`header-size`, default 100K,
    /// the value of Postfix's `header_size_limit`): a message over it is refused whole.
    pub header_size: usize,
    /// NOOP, RSET, VRFY, ETRN, HELO and EHLO a session may send (`junk-commands`,
    /// default 100, Postfix's `smtpd_junk_command_limit`) before each one more counts
    /// as an error; a message queued starts the count again.
    pub junk_commands: u32,
    /// Memory for message data being received, for the whole process (`data-memory`,
    /// default 256M or 4 × `message-size`, whichever is larger): past it, DATA and
    /// BDAT get `451 4.3.1`.
    pub data_memory: usize,
    /// How long a session may wait for a command (`idle-timeout`, default 5m).
    pub idle_timeout: Duration,
    /// How long a session may wait between chunks of DATA (`data-timeout`, default 10m).
    pub data_timeout: Duration,
    /// Errors after which a session is disconnected (`error-limit`, default 20).
    pub error_limit: u32,
    /// Concurrent sessions in total (`connections`, default 1000).
    pub connections: usize,
    /// Concurrent sessions per client IP (`connections-per-ip`, default 50).
    pub connections_per_ip: usize,
    /// Free bytes the spool file system must keep: MAIL is refused with a 452 while
    /// free space is below this or 1.5 × `message_size`, whichever is larger
    /// (`min-free-space`, default 0 = only that margin).
    pub min_free_space: u64,
    /// A message with more `Received:` headers than this (ours included) is refused
    /// with `554 5.4.6 Too many hops`: a mail loop (`hop-count`, default 50, Postfix's
    /// `hopcount_limit`).
    pub hop_count: usize,
    /// How long a TLS handshake (after STARTTLS, or at the start of an implicit-TLS
    /// session) may take (`tls-handshake-timeout`, default 30s).
    pub tls_handshake_timeout: Duration,
}

impl Limits {
    /// `data-memory` when not written: 256M, or room for four messages of the largest
    /// size, whichever is larger.
    pub fn default_data_memory(message_size: usize) -> usize {
        Limits::default()
            .data_memory
            .max(message_size.saturating_mul(4))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_size: 10 << 20,
            recipients: 1000,
            line_length: 2048,
            text_line_length: 1000,
            header_size: 100 << 10,
            junk_commands: 100,
            data_memory: 256 << 20,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            error_limit: 20,
            connections: 1000,
            connections_per_ip: 50,
            min_free_space: 0,
            hop_count: 50,
            tls_handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// The `delivery` block: the queue manager and the SMTP client. Defaults are Postfix's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// First retry delay after a temporary failure (`backoff-min`, default 5m, like
    /// `minimal_backoff_time`); it doubles with each attempt...
    pub backoff_min: Duration,
    /// ...up to this (`backoff-max`, default 4000s ≈ 67m, `maximal_backoff_time`).
    pub backoff_max: Duration,
    /// A recipient still undeliverable this long after arrival bounces (`lifetime`,
    /// default 5d, `maximal_queue_lifetime`).
    pub lifetime: Duration,
    /// Send the sender a delay warning once a message has waited this long
    /// (`delay-warning`, default off, `delay_warning_time`).
    pub delay_warning: Option<Duration>,
    /// Accept and queue, but deliver only on `mtactl queue flush` (`queue-only`,
    /// default #false; Exim's `queue_only`).
    pub queue_only: bool,
    /// Parallel connections to one destination (`concurrency`, default 20,
    /// `default_destination_concurrency_limit`).
    pub concurrency: usize,
    /// Parallel outbound connections in all (`connections`, default 100,
    /// `default_process_limit`).
    pub connections: usize,
    /// Most recipients in one transaction (`recipients`, default 50,
    /// `smtp_destination_recipient_limit`).
    pub recipients: usize,
    /// Tried after a route's own fallbacks when its hosts are unreachable or answer
    /// 4xx (`fallback-relay`, like `smtp_fallback_relay`).
    pub fallback: Vec<route::Transport>,
    /// The TLS policy of routes that do not set one (`tls`, default opportunistic).
    pub tls: route::TlsPolicy,
    /// Extra trust anchors (PEM) besides the system's, for `tls="verify"`.
    pub tls_ca_file: Option<PathBuf>,
    /// Per-destination TLS levels (`tls-policy-map "FILE"`, Postfix's
    /// `smtp_tls_policy_maps`), read when the configuration is: its path and entries.
    pub tls_policy_map: Option<(PathBuf, std::sync::Arc<tls_policy::TlsPolicyMap>)>,
    /// DNSSEC trust anchors for DANE (`dnssec-trust-anchors "FILE"`, DNSKEY records);
    /// `None`: the root zone's.
    pub dnssec_trust_anchors: Option<PathBuf>,
    /// Honour recipient domains' MTA-STS policies (`mta-sts`, default #false).
    pub mta_sts: bool,
    /// The HTTPS port of `mta-sts.DOMAIN` (`mta-sts-port`, default 443; tests set
    /// another).
    pub mta_sts_port: u16,
    /// Record the outcome of each TLS policy per recipient domain and send RFC 8460
    /// reports to the domains that ask for them (`tls-rpt`, default #false;
    /// docs/outbound-tls.md).
    pub tls_rpt: bool,
    /// The reports' From and envelope sender (`tls-rpt-from`, default
    /// `postmaster@HOSTNAME`); its domain is the report's submitter.
    pub tls_rpt_from: Option<String>,
    /// The report's `organization-name` (`tls-rpt-organization`, default the hostname).
    pub tls_rpt_organization: Option<String>,
    /// The report's `contact-info` (`tls-rpt-contact`, default `tls-rpt-from`).
    pub tls_rpt_contact: Option<String>,
    /// How long a reporting period lasts (`tls-rpt-interval`, default 24h).
    pub tls_rpt_interval: Duration,
    /// Policy domains counted per period (`tls-rpt-max-domains`, default 10000).
    pub tls_rpt_max_domains: usize,
    /// `failure-details` rows per policy and period (`tls-rpt-max-failures`, default 100).
    pub tls_rpt_max_failures: usize,
    /// Send AUTH credentials over unencrypted connections (`auth-plaintext`, default
    /// #false: Postfix's `noplaintext`).
    pub auth_plaintext: bool,
    /// The port of SMTP next hops that name none (`smtp-port`, default 25).
    pub smtp_port: u16,
    /// The DNS server to ask instead of /etc/resolv.conf's (`dns-server "IP:port"`).
    pub dns_server: Option<SocketAddr>,
    /// Where the `local` transport writes Maildirs (`local-base`, default `mail` next to
    /// the spool): `{local-base}/{user}/{tmp,new,cur}`.
    pub local_base: PathBuf,
    /// Who exists for the `local` transport (`local-recipients`, Postfix's
    /// `local_recipient_maps`); `None` (`local-recipients "any"`): every name. Default:
    /// the system's users and the aliases, like Postfix's
    /// `proxy:unix:passwd.byname $alias_maps`.
    pub local_recipients: Option<Vec<LocalRecipients>>,
    /// For the TCP connection (`connect-timeout`, default 30s).
    pub connect_timeout: Duration,
    /// Per command, greeting and EHLO included (`command-timeout`, default 5m).
    pub command_timeout: Duration,
    /// For the body and its reply (`data-timeout`, default 10m).
    pub data_timeout: Duration,
}

/// One source of `delivery { local-recipients }`: where a local recipient must be
/// found to exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRecipients {
    /// `"passwd"`: a user of this system (getpwnam(3), Postfix's `unix:passwd.byname`).
    Passwd,
    /// `"aliases"`: a key of the `aliases` file.
    Aliases,
    /// The name of a `table`: `user@domain`, then `user` (each also without its
    /// `+extension`).
    Table(String),
}

impl Delivery {
    /// The defaults, with the Maildir base next to `spool`.
    pub fn defaults_for(spool: &Path) -> Delivery {
        Delivery {
            backoff_min: Duration::from_secs(300),
            backoff_max: Duration::from_secs(4000),
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: None,
            queue_only: false,
            concurrency: 20,
            connections: 100,
            recipients: 50,
            fallback: Vec::new(),
            tls: route::TlsPolicy::default(),
            tls_ca_file: None,
            tls_policy_map: None,
            dnssec_trust_anchors: None,
            mta_sts: false,
            mta_sts_port: 443,
            tls_rpt: false,
            tls_rpt_from: None,
            tls_rpt_organization: None,
            tls_rpt_contact: None,
            tls_rpt_interval: Duration::from_secs(86_400),
            tls_rpt_max_domains: 10_000,
            tls_rpt_max_failures: 100,
            auth_plaintext: false,
            dns_server: None,
            smtp_port: 25,
            local_base: spool
                .parent()
                .map_or_else(|| PathBuf::from("mail"), |p| p.join("mail")),
            local_recipients: Some(vec![LocalRecipients::Passwd, LocalRecipients::Aliases]),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// One rule of a stage, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// What the rule decides when it matches.
    pub action: RuleAction,
    /// All must match (AND); none means the rule always matches.
    pub conditions: Vec<ConditionConfig>,
    /// `mode="warn"`: the rule is evaluated and what it would have done is logged, but
    /// it decides nothing (the next rule runs).
    pub warn: bool,
    /// `open-relay="intended"` (rcpt stage): this rule may accept recipients in
    /// domains that are not ours for clients that are neither trusted nor
    /// authenticated, and the operator says so; the open-relay analysis reports it
    /// instead of refusing the configuration.
    pub open_relay: bool,
    /// Where the rule is written, reported with every decision it makes.
    pub origin: Origin,
    /// Route stage: `auth=`, `tls=`, `fallback=`, `dkim=` on `transport`, `transport-table`,
    /// `relay` and `hook` rules.
    pub route: route::RouteOptions,
}

/// A rule's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// `accept`: ends the stage, the command is accepted.
    Accept,
    /// `reject CODE "X.Y.Z" "text"`: codes validated (4xx or 5xx), text printable ASCII.
    Reject(Reply),
    /// `defer [CODE "X.Y.Z" "text"]`: a temporary refusal (4xx only); default
    /// `451 4.7.1 Try again later`.
    Defer(Reply),
    /// `discard`: accept, then drop the message (the client sees success).
    Discard,
    /// `hold`: accept and keep the message in the queue, not delivered until released.
    Hold,
    /// `hook "file.rhai" [function="name"]`: a Rhai function decides.
    Hook(HookConfig),
    /// Route stage: `transport "PATTERN" "TRANSPORT"` — recipients matching the
    /// pattern (`user@domain`, `domain`, `.domain`, `*`) go there.
    Transport {
        pattern: route::RoutePattern,
        transport: route::Transport,
    },
    /// Route stage: `transport-table "NAME"` — a Postfix transport(5) table, looked up
    /// in Postfix's order.
    TransportTable(String),
    /// Route stage: `relay "TRANSPORT"` — everything goes there (Postfix's relayhost).
    Relay(route::Transport),
    /// Data stage: `header-checks` / `body-checks`, Postfix header_checks(5) and
    /// body_checks with a regexp table.
    Checks(checks::ChecksConfig),
    /// Data stage: `filter "NAME"` — the message goes through this content filter
    /// (instead of the listener's or the server's); decides nothing, the next rule runs.
    Filter(String),
    /// `check-policy-service "NAME"`: ask this policy server (Postfix's
    /// `check_policy_service`) and apply its answer as an access(5) action.
    PolicyService(String),
    /// `reject-dnsbl "NAME"`: refuse when this DNS list's score reaches its threshold
    /// (Postfix's `reject_rbl_client`), with the listing's TXT in the reply.
    RejectDnsbl(String),
    /// Rcpt stage: `greylist` — postgrey's greylisting of the (client network,
    /// sender, recipient) triplet, built in (`greylisting` block).
    Greylist,
}

/// Where a hook's code is; compiled by [`crate::policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// Absolute (resolved against the config file's directory).
    pub path: PathBuf,
    /// As written in the configuration, for messages.
    pub display: String,
    /// Defaults to the stage's name (`rcpt`, `data`, ...).
    pub function: Option<String>,
}

/// One condition of a rule (a property on the rule node); `not-` in front of its name
/// negates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionConfig {
    pub negate: bool,
    pub test: Condition,
}

/// What a condition tests. Each is available from a certain stage on (see
/// [`Condition::available_at`]); using one earlier is a configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `client="..."`: the client's IP is in a network set or literal network.
    Client(ClientRef),
    /// `listener="name"`: the session came in on this listener.
    Listener(String),
    /// `helo="name"`: the HELO/EHLO name, case-insensitively.
    Helo(String),
    /// `helo-matches="regex"`.
    HeloMatches(Pattern),
    /// `tls=#true|#false`: the session is encrypted.
    Tls(bool),
    /// `authenticated=#true|#false`: the client authenticated (SMTP AUTH).
    Authenticated(bool),
    /// `auth-user="name"`: the authenticated user, exactly.
    AuthUser(String),
    /// `sender="a@b"`: the envelope sender, case-insensitively (`""` is the null sender).
    Sender(String),
    /// `sender-domain="domains-set"`.
    SenderDomain(String),
    /// `sender-matches="regex"` over the whole address.
    SenderMatches(Pattern),
    /// `sender-login="TABLE"`: the client authenticated as a user the table lists as an
    /// owner of the sender address (Postfix's `smtpd_sender_login_maps`).
    SenderLogin(String),
    /// `rcpt="a@b"`: the recipient, case-insensitively.
    Rcpt(String),
    /// `rcpt-domain="domains-set"`: the recipient's routing domain is in a domain set.
    RcptDomain(String),
    /// `rcpt-matches="regex"` over the whole address.
    RcptMatches(Pattern),
    /// `size-over="10M"`: at MAIL, the SIZE= the client declared; at DATA, the message.
    SizeOver(u64),
    /// `header-matches="regex"`: any header line, unfolded, as `Name: value`.
    HeaderMatches(Pattern),
    /// `spf=`, `spf-helo=`, `dkim=`, `dmarc=`, `arc=`, `iprev=`: that check's result
    /// is one of these (see [`crate::mailauth`]).
    Auth(AuthCheck, Vec<crate::mailauth::AuthResult>),
    /// `dmarc-policy="reject"`: the DMARC policy that applies to the message is one of
    /// these.
    DmarcPolicy(Vec<crate::mailauth::DmarcPolicy>),
    /// `dnsbl="NAME"`: this DNS list's score reaches its threshold.
    Dnsbl(String),
}

/// Which check an [`Condition::Auth`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthCheck {
    Spf,
    SpfHelo,
    Dkim,
    Dmarc,
    Arc,
    Iprev,
}

impl AuthCheck {
    pub const ALL: [AuthCheck; 6] = [
        AuthCheck::Spf,
        AuthCheck::SpfHelo,
        AuthCheck::Dkim,
        AuthCheck::Dmarc,
        AuthCheck::Arc,
        AuthCheck::Iprev,
    ];

    /// The condition's name.
    pub fn name(self) -> &'static str {
        match self {
            AuthCheck::Spf => "spf",
            AuthCheck::SpfHelo => "spf-helo",
            AuthCheck::Dkim => "dkim",
            AuthCheck::Dmarc => "dmarc",
            AuthCheck::Arc => "arc",
            AuthCheck::Iprev => "iprev",
        }
    }

    /// This check's result in `results`, to change it.
    pub fn of_mut(
        self,
        results: &mut crate::mailauth::AuthResults,
    ) -> &mut crate::mailauth::AuthResult {
        match self {
            AuthCheck::Spf => &mut results.spf,
            AuthCheck::SpfHelo => &mut results.spf_helo,
            AuthCheck::Dkim => &mut results.dkim,
            AuthCheck::Dmarc => &mut results.dmarc,
            AuthCheck::Arc => &mut results.arc,
            AuthCheck::Iprev => &mut results.iprev,
        }
    }

    /// This check's result in `results`.
    pub fn of(self, results: &crate::mailauth::AuthResults) -> crate::mailauth::AuthResult {
        match self {
            AuthCheck::Spf => results.spf,
            AuthCheck::SpfHelo => results.spf_helo,
            AuthCheck::Dkim => results.dkim,
            AuthCheck::Dmarc => results.dmarc,
            AuthCheck::Arc => results.arc,
            AuthCheck::Iprev => results.iprev,
        }
    }
}

impl Condition {
    /// The property name, without `not-`.
    pub fn name(&self) -> &'static str {
        match self {
            Condition::Client(_) => "client",
            Condition::Listener(_) => "listener",
            Condition::Helo(_) => "helo",
            Condition::HeloMatches(_) => "helo-matches",
            Condition::Tls(_) => "tls",
            Condition::Authenticated(_) => "authenticated",
            Condition::AuthUser(_) => "auth-user",
            Condition::Sender(_) => "sender",
            Condition::SenderDomain(_) => "sender-domain",
            Condition::SenderMatches(_) => "sender-matches",
            Condition::SenderLogin(_) => "sender-login",
            Condition::Rcpt(_) => "rcpt",
            Condition::RcptDomain(_) => "rcpt-domain",
            Condition::RcptMatches(_) => "rcpt-matches",
            Condition::SizeOver(_) => "size-over",
            Condition::HeaderMatches(_) => "header-matches",
            Condition::Auth(check, _) => check.name(),
            Condition::DmarcPolicy(_) => "dmarc-policy",
            Condition::Dnsbl(_) => "dnsbl",
        }
    }

    /// Whether what this condition tests exists at `stage`: the client from connect
    /// on, the HELO name from helo on, the sender from mail on, one recipient only in
    /// rcpt and route (data has them all), the size at mail and data, headers in data.
    pub fn available_at(&self, stage: Stage) -> bool {
        use Stage::*;
        match self {
            Condition::Client(_) | Condition::Listener(_) => true,
            Condition::Helo(_) | Condition::HeloMatches(_) | Condition::Tls(_) => stage != Connect,
            Condition::Authenticated(_)
            | Condition::AuthUser(_)
            | Condition::Sender(_)
            | Condition::SenderDomain(_)
            | Condition::SenderMatches(_)
            | Condition::SenderLogin(_) => matches!(stage, Mail | Rcpt | Data | Route),
            Condition::Rcpt(_) | Condition::RcptDomain(_) | Condition::RcptMatches(_) => {
                matches!(stage, Rcpt | Route)
            }
            Condition::SizeOver(_) => matches!(stage, Mail | Data),
            Condition::HeaderMatches(_) => stage == Data,
            // SPF is checked at MAIL, everything else at the end of DATA; nothing is
            // kept for the route stage
            Condition::Auth(AuthCheck::Spf | AuthCheck::SpfHelo, _) => {
                matches!(stage, Mail | Rcpt | Data)
            }
            Condition::Auth(..) | Condition::DmarcPolicy(_) => stage == Data,
            // the client is known everywhere; a list of sender domains or HELO names
            // is refused by the parser where they are not known yet
            Condition::Dnsbl(_) => stage != Route,
        }
    }
}

/// A compiled regular expression that compares by its source (so configs can be
/// compared in tests). Case-insensitive unless the pattern says `(?-i)`.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for Pattern {}

/// What a `client=` condition refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRef {
    /// A `networks` set, by name (a defined name always wins over a literal).
    Set(String),
    /// A literal CIDR or address (`/32` or `/128`).
    Net(IpNet),
}

/// A place in a configuration file, 1-based; displayed as `file:line:col`.
/// Columns count characters, not bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file, as named for display.
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl Config {
    /// Reads and validates the file at `path`. Errors are shown with `path` as
    /// written; relative paths inside resolve against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: name.clone(),
            errors: vec![ConfigError::without_source(format!(
                "cannot read {name}: {e}"
            ))],
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        parse::parse(&name, &absolute, &text)
    }

    /// The control socket the file at `path` names (`server { control-socket }`, or
    /// `control.sock` in its `spool`), read as far as the file can be read even when it
    /// is not a valid configuration: how `mtactl reload` tells the running daemon about
    /// a configuration it refused. `None` when the file is not KDL or its `server`
    /// block is in another file.
    pub fn control_socket_of(path: &Path) -> Option<PathBuf> {
        let text = std::fs::read_to_string(path).ok()?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        parse::control_socket_of(&absolute, &text)
    }

    /// Validates `text` as if read from a file called `name`: `name` appears in
    /// errors and rule origins, and a relative spool resolves against its parent.
    pub fn parse(name: &str, text: &str) -> Result<Config, ConfigErrors> {
        parse::parse(name, Path::new(name), text)
    }
}
