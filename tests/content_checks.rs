//! header-checks and body-checks end to end: the real daemon, swaks as the client,
//! and the spool read back.

mod common;

use common::*;
use std::time::Duration;

const HEADER_CHECKS: &str = r##"
# seed 002: hide the internal path
/^Received:/ IGNORE
/^Subject:.*viagra/ REJECT 5.7.1 no thanks
/^Subject:.*plain reject/ REJECT
/^X-Mailer:/ REPLACE X-Mailer: hidden
/^X-Internal:/ STRIP internal header
/^X-Redirect: yes/ REDIRECT trap@example.test
/^X-Bcc: yes/ BCC audit@example.test
/^X-Hold: yes/ HOLD look at this
/^From:/ PREPEND X-Checked: yes
/^Content-(Type|Disposition):.*name="?.*\.(exe|scr|bat)"?/ REJECT 5.7.1 executable attachments are refused
"##;

const BODY_CHECKS: &str = "\
/^discard me$/ DISCARD
/^secret: / REPLACE secret: [removed]
/cheap watches/ REJECT 5.7.1 forbidden phrase
";

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "data" {
    header-checks file="header_checks"
    body-checks file="body_checks"
}
"#;

fn start() -> Mtad {
    start_with(CONFIG)
}

fn start_with(config: &str) -> Mtad {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("header_checks"), HEADER_CHECKS).unwrap();
    std::fs::write(dir.path().join("body_checks"), BODY_CHECKS).unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, config)
}

fn send(mtad: &Mtad, headers: &[&str], body: &str) -> String {
    let mut args = vec![
        "--from",
        "alice@src.test",
        "--to",
        "bob@example.test",
        "--body",
        body,
    ];
    for h in headers {
        args.extend(["--header", h]);
    }
    let out = swaks(mtad.port, &args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rejects_a_bad_subject_with_the_table_text() {
    let mtad = start();
    let t = send(&mtad, &["Subject: buy viagra now"], "hi");
    assert!(t.contains("<** 550 5.7.1 no thanks"), "{t}");
    let t = send(&mtad, &["Subject: a plain reject"], "hi");
    assert!(t.contains("<** 550 5.7.1 Message content rejected"), "{t}");
    assert!(mtad.queued().is_empty());
}

#[test]
fn a_good_message_is_queued_edited_exactly() {
    let mtad = start();
    let t = send(
        &mtad,
        &[
            "Subject: hello",
            "X-Mailer: spamtool 1.0",
            "X-Internal: 10.0.0.1",
            "Received: from inner.example.test by gw.example.test",
        ],
        "line one\nsecret: hunter2\nthe end",
    );
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let (m, body) = &queued[0];
    assert_eq!(m.envelope.recipients, ["bob@example.test"]);
    assert!(!m.envelope.held);
    let text = String::from_utf8_lossy(body).into_owned();
    // mtad's own Received: and the client's are both gone
    assert!(!text.to_ascii_lowercase().contains("received:"), "{text}");
    assert!(!text.contains("X-Internal"), "{text}");
    assert!(text.contains("\r\nX-Mailer: hidden\r\n"), "{text}");
    assert!(!text.contains("spamtool"), "{text}");
    assert!(text.contains("X-Checked: yes\r\nFrom: "), "{text}");
    assert!(text.contains("Subject: hello\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\nline one\r\nsecret: [removed]\r\nthe end\r\n"),
        "{text:?}"
    );
}

#[test]
fn redirect_bcc_hold_and_discard() {
    let mtad = start();
    let t = send(&mtad, &["X-Bcc: yes"], "one");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    let t = send(&mtad, &["X-Redirect: yes", "X-Bcc: yes"], "two");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    let t = send(&mtad, &["X-Hold: yes"], "three");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    // discarded: the client is told it is queued, nothing is
    let t = send(&mtad, &[], "discard me");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    let mut queued = mtad.queued();
    queued.sort_by_key(|(m, _)| m.arrival_ms);
    assert_eq!(queued.len(), 3);
    let body = |i: usize| String::from_utf8_lossy(&queued[i].1).into_owned();
    assert!(body(0).contains("\r\n\r\none\r\n"), "{}", body(0));
    assert_eq!(
        queued[0].0.envelope.recipients,
        ["bob@example.test", "audit@example.test"]
    );
    assert_eq!(queued[0].0.rcpt_status.len(), 2);
    assert_eq!(queued[1].0.envelope.recipients, ["trap@example.test"]);
    assert!(!queued[1].0.envelope.held);
    assert!(queued[2].0.envelope.held);
    assert_eq!(queued[2].0.envelope.recipients, ["bob@example.test"]);
    assert!(mtad.log().contains("look at this"), "{}", mtad.log());
}

/// swaks with an `application/octet-stream` attachment named `name`.
fn send_attachment(mtad: &Mtad, name: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"MZ\x90\x00 not really a program").unwrap();
    let attach = format!("@{}", file.path().display());
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "alice@src.test",
            "--to",
            "bob@example.test",
            "--header",
            "Subject: the file",
            "--body",
            "see attached",
            "--attach-type",
            "application/octet-stream",
            "--attach-name",
            name,
            "--attach",
            &attach,
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A hand-built message, sent as DATA.
fn send_data(mtad: &Mtad, message: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let data = format!("@{}", file.path().display());
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "alice@src.test",
            "--to",
            "bob@example.test",
            "--data",
            &data,
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn executable_attachment_rejected_by_header_checks_mime_class() {
    let mtad = start();
    let t = send_attachment(&mtad, "evil.exe");
    assert!(
        t.contains("<** 550 5.7.1 executable attachments are refused"),
        "{t}"
    );
    // the same message with a harmless attachment goes through
    let t = send_attachment(&mtad, "report.pdf");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn executable_attachment_rejected_by_mime_header_checks() {
    // header-checks would refuse every multipart message, but a dedicated
    // mime-header-checks rule takes the MIME headers away from it
    let config = CONFIG.replace(
        "    body-checks file=\"body_checks\"\n",
        "    mime-header-checks {\n        \"/^Content-Disposition:.*filename=\\\"?.*\\\\.(exe|scr|bat)\\\"?/\" \"REJECT 5.7.1 no programs here\"\n    }\n    header-checks {\n        \"/^Content-Type: multipart/\" \"REJECT 5.7.1 header-checks saw a MIME header\"\n    }\n",
    );
    let mtad = start_with(&config);
    let t = send_attachment(&mtad, "evil.scr");
    assert!(t.contains("<** 550 5.7.1 no programs here"), "{t}");
    let t = send_attachment(&mtad, "fine.txt");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
}

const MULTIPART: &str = "From: alice@src.test\r\nTo: bob@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=-b1\"\r\n\r\nThis is a MIME message.\r\n--=-b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello Bob, caf=C3=A9 at noon?\r\n--=-b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--=-b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKY2hlYXAgd2F0Y2hlcwo=\r\n--=-b1--\r\n";

#[test]
fn base64_text_part_with_a_forbidden_phrase_is_rejected_by_body_checks() {
    use base64::Engine;
    let mtad = start();
    let b64 = base64::engine::general_purpose::STANDARD.encode("Hi,\nbuy cheap watches here\n");
    let t = send_data(&mtad, &MULTIPART.replace("{b64}", &b64));
    assert!(t.contains("<** 550 5.7.1 forbidden phrase"), "{t}");
    assert!(mtad.queued().is_empty());
}

#[test]
fn a_clean_multipart_message_is_queued_intact() {
    use base64::Engine;
    let mtad = start();
    // the PDF's base64 decodes to the forbidden phrase: attachments are not body
    // lines, so it passes
    let b64 = base64::engine::general_purpose::STANDARD.encode("Hi,\nsee the report\n");
    let message = MULTIPART.replace("{b64}", &b64);
    // swaks ends the data with its own CRLF
    let t = send_data(&mtad, message.strip_suffix("\r\n").unwrap());
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    // header-checks IGNORE mtad's own Received: and PREPEND before From:; the rest,
    // every part, is byte for byte as sent
    assert_eq!(
        String::from_utf8_lossy(&queued[0].1),
        format!("X-Checked: yes\r\n{message}")
    );
}

/// docs/hooks.md's `ctx.parts()` example, in the daemon: swaks's attachment is seen by
/// name, a decoded base64 text part by its text.
#[test]
fn a_data_hook_reads_the_mime_parts() {
    let hooks =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hooks.md")).unwrap();
    let at = hooks
        .find("fn data(ctx) {\n    for part in ctx.parts()")
        .unwrap();
    let script = &hooks[at..at + hooks[at..].find("```").unwrap()];
    let config = CONFIG.replace(
        "    header-checks file=\"header_checks\"\n    body-checks file=\"body_checks\"\n",
        "    hook \"parts.rhai\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("parts.rhai"), script).unwrap();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    let t = send_attachment(&mtad, "Evil.EXE");
    assert!(
        t.contains("<** 550 5.7.1 executable attachments are refused: Evil.EXE"),
        "{t}"
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("buy cheap watches here\n");
    let t = send_data(&mtad, &MULTIPART.replace("{b64}", &b64));
    assert!(t.contains("<** 550 5.7.1 no thanks"), "{t}");
    let t = send_attachment(&mtad, "report.pdf");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(mtad.queued().len(), 1);
}

/// One `X-Mailer : Evil` line (white space before the colon, RFC 5322 §4.5.3) is a
/// header to Postfix; it used to end mtad's header block, and the attachment behind
/// it passed the usual attachment-name REJECT.
const SMUGGLER: &str = "From: alice@src.test\r\nTo: bob@example.test\r\nSubject: invoice\r\nX-Mailer : Evil\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=-b1\"\r\n\r\n--=-b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--=-b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition : attachment; filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--=-b1--";

const MIME_CHECKS_CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
// the header section's own limit (100K by default) raised, so that the memory test
// below reaches policy evaluation
limits {
    header-size "10M"
}
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "data" {
    header-checks file="subject_checks"
    mime-header-checks file="mime_header_checks"
}
"#;

fn start_mime_checks() -> Mtad {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mime_header_checks"),
        "/^Content-(Disposition|Type).*name\\s*=\\s*\"?.*\\.exe/ REJECT 5.7.1 no programs\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("subject_checks"),
        "/テスト/ REJECT 5.7.1 no tests here\n/^X-Mailer: Evil$/ WARN evil mailer\n",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, MIME_CHECKS_CONFIG)
}

#[test]
fn an_attachment_behind_an_obsolete_header_is_still_checked() {
    let mtad = start_mime_checks();
    let t = send_data(&mtad, SMUGGLER);
    assert!(t.contains("<** 550 5.7.1 no programs"), "{t}");
    // the X-Mailer header was seen as Postfix shows it, without the space
    assert!(mtad.log().contains("evil mailer"), "{}", mtad.log());
    // the same message with a harmless name goes through
    let t = send_data(&mtad, &SMUGGLER.replace("evil.exe", "invoice.pdf"));
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(mtad.queued().len(), 1);
}

/// An attachment placed after 150 harmless parts (past the 100 parts mtad inspects)
/// does not pass unseen: the message is refused whole, with swaks as the client.
#[test]
fn an_attachment_past_the_part_cap_is_not_waved_through() {
    let mtad = start_mime_checks();
    let mut msg = String::from(
        "From: alice@src.test\r\nTo: bob@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=-b1\"\r\n\r\n",
    );
    for i in 0..150 {
        msg.push_str(&format!(
            "--=-b1\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    let tail = "--=-b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"evil.exe\"\r\n\r\nTVqQAAMAAAAEAAAA\r\n--=-b1--";
    let t = send_data(&mtad, &(msg + tail));
    assert!(
        t.contains("<** 554 5.6.0 Message content rejected: too many MIME parts to inspect"),
        "{t}"
    );
    assert!(mtad.queued().is_empty());
}

#[test]
fn a_japanese_subject_is_rejected_by_a_japanese_pattern() {
    let mtad = start_mime_checks();
    let t = send(&mtad, &["Subject: これはテストです"], "hi");
    assert!(t.contains("<** 550 5.7.1 no tests here"), "{t}");
    let t = send(&mtad, &["Subject: これは本番です"], "hi");
    assert!(t.contains("250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(mtad.queued().len(), 1);
}

/// A 9 MB message of 2.25 million empty headers (`a:`), through header checks: the
/// daemon's memory grows by a small multiple of the message, not by ~80 bytes per
/// header (it grew by ~180 MB before headers were held as offsets).
#[test]
fn millions_of_tiny_headers_cost_a_small_multiple_of_the_message() {
    let mtad = start_mime_checks();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    // a warm-up message, so that the baseline includes what any message costs
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("Subject: warm-up\r\n\r\nbody\r\n.\r\n");
    s.expect("250 2.0.0");
    let before = rss_kib(mtad.pid(), "VmHWM:");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    let headers = "a:\r\n".repeat(2_250_000);
    s.send(&headers);
    s.send("\r\nbody\r\n.\r\n");
    // 2.25 million headers through the checks take seconds in a debug build, more on a
    // busy machine: what is measured here is memory, not time
    let reply = s.reply_within(Duration::from_secs(120));
    let peak = rss_kib(mtad.pid(), "VmHWM:");
    let grown = peak.saturating_sub(before);
    eprintln!("9 MB of tiny headers: peak RSS grew by {grown} KiB ({reply})");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    // the message itself is 8.6 MiB; its headers' text and offsets ~22 MiB
    assert!(grown < 60 * 1024, "peak RSS grew by {grown} KiB");
}
