//! `mtactl`: the operator's command line. Each subcommand is a function in
//! [`mtad::control`]; this file only parses arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mtad::control;

#[derive(Parser)]
#[command(
    version,
    about = "Operate mtad: check configuration, inspect the queue"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration: a one-line summary, or every error with file:line:col.
    Check {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
    },
    /// Inspect the queue (reads the spool directly; safe while mtad runs).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages: id, size, arrival time, sender, recipients.
    List {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show one message: its envelope, then the message as stored.
    Show {
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
        /// The queue id, as printed by `queue list` and in the 250 reply.
        id: String,
        /// Print only the message, byte for byte.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Check { config } => control::check(&config),
        Command::Queue { command } => match command {
            QueueCommand::List { config, format } => {
                control::queue_list(&config, matches!(format, Format::Json))
            }
            QueueCommand::Show { config, id, raw } => control::queue_show(&config, &id, raw),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprint!("{message}");
            if !message.ends_with('\n') {
                eprintln!();
            }
            ExitCode::FAILURE
        }
    }
}
