//! Command parsing, DATA ingestion and header parsing throughput: the loops every
//! byte from a client passes through.
//!
//!     cargo bench --bench ingest

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mtad::smtp::dot::DotReceiver;
use mtad::smtp::line::{LineEvent, LineReader};
use smtp_proto::Request;

/// A typical pipelined transaction as a client sends it.
const COMMANDS: &[u8] = b"EHLO client.example.test\r\nMAIL FROM:<alice@src.example.test> SIZE=4096 BODY=8BITMIME\r\n\
RCPT TO:<bob@example.test>\r\nRCPT TO:<carol@sub.example.test> NOTIFY=FAILURE\r\nDATA\r\nRSET\r\nNOOP\r\nQUIT\r\n";

fn parse_commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("commands");
    group.throughput(Throughput::Elements(8));
    group.bench_function("frame+parse 8 commands", |b| {
        let mut reader = LineReader::new(2048);
        b.iter(|| {
            let mut input = black_box(COMMANDS);
            let mut n = 0;
            while let Some(event) = reader.next(&mut input) {
                assert_eq!(event, LineEvent::Line);
                let line = reader.line();
                if Request::parse(&mut line.iter()).is_ok() {
                    n += 1;
                }
            }
            assert_eq!(n, 8);
        })
    });
    // Baseline: smtp-proto's own receiver, which frames and parses in one step.
    group.bench_function("baseline smtp-proto RequestReceiver", |b| {
        let mut receiver = smtp_proto::request::receiver::RequestReceiver::default();
        b.iter(|| {
            let mut input = black_box(COMMANDS).iter();
            let mut n = 0;
            while receiver.ingest(&mut input).is_ok() {
                n += 1;
            }
            assert_eq!(n, 8);
        })
    });
    group.finish();
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@src.test\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    let mut i = 0;
    while m.len() < size {
        if i % 50 == 0 {
            m.extend_from_slice(b"..a stuffed dot line\r\n");
        }
        m.extend_from_slice(line);
        i += 1;
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn ingest_data(c: &mut Criterion) {
    let mut group = c.benchmark_group("data");
    for size in [4 * 1024, 1024 * 1024] {
        let msg = message(size);
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("dot-receiver 8K reads", size),
            &msg,
            |b, msg| {
                let mut sink = Vec::with_capacity(msg.len());
                b.iter(|| {
                    sink.clear();
                    let mut rx = DotReceiver::new();
                    let mut done = false;
                    for chunk in msg.chunks(8192) {
                        let mut input = chunk;
                        done = rx.ingest(&mut input, Some(&mut sink));
                    }
                    assert!(done && !rx.bare_eol());
                    black_box(&sink);
                })
            },
        );
        // Baseline: smtp-proto's DataReceiver (less strict: see src/smtp/dot.rs).
        group.bench_with_input(
            BenchmarkId::new("baseline smtp-proto DataReceiver", size),
            &msg,
            |b, msg| {
                let mut sink = Vec::with_capacity(msg.len());
                b.iter(|| {
                    sink.clear();
                    let mut rx = smtp_proto::request::receiver::DataReceiver::new();
                    let mut done = false;
                    for chunk in msg.chunks(8192) {
                        done = rx.ingest(&mut chunk.iter(), &mut sink);
                    }
                    assert!(done);
                    black_box(&sink);
                })
            },
        );
    }
    group.finish();
}

/// A header block as mail from the Internet has it: trace headers, authentication
/// results, a folded DKIM signature, list headers; 24 fields, about 2 KB.
fn received_headers() -> Vec<u8> {
    let mut m = String::new();
    for hop in 0..6 {
        m.push_str(&format!(
            "Received: from relay{hop}.example.net (relay{hop}.example.net [192.0.2.{hop}])\r\n\
             \tby mx{hop}.example.org (Postfix) with ESMTPS id 4Xy{hop}Zq\r\n\
             \tfor <bob@example.test>; Mon, 23 Nov 2026 10:0{hop}:00 +0000\r\n"
        ));
    }
    m.push_str(
        "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=example.net;\r\n\
         \tdkim=pass header.d=example.net; dmarc=pass header.from=example.net\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=s1;\r\n\
         \th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\
         \tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSwganVzdCBieXRlcyBvZiB0aGUgcmlnaHQgc2l6ZQ==\r\n\
         From: Alice <alice@example.net>\r\nTo: Bob <bob@example.test>\r\n\
         Cc: carol@example.test, dave@example.test\r\nSubject: =?utf-8?q?the_report?=\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1.2.3@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\nList-Id: <news.example.net>\r\n\
         List-Unsubscribe: <mailto:leave@example.net>\r\nPrecedence: bulk\r\n\
         X-Mailer: bench 1.0\r\nX-Spam-Score: 0.1\r\nReply-To: alice@example.net\r\n\
         Return-Path: <alice@example.net>\r\n\r\nbody\r\n",
    );
    m.into_bytes()
}

fn headers(c: &mut Criterion) {
    let message = received_headers();
    let (parsed, body) = mtad::message::parse_headers(&message);
    assert_eq!(&message[body..], b"body\r\n");
    assert_eq!(parsed.len(), 24, "the fixture's header count");
    let mut group = c.benchmark_group("headers");
    group.throughput(Throughput::Bytes(body as u64));
    group.bench_function("parse 24 fields, 2 KB", |b| {
        b.iter(|| black_box(mtad::message::parse_headers(black_box(&message))))
    });
    group.finish();
}

criterion_group!(benches, parse_commands, ingest_data, headers);
criterion_main!(benches);
