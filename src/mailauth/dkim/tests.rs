use std::sync::Arc;

use super::*;

fn signer(domain: &str, always: bool, key: &Arc<Key>) -> Signer {
    Signer {
        domain: domain.to_owned(),
        selector: "s1".to_owned(),
        headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        always,
        key: key.clone(),
    }
}

#[test]
fn stray_cr_and_lf_become_crlf_and_the_last_line_is_ended() {
    assert_eq!(normalize(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
    assert_eq!(normalize(b"a\r"), b"a\r\n");
    assert_eq!(normalize(b""), b"");
}

#[test]
fn the_closest_domain_signs_and_every_always_signer_too() {
    let (_, key) = generate(Algorithm::Ed25519, 0).unwrap();
    let key = Arc::new(key);
    let all = vec![
        signer("example.com", false, &key),
        signer("sub.example.com", false, &key),
        signer("relay.example.net", true, &key),
    ];
    let names = |d: &str| -> Vec<String> {
        signers_for(&all, d, None)
            .iter()
            .map(|s| s.domain.clone())
            .collect()
    };
    assert_eq!(names("example.com"), ["example.com", "relay.example.net"]);
    assert_eq!(
        names("a.sub.example.com"),
        ["sub.example.com", "relay.example.net"]
    );
    assert_eq!(names("notexample.com"), ["relay.example.net"]);
    let by_route: Vec<&str> = signers_for(&all, "other.test", Some("sub.example.com"))
        .iter()
        .map(|s| s.domain.as_str())
        .collect();
    assert_eq!(by_route, ["sub.example.com", "relay.example.net"]);
}

#[test]
fn from_domain_reads_the_from_header() {
    let msg = b"From: \"A\" <a@Example.COM>\r\nTo: b@x.test\r\n\r\nhi\r\n";
    assert_eq!(from_domain(msg).as_deref(), Some("example.com"));
    assert_eq!(from_domain(b"To: b@x.test\r\n\r\nhi\r\n"), None);
}

#[test]
fn signatures_go_on_top_of_the_normalized_message() {
    let (pem, key) = generate(Algorithm::Ed25519, 0).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(Key::from_pem(pem.as_bytes()).unwrap(), key);
    let key = Arc::new(key);
    let (a, b) = (
        signer("example.com", false, &key),
        signer("relay.test", true, &key),
    );
    let (out, by) = sign(&[&a, &b], b"From: a@example.com\nSubject: x\n\nbody\n");
    assert_eq!(by.len(), 2);
    let text = String::from_utf8(out).unwrap();
    let first = text.find("d=example.com").unwrap();
    let second = text.find("d=relay.test").unwrap();
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    assert!(first < second);
    assert!(text.contains("a=ed25519-sha256"));
    assert!(text.contains("c=relaxed/relaxed"));
    assert!(text.ends_with("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"));
}

#[test]
fn rsa_keys_give_an_spki_record_split_for_the_zone_file() {
    let (pem, key) = generate(Algorithm::Rsa, 2048).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert_eq!(key.algorithm(), Algorithm::Rsa);
    let record = key.dns_record();
    // base64 of the SPKI header of a 2048-bit key
    assert!(
        record.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
        "{record}"
    );
    let split = txt_strings(&record);
    assert!(
        split
            .split("\" \"")
            .all(|s| s.trim_matches('"').len() <= 255)
    );
    assert_eq!(split.replace("\" \"", "").trim_matches('"'), record);
}

#[test]
fn an_ec_or_garbage_key_is_refused_with_a_reason() {
    assert!(Key::from_pem(b"hello").unwrap_err().contains("PEM"));
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIm2h5Yw0pUdNoqbY3+7xNsdAKiLBy1phQ4hAQ8b6oZPoAoGCCqGSM49\nAwEHoUQDQgAE8Zr8Mj6rGJ1nqiI7NMwFsJnB3bz8lKzS4eQbOMPYZ4VrXgRQ0zzs\nW0tg5iEX2Db5Cw6s3gCLNPnS0E5hsHbBjQ==\n-----END EC PRIVATE KEY-----\n";
    assert!(Key::from_pem(ec.as_bytes()).unwrap_err().contains("EC"));
}
