//! `mtactl import postfix`: the seeds' Postfix configurations and Debian's default
//! main.cf import into configurations that pass `mtactl check` (the open-relay proof
//! included) and their generated suites, behave like the hand-written examples on
//! the examples' suites, and answer SMTP probes as a real Postfix run on the same
//! configuration does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::Postfix;
use common::{Mtad, require_tool};

fn mtactl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(args)
        .output()
        .expect("run mtactl")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/postfix-import")
        .join(name)
}

/// Imports `dir` into a new directory; asserts the import (which checks) succeeded.
fn import(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let spool = tmp.path().join("spool");
    let o = mtactl(&[
        "import",
        "postfix",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--spool",
        spool.to_str().unwrap(),
        "--hostname",
        "host.example",
    ]);
    assert!(
        o.status.success(),
        "import of {}:\n{}",
        dir.display(),
        text(&o)
    );
    (tmp, out)
}

/// A Postfix directory of its own: `main_cf`, and `master_cf` or Debian's master.cf.
fn postfix_dir(main_cf: &str, master_cf: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("postfix");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.cf"), main_cf).unwrap();
    match master_cf {
        Some(text) => std::fs::write(dir.join("master.cf"), text).unwrap(),
        None => {
            std::fs::copy(fixture("debian").join("master.cf"), dir.join("master.cf")).unwrap();
        }
    }
    (tmp, dir)
}

/// A Postfix directory of its own with `tables` beside main.cf, imported: both
/// directories (to keep while the files are used), the output and its mtad.kdl.
fn import_with(
    main_cf: &str,
    master_cf: Option<&str>,
    tables: &[(&str, &str)],
) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, String) {
    let (tmp, dir) = postfix_dir(main_cf, master_cf);
    for (name, text) in tables {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let (t, out) = import(&dir);
    let config = std::fs::read_to_string(out.join("mtad.kdl")).unwrap();
    (tmp, t, out, config)
}

const FIXTURES: &[&str] = &[
    "debian",
    "000-subdomain-server",
    "001-mail-hub",
    "002-virtual-hosting",
    "003-upstream-relay",
    "004-null-client",
];

#[test]
fn fixtures_import_and_pass_check_and_their_own_suites() {
    for name in FIXTURES {
        let (_tmp, out) = import(&fixture(name));
        let config = out.join("mtad.kdl");
        let check = mtactl(&["check", "--config", config.to_str().unwrap()]);
        assert!(check.status.success(), "{name}: {}", text(&check));
        let suite = out.join("tests/imported.kdl");
        let run = mtactl(&[
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            suite.to_str().unwrap(),
        ]);
        let shown = text(&run);
        assert!(run.status.success(), "{name}: {shown}");
        let passed: usize = shown
            .lines()
            .find_map(|l| {
                l.strip_suffix(" passed, 0 failed")
                    .or_else(|| l.strip_suffix(" passed"))
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(passed >= 3, "{name}: too few generated cases:\n{shown}");
        // the report exists in both forms, and names every main.cf parameter
        let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("import-report.json")).unwrap())
                .unwrap();
        let main = std::fs::read_to_string(fixture(name).join("main.cf")).unwrap();
        for line in main.lines() {
            let Some((param, _)) = line.split_once('=') else {
                continue;
            };
            let param = param.trim();
            if param.starts_with('#') || param.is_empty() {
                continue;
            }
            assert!(
                report.contains(param),
                "{name}: {param} is not in the report:\n{report}"
            );
            assert!(
                json["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["parameter"] == param),
                "{name}: {param} not in the JSON report"
            );
        }
    }
}

/// Each seed's import, run on the hand-written example's own suite, gives the same
/// verdicts and reply codes. Known differences, each with its reason:
const EXAMPLE_DIFFERENCES: &[(&str, &str)] = &[(
    "nobody but this host may use the re-injection port",
    "the example refuses other clients at connect on the re-injection port; the seed's master.cf says `-o smtpd_recipient_restrictions=permit_mynetworks,reject` with its mynetworks (192.168.0.0/24 too), which Postfix, and so the import, applies at RCPT",
)];

#[test]
fn seeds_behave_like_the_hand_written_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reply = regex::Regex::new(r#"reply="(\d{3} \d\.\d+\.\d+)[^"]*""#).unwrap();
    let rule = regex::Regex::new(r#" rule="[^"]*""#).unwrap();
    for (seed, example) in [
        ("000-subdomain-server", "subdomain-server"),
        ("001-mail-hub", "mail-hub"),
        ("002-virtual-hosting", "virtual-hosting"),
        ("003-upstream-relay", "upstream-relay"),
        ("004-null-client", "null-client"),
    ] {
        let (tmp, out) = import(&fixture(seed));
        let suites = tmp.path().join("example-suites");
        std::fs::create_dir(&suites).unwrap();
        let mut files = Vec::new();
        let mut cases = 0;
        for entry in std::fs::read_dir(root.join("examples").join(example).join("tests")).unwrap() {
            let path = entry.unwrap().path();
            let original = std::fs::read_to_string(&path).unwrap();
            // behaviour, not where a rule is: the rule= of the example's files go; the
            // reply's code and enhanced code stay (mtad rules do not prefix `<rcpt>: `
            // to their text as Postfix's built-in relay refusal does); the example's
            // re-injection listener has the seed's service name
            let mut adapted = rule.replace_all(&original, "").into_owned();
            adapted = reply.replace_all(&adapted, r#"reply="$1""#).into_owned();
            adapted = adapted.replace("listener \"reinject\"", "listener \"localhost:10025\"");
            // the known differences are taken out of the run, by their title
            for (title, _why) in EXAMPLE_DIFFERENCES {
                adapted = adapted.replace(
                    &format!("case \"{title}\""),
                    &format!("case \"{title}\" skipped=#true"),
                );
            }
            let adapted = drop_skipped(&adapted);
            cases += adapted.matches("\ncase ").count() + usize::from(adapted.starts_with("case "));
            let file = suites.join(path.file_name().unwrap());
            std::fs::write(&file, adapted).unwrap();
            files.push(file);
        }
        let config = out.join("mtad.kdl");
        let mut args = vec!["test-policy", "--config", config.to_str().unwrap()];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let run = mtactl(&args);
        assert!(
            run.status.success(),
            "{seed} on examples/{example}'s suite:\n{}",
            text(&run)
        );
        assert!(cases >= 5, "{seed}: {cases} cases");
    }
}

/// A suite's text without the cases marked `skipped=#true` (whole `case { }` blocks).
fn drop_skipped(suite: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in suite.lines() {
        if line.starts_with("case ") && line.contains("skipped=#true") {
            skipping = true;
            continue;
        }
        if skipping {
            if line.starts_with('}') {
                skipping = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn an_output_directory_that_is_not_empty_is_refused_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let dir = fixture("001-mail-hub");
    let args = |force: bool| {
        let mut a = vec![
            "import".to_owned(),
            "postfix".into(),
            dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--spool".into(),
            tmp.path().join("spool").display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let refused = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(args(false))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("is not empty: give --force"),
        "{}",
        text(&refused)
    );
    assert!(!out.join("mtad.kdl").exists(), "nothing written");
    let forced = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(args(true))
        .output()
        .unwrap();
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    // nothing but the configuration, its suite, its report and the tables
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // main.cf does not set alias_maps: Postfix's default, hash:/etc/aliases, is read
    // from this host when it has one (as on the Postfix host itself)
    names.retain(|n| n != "aliases");
    assert_eq!(
        names,
        [
            "import-report.json",
            "import-report.txt",
            "keep.txt",
            "mtad.kdl",
            "tests",
            "transport"
        ]
    );
    // and the Postfix side is untouched: the fixture directory has no new file
    let mut fixture_names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fixture_names.sort();
    assert_eq!(fixture_names, ["main.cf", "master.cf", "transport"]);
}

#[test]
fn an_unsupported_restriction_refuses_where_it_stood_and_is_reported() {
    let (_tmp, dir) = postfix_dir(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\n\
         smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,\n    reject_unknown_sender_domain, reject_frobnicated_client\n\
         compatibility_level = 3.6\n",
        None,
    );
    let (_t, out) = import(&dir);
    let config = std::fs::read_to_string(out.join("mtad.kdl")).unwrap();
    assert!(
        config.contains("defer 450 \"4.7.1\" \"Service unavailable: reject_unknown_sender_domain is not translated\""),
        "{config}"
    );
    assert!(
        config.contains("reject_frobnicated_client is not translated"),
        "{config}"
    );
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert!(
        report.contains("2 unsupported") || report.contains("unsupported:"),
        "{report}"
    );
    // a client from outside sending to us is deferred there, never accepted unchecked
    let o = mtactl(&[
        "test-policy",
        "--config",
        out.join("mtad.kdl").to_str().unwrap(),
        "--client",
        "203.0.113.9",
        "--from",
        "a@elsewhere.example",
        "--rcpt",
        "postmaster@mx.example.test",
    ]);
    assert!(text(&o).contains("defer"), "{}", text(&o));
}

/// Several virtual_alias_maps: one virtual(5) file in Postfix's order (the first table
/// with an address answers for it), pinned by the generated suite; a table of another
/// kind after them is reported, not silently dropped.
#[test]
fn several_virtual_alias_maps_are_asked_in_order() {
    let (_tmp, _t, out, config) = import_with(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n\
         virtual_alias_domains = virt.example\n\
         virtual_alias_maps = hash:/etc/postfix/v1, texthash:/etc/postfix/v2,\n    \
         btree:/etc/postfix/v3, regexp:/etc/postfix/v4\n",
        None,
        &[
            (
                "v1",
                "# first\nboth@virt.example first@elsewhere.example\nonly1@virt.example\n  one@elsewhere.example\n",
            ),
            (
                "v2",
                "BOTH@virt.example second@elsewhere.example\nonly2@virt.example two@elsewhere.example\n",
            ),
            (
                "v3",
                "both@virt.example third@elsewhere.example\nonly3@virt.example three@elsewhere.example\n",
            ),
            ("v4", "/^x@/ four@elsewhere.example\n"),
        ],
    );
    assert!(
        config.contains("virtual file=\"virtual_alias_maps\""),
        "{config}"
    );
    let merged = std::fs::read_to_string(out.join("virtual_alias_maps")).unwrap();
    for (present, line) in [
        (true, "both@virt.example first@elsewhere.example"),
        (true, "only1@virt.example one@elsewhere.example"),
        (false, "BOTH@virt.example second@elsewhere.example"),
        (true, "only2@virt.example two@elsewhere.example"),
        (false, "both@virt.example third@elsewhere.example"),
        (true, "only3@virt.example three@elsewhere.example"),
    ] {
        assert_eq!(merged.contains(line), present, "{line}:\n{merged}");
    }
    let suite = std::fs::read_to_string(out.join("tests/imported.kdl")).unwrap();
    for case in [
        "virtual_alias_maps: both@virt.example expands to first@elsewhere.example",
        "virtual_alias_maps: only2@virt.example expands to two@elsewhere.example",
        "virtual_alias_maps: only3@virt.example expands to three@elsewhere.example",
    ] {
        assert!(suite.contains(case), "{case}:\n{suite}");
    }
    let run = mtactl(&[
        "test-policy",
        "--config",
        out.join("mtad.kdl").to_str().unwrap(),
        out.join("tests/imported.kdl").to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert!(
        report.contains("3 tables merged") && report.contains("`regexp:/etc/postfix/v4`: not read"),
        "{report}"
    );
}

/// A pattern access table in an earlier list (two OK lines, then warn_if_reject
/// before a second table): each line applies only where no earlier line matched; a
/// client pattern table, which Postfix tests against the client's name first, refuses
/// where it stood.
#[test]
fn pattern_access_tables_keep_their_first_match_order() {
    let (_tmp, _t, out, config) = import_with(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n\
         relay_domains = relay.example\n\
         smtpd_sender_restrictions = check_sender_access regexp:/etc/postfix/s1,\n    \
         warn_if_reject check_sender_access pcre:/etc/postfix/s2\n\
         smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
        None,
        &[
            ("s1", "/^a@/ OK\n/^b@/ OK\n/@spam\\.example$/ REJECT spam\n"),
            (
                "s2",
                "/^w@/ REJECT only a warning\n/^w/ REJECT also only a warning\n",
            ),
        ],
    );
    // the two OK lines of an earlier list guard the rest of it together
    assert!(
        config.contains("not-sender-matches=\"(?:(?si)^a@)|(?:(?si)^b@)\""),
        "{config}"
    );
    // under warn_if_reject a refusing line decides nothing: the next line excludes it
    assert!(
        config.lines().any(|l| l.contains("mode=\"warn\"")
            && l.contains(" sender-matches=\"(?si)^w\"")
            && l.contains("|(?:(?si)^w@)\"")),
        "{config}"
    );
    let mut suite = String::new();
    for (from, verdict) in [
        ("a@spam.example", "accept"),
        ("b@spam.example", "accept"),
        ("c@spam.example", "reject"),
        ("w@x.example", "accept"),
    ] {
        suite.push_str(&format!(
            "case \"{from}\" {{\n    client \"198.51.100.9\"\n    from \"{from}\"\n    \
             rcpt \"user@relay.example\"\n    expect \"rcpt\" \"{verdict}\"\n}}\n"
        ));
    }
    let path = out.join("tests/more.kdl");
    std::fs::write(&path, suite).unwrap();
    let run = mtactl(&[
        "test-policy",
        "--config",
        out.join("mtad.kdl").to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));

    // a client pattern table cannot be tested without the client's name; Postfix looks
    // addresses up in lower case, so a case-sensitive pattern with capitals cannot be
    // written as a rule: each refuses where it stood
    let (_tmp, _t, _out, config) = import_with(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n\
         smtpd_client_restrictions = check_client_access pcre:/etc/postfix/c1\n\
         smtpd_sender_restrictions = check_sender_access regexp:/etc/postfix/s3\n",
        None,
        &[
            ("c1", "/^192\\.0\\.2\\./ REJECT\n"),
            ("s3", "/^Upper@/i REJECT\n"),
        ],
    );
    assert!(
        config.contains("check_client_access pcre:/etc/postfix/c1 is not translated"),
        "{config}"
    );
    assert!(
        config.contains("check_sender_access regexp:/etc/postfix/s3 is not translated"),
        "{config}"
    );
}

/// inet_protocols: with IPv6, `all` interfaces are one dual-stack listener that takes
/// IPv4 and IPv6 clients (as Postfix's two wildcard sockets do), `loopback-only` is
/// 127.0.0.1 and [::1]; IPv4 alone stays 0.0.0.0.
#[test]
fn ipv6_listeners_as_postfix_binds_them() {
    require_tool("swaks");
    let port = common::free_port();
    let master = format!("{port} inet n - y - - smtpd\n");
    let listens = |main: &str| {
        let (tmp, dir) = postfix_dir(
            &format!(
                "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n{main}"
            ),
            Some(&master),
        );
        let (t, out) = import(&dir);
        let config = std::fs::read_to_string(out.join("mtad.kdl")).unwrap();
        let lines: Vec<String> = config
            .lines()
            .filter(|l| l.starts_with("listen "))
            .map(|l| l.split("   //").next().unwrap_or(l).to_owned())
            .collect();
        (lines, tmp, t, out)
    };
    let (v4, ..) = listens("inet_interfaces = all\ninet_protocols = ipv4\n");
    assert_eq!(
        v4,
        [format!("listen \"{port}\" address=\"0.0.0.0:{port}\"")]
    );
    let (lo, ..) = listens("inet_interfaces = loopback-only\ninet_protocols = all\n");
    assert_eq!(
        lo,
        [
            format!("listen \"{port}\" address=\"127.0.0.1:{port}\""),
            format!("listen \"{port}-2\" address=\"[::1]:{port}\""),
        ]
    );
    let (all, _tmp, t, out) = listens("inet_interfaces = all\ninet_protocols = ipv4, ipv6\n");
    assert_eq!(all, [format!("listen \"{port}\" address=\"[::]:{port}\"")]);
    // and that one listener answers on both protocols
    let spool = t.path().join("spool");
    let _mtad = Mtad::start_file(t, out.join("mtad.kdl"), spool, port);
    for server in ["127.0.0.1", "::1"] {
        let o = Command::new("swaks")
            .args(["--server", server, "--port", &port.to_string()])
            .args([
                "--from",
                "a@elsewhere.example",
                "--to",
                "postmaster@mx.example.test",
            ])
            .args(["--quit-after", "RCPT"])
            .output()
            .unwrap();
        let shown = text(&o);
        assert!(
            o.status.success() && shown.contains("<-  250"),
            "{server}: {shown}"
        );
    }
}

/// smtpd_sasl_auth_enable: the listener offers AUTH where Postfix does (after STARTTLS
/// with smtpd_tls_auth_only = yes), against an empty users table marked FILL IN: a
/// real client's AUTH is refused, never let in, until the operator lists the users.
#[test]
fn server_sasl_offers_auth_that_refuses_everyone_until_filled_in() {
    require_tool("swaks");
    let port = common::free_port();
    // (the certificate stays where main.cf names it: this directory lives to the end)
    let (_tmp, dir) = postfix_dir(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n\
         inet_interfaces = 127.0.0.1\n\
         smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem\n\
         smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key\n\
         smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n\
         smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\nsmtpd_tls_auth_only = yes\n",
        Some(&format!("{port} inet n - y - - smtpd\n")),
    );
    for f in ["ssl-cert-snakeoil.pem", "ssl-cert-snakeoil.key"] {
        std::fs::copy(fixture("debian").join(f), dir.join(f)).unwrap();
    }
    let (t, out) = import(&dir);
    let config = std::fs::read_to_string(out.join("mtad.kdl")).unwrap();
    assert!(
        config.contains(&format!(
            "listen \"{port}\" address=\"127.0.0.1:{port}\" auth=\"offered\" users=\"sasl\"   //"
        )),
        "{config}"
    );
    assert!(
        config.contains("users \"sasl\" file=\"users.passwd\""),
        "{config}"
    );
    let users = std::fs::read_to_string(out.join("users.passwd")).unwrap();
    assert!(
        users.contains("FILL IN") && users.contains("dovecot"),
        "{users}"
    );
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert!(report.contains("every AUTH fails (535)"), "{report}");
    let spool = t.path().join("spool");
    let _mtad = Mtad::start_file(t, out.join("mtad.kdl"), spool, port);
    let auth = |tls: bool| {
        let mut cmd = Command::new("swaks");
        cmd.args(["--server", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--from",
                "a@mx.example.test",
                "--to",
                "friend@elsewhere.example",
            ])
            .args([
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "secret",
            ])
            .args(["--quit-after", "AUTH"]);
        if tls {
            cmd.arg("--tls");
        }
        text(&cmd.output().unwrap())
    };
    // AUTH after STARTTLS: offered, and refused
    let shown = auth(true);
    assert!(
        shown.contains("<~* 535 5.7.8") && !shown.contains(" 235 "),
        "{shown}"
    );
    // before STARTTLS: not offered (smtpd_tls_auth_only = yes)
    let shown = auth(false);
    assert!(
        !shown.contains(" 235 ") && !shown.contains("AUTH PLAIN LOGIN"),
        "{shown}"
    );
}

/// A hostile pattern table (thousands of DUNNO lines, each of which every later line
/// would have to exclude) is not written out as rules: the output stays small and the
/// table refuses where it stood.
#[test]
fn a_pattern_table_too_large_to_write_out_refuses_where_it_stood() {
    let mut table: String = (0..3000)
        .map(|n| format!("/^u{n}@x\\.example$/ DUNNO\n"))
        .collect();
    table.push_str("/@x\\.example$/ REJECT\n");
    let (_tmp, _t, out, config) = import_with(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\ncompatibility_level = 3.6\n\
         smtpd_sender_restrictions = check_sender_access regexp:/etc/postfix/big\n",
        None,
        &[("big", &table)],
    );
    assert!(
        config.contains("check_sender_access regexp:/etc/postfix/big is not translated"),
        "{config}"
    );
    assert!(config.len() < 64 << 10, "{} bytes", config.len());
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert!(report.contains("KiB of patterns"), "{report}");
}

/// postscreen with `postscreen_dnsbl_action = enforce`: its DNS lists, weighted, refuse
/// first at RCPT on its listener (not for mynetworks); the dry run decides with them.
#[test]
fn postscreen_dns_lists_refuse_first_on_their_listener() {
    let (_tmp, _t, out, config) = import_with(
        "myhostname = mx.example.test\nmynetworks = 127.0.0.0/8\ncompatibility_level = 3.6\n\
         inet_protocols = ipv4\nrelay_domains = relay.example\n\
         postscreen_dnsbl_sites = zen.example=127.0.0.[2..11]*2 b.example\n\
         postscreen_dnsbl_threshold = 2\npostscreen_dnsbl_action = enforce\n\
         postscreen_greet_action = enforce\n",
        Some(
            "smtp inet n - y - 1 postscreen\nsmtpd pass - - y - - smtpd\n\
             submission inet n - y - - smtpd\n",
        ),
        &[],
    );
    for wanted in [
        "dnsbl \"postscreen\" \"zen.example=127.0.0.[2..11]*2\" \"b.example\" threshold=2",
        "reject 550 \"5.7.1\" \"Service unavailable; client blocked using postscreen's DNS lists\" dnsbl=\"postscreen\" listener=\"smtp\" not-client=\"mynetworks\"",
    ] {
        assert!(config.contains(wanted), "{wanted} not in:\n{config}");
    }
    let report = std::fs::read_to_string(out.join("import-report.txt")).unwrap();
    assert!(
        report.contains("postscreen_greet_action") && report.contains("no pregreet test"),
        "{report}"
    );
    let suite = out.join("tests/postscreen.kdl");
    std::fs::write(
        &suite,
        "case \"listed twice over\" {
    listener \"smtp\"
    client \"192.0.2.10\"
    from \"a@elsewhere.example\"
    rcpt \"user@relay.example\"
    dns { a \"10.2.0.192.zen.example\" \"127.0.0.2\"; }
    expect \"rcpt\" \"reject\" reply=\"550 5.7.1\"
}
case \"under the threshold\" {
    listener \"smtp\"
    client \"192.0.2.11\"
    from \"a@elsewhere.example\"
    rcpt \"user@relay.example\"
    dns { a \"11.2.0.192.b.example\" \"127.0.0.2\"; }
    expect \"rcpt\" \"accept\"
}
case \"not on the submission port\" {
    listener \"submission\"
    client \"192.0.2.10\"
    from \"a@elsewhere.example\"
    rcpt \"user@relay.example\"
    dns { a \"10.2.0.192.zen.example\" \"127.0.0.2\"; }
    expect \"rcpt\" \"accept\"
}
",
    )
    .unwrap();
    let run = mtactl(&[
        "test-policy",
        "--config",
        out.join("mtad.kdl").to_str().unwrap(),
        suite.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
}

#[test]
fn lists_that_cannot_refuse_relaying_are_refused_as_postfix_refuses_them() {
    // compatibility_level 0: no default relay restrictions, and none written
    let (tmp, dir) = postfix_dir("myhostname = mx.example.test\n", None);
    let out = tmp.path().join("out");
    let o = mtactl(&[
        "import",
        "postfix",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("specify at least one working instance of"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "nothing written");
}

// ---- the same configuration in a real Postfix and in mtad -------------------------

/// The Postfix configuration both servers run (with the settings every throw-away
/// Postfix has: its directories, 127.0.0.1, IPv4, compatibility_level 3.6).
const DIFF_MAIN_CF: &str = "myhostname = mx.example.test
mydomain = example.test
mydestination = $myhostname, localhost
relay_domains = relay.example, strict.example
mynetworks = 127.0.0.1/32
alias_maps = texthash:{etc}/aliases
alias_database =
transport_maps = texthash:{etc}/transport
header_checks = regexp:{etc}/header_checks
smtpd_restriction_classes = strict
strict = check_sender_access texthash:{etc}/strict_senders
smtpd_client_restrictions = check_client_access cidr:{etc}/client_access.cidr,
    warn_if_reject reject_non_fqdn_helo_hostname
smtpd_helo_restrictions = check_helo_access texthash:{etc}/helo_access,
    check_helo_access regexp:{etc}/helo_regexp
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_sender_access texthash:{etc}/sender_access,
    check_sender_access regexp:{etc}/sender_regexp,
    check_recipient_access pcre:{etc}/recipient_pcre,
    check_recipient_access texthash:{etc}/recipient_access
virtual_alias_domains = virt.example
virtual_alias_maps = texthash:{etc}/virtual_first, texthash:{etc}/virtual_second
relayhost = [127.0.0.1]:1
defer_transports = smtp relay
smtpd_peername_lookup = no
smtpd_tls_security_level = none";

/// The tables it names: (file, text).
const DIFF_TABLES: &[(&str, &str)] = &[
    ("aliases", "root: admin@foreign.example\npostmaster: root\n"),
    (
        "transport",
        "relay.example :[127.0.0.1]:1\ngone.relay.example error:5.1.1 this domain is gone\n",
    ),
    ("header_checks", "/^X-Spam-Flag: YES/ REJECT spam\n"),
    (
        "sender_access",
        "vip@bad.example DUNNO\nbad.example REJECT go away\n",
    ),
    (
        "client_access.cidr",
        "127.0.0.3/32 REJECT blocked client\n127.0.0.4/32 OK\n",
    ),
    ("helo_access", "bad.helo.example REJECT no such name\n"),
    ("recipient_access", "strict.example strict\n"),
    (
        "strict_senders",
        "blocked@x.example REJECT not to strict.example\n",
    ),
    // a pattern table: the first line that matches answers, whatever it says
    (
        "sender_regexp",
        "/^<>$/ 550 5.7.1 no bounces here
/^vip@spam\\.example$/ DUNNO
/@spam\\.example$/ REJECT spam domain
/^friend@trusted\\.example$/ OK
/@trusted\\.example$/ REJECT untrusted
/@y\\.example$/ strict
/^(nasty|other)@/ REJECT blocked local part
/^lower@/i REJECT case folded
",
    ),
    (
        "recipient_pcre",
        "/^nobody@relay\\.example$/ DUNNO
/^(no|x)[a-z]*@relay\\.example$/ REJECT no such person
/^[0-9]+@relay\\.example$/ 450 4.2.0 numbers later
",
    ),
    ("helo_regexp", "/\\.invalid$/ REJECT invalid HELO\n"),
    (
        "virtual_first",
        "both@virt.example first@foreign.example\nonly1@virt.example one@foreign.example\n",
    ),
    (
        "virtual_second",
        "both@virt.example second@foreign.example\nonly2@virt.example two@foreign.example\n",
    ),
];

/// One probe: what a client sends, and what it is about.
struct Probe {
    client: &'static str,
    helo: &'static str,
    from: &'static str,
    to: &'static str,
    header: Option<&'static str>,
    what: &'static str,
}

const fn p(
    client: &'static str,
    from: &'static str,
    to: &'static str,
    what: &'static str,
) -> Probe {
    Probe {
        client,
        helo: "client.example",
        from,
        to,
        header: None,
        what,
    }
}

const PROBES: &[Probe] = &[
    p(
        "127.0.0.1",
        "a@elsewhere.example",
        "friend@foreign.example",
        "a trusted client relays",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "friend@foreign.example",
        "an untrusted client may not relay",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "postmaster@mx.example.test",
        "a local recipient from outside",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "root@mx.example.test",
        "an alias from outside",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "nosuchuser@mx.example.test",
        "an unknown local user",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "user@relay.example",
        "a relay domain from outside",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "user@sub.relay.example",
        "a relay domain's subdomain",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "user@gone.relay.example",
        "a transport error: entry",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "user%foreign.example@relay.example",
        "the percent hack",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "foreign.example!user@relay.example",
        "a bang path",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "\"user@foreign.example\"@relay.example",
        "a quoted @",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "user@[192.0.2.1]",
        "an address literal",
    ),
    p("127.0.0.2", "a@elsewhere.example", "user@", "no domain"),
    p(
        "127.0.0.2",
        "spammer@bad.example",
        "user@relay.example",
        "a sender the access table refuses",
    ),
    p(
        "127.0.0.2",
        "vip@bad.example",
        "user@relay.example",
        "an access table's DUNNO for an address ends the lookup before its domain's REJECT",
    ),
    p(
        "127.0.0.2",
        "ok@good.bad.example",
        "user@relay.example",
        "a subdomain of the refused sender domain",
    ),
    p(
        "127.0.0.1",
        "spammer@bad.example",
        "friend@foreign.example",
        "a trusted client's refused sender: a permit ends only its own list",
    ),
    p(
        "127.0.0.3",
        "a@elsewhere.example",
        "user@relay.example",
        "a client the cidr table refuses",
    ),
    p(
        "127.0.0.4",
        "a@elsewhere.example",
        "friend@foreign.example",
        "a client the cidr table permits still may not relay",
    ),
    p(
        "127.0.0.4",
        "a@elsewhere.example",
        "user@relay.example",
        "a client the cidr table permits, to a relay domain",
    ),
    Probe {
        helo: "bad.helo.example",
        ..p(
            "127.0.0.2",
            "a@elsewhere.example",
            "user@relay.example",
            "a HELO name the access table refuses",
        )
    },
    Probe {
        helo: "nodots",
        ..p(
            "127.0.0.2",
            "a@elsewhere.example",
            "user@relay.example",
            "warn_if_reject: a HELO without a dot only warns",
        )
    },
    p(
        "127.0.0.2",
        "blocked@x.example",
        "user@strict.example",
        "a restriction class from the recipient table refuses",
    ),
    p(
        "127.0.0.2",
        "blocked@x.example",
        "user@relay.example",
        "the class applies to its own domain only",
    ),
    p(
        "127.0.0.2",
        "fine@x.example",
        "user@strict.example",
        "the class lets other senders through",
    ),
    p(
        "127.0.0.2",
        "<>",
        "user@relay.example",
        "the null sender, refused by a pattern for <>",
    ),
    p(
        "127.0.0.2",
        "vip@spam.example",
        "user@relay.example",
        "a pattern's DUNNO ends the table before a refusing line",
    ),
    p(
        "127.0.0.2",
        "bulk@spam.example",
        "user@relay.example",
        "a pattern refuses a sender",
    ),
    p(
        "127.0.0.2",
        "friend@trusted.example",
        "user@relay.example",
        "a pattern's OK comes before a later refusing line",
    ),
    p(
        "127.0.0.2",
        "someone@trusted.example",
        "user@relay.example",
        "the later refusing line",
    ),
    p(
        "127.0.0.2",
        "other@y.example",
        "user@relay.example",
        "a pattern's restriction class that does not decide ends the table",
    ),
    p(
        "127.0.0.2",
        "other@z.example",
        "user@relay.example",
        "the line after the class refuses others",
    ),
    p(
        "127.0.0.2",
        "LoWeR@a.example",
        "user@relay.example",
        "a case-sensitive pattern (flag i) sees the address in lower case",
    ),
    p(
        "127.0.0.2",
        "lowest@a.example",
        "user@relay.example",
        "a case-sensitive pattern that does not match",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "nobody@relay.example",
        "a recipient pcre DUNNO",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "nothing@relay.example",
        "a recipient pcre refuses",
    ),
    p(
        "127.0.0.2",
        "a@elsewhere.example",
        "123@relay.example",
        "a recipient pcre defers with its own code",
    ),
    Probe {
        helo: "host.invalid",
        ..p(
            "127.0.0.2",
            "a@elsewhere.example",
            "user@relay.example",
            "a HELO pattern refuses",
        )
    },
    Probe {
        header: Some("X-Spam-Flag: YES"),
        ..p(
            "127.0.0.1",
            "a@elsewhere.example",
            "friend@foreign.example",
            "a header check refuses",
        )
    },
    Probe {
        header: Some("X-Spam-Flag: NO"),
        ..p(
            "127.0.0.1",
            "a@elsewhere.example",
            "friend@foreign.example",
            "a header check lets it pass",
        )
    },
];

/// Probes whose reply classes differ on purpose, with the reason.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The class (first digit) of the reply to the last command swaks sent: RCPT, or the
/// end of DATA when a header is given.
fn reply_class(port: u16, probe: &Probe) -> String {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--local-interface", probe.client, "--helo", probe.helo])
        .args(["--from", probe.from, "--to", probe.to]);
    match probe.header {
        Some(h) => cmd.args(["--header", h, "--body", "probe"]),
        None => cmd.args(["--quit-after", "RCPT"]),
    };
    let out = cmd.output().expect("swaks");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    // the last server reply before QUIT
    let replies: Vec<&str> = transcript
        .lines()
        .filter(|l| l.starts_with("<-") || l.starts_with("<**"))
        .map(|l| l.trim_start_matches(['<', '-', '*', ' ']))
        .collect();
    let quit = transcript.lines().position(|l| l.contains("-> QUIT"));
    let wanted = match quit {
        Some(_) => replies.iter().rev().nth(1).copied(),
        None => replies.last().copied(),
    };
    let line = wanted.unwrap_or("");
    assert!(!line.is_empty(), "no reply in:\n{transcript}");
    format!("{} ({line})", &line[..1])
}

#[test]
fn imported_configuration_answers_as_postfix_does() {
    require_tool("swaks");
    let postfix = Postfix::start(&DIFF_MAIN_CF.replace("{etc}", "ETC_PLACEHOLDER"), true);
    let etc = postfix.etc();
    // the tables, and main.cf with their real directory
    let main = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    std::fs::write(
        etc.join("main.cf"),
        main.replace("ETC_PLACEHOLDER", etc.to_str().unwrap()),
    )
    .unwrap();
    for (name, body) in DIFF_TABLES {
        std::fs::write(etc.join(name), body).unwrap();
    }
    let reload = Command::new("postfix")
        .arg("-c")
        .arg(&etc)
        .arg("reload")
        .output()
        .unwrap();
    assert!(reload.status.success(), "postfix reload: {}", text(&reload));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let theirs: Vec<String> = PROBES
        .iter()
        .map(|p| reply_class(postfix.port, p))
        .collect();

    // the same directory, imported
    let (tmp, out) = import(&etc);
    let config = out.join("mtad.kdl");
    let port = common::free_port();
    let kdl = std::fs::read_to_string(&config).unwrap().replace(
        &format!("address=\"127.0.0.1:{}\"", postfix.port),
        &format!("address=\"127.0.0.1:{port}\""),
    );
    assert!(kdl.contains(&format!("127.0.0.1:{port}")), "{kdl}");
    std::fs::write(&config, kdl).unwrap();
    let spool = tmp.path().join("spool");
    let mtad = Mtad::start_file(tmp, config.clone(), spool, port);
    let ours: Vec<String> = PROBES.iter().map(|p| reply_class(mtad.port, p)).collect();
    let mut wrong = Vec::new();
    for ((probe, t), o) in PROBES.iter().zip(&theirs).zip(&ours) {
        eprintln!("{:<45} Postfix {t:<60} mtad {o}", probe.what);
        let known = KNOWN_DIFFERENCES
            .iter()
            .any(|(what, _)| *what == probe.what);
        if t[..1] != o[..1] && !known {
            wrong.push(format!("{}: Postfix {t}, mtad {o}", probe.what));
        }
    }
    assert!(
        wrong.is_empty(),
        "different reply classes:\n{}",
        wrong.join("\n")
    );

    // virtual_alias_maps with two tables: the first table that has an address answers
    // (Postfix's queue after cleanup's rewriting; mtad's route for the same address)
    let wanted = [
        (
            "both@virt.example",
            "first@foreign.example",
            "second@foreign.example",
        ),
        (
            "only2@virt.example",
            "two@foreign.example",
            "one@foreign.example",
        ),
    ];
    for (rcpt, _, _) in wanted {
        let sent = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &postfix.port.to_string()])
            .args(["--from", "a@elsewhere.example", "--to", rcpt, "--body", "v"])
            .output()
            .unwrap();
        assert!(sent.status.success(), "swaks to {rcpt}: {}", text(&sent));
    }
    let mut queue = String::new();
    for _ in 0..100 {
        let q = Command::new("postqueue")
            .arg("-c")
            .arg(&etc)
            .arg("-j")
            .output()
            .unwrap();
        queue = String::from_utf8_lossy(&q.stdout).into_owned();
        if wanted
            .iter()
            .all(|(_, to, _)| queue.contains(&format!("\"{to}\"")))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for (rcpt, to, not) in wanted {
        assert!(
            queue.contains(&format!("\"{to}\"")) && !queue.contains(&format!("\"{not}\"")),
            "Postfix: {rcpt} -> {to}:\n{queue}"
        );
        let route = mtactl(&[
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            "--client",
            "127.0.0.2",
            "--from",
            "a@elsewhere.example",
            "--rcpt",
            rcpt,
        ]);
        let shown = text(&route);
        assert!(
            shown.contains(&format!("-> <{to}>")) && !shown.contains(&format!("<{not}>")),
            "mtad: {rcpt} -> {to}:\n{shown}"
        );
    }
}

/// docs/migrating-from-postfix.md shows seed 000's import and its report as the
/// command writes them.
#[test]
fn the_documented_import_is_what_the_command_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/migrating-from-postfix.md")).unwrap();
    let block = |fence: &str| -> String {
        let start = doc
            .find(fence)
            .unwrap_or_else(|| panic!("{fence} in the page"))
            + fence.len();
        let end = doc[start..].find("```").unwrap() + start;
        doc[start..end].to_owned()
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .current_dir(root)
        .args([
            "import",
            "postfix",
            "tests/data/postfix-import/000-subdomain-server",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        block("```kdl\n"),
        std::fs::read_to_string(out.join("mtad.kdl")).unwrap()
    );
    assert_eq!(
        block("```text\n").trim_end(),
        std::fs::read_to_string(out.join("import-report.txt"))
            .unwrap()
            .trim_end()
    );
}

/// Policy services, DNS lists, milters, limits, rate limits, a submission listener with
/// its own restrictions and relayhost credentials: each written as the documentation
/// says, and the dry run decides with them.
#[test]
fn a_busy_main_cf_translates_every_part() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("postfix");
    std::fs::create_dir(&dir).unwrap();
    let debian = fixture("debian");
    for f in ["ssl-cert-snakeoil.pem", "ssl-cert-snakeoil.key"] {
        std::fs::copy(debian.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("main.cf"),
        "compatibility_level = 3.6
myhostname = mx.example.test
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8, [::1]/128
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,
    reject_rbl_client zen.example=127.0.0.[2..11], check_policy_service inet:127.0.0.1:10023
smtpd_policy_service_timeout = 20s
smtpd_milters = inet:localhost:8891, { unix:/run/spamass/spamass.sock, default_action=accept }
milter_default_action = tempfail
non_smtpd_milters = $smtpd_milters
message_size_limit = 52428800
smtpd_recipient_limit = 200
smtpd_client_connection_rate_limit = 30
smtpd_client_message_rate_limit = 100
relayhost = [smarthost.example]:587
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd
smtp_tls_security_level = encrypt
maximal_queue_lifetime = 3d
",
    )
    .unwrap();
    std::fs::write(
        dir.join("sasl_passwd"),
        "[smarthost.example]:587 user:secret\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("master.cf"),
        "smtp inet n - y - - smtpd
submission inet n - y - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
",
    )
    .unwrap();
    let (_t, out) = import(&dir);
    let config = std::fs::read_to_string(out.join("mtad.kdl")).unwrap();
    for wanted in [
        "listen \"submission\" address=\"[::]:587\" starttls=\"required\"",
        "milters=\"milter-8891 spamass\"",
        "milter \"milter-8891\" \"inet:127.0.0.1:8891\" on-failure=\"tempfail\"",
        "milter \"spamass\" \"unix:/run/spamass/spamass.sock\" on-failure=\"accept\"",
        // non_smtpd_milters: mail from sendmail goes through the same milters
        "local-submission {",
        "    milters \"milter-8891 spamass\"   // non_smtpd_milters",
        "dnsbl \"zen.example\" \"zen.example=127.0.0.[2..11]\"",
        "reject-dnsbl \"zen.example\"",
        "policy-service \"policy-10023\" address=\"inet:127.0.0.1:10023\" timeout=\"20s\"",
        "check-policy-service \"policy-10023\"",
        "message-size 52428800",
        "recipients 200",
        "connections 30 per=\"60s\"",
        "messages 100 per=\"60s\"",
        "exempt \"mynetworks\"",
        "credentials \"relay\" file=\"sasl_passwd\"",
        "relay \"smtp:[smarthost.example]:587\" auth=\"relay\"",
        "tls \"required\"",
        "lifetime \"3d\"",
        // the submission listener's lists (without the main recipient restrictions,
        // whose reject_unauth_destination would refuse its users' relaying in Postfix
        // and here alike): a client that did not log in is refused
        "reject 554 \"5.7.1\" \"Access denied\" listener=\"submission\" authenticated=#false",
    ] {
        assert!(config.contains(wanted), "{wanted} not in:\n{config}");
    }
    // the dry run: a listed client is refused, a policy service's REJECT too
    let suite = tmp.path().join("more.kdl");
    std::fs::write(
        &suite,
        "case \"listed\" {
    client \"192.0.2.10\"
    from \"a@elsewhere.example\"
    rcpt \"postmaster@mx.example.test\"
    dns { a \"10.2.0.192.zen.example\" \"127.0.0.2\"; }
    expect \"rcpt\" \"reject\" reply=\"554 5.7.1\"
}
case \"the policy service refuses\" {
    client \"192.0.2.11\"
    from \"a@elsewhere.example\"
    rcpt \"postmaster@mx.example.test\"
    policy-service \"policy-10023\" \"REJECT greylisted forever\"
    expect \"rcpt\" \"reject\"
}
case \"submission without login\" {
    listener \"submission\"
    tls #true
    client \"192.0.2.12\"
    from \"a@elsewhere.example\"
    rcpt \"friend@elsewhere.example\"
    expect \"rcpt\" \"reject\" reply=\"554\"
}
case \"submission with login relays\" {
    listener \"submission\"
    tls #true
    auth \"alice\"
    client \"192.0.2.12\"
    from \"alice@mx.example.test\"
    rcpt \"friend@elsewhere.example\"
    expect \"rcpt\" \"accept\"
    route \"friend@elsewhere.example\" \"smtp:[smarthost.example]:587\"
}
",
    )
    .unwrap();
    let run = mtactl(&[
        "test-policy",
        "--config",
        out.join("mtad.kdl").to_str().unwrap(),
        suite.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
}
