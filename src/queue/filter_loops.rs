//! Noticing a message that comes back from its content filter to a listener that would
//! filter it again (a filter injecting on the wrong port).
//!
//! The guarantee that a message passes a filter once comes from the `filtered`
//! listener, which never filters. This catches the misconfiguration without trusting
//! any header (a filter may rewrite or strip them all): when a filter takes a message
//! (its 250), the message's digest — envelope sender, recipients and body, which
//! filters leave alone far more often than headers — is recorded as being inside that
//! filter. The first message to arrive from the filter's host with that digest is the
//! message coming back: its entry is used up (on a `filtered` listener too), and it is
//! not filtered again. Anyone else sending the same message is filtered as usual; so is
//! a second identical copy once the first has come back. Entries are forgotten after
//! [`FilterLoops::TTL`], and there are at most [`FilterLoops::CAPACITY`].
//!
//! The entry also keeps whether the message was ours (`MailOrigin` in policy):
//! the copy that comes back from the filter's host keeps that origin, so a message
//! from outside is not signed as ours after its trip through the filter.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One message inside a filter.
struct Inside {
    filter: String,
    /// It was not ours (`Envelope::external`).
    external: bool,
    at: Instant,
}

/// Messages inside a content filter right now, by digest.
#[derive(Default)]
pub struct FilterLoops {
    inside: Mutex<HashMap<u64, Vec<Inside>>>,
    hasher: RandomState,
}

impl FilterLoops {
    pub const CAPACITY: usize = 100_000;
    pub const TTL: Duration = Duration::from_secs(3600);

    /// The digest of a message: sender, recipients (in any order, any case) and the
    /// body after the header block.
    pub fn digest(&self, sender: &str, recipients: &[String], body: &[u8]) -> u64 {
        let mut rcpts: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        rcpts.sort_unstable();
        let mut h = self.hasher.build_hasher();
        h.write(sender.to_ascii_lowercase().as_bytes());
        h.write_u8(0);
        for r in &rcpts {
            h.write(r.as_bytes());
            h.write_u8(0);
        }
        h.write(body);
        h.finish()
    }

    /// `filter` took the message with this digest; `external`: it is not ours
    /// (`Envelope::external`).
    pub fn entered(&self, filter: &str, digest: u64, external: bool) {
        let now = Instant::now();
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        if inside.len() >= Self::CAPACITY {
            inside.retain(|_, v| {
                v.retain(|i| now.duration_since(i.at) < Self::TTL);
                !v.is_empty()
            });
            if inside.len() >= Self::CAPACITY {
                // everything is recent: forget rather than grow
                inside.clear();
            }
        }
        inside.entry(digest).or_default().push(Inside {
            filter: filter.to_owned(),
            external,
            at: now,
        });
    }

    /// A message with this digest arrived from a filter's host: the filter it came
    /// back from, and whether it was from outside, if it was inside one (the entry is
    /// used up).
    pub fn came_back(&self, digest: u64) -> Option<(String, bool)> {
        let now = Instant::now();
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        let entries = inside.get_mut(&digest)?;
        entries.retain(|i| now.duration_since(i.at) < Self::TTL);
        let found = (!entries.is_empty()).then(|| {
            let i = entries.remove(0);
            (i.filter, i.external)
        });
        if entries.is_empty() {
            inside.remove(&digest);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::FilterLoops;

    #[test]
    fn a_message_comes_back_once_per_time_it_entered() {
        let loops = FilterLoops::default();
        let rcpts = ["Bob@dst.test".to_owned(), "carol@dst.test".to_owned()];
        let d = loops.digest("alice@src.test", &rcpts, b"hello\r\n");
        let reordered = ["carol@dst.test".to_owned(), "bob@DST.test".to_owned()];
        assert_eq!(d, loops.digest("alice@src.test", &reordered, b"hello\r\n"));
        assert_ne!(d, loops.digest("alice@src.test", &rcpts, b"other\r\n"));
        assert_ne!(d, loops.digest("mallory@src.test", &rcpts, b"hello\r\n"));
        assert_eq!(loops.came_back(d), None);
        loops.entered("scan", d, true);
        loops.entered("scan", d, false);
        assert_eq!(loops.came_back(d), Some(("scan".to_owned(), true)));
        assert_eq!(loops.came_back(d), Some(("scan".to_owned(), false)));
        assert_eq!(loops.came_back(d), None);
    }
}
