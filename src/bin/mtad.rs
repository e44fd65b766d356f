//! `mtad [--config PATH]`: the mail relay daemon, in the foreground, logging where the
//! `log` block and the options below say (stderr unless told).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mtad::config::{LogFormat, LogOutput};
use mtad::control::log;

/// mimalloc rather than glibc's malloc: the relay path allocates and frees small
/// buffers per command and per message from several threads, and glibc's arenas
/// spent about 6% of the relay's CPU in malloc, free and their consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A mail relay whose policy is code.
#[derive(Parser)]
#[command(name = "mtad", version = mtad::control::VERSION, about)]
struct Args {
    /// The KDL configuration file. Default: the file $MTAD_CONFIG names, else
    /// /etc/mtad/mtad.kdl.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where the log goes: `auto` (the default: the journal when systemd connected
    /// stderr to it, else stderr), `stderr`, `syslog` (`/dev/log`, facility `mail`), or
    /// `journal` (systemd-journald's native protocol). Wins over `log { output }`.
    #[arg(long, value_name = "OUTPUT", value_parser = log::parse_output)]
    log_output: Option<LogOutput>,
    /// How the log on stderr is written: `text` (mtad's own, with every field),
    /// `postfix` (Postfix's mail log lines, `Mmm dd HH:MM:SS host NAME/smtpd[pid]: ...`,
    /// what pflogsumm, logwatch and fail2ban read), or `json` (an object per line).
    /// Implies `--log-output stderr`; wins over `log { format }`.
    #[arg(long, value_name = "FORMAT", value_parser = log::parse_format)]
    log_format: Option<LogFormat>,
    /// The program name before `/smtpd` in every output but `text` (`postfix` makes
    /// filters written for Postfix match unchanged). Wins over `log { syslog-name }`;
    /// `mtad` unless set.
    #[arg(long, value_name = "NAME", value_parser = log::parse_syslog_name)]
    syslog_name: Option<String>,
    /// Run as root. Without it mtad started as root binds its ports and becomes
    /// `server { user }`, or refuses to start when the configuration names none.
    #[arg(long)]
    allow_root: bool,
}

fn main() -> ExitCode {
    // packaging: mtad(8) and the completions (hidden from them, see control::manual)
    if let Some(dir) = mtad::control::manual::requested() {
        let cmd = <Args as clap::CommandFactory>::command();
        return mtad::control::manual::generate(&dir, vec![("mtad", cmd)], false);
    }
    let args = Args::parse();
    let overrides = log::Overrides {
        output: args.log_output,
        format: args.log_format,
        syslog_name: args.syslog_name,
    };
    // until the `log` block is read, stderr: configuration errors are seen where mtad runs
    let early = overrides.early();
    let path = match mtad::control::config_path::resolve(args.config.as_deref(), "--config PATH") {
        Ok(path) => path,
        Err(e) => {
            eprintln!("mtad: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = mtad::control::load_live(&path);
    drop(early);
    let (config, pipeline) = match loaded {
        Ok(built) => built,
        Err(refusal) => {
            eprint!("{}", refusal.render());
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = overrides.apply(&config.log).and_then(|l| log::init(&l)) {
        eprintln!("mtad: {err}");
        return ExitCode::FAILURE;
    }
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
