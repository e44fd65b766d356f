//! The one-way doors of `src/lib.rs`'s architecture map, checked on the source.
//!
//! Every `crate::` path in code (not in comments or strings), `use crate::{...}` groups
//! included, and every `super::` chain that climbs out of its top-level module, is an
//! import of that top-level module by the file's. The allowed imports are the table
//! below (the same as in `src/lib.rs`); a file that imports a module its own may not
//! fails the test with its file and line. `cargo test --test architecture -- --nocapture`
//! prints the graph as it is (`ARCH_SRC=other/src` for another checkout's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module, and the modules it may import. Leaves first; each module may
/// only import modules listed before it, so there is no cycle.
const ALLOWED: &[(&str, &[&str])] = &[
    ("logsafe", &[]),
    ("message", &[]),
    ("net", &[]),
    ("position", &[]),
    ("maillog", &["logsafe"]),
    ("milter", &["logsafe"]),
    ("lookup", &["logsafe", "message", "net", "position"]),
    ("queue", &["logsafe", "message"]),
    ("auth", &["logsafe", "lookup"]),
    ("mailauth", &["logsafe", "lookup", "message", "net"]),
    (
        "config",
        &[
            "logsafe", "lookup", "auth", "mailauth", "message", "net", "position", "milter",
        ],
    ),
    ("metrics", &["logsafe", "config", "mailauth"]),
    ("cluster", &["logsafe", "config", "metrics"]),
    (
        "policy",
        &[
            "logsafe", "lookup", "auth", "mailauth", "message", "net", "position", "config",
            "metrics", "maillog", "milter", "cluster",
        ],
    ),
    (
        "smtp",
        &[
            "logsafe", "lookup", "auth", "mailauth", "message", "net", "position", "config",
            "metrics", "policy", "queue", "maillog", "milter", "cluster",
        ],
    ),
    (
        "delivery",
        &[
            "logsafe", "lookup", "auth", "mailauth", "message", "net", "position", "config",
            "metrics", "policy", "queue", "maillog", "milter", "cluster",
        ],
    ),
    (
        "import",
        &["logsafe", "lookup", "message", "net", "position", "config"],
    ),
    (
        "control",
        &[
            "logsafe", "lookup", "auth", "mailauth", "message", "net", "position", "config",
            "metrics", "policy", "queue", "smtp", "delivery", "maillog", "milter", "cluster",
            "import",
        ],
    ),
];

/// One import: the file and line it is on.
#[derive(Debug)]
struct Use {
    file: PathBuf,
    line: usize,
}

/// `src/a/b.rs` → `["a", "b"]`; `src/a/mod.rs` → `["a"]`; `src/lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// `code` with comments, string and char literals blanked (newlines kept, so that
/// offsets still give lines).
fn strip(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && matches!(b.get(i + 1), Some(b'"' | b'#'))
        {
            // raw string: r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            let end = (j + close.len()).min(b.len());
            for &c in &b[i..end] {
                blank(&mut out, c);
            }
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            for &c in &b[i..end] {
                blank(&mut out, c);
            }
            i = end;
        } else if b[i] == b'\'' {
            // a char literal ('x', '\n', '\''), else a lifetime
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p + 1)
            } else {
                let ch = code[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
            };
            match end {
                Some(end) => {
                    for &c in &b[i..end] {
                        blank(&mut out, c);
                    }
                    i = end;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_at(b: &[u8], i: usize) -> &str {
    let end = b[i..]
        .iter()
        .position(|&c| !is_ident(c))
        .map_or(b.len(), |p| i + p);
    std::str::from_utf8(&b[i..end]).unwrap()
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The top-level modules a `{...}` group starting at `i` names first in each entry.
fn group_heads(b: &[u8], mut i: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expect_head = true,
            c if is_ident(c) && expect_head && depth == 1 => {
                heads.push(ident_at(b, i).to_owned());
                expect_head = false;
                i += heads.last().unwrap().len();
                continue;
            }
            c if !c.is_ascii_whitespace() && depth == 1 => expect_head = false,
            _ => {}
        }
        i += 1;
    }
    heads
}

/// Every top-level module `file` imports, with where.
fn imports(src: &Path, file: &Path, tops: &BTreeSet<String>) -> Vec<(String, usize)> {
    let code = strip(&std::fs::read_to_string(file).unwrap());
    let b = code.as_bytes();
    let path = module_path(src, file);
    let line_of = |i: usize| b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    // inline modules open at this point (`mod tests {`), with the brace depth of each
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let word = ident_at(b, i);
        let next = i + word.len();
        if word == "mod" {
            let j = skip_space(b, next);
            if j < b.len() && is_ident(b[j]) {
                let k = skip_space(b, j + ident_at(b, j).len());
                if b.get(k) == Some(&b'{') {
                    inline.push(depth + 1);
                }
            }
        }
        let mut heads: Vec<String> = Vec::new();
        if word == "crate" && b[next..].starts_with(b"::") {
            let j = next + 2;
            if b.get(j) == Some(&b'{') {
                heads = group_heads(b, j);
            } else if j < b.len() && is_ident(b[j]) {
                heads.push(ident_at(b, j).to_owned());
            }
        } else if word == "super" && b[next..].starts_with(b"::") {
            // climb: each `super` leaves one module (inline ones first)
            let mut level = path.len() + inline.len();
            let mut j = i;
            while b[j..].starts_with(b"super::") {
                level = level.saturating_sub(1);
                j += "super::".len();
            }
            if level == 0 {
                if b.get(j) == Some(&b'{') {
                    heads = group_heads(b, j);
                } else if j < b.len() && is_ident(b[j]) {
                    heads.push(ident_at(b, j).to_owned());
                }
            }
            i = j;
        }
        for h in heads {
            if tops.contains(&h) && path.first() != Some(&h) {
                out.push((h, line_of(i)));
            }
        }
        i = if i > next { i } else { next };
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (importer, imported) → every place it happens.
fn graph() -> BTreeMap<(String, String), Vec<Use>> {
    let src = source_dir();
    let tops: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| m.to_string()).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut graph: BTreeMap<(String, String), Vec<Use>> = BTreeMap::new();
    for file in files {
        let path = module_path(&src, &file);
        let Some(top) = path.first().filter(|t| tops.contains(*t)) else {
            continue; // lib.rs and the binaries
        };
        for (imported, line) in imports(&src, &file, &tops) {
            graph.entry((top.clone(), imported)).or_default().push(Use {
                file: file.strip_prefix(&src).unwrap().to_path_buf(),
                line,
            });
        }
    }
    graph
}

/// This crate's `src/`, or `ARCH_SRC` (to print another checkout's graph).
fn source_dir() -> PathBuf {
    std::env::var_os("ARCH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_top_level_module_is_in_the_table() {
    let src = source_dir();
    let known: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "bin" {
            continue;
        }
        assert!(
            known.contains(name.as_str()),
            "src/{name}: a top-level module that the architecture table does not know"
        );
    }
}

#[test]
fn a_module_is_its_files() {
    // no `#[path]`: a file's place says which module it is
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    for file in files {
        let code = strip(&std::fs::read_to_string(&file).unwrap());
        assert!(
            !code.contains("#[path"),
            "{}: #[path] attaches a file to a module its place does not name",
            file.display()
        );
    }
}

#[test]
fn the_table_has_no_cycle() {
    // each module imports only modules listed before it
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (module, allowed) in ALLOWED {
        for a in *allowed {
            assert!(seen.contains(a), "{module} may import {a}, listed after it");
        }
        seen.insert(module);
    }
}

#[test]
fn no_module_imports_one_it_must_not() {
    let graph = graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut table = String::from("imports (modules × modules, files):\n");
    let mut wrong = Vec::new();
    for ((from, to), uses) in &graph {
        let mut files: Vec<_> = uses.iter().map(|u| &u.file).collect();
        files.dedup();
        table.push_str(&format!("  {from:>9} → {to:<9} {}\n", files.len()));
        if !allowed[from.as_str()].contains(&to.as_str()) {
            for u in uses {
                wrong.push(format!(
                    "src/{}:{}: {from} imports {to}",
                    u.file.display(),
                    u.line
                ));
            }
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "imports against the one-way doors (tests/architecture.rs ALLOWED, src/lib.rs):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_what_it_should() {
    // the detector itself: groups, super chains out of a module, comments and strings
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("queue")).unwrap();
    std::fs::write(
        src.join("queue/mod.rs"),
        "use crate::{logsafe::esc, policy::{Pipeline}};\n\
         // crate::smtp in a comment\n\
         const S: &str = \"crate::control\";\n\
         const C: char = '\"';\n\
         fn f() { super::delivery::x(); let _ = crate::net::dns::Resolver::new; }\n\
         mod tests { use super::super::config::Config; fn g() { super::h(); } }\n",
    )
    .unwrap();
    let tops: BTreeSet<String> = [
        "logsafe", "policy", "smtp", "control", "delivery", "net", "config", "queue",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut found = imports(src, &src.join("queue/mod.rs"), &tops);
    found.sort();
    assert_eq!(
        found,
        vec![
            ("config".to_owned(), 6),
            ("delivery".to_owned(), 5),
            ("logsafe".to_owned(), 1),
            ("net".to_owned(), 5),
            ("policy".to_owned(), 1),
        ]
    );
}

/// The `[[package]]` entry of `name` in a Cargo.lock: its lines, as written.
fn lock_entry(lock: &str, name: &str) -> Vec<String> {
    lock.split("[[package]]")
        .find(|entry| {
            entry
                .lines()
                .any(|l| l.trim() == format!("name = \"{name}\""))
        })
        .map(|entry| {
            entry
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `fuzz/` is its own workspace with its own Cargo.lock (CI builds it `--locked`): a
/// dependency added to mtad must be added there too (`cargo metadata --offline` in
/// `fuzz/` does it), or CI's fuzz build fails after the whole test suite has passed.
/// fuzz/ builds mtad as a library, so its lock has mtad's dependencies without the
/// dev-dependencies.
#[test]
fn the_fuzz_lock_file_has_mtads_dependencies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let manifest = read("Cargo.toml");
    let dev = manifest
        .split("[dev-dependencies]")
        .nth(1)
        .expect("Cargo.toml has [dev-dependencies]");
    let dev: Vec<String> = dev
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(name, _)| format!("\"{}\",", name.trim()))
        })
        .collect();
    assert!(!dev.is_empty());
    let entry: Vec<String> = lock_entry(&read("Cargo.lock"), "mtad")
        .into_iter()
        .filter(|l| !dev.contains(l))
        .collect();
    assert!(
        entry.iter().any(|l| l.starts_with("dependencies")),
        "{entry:?}"
    );
    assert_eq!(
        lock_entry(&read("fuzz/Cargo.lock"), "mtad"),
        entry,
        "fuzz/Cargo.lock's mtad is not Cargo.lock's: run `cargo metadata --offline --format-version 1 >/dev/null` in fuzz/"
    );
}
