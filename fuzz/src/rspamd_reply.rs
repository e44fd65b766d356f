//! rspamd's `/checkv2` reply (src/milter/rspamd.rs): the input is the HTTP body rspamd
//! sends back, read as the client reads it, against a message with a few headers
//! (so `remove_headers`' indexes and the score header's old copies have something to
//! point at). Whatever `parse_reply` accepted must be safe to act on: a refusal is a
//! 4xx or 5xx reply of one printable line (never an accept by accident), header names
//! and values carry no line break that could start another header, no more changes
//! than the bound, and every change applies to a header the message has or adds one.

use mtad::milter::client::{MAX_CHANGES, Verdict};
use mtad::milter::codec::Reply;
use mtad::milter::rspamd::{Settings, parse_reply};

pub fn run(data: &[u8]) {
    let headers: Vec<(String, String)> = [
        ("From", "a@b.test"),
        ("Subject", "hi"),
        ("X-Spam", "Yes"),
        ("X-Rspamd-Score", "-100"),
        ("X-Spam", "No"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let settings = Settings {
        max_reply: 64 << 10,
        ..Settings::default()
    };
    let Ok(outcome) = parse_reply(data, &settings, &headers) else {
        return;
    };
    assert!(data.len() <= settings.max_reply);
    assert!(outcome.score.is_finite() && outcome.required.is_finite());
    assert!(outcome.changes.len() <= MAX_CHANGES);
    match &outcome.verdict {
        Verdict::Reply(text) => {
            assert!(text.starts_with("554 5.7.1 ") || text.starts_with("451 4.7.1 "), "{text:?}");
            assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{text:?}");
        }
        Verdict::Continue | Verdict::Discard => {}
        v => panic!("rspamd's answer became {v:?}"),
    }
    for change in &outcome.changes {
        match change {
            Reply::AddHeader { name, value }
            | Reply::InsertHeader { name, value, .. }
            | Reply::ChangeHeader { name, value, .. } => crate::milter::check_header(name, value),
            Reply::Quarantine(reason) => {
                assert!(!reason.contains(['\r', '\n']), "{reason:?}")
            }
            other => panic!("rspamd's answer made a {other:?}"),
        }
    }
}
