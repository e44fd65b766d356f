//! Tables, aliases and header checks side by side with Postfix's own tools
//! (`postmap -q`, `postmap -h -q -`, `postalias -q`) on the same input: what mtad
//! answers must be what Postfix answers.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use mtad::lookup::{parse_aliases, parse_map, parse_regexp, split_addresses};
use mtad::policy::parse_headers;

/// A Postfix tool run with an empty configuration directory (the machine has no
/// /etc/postfix/main.cf): `(exit code, stdout)`.
fn postfix(dir: &Path, tool: &str, args: &[&str], stdin: &[u8]) -> (i32, String) {
    let conf = dir.join("postfix-conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("main.cf"), "").unwrap();
    let mut child = Command::new(common::require_tool(tool))
        .arg("-c")
        .arg(&conf)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn mtactl_lookup(dir: &Path, table: &str, key: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["lookup", "--config"])
        .arg(dir.join("mtad.kdl"))
        .args([table, key])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const HEAD: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

const JAPANESE: &str = "/テスト/ REJECT jp\n/^.$/ ONE\n/^..$/ TWO\n/É/ UPPER\n/[ü]/ CLASS\nif /^X/\n/ス/ X-SU\nendif\n";

#[test]
fn non_ascii_regexp_patterns_answer_as_postmap() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("re"), JAPANESE).unwrap();
    std::fs::write(
        dir.path().join("mtad.kdl"),
        format!("{HEAD}table \"re\" type=\"regexp\" file=\"re\"\n"),
    )
    .unwrap();
    let keys = [
        "テスト",
        "これはテストです",
        "a",
        "é",
        "xÉx",
        "xéx",
        "xxöxx",
        "Xス",
        "Yス",
        "nothing",
    ];
    for key in keys {
        let want = postfix(dir.path(), "postmap", &["-q", key, "regexp:re"], b"");
        let got = mtactl_lookup(dir.path(), "re", key);
        assert_eq!(got, want, "key {key:?}");
    }
    // mtactl check accepts such a table as header checks (it used to panic, exit 101)
    std::fs::write(
        dir.path().join("header_checks"),
        "/^Subject:.*テスト/ REJECT 5.7.1 no tests\n/é/ WARN e\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mtad.kdl"),
        format!("{HEAD}stage \"data\" {{\n    header-checks file=\"header_checks\"\n}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config"])
        .arg(dir.path().join("mtad.kdl"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quoted_map_keys_answer_as_postmap() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\"john doe\"@example.com  REJECT quoted\n\"a b\" plain\n\"x\\\" y\"@e.com  ESC\na\"b c\"d  MID\nplain@example.com OK\n";
    std::fs::write(dir.path().join("map"), text).unwrap();
    std::fs::write(dir.path().join("map.db-src"), text).unwrap();
    std::fs::write(
        dir.path().join("mtad.kdl"),
        format!("{HEAD}table \"map\" file=\"map\"\n"),
    )
    .unwrap();
    // hash: postmap builds map.db-src.db
    let (code, _) = postfix(dir.path(), "postmap", &["hash:map.db-src"], b"");
    assert_eq!(code, 0);
    for key in [
        "\"john doe\"@example.com",
        "\"JOHN DOE\"@Example.com",
        "john doe@example.com",
        "\"john",
        "\"a b\"",
        "\"x\\\" y\"@e.com",
        "a\"b c\"d",
        "plain@example.com",
    ] {
        let got = mtactl_lookup(dir.path(), "map", key);
        for table in ["texthash:map", "hash:map.db-src"] {
            let want = postfix(dir.path(), "postmap", &["-q", key, table], b"");
            assert_eq!(got, want, "key {key:?} in {table}");
        }
    }
    // an unbalanced quote: Postfix warns and skips the line, mtad refuses the table
    assert!(parse_map("\"open@x.com V\n").is_err());
}

#[test]
fn alias_targets_with_quoted_commas_answer_as_postalias() {
    let dir = tempfile::tempdir().unwrap();
    let text = "root: \"a,b\"@example.com, other@example.com\nq: \"c d\"@e.com,\"e,f\"@g\n";
    std::fs::write(dir.path().join("aliases"), text).unwrap();
    let (code, _) = postfix(dir.path(), "postalias", &["aliases"], b"");
    assert_eq!(code, 0);
    let ours = parse_aliases(text).unwrap();
    for (name, targets) in [
        ("root", vec!["\"a,b\"@example.com", "other@example.com"]),
        ("q", vec!["\"c d\"@e.com", "\"e,f\"@g"]),
    ] {
        let (code, want) = postfix(dir.path(), "postalias", &["-q", name, "hash:aliases"], b"");
        assert_eq!(code, 0);
        let got = ours.lookup(name).unwrap().unwrap();
        assert_eq!(format!("{got}\n"), want, "{name}");
        assert_eq!(split_addresses(&got).collect::<Vec<_>>(), targets);
    }
}

/// The header probe table: prints each header as header_checks see it.
const PROBE: &str =
    "/テスト/ REJECT jp\n/^Subject:.*=\\?UTF-8\\?B\\?/ ENCODED\n/^([^:]*)(.*)/ [$1][$2]\n";

/// Messages whose header blocks Postfix and mtad must read alike.
const MESSAGES: &[&str] = &[
    "Received: from a\n\tby b; date\nSubject: hi\n there\n  and more\nX-Empty:\nX-Tab:\tv\n\nbody: not a header\n",
    "X-Mailer : Evil\nX-B\t: 1\nX-C  :   v\n  more\nX-D:1\nX-E :\n\nbody\n",
    "X-A: 1\nX Mailer: v\nX-C: 2\n\nbody\n",
    "From a@b Mon Jan  1 00:00:00 2024\nX-B: 1\n\nbody\n",
    "X-A: 1\nFrom a@b Mon\nX-C: 2\n\nbody\n",
    "X-A: 1\nno colon line\nX-C: 2\n\nbody\n",
    "X-A: 1\nX-\u{e9}: v\nX-C: 2\n\nbody\n",
    "X-A: 1\n: empty\nX-C: 2\n\nbody\n",
    " cont first\nX-C: 2\n\nbody\n",
    "X-A: 1\n>From x\nX-C: 2\n\nbody\n",
    "Subject: これはテストです\nX-A: 1\n\nbody\n",
    "Subject: =?UTF-8?B?44OG44K544OI?=\nX-A: 1\n\nbody\n",
    "Subject: plain\nX-Weird-(name)!: ok\nX-A: 1",
];

#[test]
fn header_checks_see_the_headers_postfix_sees() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe"), PROBE).unwrap();
    let table = parse_regexp(PROBE).unwrap();
    for msg in MESSAGES {
        let (_, want) = postfix(
            dir.path(),
            "postmap",
            &["-h", "-q", "-", "regexp:probe"],
            msg.as_bytes(),
        );
        // mtad reads the message as SMTP delivers it: CRLF line ends
        let crlf = msg.replace('\n', "\r\n");
        let (headers, _) = parse_headers(crlf.as_bytes());
        let mut got = String::new();
        for h in &headers {
            if let Some(v) = table.lookup(h.line()).unwrap() {
                got.push_str(&format!("{}\t{v}\n", h.line()));
            }
        }
        assert_eq!(got, want, "message {msg:?}");
    }
}
