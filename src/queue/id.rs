//! Queue ids: `(unix seconds << 24) | counter`, printed as 16 uppercase hex digits.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The identifier of a queued message, shown to clients in `250 ... queued as ID` and to
/// operators by `mtactl queue`.
///
/// The value is `(unix seconds << 24) | counter`: ids sort by arrival, and the 24-bit
/// counter allows 16 million messages per second before an id borrows from the next second
/// (which keeps ids unique and increasing anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// The text was not a queue id (16 hexadecimal digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a queue id (expected 16 hexadecimal digits, like 0000000065A1B2C3)")]
pub struct ParseQueueIdError(pub String);

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    /// Parses exactly 16 hex digits; lower case is accepted too, since operators type them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseQueueIdError(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(QueueId)
            .map_err(|_| ParseQueueIdError(s.to_string()))
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out strictly increasing ids. Starts above the highest id found in the spool, so a
/// clock that went backwards across a restart cannot reuse the id of a queued message.
/// (An id whose every record was deleted is not remembered: a daemon restarted within the
/// same second may hand it out again; nothing on disk refers to it any more.)
#[derive(Debug)]
pub(crate) struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new(highest_seen: u64) -> Self {
        IdGenerator {
            last: AtomicU64::new(highest_seen),
        }
    }

    pub(crate) fn next(&self) -> QueueId {
        let floor = unix_secs() << 24;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = floor.max(last.wrapping_add(1));
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return QueueId(candidate),
                Err(seen) => last = seen,
            }
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
