//! `master.cf`: the services, with their `-o name=value` overrides.
//!
//! Each logical line (continuations and comments as in main.cf) is `service type
//! private unpriv chroot wakeup maxproc command [args]`. Arguments are separated by
//! white space; `{ ... }` groups one argument that holds white space (Postfix ≥ 3.0:
//! `-o { smtpd_client_restrictions = permit_sasl_authenticated, reject }`).

use super::maincf::logical_lines;

/// One service line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `smtp`, `submission`, `127.0.0.1:10025`, `amavis`.
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo`, `pass`.
    pub kind: String,
    /// The program: `smtpd`, `smtp`, `lmtp`, `pipe`, ...
    pub command: String,
    /// The `-o` overrides in their order (`-o name=value`, `-o { name = value }`).
    pub overrides: Vec<(String, String)>,
    /// Other arguments of the command (`-v`, `flags=...` of pipe), kept for the report.
    pub args: Vec<String>,
    /// The line it starts on.
    pub line: usize,
}

/// A line that is not a service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("master.cf:{line}: {message}")]
pub struct MasterError {
    pub line: usize,
    pub message: String,
}

/// The services of a master.cf.
pub fn parse(text: &str) -> Result<Vec<Service>, Vec<MasterError>> {
    let mut services = Vec::new();
    let mut errors = Vec::new();
    for (line, logical) in logical_lines(text) {
        match service(&logical, line) {
            Ok(s) => services.push(s),
            Err(message) => errors.push(MasterError { line, message }),
        }
    }
    if errors.is_empty() {
        Ok(services)
    } else {
        Err(errors)
    }
}

fn service(logical: &str, line: usize) -> Result<Service, String> {
    let words = words(logical)?;
    if words.len() < 8 {
        return Err(format!(
            "a service needs 8 fields (service type private unpriv chroot wakeup maxproc command), got {}",
            words.len()
        ));
    }
    let kind = words[1].clone();
    if !matches!(
        kind.as_str(),
        "inet" | "unix" | "unix-dgram" | "fifo" | "pass"
    ) {
        return Err(format!("unknown service type {kind:?}"));
    }
    let mut overrides = Vec::new();
    let mut args = Vec::new();
    let mut rest = words[8..].iter();
    while let Some(arg) = rest.next() {
        let setting = if arg == "-o" {
            rest.next()
                .ok_or_else(|| "`-o` without a setting".to_owned())?
                .clone()
        } else if let Some(s) = arg.strip_prefix("-o") {
            s.to_owned()
        } else {
            args.push(arg.clone());
            continue;
        };
        let setting = setting
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(&setting);
        let Some((name, value)) = setting.split_once('=') else {
            return Err(format!("`-o {setting}` is not name=value"));
        };
        overrides.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Service {
        name: words[0].clone(),
        kind,
        command: words[7].clone(),
        overrides,
        args,
        line,
    })
}

/// White-space separated words; `{ ... }` (nesting) is one word, braces kept.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut level = 0usize;
    for c in text.chars() {
        match c {
            '{' if current.is_empty() || level > 0 => {
                level += 1;
                current.push(c);
            }
            '}' if level > 0 => {
                level -= 1;
                current.push(c);
            }
            c if c.is_whitespace() && level == 0 => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if level > 0 {
        return Err("a `{` without its `}`".to_owned());
    }
    if !current.is_empty() {
        words.push(current);
    }
    Ok(words)
}

/// The port of a service name (`smtp` 25, `submission` 587, `smtps`/`submissions`
/// 465, digits as they are), as `/etc/services` names them.
pub fn port(name: &str) -> Option<u16> {
    match name {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" | "urd" => Some(465),
        n => n.parse().ok(),
    }
}
