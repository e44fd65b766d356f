//! One transcript, two runners: the session in memory (`mtad::smtp::transcript`, what
//! `mtactl test-policy` runs for a `session` case) and the daemon over TCP
//! (`tests/common`) give the same replies, reply text included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mtad::config::Config;
use mtad::policy::Pipeline;
use mtad::smtp::transcript::{self, Memory, Transcript};

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    tls-certificate "{dir}/cert.pem"
    tls-key "{dir}/key.pem"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "10.0.0.0/8"
domains "relay" "example.test"
limits {
    message-size 2000
}
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
"#;

/// Pipelining, a refused recipient, a message in BDAT chunks, SIZE over the limit, a
/// message too big, STARTTLS and a transaction over TLS.
const TRANSCRIPT: &str = r#"
    expect "220"
    send "EHLO client.test"
    expect "250-mx.example.test"
    send "MAIL FROM:<a@src.test>" "RCPT TO:<b@example.test>" "RCPT TO:<x@foreign.test>" "RCPT TO:<c@example.test>"
    expect "250" "250" "554" "250"
    send-bdat "Subject: one\n\n"
    expect "250"
    send-bdat "body\n" last=#true
    expect "250 2.0.0 Ok: queued as "
    send "MAIL FROM:<a@src.test> SIZE=5000"
    expect "552"
    send "MAIL FROM:<a@src.test>" "RCPT TO:<b@example.test>" "DATA"
    expect "250" "250" "354"
    send-message "Subject: big\n\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n"
    expect "552"
    starttls
    send "EHLO client.test"
    expect "250-mx.example.test"
    send "MAIL FROM:<a@src.test>" "RCPT TO:<b@example.test>" "DATA"
    expect "250" "250" "354"
    send-message "Subject: over TLS\n\n.hello\n"
    expect "250 2.0.0 Ok: queued as "
    send "QUIT"
    expect "221"
    closed
"#;

/// The replies, with queue ids (which differ between two runs) taken out.
fn replies(played: &Played) -> Vec<(String, String)> {
    played
        .replies
        .iter()
        .map(|e| {
            let text = e.reply.text();
            let text = match text.find("queued as ") {
                Some(at) => format!("{}ID", &text[..at + "queued as ".len()]),
                None => text,
            };
            (e.sent.clone(), text)
        })
        .collect()
}

#[test]
fn the_session_in_memory_and_the_daemon_give_the_same_replies() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, CONFIG);

    let live = mtad.transcript(TRANSCRIPT);

    let config = Config::load(&mtad.config).unwrap_or_else(|e| panic!("{e:?}"));
    let pipeline = Arc::new(Pipeline::build(&config).unwrap_or_else(|e| panic!("{e:?}")));
    let memory_spool = tempfile::tempdir().unwrap();
    let transcript = Transcript::parse(TRANSCRIPT).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let in_memory = runtime.block_on(async {
        let memory = Memory {
            config: &config,
            pipeline,
            listener: "mx",
            client: "127.0.0.1:40000".parse().unwrap(),
            dns: Default::default(),
            spool: transcript::open_spool(&memory_spool.path().join("spool")).unwrap(),
            timeout: Duration::from_secs(10),
            authenticated: None,
            tls: None,
            local: None,
        };
        transcript::in_memory(memory, &transcript).await.unwrap()
    });
    assert_played(&in_memory);

    assert_eq!(replies(&in_memory), replies(&live));
    assert_eq!(live.replies.len(), 20, "{:#?}", replies(&live));
    // both queued the two messages they accepted
    assert_eq!(mtad.queued().len(), 2);
}
