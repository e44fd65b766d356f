//! Greylisting's state in Redis: a triplet's record (first seen, last seen) and a
//! client's auto-allowlist record (passes, last counted), each a string `A,B` (as
//! postgrey stores them) under a key of its own that expires by itself. The decision
//! is the policy's (`crate::policy::greylist::decide`); here are only the reads and
//! writes: one round trip reads both records and the server's clock (or none of its
//! own: read with MAIL's limits when the RCPT is pipelined behind it,
//! [`Cluster::greylist_keys`]); the writes ride on the node's next call
//! ([`super::limits::Pending`]), so that they cost no round trip of their own.

use super::{Cluster, Feature, Unavailable};

/// A record: the two numbers of `A,B`.
pub type Record = (u64, u64);

/// What was read: the server's clock (seconds), the triplet's and the client's records.
pub type Read = (u64, Option<Record>, Option<Record>);

/// The records to write, each with its life in seconds: the triplet's, the client's.
pub type Write = (Option<(Record, u64)>, Option<(Record, u64)>);

/// Longest record value read back (two numbers and a comma).
const MAX_VALUE: usize = 48;

/// `A,B`, or `None` for anything else (another program's key, a damaged value).
fn record(value: Option<&[u8]>) -> Option<Record> {
    let text = std::str::from_utf8(value?).ok()?;
    if text.len() > MAX_VALUE {
        return None;
    }
    let (a, b) = text.split_once(',')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Cluster {
    fn greylist_key(&self, kind: &str, digest: &str) -> String {
        self.key(&["grey", kind, digest])
    }

    /// The keys of `triplet`'s and `client`'s records, to read with another call
    /// ([`Cluster::limits_reading`]); [`read_of`] makes a [`Read`] of what it read.
    pub fn greylist_keys(&self, triplet: &str, client: &str) -> Vec<String> {
        vec![
            self.greylist_key("t", triplet),
            self.greylist_key("c", client),
        ]
    }

    /// The server's clock and the records of `triplet` and `client` (their digests),
    /// in one round trip.
    pub async fn greylist_read(&self, triplet: &str, client: &str) -> Result<Read, Unavailable> {
        let reads = self
            .read(Feature::Greylisting, &self.greylist_keys(triplet, client))
            .await?;
        read_of(&reads).ok_or(Unavailable::Answer("greylisting's records"))
    }

    /// Stores the records given (each with its life in seconds) with this node's next
    /// call: nobody waits for them (a triplet's retry comes minutes later), and a write
    /// lost with a node that dies first only greylists that triplet once more.
    pub fn greylist_write(&self, triplet: &str, client: &str, (t, c): Write) {
        for (kind, digest, rec) in [("t", triplet, t), ("c", client, c)] {
            if let Some(((a, b), ttl)) = rec {
                self.set_later(
                    self.greylist_key(kind, digest),
                    format!("{a},{b}"),
                    std::time::Duration::from_secs(ttl),
                );
            }
        }
    }
}

/// The [`Read`] of what a call read at [`Cluster::greylist_keys`]; `None` when it read
/// something else.
pub fn read_of(reads: &super::limits::Reads) -> Option<Read> {
    match reads.values.as_slice() {
        [t, c] => Some((reads.time, record(t.as_deref()), record(c.as_deref()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_read_back_or_are_ignored() {
        use super::record;
        assert_eq!(
            record(Some(b"1700000000,1700000300")),
            Some((1700000000, 1700000300))
        );
        assert_eq!(record(Some(b"5,")), None);
        assert_eq!(record(Some(b"-1,2")), None);
        assert_eq!(record(Some(b"\xff,1")), None);
        assert_eq!(record(Some(&[b'1'; 100])), None);
        assert_eq!(record(None), None);
    }
}
