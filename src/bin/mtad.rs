//! `mtad --config PATH`: the mail relay daemon, in the foreground, logging to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A mail relay whose policy is code.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The KDL configuration file.
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        // one event, one line, whatever a value holds (see mtad::logsafe)
        .with_writer(|| mtad::logsafe::OneLine(std::io::stderr()))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("MTAD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let (config, pipeline) = match mtad::control::load_live(&args.config) {
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
    match runtime.block_on(mtad::control::daemon::serve(config, pipeline)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "mtad cannot run");
            ExitCode::FAILURE
        }
    }
}
