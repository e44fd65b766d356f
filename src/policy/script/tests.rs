use crate::lookup::LookupError;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::*;
use crate::config::Reply;

/// One host for the tests that use the default limits (building one compiles the
/// stdlib).
fn host() -> &'static ScriptHost {
    static HOST: OnceLock<ScriptHost> = OnceLock::new();
    HOST.get_or_init(ScriptHost::default)
}

struct TestLookups {
    sets: BTreeMap<&'static str, Vec<&'static str>>,
    tables: BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>,
}

impl Lookups for TestLookups {
    fn in_set(&self, name: &str, value: &str) -> Option<Result<bool, LookupError>> {
        if name == "down" {
            return Some(Err(LookupError("the database is down".into())));
        }
        if let Some(set) = self.sets.get(name) {
            return Some(Ok(set.contains(&value)));
        }
        self.tables.get(name).map(|t| Ok(t.contains_key(value)))
    }
    fn table(&self, name: &str, key: &str) -> Option<Result<Option<String>, LookupError>> {
        if name == "down" {
            return Some(Err(LookupError("the database is down".into())));
        }
        self.tables
            .get(name)
            .map(|t| Ok(t.get(key).map(|v| (*v).to_owned())))
    }
}

fn lookups() -> Arc<dyn Lookups> {
    Arc::new(TestLookups {
        sets: BTreeMap::from([
            ("relay", vec!["example.test"]),
            ("blocked-senders", vec!["spam.test"]),
        ]),
        tables: BTreeMap::from([(
            "transport",
            BTreeMap::from([("example.test", "smtp:[10.0.0.5]:2525")]),
        )]),
    })
}

fn known() -> KnownNames {
    KnownNames::new(["relay", "blocked-senders"], ["transport", "down"])
}

fn compile(stage: Stage, text: &str) -> Hook {
    match host().compile_str(text, "test.rhai", None, stage, &known()) {
        Ok(hook) => hook,
        Err(errors) => panic!("does not compile: {errors:#?}"),
    }
}

fn compile_err(stage: Stage, text: &str) -> Vec<ScriptError> {
    host()
        .compile_str(text, "test.rhai", None, stage, &known())
        .expect_err("compiles, but should not")
}

const HEADERS: &[(&str, &str)] = &[
    ("Received", "from a\r\n\tby b"),
    ("Subject", " Hello"),
    ("X-Spam", "yes"),
    ("x-spam", "maybe"),
];

fn input(stage: Stage) -> HookInput<'static> {
    static RECIPIENTS: OnceLock<Vec<String>> = OnceLock::new();
    static HDRS: OnceLock<crate::policy::Headers> = OnceLock::new();
    let mut input = HookInput::new(stage, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 40001, "mx");
    input.helo = Some("client.test");
    input.tls = Some(("TLSv1.3", "TLS_AES_128_GCM_SHA256"));
    input.auth_user = Some("alice");
    input.sender = Some("Bob@Spam.TEST");
    input.rcpt = Some("carol@example.test");
    input.recipients = RECIPIENTS.get_or_init(|| {
        vec![
            "carol@example.test".to_owned(),
            "dave@other.test".to_owned(),
        ]
    });
    input.size = Some(1234);
    input.headers =
        HDRS.get_or_init(|| crate::policy::Headers::from_pairs(HEADERS.iter().copied()));
    input.body = Some(b"Hi there\r\nbye\r\n");
    input
}

fn run(stage: Stage, text: &str) -> Result<HookOutput, HookError> {
    compile(stage, text).call(host(), &input(stage), &lookups())
}

fn decision(stage: Stage, text: &str) -> HookDecision {
    match run(stage, text) {
        Ok(out) => out.decision,
        Err(e) => panic!("call failed: {e}"),
    }
}

fn call_err(stage: Stage, text: &str) -> HookError {
    match run(stage, text) {
        Ok(out) => panic!("call succeeded with {out:?}"),
        Err(e) => e,
    }
}

#[test]
fn each_verdict() {
    let rcpt = |body: &str| decision(Stage::Rcpt, &format!("fn rcpt(ctx) {{ {body} }}"));
    assert_eq!(rcpt("accept()"), HookDecision::Verdict(Verdict::Accept));
    assert_eq!(rcpt("next()"), HookDecision::Verdict(Verdict::Next));
    assert_eq!(rcpt("discard()"), HookDecision::Verdict(Verdict::Discard));
    assert_eq!(rcpt("return hold();"), HookDecision::Verdict(Verdict::Hold));
    assert_eq!(
        rcpt(r#"reject(550, "5.7.1", "no relay")"#),
        HookDecision::Verdict(Verdict::Reject(Reply::new(550, [5, 7, 1], "no relay")))
    );
    assert_eq!(
        rcpt(r#"defer(450, "4.7.1", "try later")"#),
        HookDecision::Verdict(Verdict::Defer(Reply::new(450, [4, 7, 1], "try later")))
    );
    assert_eq!(
        HookDecision::Verdict(Verdict::Accept).verdict(),
        Some(Verdict::Accept)
    );
    assert_eq!(HookDecision::Transport("smtp:x".into()).verdict(), None);
}

#[test]
fn the_design_example() {
    let hook = compile(
        Stage::Rcpt,
        r#"
import "mta" as mta;                  // stdlib/ — helpers compiled into the binary

fn rcpt(ctx) {
    if ctx.rcpt.local == "postmaster" { return accept(); }
    if mta::listed("blocked-senders", ctx.sender.domain) {
        return reject(550, "5.7.1", "sender blocked");
    }
    next()                            // no decision: the next rule runs
}
"#,
    );
    let out = hook.call(host(), &input(Stage::Rcpt), &lookups()).unwrap();
    assert_eq!(
        out.decision,
        HookDecision::Verdict(Verdict::Reject(Reply::new(
            550,
            [5, 7, 1],
            "sender blocked"
        )))
    );
    let mut postmaster = input(Stage::Rcpt);
    postmaster.rcpt = Some("postmaster@example.test");
    let out = hook.call(host(), &postmaster, &lookups()).unwrap();
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Accept));
}

#[test]
fn reply_codes_are_checked_where_the_verdict_is_built() {
    let e = call_err(
        Stage::Rcpt,
        "fn rcpt(ctx) {\n    reject(450, \"4.7.1\", \"x\")\n}",
    );
    assert_eq!((e.line, e.column), (2, 5), "{e}");
    assert!(e.message.contains("5xx"), "{e}");
    let e = call_err(Stage::Rcpt, r#"fn rcpt(ctx) { defer(550, "5.7.1", "x") }"#);
    assert!(e.message.contains("4xx"), "{e}");
    let e = call_err(Stage::Rcpt, r#"fn rcpt(ctx) { reject(550, "4.7.1", "x") }"#);
    assert!(e.message.contains("class"), "{e}");
    let e = call_err(Stage::Rcpt, r#"fn rcpt(ctx) { reject(550, "5.7", "x") }"#);
    assert!(e.message.contains("enhanced status code"), "{e}");
    let e = call_err(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { reject(5500, "5.7.1", "x") }"#,
    );
    assert!(e.message.contains("5xx"), "{e}");
}

#[test]
fn reply_text_is_sanitised() {
    let d = decision(
        Stage::Rcpt,
        &format!(
            r#"fn rcpt(ctx) {{ reject(554, "5.7.1", "bad\r\n250 OK\u0000é{}") }}"#,
            "x".repeat(500)
        ),
    );
    let HookDecision::Verdict(Verdict::Reject(reply)) = d else {
        panic!("{d:?}")
    };
    assert!(reply.text.starts_with("bad??250 OK??"), "{}", reply.text);
    assert_eq!(reply.text.len(), crate::config::MAX_REPLY_TEXT);
    assert!(reply.text.bytes().all(|b| (b' '..=b'~').contains(&b)));
}

#[test]
fn wrong_return_values_are_errors() {
    let e = call_err(Stage::Rcpt, "fn rcpt(ctx) {\n  let x = 1;\n}");
    assert!(e.message.contains("returned nothing"), "{e}");
    assert_eq!(e.line, 1);
    let e = call_err(Stage::Rcpt, "fn rcpt(ctx) { 42 }");
    assert!(
        e.message.contains("i64") || e.message.contains("int"),
        "{e}"
    );
    let e = call_err(Stage::Rcpt, r#"fn rcpt(ctx) { "smtp:[10.0.0.1]" }"#);
    assert!(e.message.contains("expected a verdict"), "{e}");
}

#[test]
fn route_hooks_return_a_transport() {
    let text = r#"
import "mta" as mta;
fn route(ctx) {
    let t = mta::lookup("transport", ctx.rcpt.domain);
    if t != "" { return t; }
    if ctx.sender.domain == "spam.test" { return "smtp:[10.0.0.9]"; }
    next()
}"#;
    assert_eq!(
        decision(Stage::Route, text),
        HookDecision::Transport("smtp:[10.0.0.5]:2525".into())
    );
    let hook = compile(Stage::Route, text);
    let mut other = input(Stage::Route);
    other.rcpt = Some("x@nowhere.test");
    other.sender = Some("a@b.test");
    let out = hook.call(host(), &other, &lookups()).unwrap();
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Next));

    let e = call_err(Stage::Route, "fn route(ctx) { accept() }");
    assert!(e.message.contains("transport string or next()"), "{e}");
    let e = call_err(
        Stage::Route,
        r#"fn route(ctx) { "smtp:[10.0.0.5]\r\nRCPT" }"#,
    );
    assert!(e.message.contains("not a transport"), "{e}");
    let e = call_err(Stage::Route, r#"fn route(ctx) { "nocolon" }"#);
    assert!(e.message.contains("not a transport"), "{e}");
}

#[test]
fn data_hooks_read_and_change_headers() {
    let out = run(
        Stage::Data,
        r#"
fn data(ctx) {
    if ctx.header("subject") != "Hello" { throw "subject: " + ctx.header("subject"); }
    if ctx.header("Missing") != "" { throw "missing"; }
    if ctx.headers_named("X-SPAM") != ["yes", "maybe"] { throw "named"; }
    if ctx.headers.len() != 4 { throw "len"; }
    if ctx.headers[0].name != "Received" || ctx.headers[0].value != "from a\tby b" {
        throw "unfolded: " + ctx.headers[0].value;
    }
    if ctx.size != 1234 { throw "size"; }
    if ctx.recipients.len() != 2 || ctx.recipients[1].domain != "other.test" { throw "rcpts"; }
    if !ctx.body().contains("bye") { throw "body"; }
    ctx.add_header("X-Checked", "yes\r\nBcc: evil@x.test");
    ctx.remove_header("X-Spam");
    ctx.replace_header("Subject", "[ext] " + ctx.header("Subject"));
    next()
}"#,
    )
    .unwrap();
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Next));
    assert_eq!(
        out.header_changes,
        vec![
            HeaderChange::Add {
                name: "X-Checked".into(),
                value: "yesBcc: evil@x.test".into()
            },
            HeaderChange::Remove {
                name: "X-Spam".into()
            },
            HeaderChange::Replace {
                name: "Subject".into(),
                value: "[ext] Hello".into()
            },
        ]
    );
}

#[test]
fn header_changes_made_in_a_helper_are_kept() {
    let out = run(
        Stage::Data,
        r#"
fn tag(c, v) { c.add_header("X-Tag", v); }
fn data(ctx) { tag(ctx, "one"); accept() }"#,
    )
    .unwrap();
    assert_eq!(
        out.header_changes,
        vec![HeaderChange::Add {
            name: "X-Tag".into(),
            value: "one".into()
        }]
    );
}

#[test]
fn bad_header_names_are_script_errors() {
    for name in ["Bad Name", "Bad:Name", "", "Bad\r\nName", "Ünï"] {
        let e = call_err(
            Stage::Data,
            &format!("fn data(ctx) {{\n  ctx.add_header({name:?}, \"v\");\n  next()\n}}"),
        );
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("invalid header name"), "{e}");
    }
    let e = call_err(
        Stage::Data,
        &format!(
            "fn data(ctx) {{ ctx.add_header(\"X-Long\", \"{}\"); next() }}",
            "a".repeat(1000)
        ),
    );
    assert!(e.message.contains("too long"), "{e}");
    let e = call_err(
        Stage::Data,
        "fn data(ctx) { for i in 0..200 { ctx.add_header(\"X-N\", `${i}`); } next() }",
    );
    assert!(e.message.contains("too many header changes"), "{e}");
}

#[test]
fn context_fields() {
    let d = decision(
        Stage::Rcpt,
        r#"
fn rcpt(ctx) {
    let c = ctx.client;
    if c.ip != "192.0.2.7" || c.port != 40001 { throw "client " + c.ip; }
    if ctx.listener != "mx" || ctx.stage != "rcpt" { throw "listener"; }
    if ctx.helo != "client.test" || !ctx.tls { throw "helo"; }
    if ctx.tls_protocol != "TLSv1.3" || ctx.tls_cipher == "" { throw "tls"; }
    if ctx.auth != "alice" || !ctx.authenticated { throw "auth"; }
    let s = ctx.sender;
    if s.address != "Bob@Spam.TEST" || s.local != "Bob" || s.domain != "spam.test" || s.is_null {
        throw "sender";
    }
    if `${ctx.rcpt}` != "carol@example.test" { throw "to_string"; }
    if ctx.recipients.len() != 2 { throw "recipients"; }
    accept()
}"#,
    );
    assert_eq!(d, HookDecision::Verdict(Verdict::Accept));

    // Without TLS or AUTH, and with the null sender.
    let hook = compile(
        Stage::Mail,
        r#"fn mail(ctx) {
            if ctx.tls || ctx.tls_cipher != "" || ctx.authenticated || ctx.auth != "" { throw "x"; }
            if !ctx.sender.is_null || ctx.sender.address != "" { throw "null"; }
            accept()
        }"#,
    );
    let mut plain = input(Stage::Mail);
    plain.tls = None;
    plain.auth_user = None;
    plain.sender = Some("");
    let out = hook.call(host(), &plain, &lookups()).unwrap();
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Accept));
}

#[test]
fn a_context_that_escapes_still_has_every_field() {
    // `ctx` stored in an array: the walk cannot follow it, so every field is copied.
    let d = decision(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { let a = [ctx]; if a[0].rcpt.domain == "example.test" { accept() } else { next() } }"#,
    );
    assert_eq!(d, HookDecision::Verdict(Verdict::Accept));
    // And the getters still refuse fields of other stages at runtime.
    let e = call_err(
        Stage::Connect,
        "fn connect(ctx) {\n  let a = [ctx];\n  a[0].rcpt;\n  next()\n}",
    );
    assert!(e.message.contains("not available in a connect hook"), "{e}");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn fields_of_other_stages_are_compile_errors() {
    let errors = compile_err(
        Stage::Connect,
        "fn connect(ctx) {\n    if ctx.rcpt.domain == \"x\" { return accept(); }\n    next()\n}",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        ("test.rhai", 2, 12),
        "{e}"
    );
    assert!(
        e.message
            .contains("ctx.rcpt is not available in a connect hook"),
        "{e}"
    );
    let text = e.source_text.as_deref().unwrap();
    assert_eq!(&text[e.byte_offset.unwrap()..][..4], "rcpt");

    // Nested, in a helper the context is passed to, methods, unknown names.
    let errors = compile_err(
        Stage::Helo,
        r#"fn check(c) { c.sender.domain }
fn helo(ctx) {
    check(ctx);
    ctx.header("Subject");
    ctx.rcpt_domain;
    ctx.sender.domian;
    ctx.helo = "x";
    next()
}"#,
    );
    let got: Vec<(u32, u32, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        got[0]
            .2
            .contains("ctx.sender is not available in a helo hook"),
        "{got:#?}"
    );
    assert_eq!((got[0].0, got[0].1), (1, 17));
    assert!(
        got[1].2.contains("only available in a data hook"),
        "{got:#?}"
    );
    assert!(got[2].2.contains("did you mean `rcpt`"), "{got:#?}");
    assert!(got[3].2.contains("ctx.sender is not available"), "{got:#?}");
    assert!(got[4].2.contains("read-only"), "{got:#?}");

    let errors = compile_err(Stage::Rcpt, "fn rcpt(ctx) { ctx.rcpt.domian }");
    assert!(
        errors[0]
            .message
            .contains("an address has no field `domian`")
    );
    let errors = compile_err(Stage::Data, "fn data(ctx) { ctx.header }");
    assert!(errors[0].message.contains("is a method"));
}

#[test]
fn functions_and_parameters() {
    let e = &compile_err(Stage::Rcpt, "fn other(ctx) { next() }")[0];
    assert!(
        e.message.contains("no function `rcpt`") && e.message.contains("other"),
        "{e}"
    );
    let e = &compile_err(Stage::Rcpt, "fn rcpt(a, b) { next() }")[0];
    assert!(e.message.contains("exactly one parameter"), "{e}");
    let hook = host()
        .compile_str(
            "fn check_it(ctx) { accept() }",
            "x.rhai",
            Some("check_it"),
            Stage::Mail,
            &KnownNames::default(),
        )
        .unwrap();
    assert_eq!(
        (hook.file(), hook.function(), hook.stage()),
        ("x.rhai", "check_it", Stage::Mail)
    );
    let e = hook
        .call(host(), &input(Stage::Rcpt), &lookups())
        .unwrap_err();
    assert!(e.message.contains("called at the rcpt stage"), "{e}");
}

#[test]
fn syntax_errors_have_a_position() {
    let e = &compile_err(Stage::Rcpt, "fn rcpt(ctx) {\n    let x = ;\n}")[0];
    assert_eq!(e.line, 2, "{e}");
    assert!(e.byte_offset.is_some());
}

#[test]
fn top_level_code_is_refused() {
    let e = &compile_err(Stage::Rcpt, "let x = 1;\nfn rcpt(ctx) { next() }")[0];
    assert_eq!(e.line, 1);
    assert!(e.message.contains("only `import` and `const`"), "{e}");
    // Constants are fine.
    compile(Stage::Rcpt, "const LIMIT = 3;\nfn rcpt(ctx) { next() }");
}

#[test]
fn eval_is_refused() {
    let e = &compile_err(Stage::Rcpt, "fn rcpt(ctx) {\n  eval(\"accept()\")\n}")[0];
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("eval"), "{e}");
    // Not through a function pointer either.
    let e = call_err(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { Fn("eval").call("accept()") }"#,
    );
    assert!(e.message.contains("eval"), "{e}");
}

#[test]
fn only_mta_can_be_imported() {
    let e = &compile_err(
        Stage::Rcpt,
        "import \"other\" as o;\nfn rcpt(ctx) { next() }",
    )[0];
    assert_eq!((e.line, e.column), (1, 8), "{e}");
    assert!(e.message.contains("only import \"mta\""), "{e}");
    let e = &compile_err(
        Stage::Rcpt,
        "fn rcpt(ctx) {\n  import \"/etc/passwd\" as p;\n  next()\n}",
    )[0];
    assert_eq!(e.line, 2, "{e}");
    let e = &compile_err(
        Stage::Rcpt,
        "fn rcpt(ctx) {\n  let p = ctx.helo;\n  import p as m;\n  next()\n}",
    )[0];
    assert!(e.message.contains("literally"), "{e}");
}

#[test]
fn runtime_errors_carry_the_line() {
    let e = call_err(
        Stage::Rcpt,
        "fn helper(x) {\n  x.no_such_method()\n}\nfn rcpt(ctx) {\n  let a = 1;\n  helper(a)\n}",
    );
    assert_eq!((e.file.as_str(), e.line), ("test.rhai", 2), "{e}");
    let e = call_err(Stage::Rcpt, "fn rcpt(ctx) {\n\n  throw \"boom\";\n}");
    assert_eq!(e.line, 3, "{e}");
    assert_eq!(e.message, "boom");
    assert_eq!(e.to_string(), "test.rhai:3:3: boom");
    // An error inside the stdlib points at the call in the hook's file.
    let e = call_err(
        Stage::Rcpt,
        "import \"mta\" as mta;\nfn rcpt(ctx) {\n  let d = mta::domain_matches(1, 2);\n  next()\n}",
    );
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("mta::domain_matches"), "{e}");
    assert_eq!(
        HookError::tempfail_reply().to_string().get(..9),
        Some("451 4.3.0")
    );
}

#[test]
fn an_infinite_loop_hits_the_operations_limit() {
    // A generous clock, so that a slow debug build meets the operations limit first.
    let host = ScriptHost::new(ScriptLimits {
        wall_time: Duration::from_secs(60),
        ..ScriptLimits::default()
    });
    let hook = host
        .compile_str(
            "fn rcpt(ctx) {\n  let x = 0;\n  loop { x += 1; }\n}",
            "test.rhai",
            None,
            Stage::Rcpt,
            &KnownNames::default(),
        )
        .unwrap();
    let e = hook
        .call(&host, &input(Stage::Rcpt), &lookups())
        .unwrap_err();
    assert!(e.message.contains("more than 200000 operations"), "{e}");
    // Rhai does not say where; the error points at the hook function.
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn a_slow_loop_hits_the_wall_time_limit() {
    let host = ScriptHost::new(ScriptLimits {
        max_operations: 0, // unlimited: only the clock stops it
        wall_time: Duration::from_millis(30),
        ..ScriptLimits::default()
    });
    let hook = host
        .compile_str(
            "fn rcpt(ctx) {\n  let s = \"\";\n  loop { s = `${s}x`; if s.len() > 1000 { s = \"\"; } }\n}",
            "slow.rhai",
            None,
            Stage::Rcpt,
            &KnownNames::default(),
        )
        .unwrap();
    let started = std::time::Instant::now();
    let e = hook
        .call(&host, &input(Stage::Rcpt), &lookups())
        .unwrap_err();
    assert!(e.message.contains("more than 30 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The deadline does not linger on the thread.
    let quick = host
        .compile_str(
            "fn rcpt(ctx) { next() }",
            "q.rhai",
            None,
            Stage::Rcpt,
            &KnownNames::default(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(40));
    assert!(quick.call(&host, &input(Stage::Rcpt), &lookups()).is_ok());
}

#[test]
fn data_size_limits() {
    let e = call_err(
        Stage::Rcpt,
        "fn rcpt(ctx) { let s = \"x\"; loop { s += s; } }",
    );
    assert!(
        e.message.contains("too large") || e.message.contains("Length"),
        "{e}"
    );
    let e = call_err(
        Stage::Rcpt,
        "fn rcpt(ctx) { let a = []; a.pad(20000, 0); next() }",
    );
    assert!(
        e.message.contains("too large") || e.message.contains("Size"),
        "{e}"
    );
    let e = call_err(Stage::Rcpt, "fn f(n) { f(n + 1) }\nfn rcpt(ctx) { f(0) }");
    assert!(e.message.to_lowercase().contains("stack"), "{e}");
}

#[test]
fn mta_helpers() {
    let d = decision(
        Stage::Rcpt,
        r#"
import "mta" as m;
fn rcpt(ctx) {
    let a = m::parse_address("<User%evil.test@Example.TEST.>");
    if a.address != "User%evil.test@Example.TEST." || a.local != "User%evil.test" { throw "a"; }
    if a.domain != "" { throw "routing syntax must have no domain"; }
    if !m::parse_address("<>").is_null { throw "null"; }
    if m::domain_of("x@Sub.Example.Test") != "sub.example.test" { throw "domain_of"; }
    if m::local_of("first.last@x.test") != "first.last" { throw "local_of"; }
    if !m::domain_matches("a.example.test", ".example.test") { throw "dm1"; }
    if m::domain_matches("example.test", ".example.test") { throw "dm2"; }
    if !m::domain_matches("Example.Test.", "example.test") { throw "dm3"; }
    if !m::listed("relay", ctx.rcpt.domain) { throw "listed"; }
    if m::listed("relay", "other.test") { throw "not listed"; }
    if !m::listed("transport", "example.test") { throw "table as set"; }
    if m::lookup("transport", "nope.test") != "" { throw "lookup miss"; }
    accept()
}"#,
    );
    assert_eq!(d, HookDecision::Verdict(Verdict::Accept));
    // Without an import, `mta::` still names the module.
    let d = decision(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { if mta::listed("relay", ctx.rcpt.domain) { accept() } else { next() } }"#,
    );
    assert_eq!(d, HookDecision::Verdict(Verdict::Accept));
}

#[test]
fn set_and_table_names_are_checked() {
    let errors = compile_err(
        Stage::Rcpt,
        "import \"mta\" as mta;\nfn rcpt(ctx) {\n  if mta::listed(\"rely\", \"x\") { return accept(); }\n  mta::lookup(\"relay\", \"x\");\n  mta::nope();\n  next()\n}",
    );
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0]
            .1
            .contains("no set or table named \"rely\" (did you mean `relay`?)"),
        "{got:#?}"
    );
    assert!(got[1].1.contains("no table named \"relay\""), "{got:#?}");
    assert!(got[2].1.contains("mta has no function `nope`"), "{got:#?}");
    // A name only known at runtime is checked at runtime.
    let e = call_err(
        Stage::Rcpt,
        "fn rcpt(ctx) {\n  let n = \"nope\";\n  mta::listed(n, \"x\");\n  next()\n}",
    );
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("no set or table named \"nope\""), "{e}");
    let hook = compile(
        Stage::Rcpt,
        "fn rcpt(ctx) { mta::listed(\"relay\", \"x\"); next() }",
    );
    let none: Arc<dyn Lookups> = Arc::new(NoLookups);
    assert!(hook.call(host(), &input(Stage::Rcpt), &none).is_err());
}

#[test]
fn compile_reads_the_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "fn rcpt(ctx) {{\n  ctx.header(\"x\")\n}}").unwrap();
    let errors = host()
        .compile(
            file.path(),
            "policies/rcpt.rhai",
            None,
            Stage::Rcpt,
            &known(),
        )
        .unwrap_err();
    assert_eq!(errors[0].file, "policies/rcpt.rhai");
    assert_eq!((errors[0].line, errors[0].column), (2, 7));
    let missing = host()
        .compile(
            Path::new("/nonexistent/x.rhai"),
            "x.rhai",
            None,
            Stage::Rcpt,
            &known(),
        )
        .unwrap_err();
    assert!(missing[0].message.contains("cannot read"));
}

#[test]
fn print_goes_to_the_log() {
    let d = decision(
        Stage::Connect,
        "fn connect(ctx) { print(`from ${ctx.client.ip}`); debug(ctx); next() }",
    );
    assert_eq!(d, HookDecision::Verdict(Verdict::Next));
}

#[test]
fn hooks_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Hook>();
    assert_send_sync::<ScriptHost>();
    let hook = compile(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { if ctx.rcpt.domain == "example.test" { accept() } else { next() } }"#,
    );
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    let out = hook.call(host(), &input(Stage::Rcpt), &lookups()).unwrap();
                    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Accept));
                }
            });
        }
    });
}

/// The examples in docs/hooks.md compile at their stage.
#[test]
fn documented_examples_compile() {
    let doc = include_str!("../../../docs/hooks.md");
    let known = KnownNames::new(
        ["relay", "blocked-senders", "trusted", "partners"],
        ["sender-access", "transport"],
    );
    let mut count = 0;
    for block in doc.split("```rhai\n").skip(1) {
        let code = &block[..block.find("```").unwrap()];
        let stage = Stage::ALL
            .into_iter()
            .find(|s| code.contains(&format!("fn {}(ctx)", s.as_str())))
            .unwrap();
        if let Err(e) = host().compile_str(code, "doc.rhai", None, stage, &known) {
            panic!("{code}\n{e:#?}");
        }
        count += 1;
    }
    assert_eq!(count, 7);
}

#[test]
fn data_hook_reads_mime_parts() {
    const MSG: &[u8] = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQK\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Evil.EXE\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n";
    let hook = compile(
        Stage::Data,
        r#"fn data(ctx) {
    let parts = ctx.parts();
    if parts.len() != 3 { throw "parts " + parts.len(); }
    if parts[0].content_type != "multipart/mixed" { throw "root " + parts[0].content_type; }
    if parts[1].text != "hello world\n" || parts[1].is_attachment { throw "text " + parts[1].text; }
    if parts[1].encoding != "base64" { throw "encoding"; }
    for p in parts {
        if p.is_attachment && p.filename.to_lower().ends_with(".exe") {
            if p.size != 12 || p.text != "" { throw "attachment " + p.size; }
            return reject(550, "5.7.1", "no executables: " + p.filename);
        }
    }
    accept()
}"#,
    );
    let mut input = input(Stage::Data);
    input.message = Some(MSG);
    let out = hook.call(host(), &input, &lookups()).unwrap();
    assert_eq!(
        out.decision,
        HookDecision::Verdict(Verdict::Reject(Reply::new(
            550,
            [5, 7, 1],
            "no executables: Evil.EXE"
        )))
    );
    // parts() is checked per stage, like the other data fields
    let errors = compile_err(Stage::Rcpt, "fn rcpt(ctx) { ctx.parts(); accept() }");
    assert!(
        errors[0]
            .to_string()
            .contains("only available in a data hook"),
        "{errors:?}"
    );
}

#[test]
fn hooks_read_the_clients_rate_counters() {
    #[derive(Debug)]
    struct Counts;
    impl crate::policy::RateView for Counts {
        fn count(&self, kind: crate::policy::RateKind, client: IpAddr) -> Option<u32> {
            use crate::policy::RateKind as Kind;
            assert_eq!(client, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
            match kind {
                Kind::Messages => Some(7),
                Kind::AuthFailures => Some(2),
                _ => None,
            }
        }
    }
    let hook = compile(
        Stage::Mail,
        r#"fn mail(ctx) {
            if ctx.rate("messages") != 7 { throw "messages " + ctx.rate("messages"); }
            if ctx.rate("auth-failures") != 2 { throw "auth-failures"; }
            if ctx.rate("connections") != -1 { throw "no limit"; }
            if ctx.rate("messages") > 5 { return defer(450, "4.7.1", "slow down"); }
            accept()
        }"#,
    );
    let mut with = input(Stage::Mail);
    with.rates = Some(&Counts);
    let out = hook.call(host(), &with, &lookups()).unwrap();
    assert_eq!(
        out.decision,
        HookDecision::Verdict(Verdict::Defer(Reply::new(450, [4, 7, 1], "slow down")))
    );
    // an unknown kind is a runtime error naming the known ones
    let hook = compile(
        Stage::Rcpt,
        r#"fn rcpt(ctx) { ctx.rate("mesages"); accept() }"#,
    );
    let err = hook
        .call(host(), &input(Stage::Rcpt), &lookups())
        .unwrap_err();
    assert!(err.to_string().contains("recipients, auth"), "{err}");
    // rate() exists from connect to data, not at route
    let errors = compile_err(
        Stage::Route,
        r#"fn route(ctx) { ctx.rate("messages"); next() }"#,
    );
    assert!(
        errors[0]
            .to_string()
            .contains("not available in a route hook"),
        "{errors:?}"
    );
}

#[test]
fn a_table_that_cannot_answer_fails_the_hook() {
    // a database that is down: the hook fails (the rule answers 451), it never gets ""
    let e = call_err(
        Stage::Rcpt,
        "import \"mta\" as mta;\nfn rcpt(ctx) {\n  mta::lookup(\"down\", \"x\");\n  accept()\n}",
    );
    assert!(e.message.contains("temporary lookup failure"), "{e}");
    let e = call_err(
        Stage::Rcpt,
        "import \"mta\" as mta;\nfn rcpt(ctx) {\n  if mta::listed(\"down\", \"x\") { return accept(); }\n  next()\n}",
    );
    assert!(e.message.contains("temporary lookup failure"), "{e}");
}

#[test]
fn authentication_results_in_hooks() {
    use crate::mailauth::{AuthResult, AuthResults, DkimSignature, DmarcPolicy};
    let results = AuthResults {
        spf: AuthResult::SoftFail,
        spf_helo: AuthResult::None,
        dkim: AuthResult::Pass,
        dkim_signatures: vec![
            DkimSignature {
                result: AuthResult::Fail,
                domain: "bad.example".into(),
                selector: "s1".into(),
                reason: "body hash mismatch".into(),
            },
            DkimSignature {
                result: AuthResult::Pass,
                domain: "example.org".into(),
                selector: "s2".into(),
                reason: String::new(),
            },
        ],
        dmarc: AuthResult::Fail,
        dmarc_policy: DmarcPolicy::Quarantine,
        dmarc_domain: "example.org".into(),
        arc: AuthResult::None,
        iprev: AuthResult::Pass,
        iprev_name: "mail.example.org".into(),
        ..AuthResults::default()
    };
    let hook = compile(
        Stage::Data,
        r#"fn data(ctx) {
            if ctx.spf != "softfail" || ctx.spf_helo != "none" { throw "spf " + ctx.spf; }
            if ctx.dkim != "pass" || ctx.dkim_signatures.len() != 2 { throw "dkim"; }
            if ctx.dkim_signatures[0].domain != "bad.example" || ctx.dkim_signatures[0].result != "fail" { throw "sig"; }
            if ctx.dkim_signatures[0].reason != "body hash mismatch" || ctx.dkim_signatures[1].selector != "s2" { throw "sig2"; }
            if ctx.dmarc != "fail" || ctx.dmarc_policy != "quarantine" || ctx.dmarc_domain != "example.org" { throw "dmarc"; }
            if ctx.arc != "none" || ctx.iprev != "pass" || ctx.iprev_name != "mail.example.org" { throw "arc/iprev"; }
            hold()
        }"#,
    );
    let mut with_results = input(Stage::Data);
    with_results.auth = Some(&results);
    let out = hook.call(host(), &with_results, &lookups()).expect("runs");
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Hold));
    // without checks: skipped
    let hook = compile(
        Stage::Mail,
        r#"fn mail(ctx) { if ctx.spf == "skipped" { accept() } else { throw ctx.spf } }"#,
    );
    let out = hook
        .call(host(), &input(Stage::Mail), &lookups())
        .expect("runs");
    assert_eq!(out.decision, HookDecision::Verdict(Verdict::Accept));
    // DKIM does not exist yet at rcpt: a compile-time error
    let errors = compile_err(
        Stage::Rcpt,
        "fn rcpt(ctx) { if ctx.dmarc == \"fail\" { return reject(550, \"5.7.1\", \"x\"); } next() }",
    );
    assert!(format!("{errors:?}").contains("dmarc"), "{errors:?}");
}

/// Issue 17: a hook could block its thread with Rhai's `sleep` (3 s and then
/// accept; `sleep(1e300)` panicked, `sleep(9.3e18)` never returned).
#[test]
fn sleep_is_not_available_in_hooks() {
    for call in [
        "sleep(3)",
        "sleep(1e300)",
        "sleep(9.3e18)",
        "sleep(0.5)",
        "call(Fn(\"sleep\"), 3)",
        "Fn(\"sleep\").call(2.5)",
    ] {
        let started = std::time::Instant::now();
        let e = call_err(Stage::Rcpt, &format!("fn rcpt(ctx) {{ {call}; accept() }}"));
        assert!(
            e.message.contains("sleep() is not available"),
            "{call}: {e}"
        );
        assert_eq!(e.line, 1, "{call}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{call} took {:?}",
            started.elapsed()
        );
    }
}

/// `replace` built its result before the size check: 64 KiB × 64 KiB bytes.
#[test]
fn replace_cannot_build_a_huge_string() {
    for (find, with) in [
        ("\"a\"", "t"),
        ("\"\"", "t"),
        ("'a'", "t"),
        ("'a'", "\"bb\""),
    ] {
        let script = format!(
            "fn rcpt(ctx) {{ let s = \"\"; s.pad(60000, 'a'); let t = \"\"; t.pad(60000, 'b'); s.replace({find}, {with}); accept() }}"
        );
        let e = call_err(Stage::Rcpt, &script);
        assert!(e.message.contains("too large"), "{find} {with}: {e}");
    }
    // within the limit it replaces as Rhai does
    decision(
        Stage::Rcpt,
        "fn rcpt(ctx) { let s = \"a-b\"; s.replace(\"-\", \"==\"); s.replace('a', 'c'); s.replace('b', \"dd\"); if s != \"c==dd\" { throw s; } accept() }",
    );
}

/// Lookups answer slowly (a database): each one is a native call that `on_progress`
/// cannot interrupt, so the deadline is checked around each.
struct SlowLookups(Duration);

impl Lookups for SlowLookups {
    fn in_set(&self, _: &str, _: &str) -> Option<Result<bool, LookupError>> {
        std::thread::sleep(self.0);
        Some(Ok(false))
    }
    fn table(&self, _: &str, _: &str) -> Option<Result<Option<String>, LookupError>> {
        std::thread::sleep(self.0);
        Some(Ok(None))
    }
}

#[test]
fn slow_lookups_stop_at_the_deadline() {
    let host = ScriptHost::new(ScriptLimits {
        wall_time: Duration::from_millis(100),
        ..ScriptLimits::default()
    });
    let hook = host
        .compile_str(
            "fn rcpt(ctx) { for i in 0..1000 { mta::lookup(\"t\", `k${i}`); mta::listed(\"t\", \"x\"); } accept() }",
            "slow.rhai",
            None,
            Stage::Rcpt,
            &KnownNames::default(),
        )
        .unwrap();
    let lookups: Arc<dyn Lookups> = Arc::new(SlowLookups(Duration::from_millis(20)));
    let started = std::time::Instant::now();
    let e = hook.call(&host, &input(Stage::Rcpt), &lookups).unwrap_err();
    // without the checks: ~50 loop turns (256 operations) of 40 ms before the clock
    // is read, 2 s
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(e.message.contains("more than 100 ms"), "{e}");
}

#[test]
fn many_headers_are_not_copied_into_an_array() {
    let values: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let many = crate::policy::Headers::from_pairs(
        values
            .iter()
            .map(|v| ("a", v.as_str()))
            .chain([("Subject", "last")]),
    );
    let mut input = input(Stage::Data);
    input.headers = &many;
    // a generous clock: the machine may be loaded, and this is not about time
    let host = ScriptHost::new(ScriptLimits {
        wall_time: Duration::from_secs(30),
        ..ScriptLimits::default()
    });
    let run = |text: &str| {
        host.compile_str(text, "test.rhai", None, Stage::Data, &known())
            .unwrap()
            .call(&host, &input, &lookups())
    };
    // one header by name: a scan, no array
    let out = run(
        "fn data(ctx) { if ctx.header(\"subject\") != \"last\" { throw \"subject\"; } accept() }",
    );
    assert!(out.is_ok(), "{out:?}");
    // all of them: refused before the array is built
    let e = run("fn data(ctx) { let n = ctx.headers.len(); accept() }").unwrap_err();
    assert!(e.message.contains("more than the array size limit"), "{e}");
    let e = run("fn data(ctx) { let n = ctx.headers_named(\"A\").len(); accept() }").unwrap_err();
    assert!(e.message.contains("more than the array size limit"), "{e}");
    // a few: as before
    let out = run(
        "fn data(ctx) { let h = ctx.headers_named(\"subject\"); if h != [\"last\"] { throw h; } accept() }",
    );
    assert!(out.is_ok(), "{out:?}");
}

#[test]
fn headers_are_unfolded_in_order() {
    decision(
        Stage::Data,
        r#"fn data(ctx) {
    let h = ctx.headers;
    if h.len() != 4 { throw "len " + h.len(); }
    if h[0].name != "Received" || h[0].value != "from a\tby b" { throw "received " + h[0].value; }
    if h[1].value != "Hello" || h[3].name != "x-spam" { throw "order"; }
    if ctx.headers_named("X-SPAM") != ["yes", "maybe"] { throw "named"; }
    accept()
}"#,
    );
}
