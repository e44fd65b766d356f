//! `mtactl import postfix`: a Postfix configuration directory in, an mtad
//! configuration, its test suite and a report out (docs/migrating-from-postfix.md).
//!
//! - [`maincf`]: main.cf's lines and Postfix's expansion of `$name`, with the
//!   defaults of the Postfix this was built against (`postconf-defaults.txt`,
//!   `regenerate-defaults.sh`) and of the `compatibility_level` in force;
//! - [`mastercf`]: master.cf's services and their `-o` overrides;
//! - [`restrictions`] and [`access`]: restriction lists and access tables → rules;
//! - [`tables`]: where table files are, and SQL `.cf` files → SQL tables;
//! - [`translate`]: the whole translation; [`suite`]: the generated test cases;
//! - [`mapping`]: the parameter table the report and the documentation share;
//! - [`report`]: what became of every parameter.

pub mod access;
pub mod kdl;
pub mod maincf;
pub mod mapping;
pub mod mastercf;
pub mod report;
pub mod restrictions;
pub mod suite;
pub mod tables;
mod translate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use report::{Report, Status};

/// What the import needs besides the directory.
#[derive(Clone, Debug)]
pub struct Options {
    /// Stands for Postfix's default `myhostname` (the host's name) when main.cf does
    /// not set it; default: this host's name.
    pub hostname: Option<String>,
    /// The spool directory of the mtad configuration.
    pub spool: String,
}

/// The result: the files to write.
#[derive(Clone, Debug)]
pub struct Imported {
    /// `mtad.kdl`.
    pub config: String,
    /// `tests/imported.kdl`.
    pub suite: String,
    pub report: Report,
    /// Tables and other files the configuration names, by their name in the output
    /// directory (plain file names, no directories).
    pub files: std::collections::BTreeMap<String, String>,
}

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {error}")]
    Read { path: String, error: String },
    #[error("main.cf is not a Postfix configuration:\n{}", lines(.0))]
    MainCf(Vec<maincf::SyntaxError>),
    #[error("master.cf is not a Postfix master.cf:\n{}", lines(.0))]
    MasterCf(Vec<mastercf::MasterError>),
    #[error("{0}")]
    Expand(#[from] maincf::ExpandError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{0} is not empty: give --force to write into it anyway (files of the same name are replaced)"
    )]
    NotEmpty(String),
    #[error("{path}: cannot write: {error}")]
    Write { path: String, error: String },
}

fn lines<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fuzz target `postfix_conf`: `data` read as a main.cf (every parameter's value
/// expanded) and as a master.cf. Never panics, whatever the bytes.
pub fn fuzz_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cf) = maincf::MainCf::parse(text) {
        let params = maincf::Params::new(&cf, "host.example");
        for name in &cf.order {
            let _ = params.get(name);
            let _ = params.list(name);
        }
    }
    if let Ok(services) = mastercf::parse(text) {
        for s in services {
            let _ = mastercf::port(&s.name);
        }
    }
}

/// Reads the Postfix configuration in `dir` and translates it.
pub fn import(dir: &Path, options: &Options) -> Result<Imported, ImportError> {
    let mut t = translate::Translator::new(dir, options)?;
    t.facts.spool = options.spool.clone();
    t.run()
}

impl Imported {
    /// Writes the result into `out` (made if missing): `mtad.kdl`,
    /// `tests/imported.kdl`, `import-report.txt`, `import-report.json` and the files.
    /// An existing `out` that is not empty is refused unless `force`. Nothing is
    /// written anywhere else.
    pub fn write(&self, out: &Path, force: bool) -> Result<(), ImportError> {
        let werr = |p: &Path, e: std::io::Error| ImportError::Write {
            path: p.display().to_string(),
            error: e.to_string(),
        };
        if out.exists() {
            let mut entries = std::fs::read_dir(out).map_err(|e| werr(out, e))?;
            if entries.next().is_some() && !force {
                return Err(ImportError::NotEmpty(out.display().to_string()));
            }
        }
        std::fs::create_dir_all(out.join("tests")).map_err(|e| werr(out, e))?;
        let mut all: Vec<(String, &str)> = vec![
            ("mtad.kdl".into(), self.config.as_str()),
            ("tests/imported.kdl".into(), self.suite.as_str()),
            ("import-report.txt".into(), ""),
        ];
        let text = self.report.text();
        let json = self.report.json();
        all[2].1 = &text;
        all.push(("import-report.json".into(), &json));
        for (name, body) in &self.files {
            // names are made from file names in translate::add_file; check anyway
            if name.is_empty()
                || name.contains(['/', '\\'])
                || name.starts_with('.')
                || matches!(
                    name.as_str(),
                    "mtad.kdl" | "tests" | "import-report.txt" | "import-report.json"
                )
            {
                return Err(ImportError::Invalid(format!(
                    "refusing to write the file name {name:?}"
                )));
            }
            all.push((name.clone(), body));
        }
        for (name, body) in all {
            let path = out.join(&name);
            std::fs::write(&path, body).map_err(|e| werr(&path, e))?;
        }
        Ok(())
    }
}
