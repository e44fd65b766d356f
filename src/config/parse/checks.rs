//! Reading `header-checks` and `body-checks` rules (see [`crate::config::checks`]).
//! A child module of `parser`, for its helpers.
//!
//! Errors point where the text is: a bad pattern or action in a file at its line and
//! column in that file; an inline one at the KDL child (the pattern at the node name,
//! the action at its argument).

use std::sync::Arc;

use kdl::{KdlEntry, KdlNode};
use miette::NamedSource;

use super::tables::table_error;
use super::{Parser, Sets, resolve, suggest};
use crate::config::checks::{
    ACTIONS, ChecksConfig, ChecksSource, Content, DEFAULT_BODY_SIZE_LIMIT,
};
use crate::config::checks::{CheckAction, parse_action};
use crate::lookup::{Table, TableError, TableKind, parse_regexp};

const USAGE: &str = "header-checks file=\"header_checks\" | table=\"NAME\" | { \"/pattern/\" \"ACTION\" ... } [size-limit=\"50k\" on body-checks]";

/// Whether `result` is a valid action, as far as it can be known before it is
/// expanded: a result whose action word comes from `$n` is checked on the message.
pub(crate) fn check_result(
    result: &str,
    content: Content,
    filters: &super::filter::Filters,
) -> Result<(), String> {
    let result = result.trim();
    let (word, rest) = match result.find(char::is_whitespace) {
        Some(n) => (&result[..n], &result[n..]),
        None => (result, ""),
    };
    if word.contains('$') {
        return Ok(());
    }
    if rest.contains('$') {
        // only the action word is known; its argument is checked on the message
        let upper = word.to_ascii_uppercase();
        if !ACTIONS.contains(&upper.as_str()) {
            return parse_action(word, content)
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        return Ok(());
    }
    match parse_action(result, content).map_err(|e| e.to_string())? {
        CheckAction::Filter(name) if !filters.contains_key(&name) => {
            let hint = suggest(&name, filters.keys().map(String::as_str))
                .map_or_else(String::new, |s| format!(" ({s})"));
            Err(format!("no content filter named `{name}`{hint}"))
        }
        _ => Ok(()),
    }
}

fn action_help() -> String {
    format!("actions (header_checks(5)): {}", ACTIONS.join(", "))
}

impl Parser {
    /// The action of a `header-checks` / `body-checks` rule. Its properties other than
    /// `file`, `table` and `size-limit` are the rule's conditions, read by `rule`.
    pub(super) fn checks_rule(
        &mut self,
        node: &KdlNode,
        sets: &Sets,
        content: Content,
    ) -> Option<ChecksConfig> {
        let verb = content.rule_name();
        self.args(node, 0, Some(0), USAGE)?;
        let here = self.origin(node.name().span().offset());
        let mut file: Option<&KdlEntry> = None;
        let mut table: Option<&KdlEntry> = None;
        let mut size_limit = DEFAULT_BODY_SIZE_LIMIT;
        let mut ok = true;
        for entry in node.entries() {
            match entry.name().map(|n| n.value()) {
                Some("file") if file.is_none() => file = Some(entry),
                Some("table") if table.is_none() => table = Some(entry),
                Some("size-limit") => {
                    if content.is_header() {
                        self.error(
                            entry.span(),
                            "`size-limit` applies to body-checks only",
                            "not here",
                        );
                        ok = false;
                    } else {
                        match self.size(entry, "size-limit", 1, 1 << 30) {
                            Some(n) => size_limit = usize::try_from(n).unwrap_or(usize::MAX),
                            None => ok = false,
                        }
                    }
                }
                _ => {}
            }
        }
        let sources = usize::from(file.is_some())
            + usize::from(table.is_some())
            + usize::from(node.children().is_some());
        if sources != 1 {
            let message = if sources == 0 {
                format!("`{verb}` needs `file=`, `table=` or a block of patterns")
            } else {
                format!("`{verb}` takes one of `file=`, `table=` or a block, not several")
            };
            self.node_error(node, message, "table").help = Some(format!("usage: {USAGE}"));
            return None;
        }
        let defined = format!("{verb} rule at {here}");
        let (table, source) = if let Some(entry) = file {
            let path = self.string(entry, "file")?;
            if path.is_empty() {
                self.error(entry.span(), "file must not be empty", "empty path");
                return None;
            }
            let table = self.table_file(path, entry, parse_regexp, None)?;
            let full = resolve(&self.cur.path, path);
            if !self.check_file_results(&table, content, &full, path, &defined, &sets.filters) {
                return None;
            }
            (Arc::new(table), ChecksSource::File(Arc::from(path)))
        } else if let Some(entry) = table {
            let name = self.string(entry, "table name")?;
            let Some((found, origin)) = sets.tables.get(name) else {
                self.undefined_table(
                    entry,
                    name,
                    &sets.tables,
                    "table NAME type=\"regexp\" file=\"header_checks\"",
                );
                return None;
            };
            // None: the table had errors, already reported
            let found = found.clone()?;
            if found.kind() != TableKind::Regexp {
                self.error(
                    entry.span(),
                    format!(
                        "`{verb}` needs a regexp table; `{name}` is a {} table",
                        found.kind()
                    ),
                    "not a regexp table",
                )
                .help = Some(format!("`{name}` is defined at {origin}"));
                return None;
            }
            let (full, display) = self
                .table_files
                .get(name)
                .cloned()
                .unwrap_or_else(|| (Default::default(), name.to_owned()));
            if !self.check_file_results(&found, content, &full, &display, &defined, &sets.filters) {
                return None;
            }
            (found, ChecksSource::File(Arc::from(display.as_str())))
        } else {
            self.inline_checks(node, content, sets)?
        };
        ok.then_some(ChecksConfig {
            content,
            table,
            source,
            size_limit,
        })
    }

    /// Validates a table file's results as actions; errors point into the file.
    fn check_file_results(
        &mut self,
        table: &Table,
        content: Content,
        full: &std::path::Path,
        display: &str,
        defined: &str,
        filters: &super::filter::Filters,
    ) -> bool {
        let bad: Vec<TableError> = table
            .results()
            .iter()
            .filter_map(|r| {
                check_result(&r.text, content, filters)
                    .err()
                    .map(|message| TableError {
                        line: r.line,
                        column: r.column,
                        byte_span: r.byte_span.clone(),
                        message,
                        help: Some(action_help()),
                    })
            })
            .collect();
        if bad.is_empty() {
            return true;
        }
        let text = std::fs::read_to_string(full).unwrap_or_default();
        let source = NamedSource::new(display, Arc::new(text));
        for e in bad {
            self.errors.push(table_error(&source, display, e, defined));
        }
        false
    }

    /// `header-checks { "/pattern/flags" "ACTION"; ... }`: each child is one table
    /// line. Patterns are checked one by one (so an error is placed at its child),
    /// then compiled together as one table.
    fn inline_checks(
        &mut self,
        node: &KdlNode,
        content: Content,
        sets: &Sets,
    ) -> Option<(Arc<Table>, ChecksSource)> {
        let children = node.children()?;
        let mut text = String::new();
        let mut origins = Vec::new();
        let mut ok = true;
        for child in children.nodes() {
            self.check_annotations(child);
            self.props(child, &[]);
            self.no_children(child);
            let pattern = child.name().value();
            let Some(args) = self.args(child, 1, Some(1), "\"/pattern/flags\" \"ACTION text\"")
            else {
                ok = false;
                continue;
            };
            let Some(action) = self.string(args[0], "an action") else {
                ok = false;
                continue;
            };
            let trimmed = pattern.trim_start();
            let word = trimmed.split_whitespace().next().unwrap_or("");
            if pattern.is_empty()
                || pattern.contains(['\n', '\r'])
                || action.contains(['\n', '\r'])
                || trimmed.len() != pattern.len()
                || pattern.starts_with('#')
                || word.eq_ignore_ascii_case("endif")
                || (word.len() >= 2
                    && word.as_bytes()[..2].eq_ignore_ascii_case(b"if")
                    && !pattern.starts_with('/'))
            {
                self.error(
                    child.name().span(),
                    "an inline check is one pattern such as \"/^Subject:.*viagra/\" and one action; \
                     if/endif and line breaks need a file",
                    "not a pattern",
                );
                ok = false;
                continue;
            }
            let line = format!("{pattern} {action}\n");
            if let Err(errors) = parse_regexp(&line) {
                for e in errors {
                    let span = if e.byte_span.start < pattern.len() {
                        child.name().span()
                    } else {
                        args[0].span()
                    };
                    let err = self.error(span, e.message, "here");
                    err.help = e.help;
                }
                ok = false;
                continue;
            }
            if let Err(message) = check_result(action, content, &sets.filters) {
                self.error(args[0].span(), message, "bad action").help = Some(action_help());
                ok = false;
                continue;
            }
            text.push_str(&line);
            origins.push(self.origin(child.name().span().offset()));
        }
        if !ok {
            return None;
        }
        match parse_regexp(&text) {
            Ok(table) => Some((Arc::new(table), ChecksSource::Inline(origins.into()))),
            Err(errors) => {
                // each line parsed alone; together they cannot fail, but never panic
                for e in errors {
                    self.node_error(node, e.message, "here");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigErrors};

    const HEAD: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

    /// `(file, line, column, message)` of each error of a config (with files).
    fn errors(body: &str, files: &[(&str, &str)]) -> Vec<(String, u32, u32, String)> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("mtad.kdl");
        std::fs::write(&path, format!("{HEAD}{body}")).unwrap();
        let errors: ConfigErrors = Config::load(&path).expect_err("invalid");
        errors
            .errors
            .iter()
            .map(|e| {
                let l = e.location.as_ref().expect("located");
                let file = l.file.rsplit('/').next().unwrap().to_owned();
                (file, l.line, l.column, e.message.clone())
            })
            .collect()
    }

    #[test]
    fn file_errors_point_into_the_checks_file() {
        let got = errors(
            "stage \"data\" {\n    header-checks file=\"header_checks\"\n}\n",
            &[(
                "header_checks",
                "# comment\n/^Received:/ IGNORE\n/^X-A:/   FROB it\n/^X-B:/ FILTER smtp:[127.0.0.1]:10026\n/^X-C: (.*)/ $1\n/^X-D: (.*)/ REJECT $1\n/^X-E:/ PREPEND not a header\n",
            )],
        );
        let want = [
            ("header_checks", 3, 11, "unknown action `FROB`"),
            (
                "header_checks",
                4,
                9,
                "no content filter named `smtp:[127.0.0.1]:10026`",
            ),
            (
                "header_checks",
                7,
                9,
                "`PREPEND` on a header needs a header line `Name: value`, not `not a header`",
            ),
        ];
        let got: Vec<(&str, u32, u32, &str)> = got
            .iter()
            .map(|(f, l, c, m)| (f.as_str(), *l, *c, m.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_file_and_bad_pattern_in_file() {
        let got = errors(
            "stage \"data\" {\n    header-checks file=\"nope\"\n    body-checks file=\"body_checks\"\n}\n",
            &[("body_checks", "/a(/ REJECT\n")],
        );
        assert_eq!(got.len(), 2, "{got:?}");
        let missing = got.iter().find(|e| e.0 == "mtad.kdl").unwrap();
        assert_eq!((missing.1, missing.2), (7, 19));
        assert!(
            missing.3.contains("cannot read table file `nope`"),
            "{got:?}"
        );
        let bad = got.iter().find(|e| e.0 == "body_checks").unwrap();
        assert_eq!((bad.1, bad.2), (1, 2));
        assert!(bad.3.contains("invalid regular expression"), "{got:?}");
    }

    #[test]
    fn inline_errors_point_at_the_child() {
        let got = errors(
            "stage \"data\" {\n    header-checks {\n        \"/a(/\" \"REJECT\"\n        \"/^Subject:/\" \"FROB\"\n        \"/^X:/\" \"FILTER smtp:x\"\n        \"/^Y:/\" \"$2\"\n        \"endif\" \"DUNNO\"\n    }\n}\n",
            &[],
        );
        let got: Vec<(u32, u32, &str)> = got
            .iter()
            .map(|(_, l, c, m)| (*l, *c, m.as_str()))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (8, 9));
        assert!(got[0].2.contains("invalid regular expression"));
        assert_eq!(got[1], (9, 23, "unknown action `FROB`"));
        assert_eq!(got[2], (10, 17, "no content filter named `smtp:x`"));
        assert_eq!((got[3].0, got[3].1), (11, 17));
        assert!(got[3].2.contains("out of range"), "{got:?}");
        assert_eq!((got[4].0, got[4].1), (12, 9));
    }

    #[test]
    fn non_ascii_inline_patterns_load_and_bad_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mtad.kdl");
        std::fs::write(
            &path,
            format!("{HEAD}stage \"data\" {{\n    header-checks {{\n        \"/テスト/\" \"REJECT\"\n        \"/é/\" \"WARN e\"\n    }}\n}}\n"),
        )
        .unwrap();
        Config::load(&path).unwrap_or_else(|e| panic!("{}", crate::config::render(&e)));
        // a pattern word starting with a multi-byte character (it panicked on `if`)
        let got = errors(
            "stage \"data\" {\n    header-checks {\n        \"テスト\" \"REJECT\"\n        \"éf /x/\" \"REJECT\"\n    }\n}\n",
            &[],
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn table_and_placement_errors() {
        let got = errors(
            "table \"m\" file=\"map\"\ntable \"hc\" type=\"regexp\" file=\"hc\"\nstage \"rcpt\" {\n    header-checks table=\"hc\"\n}\nstage \"data\" {\n    header-checks table=\"m\"\n    header-checks table=\"nope\"\n    header-checks\n    header-checks table=\"hc\" size-limit=\"1k\"\n    header-checks table=\"hc\"\n}\n",
            &[("map", "a b\n"), ("hc", "/x/ REJECT\n/y/ BOGUS\n")],
        );
        let mut got: Vec<(&str, u32, u32, &str)> = got
            .iter()
            .map(|(f, l, c, m)| (f.as_str(), *l, *c, m.as_str()))
            .collect();
        // errors in the table file first, then the configuration's
        got.rotate_left(2);
        assert_eq!(got.len(), 7, "{got:#?}");
        assert_eq!((got[0].0, got[0].1, got[0].2), ("mtad.kdl", 9, 5));
        assert!(got[0].3.contains("no meaning in the rcpt stage"), "{got:?}");
        assert!(got[1].3.contains("needs a regexp table"), "{got:?}");
        assert!(got[2].3.contains("undefined table `nope`"), "{got:?}");
        assert!(got[3].3.contains("needs `file=`"), "{got:?}");
        assert!(got[4].3.contains("body-checks only"), "{got:?}");
        // a declared table's bad action is reported in its file (twice: two rules)
        assert_eq!(got[5], ("hc", 2, 5, "unknown action `BOGUS`"));
        assert_eq!(got[6], ("hc", 2, 5, "unknown action `BOGUS`"));
    }
}
