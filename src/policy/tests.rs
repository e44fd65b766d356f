use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::config::Config;

const PRELUDE: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

fn pipeline(rules: &str) -> Pipeline {
    let text = format!(
        "{PRELUDE}networks \"trusted\" \"127.0.0.0/8\" \"2001:db8::/32\"\ndomains \"relay\" \"example.test\" \".example.test\"\nstage \"rcpt\" {{\n{rules}}}\n"
    );
    match Config::parse("mtad.kdl", &text) {
        Ok(config) => Pipeline::compile(&config),
        Err(e) => panic!("{}", crate::config::render(&e)),
    }
}

fn rcpt(p: &Pipeline, client: &str, rcpt: &str) -> Decision {
    p.rcpt(&RcptContext {
        client_ip: client.parse().unwrap(),
        rcpt,
    })
}

fn at(line: u32, column: u32) -> Option<Origin> {
    Some(Origin {
        file: Arc::from("mtad.kdl"),
        line,
        column,
    })
}

/// Rules start on line 9 of the generated file.
const FIRST_RULE_LINE: u32 = 9;

#[test]
fn first_matching_rule_decides_and_is_reported() {
    let p = pipeline(
        "    accept client=\"trusted\"\n    accept rcpt-domain=\"relay\"\n    reject 554 \"5.7.1\" \"Relay access denied\"\n",
    );
    assert_eq!(p.rule_count(Stage::Rcpt), 3);
    assert_eq!(p.rule_count(Stage::Mail), 0);

    let d = rcpt(&p, "127.0.0.1", "anyone@elsewhere.test");
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.rule, at(FIRST_RULE_LINE, 5));

    let d = rcpt(&p, "::ffff:127.0.0.1", "anyone@elsewhere.test");
    assert_eq!(d.rule, at(FIRST_RULE_LINE, 5));

    let d = rcpt(&p, "192.0.2.1", "user@sub.EXAMPLE.test.");
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.rule, at(FIRST_RULE_LINE + 1, 5));

    let d = rcpt(&p, "192.0.2.1", "user@elsewhere.test");
    assert_eq!(
        d.verdict,
        Verdict::Reject(Reply::new(554, [5, 7, 1], "Relay access denied"))
    );
    assert_eq!(d.rule, at(FIRST_RULE_LINE + 2, 5));
    assert_eq!(d.rule.unwrap().to_string(), "mtad.kdl:11:5");
}

#[test]
fn a_reject_before_an_accept_wins() {
    let p = pipeline(
        "    reject 550 \"5.7.1\" \"blocked\" client=\"127.0.0.2\"\n    accept client=\"trusted\"\n",
    );
    let d = rcpt(&p, "127.0.0.2", "a@example.test");
    assert_eq!(
        d.verdict,
        Verdict::Reject(Reply::new(550, [5, 7, 1], "blocked"))
    );
    assert_eq!(d.rule, at(FIRST_RULE_LINE, 5));
    assert_eq!(rcpt(&p, "127.0.0.3", "a@x.test").verdict, Verdict::Accept);
}

#[test]
fn conditions_on_one_rule_are_anded() {
    let p = pipeline("    accept client=\"trusted\" rcpt-domain=\"relay\"\n");
    assert_eq!(
        rcpt(&p, "127.0.0.1", "a@example.test").verdict,
        Verdict::Accept
    );
    assert!(matches!(
        rcpt(&p, "127.0.0.1", "a@elsewhere.test").verdict,
        Verdict::Reject(_)
    ));
    assert!(matches!(
        rcpt(&p, "192.0.2.1", "a@example.test").verdict,
        Verdict::Reject(_)
    ));
}

#[test]
fn default_is_554_relay_access_denied() {
    for p in [pipeline(""), Pipeline::default()] {
        let d = rcpt(&p, "127.0.0.1", "user@example.test");
        assert_eq!(d.rule, None);
        let Verdict::Reject(reply) = d.verdict else {
            panic!("expected a rejection");
        };
        assert_eq!(
            reply.to_string(),
            "554 5.7.1 <user@example.test>: Relay access denied"
        );
    }
}

#[test]
fn echoed_recipient_is_sanitised_and_bounded() {
    let p = pipeline("");
    let long = format!("{}@example.test", "a".repeat(1000));
    for address in [
        "user@example.test\r\n250 OK",
        "us\u{7f}er\u{e9}@example.test",
        long.as_str(),
    ] {
        let Verdict::Reject(reply) = rcpt(&p, "192.0.2.1", address).verdict else {
            panic!("expected a rejection");
        };
        assert!(
            reply.text.chars().all(|c| (' '..='~').contains(&c)),
            "{reply}"
        );
        assert!(reply.text.len() <= MAX_ECHOED_ADDRESS + 30, "{reply}");
    }
}

#[test]
fn routing_tricks_do_not_match_rcpt_domain() {
    let p = pipeline("    accept rcpt-domain=\"relay\"\n");
    assert_eq!(
        rcpt(&p, "192.0.2.1", "user@example.test").verdict,
        Verdict::Accept
    );
    for address in [
        "user%foreign.test@example.test",
        "foreign.test!user@example.test",
        "\"user@foreign.test\"@example.test",
        "@example.test:user@foreign.test",
        "user",
        "user@[127.0.0.1]",
    ] {
        let d = rcpt(&p, "192.0.2.1", address);
        assert!(
            matches!(d.verdict, Verdict::Reject(_)),
            "{address} was accepted"
        );
        assert_eq!(d.rule, None, "{address}");
    }
    // The client rule is unaffected: trusted clients may use any address.
    let p = pipeline("    accept client=\"trusted\"\n");
    assert_eq!(
        rcpt(&p, "127.0.0.1", "user%foreign.test@example.test").verdict,
        Verdict::Accept
    );
}

#[test]
fn literal_networks_and_v6_clients() {
    let p = pipeline("    accept client=\"192.0.2.0/24\"\n    accept client=\"trusted\"\n");
    assert_eq!(
        rcpt(&p, "192.0.2.200", "a@x.test").rule,
        at(FIRST_RULE_LINE, 5)
    );
    assert_eq!(
        rcpt(&p, "::ffff:192.0.2.1", "a@x.test").rule,
        at(FIRST_RULE_LINE, 5)
    );
    assert_eq!(
        rcpt(&p, "2001:db8::25", "a@x.test").rule,
        at(FIRST_RULE_LINE + 1, 5)
    );
    assert_eq!(rcpt(&p, "2001:db9::25", "a@x.test").rule, None);
}

#[test]
fn a_dangling_reference_fails_closed() {
    let config = Config {
        path: PathBuf::from("mtad.kdl"),
        server: crate::config::Server {
            hostname: "mx.example.test".into(),
            spool: PathBuf::from("spool"),
            control_socket: PathBuf::from("spool/control.sock"),
            banner: "ESMTP".into(),
            shutdown_timeout: std::time::Duration::from_secs(30),
            origin: "mx.example.test".into(),
            content_filter: None,
            tls: None,
            metrics: None,
            user: None,
        },
        sources: Default::default(),
        listeners: vec![],
        limits: Default::default(),
        rate_limits: Default::default(),
        reload: Default::default(),
        decision_log: crate::config::decision_log::DecisionLog::defaults_for(&PathBuf::from(
            "spool",
        )),
        log: Default::default(),
        virtual_mailboxes: None,
        networks: BTreeMap::new(),
        domains: BTreeMap::new(),
        tables: BTreeMap::new(),
        aliases: None,
        virtual_aliases: None,
        delivery: crate::config::Delivery::defaults_for(std::path::Path::new("spool")),
        credentials: BTreeMap::new(),
        content_filters: BTreeMap::new(),
        policy_services: BTreeMap::new(),
        dnsbls: BTreeMap::new(),
        milters: BTreeMap::new(),
        users: BTreeMap::new(),
        dkim: Vec::new(),
        dkim_internal: None,
        authentication: None,
        local_submission: None,
        cluster: None,
        greylisting: None,
        stages: {
            let mut stages: [Vec<crate::config::RuleConfig>; Stage::COUNT] = Default::default();
            stages[Stage::Rcpt.index()] = vec![crate::config::RuleConfig {
                action: crate::config::RuleAction::Accept,
                conditions: vec![crate::config::ConditionConfig {
                    negate: false,
                    test: crate::config::Condition::RcptDomain("missing".into()),
                }],
                warn: false,
                open_relay: false,
                origin: at(1, 1).unwrap(),
                route: Default::default(),
            }];
            stages
        },
    };
    let d = Pipeline::compile(&config).rcpt(&RcptContext {
        client_ip: "127.0.0.1".parse().unwrap(),
        rcpt: "a@example.test",
    });
    let Verdict::Defer(reply) = d.verdict else {
        panic!("a dangling reference must not accept");
    };
    assert!(reply.is_temporary());
    assert_eq!(d.rule, at(1, 1));
}

#[test]
fn stages_and_replies() {
    assert_eq!(Stage::ALL.len(), Stage::COUNT);
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        assert_eq!(stage.index(), i);
        assert_eq!(Stage::from_name(stage.as_str()), Some(stage));
    }
    assert_eq!(Stage::Rcpt.to_string(), "rcpt");
    assert_eq!(Stage::from_name("RCPT"), None);

    assert_eq!(Reply::parse_enhanced("5.7.1"), Some([5, 7, 1]));
    assert_eq!(Reply::parse_enhanced("4.3.255"), Some([4, 3, 255]));
    assert_eq!(Reply::parse_enhanced("5.7"), None);
    assert_eq!(Reply::parse_enhanced("5.7.256"), None);
    assert_eq!(Reply::parse_enhanced("7.1.1"), None);
    assert_eq!(Reply::parse_enhanced("5.7.x"), None);
    assert!(Reply::check_codes(554, [5, 7, 1]).is_ok());
    assert!(Reply::check_codes(451, [5, 7, 1]).is_err());
    assert!(Reply::check_codes(250, [2, 0, 0]).is_err());
    assert_eq!(Reply::new(451, [4, 3, 0], "a\r\nb").text, "a??b");
    assert_eq!(Reply::new(550, [5, 1, 1], "").to_string(), "550 5.1.1");
}

#[test]
fn sender_login_checks_who_owns_the_sender_address() {
    let text = format!(
        "{PRELUDE}table \"senders\" {{\n    \"alice@example.test\" \"alice, Bob\"\n    \"@shared.test\" \"carol\"\n}}\nstage \"mail\" {{\n    reject authenticated=#true not-sender-login=\"senders\" 553 \"5.7.1\" \"Sender address not owned by you\"\n}}\n"
    );
    let p = match Config::parse("mtad.kdl", &text) {
        Ok(config) => Pipeline::compile(&config),
        Err(e) => panic!("{}", crate::config::render(&e)),
    };
    let verdict = |user: Option<&str>, sender: &str| {
        let ctx = Context {
            auth_user: user,
            sender: Some(sender),
            ..Context::new("192.0.2.1".parse().unwrap(), "sub")
        };
        match p.evaluate(Stage::Mail, &ctx).verdict {
            Verdict::Reject(r) => r.code,
            _ => 250,
        }
    };
    assert_eq!(verdict(Some("alice"), "alice@example.test"), 250);
    assert_eq!(
        verdict(Some("bob"), "Alice@Example.TEST"),
        250,
        "list, any case"
    );
    assert_eq!(verdict(Some("carol"), "anyone@shared.test"), 250, "@domain");
    assert_eq!(verdict(Some("carol"), "alice@example.test"), 553);
    assert_eq!(verdict(Some("alice"), "nobody@elsewhere.test"), 553);
    assert_eq!(
        verdict(Some("alice"), ""),
        553,
        "the null sender is nobody's"
    );
    assert_eq!(
        verdict(None, "alice@example.test"),
        250,
        "not authenticated"
    );
    // an undefined table is a configuration error at the property
    let err = Config::parse(
        "mtad.kdl",
        &format!("{PRELUDE}stage \"mail\" {{\n    reject sender-login=\"sendrs\" 553 \"5.7.1\" \"no\"\n}}\n"),
    )
    .unwrap_err();
    assert!(
        crate::config::render(&err).contains("undefined table `sendrs`"),
        "{}",
        crate::config::render(&err)
    );
}

/// Every kind of file a policy is compiled from takes part in its revision, which does
/// not depend on where the files are.
#[test]
fn the_revision_covers_every_file_read() {
    let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
    let files: &[(&str, String)] = &[
        (
            "mtad.kdl",
            r#"server {
    hostname "mx.example.test"
    spool "spool"
    tls-certificate "tls/cert.pem"
    tls-key "tls/key.pem"
}
listen "mx" address="127.0.0.1:2525"
include "more.kdl"
table "routes" file="routes.map"
aliases file="aliases"
stage "data" {
    header-checks file="header_checks"
}
stage "rcpt" {
    hook "hooks/rcpt.rhai"
}
"#
            .into(),
        ),
        ("more.kdl", "domains \"relay\" \"example.test\"\n".into()),
        ("routes.map", "example.test smtp:[127.0.0.1]:2526\n".into()),
        ("aliases", "root: admin@example.test\n".into()),
        ("header_checks", "/^X-Spam: yes/ REJECT spam\n".into()),
        ("hooks/rcpt.rhai", "fn rcpt(ctx) { next() }\n".into()),
        ("tls/cert.pem", cert.cert.pem()),
        ("tls/key.pem", cert.signing_key.serialize_pem()),
    ];
    let write = |dir: &std::path::Path| {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    };
    let revision = |dir: &std::path::Path| {
        let (config, pipeline) = Pipeline::load(&dir.join("mtad.kdl"))
            .unwrap_or_else(|e| panic!("{}", crate::config::render(&e)));
        let mut names: Vec<&str> = config.sources.names().collect();
        names.sort_unstable();
        let mut want: Vec<&str> = files
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "hooks/rcpt.rhai")
            .collect();
        want.sort_unstable();
        assert_eq!(names, want, "the files the configuration read");
        pipeline.revision().to_owned()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path());
    write(b.path());
    let first = revision(a.path());
    assert_eq!(
        revision(b.path()),
        first,
        "another directory, the same revision"
    );
    assert_eq!(revision(a.path()), first, "read again, the same revision");
    let mut seen = vec![first];
    for (name, _) in files {
        let path = a.path().join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        // a trailing newline changes no meaning, only bytes
        bytes.push(b'\n');
        std::fs::write(&path, &bytes).unwrap();
        let now = revision(a.path());
        assert!(!seen.contains(&now), "{name} changed, the revision did not");
        seen.push(now);
    }
}

#[test]
fn authentication_results_drive_rules() {
    use crate::mailauth::{AuthResult, AuthResults, DmarcPolicy};
    let text = format!(
        "{PRELUDE}listen \"reinject\" address=\"127.0.0.1:10025\" filtered=#true\nnetworks \"lan\" \"10.0.0.0/8\"\nauthentication {{\n    skip-clients \"lan\"\n}}\nstage \"mail\" {{\n    defer spf=\"temperror\" 451 \"4.7.1\" \"SPF temporary error\"\n}}\nstage \"data\" {{\n    reject dmarc=\"fail\" dmarc-policy=\"reject\" 550 \"5.7.1\" \"DMARC\"\n    hold dmarc=\"fail\" dmarc-policy=\"quarantine\"\n    discard not-dkim=\"pass\" iprev=\"fail permerror\"\n}}\n"
    );
    let p = Pipeline::compile(&Config::parse("mtad.kdl", &text).unwrap());
    let settings = p.authentication().expect("checks on");
    assert_eq!(settings.authserv_id, "mx.example.test");
    let outsider: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert!(settings.applies(outsider, "mx", false));
    assert!(!settings.applies(outsider, "mx", true), "authenticated");
    assert!(
        !settings.applies(outsider, "reinject", false),
        "back from a filter"
    );
    assert!(
        !settings.applies("10.1.2.3".parse().unwrap(), "mx", false),
        "skip-clients"
    );

    let data = |r: &AuthResults| {
        p.evaluate(
            Stage::Data,
            &Context {
                sender: Some("a@example.org"),
                auth: Some(r),
                ..Context::new(outsider, "mx")
            },
        )
        .verdict
    };
    let mut r = AuthResults {
        dkim: AuthResult::Pass,
        dmarc: AuthResult::Fail,
        dmarc_policy: DmarcPolicy::Reject,
        ..AuthResults::default()
    };
    assert!(
        matches!(data(&r), Verdict::Reject(reply) if reply.to_string().starts_with("550 5.7.1 DMARC"))
    );
    r.dmarc_policy = DmarcPolicy::Quarantine;
    assert_eq!(data(&r), Verdict::Hold);
    r.dmarc_policy = DmarcPolicy::None;
    assert_eq!(data(&r), Verdict::Accept);
    r.dkim = AuthResult::Fail;
    r.iprev = AuthResult::PermError;
    assert_eq!(data(&r), Verdict::Discard);
    // nothing checked: every result reads `skipped`, so only negations match
    let unchecked = p.evaluate(
        Stage::Data,
        &Context {
            sender: Some("a@example.org"),
            ..Context::new(outsider, "mx")
        },
    );
    assert_eq!(unchecked.verdict, Verdict::Accept);

    let mail = |spf: AuthResult| {
        let r = AuthResults {
            spf,
            ..AuthResults::default()
        };
        p.evaluate(
            Stage::Mail,
            &Context {
                sender: Some("a@example.org"),
                auth: Some(&r),
                ..Context::new(outsider, "mx")
            },
        )
        .verdict
    };
    assert!(matches!(mail(AuthResult::TempError), Verdict::Defer(_)));
    assert_eq!(mail(AuthResult::Fail), Verdict::Accept);
}

/// A pipeline whose `stage` has one rule, `hook "h.rhai"` with `script`.
fn hook_pipeline(stage: &str, script: &str) -> (tempfile::TempDir, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h.rhai"), script).unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            "{PRELUDE}networks \"trusted\" \"127.0.0.0/8\"\nstage \"rcpt\" {{\n    accept client=\"trusted\"\n}}\nstage \"{stage}\" {{\n    hook \"h.rhai\"\n}}\n"
        ),
    )
    .unwrap();
    let (_, p) =
        Pipeline::load(&config).unwrap_or_else(|e| panic!("{}", crate::config::render(&e)));
    (dir, p)
}

/// Issue 17: a panic inside evaluation (there: Rhai's `sleep(1e300)`) killed the
/// worker, or exited the dry run with 101. It is a 451 for that transaction.
#[test]
fn a_panic_in_evaluation_is_a_temporary_failure() {
    let (_dir, p) = hook_pipeline(
        "data",
        "fn data(ctx) { if ctx.header(\"Subject\") == \"boom\" { test_panic(\"bad\\r\\nfake line\"); } accept() }",
    );
    // below evaluate, the panic is real
    let host = ScriptHost::default();
    let raw = host
        .compile_str(
            "fn data(ctx) { test_panic(\"x\") }",
            "h.rhai",
            None,
            Stage::Data,
            &KnownNames::default(),
        )
        .unwrap();
    let input = HookInput::new(Stage::Data, "192.0.2.1".parse().unwrap(), 1, "mx");
    let lookups: Arc<dyn Lookups> = Arc::new(NoLookups);
    assert!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            raw.call(&host, &input, &lookups)
        }))
        .is_err()
    );

    let headers = Headers::from_pairs([("Subject", "boom")]);
    let ctx = Context {
        sender: Some("a@example.org"),
        headers: &headers,
        body: Some(b"Subject: boom\r\n\r\nx\r\n"),
        ..Context::new("192.0.2.1".parse().unwrap(), "mx")
    };
    let d = p.evaluate(Stage::Data, &ctx);
    assert_eq!(d.verdict, Verdict::Defer(HookError::tempfail_reply()));
    let rule = d.rule.expect("the rule that was running");
    assert!(rule.file.ends_with("mtad.kdl") && rule.line == 11, "{rule}");
    // the thread goes on: the same pipeline answers again
    let calm = Headers::from_pairs([("Subject", "hello")]);
    let d = p.evaluate(
        Stage::Data,
        &Context {
            headers: &calm,
            ..ctx
        },
    );
    assert_eq!(d.verdict, Verdict::Accept);

    // the route stage: a deferral, never a crashed scheduler
    let (_dir, p) = hook_pipeline("route", "fn route(ctx) { test_panic(\"x\"); next() }");
    let route = p.route(&Context {
        sender: Some("a@example.org"),
        rcpt: Some("b@example.test"),
        ..Context::new("192.0.2.1".parse().unwrap(), "mx")
    });
    assert!(
        matches!(&route, Route::Refused { reply, .. } if reply.code == 451),
        "{route:?}"
    );
}

/// Issue 17: `ctx.body()` was the whole message (headers included).
#[test]
fn hooks_read_the_body_after_the_header_block() {
    let (_dir, p) = hook_pipeline(
        "data",
        r#"fn data(ctx) {
    let b = ctx.body();
    if b.contains("INVOICE.zip") { return reject(550, "5.7.1", "invoice"); }
    if b.contains("Subject") || b.contains("Received") { throw "headers in the body: " + b; }
    accept()
}"#,
    );
    let data = |message: &[u8]| {
        let (headers, _) = parse_headers(message);
        p.evaluate(
            Stage::Data,
            &Context {
                sender: Some("a@example.org"),
                headers: &headers,
                body: Some(message),
                ..Context::new("192.0.2.1".parse().unwrap(), "mx")
            },
        )
        .verdict
    };
    let received = b"Received: from x\r\n\tby y\r\nSubject: INVOICE.zip\r\n\r\nhello\r\n";
    assert_eq!(data(received), Verdict::Accept);
    assert_eq!(data(b"Subject: hi\n\nhello\n"), Verdict::Accept);
    assert!(matches!(
        data(b"Subject: hi\r\n\r\nsee INVOICE.zip\r\n"),
        Verdict::Reject(_)
    ));
    // no header block at all: it is all body
    assert!(matches!(data(b"INVOICE.zip\r\n"), Verdict::Reject(_)));
}

#[test]
fn mail_origin_for_dkim_signing() {
    let compile = |extra: &str| {
        let text = format!(
            "{PRELUDE}listen \"reinject\" address=\"127.0.0.1:10025\" filtered=#true\nnetworks \"lan\" \"10.0.0.0/24\"\n{extra}"
        );
        match Config::parse("mtad.kdl", &text) {
            Ok(config) => Pipeline::compile(&config),
            Err(e) => panic!("{}", crate::config::render(&e)),
        }
    };
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    // default: loopback only (OpenDKIM's InternalHosts default)
    let p = compile("");
    assert_eq!(
        p.mail_origin(ip("127.0.0.1"), None, "mx"),
        MailOrigin::Internal("127.0.0.1".parse().unwrap())
    );
    assert!(p.mail_origin(ip("::1"), None, "mx").is_ours());
    let outside = p.mail_origin(ip("198.51.100.7"), None, "mx");
    assert!(!outside.is_ours());
    assert_eq!(
        outside.to_string(),
        "external client 198.51.100.7 (not in dkim-internal)"
    );
    assert!(!p.mail_origin(ip("10.0.0.5"), None, "mx").is_ours());
    assert_eq!(
        p.mail_origin(ip("198.51.100.7"), Some("alice"), "mx"),
        MailOrigin::Authenticated
    );
    assert_eq!(p.mail_origin(None, None, "mx"), MailOrigin::Local);
    // a filter's re-injection is not ours by its address
    assert_eq!(
        p.mail_origin(ip("127.0.0.1"), None, "reinject"),
        MailOrigin::Filtered
    );
    // dkim-internal replaces the default
    let p = compile("dkim-internal \"lan\" \"192.0.2.1\"\n");
    assert!(p.mail_origin(ip("10.0.0.5"), None, "mx").is_ours());
    assert!(p.mail_origin(ip("192.0.2.1"), None, "mx").is_ours());
    assert!(!p.mail_origin(ip("127.0.0.1"), None, "mx").is_ours());
    // without a dkim node nothing is signed, whatever the origin
    let plan = p.dkim_plan(true, Some("example.com"), &route::RouteOptions::default());
    assert!(plan.signers.is_empty());
    assert_eq!(plan.unsigned.as_deref(), Some("no dkim node"));
}

/// Forged `Authentication-Results:` in our name are removed whether the checks run or
/// not, except on `filtered` listeners (back from a content filter with ours), and not
/// at all without an `authentication` block.
#[test]
fn forged_authentication_results_are_one_decision_for_all_mail() {
    let text = format!(
        "{PRELUDE}listen \"reinject\" address=\"127.0.0.1:10025\" filtered=#true\nlisten \"sub\" address=\"127.0.0.1:587\"\nauthentication {{\n    skip-listeners \"sub\"\n}}\n"
    );
    let p = Pipeline::compile(&Config::parse("mtad.kdl", &text).unwrap());
    let message = b"Authentication-Results: mx.example.test; dkim=pass\r\n\
        Authentication-Results: other.example; dkim=pass\r\n\
        Subject: x\r\n\r\nbody\r\n";
    let (headers, _) = parse_headers(message);
    for listener in ["mx", "sub", "unknown"] {
        let edits = p.forged_auth_results(listener, &headers);
        let edited = apply_raw_edits(message, &edits);
        assert_eq!(
            edited,
            b"Authentication-Results: other.example; dkim=pass\r\nSubject: x\r\n\r\nbody\r\n",
            "{listener}"
        );
    }
    assert!(p.forged_auth_results("reinject", &headers).is_empty());
    let without = Pipeline::compile(&Config::parse("mtad.kdl", PRELUDE).unwrap());
    assert!(without.forged_auth_results("mx", &headers).is_empty());
}

#[test]
fn a_suite_case_from_a_record_is_kdl_whatever_the_record_holds() {
    let record = super::decision_log::Record {
        time: "t".into(),
        stage: "rcpt".into(),
        client: "192.0.2.1".into(),
        listener: "mx".into(),
        helo: Some("a\"b\\c\u{0}\u{85}\u{2028}\u{202e}\u{feff}\nd".into()),
        sender: Some(String::new()),
        rcpt: Some("x@y.test".into()),
        verdict: "reject".into(),
        reply: Some("550 5.7.1 No".into()),
        ..Default::default()
    };
    let case = record.suite_case().unwrap();
    let doc: kdl::KdlDocument = case.parse().unwrap_or_else(|e| panic!("{e:?}\n{case}"));
    let helo = doc.nodes()[0]
        .children()
        .and_then(|c| c.get("helo"))
        .and_then(|n| n.entries()[0].value().as_string())
        .map(str::to_owned);
    assert_eq!(helo.as_deref(), record.helo.as_deref(), "{case}");
}

/// The milters' answers in a record are given back by a replay in the session's order:
/// the first refusal of a milter the policy runs is the outcome (with its reply as the
/// session gave it), a milter the policy no longer runs changes nothing, one the record
/// has no answer of makes the decision unknown; at data, a milter's refusal comes
/// before the rules.
#[test]
fn milter_answers_replay_in_the_session_s_order() {
    use super::decision_log::{MilterAnswer, Record, milters_effect};
    let answers = vec![
        MilterAnswer::new("dkim", "RCPT", "skipped"),
        MilterAnswer::new("spam", "RCPT", "reply")
            .with_reply("554-5.7.1 Go away\r\n554 5.7.1 now\r\n"),
    ];
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (effect, unknown) = milters_effect(&answers, &names(&["dkim", "spam"]));
    assert!(unknown.is_empty());
    let (verdict, milter) = effect.unwrap();
    assert_eq!(milter, "spam");
    assert_eq!(
        verdict,
        Verdict::Reject(Reply::new(554, [5, 7, 1], "Go away 554 5.7.1 now"))
    );
    // without spam: no effect; with a milter the record did not ask: unknown
    assert_eq!(
        milters_effect(&answers, &names(&["dkim"])),
        (None, Vec::new())
    );
    assert_eq!(
        milters_effect(&answers, &names(&["dkim", "clamav", "spam"])).1,
        vec!["milter clamav's answer".to_owned()]
    );
    // a milter's own reply without an enhanced code; a 4xx is a deferral
    let own = [MilterAnswer::new("x", "mail", "reply").with_reply("451 busy")];
    assert_eq!(
        milters_effect(&own, &names(&["x"])).0.unwrap().0,
        Verdict::Defer(Reply::new(451, [4, 7, 1], "busy"))
    );
    // quarantine and discard: the message's fate, discard weighing more
    let fate = [
        MilterAnswer::new("a", "end-of-message", "quarantine"),
        MilterAnswer::new("b", "end-of-message", "discard"),
    ];
    assert_eq!(
        milters_effect(&fate, &names(&["a", "b"])).0,
        Some((Verdict::Discard, "b".to_owned()))
    );
    assert_eq!(
        milters_effect(&fate, &names(&["a"])).0,
        Some((Verdict::Hold, "a".to_owned()))
    );

    // replayed against policies with and without the milter
    let config = |milters: &str| {
        let text = format!(
            "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\nlisten \"mx\" address=\"127.0.0.1:2525\"{milters}\nmilter \"spam\" \"inet:127.0.0.1:9\"\nmilter \"dkim\" \"inet:127.0.0.1:9\"\nmilter \"clamav\" \"inet:127.0.0.1:9\"\ndomains \"relay\" \"example.test\"\nstage \"rcpt\" {{\n    accept rcpt-domain=\"relay\"\n}}\n"
        );
        Pipeline::compile(&Config::parse("mtad.kdl", &text).unwrap())
    };
    let record = Record {
        time: "t".into(),
        stage: "rcpt".into(),
        client: "192.0.2.1".into(),
        listener: "mx".into(),
        sender: Some("a@src.test".into()),
        rcpt: Some("u@example.test".into()),
        verdict: "reject".into(),
        rule: Some("milter:spam".into()),
        reply: Some("554 5.7.1 Go away 554 5.7.1 now".into()),
        milters: answers.clone(),
        ..Default::default()
    };
    let same = record.replay(&config(" milters=\"dkim spam\"")).unwrap();
    assert_eq!(same.rule.as_deref(), Some("milter:spam"));
    assert_eq!(
        super::decision_log::verdict_reply(&same.verdict),
        ("reject", record.reply.clone())
    );
    assert!(same.unknown.is_empty());
    let without = record.replay(&config(" milters=\"dkim\"")).unwrap();
    assert_eq!(without.verdict, Verdict::Accept);
    assert_eq!(without.rule.as_deref(), Some("mtad.kdl:11:5"));
    let more = record
        .replay(&config(" milters=\"dkim clamav spam\""))
        .unwrap();
    assert_eq!(more.unknown, vec!["milter clamav's answer".to_owned()]);
    // a recipient the rules refuse never reaches the milters: nothing unknown
    let foreign = Record {
        rcpt: Some("u@elsewhere.test".into()),
        ..record.clone()
    };
    let refused = foreign
        .replay(&config(" milters=\"dkim clamav spam\""))
        .unwrap();
    assert!(refused.unknown.is_empty(), "{:?}", refused.unknown);
    assert_eq!(refused.rule, None);
}
