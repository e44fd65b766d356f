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

#[test]
fn version_names_the_program_the_version_and_the_commit() {
    // what build.rs saw: the checkout's commit, else the build's MTAD_COMMIT, else unknown
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let commit = match git {
        Ok(out) if out.status.success() => text(&out.stdout).trim().to_owned(),
        // not a git checkout (a source tarball): the build's MTAD_COMMIT, or unknown
        _ => std::env::var("MTAD_COMMIT")
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
    };
    for (program, name) in [
        (env!("CARGO_BIN_EXE_mtactl"), "mtactl"),
        (env!("CARGO_BIN_EXE_mtad"), "mtad"),
    ] {
        let out = Command::new(program).arg("--version").output().unwrap();
        assert!(out.status.success());
        let line = text(&out.stdout);
        let expected = format!("{name} {} (commit {commit}", env!("CARGO_PKG_VERSION"));
        // `-dirty` while the tree has changes, as it may in a working copy
        assert!(
            line == format!("{expected})\n") || line == format!("{expected}-dirty)\n"),
            "{line:?}, expected {expected:?}"
        );
    }
}

/// Every option and argument of every `mtactl` command, and of `mtad`, has a line of
/// help: read from `--help` as the user sees it.
#[test]
fn every_option_has_help() {
    fn check(program: &str, path: &mut Vec<String>, missing: &mut Vec<String>) {
        let out = Command::new(program)
            .args(path.iter())
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{path:?}: {out:?}");
        let help = text(&out.stdout);
        let mut section = "";
        let mut commands = Vec::new();
        // (section, name, has help) per entry; in clap's long layout (when any help
        // is long) the help is on the lines below, indented by 10
        let mut entries: Vec<(String, String, bool)> = Vec::new();
        for line in help.lines() {
            if line.is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            let entry = line.trim_start();
            if entry.is_empty() {
                continue;
            }
            if line.len() - entry.len() >= 10 {
                if let Some(last) = entries.last_mut() {
                    // not help: the default, the possible values and their list
                    let generated = ["[default", "[possible", "Possible values:", "- "];
                    last.2 |= !generated.iter().any(|g| entry.starts_with(g));
                }
                continue;
            }
            // the name (`-c, --config <PATH>`, `<ID>...`) ends at two spaces
            let (name, rest) = entry.split_once("  ").unwrap_or((entry, ""));
            let rest = rest.trim_start();
            let described =
                !rest.is_empty() && !rest.starts_with("[default") && !rest.starts_with("[possible");
            entries.push((section.to_owned(), name.to_owned(), described));
        }
        for (section, name, described) in entries {
            match section.as_str() {
                "Commands:" if name == "help" => {}
                "Commands:" | "Options:" | "Arguments:" => {
                    if section == "Commands:" {
                        commands.push(name.clone());
                    }
                    if !described {
                        missing.push(format!("{path:?} {name}"));
                    }
                }
                _ => {}
            }
        }
        for c in commands {
            path.push(c);
            check(program, path, missing);
            path.pop();
        }
    }
    let mut missing = Vec::new();
    check(env!("CARGO_BIN_EXE_mtactl"), &mut Vec::new(), &mut missing);
    check(env!("CARGO_BIN_EXE_mtad"), &mut Vec::new(), &mut missing);
    assert!(missing.is_empty(), "no help for: {missing:#?}");
}

/// `mtactl ARGS --config ...` with `stdin` on its standard input.
fn mtactl_with_input(mtad: &common::Mtad, args: &[&str], stdin: &[u8]) -> Output {
    common::run_with_input(
        Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(args)
            .arg("--config")
            .arg(&mtad.config),
        stdin,
    )
}

fn queued_ids(mtad: &common::Mtad) -> Vec<String> {
    let mut ids: Vec<String> = mtad
        .queued()
        .iter()
        .map(|(m, _)| m.id.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn queue_ids_come_from_stdin_and_states_choose_messages() {
    let mtad = common::Mtad::start(common::BASIC); // queue-only: nothing leaves
    let mut ids = Vec::new();
    for rcpt in ["a@one.test", "b@two.test", "c@two.test"] {
        let mut c = mtad.session();
        c.cmd("EHLO client.test", "250");
        ids.push(c.send_message("s@src.test", &[rcpt], "Subject: x\r\n\r\nx\r\n"));
    }
    let out = mtad.mtactl(&["queue", "hold", &ids[1]]);
    assert!(out.status.success(), "{out:?}");

    // `-` with nothing on stdin touches nothing (no ids would mean every message)
    let out = mtactl_with_input(&mtad, &["queue", "hold", "-"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Placed on hold: 0 messages\n");

    // the held message's id, found by the JSON lines and python3, deleted through stdin
    let listed = mtad.mtactl(&["queue", "list", "--format=postfix-json", "--state=hold"]);
    assert!(listed.status.success(), "{listed:?}");
    let held = common::run_with_input(
        Command::new("python3").args([
            "-c",
            "import json,sys\nfor l in sys.stdin: print(json.loads(l)['queue_id'])",
        ]),
        &listed.stdout,
    );
    assert!(held.status.success(), "python3: {held:?}");
    assert_eq!(text(&held.stdout), format!("{}\n", ids[1]));
    let out = mtactl_with_input(&mtad, &["queue", "delete", "-"], &held.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("{}: removed\nDeleted: 1 message\n", ids[1])
    );
    assert_eq!(queued_ids(&mtad), vec![ids[0].clone(), ids[2].clone()]);

    // blank lines and blanks around ids are fine; an unknown id is said
    let input = format!("\n  {}  \n\nFFFFFFFFFFFFFFFF\n", ids[0]);
    let out = mtactl_with_input(&mtad, &["queue", "hold", "-"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains(&format!("{}: placed on hold", ids[0])));
    assert_eq!(
        text(&out.stderr),
        "mtactl: FFFFFFFFFFFFFFFF: no such message in the queue\n"
    );
    // not an id: nothing is sent
    let out = mtactl_with_input(&mtad, &["queue", "delete", "-"], b"nonsense\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(queued_ids(&mtad).len(), 2);

    // --state: `postsuper -d ALL hold`
    let out = mtad.mtactl(&["queue", "list", "--state", "active"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&ids[2]) && !listing.contains(&ids[0]),
        "{listing}"
    );
    let out = mtad.mtactl(&["queue", "delete", "--state", "hold"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("{}: removed\nDeleted: 1 message\n", ids[0])
    );
    assert_eq!(queued_ids(&mtad), vec![ids[2].clone()]);

    // the shape of what is left: one recipient in two.test, in the first bucket
    let out = mtad.mtactl(&["queue", "shape"]);
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .nth(2)
            .is_some_and(|l| l.trim_start().starts_with("two.test  1  1  0")),
        "{table}"
    );
}

/// `mtactl config --full` of every example, written next to it, passes `mtactl check`
/// and reads back as the same configuration: the same settings, listeners, sets, tables
/// and rules (but for where each rule is written).
#[test]
fn the_full_configuration_reads_back_as_the_same() {
    use mtad::config::Config;
    use mtad::config::settings::SETTINGS;
    let mut checked = 0;
    for original in common::example_configs() {
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["config", "--full", "--config"])
            .arg(&original)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", original.display());
        // beside the original, so that relative paths resolve alike; removed on drop
        let copy = tempfile::Builder::new()
            .prefix(".full-")
            .suffix(".kdl")
            .tempfile_in(original.parent().unwrap())
            .unwrap();
        std::fs::write(copy.path(), &out.stdout).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["check", "--config"])
            .arg(copy.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: {}\n{}",
            original.display(),
            text(&check.stderr),
            text(&out.stdout)
        );
        let a = Config::load(&original).unwrap();
        let b = Config::load(copy.path()).unwrap();
        for s in SETTINGS {
            assert_eq!(
                (s.get)(&a),
                (s.get)(&b),
                "{}: {}",
                original.display(),
                s.name()
            );
        }
        assert_eq!(a.listeners, b.listeners, "{}", original.display());
        let keys = |c: &Config| {
            (
                c.networks.keys().cloned().collect::<Vec<_>>(),
                c.domains.keys().cloned().collect::<Vec<_>>(),
                c.tables.keys().cloned().collect::<Vec<_>>(),
                c.users.keys().cloned().collect::<Vec<_>>(),
                c.content_filters.clone(),
                c.authentication.as_ref().map(|x| x.checks),
                c.dkim.len(),
            )
        };
        assert_eq!(keys(&a), keys(&b), "{}", original.display());
        let rules = |c: &Config| {
            c.stages
                .iter()
                .map(|rules| {
                    rules
                        .iter()
                        // as Debug: a table compares by identity, its Debug by content
                        .map(|r| {
                            format!("{:?} {:?} {} {:?}", r.action, r.conditions, r.warn, r.route)
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(rules(&a), rules(&b), "{}", original.display());
        checked += 1;
    }
    assert!(checked >= 5, "{checked} examples");
}

/// Where our defaults are Postfix's (docs/operations.md says which), they are the
/// values the installed Postfix's `postconf -d` prints.
#[test]
fn defaults_said_to_be_postfix_s_are_postfix_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(&config, CONFIG).unwrap();
    let pairs = [
        ("limits.recipients", "smtpd_recipient_limit"),
        ("limits.header-size", "header_size_limit"),
        ("limits.junk-commands", "smtpd_junk_command_limit"),
        ("limits.error-limit", "smtpd_hard_error_limit"),
        ("limits.hop-count", "hopcount_limit"),
        ("limits.idle-timeout", "smtpd_timeout"),
        ("delivery.backoff-min", "minimal_backoff_time"),
        ("delivery.backoff-max", "maximal_backoff_time"),
        ("delivery.lifetime", "maximal_queue_lifetime"),
        (
            "delivery.concurrency",
            "default_destination_concurrency_limit",
        ),
        ("delivery.connections", "default_process_limit"),
        ("delivery.recipients", "smtp_destination_recipient_limit"),
        ("delivery.connect-timeout", "smtp_connect_timeout"),
    ];
    let ours = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["config", "--defaults", "--value-only", "--config"])
        .arg(&config)
        .args(pairs.map(|(o, _)| o))
        .output()
        .unwrap();
    assert!(ours.status.success(), "{ours:?}");
    let theirs = Command::new("postconf")
        .args(["-d", "-h", "-x"])
        .args(pairs.map(|(_, p)| p))
        .output()
        .expect("Postfix's postconf");
    assert!(theirs.status.success(), "{theirs:?}");
    // Postfix's times: a number and a unit (s by default)
    let seconds = |v: &str| -> u64 {
        let v = v.trim();
        let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("{v:?}"));
        n * match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            _ => panic!("{v:?}"),
        }
    };
    for (((o, p), ours), theirs) in pairs
        .iter()
        .zip(text(&ours.stdout).lines())
        .zip(text(&theirs.stdout).lines())
    {
        let ours_n = match ours.parse::<u64>() {
            Ok(n) => n,
            Err(_) => mtad::config::parse_duration(ours).unwrap().as_secs(),
        };
        assert_eq!(
            ours_n,
            seconds(theirs),
            "{o} = {ours}, Postfix's {p} = {theirs}"
        );
    }
    assert_eq!(text(&ours.stdout).lines().count(), pairs.len());
    assert_eq!(text(&theirs.stdout).lines().count(), pairs.len());
}

/// The transcript under "Which configuration" in docs/operations.md is what the
/// programs print.
#[test]
fn the_documented_messages_are_printed() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = &docs[docs.find("## Which configuration").unwrap()..];
    let start = section.find("```text\n").unwrap() + "```text\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(lines.len(), 4, "{block}");
    for pair in lines.chunks(2) {
        let command = pair[0].strip_prefix("$ ").unwrap();
        let (env, command) = match command.strip_prefix("MTAD_CONFIG=") {
            Some(rest) => {
                let (path, command) = rest.split_once(' ').unwrap();
                (Some(Path::new(path)), command)
            }
            None => (None, command),
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "mtactl");
        let out = without_default(env!("CARGO_BIN_EXE_mtactl"), &words[1..], env);
        assert_eq!(text(&out.stderr), format!("{}\n", pair[1]), "{command}");
    }
}
