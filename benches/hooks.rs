//! What a Rhai hook call costs: a small rcpt hook (one field, one set lookup,
//! `next()`) and a small data hook (one header read, one header added).
//!
//! Targets: rcpt well under 10 µs, data under 15 µs per call.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mtad::lookup::LookupError;
use mtad::policy::Stage;
use mtad::policy::script::{HookDecision, HookInput, KnownNames, Lookups, ScriptHost};

struct Sets;

impl Lookups for Sets {
    fn in_set(&self, name: &str, value: &str) -> Option<Result<bool, LookupError>> {
        (name == "relay").then(|| Ok(value == "example.test" || value.ends_with(".example.test")))
    }
    fn table(&self, _: &str, _: &str) -> Option<Result<Option<String>, LookupError>> {
        None
    }
}

const RCPT: &str = r#"
import "mta" as mta;
fn rcpt(ctx) {
    if mta::listed("relay", ctx.rcpt.domain) { return accept(); }
    next()
}
"#;

const DATA: &str = r#"
fn data(ctx) {
    if ctx.header("X-Spam-Flag") == "YES" {
        return reject(550, "5.7.1", "spam");
    }
    ctx.add_header("X-Checked-By", "mtad");
    next()
}
"#;

fn hooks(c: &mut Criterion) {
    let host = ScriptHost::default();
    let known = KnownNames::new(["relay"], Vec::<String>::new());
    let lookups: Arc<dyn Lookups> = Arc::new(Sets);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    let rcpt = host
        .compile_str(RCPT, "rcpt.rhai", None, Stage::Rcpt, &known)
        .unwrap();
    let recipients: Vec<String> = (0..10).map(|i| format!("user{i}@other.test")).collect();
    let mut input = HookInput::new(Stage::Rcpt, ip, 40000, "mx");
    input.helo = Some("client.test");
    input.sender = Some("sender@client.test");
    input.rcpt = Some("someone@elsewhere.test");
    input.recipients = &recipients;
    let out = rcpt.call(&host, &input, &lookups).unwrap();
    assert_eq!(
        out.decision,
        HookDecision::Verdict(mtad::policy::Verdict::Next)
    );
    c.bench_function("hook_rcpt_set_check_next", |b| {
        b.iter(|| rcpt.call(&host, black_box(&input), &lookups).unwrap())
    });

    let data = host
        .compile_str(DATA, "data.rhai", None, Stage::Data, &known)
        .unwrap();
    let headers = mtad::policy::Headers::from_pairs([
        (
            "Received",
            "from client.test (client.test [192.0.2.1])\r\n\tby mx.example.test with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000",
        ),
        ("From", "Sender <sender@client.test>"),
        ("To", "Someone <someone@example.test>"),
        ("Subject", "A message of ordinary size"),
        ("Date", "Mon, 1 Jan 2024 00:00:00 +0000"),
        ("Message-ID", "<1234567890@client.test>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Spam-Flag", "NO"),
    ]);
    let body = vec![b'x'; 20_000];
    let mut input = HookInput::new(Stage::Data, ip, 40000, "mx");
    input.sender = Some("sender@client.test");
    input.recipients = &recipients;
    input.size = Some(21_000);
    input.headers = &headers;
    input.body = Some(&body);
    let out = data.call(&host, &input, &lookups).unwrap();
    assert_eq!(
        out.decision,
        HookDecision::Verdict(mtad::policy::Verdict::Next)
    );
    assert_eq!(out.header_changes.len(), 1);
    c.bench_function("hook_data_header_read_add", |b| {
        b.iter(|| data.call(&host, black_box(&input), &lookups).unwrap())
    });
}

criterion_group!(benches, hooks);
criterion_main!(benches);
