//! `newaliases` (`mtactl newaliases`) with a live mtad: an edited aliases file takes
//! effect once it has run (a message to the alias reaches the new target at
//! smtp-sink), a broken file is reported with its place and changes nothing (postalias
//! flags the same lines), a duplicate alias is a warning, and without a daemon the
//! check alone runs.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::peers::{Sink, dump_recipients};
use common::{Mtad, require_tool};

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    origin "example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.1/32"
domains "local" "example.test"
aliases file="aliases"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    transport "*" "smtp:[127.0.0.1]:{sink}"
}
delivery {
    backoff-min "1s"
}
"#;

fn newaliases(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["newaliases", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// Sends one message to root@example.test and returns the envelope recipients the
/// sink got for it.
fn send_to_root(mtad: &Mtad, sink: &Sink, nth: usize) -> Vec<String> {
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    c.send_message(
        "someone@elsewhere.test",
        &["root@example.test"],
        "Subject: for root\r\n\r\nhello\r\n",
    );
    let dumps = sink.dumps(nth);
    dump_recipients(&dumps[nth - 1])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn newaliases_checks_the_file_and_the_running_mtad_takes_it() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "root: first@relay.test\n").unwrap();
    let spool = dir.path().join("spool");
    let mut mtad = Mtad::start_in(
        dir,
        spool,
        &CONFIG.replace("{sink}", &sink.port().to_string()),
    );
    assert_eq!(send_to_root(&mtad, &sink, 1), ["first@relay.test"]);

    // edited: nothing changes until newaliases runs, then the new target gets it
    std::fs::write(&aliases, "# system aliases\nroot: second@relay.test\n").unwrap();
    let out = newaliases(&mtad.config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // the reload was done when the command returned
    assert_eq!(mtad.log().matches("configuration reloaded").count(), 1);
    assert_eq!(send_to_root(&mtad, &sink, 2), ["second@relay.test"]);

    // broken: reported with its place, exit 78, and the running aliases stay
    std::fs::write(&aliases, "root third@relay.test\npipe: |/bin/cat\n").unwrap();
    let out = newaliases(&mtad.config);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("[aliases:1:1]"), "{err}");
    assert!(
        err.contains("an alias is `name: address, address...`"),
        "{err}"
    );
    assert!(err.contains("[aliases:2:7]"), "{err}");
    assert!(err.contains("mtad does not deliver to commands"), "{err}");
    assert_eq!(send_to_root(&mtad, &sink, 3), ["second@relay.test"]);

    // postalias flags the same first line (and, less strict, takes the pipe)
    let pf = tempfile::tempdir().unwrap();
    std::fs::write(pf.path().join("main.cf"), "").unwrap();
    std::fs::copy(&aliases, pf.path().join("aliases")).unwrap();
    let postalias = Command::new(require_tool("postalias"))
        .arg("-c")
        .arg(pf.path())
        .arg(pf.path().join("aliases"))
        .output()
        .unwrap();
    let theirs = stderr(&postalias);
    assert!(
        theirs.contains("aliases, line 1: need name:value pair"),
        "{theirs}"
    );
    assert!(!theirs.contains("line 2"), "{theirs}");

    // a duplicate: a warning (as postalias's), the first entry wins
    std::fs::write(
        &aliases,
        "root: third@relay.test\nRoot: fourth@relay.test\n",
    )
    .unwrap();
    let out = newaliases(&mtad.config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "newaliases: warning: aliases file, line 2: duplicate alias `root`, ignored \
         (first defined on line 1)\n"
    );
    assert_eq!(send_to_root(&mtad, &sink, 4), ["third@relay.test"]);
    std::fs::copy(&aliases, pf.path().join("aliases")).unwrap();
    let postalias = Command::new("postalias")
        .arg("-c")
        .arg(pf.path())
        .arg(pf.path().join("aliases"))
        .output()
        .unwrap();
    assert!(
        stderr(&postalias).contains("duplicate entry: \"root\""),
        "{}",
        stderr(&postalias)
    );

    // no daemon: the check alone, silent when good, 78 when not
    mtad.stop();
    std::fs::write(&aliases, "root: fifth@relay.test\n").unwrap();
    let out = newaliases(&mtad.config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    std::fs::write(&aliases, "root:\n").unwrap();
    let out = newaliases(&mtad.config);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("alias `root` has no addresses"),
        "{}",
        stderr(&out)
    );
}
