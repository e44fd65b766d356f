//! Policy evaluation and compilation.
//!
//!     cargo bench --bench policy

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use mtad::config::Config;
use mtad::policy::{Context, Pipeline, Stage, parse_headers};

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .join("mtad.kdl");
    Config::load(&path).unwrap_or_else(|e| panic!("{}", mtad::config::render(&e)))
}

/// One message through every stage a session runs: connect, helo, mail, two
/// recipients, data (with its headers parsed), as the session calls them.
fn per_message(c: &mut Criterion) {
    let pipeline = Pipeline::build(&example("mail-hub")).unwrap();
    let client: IpAddr = "203.0.113.5".parse().unwrap();
    let message = b"From: a@src.test\r\nTo: user@example.local\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@src.test>\r\n\r\nbody\r\n";
    let recipients = vec![
        "user@example.local".to_owned(),
        "other@sub.example.local".to_owned(),
    ];
    c.bench_function("policy/default policy, all stages, one message", |b| {
        b.iter(|| {
            let base = Context::new(black_box(client), "mx");
            let helo = Context {
                helo: Some("client.src.test"),
                ..base
            };
            assert!(!refused(pipeline.evaluate(Stage::Connect, &base)));
            assert!(!refused(pipeline.evaluate(Stage::Helo, &helo)));
            let mail = Context {
                sender: Some("a@src.test"),
                ..helo
            };
            assert!(!refused(pipeline.evaluate(Stage::Mail, &mail)));
            for (i, rcpt) in recipients.iter().enumerate() {
                let ctx = Context {
                    rcpt: Some(rcpt),
                    recipients: &recipients[..i],
                    ..mail
                };
                assert!(!refused(pipeline.evaluate(Stage::Rcpt, &ctx)));
            }
            let (headers, _) = parse_headers(black_box(message));
            let data = Context {
                recipients: &recipients,
                size: Some(message.len() as u64),
                headers: &headers,
                ..mail
            };
            assert!(!refused(pipeline.evaluate(Stage::Data, &data)));
        })
    });
}

/// The same message through the `scripted` example: one rcpt hook per recipient and
/// one data hook (table lookups, header reads and changes) on top of the rules.
fn per_message_with_hooks(c: &mut Criterion) {
    let pipeline = Pipeline::build(&example("scripted")).unwrap();
    let client: IpAddr = "203.0.113.5".parse().unwrap();
    let message = b"From: ceo@example.test\r\nTo: staff@example.test\r\nSubject: all hands\r\nX-Internal-Route: a\r\nMessage-ID: <1@example.test>\r\n\r\nbody\r\n";
    let recipients = vec!["staff@example.test".to_owned()];
    c.bench_function(
        "policy/scripted example, rcpt + data hooks, one message",
        |b| {
            b.iter(|| {
                let base = Context::new(black_box(client), "mx");
                let helo = Context {
                    helo: Some("client.src.test"),
                    ..base
                };
                assert!(!refused(pipeline.evaluate(Stage::Connect, &base)));
                assert!(!refused(pipeline.evaluate(Stage::Helo, &helo)));
                let mail = Context {
                    sender: Some("ceo@example.test"),
                    ..helo
                };
                assert!(!refused(pipeline.evaluate(Stage::Mail, &mail)));
                let ctx = Context {
                    rcpt: Some(&recipients[0]),
                    recipients: &[],
                    ..mail
                };
                assert!(!refused(pipeline.evaluate(Stage::Rcpt, &ctx)));
                let (headers, _) = parse_headers(black_box(message));
                let data = Context {
                    recipients: &recipients,
                    size: Some(message.len() as u64),
                    headers: &headers,
                    body: Some(message),
                    ..mail
                };
                let d = pipeline.evaluate(Stage::Data, &data);
                assert_eq!(d.data().unwrap().header_changes.len(), 2);
                assert!(!refused(d));
            })
        },
    );
}

fn refused(d: mtad::policy::Decision) -> bool {
    matches!(
        d.verdict,
        mtad::policy::Verdict::Reject(_) | mtad::policy::Verdict::Defer(_)
    )
}

/// Reading, validating and compiling the largest example, as `mtactl check` and a
/// reload do.
fn compile(c: &mut Criterion) {
    let largest = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().join("mtad.kdl"))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    c.bench_function("policy/compile the largest example", |b| {
        b.iter(|| {
            let config = Config::load(black_box(&largest)).unwrap();
            black_box(Pipeline::build(&config).unwrap());
        })
    });
}

/// What the decision log adds to a decision: the record made from the context and the
/// decision, and its JSON line (the writer thread's I/O is not the session's) — for a
/// rcpt decision with an SQL answer (and with two milters' answers), a data decision
/// with a 4 KiB message (its header block copied, its SHA-256 computed), and a route
/// decision with its route.
fn decision_record(c: &mut Criterion) {
    use mtad::lookup::tape::{Answer, Recorded};
    use mtad::policy::decision_log::{MilterAnswer, Record};
    let pipeline = Pipeline::build(&example("mail-hub")).unwrap();
    let client: IpAddr = "203.0.113.5".parse().unwrap();
    let recipients = vec!["user@example.local".to_owned()];
    let rcpt = Context {
        helo: Some("client.src.test"),
        sender: Some("a@src.test"),
        rcpt: Some("user@example.local"),
        instance: Some("1a2b.6751d2b7.d2b6a.3"),
        session: Some(0x1f),
        ..Context::new(client, "mx")
    };
    let decision = pipeline.evaluate(Stage::Rcpt, &rcpt);
    let answers = || Recorded {
        answers: vec![Answer::Table {
            table: "relay_domains".into(),
            key: "example.local".into(),
            value: Some("OK".into()),
            error: None,
        }],
        cut: false,
    };
    c.bench_function("decision record: rcpt", |b| {
        b.iter(|| {
            let r = Record::of(
                &pipeline,
                Stage::Rcpt,
                black_box(&rcpt),
                &decision,
                answers(),
                0,
            );
            black_box(serde_json::to_string(&r).unwrap())
        })
    });
    let mut message = b"From: a@src.test\r\nTo: user@example.local\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@src.test>\r\n\r\n".to_vec();
    message.resize(4096, b'x');
    let (headers, _) = parse_headers(&message);
    let data = Context {
        helo: Some("client.src.test"),
        sender: Some("a@src.test"),
        recipients: &recipients,
        size: Some(message.len() as u64),
        headers: &headers,
        body: Some(&message),
        queue_id: Some("4F2A1B3C"),
        session: Some(0x1f),
        ..Context::new(client, "mx")
    };
    let decision = pipeline.evaluate(Stage::Data, &data);
    c.bench_function("decision record: data, 4 KiB", |b| {
        b.iter(|| {
            let r = Record::of(
                &pipeline,
                Stage::Data,
                black_box(&data),
                &decision,
                Recorded::default(),
                0,
            );
            black_box(serde_json::to_string(&r).unwrap())
        })
    });
    // a rcpt decision with the answers of the session's two milters
    let decision = pipeline.evaluate(Stage::Rcpt, &rcpt);
    c.bench_function("decision record: rcpt, 2 milters", |b| {
        b.iter(|| {
            let mut r = Record::of(
                &pipeline,
                Stage::Rcpt,
                black_box(&rcpt),
                &decision,
                answers(),
                0,
            );
            r.milters = vec![
                MilterAnswer::new("opendkim", "RCPT", "skipped"),
                MilterAnswer::new("spam", "RCPT", "continue"),
            ];
            black_box(serde_json::to_string(&r).unwrap())
        })
    });
    // a route decision (delivery's, one per recipient and attempt) with its route
    let route = Context {
        helo: Some("client.src.test"),
        sender: Some("a@src.test"),
        rcpt: Some("user@example.local"),
        queue_id: Some("4F2A1B3C"),
        ..Context::new(client, "mx")
    };
    let decision = pipeline.evaluate(Stage::Route, &route);
    c.bench_function("decision record: route", |b| {
        b.iter(|| {
            let mut r = Record::of(
                &pipeline,
                Stage::Route,
                black_box(&route),
                &decision,
                Recorded::default(),
                0,
            );
            r.route = Some("smtp:[192.168.1.100]".to_owned());
            black_box(serde_json::to_string(&r).unwrap())
        })
    });
}

criterion_group!(
    benches,
    per_message,
    per_message_with_hooks,
    compile,
    decision_record
);
criterion_main!(benches);
