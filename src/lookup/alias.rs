//! aliases(5) files: `name: address, address, ...`, as Postfix's `newaliases` reads
//! them. The result is a map table from the (lowercased) local name to the
//! comma-separated addresses, so it is looked up like any other table.
//!
//! Comments (`#` first on a line) and blank lines are skipped; a line that starts
//! with whitespace continues the previous entry. Deliveries to a command
//! (`|program`), a file (`/path`) or an `:include:` list are refused: mtad does not
//! run programs or write files on behalf of an alias.

use std::collections::HashMap;

use super::table::{Table, TableError, inline_map};

/// Parses an aliases(5) file. Every error is returned, each with its place.
pub fn parse_aliases(text: &str) -> Result<Table, Vec<TableError>> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    // (line number, byte offset of its start, the logical line so far)
    let mut logical: Option<(u32, usize, String)> = None;
    let mut offset = 0;
    // the first line of each name, for the duplicate warning (the first entry wins, as
    // in Postfix's postalias, which warns too)
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut warnings = Vec::new();
    let mut flush = |entry: Option<(u32, usize, String)>,
                     entries: &mut Vec<(String, String)>,
                     errors: &mut Vec<TableError>| {
        if let Some((line, start, text)) = entry {
            match parse_entry(&text) {
                Ok((name, _)) if seen.contains_key(&name) => {
                    let first = seen[&name];
                    let end = text.find(':').unwrap_or(0);
                    warnings.push(TableError {
                        line,
                        column: 1,
                        byte_span: start..start + end.max(1),
                        message: format!(
                            "duplicate alias `{name}`, ignored (first defined on line {first})"
                        ),
                        help: None,
                    });
                }
                Ok((name, targets)) => {
                    seen.insert(name.clone(), line);
                    entries.push((name, targets.join(", ")));
                }
                Err((column, message)) => {
                    // the column is a byte offset within the first physical line
                    let first_line = text.split('\n').next().unwrap_or("").len();
                    let at = (column as usize - 1).min(first_line);
                    errors.push(TableError {
                        line,
                        column,
                        byte_span: start + at..start + first_line.max(at + 1),
                        message,
                        help: None,
                    })
                }
            }
        }
    };
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let start = offset;
        offset += raw.len();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match &mut logical {
                Some((_, _, text)) => {
                    text.push(' ');
                    text.push_str(line.trim());
                }
                None => errors.push(TableError {
                    line: number,
                    column: 1,
                    byte_span: start..start + line.len(),
                    message: "a continuation line with no entry before it".into(),
                    help: None,
                }),
            }
            continue;
        }
        flush(logical.take(), &mut entries, &mut errors);
        logical = Some((number, start, line.to_owned()));
    }
    flush(logical.take(), &mut entries, &mut errors);
    if errors.is_empty() {
        Ok(inline_map(entries).with_warnings(warnings))
    } else {
        Err(errors)
    }
}

/// `name: a, b` → (name, [a, b]); errors carry a 1-based column.
fn parse_entry(text: &str) -> Result<(String, Vec<String>), (u32, String)> {
    let Some((name, rest)) = text.split_once(':') else {
        return Err((1, "an alias is `name: address, address...`".into()));
    };
    let name = name.trim().trim_matches('"');
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err((1, format!("`{name}` is not an alias name")));
    }
    let mut targets = Vec::new();
    if quoted_ranges(rest).1 {
        let column = u32::try_from(text.len() - rest.len() + 1).unwrap_or(1);
        return Err((column, "unbalanced `\"` in the addresses".into()));
    }
    for target in split_on(rest, |c| c == ',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let column = u32::try_from(text.find(target).unwrap_or(0) + 1).unwrap_or(1);
        if target.starts_with('|')
            || target.starts_with('/')
            || target.to_ascii_lowercase().starts_with(":include:")
        {
            return Err((
                column,
                format!("`{target}`: mtad does not deliver to commands, files or :include: lists"),
            ));
        }
        let target = target.trim_matches(['<', '>']);
        if split_on(target, char::is_whitespace).nth(1).is_some()
            || target.contains(char::is_control)
        {
            return Err((column, format!("`{target}` is not an address")));
        }
        targets.push(target.to_owned());
    }
    if targets.is_empty() {
        return Err((1, format!("alias `{name}` has no addresses")));
    }
    Ok((name.to_ascii_lowercase(), targets))
}

/// The addresses of an alias or virtual(5) value: separated by commas or white
/// space, except inside a quoted local part (`"a,b"@example.com` is one address, as
/// in Postfix).
pub fn split_addresses(value: &str) -> impl Iterator<Item = &str> {
    split_on(value, |c| matches!(c, ',' | ' ' | '\t' | '\r' | '\n'))
        .map(|t| t.trim_matches(['<', '>']))
        .filter(|t| !t.is_empty())
}

/// The characters of `text` with their offsets, and whether each stands outside
/// double quotes (a backslash quotes the next character, as in Postfix's
/// `mystrtokdq`; quotes and backslashes themselves are not outside); then, once,
/// `None` with whether a quote was left open.
fn unquoted(text: &str) -> impl Iterator<Item = Result<(usize, char, bool), bool>> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    let mut chars = text.char_indices();
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let Some((i, c)) = chars.next() else {
            done = true;
            return Some(Err(quoted));
        };
        let outside = if escaped {
            escaped = false;
            false
        } else if c == '\\' {
            escaped = true;
            false
        } else if c == '"' {
            quoted = !quoted;
            false
        } else {
            !quoted
        };
        Some(Ok((i, c, outside)))
    })
}

/// `text` split at the characters `sep` accepts outside double quotes (a backslash
/// quotes the next character, as in Postfix's `mystrtokdq`).
pub(crate) fn split_on(text: &str, sep: impl Fn(char) -> bool) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        let cut = unquoted(s).find_map(|x| match x {
            Ok((i, c, true)) if sep(c) => Some(i),
            _ => None,
        });
        match cut {
            Some(i) => {
                let c = s[i..].chars().next().map_or(1, char::len_utf8);
                rest = Some(&s[i + c..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Where the first white space outside double quotes is in `text` (its length when
/// there is none), and whether a quote is left open (Postfix: "unbalanced `\"`").
pub(crate) fn quoted_ranges(text: &str) -> (usize, bool) {
    let mut end = None;
    let mut open = false;
    for x in unquoted(text) {
        match x {
            Ok((i, c, true)) if c.is_whitespace() && end.is_none() => end = Some(i),
            Ok(_) => {}
            Err(quoted) => open = quoted,
        }
    }
    (end.unwrap_or(text.len()), open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_file() {
        let t = parse_aliases(
            "# system aliases\npostmaster: root\nRoot: admin@example.com,\n  ops@example.com\n\nmailer-daemon: postmaster\n",
        )
        .unwrap();
        assert_eq!(
            t.lookup("root").unwrap().unwrap(),
            "admin@example.com, ops@example.com"
        );
        assert_eq!(t.lookup("POSTMASTER").unwrap().unwrap(), "root");
        assert_eq!(t.lookup("nobody").unwrap(), None);
    }

    /// postalias warns `duplicate entry: "dup"` and keeps the first; so do we, with
    /// the line of each.
    #[test]
    fn a_duplicate_alias_is_a_warning_and_the_first_wins() {
        let t = parse_aliases("dup: a@b\nother: x@y\nDup: c@d\n").unwrap();
        assert_eq!(t.lookup("dup").unwrap().unwrap(), "a@b");
        let w = t.warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, 3);
        assert_eq!(
            w[0].message,
            "duplicate alias `dup`, ignored (first defined on line 1)"
        );
    }

    /// `postalias -q root hash:aliases` (Postfix 3.7) answers
    /// `"a,b"@example.com, other@example.com`: two addresses; tests/postfix_tables.rs
    /// compares with postalias itself.
    #[test]
    fn a_comma_in_a_quoted_local_part_does_not_split() {
        let t = parse_aliases(
            "root: \"a,b\"@example.com, other@example.com\nq: \"c d\"@e.com,\"e,f\"@g\n",
        )
        .unwrap();
        let root = t.lookup("root").unwrap().unwrap();
        assert_eq!(root, "\"a,b\"@example.com, other@example.com");
        assert_eq!(
            split_addresses(&root).collect::<Vec<_>>(),
            ["\"a,b\"@example.com", "other@example.com"]
        );
        let q = t.lookup("q").unwrap().unwrap();
        assert_eq!(
            split_addresses(&q).collect::<Vec<_>>(),
            ["\"c d\"@e.com", "\"e,f\"@g"]
        );
        // virtual(5) values: white space separates too; a backslash quotes a quote
        assert_eq!(
            split_addresses("a@x b@y,<c@z>  \"d \\\" e\"@w").collect::<Vec<_>>(),
            ["a@x", "b@y", "c@z", "\"d \\\" e\"@w"]
        );
        let e = parse_aliases("bad: \"a,b@example.com\n").unwrap_err();
        assert!(e[0].message.contains("unbalanced"), "{e:?}");
    }

    #[test]
    fn refuses_programs_files_and_includes() {
        let errors = parse_aliases("ok: a@b\nbad: |/usr/bin/evil\nworse: /var/mail/x\ninc: :include:/etc/list\nnoaddr:\nno colon here\n")
            .unwrap_err();
        let lines: Vec<u32> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(errors[0].message.contains("does not deliver to commands"));
        assert_eq!(errors[0].column, 6);
    }
}
