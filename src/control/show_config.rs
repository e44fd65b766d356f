//! `mtactl config`: the configuration's settings as the daemon reads them, like
//! Postfix's `postconf` (see [`crate::config::settings`] for what a setting is).
//!
//! - `mtactl config`: every setting's effective value, as KDL blocks (`postconf`);
//! - `--changed`: only what differs from the defaults (`postconf -n`; Postfix prints
//!   what main.cf writes, we print what differs, so a default written out is left out);
//! - `--defaults`: every default (`postconf -d`);
//! - `NAME...`: `block.key = VALUE` per setting (`postconf NAME`), `--value-only` just
//!   the value (`postconf -h NAME`), with `--defaults` the default;
//! - `--full`: the whole configuration as one KDL file that `mtactl check` accepts:
//!   the settings blocks with every value explicit, then every other top-level node of
//!   the main file as written, with `include` paths made absolute. Relative paths in the
//!   nodes copied as written (tables, hooks, certificates of listeners) still resolve
//!   against the directory of the file that is read, so keep the output next to the
//!   original. Settings blocks in an included file cannot be moved out of it: then
//!   `--full` refuses, naming the file.

use std::path::{Path, PathBuf};

use super::CommandError;
use crate::config::settings::{self, BLOCKS, SETTINGS, Which};
use crate::config::{Config, render};

/// How deep `--full` follows includes to look for settings blocks (the parser's bound).
const MAX_INCLUDE_DEPTH: usize = 16;

/// `mtactl config [--defaults|--changed] [--value-only] [NAME...]`.
pub fn show(
    path: &Path,
    which: Which,
    names: &[String],
    value_only: bool,
) -> Result<(), CommandError> {
    let config = Config::load(path).map_err(|errors| render(&errors))?;
    if names.is_empty() {
        out!("{}", settings::render(&config, which));
        return Ok(());
    }
    let mut unknown = Vec::new();
    for name in names {
        let Some(setting) = settings::find(name) else {
            unknown.push(unknown_setting(name));
            continue;
        };
        let value = settings::value(setting, &config, which == Which::Defaults);
        if which == Which::Changed && value == settings::value(setting, &config, true) {
            continue;
        }
        if value_only {
            outln!("{}", value.plain());
        } else {
            outln!("{name} = {}", value.kdl().unwrap_or_default());
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(CommandError(unknown.join("\n")))
    }
}

fn unknown_setting(name: &str) -> String {
    let names: Vec<String> = SETTINGS.iter().map(settings::Setting::name).collect();
    let hint = names
        .iter()
        .map(|n| (strsim::jaro_winkler(name, n), n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(": did you mean `{n}`?"))
        .unwrap_or_else(|| {
            format!(
                ": settings are BLOCK.KEY, BLOCK one of {}",
                BLOCKS.join(", ")
            )
        });
    format!("mtactl config: unknown setting `{name}`{hint}")
}

/// `mtactl config --full`: the whole configuration, settings explicit (see the module
/// documentation).
pub fn full(path: &Path) -> Result<(), CommandError> {
    let config = Config::load(path).map_err(|errors| render(&errors))?;
    // the file as the parser read it (a valid configuration, so it parses)
    let text = std::fs::read_to_string(&config.path)
        .map_err(|e| format!("mtactl config: cannot read {}: {e}", config.path.display()))?;
    let doc = kdl::KdlDocument::parse_v2(&text)
        .map_err(|e| format!("mtactl config: {}: {e}", config.path.display()))?;
    let dir = config.path.parent().unwrap_or(Path::new("/"));
    let mut rest = String::new();
    for node in doc.nodes() {
        let name = node.name().value();
        if BLOCKS.contains(&name) {
            continue;
        }
        if name == "include"
            && let Some(target) = node.entries().first().and_then(|e| e.value().as_string())
        {
            let target = dir.join(target);
            no_settings_in(&target, 0)?;
            rest.push_str(&format!(
                "include {}\n",
                kdl_string(&target.display().to_string())
            ));
            continue;
        }
        let span = node.span();
        let written = text
            .get(span.offset()..span.offset() + span.len())
            .unwrap_or_default();
        rest.push_str(written.trim_end());
        rest.push('\n');
    }
    outln!(
        "// {}: every setting explicit (mtactl config --full)",
        config.path.display()
    );
    out!("{}", settings::render(&config, Which::Effective));
    out!("{rest}");
    Ok(())
}

/// `Err` when `file`, or a file it includes, writes a settings block.
fn no_settings_in(file: &Path, depth: usize) -> Result<(), CommandError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Ok(()); // the parser has refused deeper ones already
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("mtactl config: cannot read {}: {e}", file.display()))?;
    let doc = kdl::KdlDocument::parse_v2(&text)
        .map_err(|e| format!("mtactl config: {}: {e}", file.display()))?;
    let dir: PathBuf = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    for node in doc.nodes() {
        let name = node.name().value();
        if BLOCKS.contains(&name) {
            return Err(CommandError(format!(
                "mtactl config --full: the `{name}` block is in {}, an included file; \
                 move it to the main file to print the whole configuration \
                 (mtactl config without --full prints every setting)",
                file.display()
            )));
        }
        if name == "include"
            && let Some(target) = node.entries().first().and_then(|e| e.value().as_string())
        {
            no_settings_in(&dir.join(target), depth + 1)?;
        }
    }
    Ok(())
}

/// `s` as a quoted KDL string.
fn kdl_string(s: &str) -> String {
    settings::Value::Text(s.to_owned())
        .kdl()
        .unwrap_or_default()
}
