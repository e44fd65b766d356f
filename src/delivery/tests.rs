//! Transcripts against a scripted server over an in-memory stream, for the paths real
//! servers rarely take (tests/delivery_client.rs runs the client against real ones).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;

fn config(lmtp: bool) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        lmtp,
        ..ClientConfig::new("client.test")
    }
}

fn addr() -> SocketAddr {
    "127.0.0.1:25".parse().unwrap()
}

/// Plays `script` as the server: for each `(expect, reply)`, reads one line that must
/// start with `expect` (none when empty), then writes `reply`. Returns every line read,
/// line endings included, up to the client's close.
fn server(
    script: &'static [(&'static str, &'static str)],
) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        let mut seen = Vec::new();
        for (expect, reply) in script {
            if !expect.is_empty() {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                assert!(
                    line.starts_with(expect),
                    "expected {expect:?}, got {line:?}"
                );
                seen.push(line);
            }
            w.write_all(reply.as_bytes()).await.unwrap();
        }
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return seen;
            }
            seen.push(line);
        }
    });
    (client, task)
}

fn envelope(rcpts: &[String]) -> Envelope<'_> {
    Envelope {
        sender: "s@test",
        recipients: rcpts,
        body_8bit: false,
        smtputf8: false,
        size: 10,
        xforward: &[],
    }
}

#[tokio::test]
async fn pipelined_354_without_recipients_gets_no_body_and_then_rset() {
    let (stream, server) = server(&[
        ("", "220 fake ESMTP\r\n"),
        (
            "EHLO client.test",
            "250-fake\r\n250-PIPELINING\r\n250 SIZE 0\r\n",
        ),
        ("MAIL FROM:<s@test> SIZE=10", "250 ok\r\n"),
        ("RCPT TO:<a@test>", "550 5.1.1 no\r\n"),
        ("DATA", "354 go ahead anyway\r\n"),
        (".\r\n", "554 5.5.1 no valid recipients\r\n"),
        ("RSET", "250 ok\r\n"),
        ("MAIL", "250 ok\r\n"),
        ("RCPT TO:<b@test>", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        ("body\r\n", ""),
        (".\r\n", "250 2.0.0 queued\r\n"),
        ("QUIT", "221 bye\r\n"),
    ]);
    let mut conn = SmtpConnection::greet(stream, addr(), &config(false))
        .await
        .unwrap();
    assert_eq!(conn.greeting(), "fake ESMTP");
    let a = vec!["a@test".to_string()];
    let out = conn.send_transaction(&envelope(&a), b"body").await.unwrap();
    assert!(matches!(&out[..], [RcptOutcome::PermFail(r)] if r.code == 550));
    let b = vec!["b@test".to_string()];
    let out = conn.send_transaction(&envelope(&b), b"body").await.unwrap();
    assert!(matches!(&out[..], [RcptOutcome::Delivered(r)] if r.to_string() == "250 2.0.0 queued"));
    conn.quit().await;
    let seen = server.await.unwrap();
    assert_eq!(seen.iter().filter(|l| l.starts_with("body")).count(), 1);
}

#[tokio::test]
async fn a_421_after_the_body_ends_the_connection() {
    let (stream, server) = server(&[
        ("", "220 fake\r\n"),
        ("LHLO client.test", "250 fake\r\n"),
        ("MAIL", "250 ok\r\n"),
        ("RCPT", "250 ok\r\n"),
        ("RCPT", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        ("x\r\n", ""),
        (".\r\n", "250 ok\r\n421 4.3.0 shutting down\r\n"),
    ]);
    let mut conn = SmtpConnection::greet(stream, addr(), &config(true))
        .await
        .unwrap();
    let to = vec!["a@test".to_string(), "b@test".to_string()];
    let out = conn.send_transaction(&envelope(&to), b"x").await.unwrap();
    assert!(
        matches!(&out[..], [RcptOutcome::Delivered(_), RcptOutcome::TempFail(r)] if r.code == 421)
    );
    assert!(!conn.is_usable());
    assert!(matches!(
        conn.send_transaction(&envelope(&to), b"x").await,
        Err(DeliveryError::Protocol(_))
    ));
    conn.quit().await;
    server.await.unwrap();
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo_and_injection_is_refused() {
    let (stream, server) = server(&[
        ("", "220 old\r\n"),
        ("EHLO", "502 5.5.2 what?\r\n"),
        ("HELO client.test", "250 old\r\n"),
        ("MAIL FROM:<s@test>\r\n", "250 ok\r\n"),
        ("RCPT TO:<ok@test>", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        ("line\r\n", ""),
        ("line2\r\n", ""),
        (".\r\n", "250 ok\r\n"),
    ]);
    let mut conn = SmtpConnection::greet(stream, addr(), &config(false))
        .await
        .unwrap();
    assert!(!conn.ehlo().await.unwrap().esmtp);
    let to = vec![
        "evil@test>\r\nRCPT TO:<x@test".to_string(),
        "ok@test".to_string(),
    ];
    let out = conn
        .send_transaction(&envelope(&to), b"line\nline2")
        .await
        .unwrap();
    assert!(
        matches!(&out[..], [RcptOutcome::PermFail(r), RcptOutcome::Delivered(_)] if r.code == 501)
    );
    let bad_sender = Envelope {
        sender: "s@test>\r\nRSET",
        ..envelope(&to)
    };
    assert!(matches!(
        conn.send_transaction(&bad_sender, b"x").await,
        Err(DeliveryError::Rejected {
            step: "MAIL",
            permanent: true,
            ..
        })
    ));
    drop(conn);
    let seen = server.await.unwrap();
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("x@test") || l.starts_with("RSET")),
        "{seen:?}"
    );
}

/// XFORWARD goes before MAIL with the attributes the server offers, in xtext; a
/// refused XFORWARD fails the transaction; a server without XFORWARD never sees it.
#[tokio::test]
async fn xforward_only_what_is_offered_in_xtext() {
    let attrs = [
        ("NAME", "[UNAVAILABLE]".to_string()),
        ("ADDR", "192.0.2.1".to_string()),
        ("HELO", "evil name+=x".to_string()),
    ];
    let a = vec!["a@test".to_string()];
    let env = Envelope {
        xforward: &attrs,
        ..envelope(&a)
    };
    let (stream, task) = server(&[
        ("", "220 filter ESMTP\r\n"),
        (
            "EHLO client.test",
            "250-filter\r\n250 XFORWARD ADDR HELO\r\n",
        ),
        (
            "XFORWARD ADDR=192.0.2.1 HELO=evil+20name+2B+3Dx\r\n",
            "250 2.0.0 Ok\r\n",
        ),
        ("MAIL FROM:<s@test>", "250 ok\r\n"),
        ("RCPT TO:<a@test>", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        ("body\r\n", ""),
        (".\r\n", "250 2.0.0 queued\r\n"),
        ("XFORWARD ADDR=", "550 5.5.1 not now\r\n"),
        ("QUIT", "221 bye\r\n"),
    ]);
    let mut conn = SmtpConnection::greet(stream, addr(), &config(false))
        .await
        .unwrap();
    let out = conn.send_transaction(&env, b"body").await.unwrap();
    assert!(matches!(&out[..], [RcptOutcome::Delivered(_)]));
    let err = conn.send_transaction(&env, b"body").await.unwrap_err();
    assert!(
        matches!(
            &err,
            DeliveryError::Rejected {
                step: "XFORWARD",
                permanent: true,
                ..
            }
        ),
        "{err}"
    );
    conn.quit().await;
    task.await.unwrap();

    let (stream, task) = server(&[
        ("", "220 mx ESMTP\r\n"),
        ("EHLO client.test", "250 mx\r\n"),
        ("MAIL FROM:<s@test>", "250 ok\r\n"),
        ("RCPT TO:<a@test>", "250 ok\r\n"),
        ("DATA", "354 go\r\n"),
        ("body\r\n", ""),
        (".\r\n", "250 2.0.0 queued\r\n"),
        ("QUIT", "221 bye\r\n"),
    ]);
    let mut conn = SmtpConnection::greet(stream, addr(), &config(false))
        .await
        .unwrap();
    conn.send_transaction(&env, b"body").await.unwrap();
    conn.quit().await;
    task.await.unwrap();
}
