//! `mtad [--config PATH]`: the mail relay daemon, in the foreground, logging to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A mail relay whose policy is code.
#[derive(Parser)]
#[command(name = "mtad", version = mtad::control::VERSION, about)]
struct Args {
    /// The KDL configuration file. Default: the file $MTAD_CONFIG names, else
    /// /etc/mtad/mtad.kdl.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// How the log on stderr is written: `text` (mtad's own, with every field), or
    /// `postfix` (Postfix's mail log lines, `Mmm dd HH:MM:SS host NAME/smtpd[pid]: ...`,
    /// what pflogsumm, logwatch and fail2ban read).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// With `--log-format postfix`: the program name before `/smtpd` (`postfix` makes
    /// filters written for Postfix match unchanged).
    #[arg(long, value_name = "NAME", default_value = "mtad")]
    syslog_name: String,
    /// Run as root. Without it mtad started as root binds its ports and becomes
    /// `server { user }`, or refuses to start when the configuration names none.
    #[arg(long)]
    allow_root: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Postfix,
}

fn main() -> ExitCode {
    // packaging: mtad(8) and the completions (hidden from them, see control::manual)
    if let Some(dir) = mtad::control::manual::requested() {
        let cmd = <Args as clap::CommandFactory>::command();
        return mtad::control::manual::generate(&dir, vec![("mtad", cmd)], false);
    }
    let args = Args::parse();
    let filter = || EnvFilter::try_from_env("MTAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            // one event, one line, whatever a value holds (see mtad::logsafe)
            .with_writer(|| mtad::logsafe::OneLine(std::io::stderr()))
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter())
            .init(),
        LogFormat::Postfix => {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned());
            tracing_subscriber::registry()
                .with(filter())
                .with(mtad::maillog::PostfixFormat {
                    name: args.syslog_name.clone(),
                    hostname,
                    pid: std::process::id(),
                    writer: std::io::stderr,
                })
                .init()
        }
    }
    let path = match mtad::control::config_path::resolve(args.config.as_deref(), "--config PATH") {
        Ok(path) => path,
        Err(e) => {
            eprintln!("mtad: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (config, pipeline) = match mtad::control::load_live(&path) {
        Ok(built) => built,
        Err(refusal) => {
            eprint!("{}", refusal.render());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("mtad: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mtad::control::daemon::serve(
        config,
        pipeline,
        args.allow_root,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "mtad cannot run");
            ExitCode::FAILURE
        }
    }
}
