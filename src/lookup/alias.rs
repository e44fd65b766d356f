//! aliases(5) files: `name: address, address, ...`, as Postfix's `newaliases` reads
//! them. The result is a map table from the (lowercased) local name to the
//! comma-separated addresses, so it is looked up like any other table.
//!
//! Comments (`#` first on a line) and blank lines are skipped; a line that starts
//! with whitespace continues the previous entry. Deliveries to a command
//! (`|program`), a file (`/path`) or an `:include:` list are refused: mtad does not
//! run programs or write files on behalf of an alias.

use super::table::{Table, TableError, inline_map};

/// Parses an aliases(5) file. Every error is returned, each with its place.
pub fn parse_aliases(text: &str) -> Result<Table, Vec<TableError>> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    // (line number, byte offset of its start, the logical line so far)
    let mut logical: Option<(u32, usize, String)> = None;
    let mut offset = 0;
    let flush = |entry: Option<(u32, usize, String)>,
                 entries: &mut Vec<(String, String)>,
                 errors: &mut Vec<TableError>| {
        if let Some((line, start, text)) = entry {
            match parse_entry(&text) {
                Ok((name, targets)) => entries.push((name, targets.join(", "))),
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
        Ok(inline_map(entries))
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
    for target in rest.split(',').map(str::trim).filter(|t| !t.is_empty()) {
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
        if target.contains(char::is_whitespace) || target.contains(char::is_control) {
            return Err((column, format!("`{target}` is not an address")));
        }
        targets.push(target.to_owned());
    }
    if targets.is_empty() {
        return Err((1, format!("alias `{name}` has no addresses")));
    }
    Ok((name.to_ascii_lowercase(), targets))
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
