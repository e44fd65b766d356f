//! Every table format mtad reads, each with its own parser: `type="map"` (Postfix's
//! hash:/texthash: source files), `type="regexp"` (regexp: and pcre: tables),
//! `type="cidr"`, `aliases` (aliases(5)), `users` passwd-files (Dovecot's format)
//! and `credentials` (sasl_passwd: a map whose values must be `user:password`, a rule
//! only the configuration loader applies, so that one is loaded through it).
//!
//! Input: one byte chooses the format, the rest is the file. A table that loads is
//! then queried: with the first word of each of its lines (so that its own keys,
//! patterns and networks are hit) and with a few fixed keys; results are expanded
//! (`$1`, `${2}`), as lookups do.

use mtad::auth::passwd::parse_passwd;
use mtad::lookup::{Table, parse_aliases, parse_cidr, parse_map, parse_regexp};

const PROBES: &[&str] = &[
    "",
    "root",
    "postmaster@example.com",
    "@example.com",
    "example.com",
    ".example.com",
    "user+ext@sub.example.com",
    "192.0.2.1",
    "2001:db8::1",
    "::ffff:192.0.2.1",
    "Subject: hello",
    "Content-Type: application/x-msdownload; name=\"a.exe\"",
    "テスト",
];

fn query(table: &Table, text: &str) {
    let _ = table.len();
    let _ = table.is_empty();
    let _ = table.results().len();
    let _ = table.warnings().len();
    for (k, v) in table.map_entries().take(64) {
        let _ = table.lookup(k);
        let _ = (k.len(), v.len());
    }
    let words = text
        .lines()
        .take(32)
        .filter_map(|l| l.split_whitespace().next());
    for key in words.chain(PROBES.iter().copied()) {
        let _ = table.lookup(key);
        let _ = table.lookup_with_line(key);
        // a key without its first character: a partial address, a shorter network
        if let Some((i, _)) = key.char_indices().nth(1) {
            let _ = table.lookup(&key[i..]);
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(file);
    let parsed = match kind % 6 {
        0 => parse_map(&text),
        1 => parse_regexp(&text),
        2 => parse_cidr(&text),
        3 => parse_aliases(&text),
        4 => {
            if let Ok(users) = parse_passwd(&text) {
                let _ = users.len();
                let _ = users.stand_in().map(|p| p.scheme());
                for line in text.lines().take(32) {
                    let user = line.split(':').next().unwrap_or("");
                    let _ = users.get(user).map(|p| p.scheme());
                    let _ = mtad::auth::passwd::lookup_name(user);
                }
            }
            return;
        }
        _ => {
            credentials(file);
            return;
        }
    };
    if let Ok(table) = parsed {
        query(&table, &text);
    }
}

/// `credentials "NAME" file="..."` through the configuration loader.
fn credentials(file: &[u8]) {
    let path = crate::write_scratch("sasl_passwd", file);
    let text = format!(
        "{}\ncredentials \"upstream\" file={}\n",
        BASE,
        crate::kdl_string(&path.to_string_lossy())
    );
    let name = crate::data_dir().join("mtad.kdl");
    let _ = crate::config::check(&name.to_string_lossy(), &text);
}

/// The smallest valid configuration, for targets that add one node to it.
pub const BASE: &str = r#"server {
    hostname "mx.example.test"
    spool "/nonexistent/mtad-fuzz/spool"
}
listen "mx" address="127.0.0.1:2525"
"#;
