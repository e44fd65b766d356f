//! Deliveries through `mtad::delivery::hops::Outbound` itself (the scheduler's path to
//! a next hop), for the outbound TLS tests.

use mtad::config::route::{RouteOptions, Transport};
use mtad::delivery::Envelope;
use mtad::delivery::hops::{Outbound, Outcome};

pub const MESSAGE: &[u8] = b"From: a@example.test\r\nSubject: outbound tls\r\n\r\nhello\r\n";

/// [`MESSAGE`] from a@example.test to `rcpt` over `transport` (`smtp:...`) with
/// `options`: what became of the recipient.
pub async fn send(out: &Outbound, transport: &str, options: &RouteOptions, rcpt: &str) -> Outcome {
    let transport = Transport::parse(transport).unwrap();
    let to = vec![rcpt.to_string()];
    let env = Envelope {
        sender: "a@example.test",
        recipients: &to,
        body_8bit: false,
        smtputf8: false,
        size: MESSAGE.len(),
        xforward: &[],
    };
    out.send(&transport, options, &env, MESSAGE).await.remove(0)
}
