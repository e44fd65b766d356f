//! The commands an administrator reaches for (issue 20, "Commands"), run as built:
//! the default configuration path and `MTAD_CONFIG` for mtad, mtactl and sendmail.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "spool"
}
listen "mx" address="127.0.0.1:2525"
"#;

/// Runs `program args...` with `MTAD_CONFIG` set to `env` (or removed) and
/// `/etc/mtad` empty: when this host has one (a package installed), an empty
/// directory is mounted over it in a private mount namespace, so the default path
/// certainly names no file and nothing on the host changes.
fn without_default(program: &str, args: &[&str], env: Option<&Path>) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = if Path::new("/etc/mtad").exists() {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/mtad && exec "$@""#,
        ])
        .arg(empty.path())
        .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    match env {
        Some(path) => cmd.env("MTAD_CONFIG", path),
        None => cmd.env_remove("MTAD_CONFIG"),
    };
    let out = cmd.output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("mount:"),
        "could not hide /etc/mtad: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn without_a_configuration_every_program_says_where_it_looked_and_what_to_do() {
    let cases = [
        (
            env!("CARGO_BIN_EXE_mtactl"),
            vec!["check"],
            "mtactl",
            "--config PATH",
            1,
        ),
        (
            env!("CARGO_BIN_EXE_mtactl"),
            vec!["queue", "list"],
            "mtactl",
            "--config PATH",
            1,
        ),
        (
            env!("CARGO_BIN_EXE_mtactl"),
            vec!["newaliases"],
            "mtactl",
            "--config PATH",
            78,
        ),
        (
            env!("CARGO_BIN_EXE_mtad"),
            vec![],
            "mtad",
            "--config PATH",
            1,
        ),
        (
            env!("CARGO_BIN_EXE_sendmail"),
            vec!["-bp"],
            "sendmail",
            "-C PATH",
            78,
        ),
    ];
    for (program, args, name, option, status) in cases {
        let out = without_default(program, &args, None);
        assert_eq!(out.status.code(), Some(status), "{name} {args:?}: {out:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "{name}: no configuration at /etc/mtad/mtad.kdl (the default): write one \
                 there, set MTAD_CONFIG=PATH, or give {option}\n"
            ),
            "{name} {args:?}"
        );
    }
    let out = without_default(
        env!("CARGO_BIN_EXE_mtactl"),
        &["check"],
        Some(Path::new("/nonexistent/mtad.kdl")),
    );
    assert_eq!(
        text(&out.stderr),
        "mtactl: no configuration at /nonexistent/mtad.kdl (named by MTAD_CONFIG): \
         correct MTAD_CONFIG, or give --config PATH\n"
    );
}

#[test]
fn mtad_config_names_the_configuration_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.kdl");
    std::fs::write(&config, CONFIG).unwrap();
    let out = without_default(env!("CARGO_BIN_EXE_mtactl"), &["check"], Some(&config));
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).starts_with(&format!("{}: ok (1 listener", config.display())),
        "{out:?}"
    );
    // --config before or after the subcommand, over MTAD_CONFIG
    let other = dir.path().join("other.kdl");
    std::fs::write(&other, CONFIG).unwrap();
    for args in [
        vec!["check", "--config", other.to_str().unwrap()],
        vec!["-c", other.to_str().unwrap(), "check"],
    ] {
        let out = without_default(env!("CARGO_BIN_EXE_mtactl"), &args, Some(&config));
        assert!(
            text(&out.stdout).starts_with(&format!("{}: ok", other.display())),
            "{args:?}: {out:?}"
        );
    }
    // sendmail -bp reads it too
    std::fs::create_dir(dir.path().join("spool")).unwrap();
    let out = without_default(env!("CARGO_BIN_EXE_sendmail"), &["-bp"], Some(&config));
    assert!(!text(&out.stderr).contains("no configuration"), "{out:?}");
    assert!(text(&out.stdout).contains("Mail queue is empty"), "{out:?}");
}
