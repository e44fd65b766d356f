//! Mail authentication end to end against real peers: dnsmasq publishes the SPF, DKIM,
//! DMARC and PTR records on loopback, OpenDKIM signs what mtad checks and verifies what
//! mtad signs, python3-dkim verifies mtad's ARC seals, aiosmtpd receives.
//!
//! The zone ([`zone`]), all under `.test`:
//! - `good.test`: SPF passes for 127.0.0.1, no DMARC record; the PTRs of 127.0.0.1
//!   and 127.0.0.2 (`client.good.test`, `mail.good.test`) resolve back, 127.0.0.3's
//!   (`liar.good.test`) does not;
//! - `signed.test`: DMARC p=reject, OpenDKIM's key (selector `od1`);
//! - `reject.test`, `quarantine.test`, `none.test`: SPF fails everywhere
//!   (`v=spf1 -all`), DMARC p=reject, p=quarantine, p=none;
//! - `broken.test`: every query REFUSED (temperror).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::peers::{
    Aio, Dnsmasq, arc_verify, dkimpy_verify, opendkim_genkey, opendkim_sign, opendkim_verify,
};
use common::*;

/// The authserv-id the checks are configured with ([`BASIC`]'s hostname too).
const AUTHSERV: &str = "mx.example.test";

/// The checks, and the data-stage rules that act on DMARC.
const CHECKS: &str = r#"
authentication {
    authserv-id "mx.example.test"
    timeout "5s"
}
stage "data" {
    reject 550 "5.7.1" "Rejected by DMARC policy" dmarc="fail" dmarc-policy="reject"
    hold dmarc="fail" dmarc-policy="quarantine"
    accept
}
"#;

/// The records every test's dnsmasq serves (see the crate doc); `od1_key` is the text
/// of OpenDKIM's key for signed.test.
fn zone(od1_key: &str) -> Vec<String> {
    let mut records = vec![
        Dnsmasq::txt("good.test", "v=spf1 ip4:127.0.0.1 -all"),
        Dnsmasq::ptr(Ipv4Addr::LOCALHOST, "client.good.test"),
        "--host-record=client.good.test,127.0.0.1".to_owned(),
        Dnsmasq::ptr(Ipv4Addr::new(127, 0, 0, 2), "mail.good.test"),
        "--host-record=mail.good.test,127.0.0.2".to_owned(),
        Dnsmasq::ptr(Ipv4Addr::new(127, 0, 0, 3), "liar.good.test"),
        "--host-record=liar.good.test,127.0.0.9".to_owned(),
        Dnsmasq::txt("signed.test", "v=spf1 -all"),
        Dnsmasq::txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
        Dnsmasq::txt("od1._domainkey.signed.test", od1_key),
        Dnsmasq::refused("broken.test"),
    ];
    for policy in ["reject", "quarantine", "none"] {
        records.push(Dnsmasq::txt(&format!("{policy}.test"), "v=spf1 -all"));
        records.push(Dnsmasq::txt(
            &format!("_dmarc.{policy}.test"),
            &format!("v=DMARC1; p={policy}"),
        ));
    }
    records
}

/// Who makes a DKIM key mtad signs or seals with.
#[derive(Clone, Copy)]
enum Keygen {
    /// `mtactl dkim keygen` (its RSA key takes seconds in a debug build).
    Mtactl,
    /// `mtactl dkim keygen --algorithm ed25519`.
    MtactlEd25519,
    /// opendkim-genkey: a PKCS#8 key, which mtad reads as well.
    Opendkim,
}

/// dnsmasq with [`zone`], aiosmtpd as the next hop, and mtad relaying to it.
struct World {
    mtad: Mtad,
    dns: Dnsmasq,
    sink: Aio,
    /// OpenDKIM's private key for signed.test, selector od1.
    od1: PathBuf,
    /// The DKIM keys mtad has ((`SEL._domainkey.DOMAIN`, TXT text)), also in DNS.
    keys: Vec<(String, String)>,
    _od1_dir: tempfile::TempDir,
}

impl World {
    /// mtad on [`BASIC`] plus `config`, every message routed to the sink with
    /// `route_options` after the next hop; `keys` are the DKIM keys made in mtad's
    /// directory first (`DOMAIN.SELECTOR.key`, which `config` names), which dnsmasq
    /// publishes.
    fn start(config: &str, route_options: &str, keys: &[(Keygen, &str, &str)]) -> World {
        let od1_dir = tempfile::tempdir().unwrap();
        let (od1, od1_key) = opendkim_genkey(od1_dir.path(), "signed.test", "od1");
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|&(keygen, domain, selector)| match keygen {
                Keygen::Mtactl | Keygen::MtactlEd25519 => {
                    let algorithm = match keygen {
                        Keygen::MtactlEd25519 => "ed25519",
                        _ => "rsa",
                    };
                    let (_, name, text) = dkim_keygen(dir.path(), domain, selector, algorithm);
                    (name, text)
                }
                Keygen::Opendkim => {
                    let (key, text) = opendkim_genkey(dir.path(), domain, selector);
                    let path = dir.path().join(format!("{domain}.{selector}.key"));
                    std::fs::rename(key, path).unwrap();
                    (format!("{selector}._domainkey.{domain}"), text)
                }
            })
            .collect();
        let mut records = zone(&od1_key);
        records.extend(keys.iter().map(|(name, text)| Dnsmasq::txt(name, text)));
        let dns = Dnsmasq::start(&records.iter().map(String::as_str).collect::<Vec<_>>());
        let sink = Aio::start(&[]);
        let text = format!(
            "{BASIC}\n{config}\n\
             stage \"route\" {{\n    transport \"*\" \"smtp:[127.0.0.1]:{sink}\"{route_options}\n}}\n\
             delivery {{\n    dns-server \"{dns}\"\n    backoff-min \"1s\"\n    connect-timeout \"2s\"\n}}\n",
            sink = sink.addr.port(),
            dns = dns.addr,
        );
        let spool = dir.path().join("spool");
        let mtad = Mtad::start_in(dir, spool, &text);
        World {
            mtad,
            dns,
            sink,
            od1,
            keys,
            _od1_dir: od1_dir,
        }
    }

    /// One message from 127.0.0.1 as client.good.test, MAIL FROM `from`, to
    /// bob@dst.test: the reply to its end of data.
    fn send(&self, from: &str, message: &[u8]) -> String {
        self.send_from("127.0.0.1", "client.good.test", from, message)
    }

    /// [`World::send`] from the loopback address `source`, saying EHLO `helo`.
    fn send_from(&self, source: &str, helo: &str, from: &str, message: &[u8]) -> String {
        let mut client = Client::connect_from(source, self.mtad.port);
        client.expect("220 ");
        client.cmd(&format!("EHLO {helo}"), "250");
        client.cmd(&format!("MAIL FROM:<{from}>"), "250 ");
        client.cmd("RCPT TO:<bob@dst.test>", "250 ");
        client.cmd("DATA", "354 ");
        client.send(message);
        client.send(".\r\n");
        let reply = client.reply();
        client.cmd("QUIT", "221");
        reply
    }

    /// [`World::send`], which must be accepted.
    fn accepted(&self, from: &str, message: &[u8]) {
        let reply = self.send(from, message);
        assert!(reply.starts_with("250 "), "{reply}\n{}", self.mtad.log());
    }

    /// The `n`th message (from 1) the sink received, waiting for it.
    fn delivered(&self, n: usize) -> Vec<u8> {
        self.sink.messages(n).swap_remove(n - 1).1
    }

    /// `message` signed by OpenDKIM for signed.test.
    fn opendkim_signed(&self, message: &[u8]) -> Vec<u8> {
        opendkim_sign(message, "signed.test", "od1", &self.od1)
    }
}

/// A message from `from` (`extra` header lines, CRLF-terminated, first).
fn message(from: &str, subject: &str, extra: &str) -> Vec<u8> {
    let domain = from.rsplit('@').next().unwrap();
    let id = subject.replace(' ', ".");
    format!(
        "{extra}From: Alice <{from}>\r\nTo: Bob <bob@dst.test>\r\nSubject: {subject}\r\n\
         Date: Tue, 24 Nov 2026 00:00:00 +0000\r\nMessage-ID: <{id}@{domain}>\r\n\r\n\
         Hello Bob,\r\n\r\n  a body  with  spaces \r\n"
    )
    .into_bytes()
}

/// The header fields of `message`, unfolded: (name, value without the leading space).
fn headers(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            let (_, value) = fields.last_mut().expect("a continuation line first");
            value.push(' ');
            value.push_str(line.trim());
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

/// The values of every `name` field of `message`, top first.
fn fields(message: &[u8], name: &str) -> Vec<String> {
    headers(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The authserv-id of an Authentication-Results value (before the `;`, without a
/// version).
fn authserv_id(value: &str) -> &str {
    value
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// mtad's one Authentication-Results field in `message` (authserv-id ours).
fn ours(message: &[u8]) -> String {
    let ours: Vec<String> = fields(message, "Authentication-Results")
        .into_iter()
        .filter(|v| authserv_id(v).eq_ignore_ascii_case(AUTHSERV))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one Authentication-Results of {AUTHSERV} expected:\n{}",
        String::from_utf8_lossy(message)
    );
    ours.into_iter().next().unwrap()
}

/// What `method` says in an Authentication-Results value: `pass`, `fail`... (for
/// `spf`, of the MAIL FROM identity: an `spf=` of the HELO one, `smtp.helo=`, is
/// passed over).
fn result<'a>(results: &'a str, method: &str) -> &'a str {
    results
        .split(';')
        .skip(1)
        .filter(|r| !r.contains("smtp.helo="))
        .filter_map(|r| r.trim().strip_prefix(method)?.strip_prefix('='))
        .map(|r| r.split_whitespace().next().unwrap_or(""))
        .next()
        .unwrap_or_else(|| panic!("no {method}= in {results:?}"))
}

/// The peers themselves: OpenDKIM signs with a key of its own opendkim-genkey, dnsmasq
/// publishes the 2048-bit key (over 255 bytes: two strings of one TXT record), and
/// both OpenDKIM (asking dnsmasq on its port through unbound) and dkimpy verify;
/// a changed body fails with both.
#[test]
fn opendkim_signs_and_verifies_with_keys_from_dnsmasq() {
    let dir = tempfile::tempdir().unwrap();
    let (key, text) = opendkim_genkey(dir.path(), "signed.test", "od1");
    assert!(text.len() > 255, "{text}");
    let dns = Dnsmasq::start(&[&Dnsmasq::txt("od1._domainkey.signed.test", &text)]);
    let served = dns.query_txt("od1._domainkey.signed.test");
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0].len(), 2, "{served:?}");
    assert_eq!(served[0][0].len(), 255, "{served:?}");
    assert_eq!(served[0].concat(), text);
    let signed = opendkim_sign(
        &message("alice@signed.test", "peers", ""),
        "signed.test",
        "od1",
        &key,
    );
    let signature = &fields(&signed, "DKIM-Signature")[0];
    assert!(
        signature.contains("a=rsa-sha256") && signature.contains("d=signed.test"),
        "{signature}"
    );
    let results = opendkim_verify(&signed, dns.addr).unwrap();
    assert!(results.contains("2048-bit key"), "{results}");
    let record = [("od1._domainkey.signed.test".to_owned(), text)];
    let report = dkimpy_verify(&signed, &record).unwrap();
    assert!(report.contains("pass d=signed.test s=od1"), "{report}");

    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Hello Bob", "Hello Eve");
    let err = opendkim_verify(tampered.as_bytes(), dns.addr).unwrap_err();
    assert!(err.contains("dkim=fail"), "{err}");
    dkimpy_verify(tampered.as_bytes(), &record).unwrap_err();
}

/// What mtad DKIM-signs on its way out, RSA and Ed25519, verifies with OpenDKIM, the
/// keys (from `mtactl dkim keygen`) read from dnsmasq; dkimpy agrees.
#[test]
fn opendkim_verifies_what_mtad_signs() {
    let world = World::start(
        "dkim \"example.test\" selector=\"s1\" key=\"example.test.s1.key\"\n\
         dkim \"relay.test\" selector=\"ed1\" key=\"relay.test.ed1.key\" always=#true",
        "",
        &[
            (Keygen::Mtactl, "example.test", "s1"),
            (Keygen::MtactlEd25519, "relay.test", "ed1"),
        ],
    );
    world.accepted(
        "alice@example.test",
        &message("alice@example.test", "signed by mtad", ""),
    );
    let eml = world.delivered(1);
    let signatures = fields(&eml, "DKIM-Signature");
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    // every signature passed (opendkim_verify's Ok), the RSA key read whole
    let results = opendkim_verify(&eml, world.dns.addr)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&eml)));
    assert!(results.contains("2048-bit key"), "{results}");
    for d in ["header.d=example.test", "header.d=relay.test"] {
        assert!(results.contains(d), "{results}");
    }
    let report = dkimpy_verify(&eml, &world.keys).unwrap();
    assert!(
        report.contains("pass d=example.test s=s1 a=rsa-sha256")
            && report.contains("pass d=relay.test s=ed1 a=ed25519-sha256"),
        "{report}"
    );
}

/// Mail OpenDKIM signed for a p=reject domain, from a sender whose SPF passes (in
/// another domain: DMARC passes by the aligned DKIM signature alone), is delivered
/// with our results on it, and OpenDKIM still verifies it there.
#[test]
fn opendkim_signed_mail_passes_dkim_and_dmarc() {
    let world = World::start(CHECKS, "", &[]);
    let signed = world.opendkim_signed(&message("alice@signed.test", "signed", ""));
    world.accepted("bounces@good.test", &signed);
    let eml = world.delivered(1);
    let results = ours(&eml);
    assert_eq!(result(&results, "spf"), "pass", "{results}");
    assert_eq!(result(&results, "dkim"), "pass", "{results}");
    assert_eq!(result(&results, "dmarc"), "pass", "{results}");
    assert_eq!(result(&results, "iprev"), "pass", "{results}");
    assert_eq!(result(&results, "arc"), "none", "{results}");
    opendkim_verify(&eml, world.dns.addr).unwrap();
}

/// SPF fails and nothing is signed: DMARC fails, and the p=reject domain's mail is
/// refused at the end of DATA by the data stage's rule; nothing is queued.
#[test]
fn dmarc_fail_under_p_reject_is_refused_at_end_of_data() {
    let world = World::start(CHECKS, "", &[]);
    let reply = world.send(
        "alice@reject.test",
        &message("alice@reject.test", "spoofed", ""),
    );
    assert!(
        reply.starts_with("550 5.7.1 "),
        "{reply}\n{}",
        world.mtad.log()
    );
    assert!(world.mtad.queued().is_empty());
}

/// The same under p=quarantine: accepted and held, our results on the held message;
/// mail sent after it is delivered while it stays.
#[test]
fn dmarc_fail_under_p_quarantine_is_held() {
    let world = World::start(CHECKS, "", &[]);
    world.accepted(
        "alice@quarantine.test",
        &message("alice@quarantine.test", "quarantined", ""),
    );
    world.accepted(
        "alice@good.test",
        &message("alice@good.test", "from good", ""),
    );
    let eml = world.delivered(1);
    assert_eq!(fields(&eml, "Subject"), ["from good"]);
    // (the delivered one may still be leaving the queue)
    let held: Vec<Vec<u8>> = world
        .mtad
        .queued()
        .into_iter()
        .filter(|(m, _)| m.envelope.held)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(held.len(), 1, "{}", world.mtad.log());
    assert_eq!(fields(&held[0], "Subject"), ["quarantined"]);
    let results = ours(&held[0]);
    assert_eq!(result(&results, "spf"), "fail", "{results}");
    assert_eq!(result(&results, "dmarc"), "fail", "{results}");
}

/// The same under p=none: delivered, tagged dmarc=fail.
#[test]
fn dmarc_fail_under_p_none_is_delivered_tagged() {
    let world = World::start(CHECKS, "", &[]);
    world.accepted(
        "alice@none.test",
        &message("alice@none.test", "monitored", ""),
    );
    let results = ours(&world.delivered(1));
    assert_eq!(result(&results, "spf"), "fail", "{results}");
    assert_eq!(result(&results, "dkim"), "none", "{results}");
    assert_eq!(result(&results, "dmarc"), "fail", "{results}");
}

/// Authentication-Results fields that claim to be ours (one folded after its name,
/// in capitals, with a version) are removed from incoming mail; one of another host stays as it was.
#[test]
fn forged_authentication_results_of_ours_are_removed() {
    let world = World::start(CHECKS, "", &[]);
    let forged = "Authentication-Results: mx.example.test; dkim=pass header.d=good.test\r\n\
                  Authentication-Results: other.example; spf=pass smtp.mailfrom=good.test\r\n\
                  Authentication-Results:\r\n MX.Example.Test 1;\r\n dmarc=pass header.from=good.test\r\n";
    world.accepted(
        "bounces@good.test",
        &message("alice@good.test", "forged", forged),
    );
    let eml = world.delivered(1);
    let results = ours(&eml);
    assert_eq!(result(&results, "dkim"), "none", "{results}");
    assert_eq!(result(&results, "dmarc"), "none", "{results}");
    let all = fields(&eml, "Authentication-Results");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.contains(&"other.example; spf=pass smtp.mailfrom=good.test".to_owned()),
        "{all:?}"
    );
}

/// Mail that is not checked keeps no forged header in our name either: from a client
/// that authenticated (swaks, AUTH PLAIN) and from one in `skip-clients`, the message
/// at the next hop has no `Authentication-Results:` of mx.example.test (and none of
/// ours is added), while another host's stays.
#[test]
fn forged_authentication_results_are_removed_from_unchecked_mail_too() {
    let users = tempfile::tempdir().unwrap();
    let passwd = users.path().join("users.passwd");
    std::fs::write(&passwd, "alice:{PLAIN}alice-pw\n").unwrap();
    let lan = free_port();
    let config = format!(
        "authentication {{\n    authserv-id \"mx.example.test\"\n    skip-clients \"127.0.0.2/32\"\n    timeout \"5s\"\n}}\n\
         users \"u\" file=\"{}\"\n\
         listen \"lan\" address=\"127.0.0.1:{lan}\" auth=\"offered\" auth-plaintext=#true users=\"u\"\n",
        passwd.display()
    );
    let world = World::start(&config, "", &[]);
    let forged = "Authentication-Results: MX.example.test; dkim=pass header.d=good.test\r\n\
                  Authentication-Results: other.example; spf=pass smtp.mailfrom=good.test\r\n";
    let reply = world.send_from(
        "127.0.0.2",
        "mail.good.test",
        "bounces@good.test",
        &message("alice@good.test", "skipped client", forged),
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let out = swaks(
        lan,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "alice-pw",
            "--from",
            "alice@good.test",
            "--to",
            "bob@dst.test",
            "--add-header",
            "Authentication-Results: mx.example.test; dkim=pass header.d=good.test",
            "--add-header",
            "Authentication-Results: other.example; spf=pass smtp.mailfrom=good.test",
            "--header",
            "Subject: authenticated client",
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("235 "), "{transcript}");
    let messages = world.sink.messages(2);
    for (_, eml) in &messages {
        let all = fields(eml, "Authentication-Results");
        assert_eq!(
            all,
            ["other.example; spf=pass smtp.mailfrom=good.test"],
            "{}",
            String::from_utf8_lossy(eml)
        );
    }
    let log = world.mtad.log();
    assert_eq!(
        log.matches("forged Authentication-Results removed").count(),
        2,
        "{log}"
    );
}

/// iprev through the real resolver: the client's PTR names, then their addresses,
/// which must give the client back. The tests may only use loopback clients, and
/// hickory answers every PTR under 127.in-addr.arpa with `localhost.` and `localhost.`
/// with 127.0.0.1 itself (RFC 6761), without asking the nameserver: so 127.0.0.1
/// passes (localhost. is 127.0.0.1) and 127.0.0.3 fails (its "name" localhost. is not
/// 127.0.0.3), whatever PTR records dnsmasq holds.
#[test]
fn iprev_follows_the_client_names_back() {
    let world = World::start(CHECKS, "", &[]);
    let clients = [
        ("127.0.0.1", "mail.good.test", "pass"),
        ("127.0.0.3", "liar.good.test", "fail"),
    ];
    for (n, (source, helo, want)) in clients.into_iter().enumerate() {
        let reply = world.send_from(
            source,
            helo,
            "bounces@good.test",
            &message("alice@good.test", &format!("from {source}"), ""),
        );
        assert!(reply.starts_with("250 "), "{reply}");
        let eml = world.delivered(n + 1);
        let results = ours(&eml);
        assert_eq!(result(&results, "iprev"), want, "{source}: {results}");
    }
}

/// A DNS error on the sender's SPF record (REFUSED) is a temperror: the message is
/// accepted and says so, never refused.
#[test]
fn spf_temperror_is_accepted_and_tagged() {
    let world = World::start(CHECKS, "", &[]);
    world.accepted(
        "alice@broken.test",
        &message("alice@broken.test", "dns trouble", ""),
    );
    let results = ours(&world.delivered(1));
    assert_eq!(result(&results, "spf"), "temperror", "{results}");
}

/// A route's `arc-seal="example.net"` seals what it sends with example.net's dkim key: one
/// ARC set (i=1, cv=none) carrying our results, which dkimpy validates; the OpenDKIM
/// signature inside still verifies.
#[test]
fn a_route_arc_seals_with_its_dkim_key() {
    let config =
        format!("{CHECKS}\ndkim \"example.net\" selector=\"arc1\" key=\"example.net.arc1.key\"\n");
    let world = World::start(
        &config,
        " arc-seal=\"example.net\"",
        &[(Keygen::Opendkim, "example.net", "arc1")],
    );
    let signed = world.opendkim_signed(&message("alice@signed.test", "sealed", ""));
    world.accepted("bounces@good.test", &signed);
    let eml = world.delivered(1);

    let seal = fields(&eml, "ARC-Seal");
    let signature = fields(&eml, "ARC-Message-Signature");
    let arc_results = fields(&eml, "ARC-Authentication-Results");
    assert_eq!(
        (seal.len(), signature.len(), arc_results.len()),
        (1, 1, 1),
        "{}",
        String::from_utf8_lossy(&eml)
    );
    for field in [&seal[0], &signature[0], &arc_results[0]] {
        assert!(field.starts_with("i=1;"), "{field}");
    }
    assert!(
        seal[0].contains("cv=none") && seal[0].contains("d=example.net"),
        "{}",
        seal[0]
    );
    let sealed_results = arc_results[0].strip_prefix("i=1;").unwrap().trim();
    assert_eq!(authserv_id(sealed_results), AUTHSERV, "{sealed_results}");
    assert_eq!(result(sealed_results, "dkim"), "pass", "{sealed_results}");
    assert_eq!(result(sealed_results, "spf"), "pass", "{sealed_results}");

    let report = arc_verify(&eml, &world.keys)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&eml)));
    assert!(report.contains("i=1 d=example.net s=arc1"), "{report}");
    opendkim_verify(&eml, world.dns.addr).unwrap();
}
