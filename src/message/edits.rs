//! Edits of a message's bytes: by-name header changes (data hooks) and byte-range
//! edits of the message as received (header_checks / body_checks actions).

use std::ops::Range;

use super::headers::parse_headers;

/// A header change a data hook asked for. Names are matched without regard to ASCII
/// case; values are already free of CR, LF and control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderChange {
    /// Add a header (at the top, like a trace header, or wherever the writer puts
    /// added headers).
    Add { name: String, value: String },
    /// Remove every header of this name.
    Remove { name: String },
    /// Replace the first header of this name, or add it if there is none.
    Replace { name: String, value: String },
}

/// `message[range]` becomes `text` (empty text: removed; empty range: inserted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEdit {
    pub range: Range<usize>,
    pub text: Vec<u8>,
}

/// The message with `edits` applied. Edits are sorted by position (stable: two edits
/// at one place keep their order); an edit overlapping an earlier one is dropped.
pub fn apply_raw_edits(message: &[u8], edits: &[RawEdit]) -> Vec<u8> {
    let mut sorted: Vec<&RawEdit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.range.start);
    let mut out = Vec::with_capacity(message.len() + 256);
    let mut at = 0;
    for e in sorted {
        let (start, end) = (
            e.range.start.min(message.len()),
            e.range.end.min(message.len()),
        );
        if start < at || end < start {
            continue;
        }
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(&e.text);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// The message with `edits` applied in order; the body is untouched. Names and values
/// must already be clean (no CR/LF, names without `:` or spaces): the script host
/// checks them.
pub fn apply_header_edits(message: &[u8], edits: &[HeaderChange]) -> Vec<u8> {
    if edits.is_empty() {
        return message.to_vec();
    }
    let (headers, body_start) = parse_headers(message);
    // each original header: kept as its raw bytes, replaced by a new line, or gone
    // (one byte per header, and only the changed ones hold text)
    let mut removed = vec![false; headers.len()];
    let mut replaced: std::collections::HashMap<usize, Vec<u8>> = Default::default();
    // headers added, in order: (name, the line, or None once removed)
    let mut added: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let render = |name: &str, value: &str| format!("{name}: {value}\r\n").into_bytes();
    for edit in edits {
        match edit {
            HeaderChange::Add { name, value } => {
                added.push((name.clone(), Some(render(name, value))))
            }
            HeaderChange::Remove { name } => {
                for (i, h) in headers.iter().enumerate() {
                    if h.name().eq_ignore_ascii_case(name) {
                        removed[i] = true;
                        replaced.remove(&i);
                    }
                }
                for (n, line) in &mut added {
                    if n.eq_ignore_ascii_case(name) {
                        *line = None;
                    }
                }
            }
            HeaderChange::Replace { name, value } => {
                let original = headers
                    .iter()
                    .enumerate()
                    .position(|(i, h)| !removed[i] && h.name().eq_ignore_ascii_case(name));
                if let Some(i) = original {
                    replaced.insert(i, render(name, value));
                } else {
                    match added
                        .iter_mut()
                        .find(|(n, line)| line.is_some() && n.eq_ignore_ascii_case(name))
                    {
                        Some((_, line)) => *line = Some(render(name, value)),
                        None => added.push((name.clone(), Some(render(name, value)))),
                    }
                }
            }
        }
    }
    let header_end = headers.iter().next_back().map_or(0, |h| h.raw().end);
    let mut out = Vec::with_capacity(message.len() + 256);
    for (i, h) in headers.iter().enumerate() {
        if removed[i] {
            continue;
        }
        match replaced.get(&i) {
            Some(line) => out.extend_from_slice(line),
            None => out.extend_from_slice(&message[h.raw()]),
        }
    }
    for line in added.into_iter().filter_map(|(_, line)| line) {
        out.extend_from_slice(&line);
    }
    // whatever separated headers and body (the empty line), then the body
    out.extend_from_slice(&message[header_end.min(body_start)..]);
    out
}
