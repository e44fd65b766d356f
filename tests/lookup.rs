//! `mtactl lookup` on a real configuration with table files: found, not found, sets,
//! unknown names and broken table files.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "spool"
}
listen "mx" address="127.0.0.1:2525"
networks "trusted" "127.0.0.0/8" "::1"
domains "relay" "example.test" ".example.test"
table "transport" file="tables/transport"
table "header_checks" type="regexp" file="tables/header_checks"
table "clients" type="cidr" file="tables/clients.cidr"
table "routes" {
    "example.local" "smtp:[192.168.1.100]"
    ".example.local" "smtp:[mailtrans.example.local]"
}
"#;

const TRANSPORT: &str = "# transport(5)\nexample.local   smtp:[192.168.1.100]\nSub.Example.Local smtp:sub.example.local\n";
const HEADER_CHECKS: &str = "/^Received:/ IGNORE\n/^Subject:.*(viagra|casino)/ REJECT no $1 here\n";
const CLIENTS: &str = "192.0.2.0/24 REJECT\n2001:db8::/32 OK\n";

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mtad.kdl", CONFIG);
    write(dir.path(), "tables/transport", TRANSPORT);
    write(dir.path(), "tables/header_checks", HEADER_CHECKS);
    write(dir.path(), "tables/clients.cidr", CLIENTS);
    dir
}

fn lookup(dir: &Path, table: &str, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["lookup", "--config"])
        .arg(dir.join("mtad.kdl"))
        .args([table, key])
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn found_prints_the_value_and_exits_0() {
    let dir = setup();
    for (table, key, value) in [
        ("transport", "example.local", "smtp:[192.168.1.100]"),
        ("transport", "SUB.example.local", "smtp:sub.example.local"),
        (
            "header_checks",
            "Subject: cheap Casino chips",
            "REJECT no Casino here",
        ),
        ("header_checks", "received: from x", "IGNORE"),
        ("clients", "192.0.2.55", "REJECT"),
        ("clients", "2001:db8::25", "OK"),
        ("routes", ".example.local", "smtp:[mailtrans.example.local]"),
    ] {
        let out = lookup(dir.path(), table, key);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{table} {key}: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), format!("{value}\n"), "{table} {key}");
    }
}

#[test]
fn not_found_prints_nothing_and_exits_1() {
    let dir = setup();
    for (table, key) in [
        ("transport", "other.test"),
        ("header_checks", "From: someone"),
        ("clients", "10.0.0.1"),
        ("clients", "not-an-address"),
        ("routes", "sub.example.local"),
    ] {
        let out = lookup(dir.path(), table, key);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{table} {key}: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{table} {key}");
    }
}

#[test]
fn sets_answer_yes_or_exit_1() {
    let dir = setup();
    let out = lookup(dir.path(), "relay", "a.b.EXAMPLE.test");
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "yes\n")
    );
    let out = lookup(dir.path(), "relay", "example.org");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(1), ""));
    let out = lookup(dir.path(), "trusted", "127.1.2.3");
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "yes\n")
    );
    let out = lookup(dir.path(), "networks:trusted", "192.0.2.1");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(1), ""));
}

#[test]
fn unknown_name_is_an_error_with_a_suggestion() {
    let dir = setup();
    let out = lookup(dir.path(), "transprt", "example.local");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("did you mean `transport`?"), "{err}");
}

#[test]
fn a_broken_table_file_is_reported_in_that_file_with_exit_2() {
    let dir = setup();
    write(
        dir.path(),
        "tables/header_checks",
        "/^Received:/ IGNORE\n# fine\n/^Subject:/q REJECT\n",
    );
    write(dir.path(), "tables/clients.cidr", "10.0.0.1/8 REJECT\n");
    let out = lookup(dir.path(), "transport", "example.local");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("tables/header_checks:3:12"), "{err}");
    assert!(err.contains("unknown regexp flag `q`"), "{err}");
    assert!(err.contains("tables/clients.cidr:1:1"), "{err}");
    assert!(err.contains("did you mean `10.0.0.0/8`?"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_missing_table_file_is_reported_at_the_file_property() {
    let dir = setup();
    std::fs::remove_file(dir.path().join("tables/transport")).unwrap();
    let out = lookup(dir.path(), "routes", "example.local");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read table file `tables/transport`"),
        "{err}"
    );
    assert!(err.contains("mtad.kdl:9:19"), "{err}");
}
