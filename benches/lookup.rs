//! Lookups on the hot path: recipient-domain membership in a large `domains` set, and
//! a header_checks-sized regexp table against a typical message's headers.
//!
//!     cargo bench --bench lookup
//!
//! Targets: a 10,000-domain set answers in < 200 ns; a 1,000-line regexp table checks
//! 30 headers in < 50 µs in total.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mtad::lookup::{DomainSet, parse_regexp};

fn domain_set(c: &mut Criterion) {
    let mut entries = Vec::new();
    for i in 0..5_000 {
        entries.push(format!("customer{i}.example.test"));
        entries.push(format!(".hosted{i}.example.net"));
    }
    let set = DomainSet::new(entries);
    let mut group = c.benchmark_group("domains (10,000 entries)");
    for (what, name, expect) in [
        ("exact hit", "customer4242.example.test", true),
        ("subdomain hit", "mx.eu.hosted777.example.net", true),
        ("miss", "mail.unrelated.example.org", false),
        ("upper-case hit", "Customer17.Example.TEST.", true),
    ] {
        group.bench_function(what, |b| {
            b.iter(|| assert_eq!(set.contains(black_box(name)), Ok(expect)))
        });
    }
    group.finish();
}

/// 1,000 lines in the shapes header_checks files have, with an `if` block.
fn header_checks() -> String {
    let mut t = String::from("# header_checks\n");
    for i in 0..1_000 {
        let line = match i % 5 {
            0 => format!("/^Subject:.*\\bspamword{i}\\b/ REJECT subject {i}\n"),
            1 => format!("/^From:.*@bulk{i}\\.example\\.com/ DISCARD\n"),
            2 => format!("/^X-Mailer: MassMailer {i}\\./ REJECT mailer\n"),
            3 => format!("/^Received: from [^ ]*\\.bad{i}\\.test / REJECT relay\n"),
            _ => format!("/^Content-Type: text\\/plain; charset=\"?x-{i}\\b/ DUNNO\n"),
        };
        t.push_str(&line);
    }
    t.push_str("if /^Subject:/\n/(viagra|casino)/ REJECT no $1 here\nendif\n");
    t
}

const HEADERS: &[&str] = &[
    "Return-Path: <alice@src.example.test>",
    "Delivered-To: bob@example.test",
    "Received: from mx1.src.example.test (mx1.src.example.test [192.0.2.10]) by mx.example.test (mtad) with ESMTPS id 4XyZ for <bob@example.test>; Tue, 4 Mar 2025 10:00:00 +0000",
    "Received: from relay.src.example.test (relay.src.example.test [192.0.2.11]) by mx1.src.example.test with ESMTP id 1234; Tue, 4 Mar 2025 09:59:59 +0000",
    "Received: from [10.0.0.5] (unknown [10.0.0.5]) by relay.src.example.test with ESMTPSA; Tue, 4 Mar 2025 09:59:58 +0000",
    "Received: by mail-client.src.example.test with local; Tue, 4 Mar 2025 09:59:57 +0000",
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=src.example.test; s=sel1; h=from:to:subject:date:message-id; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHutKVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV4bmp/YzhwvcubU4=",
    "ARC-Seal: i=1; a=rsa-sha256; t=1741082400; cv=none; d=src.example.test; s=arc",
    "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=src.example.test; dkim=pass header.d=src.example.test",
    "From: Alice Example <alice@src.example.test>",
    "To: Bob Example <bob@example.test>",
    "Cc: Carol <carol@sub.example.test>",
    "Subject: Quarterly report and the meeting on Thursday",
    "Date: Tue, 4 Mar 2025 09:59:57 +0000",
    "Message-ID: <20250304095957.12345@src.example.test>",
    "In-Reply-To: <20250303120000.999@example.test>",
    "References: <20250303120000.999@example.test> <20250302110000.111@src.example.test>",
    "MIME-Version: 1.0",
    "Content-Type: multipart/alternative; boundary=\"000000000000abcdef0123456789\"",
    "Content-Transfer-Encoding: 7bit",
    "X-Mailer: Thunderbird 128.7.1",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.7.1",
    "Content-Language: en-US",
    "X-Spam-Status: No, score=-0.1 required=5.0 tests=DKIM_SIGNED,DKIM_VALID autolearn=ham",
    "X-Spam-Score: -0.1",
    "List-Unsubscribe: <mailto:unsubscribe@lists.src.example.test>",
    "List-Id: Reports <reports.lists.src.example.test>",
    "Precedence: bulk",
    "Reply-To: reports@src.example.test",
    "Organization: Example Inc.",
];

fn regexp_table(c: &mut Criterion) {
    let table = parse_regexp(&header_checks()).expect("valid table");
    assert_eq!(HEADERS.len(), 30);
    assert!(table.len() >= 1_000);
    let mut group = c.benchmark_group("regexp (1,000 lines)");
    group.throughput(Throughput::Elements(HEADERS.len() as u64));
    group.bench_function("30 headers", |b| {
        b.iter(|| {
            let mut hits = 0;
            for h in HEADERS {
                if table.lookup(black_box(h)).unwrap().is_some() {
                    hits += 1;
                }
            }
            assert_eq!(hits, 0);
        })
    });
    group.bench_function("one matching header (substitution)", |b| {
        b.iter(|| {
            let v = table
                .lookup(black_box("Subject: cheap casino chips"))
                .unwrap();
            assert_eq!(v.as_deref(), Some("REJECT no casino here"));
        })
    });
    group.finish();
}

criterion_group!(benches, domain_set, regexp_table);
criterion_main!(benches);
