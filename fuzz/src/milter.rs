//! A milter's replies (src/milter/codec.rs): the input is what a filter sends back, a
//! stream of packets (length, command, data) read as the client reads them: the
//! length checked before anything is stored, then the reply parsed. Whatever
//! `parse_reply` accepted must be safe to act on: a reply code is a 4xx or 5xx (never
//! an accept by accident), header names and values and addresses carry no line break
//! that could start another header or command.

use mtad::milter::codec::{MAX_PACKET, Reply, check_length, parse_reply};

pub fn run(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        let Ok(len) = check_length(len) else { return };
        assert!((1..=MAX_PACKET).contains(&len));
        let Some(packet) = rest.get(..len) else { return };
        rest = &rest[len..];
        let Ok(reply) = parse_reply(packet[0], &packet[1..]) else {
            continue;
        };
        check(&reply);
    }
}

fn check(reply: &Reply) {
    match reply {
        Reply::ReplyCode(text) => {
            assert!(text.starts_with('4') || text.starts_with('5'), "{text:?}");
            // one SMTP reply: every line `CODE-`, the last `CODE `, one code throughout
            let lines: Vec<&str> = text.split("\r\n").collect();
            for (i, line) in lines.iter().enumerate() {
                assert!(!line.contains(['\r', '\n']), "{text:?}");
                assert_eq!(line.get(..3), text.get(..3), "{text:?}");
                let mark = if i + 1 < lines.len() { b'-' } else { b' ' };
                assert_eq!(line.as_bytes().get(3), Some(&mark), "{text:?}");
            }
        }
        Reply::AddHeader { name, value }
        | Reply::InsertHeader { name, value, .. }
        | Reply::ChangeHeader { name, value, .. } => check_header(name, value),
        Reply::AddRcpt { rcpt: a, .. } | Reply::DelRcpt(a) | Reply::ChangeFrom { sender: a, .. } => {
            assert!(!a.contains(['\r', '\n', '\0']), "{a:?}");
        }
        _ => {}
    }
}

/// A header a filter writes: a name without a colon, space or line break; a value
/// whose only line breaks are folds (followed by a space or a tab).
pub fn check_header(name: &str, value: &str) {
    assert!(
        !name.is_empty() && !name.contains([':', ' ', '\r', '\n']),
        "{name:?}"
    );
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(matches!(bytes.get(i + 1), Some(b' ' | b'\t')), "{value:?}");
        }
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{value:?}");
        }
    }
}
