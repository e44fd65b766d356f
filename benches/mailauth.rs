//! Incoming-mail checks: the cost of verifying one message with a warm DNS cache (a
//! fixture, so no query is made): a 4 KB message DKIM-signed by its From domain, SPF
//! pass, DMARC pass (aligned DKIM and SPF), iprev pass, no ARC chain — SPF at MAIL
//! plus everything at DATA, the header included; and signing that message (what the
//! scheduler does before a signed message leaves). One group per signing algorithm.
//!
//!     cargo bench --bench mailauth

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mtad::mailauth::dkim::{Algorithm, DEFAULT_HEADERS, Signer, generate, sign};
use mtad::mailauth::{AuthResult, Checker, Checks, DnsFixture, Peer};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: Alice <alice@example.com>\r\nTo: bob@relay.test\r\nSubject: the report\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < 4096 {
        m.push_str(line);
    }
    m.into_bytes()
}

fn bench_algorithm(c: &mut Criterion, algorithm: Algorithm, name: &str) {
    let (_, key) = generate(algorithm, 2048).unwrap();
    let key = Arc::new(key);
    let signer = Signer {
        domain: "example.com".into(),
        selector: "s1".into(),
        headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        always: false,
        key: key.clone(),
    };
    let (signed, _) = sign(&[&signer], &message());
    let mut fixture = DnsFixture::default();
    fixture
        .txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("mail.example.com", "v=spf1 a -all")
        .a("mail.example.com", CLIENT)
        .ptr(IpAddr::V4(CLIENT), "mail.example.com")
        .txt("s1._domainkey.example.com", &key.dns_record())
        .txt("_dmarc.example.com", "v=DMARC1; p=reject");
    let checker = Checker::fixture(&fixture);
    let checks = Checks::default();
    let peer = Peer {
        ip: IpAddr::V4(CLIENT),
        helo: "mail.example.com",
        sender: "alice@example.com",
    };
    let verify = || {
        let spf = Checker::now(checker.spf(checks, peer, "mx.relay.test")).unwrap();
        Checker::now(checker.message(checks, peer, &spf, &signed, "mx.relay.test")).unwrap()
    };
    let v = verify();
    assert_eq!(
        (
            v.results.spf,
            v.results.dkim,
            v.results.dmarc,
            v.results.iprev,
            v.results.arc
        ),
        (
            AuthResult::Pass,
            AuthResult::Pass,
            AuthResult::Pass,
            AuthResult::Pass,
            AuthResult::None
        ),
        "{}",
        v.header
    );
    let mut group = c.benchmark_group(name);
    group.bench_function("spf+message, 4 KB", |b| b.iter(|| black_box(verify())));
    let unsigned = message();
    group.bench_function("sign, 4 KB", |b| {
        b.iter(|| black_box(sign(&[&signer], black_box(&unsigned))))
    });
    group.finish();
}

fn rsa(c: &mut Criterion) {
    bench_algorithm(c, Algorithm::Rsa, "mailauth/rsa-2048");
}

fn ed25519(c: &mut Criterion) {
    bench_algorithm(c, Algorithm::Ed25519, "mailauth/ed25519");
}

criterion_group!(benches, rsa, ed25519);
criterion_main!(benches);
