//! `mtactl check`'s static warnings besides the open-relay proof: rules that can never
//! fire (shadowed, contradictory), sets and tables defined and unused, `accept`/`hold`
//! at rcpt without a domain condition; each with file:line:col and a fix, errors with
//! `--strict`; and none on the examples.

use std::path::Path;
use std::process::Command;

const HEAD: &str = r#"server {
    hostname "mx.test"
    spool "/tmp/mtad-lint-spool"
}
listen "mx" address="127.0.0.1:2525"
listen "submission" address="127.0.0.1:2587"
networks "trusted" "127.0.0.0/8"
domains "local" "test.local"
"#;

/// `mtactl check [--strict]` on HEAD + `rest`: exit status and stderr.
fn check(rest: &str, strict: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mtad.kdl");
    std::fs::write(&path, format!("{HEAD}{rest}")).unwrap();
    check_file(&path, strict)
}

fn check_file(path: &Path, strict: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtactl"));
    cmd.arg("--config").arg(path).arg("check");
    if strict {
        cmd.arg("--strict");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of HEAD + `rest` that holds `needle`, 1-based.
fn line(rest: &str, needle: &str) -> usize {
    format!("{HEAD}{rest}")
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

#[test]
fn a_shadowed_rule_is_named_with_the_rule_that_shadows_it() {
    let rest = r#"stage "rcpt" {
    accept client="trusted"
    reject 550 "5.7.1" "No" rcpt="x@test.local"
    accept client="trusted" rcpt-domain="local"
    accept rcpt-domain="local"
}
"#;
    let (code, err) = check(rest, false);
    assert_eq!(code, 0, "{err}");
    let shadowed = line(rest, "accept client=\"trusted\" rcpt-domain");
    let first = line(rest, "    accept client=\"trusted\"");
    assert!(
        err.contains(&format!(
            "mtad.kdl:{shadowed}:5: this rule can never decide: the rule at "
        )) && err.contains(&format!("mtad.kdl:{first}:5 decides first")),
        "{err}"
    );
    // only that one: the reject and the last accept can still decide
    assert_eq!(err.matches("can never").count(), 1, "{err}");
    let (code, err) = check(rest, true);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--strict makes them errors"), "{err}");
}

#[test]
fn every_rule_after_an_unconditional_one_is_shadowed() {
    let rest = r#"stage "helo" {
    accept
    reject 550 "5.7.1" "Bad HELO" helo="localhost"
}
"#;
    let (_, err) = check(rest, false);
    let at = line(rest, "helo=\"localhost\"");
    assert!(
        err.contains(&format!("mtad.kdl:{at}:5: this rule can never decide")),
        "{err}"
    );
}

#[test]
fn rules_that_do_not_decide_shadow_nothing() {
    // a warn-mode rule, a filter and header checks go on to the next rule
    let rest = r#"stage "mail" {
    reject 550 "5.7.1" "Would refuse" mode="warn"
    reject 550 "5.7.1" "No" sender="a@b.test"
}
"#;
    let (code, err) = check(rest, false);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("can never"), "{err}");
}

#[test]
fn contradictory_conditions_are_named() {
    let rest = r#"stage "mail" {
    reject 550 "5.7.1" "No" tls=#true not-tls=#true
    reject 550 "5.7.1" "No" authenticated=#false not-authenticated=#false
    reject 550 "5.7.1" "No" listener="mx" not-listener="submission"
}
"#;
    let (_, err) = check(rest, false);
    let first = line(rest, "tls=#true not-tls");
    assert!(
        err.contains(&format!(
            "mtad.kdl:{first}:5: this rule can never match: tls=#true and not-tls=#true cannot both hold; remove one"
        )),
        "{err}"
    );
    // listener="mx" not-listener="submission" can hold: no warning for it
    let second = line(rest, "not-authenticated");
    assert!(
        err.contains(&format!("mtad.kdl:{second}:5: this rule can never match")),
        "{err}"
    );
    assert_eq!(err.matches("can never match").count(), 2, "{err}");
}

#[test]
fn unused_sets_and_tables_are_named_where_defined() {
    let rest = r#"networks "office" "192.0.2.0/24"
domains "partners" "partner.test"
table "unused_map" {
    "a" "b"
}
domains "relay" "relay.test"
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="local"
    accept rcpt-domain="relay"
}
"#;
    let (code, err) = check(rest, false);
    assert_eq!(code, 0, "{err}");
    for (kind, name) in [
        ("networks", "office"),
        ("domains", "partners"),
        ("table", "unused_map"),
    ] {
        let at = line(rest, &format!("{kind} \"{name}\""));
        assert!(
            err.contains(&format!(
                "mtad.kdl:{at}:1: {kind} \"{name}\" is defined but never used"
            )),
            "{kind} {name}: {err}"
        );
    }
    // used ones, and `local` (mtad reads it itself), are not named
    assert!(!err.contains("\"relay\" is defined"), "{err}");
    assert!(!err.contains("\"trusted\" is defined"), "{err}");
    assert_eq!(err.matches("never used").count(), 3, "{err}");
}

#[test]
fn an_accept_at_rcpt_without_a_domain_condition_is_named() {
    // on a listener that requires AUTH it is no relay for outsiders, but it reads as
    // one when the listener is not (here, an intended relay listener keeps the proof
    // quiet)
    let rest = r#"listen "internal" address="127.0.0.1:2526" open-relay="intended"
stage "rcpt" {
    accept listener="internal"
    accept client="trusted"
    accept rcpt-domain="local"
}
"#;
    let (code, err) = check(rest, false);
    assert_eq!(code, 0, "{err}");
    let at = line(rest, "accept listener=\"internal\"");
    assert!(
        err.contains(&format!(
            "mtad.kdl:{at}:5: `accept` at rcpt for any recipient domain, and for clients it does not restrict; add rcpt-domain="
        )),
        "{err}"
    );
    // restricted to trusted clients, or to a domain: nothing
    assert_eq!(err.matches("for any recipient domain").count(), 1, "{err}");
}

#[test]
fn the_examples_have_no_new_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path().join("mtad.kdl");
        if !path.exists() {
            continue;
        }
        let (code, err) = check_file(&path, false);
        assert_eq!(code, 0, "{}: {err}", path.display());
        for what in ["can never", "never used", "for any recipient domain"] {
            assert!(!err.contains(what), "{}: {err}", path.display());
        }
    }
}
