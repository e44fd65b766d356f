//! Which configuration file a program reads: the one decision for `mtad`, every
//! `mtactl` command and `sendmail` (`mailq`, `newaliases`).
//!
//! In order: the command line (`--config PATH`, sendmail's `-C PATH`), then the
//! environment variable [`CONFIG_ENV`] (`MTAD_CONFIG`, when set and not empty), then
//! [`DEFAULT_CONFIG`] (`/etc/mtad/mtad.kdl`, where the package installs it). A file
//! named on the command line is read as given (a missing one is reported by
//! [`crate::config::Config::load`]); one that was chosen for the operator, from the
//! environment or by default, is checked first, so that its absence is explained
//! with every way to name another ([`MissingConfig`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The configuration read when neither the command line nor [`CONFIG_ENV`] names one.
pub const DEFAULT_CONFIG: &str = "/etc/mtad/mtad.kdl";

/// The environment variable that names the configuration when the command line does not.
pub const CONFIG_ENV: &str = "MTAD_CONFIG";

/// Where the configuration path came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--config` / `-C`.
    CommandLine,
    /// [`CONFIG_ENV`].
    Environment,
    /// [`DEFAULT_CONFIG`].
    Default,
}

/// The configuration file a program reads, and why that one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    pub path: PathBuf,
    pub source: Source,
}

/// Chooses the configuration from the command line's `flag` and the value of
/// [`CONFIG_ENV`] (`env`), without looking at the file: the rule itself.
pub fn choose(flag: Option<&Path>, env: Option<OsString>) -> ConfigPath {
    if let Some(path) = flag {
        return ConfigPath {
            path: path.to_path_buf(),
            source: Source::CommandLine,
        };
    }
    match env.filter(|v| !v.is_empty()) {
        Some(v) => ConfigPath {
            path: PathBuf::from(v),
            source: Source::Environment,
        },
        None => ConfigPath {
            path: PathBuf::from(DEFAULT_CONFIG),
            source: Source::Default,
        },
    }
}

/// The configuration was chosen by the environment or by default, and there is no
/// file there. The text says what to do; `option` is how the program's command line
/// names a file (`--config PATH`, `-C PATH`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MissingConfig {
    #[error(
        "no configuration at {path} (the default): write one there, set {CONFIG_ENV}=PATH, or give {option}",
        path = DEFAULT_CONFIG
    )]
    Default { option: &'static str },
    #[error(
        "no configuration at {path} (named by {CONFIG_ENV}): correct {CONFIG_ENV}, or give {option}",
        path = .path.display()
    )]
    Environment { path: PathBuf, option: &'static str },
}

/// The configuration file this program reads ([`choose`] with this process's
/// environment). `Err` when it was not named on the command line and does not exist;
/// `option` names the command line's way to give one, for that message.
pub fn resolve(flag: Option<&Path>, option: &'static str) -> Result<PathBuf, MissingConfig> {
    let chosen = choose(flag, std::env::var_os(CONFIG_ENV));
    // only a file that is certainly not there: another error (a directory we may not
    // search) is reported by whoever reads it, with its own cause
    let missing = matches!(std::fs::metadata(&chosen.path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    match chosen.source {
        Source::Default if missing => Err(MissingConfig::Default { option }),
        Source::Environment if missing => Err(MissingConfig::Environment {
            path: chosen.path,
            option,
        }),
        _ => Ok(chosen.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_then_the_environment_then_the_default() {
        let flag = Path::new("/srv/a.kdl");
        let env = || Some(OsString::from("/srv/b.kdl"));
        assert_eq!(
            choose(Some(flag), env()),
            ConfigPath {
                path: flag.to_path_buf(),
                source: Source::CommandLine
            }
        );
        assert_eq!(
            choose(None, env()),
            ConfigPath {
                path: PathBuf::from("/srv/b.kdl"),
                source: Source::Environment
            }
        );
        assert_eq!(
            choose(None, None),
            ConfigPath {
                path: PathBuf::from("/etc/mtad/mtad.kdl"),
                source: Source::Default
            }
        );
        // an empty variable is no choice (as `MTAD_CONFIG= mtad` is meant)
        assert_eq!(choose(None, Some(OsString::new())).source, Source::Default);
    }

    #[test]
    fn a_missing_file_is_explained_with_every_way_out() {
        assert_eq!(
            MissingConfig::Default {
                option: "--config PATH"
            }
            .to_string(),
            "no configuration at /etc/mtad/mtad.kdl (the default): write one there, \
             set MTAD_CONFIG=PATH, or give --config PATH"
        );
        assert_eq!(
            MissingConfig::Environment {
                path: PathBuf::from("/nowhere/x.kdl"),
                option: "-C PATH"
            }
            .to_string(),
            "no configuration at /nowhere/x.kdl (named by MTAD_CONFIG): correct MTAD_CONFIG, \
             or give -C PATH"
        );
    }
}
