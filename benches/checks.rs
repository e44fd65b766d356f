//! header-checks: a 1,000-line regexp table on a 30-header message (target: under
//! 50 µs per message), body-checks on a 200-line body, and both on a multipart
//! message (a MIME parse, part headers, decoded text parts).
//!
//!     cargo bench --bench checks

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use mtad::config::Config;
use mtad::policy::{Context, Pipeline, Stage, parse_headers};

fn pipeline(dir: &std::path::Path) -> Pipeline {
    // 1,000 patterns of the shapes real header_checks files have: anchored header
    // names, subject words, mailer names; a few actions that edit.
    let mut table = String::from("/^Received:/ IGNORE\n/^X-Originating-IP:/ STRIP\n");
    for i in 0..998 {
        let line = match i % 4 {
            0 => format!("/^Subject:.*\\bspamword{i}\\b/ REJECT 5.7.1 no thanks\n"),
            1 => format!("/^X-Mailer: BulkMailer{i}/ DISCARD\n"),
            2 => format!("/^From:.*@spam{i}\\.example$/ REJECT\n"),
            _ => format!("/^X-Custom-{i}: (.*)/ REPLACE X-Custom-{i}: [$1]\n"),
        };
        table.push_str(&line);
    }
    std::fs::write(dir.join("header_checks"), table).unwrap();
    let mut body = String::new();
    for i in 0..200 {
        body.push_str(&format!("/^buy now {i}/ REJECT\n"));
    }
    std::fs::write(dir.join("body_checks"), body).unwrap();
    let config = dir.join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nstage \"data\" {\n    header-checks file=\"header_checks\"\n    body-checks file=\"body_checks\"\n}\n",
    )
    .unwrap();
    let config = Config::load(&config).unwrap_or_else(|e| panic!("{}", mtad::config::render(&e)));
    Pipeline::build(&config).unwrap_or_else(|e| panic!("{}", mtad::config::render(&e)))
}

fn message() -> Vec<u8> {
    let mut m = String::new();
    m.push_str("Received: from client.test ([192.0.2.1])\r\n\tby mx.example.test with ESMTP id 1; Mon, 23 Nov 2026 10:00:00 +0000\r\n");
    m.push_str("Received: from inner.example.test\r\n\tby gw.example.test; Mon, 23 Nov 2026 09:59:59 +0000\r\n");
    m.push_str("From: Alice <alice@src.test>\r\nTo: bob@example.test\r\nSubject: quarterly report for the team\r\n");
    m.push_str("Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@src.test>\r\nMIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\nX-Mailer: Thunderbird 128\r\n");
    for i in 0..20 {
        m.push_str(&format!(
            "X-Header-{i}: some value number {i} with a little text\r\n"
        ));
    }
    m.push_str("\r\n");
    for i in 0..200 {
        m.push_str(&format!(
            "body line {i}: nothing to see here, just text.\r\n"
        ));
    }
    m.into_bytes()
}

fn checks(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(dir.path());
    let message = message();
    let (headers, _) = parse_headers(&message);
    assert_eq!(headers.len(), 30);
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    let ctx = Context {
        headers: &headers,
        body: Some(&message),
        ..Context::new(client, "mx")
    };
    let d = pipeline.evaluate(Stage::Data, &ctx);
    assert_eq!(
        d.data().unwrap().checks.edits.len(),
        2,
        "both Received headers removed"
    );
    c.bench_function(
        "header+body checks, 1000+200 patterns, 30 headers, 200 body lines",
        |b| b.iter(|| black_box(pipeline.evaluate(Stage::Data, black_box(&ctx)))),
    );
    // header checks alone, the figure the target is about
    let header_only = {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline_header_only(dir.path());
        drop(dir);
        p
    };
    c.bench_function("header_checks 1000 patterns, 30 headers", |b| {
        b.iter(|| black_box(header_only.evaluate(Stage::Data, black_box(&ctx))))
    });
    // a multipart message: the MIME parse, part headers and decoded text parts
    let multipart = multipart();
    let (headers, _) = parse_headers(&multipart);
    let ctx = Context {
        headers: &headers,
        body: Some(&multipart),
        ..Context::new(client, "mx")
    };
    let d = pipeline.evaluate(Stage::Data, &ctx);
    assert_eq!(d.verdict, mtad::policy::Verdict::Accept);
    c.bench_function(
        "header+body checks, 1000+200 patterns, multipart: QP text, base64 text, 40 KiB attachment",
        |b| b.iter(|| black_box(pipeline.evaluate(Stage::Data, black_box(&ctx)))),
    );
}

/// The benchmark message as multipart/mixed: a quoted-printable text part, a base64
/// text part (100 lines each) and a 40 KiB base64 PDF attachment.
fn multipart() -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = message();
    let end = plain.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&plain[..end]).replace(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: multipart/mixed; boundary=\"=-part\"",
    );
    let mut m = head;
    m.push_str("\r\n\r\nThis is a MIME message.\r\n--=-part\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    for i in 0..100 {
        m.push_str(&format!(
            "body line {i}: caf=C3=A9, nothing to see here, just=20text.\r\n"
        ));
    }
    m.push_str("--=-part\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!("more line {i}: nothing to see here either.\n"));
    }
    wrap(&mut m, &b64.encode(text));
    m.push_str("--=-part\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let pdf: Vec<u8> = (0..40 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    wrap(&mut m, &b64.encode(pdf));
    m.push_str("--=-part--\r\n");
    m.into_bytes()
}

/// base64 text in 76-character lines.
fn wrap(out: &mut String, text: &str) {
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
}

fn pipeline_header_only(dir: &std::path::Path) -> Pipeline {
    let _ = pipeline(dir);
    let config = dir.join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nstage \"data\" {\n    header-checks file=\"header_checks\"\n}\n",
    )
    .unwrap();
    let config = Config::load(&config).unwrap_or_else(|e| panic!("{}", mtad::config::render(&e)));
    Pipeline::build(&config).unwrap()
}

criterion_group!(benches, checks);
criterion_main!(benches);
