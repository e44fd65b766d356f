//! `newaliases` (`sendmail -bi`, `mtactl newaliases`): checks every aliases file the
//! configuration names, and makes a running mtad reload so an edited `/etc/aliases`
//! takes effect, which is what admins expect after running it.
//!
//! Postfix's `newaliases` rebuilds `aliases.db`; mtad reads the text file itself when
//! it loads its configuration, so there is nothing to build. What is left of the
//! command is its two promises: a broken file is reported (each error with its
//! file:line:col, and nothing is reloaded), and a good one is in force when the
//! command returns. The check is the configuration's own loading (the aliases file is
//! read by the same code the daemon runs), then the reload goes through the control
//! socket like `mtactl reload`.
//!
//! Unlike `postalias`, which warns about a line it cannot read, skips it and exits 0,
//! an error here fails the command (78, `EX_CONFIG`) and the running policy stays:
//! an alias that silently vanished would deliver root's mail nowhere. Duplicate
//! aliases are warnings, as in postalias (the first entry wins).

use std::path::Path;

use super::socket::RequestError;
use super::sysexits::{EX_CONFIG, EX_OK, EX_UNAVAILABLE};
use super::{ReloadError, ask_reload, load_live, table_warnings};

/// What `newaliases` did, for the caller's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The files are good and the running mtad now uses them.
    Reloaded,
    /// The files are good; mtad is not running and reads them when it starts.
    NotRunning,
}

/// Why `newaliases` failed; the text is what it prints on stderr.
#[derive(Debug, thiserror::Error)]
pub enum NewaliasesError {
    /// The configuration (an aliases file, or anything else in it) has errors, each
    /// rendered with its place.
    #[error("{0}")]
    Invalid(String),
    /// The running mtad refused the new configuration (every error, rendered).
    #[error("newaliases: mtad refused the new configuration; the running policy stays\n{0}")]
    Refused(String),
    /// The running mtad could not be asked.
    #[error("newaliases: the aliases are good, but mtad could not be asked to reload: {0}")]
    Unreachable(RequestError),
}

impl NewaliasesError {
    /// sysexits.h status: [`EX_CONFIG`] for a configuration error, [`EX_UNAVAILABLE`]
    /// when the daemon cannot be asked.
    pub fn exit_code(&self) -> u8 {
        match self {
            NewaliasesError::Invalid(_) | NewaliasesError::Refused(_) => EX_CONFIG,
            NewaliasesError::Unreachable(_) => EX_UNAVAILABLE,
        }
    }
}

/// Checks the configuration at `config_path` and every aliases file it names, then
/// asks a running mtad to reload. `warn` gets each warning (a duplicate alias), as
/// `aliases file, line N: ...`.
pub fn check_and_reload(
    config_path: &Path,
    mut warn: impl FnMut(&str),
) -> Result<Outcome, NewaliasesError> {
    let (config, _) =
        load_live(config_path).map_err(|refusal| NewaliasesError::Invalid(refusal.render()))?;
    for w in table_warnings(&config) {
        warn(&w);
    }
    match ask_reload(&config) {
        Ok(_) => Ok(Outcome::Reloaded),
        Err(ReloadError::Request(RequestError::NotRunning { .. })) => Ok(Outcome::NotRunning),
        Err(ReloadError::Request(e)) => Err(NewaliasesError::Unreachable(e)),
        Err(ReloadError::Refused(errors)) => Err(NewaliasesError::Refused(errors)),
    }
}

/// `newaliases`: [`check_and_reload`], silent on success as Postfix's is (warnings
/// and errors on stderr); returns the exit status (sysexits.h).
pub fn newaliases(config_path: &Path) -> u8 {
    let warn = |w: &str| super::output::error(format_args!("newaliases: warning: {w}\n"));
    match check_and_reload(config_path, warn) {
        Ok(_) => EX_OK,
        Err(e) => {
            let text = e.to_string();
            let newline = if text.ends_with('\n') { "" } else { "\n" };
            super::output::error(format_args!("{text}{newline}"));
            e.exit_code()
        }
    }
}
