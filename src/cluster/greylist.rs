//! Greylisting's state in Redis: a triplet's record (first seen, last seen) and a
//! client's auto-allowlist record (passes, last counted), each a string `A,B` (as
//! postgrey stores them) under a key of its own that expires by itself. The decision
//! is the policy's (`crate::policy::greylist::decide`); here are only the reads and
//! writes: one round trip to read both records and the server's clock, one to write.

use super::{Cluster, Feature, Unavailable};

/// A record: the two numbers of `A,B`.
pub type Record = (u64, u64);

/// What was read: the server's clock (seconds), the triplet's and the client's records.
pub type Read = (u64, Option<Record>, Option<Record>);

/// The records to write, each with its life in seconds: the triplet's, the client's.
pub type Write = (Option<(Record, u64)>, Option<(Record, u64)>);

/// What the pipeline answers: `TIME`, then the two values.
type Raw = ((u64, u64), Option<Vec<u8>>, Option<Vec<u8>>);

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

    /// The server's clock and the records of `triplet` and `client` (their digests),
    /// in one round trip.
    pub async fn greylist_read(&self, triplet: &str, client: &str) -> Result<Read, Unavailable> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME")
            .cmd("GET")
            .arg(self.greylist_key("t", triplet))
            .cmd("GET")
            .arg(self.greylist_key("c", client));
        let (time, t, c): Raw = self.query(Feature::Greylisting, &pipe).await?;
        Ok((time.0, record(t.as_deref()), record(c.as_deref())))
    }

    /// Stores the records given (each with its life in seconds), in one round trip.
    pub async fn greylist_write(
        &self,
        triplet: &str,
        client: &str,
        (t, c): Write,
    ) -> Result<(), Unavailable> {
        if t.is_none() && c.is_none() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (kind, digest, rec) in [("t", triplet, t), ("c", client, c)] {
            if let Some(((a, b), ttl)) = rec {
                pipe.cmd("SET")
                    .arg(self.greylist_key(kind, digest))
                    .arg(format!("{a},{b}"))
                    .arg("EX")
                    .arg(ttl.max(1))
                    .ignore();
            }
        }
        self.query::<()>(Feature::Greylisting, &pipe).await
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
