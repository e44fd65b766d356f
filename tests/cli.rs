//! `mtactl check` and `mtad` on good and bad configurations.

mod common;

use std::process::Command;

fn mtactl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_example_config_is_valid() {
    let mut checked = 0;
    for config in common::example_configs() {
        let out = mtactl(&["check", "--config", config.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "a summary line, then the revision: {stdout}"
        );
        assert!(lines[0].contains(": ok ("), "{stdout}");
        let revision = lines[1].strip_prefix("revision: ").expect("the revision");
        assert_eq!(revision.len(), 12, "{stdout}");
        // the same files, the same revision
        let again = mtactl(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
        checked += 1;
    }
    assert!(checked >= 1);
}

const BROKEN: &str = r#"server {
    hostname "mx.example.test"
    spool "spool"
}
listn "mx" address="127.0.0.1:2525"
listen "mx" address="127.0.0.1:2525" adress="x"
networks "trusted" "127.0.0.0/33"
stage "rcpt" {
    accept client="trustd"
    reject 250 "5.7.1" "no"
}
"#;

#[test]
fn check_lists_every_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.kdl");
    std::fs::write(&path, BROKEN).unwrap();
    let out = mtactl(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (what, line) in [
        ("listn", 5),
        ("adress", 6),
        ("127.0.0.0/33", 7),
        ("trustd", 9),
        ("250", 10),
    ] {
        assert!(
            err.contains(&format!("broken.kdl:{line}:")),
            "no location for {what} (line {line}):\n{err}"
        );
    }
    assert!(err.contains("did you mean"), "{err}");
    assert!(err.contains("listen"), "{err}");
    // a caret or underline points at the error
    assert!(err.contains('^') || err.contains('─'), "{err}");
}

#[test]
fn mtad_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.kdl");
    std::fs::write(&path, BROKEN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.kdl:5:"));
}

#[test]
fn mtad_fails_clearly_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mtad.kdl");
    std::fs::write(
        &path,
        common::BASIC
            .replace("{port}", &port.to_string())
            .replace("{spool}", dir.path().join("spool").to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--allow-root")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on 127.0.0.1:") && err.contains("\"mx\""),
        "{err}"
    );
}

/// Every mtactl subcommand that prints, with its standard output a pipe whose reader
/// has gone (`mtactl queue list | head` once head has exited): a quiet exit with 141
/// (128 + SIGPIPE, as a shell shows `yes | head`), no panic (exit 101) and nothing on
/// stderr. The read end is closed before mtactl starts, so every write fails.
#[test]
fn a_closed_stdout_pipe_ends_every_subcommand_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            "server {{\n    hostname \"mx.example.test\"\n    spool \"{}\"\n}}\n\
             listen \"mx\" address=\"127.0.0.1:2525\"\n\
             table \"t\" {{\n    \"key\" \"value\"\n}}\n\
             stage \"rcpt\" {{\n    reject 550 \"5.7.1\" \"No\" sender-login=\"t\"\n    accept client=\"127.0.0.0/8\"\n}}\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("spool")).unwrap();
    let suite = dir.path().join("suite.kdl");
    std::fs::write(
        &suite,
        "case \"relay\" {\n    from \"a@src.test\"\n    rcpt \"b@dst.test\"\n    expect \"rcpt\" \"accept\"\n}\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let keys = dir.path().to_str().unwrap();
    let runs: &[&[&str]] = &[
        &["check", "--config", config],
        &["lookup", "--config", config, "t", "key"],
        &["queue", "list", "--config", config],
        &["queue", "list", "--config", config, "--format", "json"],
        &[
            "test-policy",
            "--config",
            config,
            "--from",
            "a@src.test",
            "--rcpt",
            "b@dst.test",
        ],
        &["test-policy", "--config", config, suite.to_str().unwrap()],
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
            "--out",
            keys,
        ],
    ];
    for args in runs {
        // the suite must be valid, or its output would be an error on stderr
        let ok = mtactl(args);
        assert!(
            ok.status.success() && !ok.stdout.is_empty(),
            "{args:?}: {ok:?}"
        );
        let _ = std::fs::remove_file(dir.path().join("example.test.s1.key"));
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(*args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
