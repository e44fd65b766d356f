//! `main.cf`: its lines, and the values of parameters as Postfix reads them.
//!
//! A logical line is `name = value`; a line that starts with white space continues the
//! one before; a line whose first non-blank character is `#` is a comment, also in the
//! middle of a continued line; a later setting of a name replaces an earlier one (as
//! `postconf` warns). Values are expanded as Postfix's `mac_expand` does: `$name`,
//! `${name}`, `$(name)`, `${name?text}`, `${name:text}`, `${name?{a}:{b}}` and the
//! relational `${{a} OP {b} ? {x} : {y}}` (`==`, `!=`, `<`, `<=`, `>`, `>=`, each
//! optionally followed by `level` to compare compatibility levels) that `postconf -d`
//! uses to give the defaults of each `compatibility_level`.

use std::collections::BTreeMap;

/// The largest `main.cf` or `master.cf` read (Postfix's own files are a few KiB).
pub const MAX_FILE: usize = 4 << 20;
/// How deep `$name` may refer to `$other` (a loop `a = $b`, `b = $a` ends here).
const MAX_DEPTH: usize = 30;
/// The longest expanded value.
const MAX_VALUE: usize = 1 << 20;

/// The defaults of the Postfix this was built against (`postconf -d`, see
/// `regenerate-defaults.sh`), without the ones computed from the host.
const DEFAULTS: &str = include_str!("postconf-defaults.txt");

/// One setting of a file: its value as written and the line it starts on (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub line: usize,
}

/// A line that is not a setting (Postfix stops at it: `missing '=' after attribute
/// name`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("main.cf:{line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Logical lines of a Postfix configuration file (main.cf, master.cf, a `.cf` table
/// file): each with the line it starts on, continuation lines joined with a space,
/// comments and blank lines dropped.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = raw.starts_with([' ', '\t']);
        match lines.last_mut() {
            Some((_, last)) if continues => {
                last.push(' ');
                last.push_str(trimmed.trim_end());
            }
            _ => lines.push((i + 1, trimmed.trim_end().to_owned())),
        }
    }
    lines
}

/// The settings of a main.cf, in the order first written.
#[derive(Clone, Debug, Default)]
pub struct MainCf {
    pub settings: BTreeMap<String, Setting>,
    /// Names in the order they first appear (what `postconf -n` lists, sorted there).
    pub order: Vec<String>,
    /// Names set twice: the later value wins, as in Postfix.
    pub repeated: Vec<(String, usize)>,
}

impl MainCf {
    /// Reads `text`; every line that is not `name = value` is an error.
    pub fn parse(text: &str) -> Result<MainCf, Vec<SyntaxError>> {
        let mut cf = MainCf::default();
        let mut errors = Vec::new();
        for (line, logical) in logical_lines(text) {
            let Some((name, value)) = logical.split_once('=') else {
                errors.push(SyntaxError {
                    line,
                    message: format!("missing '=' after parameter name in {logical:?}"),
                });
                continue;
            };
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                errors.push(SyntaxError {
                    line,
                    message: format!("{name:?} is not a parameter name"),
                });
                continue;
            }
            let setting = Setting {
                value: value.trim().to_owned(),
                line,
            };
            if cf.settings.insert(name.to_owned(), setting).is_some() {
                cf.repeated.push((name.to_owned(), line));
            } else {
                cf.order.push(name.to_owned());
            }
        }
        if errors.is_empty() {
            Ok(cf)
        } else {
            Err(errors)
        }
    }
}

/// Why a value could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("`${0}` refers to itself (or nests deeper than {MAX_DEPTH})")]
    TooDeep(String),
    #[error("the value of `{0}` expands to more than 1 MiB")]
    TooLong(String),
    #[error("unbalanced `{{` or `(` in the value of `{0}`")]
    Unbalanced(String),
    #[error("`{1}` in the value of `{0}` is not a condition Postfix knows")]
    BadCondition(String, String),
}

/// Every parameter's value: the imported main.cf over Postfix's defaults, and (for one
/// master.cf service) its `-o` overrides over both.
#[derive(Clone, Debug)]
pub struct Params {
    defaults: BTreeMap<String, String>,
    main: BTreeMap<String, String>,
    overrides: BTreeMap<String, String>,
}

impl Params {
    /// The parameters of `cf` over the defaults; `hostname` stands for Postfix's
    /// built-in default of `myhostname` (the host's name) when main.cf does not set it.
    pub fn new(cf: &MainCf, hostname: &str) -> Params {
        let mut defaults: BTreeMap<String, String> = DEFAULTS
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(" = ").or_else(|| l.split_once(" =")))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // the ones computed from the host (left out of the table)
        defaults.insert("myhostname".into(), hostname.to_owned());
        let domain = match hostname.split_once('.') {
            Some((_, rest)) if rest.contains('.') || !rest.is_empty() => rest.to_owned(),
            _ => "localdomain".to_owned(),
        };
        defaults.insert("mydomain".into(), domain);
        defaults.insert("mynetworks".into(), String::new());
        Params {
            defaults,
            main: cf
                .settings
                .iter()
                .map(|(k, s)| (k.clone(), s.value.clone()))
                .collect(),
            overrides: BTreeMap::new(),
        }
    }

    /// The same parameters with a master.cf service's `-o name=value` on top.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Params {
        let mut p = self.clone();
        for (k, v) in overrides {
            p.overrides.insert(k.clone(), v.clone());
        }
        p
    }

    /// Whether Postfix knows `name` (a default exists), or main.cf or an override sets it.
    pub fn known(&self, name: &str) -> bool {
        self.defaults.contains_key(name)
            || self.main.contains_key(name)
            || self.overrides.contains_key(name)
    }

    /// Whether Postfix has a default for `name` (it is one of its parameters).
    pub fn has_default(&self, name: &str) -> bool {
        self.defaults.contains_key(name)
    }

    /// Whether main.cf or an override sets `name` (else its default applies).
    pub fn is_set(&self, name: &str) -> bool {
        self.main.contains_key(name) || self.overrides.contains_key(name)
    }

    /// The value as written (not expanded), or the default; `None` for a name Postfix
    /// does not know and nobody set.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.overrides
            .get(name)
            .or_else(|| self.main.get(name))
            .or_else(|| self.defaults.get(name))
            .map(String::as_str)
    }

    /// The value, expanded.
    pub fn get(&self, name: &str) -> Result<String, ExpandError> {
        let mut out = String::new();
        self.expand_name(name, &mut out, 0)?;
        Ok(out)
    }

    /// `text` expanded in these parameters (a `-o` value, a table's name).
    pub fn expand(&self, text: &str) -> Result<String, ExpandError> {
        let mut out = String::new();
        self.expand_into("(value)", text, &mut out, 0)?;
        Ok(out)
    }

    /// The value split into a list, as Postfix splits lists: at commas and white space,
    /// `{ ... }` kept together (its braces removed from the ends).
    pub fn list(&self, name: &str) -> Result<Vec<String>, ExpandError> {
        Ok(split_list(&self.get(name)?))
    }

    /// A yes/no parameter.
    pub fn flag(&self, name: &str) -> Result<bool, ExpandError> {
        Ok(self.get(name)?.eq_ignore_ascii_case("yes"))
    }

    fn expand_name(&self, name: &str, out: &mut String, depth: usize) -> Result<(), ExpandError> {
        if depth > MAX_DEPTH {
            return Err(ExpandError::TooDeep(name.to_owned()));
        }
        let Some(raw) = self.raw(name) else {
            return Ok(());
        };
        let raw = raw.to_owned();
        self.expand_into(name, &raw, out, depth + 1)
    }

    fn expand_into(
        &self,
        owner: &str,
        text: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), ExpandError> {
        if depth > MAX_DEPTH {
            return Err(ExpandError::TooDeep(owner.to_owned()));
        }
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            if out.len() > MAX_VALUE {
                return Err(ExpandError::TooLong(owner.to_owned()));
            }
            let after = &rest[at + 1..];
            match after.chars().next() {
                Some('$') => {
                    out.push('$');
                    rest = &after[1..];
                }
                Some(open @ ('{' | '(')) => {
                    let close = if open == '{' { '}' } else { ')' };
                    let Some(end) = matching(after, open, close) else {
                        return Err(ExpandError::Unbalanced(owner.to_owned()));
                    };
                    let inner = &after[1..end];
                    self.expand_braced(owner, inner, out, depth)?;
                    rest = &after[end + 1..];
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                    let len = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    self.expand_name(&after[..len], out, depth)?;
                    rest = &after[len..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        if out.len() > MAX_VALUE {
            return Err(ExpandError::TooLong(owner.to_owned()));
        }
        Ok(())
    }

    /// What stands between `${` and `}`.
    fn expand_braced(
        &self,
        owner: &str,
        inner: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), ExpandError> {
        let inner = inner.trim();
        if inner.starts_with('{') {
            return self.expand_relational(owner, inner, out, depth);
        }
        let len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, tail) = inner.split_at(len);
        if name.is_empty() {
            return Err(ExpandError::BadCondition(owner.into(), inner.into()));
        }
        let tail = tail.trim_start();
        if tail.is_empty() {
            return self.expand_name(name, out, depth);
        }
        let mut value = String::new();
        self.expand_name(name, &mut value, depth)?;
        let set = !value.is_empty();
        let (op, text) = tail.split_at(1);
        let text = text.trim();
        let (when_set, when_unset) = match op {
            "?" | ":" if text.starts_with('{') => {
                let (a, b) = braced_pair(text)
                    .ok_or_else(|| ExpandError::BadCondition(owner.into(), inner.into()))?;
                if op == "?" {
                    (Some(a), b)
                } else {
                    (None, Some(a))
                }
            }
            "?" => (Some(text), None),
            ":" => (None, Some(text)),
            _ => return Err(ExpandError::BadCondition(owner.into(), inner.into())),
        };
        let chosen = if set { when_set } else { when_unset };
        if let Some(t) = chosen {
            self.expand_into(owner, t, out, depth + 1)?;
        }
        Ok(())
    }

    /// `{a} OP {b} ? {x} : {y}`.
    fn expand_relational(
        &self,
        owner: &str,
        inner: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), ExpandError> {
        let bad = || ExpandError::BadCondition(owner.into(), inner.into());
        let (left, rest) = take_braced(inner).ok_or_else(bad)?;
        let rest = rest.trim_start();
        let op_len = rest
            .find(|c: char| c.is_whitespace() || c == '{')
            .unwrap_or(rest.len());
        let (op, rest) = rest.split_at(op_len);
        let (right, rest) = take_braced(rest.trim_start()).ok_or_else(bad)?;
        let rest = rest.trim_start().strip_prefix('?').ok_or_else(bad)?.trim();
        let (when_true, when_false) = braced_pair(rest).ok_or_else(bad)?;
        let mut l = String::new();
        self.expand_into(owner, left, &mut l, depth + 1)?;
        let mut r = String::new();
        self.expand_into(owner, right, &mut r, depth + 1)?;
        let (op, level) = match op.strip_suffix("level") {
            Some(op) => (op, true),
            None => (op, false),
        };
        let ordering = if level {
            compare_levels(&l, &r)
        } else {
            match (l.trim().parse::<i64>(), r.trim().parse::<i64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => l.cmp(&r),
            }
        };
        use std::cmp::Ordering::*;
        let holds = match op {
            "==" => ordering == Equal,
            "!=" => ordering != Equal,
            "<" => ordering == Less,
            "<=" => ordering != Greater,
            ">" => ordering == Greater,
            ">=" => ordering != Less,
            _ => return Err(bad()),
        };
        let chosen = if holds { Some(when_true) } else { when_false };
        if let Some(t) = chosen {
            self.expand_into(owner, t, out, depth + 1)?;
        }
        Ok(())
    }
}

/// Compares two compatibility levels (`2`, `3.6`, `3.6.1`): numerically, part by part.
pub fn compare_levels(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> {
        s.trim()
            .split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parts(a), parts(b));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a.cmp(&b)
}

/// The index in `text` (which starts with `open`) of the `close` that matches it.
fn matching(text: &str, open: char, close: char) -> Option<usize> {
    let mut level = 0usize;
    for (i, c) in text.char_indices() {
        if c == open {
            level += 1;
        } else if c == close {
            level = level.checked_sub(1)?;
            if level == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// `{text} rest` → (`text`, `rest`).
fn take_braced(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('{') {
        return None;
    }
    let end = matching(text, '{', '}')?;
    Some((&text[1..end], &text[end + 1..]))
}

/// `{a}` or `{a} : {b}` (also `{a}:{b}`).
fn braced_pair(text: &str) -> Option<(&str, Option<&str>)> {
    let (a, rest) = take_braced(text)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Some((a, None));
    }
    let rest = rest.strip_prefix(':')?.trim();
    let (b, tail) = take_braced(rest)?;
    tail.trim().is_empty().then_some((a, Some(b)))
}

/// Splits a Postfix list value at commas and white space; `{ ... }` is one element
/// (without its outer braces, trimmed).
pub fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut level = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                if level == 0 && !current.is_empty() {
                    items.push(std::mem::take(&mut current));
                }
                level += 1;
                current.push(c);
            }
            '}' if level > 0 => {
                level -= 1;
                current.push(c);
                if level == 0 {
                    items.push(std::mem::take(&mut current));
                }
            }
            ',' | ' ' | '\t' | '\n' | '\r' if level == 0 => {
                if !current.is_empty() {
                    items.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        items.push(current);
    }
    items
        .into_iter()
        .map(
            |i| match i.strip_prefix('{').and_then(|i| i.strip_suffix('}')) {
                Some(inner) => inner.trim().to_owned(),
                None => i,
            },
        )
        .filter(|i| !i.is_empty())
        .collect()
}
