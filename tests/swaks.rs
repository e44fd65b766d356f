//! End to end with swaks, the client mail administrators test with.

mod common;

use common::*;

#[test]
fn swaks_delivers_into_the_spool() {
    let mtad = Mtad::start(BASIC);
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "alice@src.test",
            "--to",
            "bob@example.test,carol@sub.example.test",
            "--header",
            "Subject: swaks test",
            "--body",
            "Hello from swaks.\n.leading dot\n",
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let (m, body) = &queued[0];
    assert_eq!(m.envelope.sender, "alice@src.test");
    assert_eq!(
        m.envelope.recipients,
        ["bob@example.test", "carol@sub.example.test"]
    );
    let text = String::from_utf8_lossy(without_received(body)).into_owned();
    assert!(text.contains("Subject: swaks test\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\nHello from swaks.\r\n.leading dot\r\n"),
        "{text}"
    );
}

#[test]
fn swaks_with_pipelining_and_an_attachment() {
    let mtad = Mtad::start(BASIC);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.bin");
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let out = swaks(
        mtad.port,
        &[
            "--pipeline",
            "--from",
            "a@src.test",
            "--to",
            "b@example.test",
            "--attach",
            file.to_str().unwrap(),
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("PIPELINING"));
    let (m, _) = &mtad.queued()[0];
    assert!(m.size > 50_000);
}

#[test]
fn swaks_sees_relay_access_denied() {
    let mtad = Mtad::start(STRICT);
    let out = swaks(
        mtad.port,
        &["--from", "a@src.test", "--to", "x@foreign.test"],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        transcript.contains("554 5.7.1 <x@foreign.test>: Relay access denied"),
        "{transcript}"
    );
    assert!(mtad.queued().is_empty());
}

/// A hook policy, exercised by swaks: the data hook's header change is in the queued
/// message, and a refusal reaches swaks as the script's reply.
#[test]
fn swaks_through_rhai_hooks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.rhai"),
        "fn data(ctx) {\n    if ctx.header(\"Subject\").contains(\"casino\") { return reject(554, \"5.7.0\", \"no gambling\"); }\n    ctx.add_header(\"X-Policy\", \"checked\");\n    next()\n}\n",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let config = format!("{BASIC}\nstage \"data\" {{\n    hook \"data.rhai\"\n}}\n");
    let mtad = Mtad::start_in(dir, spool, &config);
    let ok = swaks(
        mtad.port,
        &[
            "--from",
            "a@src.test",
            "--to",
            "b@example.test",
            "--header",
            "Subject: hello",
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let refused = swaks(
        mtad.port,
        &[
            "--from",
            "a@src.test",
            "--to",
            "b@example.test",
            "--header",
            "Subject: casino night",
        ],
    );
    let transcript = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success());
    assert!(transcript.contains("554 5.7.0 no gambling"), "{transcript}");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let text = String::from_utf8_lossy(&queued[0].1);
    assert!(text.contains("\r\nX-Policy: checked\r\n"), "{text}");
}
