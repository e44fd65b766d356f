//! The content-filter loop record: noticing a message that comes back from its content
//! filter to a listener that would filter it again (a filter injecting on the wrong
//! port, or, in a cluster, into another node than the one that sent it).
//!
//! The guarantee that a message passes a filter once comes from the `filtered`
//! listener, which never filters. This catches the rest without trusting any header (a
//! filter may rewrite or strip them all): when a filter takes a message (its 250), the
//! message's digest — envelope sender, recipients and body, which filters leave alone
//! far more often than headers — is recorded as being inside that filter. The first
//! message to arrive from a filter's host with that digest is the message coming back:
//! its entry is used up (on a `filtered` listener too), and it is not filtered again.
//! Anyone else sending the same message is filtered as usual; so is a second identical
//! copy once the first has come back. Entries are forgotten after [`TTL`]; a node keeps
//! at most [`CAPACITY`] of its own.
//!
//! The entry also keeps whether the message was ours (`MailOrigin` in policy): the copy
//! that comes back from the filter's host keeps that origin, so a message from outside
//! is not signed as ours after its trip through the filter.
//!
//! **One record, two stores.** [`FilterLoops::came_back`] is the one answer to "has
//! this message just been through its filter", for the SMTP session; the scheduler
//! writes with [`FilterLoops::entered`]. Without a cluster the record is the process's
//! memory. With `cluster { }` it is in Redis (a list per digest, the same digest on
//! every node: SHA-256), so a filter may inject the message into any node. **While
//! Redis does not answer**, whatever `cluster { fallback }` says: an entry is kept in
//! the node's memory instead, and a message coming back is looked for there only. A
//! message therefore never skips its filter because Redis is down; at worst it comes
//! back to another node, is not recognised, and goes through the filter a second time
//! (the safe failure). Each failed call is counted and logged like the other features'
//! (`feature="content-filter"`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::{Cluster, Feature};

/// How many entries a node keeps in its memory (without a cluster, or during an outage).
pub const CAPACITY: usize = 100_000;
/// How long an entry waits for its message to come back.
pub const TTL: Duration = Duration::from_secs(3600);
/// At most this many entries per digest in Redis (the same message inside the filter
/// this many times at once); the oldest go first.
const MAX_PER_DIGEST: isize = 100;
/// The longest value read back from Redis: a flag and a filter's name.
const MAX_VALUE: usize = 1 + 256;

/// A message's digest: SHA-256 of its envelope and body, the same on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One message inside a filter, in a node's memory.
struct Inside {
    filter: String,
    /// It was not ours (`Envelope::external`).
    external: bool,
    at: Instant,
}

/// The record in this process's memory.
#[derive(Default)]
struct Local {
    inside: Mutex<HashMap<Digest, Vec<Inside>>>,
}

impl Local {
    fn entered(&self, filter: &str, digest: Digest, external: bool) {
        let now = Instant::now();
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        if inside.len() >= CAPACITY {
            inside.retain(|_, v| {
                v.retain(|i| now.duration_since(i.at) < TTL);
                !v.is_empty()
            });
            if inside.len() >= CAPACITY {
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

    fn came_back(&self, digest: Digest) -> Option<(String, bool)> {
        let now = Instant::now();
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        let entries = inside.get_mut(&digest)?;
        entries.retain(|i| now.duration_since(i.at) < TTL);
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

/// Messages inside a content filter right now: in this process, or in the cluster's
/// Redis (see the module's documentation).
#[derive(Default)]
pub struct FilterLoops {
    local: Local,
    cluster: Option<Arc<Cluster>>,
}

impl FilterLoops {
    /// The record in the cluster's Redis (the process's memory while Redis does not
    /// answer).
    pub fn shared(cluster: Arc<Cluster>) -> Self {
        Self {
            local: Local::default(),
            cluster: Some(cluster),
        }
    }

    /// The digest of a message: sender, recipients (in any order, any case) and the
    /// body after the header block.
    pub fn digest(sender: &str, recipients: &[String], body: &[u8]) -> Digest {
        let mut rcpts: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        rcpts.sort_unstable();
        let mut h = Sha256::new();
        h.update((rcpts.len() as u64).to_be_bytes());
        h.update(sender.to_ascii_lowercase().as_bytes());
        h.update([0]);
        for r in &rcpts {
            h.update(r.as_bytes());
            h.update([0]);
        }
        h.update(body);
        Digest(h.finalize().into())
    }

    fn key(cluster: &Cluster, digest: Digest) -> String {
        cluster.key(&["filter", &digest.hex()])
    }

    /// `filter` is taking the message with this digest; `external`: it is not ours
    /// (`Envelope::external`). Recorded before the message is sent: a filter injects
    /// it again before it answers. In a cluster, one round trip; kept in memory when
    /// Redis does not answer.
    pub async fn entered(&self, filter: &str, digest: Digest, external: bool) {
        let Some(cluster) = &self.cluster else {
            self.local.entered(filter, digest, external);
            return;
        };
        let key = Self::key(cluster, digest);
        let value = format!("{}{filter}", if external { '1' } else { '0' });
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH")
            .arg(&key)
            .arg(value)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(-MAX_PER_DIGEST)
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(TTL.as_secs())
            .ignore();
        if cluster
            .query::<()>(Feature::ContentFilter, &pipe)
            .await
            .is_err()
        {
            // counted and logged by `query`; found again if it comes back here
            self.local.entered(filter, digest, external);
        }
    }

    /// A message with this digest arrived from a filter's host: the filter it came
    /// back from, and whether it was from outside, if it was inside one (the entry is
    /// used up). `None` when it was not, and when Redis does not answer: the message
    /// is then filtered (again) rather than let through unfiltered.
    pub async fn came_back(&self, digest: Digest) -> Option<(String, bool)> {
        if let Some(found) = self.local.came_back(digest) {
            return Some(found);
        }
        let cluster = self.cluster.as_ref()?;
        let cmd = redis::cmd("LPOP").arg(Self::key(cluster, digest)).clone();
        let value: Option<Vec<u8>> = cluster.query(Feature::ContentFilter, &cmd).await.ok()?;
        entry(&value?)
    }

    /// The filter did not (wholly) take the message: nothing of it comes back as this
    /// digest, its entry goes.
    pub async fn not_taken(&self, digest: Digest) {
        self.came_back(digest).await;
    }
}

/// An entry read back from Redis: `1NAME` (from outside) or `0NAME`; `None` for
/// anything else (another program's key, a damaged value): not recognised, filtered.
fn entry(value: &[u8]) -> Option<(String, bool)> {
    if value.len() > MAX_VALUE {
        return None;
    }
    let (flag, name) = value.split_first()?;
    let external = match flag {
        b'1' => true,
        b'0' => false,
        _ => return None,
    };
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty()).then(|| (name.to_owned(), external))
}

#[cfg(test)]
mod tests {
    use super::{FilterLoops, entry};

    #[tokio::test]
    async fn a_message_comes_back_once_per_time_it_entered() {
        let loops = FilterLoops::default();
        let rcpts = ["Bob@dst.test".to_owned(), "carol@dst.test".to_owned()];
        let d = FilterLoops::digest("alice@src.test", &rcpts, b"hello\r\n");
        let reordered = ["carol@dst.test".to_owned(), "bob@DST.test".to_owned()];
        assert_eq!(
            d,
            FilterLoops::digest("alice@src.test", &reordered, b"hello\r\n")
        );
        assert_ne!(
            d,
            FilterLoops::digest("alice@src.test", &rcpts, b"other\r\n")
        );
        assert_ne!(
            d,
            FilterLoops::digest("mallory@src.test", &rcpts, b"hello\r\n")
        );
        // where the sender ends and the recipients begin is part of the digest
        assert_ne!(
            FilterLoops::digest("a", &["b".to_owned()], b""),
            FilterLoops::digest("a", &[], b"b\0")
        );
        assert_eq!(loops.came_back(d).await, None);
        loops.entered("scan", d, true).await;
        loops.entered("scan", d, false).await;
        assert_eq!(loops.came_back(d).await, Some(("scan".to_owned(), true)));
        loops.not_taken(d).await;
        assert_eq!(loops.came_back(d).await, None);
    }

    #[test]
    fn the_digest_is_the_same_on_every_node() {
        // SHA-256, no per-process key: another node finds the same Redis key
        let d = FilterLoops::digest("a@b.test", &["c@d.test".to_owned()], b"x\r\n");
        assert_eq!(
            d.hex(),
            "4c6d4fafca4fdb8e7c9efd07c000452f8b669dc09947c7c80d28f834a7dc389b"
        );
    }

    #[test]
    fn entries_read_back_or_are_ignored() {
        assert_eq!(entry(b"1scan"), Some(("scan".to_owned(), true)));
        assert_eq!(entry(b"0scan"), Some(("scan".to_owned(), false)));
        assert_eq!(entry(b"0"), None);
        assert_eq!(entry(b"2scan"), None);
        assert_eq!(entry(b""), None);
        assert_eq!(entry(b"1\xff"), None);
        assert_eq!(entry(&[b'1'; 300]), None);
    }
}
