//! `mtactl`: the operator's command line. Each subcommand is a function in
//! [`mtad::control`]; this file only parses arguments.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mtad::control;
use mtad::control::output;
use mtad::control::socket::QueueAction;

#[derive(Parser)]
#[command(
    version,
    about = "Operate mtad: check configuration, inspect and manage the queue, ask how it is"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration: a one-line summary and the policy revision, or every
    /// error with file:line:col.
    Check {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        /// Also ask every SQL database the configuration uses (tables and users
        /// tables) one query each: exit 1 if one does not answer.
        #[arg(long)]
        connect: bool,
    },
    /// Reload the running mtad's policy: the configuration is checked here first, then
    /// compiled anew by mtad and swapped in. Exit 1 with every error when it is not
    /// valid; the running policy stays.
    Reload {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
    },
    /// Ask the running mtad how it is: uptime, policy revision, listeners and their
    /// open sessions, messages in the queue by state (active, deferred, hold).
    Status {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Look KEY up in a table, like `postmap -q`: prints the value (exit 0) or nothing
    /// (exit 1). For a networks or domains set, prints `yes` when KEY is a member.
    /// Exit 2: the configuration is invalid or TABLE is not defined.
    Lookup {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        /// A table, networks or domains name (`table:NAME`, `networks:NAME`,
        /// `domains:NAME` when kinds share a name).
        table: String,
        key: String,
    },
    /// Dry-run the policy: one envelope from options, or suites of test files.
    /// Exit 0: all accepted / all cases passed; 1: something refused / a case failed;
    /// 2: the configuration or a test file is invalid.
    TestPolicy(TestPolicyArgs),
    /// Inspect the queue (list, show: read the spool directly, safe while mtad runs) and
    /// act on it (flush, delete, hold, release: through the running mtad's control socket).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Check every aliases file the configuration names (errors with file:line:col,
    /// exit 78) and make the running mtad reload so the aliases take effect, like
    /// `newaliases`. Silent on success, also when mtad is not running.
    Newaliases {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new private key to DIR/DOMAIN.SELECTOR.key (PEM, mode 0600), then print
    /// the TXT record to publish at SELECTOR._domainkey.DOMAIN and the `dkim` line for
    /// the configuration.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
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
    /// `--format postfix`: Postfix's `mailq` listing (what our `mailq` prints), with
    /// postqueue's exit status.
    List {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Show one message: its envelope and recipients' state, then the message as stored.
    Show {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        /// The queue id, as printed by `queue list` and in the 250 reply.
        id: String,
        /// Print only the message, byte for byte.
        #[arg(long, conflicts_with = "format")]
        raw: bool,
        /// `json`: the envelope and recipients' state as JSON, without the message.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Attempt delivery now, ignoring the retry backoff (held messages are skipped).
    /// No ids: every message.
    Flush(QueueIds),
    /// Remove messages from the queue, without a bounce. Give the ids, or ALL.
    Delete(QueueIdsRequired),
    /// Keep messages in the queue without delivering them. No ids: every message.
    Hold(QueueIds),
    /// Undo hold and attempt delivery now. No ids: every held message.
    Release(QueueIds),
}

#[derive(clap::Args)]
struct QueueIds {
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Queue ids (16 hex digits), or ALL.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
}

#[derive(clap::Args)]
struct QueueIdsRequired {
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Queue ids (16 hex digits), or ALL for every message.
    #[arg(value_name = "ID", required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
struct TestPolicyArgs {
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Suite files to run instead of a single envelope.
    files: Vec<PathBuf>,
    /// The client's IP address.
    #[arg(long, default_value = "127.0.0.1")]
    client: IpAddr,
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
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
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
}

fn test_policy(args: TestPolicyArgs) -> ExitCode {
    use mtad::control::test_policy;
    let json = matches!(args.format, Format::Json);
    if !args.files.is_empty() {
        return ExitCode::from(test_policy::suite(&args.config, &args.files, json));
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
    ExitCode::from(test_policy::single(&args.config, &envelope, json))
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
    let result = match args.command {
        Command::TestPolicy(a) => return test_policy(a),
        Command::Lookup { config, table, key } => {
            return match control::lookup(&config, &table, &key) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(message) => {
                    complain(&message.to_string());
                    ExitCode::from(2)
                }
            };
        }
        Command::Check { config, connect } => control::check(&config, connect),
        Command::Newaliases { config } => {
            return ExitCode::from(control::newaliases::newaliases(&config));
        }
        Command::Reload { config } => control::reload(&config),
        Command::Status { config, format } => {
            control::status(&config, matches!(format, Format::Json))
        }
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algorithm,
                    bits,
                    out,
                },
        } => {
            let algorithm = match algorithm {
                DkimAlgorithm::Rsa => mtad::mailauth::dkim::Algorithm::Rsa,
                DkimAlgorithm::Ed25519 => mtad::mailauth::dkim::Algorithm::Ed25519,
            };
            control::dkim::keygen(&domain, &selector, algorithm, bits, &out)
                .map_err(control::CommandError::from)
        }
        Command::Queue { command } => match command {
            QueueCommand::List {
                config,
                format: ListFormat::Postfix,
            } => return ExitCode::from(control::mailq::mailq(&config)),
            QueueCommand::List { config, format } => {
                control::queue_list(&config, matches!(format, ListFormat::Json))
            }
            QueueCommand::Show {
                config,
                id,
                raw,
                format,
            } => control::queue_show(&config, &id, raw, matches!(format, Format::Json)),
            QueueCommand::Flush(a) => control::queue_command(&a.config, QueueAction::Flush, &a.ids),
            QueueCommand::Delete(a) => {
                control::queue_command(&a.config, QueueAction::Delete, &a.ids)
            }
            QueueCommand::Hold(a) => control::queue_command(&a.config, QueueAction::Hold, &a.ids),
            QueueCommand::Release(a) => {
                control::queue_command(&a.config, QueueAction::Release, &a.ids)
            }
        },
    };
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
