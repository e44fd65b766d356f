//! The message as the data stage reads it: the header parser (`parse_headers`, one
//! logical header at a time), the MIME walk (`Mime::parse`, with its part and depth
//! caps) and each text part's decoded lines and text (what body_checks and
//! `ctx.parts()` see), and the writers that edit a message in place: header changes
//! (`apply_header_edits`, from data hooks) and raw line edits (`apply_raw_edits`, from
//! REPLACE/PREPEND checks).
//!
//! Input: the message, as received (headers and body).

use mtad::message::mime::{MAX_DEPTH, MAX_PARTS, Mime};
use mtad::message::{HeaderChange, RawEdit, apply_header_edits, apply_raw_edits, parse_headers};

const LIMIT: usize = 64 * 1024;

pub fn run(data: &[u8]) {
    let (headers, body_start) = parse_headers(data);
    assert!(
        body_start <= data.len(),
        "the body starts inside the message"
    );
    let mut last_end = 0;
    for h in &headers {
        let raw = h.raw();
        assert!(
            last_end <= raw.start && raw.start <= raw.end && raw.end <= body_start,
            "header ranges are in order and before the body"
        );
        last_end = raw.end;
        let _ = (h.name(), h.value(), h.line());
    }

    let mime = Mime::parse(data);
    assert!(mime.parts.len() <= MAX_PARTS, "more parts than MAX_PARTS");
    let mut edits = Vec::new();
    for part in &mime.parts {
        assert!(part.depth <= MAX_DEPTH, "deeper than MAX_DEPTH");
        if part.addressable {
            assert!(part.body.start <= part.body.end && part.body.end <= data.len());
        }
        for h in &part.headers {
            let _ = (h.name(), h.value());
        }
        let _ = part.decoded_text(data, LIMIT);
        for (text, range) in part.lines(data, LIMIT).take(10_000) {
            let _ = text.len();
            if let Some(range) = range {
                assert!(range.start <= range.end && range.end <= data.len());
                if edits.len() < 4 && text.len() % 3 == 0 {
                    edits.push(RawEdit {
                        range,
                        text: b"X-Replaced: line\r\n".to_vec(),
                    });
                }
            }
        }
    }
    // two edits of the same line are never made by the checks (one action per line)
    edits.sort_by_key(|e| e.range.start);
    edits.dedup_by(|b, a| b.range.start < a.range.end);
    let _ = apply_raw_edits(data, &edits);

    let mut changes = vec![HeaderChange::Add {
        name: "X-Fuzz".into(),
        value: "added".into(),
    }];
    // as the script host passes them: names that are one token
    let clean =
        |name: &str| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if let Some(h) = headers.iter().next().filter(|h| clean(h.name())) {
        changes.push(HeaderChange::Replace {
            name: h.name().to_owned(),
            value: "replaced".into(),
        });
    }
    if let Some(h) = headers.iter().next_back().filter(|h| clean(h.name())) {
        changes.push(HeaderChange::Remove {
            name: h.name().to_owned(),
        });
    }
    let edited = apply_header_edits(data, &changes);
    // the body is untouched
    assert!(
        edited.ends_with(&data[body_start..]),
        "header edits changed the body"
    );
}
