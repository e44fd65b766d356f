use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::ResolverCache as _;

use super::*;
use crate::mailauth::dkim::{Algorithm, DEFAULT_HEADERS, Key, Signer, generate, sign};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const AUTHSERV: &str = "mx.relay.test";
const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@relay.test\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n";

fn peer(sender: &str) -> Peer<'_> {
    Peer {
        ip: IpAddr::V4(CLIENT),
        helo: "mail.example.com",
        sender,
    }
}

fn key() -> Arc<Key> {
    Arc::new(generate(Algorithm::Ed25519, 0).unwrap().1)
}

fn signer(domain: &str, selector: &str, key: &Arc<Key>) -> Signer {
    Signer {
        domain: domain.to_owned(),
        selector: selector.to_owned(),
        headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        always: false,
        key: key.clone(),
    }
}

fn spf(fixture: &DnsFixture, p: Peer<'_>) -> SpfState {
    Checker::now(Checker::fixture(fixture).spf(Checks::default(), p, AUTHSERV)).unwrap()
}

fn check(fixture: &DnsFixture, sender: &str, message: &[u8]) -> Verified {
    let checker = Checker::fixture(fixture);
    let state = Checker::now(checker.spf(Checks::default(), peer(sender), AUTHSERV)).unwrap();
    Checker::now(checker.message(Checks::default(), peer(sender), &state, message, AUTHSERV))
        .unwrap()
}

/// example.com: SPF for the client, its key at s1, p=reject; the client's PTR.
fn example_com(key: &Key) -> DnsFixture {
    let mut f = DnsFixture::default();
    f.txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("s1._domainkey.example.com", &key.dns_record())
        .txt("_dmarc.example.com", "v=DMARC1; p=reject")
        .ptr(IpAddr::V4(CLIENT), "mail.example.com")
        .a("mail.example.com", CLIENT);
    f
}

#[test]
fn spf_results_for_mail_from() {
    let mut f = DnsFixture::default();
    f.txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("FAIL.test.", "v=spf1 ip4:198.51.100.1 -all")
        .txt("soft.test", "v=spf1 ~all")
        .txt("neutral.test", "v=spf1 ?all")
        .txt("perm.test", "v=spf1 ip4:not-an-address -all")
        .txt("other.test", "google-site-verification=abc")
        .fail("temp.test");
    for (sender, expected) in [
        ("a@pass.test", AuthResult::Pass),
        ("a@fail.test", AuthResult::Fail),
        ("a@soft.test", AuthResult::SoftFail),
        ("a@neutral.test", AuthResult::Neutral),
        ("a@perm.test", AuthResult::PermError),
        ("a@none.test", AuthResult::None),
        ("a@other.test", AuthResult::None),
        ("a@temp.test", AuthResult::TempError),
    ] {
        let state = spf(&f, peer(sender));
        assert_eq!(state.results.spf, expected, "{sender}");
        assert_eq!(
            state.results.spf_domain,
            sender.split_once('@').unwrap().1,
            "{sender}"
        );
        assert_eq!(state.results.dkim, AuthResult::Skipped);
    }
}

#[test]
fn spf_helo_identity_and_the_null_sender() {
    let mut f = DnsFixture::default();
    f.txt("mail.example.com", "v=spf1 a -all")
        .a("mail.example.com", CLIENT)
        .txt("example.com", "v=spf1 -all");
    let state = spf(&f, peer("a@example.com"));
    assert_eq!(state.results.spf_helo, AuthResult::Pass);
    assert_eq!(state.results.spf, AuthResult::Fail);
    // The null sender: postmaster@HELO.
    let state = spf(&f, peer(""));
    assert_eq!(state.results.spf, AuthResult::Pass);
    assert_eq!(state.results.spf_domain, "mail.example.com");
    // Not checked: skipped.
    let off = Checks {
        spf: false,
        ..Checks::default()
    };
    let state =
        Checker::now(Checker::fixture(&f).spf(off, peer("a@example.com"), AUTHSERV)).unwrap();
    assert_eq!(state.results.spf, AuthResult::Skipped);
    assert_eq!(state.results.spf_helo, AuthResult::Skipped);
}

#[test]
fn a_failing_address_lookup_is_a_temperror_at_once() {
    let mut f = DnsFixture::default();
    f.txt("example.com", "v=spf1 a:broken.test -all")
        .fail("broken.test");
    let checker = Checker::fixture(&f);
    let out = Checker::now(checker.spf(Checks::default(), peer("a@example.com"), AUTHSERV));
    // The fixture's resolver has no nameserver: it fails at the first poll, without
    // a runtime.
    assert_eq!(out.unwrap().results.spf, AuthResult::TempError);
    // And so it does in one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = rt.block_on(checker.spf(Checks::default(), peer("a@example.com"), AUTHSERV));
    assert_eq!(state.results.spf, AuthResult::TempError);
}

#[test]
fn dkim_pass_fail_and_missing_key() {
    let k = key();
    let f = example_com(&k);
    let s1 = signer("example.com", "s1", &k);
    let (signed, by) = sign(&[&s1], MESSAGE);
    assert_eq!(by.len(), 1);
    let v = check(&f, "alice@example.com", &signed);
    assert_eq!(v.results.dkim, AuthResult::Pass, "{:?}", v.results);
    assert_eq!(
        v.results.dkim_signatures,
        [DkimSignature {
            result: AuthResult::Pass,
            domain: "example.com".into(),
            selector: "s1".into(),
            reason: String::new()
        }]
    );

    let mut tampered = signed.clone();
    let at = tampered.len() - 4;
    tampered[at] = b'X';
    let v = check(&f, "alice@example.com", &tampered);
    assert_eq!(v.results.dkim, AuthResult::Fail);
    assert!(!v.results.dkim_signatures[0].reason.is_empty());

    let (unknown, _) = sign(&[&signer("example.com", "nokey", &k)], MESSAGE);
    let v = check(&f, "alice@example.com", &unknown);
    assert_eq!(v.results.dkim, AuthResult::PermError);

    let v = check(&f, "alice@example.com", MESSAGE);
    assert_eq!(v.results.dkim, AuthResult::None);
    assert!(v.results.dkim_signatures.is_empty());
    assert!(v.header.contains("dkim=none"), "{}", v.header);
}

#[test]
fn one_passing_signature_of_two_is_a_pass() {
    let k = key();
    let other = key();
    let mut f = example_com(&k);
    // relay.test publishes a key that is not the one it signed with.
    f.txt("s2._domainkey.relay.test", &other.dns_record());
    let (signed, _) = sign(
        &[
            &signer("relay.test", "s2", &k),
            &signer("example.com", "s1", &k),
        ],
        MESSAGE,
    );
    let v = check(&f, "alice@example.com", &signed);
    assert_eq!(v.results.dkim, AuthResult::Pass);
    let sigs = &v.results.dkim_signatures;
    assert_eq!(sigs.len(), 2);
    let relay = sigs.iter().find(|s| s.domain == "relay.test").unwrap();
    assert_eq!(relay.result, AuthResult::Fail);
    assert!(
        sigs.iter()
            .any(|s| s.domain == "example.com" && s.result == AuthResult::Pass)
    );
}

#[test]
fn dmarc_pass_fail_subdomain_pct_and_none() {
    let k = key();
    let mut f = example_com(&k);
    let (signed, _) = sign(&[&signer("example.com", "s1", &k)], MESSAGE);
    // Aligned DKIM, SPF of another domain: pass, no policy.
    let v = check(&f, "bounce@other.test", &signed);
    assert_eq!(v.results.dmarc, AuthResult::Pass);
    assert_eq!(v.results.dmarc_domain, "example.com");
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::None);

    // Neither aligned: fail with p=reject.
    let v = check(&f, "bounce@other.test", MESSAGE);
    assert_eq!(v.results.dmarc, AuthResult::Fail);
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::Reject);

    // A subdomain gets sp=.
    f.txt("_dmarc.sub.test", "v=DMARC1; p=reject; sp=quarantine")
        .a("news.sub.test", CLIENT);
    let from_sub = b"From: a@news.sub.test\r\nSubject: x\r\n\r\nbody\r\n";
    let v = check(&f, "bounce@other.test", from_sub);
    assert_eq!(v.results.dmarc, AuthResult::Fail);
    assert_eq!(v.results.dmarc_domain, "news.sub.test");
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::Quarantine);

    // pct=0: every message gets the next weaker policy.
    f.txt("_dmarc.pct.test", "v=DMARC1; p=reject; pct=0");
    let v = check(&f, "b@other.test", b"From: a@pct.test\r\n\r\nbody\r\n");
    assert_eq!(v.results.dmarc, AuthResult::Fail);
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::Quarantine);
    f.txt("_dmarc.pctq.test", "v=DMARC1; p=quarantine; pct=0");
    let v = check(&f, "b@other.test", b"From: a@pctq.test\r\n\r\nbody\r\n");
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::None);

    // No record: none.
    let v = check(&f, "b@other.test", b"From: a@norecord.test\r\n\r\nbody\r\n");
    assert_eq!(v.results.dmarc, AuthResult::None);
    assert_eq!(v.results.dmarc_policy, DmarcPolicy::None);

    // A DNS failure: temperror.
    f.fail("_dmarc.broken.test");
    let v = check(&f, "b@other.test", b"From: a@broken.test\r\n\r\nbody\r\n");
    assert_eq!(v.results.dmarc, AuthResult::TempError);
}

#[test]
fn pct_is_read_from_the_record() {
    assert_eq!(engine::pct_of("v=DMARC1; p=reject; pct=25"), 25);
    assert_eq!(engine::pct_of("v=DMARC1; p=reject"), 100);
    assert_eq!(engine::pct_of("v=DMARC1; pct=x"), 100);
    assert_eq!(engine::pct_of("v=DMARC1; PCT = 0 ;"), 0);
}

#[test]
fn iprev_pass_and_fail() {
    let k = key();
    let f = example_com(&k);
    let v = check(&f, "a@example.com", MESSAGE);
    assert_eq!(v.results.iprev, AuthResult::Pass);
    assert_eq!(v.results.iprev_name, "mail.example.com");

    // The PTR name does not resolve back.
    let mut f = DnsFixture::default();
    f.ptr(IpAddr::V4(CLIENT), "liar.test")
        .a("liar.test", Ipv4Addr::new(203, 0, 113, 9));
    let v = check(&f, "a@example.com", MESSAGE);
    assert_eq!(v.results.iprev, AuthResult::Fail);
    assert_eq!(v.results.iprev_name, "");
}

#[test]
fn the_header_has_every_result_that_ran() {
    let k = key();
    let f = example_com(&k);
    let (signed, _) = sign(&[&signer("example.com", "s1", &k)], MESSAGE);
    let v = check(&f, "alice@example.com", &signed);
    let h = &v.header;
    assert!(
        h.starts_with(&format!("Authentication-Results: {AUTHSERV};")),
        "{h}"
    );
    assert!(h.ends_with("\r\n") && !h.ends_with("\r\n\r\n"), "{h}");
    for item in [
        "spf=pass",
        "smtp.helo=mail.example.com",
        "smtp.mailfrom=",
        "dkim=pass",
        "header.d=example.com",
        "arc=none",
        "dmarc=pass",
        "iprev=pass",
    ] {
        assert!(h.contains(item), "{item} missing: {h}");
    }

    // Checks that are off are left out; with none, `; none`.
    let checker = Checker::fixture(&f);
    let off = Checks {
        spf: false,
        dkim: false,
        dmarc: false,
        arc: false,
        iprev: false,
    };
    let state = Checker::now(checker.spf(off, peer("a@example.com"), AUTHSERV)).unwrap();
    let v = Checker::now(checker.message(off, peer("a@example.com"), &state, &signed, AUTHSERV))
        .unwrap();
    assert_eq!(
        v.header,
        format!("Authentication-Results: {AUTHSERV}; none\r\n")
    );
    assert_eq!(v.results, AuthResults::default());
    let only_dkim = Checks { dkim: true, ..off };
    let v =
        Checker::now(checker.message(only_dkim, peer("a@example.com"), &state, &signed, AUTHSERV))
            .unwrap();
    assert!(v.header.contains("dkim=pass"), "{}", v.header);
    assert!(!v.header.contains("spf=") && !v.header.contains("dmarc="));
    assert_eq!(v.results.dmarc, AuthResult::Skipped);
}

#[test]
fn an_arc_sealed_message_verifies_and_a_tampered_one_does_not() {
    let k = key();
    let relay_key = key();
    let mut f = example_com(&k);
    f.txt("arc._domainkey.relay.test", &relay_key.dns_record());
    let (signed, _) = sign(&[&signer("example.com", "s1", &k)], MESSAGE);
    let checker = Checker::fixture(&f);
    let checks = Checks::default();
    let p = peer("alice@example.com");
    let state = Checker::now(checker.spf(checks, p, AUTHSERV)).unwrap();
    let v = Checker::now(checker.message(checks, p, &state, &signed, AUTHSERV)).unwrap();
    assert_eq!(v.results.arc, AuthResult::None);

    // What we queue: our Authentication-Results on top, then the ARC set.
    let mut modified = v.header.clone().into_bytes();
    modified.extend_from_slice(&signed);
    let sealer = signer("relay.test", "arc", &relay_key);
    let set =
        Checker::now(checker.seal(checks, p, &state, &v, &signed, &modified, AUTHSERV, &sealer))
            .unwrap()
            .unwrap();
    assert!(set.contains("ARC-Seal: i=1; "), "{set}");
    assert!(set.contains("cv=none"), "{set}");
    assert!(set.contains("ARC-Message-Signature: i=1; "), "{set}");
    assert!(set.contains("ARC-Authentication-Results: i=1; "), "{set}");
    assert!(set.ends_with("\r\n"));
    let mut sealed = set.into_bytes();
    sealed.extend_from_slice(&modified);

    // The next hop: our set verifies.
    let next = peer("alice@example.com");
    let v2 = Checker::now(checker.message(checks, next, &state, &sealed, "mx.next.test")).unwrap();
    assert_eq!(v2.results.arc, AuthResult::Pass, "{}", v2.header);

    // Changed on the way: the chain fails.
    let mut tampered = sealed.clone();
    let at = tampered.len() - 4;
    tampered[at] = b'X';
    let v3 =
        Checker::now(checker.message(checks, next, &state, &tampered, "mx.next.test")).unwrap();
    assert_eq!(v3.results.arc, AuthResult::Fail, "{}", v3.header);

    // A second hop seals again, with cv=pass.
    let mut again = v2.header.clone().into_bytes();
    again.extend_from_slice(&sealed);
    let set2 = Checker::now(checker.seal(
        checks,
        next,
        &state,
        &v2,
        &sealed,
        &again,
        "mx.next.test",
        &sealer,
    ))
    .unwrap()
    .unwrap();
    assert!(set2.contains("i=2") && set2.contains("cv=pass"), "{set2}");
}

#[test]
fn the_cache_is_bounded_and_expired_entries_are_misses() {
    let cache = DnsCache::new(16);
    let later = Instant::now() + Duration::from_secs(3600);
    for i in 0..100u32 {
        let addr = IpAddr::V4(Ipv4Addr::from(i));
        cache.ptr.insert(addr, cache::empty_set(), later);
        assert!(cache.ptr.len() <= 16);
    }
    assert!(cache.len() <= 16);
    // The newest entry is kept.
    assert!(cache.ptr.get(&IpAddr::V4(Ipv4Addr::from(99))).is_some());

    let past = Instant::now();
    cache
        .ipv4
        .insert("old.test.".into(), cache::empty_set(), past);
    std::thread::sleep(Duration::from_millis(2));
    assert!(cache.ipv4.get("old.test.").is_none());
    // Expired entries go first when the map is full.
    let small = DnsCache::new(4);
    for i in 0..4 {
        small
            .ipv4
            .insert(format!("e{i}.test.").into(), cache::empty_set(), past);
    }
    small
        .ipv4
        .insert("fresh.test.".into(), cache::empty_set(), later);
    assert_eq!(small.ipv4.len(), 1);
    assert!(small.ipv4.get("fresh.test.").is_some());
}

#[tokio::test]
async fn a_live_check_that_takes_too_long_is_a_temperror() {
    // A nameserver that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = crate::net::dns::Resolver::with_nameserver(silent.local_addr().unwrap());
    let cache = Arc::new(DnsCache::new(100));
    let checker = Checker::live(&resolver, cache.clone(), Duration::from_millis(100));
    let checks = Checks::default();
    let p = peer("a@example.com");
    let started = Instant::now();
    let state = checker.spf(checks, p, AUTHSERV).await;
    assert_eq!(state.results.spf, AuthResult::TempError);
    assert_eq!(state.results.spf_helo, AuthResult::TempError);
    assert_eq!(state.results.spf_domain, "example.com");
    let v = checker.message(checks, p, &state, MESSAGE, AUTHSERV).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // DKIM and ARC need no DNS for a message without signatures and finish; DMARC
    // waits for its record, and iprev never starts.
    assert_eq!(v.results.dkim, AuthResult::None, "{:?}", v.results);
    assert_eq!(v.results.arc, AuthResult::None, "{:?}", v.results);
    assert_eq!(v.results.dmarc, AuthResult::TempError, "{:?}", v.results);
    assert_eq!(v.results.iprev, AuthResult::TempError, "{:?}", v.results);
    for item in [
        "spf=temperror",
        "dkim=none",
        "arc=none",
        "dmarc=temperror",
        "iprev=temperror",
    ] {
        assert!(v.header.contains(item), "{item}: {}", v.header);
    }
    assert!(v.header.ends_with("\r\n"));
    // Nothing was answered, so nothing was cached.
    assert!(cache.is_empty());
}

#[test]
fn only_the_topmost_signatures_are_verified() {
    let k = key();
    let f = example_com(&k);
    // 14 signatures by domains without keys on top of example.com's own
    let junk: Vec<Signer> = (0..14)
        .map(|i| signer(&format!("junk{i}.test"), "s", &k))
        .collect();
    let mut signers: Vec<&Signer> = junk.iter().collect();
    let own = signer("example.com", "s1", &k);
    signers.push(&own);
    let (signed, _) = sign(&signers, MESSAGE);
    let v = check(&f, "alice@example.com", &signed);
    assert_eq!(v.results.dkim_signatures.len(), engine::MAX_DKIM_SIGNATURES);
    assert!(
        v.results
            .dkim_signatures
            .iter()
            .all(|s| s.domain.starts_with("junk")),
        "the topmost ten"
    );
    assert_eq!(v.results.dkim, AuthResult::PermError);
    // SPF still aligns: DMARC passes without the 15th signature
    assert_eq!(v.results.dmarc, AuthResult::Pass);
}
