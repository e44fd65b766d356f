//! DKIM signing end to end: keys from `mtactl dkim keygen`, mtad relaying to
//! smtp-sink, and each dump verified by python3-dkim (dkimpy, Debian's independent
//! verifier) with the TXT records keygen printed (tests/peers/dkimpy_verify.py).

mod common;

use std::path::Path;

use common::peers::Sink;
use common::*;

const CONFIG: &str = r#"
server {
    hostname "relay.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
{data}
stage "route" {
    transport "*" "smtp:[127.0.0.1]:{sink}"
}
delivery {
    backoff-min "1s"
    connect-timeout "2s"
}
{dkim}
"#;

/// `mtactl dkim keygen` into `dir`: returns the record's owner name and its text
/// (the quoted 255-byte strings joined again).
fn keygen(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> (String, String) {
    let (stdout, name, text) = dkim_keygen(dir, domain, selector, algorithm);
    let key = dir.join(format!("{domain}.{selector}.key"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    assert!(
        stdout.contains(&format!(
            "dkim \"{domain}\" selector=\"{selector}\" key=\"{}\"",
            key.display()
        )),
        "{stdout}"
    );
    let line = stdout.lines().find(|l| l.contains(" IN TXT ")).unwrap();
    let strings = line.split_once(" IN TXT ").unwrap().1;
    assert!(
        strings
            .split("\" \"")
            .all(|s| s.trim_matches('"').len() <= 255),
        "{line}"
    );
    assert!(
        text.starts_with(&format!("v=DKIM1; k={algorithm}; p=")),
        "{text}"
    );
    (name, text)
}

/// Verifies every signature of `dump` with dkimpy: its report, and whether all passed.
fn dkimpy(dump: &str, records: &[(String, String)]) -> (bool, String) {
    match common::peers::dkimpy_verify(dump.as_bytes(), records) {
        Ok(report) => (true, report),
        Err(report) => (false, report),
    }
}

/// `mtactl test-policy` for alice@example.com → bob@dst.test: its report.
fn test_policy(mtad: &Mtad) -> String {
    let out = mtad.mtactl(&[
        "test-policy",
        "--from",
        "alice@example.com",
        "--rcpt",
        "bob@dst.test",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start(sink: &Sink, data: &str, dkim: &str, dir: tempfile::TempDir) -> Mtad {
    let spool = dir.path().join("spool");
    let config = CONFIG
        .replace("{sink}", &sink.port().to_string())
        .replace("{data}", data)
        .replace("{dkim}", dkim);
    Mtad::start_in(dir, spool, &config)
}

fn send(mtad: &Mtad, from: &str, subject: &str) {
    let out = swaks(
        mtad.port,
        &[
            "--from",
            from,
            "--to",
            "bob@dst.test",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "signed body\n\n  with  spaces \n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rsa_and_ed25519_signatures_of_the_domain_and_the_relay_verify_with_dkimpy() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "example.com", "s2026", "rsa");
    let ed = keygen(dir.path(), "relay.example.net", "ed1", "ed25519");
    let sink = Sink::start(&[]);
    let dkim = "dkim \"example.com\" selector=\"s2026\" key=\"example.com.s2026.key\"\n\
         dkim \"relay.example.net\" selector=\"ed1\" key=\"relay.example.net.ed1.key\" always=#true\n";
    let mtad = start(&sink, "", dkim, dir);
    send(&mtad, "alice@example.com", "two signatures");
    let dumps = sink.dumps(1);
    let (ok, report) = dkimpy(&dumps[0], &[rsa.clone(), ed.clone()]);
    assert!(ok, "{report}\n{}", dumps[0]);
    assert!(
        report.contains("pass d=example.com s=s2026 a=rsa-sha256"),
        "{report}"
    );
    assert!(
        report.contains("pass d=relay.example.net s=ed1 a=ed25519-sha256"),
        "{report}"
    );
    // mtactl test-policy says which signatures a message would get
    let text = test_policy(&mtad);
    assert!(
        text.contains(
            "dkim: d=example.com s=s2026 rsa-sha256, d=relay.example.net s=ed1 ed25519-sha256\n"
        ),
        "{text}"
    );
    let log = mtad.wait_log("DKIM-Signature added", 2, std::time::Duration::from_secs(5));
    assert!(log.contains("d=example.com s=s2026 a=rsa-sha256"), "{log}");

    // a subdomain is signed by its parent's node; a foreign sender only by the relay
    send(&mtad, "bob@lists.example.com", "parent domain");
    send(&mtad, "carol@elsewhere.test", "foreign");
    let dumps = sink.dumps(3);
    let sub = dumps
        .iter()
        .find(|d| d.contains("Subject: parent domain"))
        .unwrap();
    let (ok, report) = dkimpy(sub, &[rsa.clone(), ed.clone()]);
    assert!(
        ok && report.contains("d=example.com") && report.contains("d=relay.example.net"),
        "{report}"
    );
    let foreign = dumps
        .iter()
        .find(|d| d.contains("Subject: foreign"))
        .unwrap();
    let (ok, report) = dkimpy(foreign, &[rsa, ed]);
    assert!(
        ok && !report.contains("d=example.com") && report.contains("d=relay.example.net"),
        "{report}"
    );

    // a wrong key in DNS fails: the verifier is really checking
    let (_, other) = keygen(
        tempfile::tempdir().unwrap().path(),
        "example.com",
        "s2026",
        "rsa",
    );
    let (ok, report) = dkimpy(&dumps[0], &[("s2026._domainkey.example.com".into(), other)]);
    assert!(!ok, "{report}");
}

#[test]
fn header_checks_edits_come_before_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "example.com", "s1", "rsa");
    let sink = Sink::start(&[]);
    let data = "stage \"data\" {\n    header-checks {\n        \"/^Subject:/\" \"REPLACE Subject: rewritten by header-checks\"\n        \"/^From:/\" \"PREPEND X-Checked: yes\"\n    }\n}\n";
    let dkim = "dkim \"example.com\" selector=\"s1\" key=\"example.com.s1.key\" headers=\"From:To:Subject:Date:X-Checked\"";
    let mtad = start(&sink, data, dkim, dir);
    let mut client = mtad.session();
    client.cmd("EHLO client.test", "250");
    client.send_message(
        "alice@example.com",
        &["bob@dst.test"],
        "From: Alice <alice@example.com>\r\nTo: bob@dst.test\r\nSubject: original\r\n\r\nbody  with  spaces \r\n\r\n\r\n",
    );
    let dumps = sink.dumps(1);
    assert!(
        dumps[0].contains("Subject: rewritten by header-checks\n"),
        "{}",
        dumps[0]
    );
    let (ok, report) = dkimpy(&dumps[0], &[rsa]);
    assert!(ok, "{report}\n{}", dumps[0]);
    assert!(
        report.contains("pass d=example.com s=s1 a=rsa-sha256"),
        "{report}"
    );
    assert!(dumps[0].contains("X-Checked: yes\n"), "{}", dumps[0]);
}

/// Mail on its way to a content filter is not signed (the filter changes it); it is
/// signed once, after it comes back, on its way out.
#[test]
fn mail_is_signed_after_its_content_filter_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let ed = keygen(dir.path(), "example.com", "ed", "ed25519");
    let sink = Sink::start(&[]);
    let (reinject, filter_port) = (free_port(), free_port());
    let config = CONFIG
        .replace(
            "listen \"mx\" address=\"127.0.0.1:{port}\"",
            &format!(
                "listen \"mx\" address=\"127.0.0.1:{{port}}\" content-filter=\"scan\"\n\
                 listen \"reinject\" address=\"127.0.0.1:{reinject}\" filtered=#true\n\
                 content-filter \"scan\" \"smtp:[127.0.0.1]:{filter_port}\""
            ),
        )
        .replace("{sink}", &sink.port().to_string())
        .replace("{data}", "")
        .replace(
            "{dkim}",
            "dkim \"example.com\" selector=\"ed\" key=\"example.com.ed.key\"",
        );
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    let filter = common::peers::FilterPeer::start(filter_port, reinject, &[]);
    send(&mtad, "alice@example.com", "filtered");
    let dump = &sink.dumps_within(1, std::time::Duration::from_secs(15))[0];
    assert!(dump.contains("Subject: [filtered] filtered"), "{dump}");
    let (_, eml) = &filter.messages(1)[0];
    let eml = String::from_utf8_lossy(eml);
    assert!(
        !eml.contains("DKIM-Signature"),
        "signed before the filter: {eml}"
    );
    assert_eq!(dump.matches("DKIM-Signature:").count(), 1, "{dump}");
    let (ok, report) = dkimpy(dump, &[ed]);
    assert!(ok, "{report}\n{dump}");
}

/// A route's `dkim="DOMAIN"` picks the signer for its mail, whatever the From domain.
#[test]
fn a_route_chooses_its_signer() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "example.org", "r1", "rsa");
    let sink = Sink::start(&[]);
    let mtad = start(
        &sink,
        "",
        "dkim \"example.org\" selector=\"r1\" key=\"example.org.r1.key\"",
        dir,
    );
    // without the route option, mail from example.com has no signer
    send(&mtad, "alice@example.com", "unsigned");
    assert!(
        !sink.dumps(1)[0].contains("DKIM-Signature"),
        "{}",
        sink.dumps(1)[0]
    );
    let hop = format!("\"smtp:[127.0.0.1]:{}\"", sink.port());
    let config = std::fs::read_to_string(&mtad.config)
        .unwrap()
        .replace(&hop, &format!("{hop} dkim=\"example.org\""));
    std::fs::write(&mtad.config, config).unwrap();
    let out = mtad.mtactl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = test_policy(&mtad);
    assert!(
        text.contains("dkim: d=example.org s=r1 rsa-sha256\n"),
        "{text}"
    );
    send(&mtad, "alice@example.com", "signed by the route");
    let dumps = sink.dumps(2);
    let dump = dumps
        .iter()
        .find(|d| d.contains("Subject: signed by the route"))
        .unwrap();
    let (ok, report) = dkimpy(dump, &[rsa]);
    assert!(
        ok && report.contains("pass d=example.org s=r1"),
        "{report}\n{dump}"
    );
}

/// Mail from outside that we only forward (a `virtual` alias to another domain) is
/// not signed with our key, whatever its From says: else anyone could have a forged
/// `From: ceo@example.com` signed by us and pass DMARC. The same message from a
/// `dkim-internal` client is signed (dkimpy verifies it); a route can opt in with
/// `dkim-sign="always"`. mtactl test-policy gives the reason.
#[test]
fn forwarded_mail_from_outside_is_not_signed_mail_from_inside_is() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "example.com", "s2026", "rsa");
    std::fs::write(
        dir.path().join("virtual"),
        "fwd@example.com bob@dst.test\nsigned@example.com carol@always.test\n",
    )
    .unwrap();
    let sink = Sink::start(&[]);
    let config = format!(
        r#"
server {{
    hostname "relay.example.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
networks "inside" "127.0.0.1/32"
domains "ours" "example.com"
dkim-internal "inside"
virtual file="{{dir}}/virtual"
stage "rcpt" {{
    accept client="inside"
    accept rcpt-domain="ours"
}}
stage "route" {{
    transport "always.test" "smtp:[127.0.0.1]:{sink}" dkim-sign="always"
    transport "*" "smtp:[127.0.0.1]:{sink}"
}}
delivery {{
    backoff-min "1s"
    connect-timeout "2s"
}}
dkim "example.com" selector="s2026" key="example.com.s2026.key"
"#,
        sink = sink.port()
    );
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    let from_outside = |rcpt: &str, subject: &str| {
        let out = swaks(
            mtad.port,
            &[
                "--local-interface",
                "127.0.0.9",
                "--from",
                "ceo@example.com",
                "--to",
                rcpt,
                "--header",
                &format!("Subject: {subject}"),
                "--body",
                "forged\n",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    from_outside("fwd@example.com", "from outside");
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients_of(&dumps[0]), ["bob@dst.test"]);
    assert!(
        !dumps[0].contains("DKIM-Signature:"),
        "mail from outside left signed: {}",
        dumps[0]
    );
    // from inside, the same forwarding: signed, and the signature verifies
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "ceo@example.com",
            "--to",
            "fwd@example.com",
            "--header",
            "Subject: from inside",
            "--body",
            "ours\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dumps = sink.dumps(2);
    let inside = dumps
        .iter()
        .find(|d| d.contains("Subject: from inside"))
        .unwrap();
    let (ok, report) = dkimpy(inside, std::slice::from_ref(&rsa));
    assert!(
        ok && report.contains("pass d=example.com s=s2026"),
        "{report}\n{inside}"
    );
    // a route with dkim-sign="always" signs mail from outside too
    from_outside("signed@example.com", "always signed");
    let dumps = sink.dumps(3);
    let always = dumps
        .iter()
        .find(|d| d.contains("Subject: always signed"))
        .unwrap();
    let (ok, report) = dkimpy(always, &[rsa]);
    assert!(ok && report.contains("pass d=example.com"), "{report}");

    // the dry run says the same, and why
    let policy = |client: &str| {
        let out = mtad.mtactl(&[
            "test-policy",
            "--client",
            client,
            "--from",
            "ceo@example.com",
            "--rcpt",
            "fwd@example.com",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = policy("127.0.0.9");
    assert!(
        text.contains("dkim: not signed: not mail from us\n")
            && text.contains("dkim-origin: external client 127.0.0.9 (not in dkim-internal)\n")
            && !text.contains("dkim: d="),
        "{text}"
    );
    let text = policy("127.0.0.1");
    assert!(
        text.contains("dkim: d=example.com s=s2026 rsa-sha256\n")
            && text.contains("dkim-origin: ours: internal client 127.0.0.1 (dkim-internal)\n"),
        "{text}"
    );
}

fn dump_recipients_of(dump: &str) -> Vec<String> {
    common::peers::dump_recipients(dump)
}
