//! The PROXY protocol end to end: raw headers (v1, v2, malformed, missing, from a
//! stranger) over real sockets, and a real HAProxy (send-proxy, send-proxy-v2) in front
//! of mtad with swaks behind it. The load balancer's own address is trusted by the
//! policy here on purpose (seed 000's warning): the proxied client still is not.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Loopback is "trusted" — which includes the proxy (127.0.0.1) — and the listener
/// takes PROXY headers from 127.0.0.1 only.
const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "lb" address="127.0.0.1:{port}" proxy-protocol=#true proxies="lb"
networks "lb" "127.0.0.1/32"
networks "trusted" "127.0.0.0/8"
domains "relay" "example.test"
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="relay"
}
"#;

fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

#[test]
fn the_proxied_client_is_the_client_everywhere() {
    let mtad = Mtad::start(CONFIG);
    for header in [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n".to_vec(),
        v2_tcp4([192, 0, 2, 7], 40000),
    ] {
        let mut s = Client::connect(mtad.port);
        s.send(&header);
        s.expect("220 mx.example.test");
        s.cmd("EHLO client.test", "250");
        s.cmd("MAIL FROM:<a@src.test>", "250");
        // the proxy (127.0.0.1) is trusted; the client it speaks for is not
        s.cmd("RCPT TO:<x@foreign.test>", "554 5.7.1");
        s.cmd("RCPT TO:<b@example.test>", "250");
        s.cmd("DATA", "354");
        s.send("Subject: via the balancer\r\n\r\nhi\r\n.\r\n");
        s.expect("250 2.0.0 Ok: queued as");
        s.cmd("QUIT", "221");
    }
    let queued = mtad.queued();
    assert_eq!(queued.len(), 2);
    for (m, body) in &queued {
        assert_eq!(m.envelope.client_ip.unwrap().to_string(), "192.0.2.7");
        let text = String::from_utf8_lossy(body);
        assert!(text.contains("([192.0.2.7])"), "{text}");
    }
    assert!(
        mtad.log().contains("client=192.0.2.7:40000"),
        "{}",
        mtad.log()
    );
}

/// Closed without a banner: what comes back is end of file, not `220`.
fn closed_silently(mut stream: TcpStream, send: &[u8]) {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.write_all(send);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got));
}

#[test]
fn no_header_a_bad_header_or_a_stranger_gets_nothing() {
    let mtad = Mtad::start(CONFIG);
    let connect = || TcpStream::connect(("127.0.0.1", mtad.port)).unwrap();
    // a client that speaks SMTP first: no guessing
    closed_silently(connect(), b"EHLO client.test\r\n");
    closed_silently(connect(), b"PROXY TCP4 192.0.2.7 127.0.0.1 40000\r\n");
    closed_silently(
        connect(),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25 extra\r\n",
    );
    let mut bad_v2 = v2_tcp4([192, 0, 2, 7], 40000);
    bad_v2[12] = 0x11; // version 1 in a v2 header
    closed_silently(connect(), &bad_v2);
    // a valid header from an address that is not a configured proxy
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.2:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket
        .connect(
            &format!("127.0.0.1:{}", mtad.port)
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    closed_silently(
        socket.into(),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n",
    );
    let log = mtad.log();
    assert!(log.contains("not a configured proxy"), "{log}");
    assert!(log.contains("no PROXY protocol header"), "{log}");
    assert!(log.contains("malformed PROXY protocol header"), "{log}");
    assert!(mtad.queued().is_empty());
}

#[test]
fn behind_a_real_haproxy_with_v1_and_v2() {
    let mtad = Mtad::start(CONFIG);
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let lb = common::peers::Haproxy::start(&[mtad.port], send_proxy);
        // swaks from 127.0.0.5: inside "trusted" but not the proxy
        let ok = swaks(
            lb.port,
            &[
                "--local-interface",
                "127.0.0.5",
                "--from",
                "a@src.test",
                "--to",
                "b@example.test",
                "--header",
                &format!("Subject: {send_proxy}"),
            ],
        );
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stdout)
        );
    }
    let queued = mtad.queued();
    assert_eq!(queued.len(), 2);
    for (m, body) in &queued {
        assert_eq!(m.envelope.client_ip.unwrap().to_string(), "127.0.0.5");
        assert!(String::from_utf8_lossy(body).contains("([127.0.0.5])"));
    }
}
