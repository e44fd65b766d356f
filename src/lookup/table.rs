//! Lookup tables: key → value maps in the Postfix formats operators already keep.
//!
//! Three kinds, each built once (from a file or the configuration) and immutable
//! afterwards, so a [`Table`] is shared by `Arc` between sessions:
//!
//! - **map** ([`parse_map`], [`inline_map`]): `key value` per line, as `postmap`
//!   reads a `hash:`/`texthash:` source file. Keys are case-folded; lookups are exact.
//! - **regexp** ([`parse_regexp`]): Postfix `regexp_table(5)`: `/pattern/flags result`,
//!   `!/pattern/ result`, nestable `if /pattern/` … `endif`, `$1` substitution. The
//!   first matching line in file order wins.
//! - **cidr** ([`parse_cidr`]): Postfix `cidr_table(5)`: `network/prefix result` or a
//!   bare address, `!` negation and `if`/`endif`; the first match in file order wins.
//!
//! The text formats share Postfix's line rules: blank lines and lines whose first
//! non-blank character is `#` are ignored, and a line that starts with whitespace
//! continues the previous logical line.
//!
//! Tables only do exact lookups of the key they are given; Postfix's search orders
//! (`user@domain`, then `domain`, then `.parent` ...) are the caller's business.
//!
//! Parsing collects every error with its line, column and byte span in the source
//! text, so the configuration can show each one with a caret. Duplicate keys in a map
//! file are not errors (Postfix warns and keeps the first); they are reported by
//! [`Table::warnings`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

use super::sql_table::{LookupError, SqlTable};
use crate::position::Positions;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// Which format a table was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// `key value` lines (Postfix `hash:` / `texthash:` sources) or an inline table.
    Map,
    /// Postfix `regexp:` tables.
    Regexp,
    /// Postfix `cidr:` tables.
    Cidr,
    /// A database query (`sql=` and `query=`), Postfix's `mysql:`/`pgsql:`/`sqlite:`.
    Sql,
}

impl TableKind {
    /// The name used in the configuration's `type=` property.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Map => "map",
            TableKind::Regexp => "regexp",
            TableKind::Cidr => "cidr",
            TableKind::Sql => "sql",
        }
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in a table's text, at a place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableError {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub column: u32,
    /// The offending text, as a byte range of the source.
    pub byte_span: Range<usize>,
    /// What is wrong, as one sentence.
    pub message: String,
    /// A suggestion, when there is one.
    pub help: Option<String>,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// One result of a regexp table as written, and where it is in the table's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultLine {
    /// The result text, `$n` references unexpanded.
    pub text: String,
    /// Line, from 1 (the line [`Table::lookup_with_line`] reports for it).
    pub line: u32,
    /// Column of the result's first character, from 1.
    pub column: u32,
    /// The result's bytes in the source text.
    pub byte_span: Range<usize>,
}

/// One line of a regexp table, as [`Table::pattern_lines`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternLine {
    /// `[!]/pattern/flags result`.
    Rule {
        pattern: String,
        negate: bool,
        result: String,
        /// The result refers to the pattern's captures (`$1`).
        substitutes: bool,
        line: u32,
    },
    /// `if [!]/pattern/flags`.
    If {
        pattern: String,
        negate: bool,
    },
    Endif,
}

/// A lookup table: immutable once built, `Send + Sync`.
pub struct Table {
    inner: Inner,
    warnings: Vec<TableError>,
    /// The name the configuration gives the table (SQL tables: what the decision log
    /// records their answers under); empty when unnamed.
    name: String,
}

enum Inner {
    Map(HashMap<String, (String, u32)>),
    Regexp(RegexpTable),
    Cidr(CidrTable),
    Sql(SqlTable),
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("kind", &self.kind())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    /// The table's format.
    pub fn kind(&self) -> TableKind {
        match self.inner {
            Inner::Map(_) => TableKind::Map,
            Inner::Regexp(_) => TableKind::Regexp,
            Inner::Cidr(_) => TableKind::Cidr,
            Inner::Sql(_) => TableKind::Sql,
        }
    }

    /// A table answered by a database.
    pub fn sql(table: SqlTable) -> Table {
        Table {
            inner: Inner::Sql(table),
            warnings: Vec::new(),
            name: String::new(),
        }
    }

    /// The table with its name in the configuration.
    pub fn named(mut self, name: &str) -> Table {
        self.name = name.to_owned();
        self
    }

    /// The table's name in the configuration (empty when unnamed).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database behind an SQL table.
    pub fn as_sql(&self) -> Option<&SqlTable> {
        match &self.inner {
            Inner::Sql(t) => Some(t),
            _ => None,
        }
    }

    /// The value for `key`, or `None`.
    ///
    /// - map: the entry for the exact key, case-insensitively;
    /// - regexp: the result of the first matching line, with `$n` expanded;
    /// - cidr: `key` is parsed as an IP address (`None` if it is not one); the result
    ///   of the first line whose network holds it;
    /// - sql: the query's answer (cached), or an error when the database gives none:
    ///   callers treat it as a temporary failure, never as "no such key".
    pub fn lookup(&self, key: &str) -> Result<Option<Cow<'_, str>>, LookupError> {
        match &self.inner {
            // an answer from outside the policy: through the decision's tape
            Inner::Sql(t) => {
                Ok(super::tape::table(&self.name, key, || t.lookup(key))?.map(Cow::Owned))
            }
            _ => Ok(self.lookup_with_line(key).map(|(value, _)| value)),
        }
    }

    /// Like [`Table::lookup`] for the file kinds, with the line of the table file that
    /// produced the value (for inline tables, the position of the entry, from 1).
    /// `None` for an SQL table (content checks never use one).
    pub fn lookup_with_line(&self, key: &str) -> Option<(Cow<'_, str>, u32)> {
        match &self.inner {
            Inner::Sql(_) => None,
            Inner::Map(map) => {
                let (value, line) = if key.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase())
                {
                    map.get(&key.to_lowercase())?
                } else {
                    map.get(key)?
                };
                Some((Cow::Borrowed(value.as_str()), *line))
            }
            Inner::Regexp(table) => table.lookup(key),
            Inner::Cidr(table) => {
                let ip = key.parse::<IpAddr>().ok()?;
                table.lookup(ip)
            }
        }
    }

    /// The number of entries: keys of a map, result lines of a regexp or cidr table
    /// (`if`/`endif` not counted).
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Map(map) => map.len(),
            Inner::Regexp(t) => t.rules,
            Inner::Cidr(t) => t.rules,
            Inner::Sql(_) => 0,
        }
    }

    /// Whether the table has no entry (every lookup then fails).
    /// A map's entries (key, value), in no particular order; empty for other kinds.
    pub fn map_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        let map = match &self.inner {
            Inner::Map(map) => Some(map),
            _ => None,
        };
        map.into_iter()
            .flatten()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A regexp table's result lines as written (`$n` references unexpanded), in file
    /// order, with where each is; empty for other kinds. Callers that give results a
    /// meaning (header_checks actions) validate them with this when the table is read.
    pub fn results(&self) -> &[ResultLine] {
        match &self.inner {
            Inner::Regexp(t) => &t.results,
            _ => &[],
        }
    }

    /// A regexp table's lines in order (`None` for other kinds): each pattern as a
    /// self-contained `regex` source (its flags spelt out), whether it is negated,
    /// and the result as written. For callers that write the table out as rules
    /// (`mtactl import postfix`), which keep its first-match order themselves.
    pub fn pattern_lines(&self) -> Option<Vec<PatternLine>> {
        let Inner::Regexp(t) = &self.inner else {
            return None;
        };
        let source = |i: usize| t.patterns.get(i).map_or("", |r| r.as_str()).to_owned();
        let mut results = t.results.iter();
        let mut out = Vec::new();
        for op in &t.ops {
            out.push(match op {
                Op::Rule {
                    cond,
                    negate,
                    result,
                    line,
                } => PatternLine::Rule {
                    pattern: source(*cond),
                    negate: *negate,
                    result: results.next().map_or_else(String::new, |r| r.text.clone()),
                    substitutes: result.has_groups(),
                    line: *line,
                },
                Op::If { cond, negate, .. } => PatternLine::If {
                    pattern: source(*cond),
                    negate: *negate,
                },
                Op::Endif => PatternLine::Endif,
            });
        }
        Some(out)
    }

    /// What Postfix would have warned about while reading the table (duplicate keys
    /// in a map: the first one is kept).
    pub fn warnings(&self) -> &[TableError] {
        &self.warnings
    }

    /// The same table, with what its reader would warn about.
    pub(crate) fn with_warnings(self, warnings: Vec<TableError>) -> Table {
        Table { warnings, ..self }
    }
}

// ---- line handling --------------------------------------------------------------

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One logical line: physical lines joined (continuations keep their leading
/// whitespace, lose their line break), with a map back to source offsets.
struct Logical<'t> {
    text: Cow<'t, str>,
    /// `(offset in text, offset in source)` at the start of each joined segment.
    segments: Vec<(usize, usize)>,
    /// The physical line it starts on, from 1.
    line: u32,
}

impl Logical<'_> {
    /// The source byte offset of `offset` in the joined text.
    fn source(&self, offset: usize) -> usize {
        let i = self.segments.partition_point(|&(j, _)| j <= offset) - 1;
        let (j, s) = self.segments[i];
        s + (offset - j)
    }

    fn source_span(&self, range: Range<usize>) -> Range<usize> {
        let start = self.source(range.start);
        // an empty span stays empty; otherwise map the last byte, then step past it
        let end = if range.end > range.start {
            self.source(range.end - 1) + 1
        } else {
            start
        };
        start..end.max(start)
    }
}

/// Splits `text` into logical lines, skipping blank and comment lines.
fn logical_lines(text: &str) -> Vec<Logical<'_>> {
    let mut out: Vec<Logical<'_>> = Vec::new();
    let mut offset = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw.len();
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = line.starts_with(|c: char| c.is_whitespace());
        match out.last_mut() {
            Some(last) if continues => {
                let at = last.text.len();
                last.text.to_mut().push_str(line);
                last.segments.push((at, start));
            }
            _ => out.push(Logical {
                text: Cow::Borrowed(line),
                segments: vec![(0, start)],
                line: to_u32(n + 1),
            }),
        }
    }
    out
}

/// Collects errors with positions.
struct Errors<'t> {
    positions: Positions<&'t str>,
    errors: Vec<TableError>,
}

impl<'t> Errors<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            positions: Positions::new(text),
            errors: Vec::new(),
        }
    }

    fn make(&self, span: Range<usize>, message: String, help: Option<String>) -> TableError {
        let (line, column) = self.positions.line_col(span.start);
        TableError {
            line,
            column,
            byte_span: span,
            message,
            help,
        }
    }

    /// An error at `range` of the logical line `l`.
    fn at(
        &mut self,
        l: &Logical<'_>,
        range: Range<usize>,
        message: impl Into<String>,
    ) -> &mut TableError {
        let e = self.make(l.source_span(range), message.into(), None);
        self.errors.push(e);
        self.errors.last_mut().expect("just pushed")
    }

    fn finish(self, table: Table) -> Result<Table, Vec<TableError>> {
        if self.errors.is_empty() {
            Ok(table)
        } else {
            Err(self.errors)
        }
    }
}

/// Splits off the first whitespace-delimited word: `(word range, rest start)`.
fn first_word(s: &str) -> Range<usize> {
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    0..end
}

/// The range of `s[from..]` with surrounding whitespace removed.
fn trimmed_range(s: &str, from: usize) -> Range<usize> {
    let rest = &s[from..];
    let start = from + (rest.len() - rest.trim_start().len());
    let end = from + rest.trim_end().len();
    start..end.max(start)
}

// ---- map ------------------------------------------------------------------------

/// Reads a `key value` table as `postmap` does: keys are lowercased, the value is the
/// rest of the logical line with surrounding whitespace removed. A key ends at the
/// first white space outside double quotes (`"john doe"@example.com` is one key,
/// quotes included, as in Postfix 3.2 and later); an unbalanced quote is an error. A key without a value
/// is an error; a repeated key keeps its first value and adds a warning.
pub fn parse_map(text: &str) -> Result<Table, Vec<TableError>> {
    let mut errors = Errors::new(text);
    let mut map: HashMap<String, (String, u32)> = HashMap::new();
    let mut warnings = Vec::new();
    for l in logical_lines(text) {
        // a key may hold white space inside double quotes (Postfix >= 3.2):
        // `"john doe"@example.com REJECT`
        let (end, open_quote) = super::alias::quoted_ranges(&l.text);
        let key = 0..end;
        if open_quote {
            errors
                .at(&l, 0..l.text.len(), "unbalanced `\"` in the key")
                .help =
                Some("Postfix ignores such a line with a warning; close the quote".to_owned());
            continue;
        }
        let value = trimmed_range(&l.text, key.end);
        if value.is_empty() {
            errors
                .at(&l, key.clone(), format!("`{}` has no value", &l.text[key]))
                .help = Some("expected `key value` on one line".to_owned());
            continue;
        }
        let k = l.text[key.clone()].to_lowercase();
        if let Some((_, first)) = map.get(&k) {
            let first = *first;
            let w = errors.make(
                l.source_span(key),
                format!("duplicate key `{k}`, ignored (first defined on line {first})"),
                None,
            );
            warnings.push(w);
            continue;
        }
        map.insert(k, (l.text[value].to_owned(), l.line));
    }
    errors.finish(Table {
        inner: Inner::Map(map),
        warnings,
        name: String::new(),
    })
}

/// A map from entries written in the configuration: keys are lowercased; the first of
/// two equal keys wins (the configuration reader reports duplicates itself). Lines are
/// the 1-based positions of the entries.
pub fn inline_map(entries: Vec<(String, String)>) -> Table {
    let mut map = HashMap::with_capacity(entries.len());
    for (i, (k, v)) in entries.into_iter().enumerate() {
        map.entry(k.to_lowercase()).or_insert((v, to_u32(i + 1)));
    }
    Table {
        inner: Inner::Map(map),
        warnings: Vec::new(),
        name: String::new(),
    }
}

// ---- shared by regexp and cidr: the if/endif structure --------------------------

/// One line of a regexp or cidr table. `C` is the condition (a pattern index or a
/// network).
enum Op<C> {
    /// A result line: if the condition holds (or, negated, does not), this is the
    /// answer.
    Rule {
        cond: C,
        negate: bool,
        result: Template,
        line: u32,
    },
    /// `if COND`: when it does not hold, continue at `end` (just after the `endif`).
    If {
        cond: C,
        negate: bool,
        end: usize,
    },
    Endif,
}

/// Finds the first rule whose condition holds, honouring `if` blocks. `holds(c)` says
/// whether a (non-negated) condition matches.
fn first_rule<C>(ops: &[Op<C>], mut holds: impl FnMut(&C) -> bool) -> Option<(&C, &Template, u32)> {
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Rule {
                cond,
                negate,
                result,
                line,
            } => {
                if holds(cond) != *negate {
                    return Some((cond, result, *line));
                }
                i += 1;
            }
            Op::If { cond, negate, end } => {
                i = if holds(cond) != *negate { i + 1 } else { *end };
            }
            Op::Endif => i += 1,
        }
    }
    None
}

/// The index of the op [`first_rule`] would pick.
fn first_rule_index<C>(ops: &[Op<C>], holds: impl FnMut(&C) -> bool) -> Option<usize> {
    let (_, _, line) = first_rule(ops, holds)?;
    ops.iter()
        .position(|op| matches!(op, Op::Rule { line: l, .. } if *l == line))
}

/// Tracks open `if`s while reading, and fills in where each one ends.
struct Nesting {
    /// Indices of open `If` ops, with the span of their keyword for errors.
    open: Vec<(usize, Range<usize>)>,
}

impl Nesting {
    /// Closes the innermost `if`: it jumps to the `endif` about to be pushed.
    fn close<C>(&mut self, ops: &mut [Op<C>]) -> bool {
        match self.open.pop() {
            Some((i, _)) => {
                let at = ops.len();
                // `i` is usize::MAX for an `if` whose condition was invalid
                if let Some(Op::If { end, .. }) = ops.get_mut(i) {
                    *end = at;
                }
                true
            }
            None => false,
        }
    }
}

/// `if` or `endif` at the start of a logical line (case-insensitive, as in Postfix).
enum Keyword {
    If(usize),
    Endif,
    None,
}

fn keyword(s: &str) -> Keyword {
    let word = first_word(s);
    let w = &s[word.clone()];
    if w.eq_ignore_ascii_case("endif") {
        Keyword::Endif
    } else if w.len() >= 2 && w.as_bytes()[..2].eq_ignore_ascii_case(b"if") {
        // `if /x/`, `if !/x/`; not `ifoo` (a pattern delimited by `i`, however odd)
        if w.len() == 2 || w[2..].starts_with('!') || !w.as_bytes()[2].is_ascii_alphanumeric() {
            let rest = &s[2..];
            Keyword::If(2 + (rest.len() - rest.trim_start().len()))
        } else {
            Keyword::None
        }
    } else {
        Keyword::None
    }
}

/// A result with `$n` references to the captures of the pattern that matched.
#[derive(Debug)]
struct Template {
    /// The result when it has no reference (the common case), else empty.
    plain: String,
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Group(usize),
}

impl Template {
    fn plain(text: &str) -> Self {
        Self {
            plain: text.to_owned(),
            parts: Vec::new(),
        }
    }

    fn has_groups(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Parses `$1`, `${1}`, `$(1)` and `$$` in `text`. On error: the byte range of the
    /// bad reference within `text` and a message.
    fn parse(text: &str, groups: usize) -> Result<Self, (Range<usize>, String)> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut any_group = false;
        while i < bytes.len() {
            let Some(off) = text[i..].find('$') else {
                lit.push_str(&text[i..]);
                break;
            };
            lit.push_str(&text[i..i + off]);
            let at = i + off;
            let next = bytes.get(at + 1).copied();
            let (digits, end) = match next {
                Some(b'$') => {
                    lit.push('$');
                    i = at + 2;
                    continue;
                }
                Some(open @ (b'{' | b'(')) => {
                    let close = if open == b'{' { '}' } else { ')' };
                    match text[at + 2..].find(close) {
                        Some(n) => (&text[at + 2..at + 2 + n], at + 3 + n),
                        None => {
                            return Err((
                                at..text.len(),
                                format!("unterminated `${}`", open as char),
                            ));
                        }
                    }
                }
                Some(b'0'..=b'9') => {
                    let n = text[at + 1..]
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(text.len() - at - 1);
                    (&text[at + 1..at + 1 + n], at + 1 + n)
                }
                _ => {
                    return Err((
                        at..at + 1 + usize::from(next.is_some()),
                        "`$` must be followed by a group number: $1, ${1}, or $$ for a literal `$`"
                            .to_owned(),
                    ));
                }
            };
            let n: usize = match digits.parse() {
                Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err((
                        at..end,
                        format!("`{}` is not a group number", &text[at..end]),
                    ));
                }
            };
            if n == 0 || n > groups {
                let have = match groups {
                    0 => "the pattern has no groups `( )`".to_owned(),
                    1 => "the pattern has 1 group".to_owned(),
                    g => format!("the pattern has {g} groups"),
                };
                return Err((
                    at..end,
                    format!("`{}` is out of range: {have}", &text[at..end]),
                ));
            }
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            parts.push(Part::Group(n));
            any_group = true;
            i = end;
        }
        if !any_group {
            return Ok(Self { plain: lit, parts });
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self {
            plain: String::new(),
            parts,
        })
    }

    fn expand(&self, caps: &regex::bytes::Captures<'_>) -> String {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Group(n) => {
                    if let Some(m) = caps.get(*n) {
                        out.extend_from_slice(m.as_bytes());
                    }
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// A condition read from a line: the condition, whether it is negated, where it ends in
/// the logical line, and for patterns, how many groups results may refer to (`None`:
/// results are taken literally).
type Cond<C> = (C, bool, usize, Option<usize>);

/// Reads the common shape of regexp and cidr lines. `cond` parses a condition from
/// `text[range]` of a logical line, returning the condition and where it ends.
fn parse_ops<C>(
    text: &str,
    errors: &mut Errors<'_>,
    mut cond: impl FnMut(&Logical<'_>, usize, &mut Errors<'_>) -> Option<Cond<C>>,
    what: &str,
) -> (Vec<Op<C>>, Vec<ResultLine>) {
    let mut ops: Vec<Op<C>> = Vec::new();
    let mut nesting = Nesting { open: Vec::new() };
    let mut rules = Vec::new();
    for l in logical_lines(text) {
        let s: &str = &l.text;
        match keyword(s) {
            Keyword::Endif => {
                let word = first_word(s);
                let extra = trimmed_range(s, word.end);
                if !extra.is_empty() {
                    errors.at(&l, extra, "unexpected text after `endif`");
                }
                if nesting.close(&mut ops) {
                    ops.push(Op::Endif);
                } else {
                    errors.at(&l, word, "`endif` without `if`");
                }
            }
            Keyword::If(start) => {
                if start >= s.len() {
                    errors.at(&l, 0..2, format!("`if` needs a {what}")).help = Some(format!(
                        "usage: if {}",
                        if what == "pattern" {
                            "/pattern/"
                        } else {
                            "NETWORK"
                        }
                    ));
                    continue;
                }
                let Some((c, negate, end, _)) = cond(&l, start, errors) else {
                    // keep the structure so that its `endif` is not reported too
                    nesting.open.push((usize::MAX, l.source_span(0..2)));
                    continue;
                };
                let extra = trimmed_range(s, end);
                if !extra.is_empty() {
                    errors.at(&l, extra, format!("unexpected text after the `if` {what}"));
                }
                nesting.open.push((ops.len(), l.source_span(0..2)));
                ops.push(Op::If {
                    cond: c,
                    negate,
                    end: usize::MAX,
                });
            }
            Keyword::None => {
                let Some((c, negate, end, groups)) = cond(&l, 0, errors) else {
                    continue;
                };
                let range = trimmed_range(s, end);
                if range.is_empty() {
                    errors
                        .at(&l, 0..end, format!("the {what} has no result"))
                        .help = Some(format!("expected `{what} result`"));
                    continue;
                }
                let result = match groups {
                    None => Template::plain(&s[range.clone()]),
                    Some(groups) => {
                        let groups = if negate { 0 } else { groups };
                        match Template::parse(&s[range.clone()], groups) {
                            Ok(t) => t,
                            Err((bad, mut message)) => {
                                if negate {
                                    message = format!(
                                        "{message} (a negated pattern has no groups to substitute)"
                                    );
                                }
                                errors.at(
                                    &l,
                                    range.start + bad.start..range.start + bad.end,
                                    message,
                                );
                                continue;
                            }
                        }
                    }
                };
                let span = l.source_span(range.clone());
                let (line, column) = errors.positions.line_col(span.start);
                rules.push(ResultLine {
                    text: s[range].to_owned(),
                    line,
                    column,
                    byte_span: span,
                });
                ops.push(Op::Rule {
                    cond: c,
                    negate,
                    result,
                    line: l.line,
                });
            }
        }
    }
    for (_, span) in std::mem::take(&mut nesting.open) {
        let e = errors.make(span, "`if` without `endif`".to_owned(), None);
        errors.errors.push(e);
    }
    (ops, rules)
}

// ---- regexp ---------------------------------------------------------------------

struct RegexpTable {
    ops: Vec<Op<usize>>,
    /// One per pattern, indexed by the ops' conditions; also used for captures.
    patterns: Vec<Regex>,
    /// All patterns at once: one pass over the key says which of them match.
    /// `None` when the set would be too large; each pattern is then tried in turn.
    set: Option<RegexSet>,
    /// The op that answers when no pattern matches at all (a negated rule, or none):
    /// most keys match nothing, and one `is_match` over the set then decides.
    if_none_match: Option<usize>,
    rules: usize,
    /// Every result line as written, for callers that give results a meaning.
    results: Vec<ResultLine>,
}

impl RegexpTable {
    fn lookup(&self, key: &str) -> Option<(Cow<'_, str>, u32)> {
        let hay = key.as_bytes();
        let (cond, template, line) = match &self.set {
            Some(set) if !set.is_match(hay) => match self.ops.get(self.if_none_match?)? {
                Op::Rule {
                    cond, result, line, ..
                } => (cond, result, *line),
                _ => return None,
            },
            Some(set) => {
                let matched = set.matches(hay);
                first_rule(&self.ops, |&p| matched.matched(p))?
            }
            None => first_rule(&self.ops, |&p| self.patterns[p].is_match(hay))?,
        };
        if !template.has_groups() {
            return Some((Cow::Borrowed(template.plain.as_str()), line));
        }
        // only non-negated rules have groups, so the pattern matched
        let caps = self.patterns[*cond].captures(hay)?;
        Some((Cow::Owned(template.expand(&caps)), line))
    }
}

/// Above this many patterns' worth of compiled program, the combined set is not
/// built and patterns are tried one by one.
const SET_SIZE_LIMIT: usize = 64 << 20;

/// A pattern as written (`/re/flags`), compiled the way Postfix would interpret it.
struct Pattern {
    regex: Regex,
    source: String,
    groups: usize,
}

/// Reads a Postfix regexp table (`regexp_table(5)`).
///
/// Patterns are POSIX-style extended regular expressions matched on bytes (ASCII
/// classes and case folding, like Postfix in the C locale), compiled by the `regex`
/// crate. Flags: `i` toggles case-insensitivity (on by default), `m` toggles
/// multi-line mode (`^`/`$` at line breaks, `.` not matching a newline; off by
/// default, where `.` matches any byte), `x` toggles extended syntax (on by default;
/// off means basic regular expressions: `\(`, `\)`, `\{`, `\}`, `\+`, `\?`, `\|` are
/// the operators). Any non-blank character may delimit the pattern.
pub fn parse_regexp(text: &str) -> Result<Table, Vec<TableError>> {
    let mut errors = Errors::new(text);
    let mut patterns: Vec<Pattern> = Vec::new();
    let (ops, results) = parse_ops(
        text,
        &mut errors,
        |l, start, errors| {
            let (p, negate, end) = regexp_pattern(l, start, errors)?;
            let groups = p.groups;
            patterns.push(p);
            Some((patterns.len() - 1, negate, end, Some(groups)))
        },
        "pattern",
    );
    let sources: Vec<&str> = patterns.iter().map(|p| p.source.as_str()).collect();
    let set = if errors.errors.is_empty() && !sources.is_empty() {
        RegexSetBuilder::new(&sources)
            .unicode(false)
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_SIZE_LIMIT)
            .build()
            .ok()
    } else {
        None
    };
    let if_none_match = first_rule_index(&ops, |_| false);
    errors.finish(Table {
        inner: Inner::Regexp(RegexpTable {
            if_none_match,
            ops,
            patterns: patterns.into_iter().map(|p| p.regex).collect(),
            set,
            rules: results.len(),
            results,
        }),
        warnings: Vec::new(),
        name: String::new(),
    })
}

/// Reads `[!]DELIM pattern DELIM flags` at `start` of a logical line.
fn regexp_pattern(
    l: &Logical<'_>,
    start: usize,
    errors: &mut Errors<'_>,
) -> Option<(Pattern, bool, usize)> {
    let s: &str = &l.text;
    let mut i = start;
    let negate = s[i..].starts_with('!');
    if negate {
        i += 1;
        i += s[i..].len() - s[i..].trim_start().len();
    }
    let Some(delim) = s[i..].chars().next().filter(|c| !c.is_whitespace()) else {
        errors
            .at(l, start..s.len(), "expected a pattern such as /regexp/")
            .help = Some("usage: /pattern/flags result".to_owned());
        return None;
    };
    let open = i;
    if !delim.is_ascii() {
        // Postfix takes one byte as the delimiter and then fails on the rest
        errors
            .at(
                l,
                open..open + delim.len_utf8(),
                format!("`{delim}` cannot delimit a pattern: use an ASCII character such as `/`"),
            )
            .help = Some("usage: /pattern/flags result".to_owned());
        return None;
    }
    let body_start = i + delim.len_utf8();
    let mut j = body_start;
    let mut close = None;
    let mut chars = s[body_start..].char_indices();
    while let Some((k, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == delim {
            close = Some(body_start + k);
            break;
        }
        j = body_start + k + c.len_utf8();
    }
    let Some(close) = close else {
        errors
            .at(
                l,
                open..j.max(open + 1),
                format!("the pattern has no closing `{delim}`"),
            )
            .help = Some("usage: /pattern/flags result".to_owned());
        return None;
    };
    let body = &s[body_start..close];
    let flags_start = close + delim.len_utf8();
    let flags_end = s[flags_start..]
        .find(char::is_whitespace)
        .map_or(s.len(), |n| flags_start + n);
    let (mut icase, mut multiline, mut extended) = (true, false, true);
    let mut ok = true;
    for (k, c) in s[flags_start..flags_end].char_indices() {
        match c {
            'i' => icase = !icase,
            'm' => multiline = !multiline,
            'x' => extended = !extended,
            _ => {
                let at = flags_start + k;
                errors
                    .at(l, at..flags_end, format!("unknown regexp flag `{c}`"))
                    .help = Some(
                    "flags are i (case), m (multi-line), x (extended syntax); put a space before the result, and write a `/` inside the pattern as `\\/`"
                        .to_owned(),
                );
                ok = false;
                break;
            }
        }
    }
    if body.is_empty() {
        errors.at(l, open..flags_start, "empty pattern");
        return None;
    }
    if !ok {
        return None;
    }
    let translated = if extended {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(basic_to_extended(body))
    };
    let translated = non_ascii_as_bytes(&translated);
    // the flags are all spelt out (`-i` too), so the source means the same wherever
    // it is compiled (see `Table::pattern_lines`)
    let source = format!(
        "(?{}{}){}",
        if multiline { "m" } else { "s" },
        if icase { "i" } else { "-i" },
        translated
    );
    match RegexBuilder::new(&source).unicode(false).build() {
        Ok(regex) => {
            let groups = regex.captures_len() - 1;
            Some((
                Pattern {
                    regex,
                    source,
                    groups,
                },
                negate,
                flags_end,
            ))
        }
        Err(e) => {
            let text = e.to_string();
            let detail = text
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text.lines().next().unwrap_or("invalid"))
                .to_owned();
            errors.at(
                l,
                body_start..close,
                format!("invalid regular expression: {detail}"),
            );
            None
        }
    }
}

/// Writes each non-ASCII character of a pattern as its UTF-8 bytes (`é` → `\\xC3\\xA9`):
/// Postfix's regcomp(3) runs in the C locale, where a pattern is a string of bytes
/// (`.` is one byte, `[é]` is either byte of é, case folding is ASCII only), and the
/// `regex` crate without Unicode refuses non-ASCII characters as such. A backslash
/// before a non-ASCII character only quotes it.
fn non_ascii_as_bytes(re: &str) -> Cow<'_, str> {
    if re.is_ascii() {
        return Cow::Borrowed(re);
    }
    let mut out = String::with_capacity(re.len() * 2);
    let mut chars = re.chars();
    let escape = |out: &mut String, c: char| {
        let mut buf = [0; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) if !n.is_ascii() => escape(&mut out, n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            c if !c.is_ascii() => escape(&mut out, c),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Rewrites a POSIX basic regular expression in extended syntax: `\(` `\)` `\{` `\}`
/// `\+` `\?` `\|` become operators, their bare forms literals. Bracket expressions are
/// copied as they are.
fn basic_to_extended(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 8);
    let mut chars = re.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(op @ ('(' | ')' | '{' | '}' | '+' | '?' | '|')) => out.push(op),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push_str("\\\\"),
            },
            '(' | ')' | '{' | '}' | '+' | '?' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '*' if at_start => out.push_str("\\*"),
            '[' => {
                out.push('[');
                // `]` right after `[` or `[^` is literal
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
                for c in chars.by_ref() {
                    out.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
        at_start = c == '^' && out.len() == 1;
    }
    out
}

// ---- cidr -----------------------------------------------------------------------

struct CidrTable {
    ops: Vec<Op<IpNet>>,
    rules: usize,
}

impl CidrTable {
    fn lookup(&self, ip: IpAddr) -> Option<(Cow<'_, str>, u32)> {
        // a v4-mapped IPv6 client also matches IPv4 entries, as in `networks`
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let (_, template, line) = first_rule(&self.ops, |net| {
            net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4))
        })?;
        Some((Cow::Borrowed(template.plain.as_str()), line))
    }
}

/// Reads a Postfix CIDR table (`cidr_table(5)`): `network/prefix result` or
/// `address result`, IPv4 or IPv6 (optionally inside `[ ]`), `!` before a network to
/// negate it, and `if NETWORK` … `endif`. A network with host bits set is an error.
pub fn parse_cidr(text: &str) -> Result<Table, Vec<TableError>> {
    let mut errors = Errors::new(text);
    let (ops, results) = parse_ops(text, &mut errors, cidr_network, "network");
    errors.finish(Table {
        inner: Inner::Cidr(CidrTable {
            ops,
            rules: results.len(),
        }),
        warnings: Vec::new(),
        name: String::new(),
    })
}

fn cidr_network(l: &Logical<'_>, start: usize, errors: &mut Errors<'_>) -> Option<Cond<IpNet>> {
    let s: &str = &l.text;
    let mut i = start;
    let negate = s[i..].starts_with('!');
    if negate {
        i += 1;
        i += s[i..].len() - s[i..].trim_start().len();
    }
    let end = s[i..].find(char::is_whitespace).map_or(s.len(), |n| i + n);
    let word = &s[i..end];
    if word.is_empty() {
        errors.at(l, start..end, "expected a network such as 192.0.2.0/24");
        return None;
    }
    // `[2001:db8::]/32` or `[2001:db8::1]`
    let unbracketed: Cow<'_, str> = match word.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((addr, tail)) => Cow::Owned(format!("{addr}{tail}")),
            None => Cow::Borrowed(word),
        },
        None => Cow::Borrowed(word),
    };
    let net = if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        IpNet::from(ip)
    } else {
        match unbracketed.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                errors
                    .at(l, i..end, format!("network `{word}` has host bits set"))
                    .help = Some(format!("did you mean `{}`?", net.trunc()));
                return None;
            }
            Ok(net) => net,
            Err(_) => {
                errors
                    .at(
                        l,
                        i..end,
                        format!("`{word}` is not a network or IP address"),
                    )
                    .help = Some("e.g. 192.0.2.0/24, 2001:db8::/32 or 192.0.2.7".to_owned());
                return None;
            }
        }
    };
    Some((net, negate, end, None))
}

#[cfg(test)]
mod tests;
