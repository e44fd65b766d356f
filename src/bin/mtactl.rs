//! `mtactl`: the operator's command line. Each subcommand is a function in
//! [`mtad::control`]; this file only parses arguments.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mtad::control;
use mtad::control::output;
use mtad::control::socket::QueueAction;

#[derive(Parser)]
#[command(
    name = "mtactl",
    version = mtad::control::VERSION,
    about = "Operate mtad: check configuration, inspect and manage the queue, ask how it is"
)]
struct Args {
    /// The configuration file. Default: the file $MTAD_CONFIG names, else
    /// /etc/mtad/mtad.kdl.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration: a one-line summary and the policy revision, or every
    /// error with file:line:col.
    Check {
        /// Also ask every SQL database the configuration uses (tables and users
        /// tables) one query each: exit 1 if one does not answer.
        #[arg(long)]
        connect: bool,
        /// Warnings are errors: exit 1 if there is any (a table line Postfix would
        /// warn about, a hook that may relay, trust given to a network wider than a
        /// /8, an analysis that could not be completed). For CI.
        #[arg(long)]
        strict: bool,
    },
    /// Print the settings (the server, limits, rate-limits, reload and delivery blocks)
    /// as mtad reads them, like `postconf`: every value, defaults made explicit.
    Config {
        /// Settings to print, as BLOCK.KEY (`limits.message-size`): `NAME = VALUE`.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// The defaults instead of the values in force (`postconf -d`).
        #[arg(long, short, conflicts_with_all = ["changed", "full"])]
        defaults: bool,
        /// Only the settings whose value differs from the default (`postconf -n`).
        #[arg(long, short = 'n', conflicts_with = "full")]
        changed: bool,
        /// With NAMEs: only the values, one a line (`postconf -h`).
        #[arg(long, short = 'H', requires = "names")]
        value_only: bool,
        /// The whole configuration as one KDL file that `mtactl check` accepts: the
        /// settings explicit, then every other node of the main file as written.
        #[arg(long, conflicts_with = "names")]
        full: bool,
    },
    /// Reload the running mtad's policy: the configuration is checked here first, then
    /// compiled anew by mtad and swapped in. Exit 1 with every error when it is not
    /// valid; the running policy stays.
    Reload,
    /// Ask the running mtad how it is: uptime, policy revision, listeners and their
    /// open sessions, messages in the queue by state (active, deferred, hold).
    Status {
        /// `json`: the same as one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Look KEY up in a table, like `postmap -q`: prints the value (exit 0) or nothing
    /// (exit 1). For a networks or domains set, prints `yes` when KEY is a member.
    /// Exit 2: the configuration is invalid or TABLE is not defined.
    Lookup {
        /// A table, networks or domains name (`table:NAME`, `networks:NAME`,
        /// `domains:NAME` when kinds share a name).
        table: String,
        /// What to look up: an address, a domain, an IP address (as `postmap -q`).
        key: String,
    },
    /// Dry-run the policy: one envelope from options, or suites of test files.
    /// Exit 0: all accepted / all cases passed; 1: something refused / a case failed;
    /// 2: the configuration or a test file is invalid.
    TestPolicy(TestPolicyArgs),
    /// Evaluate the decisions of a decision log again with the policy of --config, the
    /// answers they got from outside (SQL, DNS, DNS lists, policy services, rate
    /// counters) given back from the log: prints what changes, grouped by (old rule ->
    /// new rule, old verdict -> new verdict), with examples. Exit 0: nothing changed
    /// beyond --allow; 1: something did, a decision is unknown (the log lacks an answer
    /// the new policy needs), or the policy is an open relay; 2: the configuration or a
    /// log cannot be read.
    Replay(ReplayArgs),
    /// Inspect the queue (list, show: read the spool directly, safe while mtad runs) and
    /// act on it (flush, delete, hold, release: through the running mtad's control socket).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Check every aliases file the configuration names (errors with file:line:col,
    /// exit 78) and make the running mtad reload so the aliases take effect, like
    /// `newaliases`. Silent on success, also when mtad is not running.
    Newaliases,
    /// The outbound TLS policy a destination gets, from live DNS: its configured level
    /// (route, tls-policy-map, delivery tls) and, for each MX host, what DNSSEC and DANE
    /// make of it (the decision delivery makes). Exit 1 when DNS fails.
    TlsProbe {
        /// A recipient domain (MX delivery) or `[host]:port`.
        destination: String,
        /// As a route's `tls=` would set it (none, opportunistic, required, verify,
        /// secure, dane, dane-only).
        #[arg(long, value_name = "LEVEL")]
        tls: Option<String>,
        /// Also connect to each host: EHLO and STARTTLS under the policy (no MAIL, no
        /// AUTH), and say how the certificate check went.
        #[arg(long)]
        connect: bool,
    },
    /// TLS reports (RFC 8460; `delivery { tls-rpt #true }`).
    TlsReport {
        #[command(subcommand)]
        command: TlsReportCommand,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Translate another mail server's configuration into an mtad configuration.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// The nodes of a cluster (`cluster { redis ... }`), from their heartbeats in Redis.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Read a Postfix configuration directory (main.cf, master.cf and the tables they
    /// name; nothing of Postfix's is changed) and write into OUT: mtad.kdl, the tables
    /// it names, tests/imported.kdl (cases that pin what Postfix does) and
    /// import-report.txt/.json (every parameter approximated, ignored or not
    /// translated, and why). The result is checked as `mtactl check` does, its suite
    /// included. Exit 0: written and checked; 1: an error (nothing usable).
    Postfix {
        /// The Postfix configuration directory, e.g. /etc/postfix.
        dir: PathBuf,
        /// Where to write (made if missing; refused if not empty, unless --force).
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
        /// Write into a directory that is not empty (files of the same names are replaced).
        #[arg(long)]
        force: bool,
        /// Postfix's default myhostname (the host's name), when main.cf does not set it.
        /// Default: this host's name.
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// The spool directory the configuration names.
        #[arg(long, value_name = "DIR", default_value = "/var/spool/mtad")]
        spool: String,
        /// The report on stdout: `json` for the same as one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// List the nodes (name, state, shared policy revision, revision, queue, version,
    /// addresses) and flag a node whose heartbeat stopped or whose policy revision
    /// differs from the majority's. Exit 0: none flagged; 1: a node is flagged; 2: no
    /// cluster configured, or Redis does not answer.
    Status {
        /// `json`: the same as one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum TlsReportCommand {
    /// Ask the running mtad to queue the reports of the periods that are over (one line
    /// per domain says what became of its report); with --now, the open period is
    /// closed first, whatever its age.
    Send {
        /// Close the open reporting period first, whatever its age (its reports go
        /// out now).
        #[arg(long)]
        now: bool,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new private key to DIR/DOMAIN.SELECTOR.key (PEM, mode 0600), then print
    /// the TXT record to publish at SELECTOR._domainkey.DOMAIN and the `dkim` line for
    /// the configuration.
    Keygen {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// The selector (`s=`): the key is published at SELECTOR._domainkey.DOMAIN.
        #[arg(long)]
        selector: String,
        /// The key type.
        #[arg(long, value_enum, default_value_t = DkimAlgorithm::Rsa)]
        algorithm: DkimAlgorithm,
        /// RSA key size.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where the key file goes.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages: id, size, arrival time, sender, recipients (held or not),
    /// then each recipient's state, attempts, next attempt and last reply.
    List {
        /// `postfix`: Postfix's `mailq` / `postqueue -p` listing, with postqueue's exit
        /// status; `postfix-json`: one JSON object per message with `postqueue -j`'s
        /// field names.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
        #[command(flatten)]
        states: States,
    },
    /// Show one message: its envelope and recipients' state, then the message as stored.
    Show {
        /// The queue id, as printed by `queue list` and in the 250 reply.
        id: String,
        /// Print only the message, byte for byte.
        #[arg(long, conflicts_with = "format")]
        raw: bool,
        /// `json`: the envelope and recipients' state as JSON, without the message.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Pending recipients by domain and age, like Postfix's `qshape`: a column of
    /// totals, then buckets of minutes since arrival (5 10 20 ... 1280 1280+). Counts
    /// the active queue unless --state says otherwise (`qshape deferred` is
    /// `--state deferred`).
    Shape {
        #[command(flatten)]
        states: States,
        /// Count each message's sender domain instead (qshape -s).
        #[arg(long)]
        senders: bool,
        /// The first bucket's width in minutes (qshape -t).
        #[arg(long, value_name = "MINUTES", default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(1..=525_600))]
        bucket_minutes: u64,
        /// How many age buckets (qshape -b); the last holds everything older.
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=100))]
        buckets: u64,
        /// Buckets of equal width instead of doubling ones (qshape -l).
        #[arg(long)]
        linear: bool,
    },
    /// Attempt delivery now, ignoring the retry backoff (held messages are skipped).
    /// No ids: every message.
    Flush(QueueIds),
    /// Remove messages from the queue, without a bounce. Give the ids, `-`, ALL, or
    /// --state.
    Delete(DeleteIds),
    /// Keep messages in the queue without delivering them. No ids: every message.
    Hold(QueueIds),
    /// Undo hold and attempt delivery now. No ids: every held message.
    Release(QueueIds),
    /// Hand this node's queue over to another node before maintenance: from now until
    /// mtad stops, every message is sent, as queued, to TRANSPORT instead of its route,
    /// and removed here only once the peer answered 250 for each of its recipients (a
    /// refusal there keeps it here). Waits until the queue is empty or --wait has
    /// passed: exit 0 when nothing is left (held messages stay and are listed), 1
    /// otherwise.
    Evacuate {
        /// The other node: `smtp:[HOST]:PORT`.
        #[arg(long, value_name = "TRANSPORT")]
        to: String,
        /// How long to wait for the queue to empty (`0s`: do not wait).
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        wait: String,
    },
}

#[derive(clap::Args)]
struct QueueIds {
    /// Queue ids (16 hex digits), ALL, or `-`: the ids on standard input, one per line
    /// (as `postsuper -d -`).
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    states: States,
}

#[derive(clap::Args)]
struct DeleteIds {
    /// Queue ids (16 hex digits), ALL for every message, or `-`: the ids on standard
    /// input, one per line (as `postsuper -d -`).
    #[arg(value_name = "ID", required_unless_present = "states")]
    ids: Vec<String>,
    #[command(flatten)]
    states: States,
}

#[derive(clap::Args)]
struct States {
    /// Only messages in this state (repeat for more): active (not tried yet or being
    /// delivered), deferred (waiting for a retry), hold.
    #[arg(long = "state", value_name = "STATE", value_enum)]
    states: Vec<State>,
}

impl States {
    fn get(&self) -> Vec<mtad::queue::MessageState> {
        use mtad::queue::MessageState;
        self.states
            .iter()
            .map(|s| match s {
                State::Active => MessageState::Active,
                State::Deferred => MessageState::Deferred,
                State::Hold => MessageState::Hold,
            })
            .collect()
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum State {
    Active,
    Deferred,
    Hold,
}

#[derive(clap::Args)]
struct TestPolicyArgs {
    /// Suite files to run instead of a single envelope.
    files: Vec<PathBuf>,
    /// The client's IP address.
    #[arg(long, default_value = "127.0.0.1")]
    client: IpAddr,
    /// The name the client gives in HELO/EHLO.
    #[arg(long)]
    helo: Option<String>,
    /// The authenticated user, as if the client had used SMTP AUTH.
    #[arg(long)]
    auth: Option<String>,
    /// As if the session were encrypted.
    #[arg(long)]
    tls: bool,
    /// The listener the client connected to.
    #[arg(long, default_value = "")]
    listener: String,
    /// The envelope sender (`""` for the null sender); with --local, sendmail's `-f`.
    #[arg(long)]
    from: Option<String>,
    /// A local submission instead of an SMTP client: what `sendmail` run by USER would
    /// submit (cleanup's edits, then the `sendmail` listener's stages).
    #[arg(long, value_name = "USER", conflicts_with_all = ["auth", "tls", "helo", "listener", "dns"])]
    local: Option<String>,
    /// With --local: recipients from the message's To/Cc/Bcc too (sendmail's `-t`).
    #[arg(long, requires = "local")]
    extract: bool,
    /// A recipient; repeat for more.
    #[arg(long)]
    rcpt: Vec<String>,
    /// A message file (headers and body) for the data stage.
    #[arg(long, value_name = "FILE")]
    message: Option<PathBuf>,
    /// DNS answers for the `authentication` checks (KDL: `txt "NAME" "TEXT"`, `a`,
    /// `aaaa`, `mx`, `ptr`, `fail`); every other name is NXDOMAIN.
    #[arg(long, value_name = "FILE")]
    dns: Option<PathBuf>,
    /// `json`: the verdicts (or the suite's results) as JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Decision log files (`decisions.jsonl`, and rotated ones: `decisions.jsonl.1`...).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Only decisions made at or after this time (RFC 3339, or `-2h`: that long ago).
    #[arg(long)]
    since: Option<String>,
    /// Only decisions made before this time (RFC 3339, or `-30m`).
    #[arg(long)]
    until: Option<String>,
    /// The result as JSON.
    #[arg(long)]
    json: bool,
    /// A change that does not fail the replay: `OLD->NEW` verdicts (`*`: any), with
    /// `@RULE` (a part of the rule's file:line) to limit it; `unknown`; `open-relay`.
    /// Repeat for more.
    #[arg(long, value_name = "CHANGE")]
    allow: Vec<String>,
    /// Also write the selected decisions as `mtactl test-policy` suite cases to FILE.
    #[arg(long, value_name = "FILE")]
    emit_cases: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
    /// Postfix's `mailq` / `postqueue -p` listing.
    Postfix,
    /// `postqueue -j`: JSON lines.
    PostfixJson,
}

fn replay(config: &Path, args: ReplayArgs) -> ExitCode {
    use mtad::control::replay;
    let when = |flag: &str, text: &Option<String>| match text {
        None => Ok(None),
        Some(t) => replay::parse_time(t, chrono::Utc::now())
            .map(Some)
            .map_err(|e| format!("mtactl replay: {flag} {t:?}: {e}")),
    };
    let (since, until) = match (when("--since", &args.since), when("--until", &args.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            complain(&e);
            return ExitCode::from(2);
        }
    };
    let options = replay::Options {
        config: config.to_path_buf(),
        files: args.files,
        since,
        until,
        json: args.json,
        allow: args.allow,
        emit_cases: args.emit_cases,
    };
    ExitCode::from(replay::replay(&options))
}

fn test_policy(config: &Path, args: TestPolicyArgs) -> ExitCode {
    use mtad::control::test_policy;
    let json = matches!(args.format, Format::Json);
    if !args.files.is_empty() {
        return ExitCode::from(test_policy::suite(config, &args.files, json));
    }
    let local = args.local.map(|user| mtad::policy::LocalDry {
        user,
        sender: args.from.clone(),
        extract: args.extract,
    });
    let from = match (&local, args.from) {
        (Some(l), _) if args.rcpt.is_empty() && !l.extract => {
            output::error(format_args!(
                "mtactl test-policy: --local needs at least one --rcpt, or --extract\n"
            ));
            return ExitCode::from(test_policy::EXIT_CONFIG);
        }
        (Some(_), _) => String::new(),
        (None, Some(from)) if !args.rcpt.is_empty() => from,
        (None, _) => {
            output::error(format_args!(
                "mtactl test-policy: give --from and at least one --rcpt, or suite files\n"
            ));
            return ExitCode::from(test_policy::EXIT_CONFIG);
        }
    };
    let message = match args.message.map(std::fs::read).transpose() {
        Ok(m) => m,
        Err(e) => {
            output::error(format_args!(
                "mtactl test-policy: cannot read the message: {e}\n"
            ));
            return ExitCode::from(test_policy::EXIT_CONFIG);
        }
    };
    let dns = match args.dns.as_deref().map(test_policy::dns_file).transpose() {
        Ok(d) => d.unwrap_or_default(),
        Err(errors) => {
            for e in errors {
                output::error(format_args!("{e}\n"));
            }
            return ExitCode::from(test_policy::EXIT_CONFIG);
        }
    };
    let envelope = mtad::policy::DryEnvelope {
        client_ip: Some(args.client),
        listener: args.listener,
        helo: args.helo,
        tls: args.tls,
        auth_user: args.auth,
        sender: from,
        recipients: args.rcpt,
        message,
        dns,
        local,
    };
    ExitCode::from(test_policy::single(config, &envelope, json))
}

fn main() -> ExitCode {
    // packaging: the pages and completions of mtactl and sendmail, and mtad.kdl(5)
    // (hidden from them, see control::manual)
    if let Some(dir) = control::manual::requested() {
        let cmd = <Args as clap::CommandFactory>::command();
        let commands = vec![("mtactl", cmd), ("sendmail", control::sendmail::command())];
        return control::manual::generate(&dir, commands, true);
    }
    let args = Args::parse();
    let code = run(args);
    // what is still buffered goes out now, where a closed pipe is seen (the flush at
    // exit ignores errors)
    let _ = output::stdout().flush();
    code
}

fn run(args: Args) -> ExitCode {
    if let Command::Dkim { command } = args.command {
        return finish(dkim(command));
    }
    if let Command::Import {
        command:
            ImportCommand::Postfix {
                dir,
                out,
                force,
                hostname,
                spool,
                format,
            },
    } = args.command
    {
        let options = mtad::import::postfix::Options { hostname, spool };
        let json = matches!(format, Format::Json);
        return finish(control::import_postfix(&dir, &out, &options, force, json));
    }
    let config = match control::config_path::resolve(args.config.as_deref(), "--config PATH") {
        Ok(path) => path,
        Err(e) => {
            complain(&format!("mtactl: {e}"));
            return ExitCode::from(config_error_status(&args.command));
        }
    };
    let config = config.as_path();
    let result = match args.command {
        Command::Dkim { .. } | Command::Import { .. } => unreachable!("answered above"),
        Command::TestPolicy(a) => return test_policy(config, a),
        Command::Replay(a) => return replay(config, a),
        Command::Cluster {
            command: ClusterCommand::Status { format },
        } => {
            return control::cluster_status::cluster_status(config, matches!(format, Format::Json));
        }
        Command::Lookup { table, key } => {
            return match control::lookup(config, &table, &key) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(message) => {
                    complain(&message.to_string());
                    ExitCode::from(2)
                }
            };
        }
        Command::Check { connect, strict } => control::check(config, connect, strict),
        Command::TlsProbe {
            destination,
            tls,
            connect,
        } => control::tls_probe::tls_probe(config, &destination, tls.as_deref(), connect),
        Command::Newaliases => {
            return ExitCode::from(control::newaliases::newaliases(config));
        }
        Command::Reload => control::reload(config),
        Command::Config { full: true, .. } => control::show_config::full(config),
        Command::Config {
            names,
            defaults,
            changed,
            value_only,
            ..
        } => {
            use mtad::config::settings::Which;
            let which = match (defaults, changed) {
                (true, _) => Which::Defaults,
                (_, true) => Which::Changed,
                _ => Which::Effective,
            };
            control::show_config::show(config, which, &names, value_only)
        }
        Command::Status { format } => control::status(config, matches!(format, Format::Json)),
        Command::TlsReport {
            command: TlsReportCommand::Send { now },
        } => control::tls_report_send(config, now),
        Command::Queue { command } => match command {
            QueueCommand::List {
                format: format @ (ListFormat::Postfix | ListFormat::PostfixJson),
                states,
            } => {
                let json = matches!(format, ListFormat::PostfixJson);
                return ExitCode::from(control::mailq::mailq(config, &states.get(), json));
            }
            QueueCommand::List { format, states } => {
                control::queue_list(config, matches!(format, ListFormat::Json), &states.get())
            }
            QueueCommand::Show { id, raw, format } => {
                control::queue_show(config, &id, raw, matches!(format, Format::Json))
            }
            QueueCommand::Shape {
                states,
                senders,
                bucket_minutes,
                buckets,
                linear,
            } => {
                let shape = control::qshape::Shape {
                    bucket_minutes,
                    buckets: usize::try_from(buckets).unwrap_or(100),
                    linear,
                    senders,
                };
                control::queue_shape(config, &shape, &states.get())
            }
            QueueCommand::Flush(a) => queue_action(config, QueueAction::Flush, a),
            QueueCommand::Delete(DeleteIds { ids, states }) => {
                queue_action(config, QueueAction::Delete, QueueIds { ids, states })
            }
            QueueCommand::Hold(a) => queue_action(config, QueueAction::Hold, a),
            QueueCommand::Release(a) => queue_action(config, QueueAction::Release, a),
            QueueCommand::Evacuate { to, wait } => {
                return match humantime::parse_duration(&wait) {
                    Ok(wait) => ExitCode::from(control::queue_evacuate(config, &to, wait)),
                    Err(e) => {
                        complain(&format!("mtactl queue evacuate: --wait {wait:?}: {e}"));
                        ExitCode::from(2)
                    }
                };
            }
        },
    };
    finish(result)
}

/// The exit status of `command` when its configuration is not there: what it exits
/// with for an invalid one.
fn config_error_status(command: &Command) -> u8 {
    match command {
        Command::Lookup { .. } | Command::TestPolicy(_) | Command::Replay(_) => 2,
        Command::Newaliases
        | Command::Queue {
            command:
                QueueCommand::List {
                    format: ListFormat::Postfix | ListFormat::PostfixJson,
                    ..
                },
        } => mtad::control::sysexits::EX_CONFIG,
        _ => 1,
    }
}

fn queue_action(
    config: &Path,
    action: QueueAction,
    a: QueueIds,
) -> Result<(), control::CommandError> {
    let states = a.states.get();
    control::queue_command_reading(
        config,
        action,
        &a.ids,
        &states,
        &mut std::io::stdin().lock(),
    )
}

fn dkim(command: DkimCommand) -> Result<(), control::CommandError> {
    let DkimCommand::Keygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    } = command;
    let algorithm = match algorithm {
        DkimAlgorithm::Rsa => mtad::mailauth::dkim::Algorithm::Rsa,
        DkimAlgorithm::Ed25519 => mtad::mailauth::dkim::Algorithm::Ed25519,
    };
    control::dkim::keygen(&domain, &selector, algorithm, bits, &out)
        .map_err(control::CommandError::from)
}

/// Exit 0, or 1 with the error on stderr.
fn finish(result: Result<(), control::CommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            complain(&message.to_string());
            ExitCode::FAILURE
        }
    }
}

/// `message` on stderr, ending with a newline, never panicking.
fn complain(message: &str) {
    let newline = if message.ends_with('\n') { "" } else { "\n" };
    output::error(format_args!("{message}{newline}"));
}
