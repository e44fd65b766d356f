//! The in-memory index: queued messages (envelope, statuses, body location; no body) and,
//! per segment, how many live messages it holds (for garbage collection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;

use super::record::{Decoded, HEADER_LEN, MessageMeta};
use super::{BodyLocation, QueueId, QueuedMessage, RcptState, RcptStatus};

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub messages: BTreeMap<QueueId, QueuedMessage>,
    /// Every segment file that exists, with its count of live messages.
    pub live: BTreeMap<u64, usize>,
    /// The bodies of messages just made durable, kept for their first delivery attempt.
    pub fresh: Fresh,
}

/// Most bytes [`Fresh`] keeps; past it the oldest go (their attempts read the spool).
pub(crate) const FRESH_MAX_BYTES: usize = 32 << 20;

/// The records of messages the committer has just written and fsynced, so that their
/// first delivery attempt takes the body from memory instead of reading it back from
/// the spool on a blocking thread. The bytes are the ones written (nothing read back, no
/// CRC to check). Bounded by [`FRESH_MAX_BYTES`]: the oldest go first; a message's entry
/// goes when it is taken or the message is removed.
#[derive(Debug, Default)]
pub(crate) struct Fresh {
    pub(super) records: HashMap<QueueId, (Vec<u8>, Range<usize>)>,
    order: VecDeque<QueueId>,
    bytes: usize,
}

impl Fresh {
    /// Keeps `record`, whose body is `body`.
    pub fn put(&mut self, id: QueueId, record: Vec<u8>, body: Range<usize>) {
        if record.len() > FRESH_MAX_BYTES || record.get(body.clone()).is_none() {
            return;
        }
        self.forget(id);
        self.bytes += record.len();
        self.records.insert(id, (record, body));
        self.order.push_back(id);
        while self.bytes > FRESH_MAX_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.forget(old);
        }
        // ids taken or removed stay in `order` until they reach its front
        if self.order.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.order.retain(|id| records.contains_key(id));
        }
    }

    /// The body of `id`, once (the record's buffer itself: not copied).
    pub fn take(&mut self, id: QueueId) -> Option<bytes::Bytes> {
        let (record, body) = self.records.remove(&id)?;
        self.bytes -= record.len();
        // `put` checked that the range is in the record
        record.get(body.clone())?;
        Some(bytes::Bytes::from(record).slice(body))
    }

    pub fn forget(&mut self, id: QueueId) {
        if let Some((record, _)) = self.records.remove(&id) {
            self.bytes -= record.len();
        }
    }
}

/// The status of a recipient nobody has tried yet: due at arrival.
pub(crate) fn initial_status(arrival_ms: u64) -> RcptStatus {
    RcptStatus {
        state: RcptState::Queued,
        at_ms: arrival_ms,
        attempts: 0,
        next_attempt_ms: arrival_ms,
        detail: String::new(),
    }
}

pub(crate) fn new_message(meta: MessageMeta, location: BodyLocation) -> QueuedMessage {
    QueuedMessage {
        id: meta.id,
        arrival_ms: meta.arrival_ms,
        size: meta.body_len,
        rcpt_status: vec![initial_status(meta.arrival_ms); meta.envelope.recipients.len()],
        envelope: meta.envelope,
        location,
    }
}

impl Index {
    pub fn add_segment(&mut self, seq: u64) {
        self.live.entry(seq).or_insert(0);
    }

    /// Inserts or replaces (a later Message record with the same id wins).
    pub fn put_message(&mut self, msg: QueuedMessage) {
        *self.live.entry(msg.location.segment).or_insert(0) += 1;
        if let Some(old) = self.messages.insert(msg.id, msg) {
            self.release(old.location.segment);
        }
    }

    /// Returns false if the message or recipient does not exist.
    pub fn set_status(&mut self, id: QueueId, rcpt: u32, status: RcptStatus) -> bool {
        match self
            .messages
            .get_mut(&id)
            .and_then(|m| m.rcpt_status.get_mut(rcpt as usize))
        {
            Some(slot) => {
                *slot = status;
                true
            }
            None => false,
        }
    }

    /// Returns false if the message does not exist.
    pub fn set_held(&mut self, id: QueueId, held: bool) -> bool {
        match self.messages.get_mut(&id) {
            Some(m) => {
                m.envelope.held = held;
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, id: QueueId) -> bool {
        self.fresh.forget(id);
        match self.messages.remove(&id) {
            Some(old) => {
                self.release(old.location.segment);
                true
            }
            None => false,
        }
    }

    fn release(&mut self, seq: u64) {
        if let Some(n) = self.live.get_mut(&seq) {
            *n = n.saturating_sub(1);
        }
    }

    /// Applies one intact record read during recovery, found in segment `seq`.
    pub fn apply(&mut self, seq: u64, offset: u64, len: u64, decoded: Decoded) {
        match decoded {
            Decoded::Message(meta) => {
                let location = BodyLocation {
                    segment: seq,
                    record_offset: offset,
                    record_len: len,
                    body_offset: offset + HEADER_LEN as u64 + meta.body_start as u64,
                    body_len: meta.body_len,
                };
                self.put_message(new_message(meta, location));
            }
            Decoded::Status { id, rcpt, status } => {
                // A status for a message removed later in the log (or whose segment was
                // collected) is expected; only an index past the recipients is odd.
                if let Some(m) = self.messages.get(&id)
                    && rcpt as usize >= m.rcpt_status.len()
                {
                    tracing::warn!(
                        queue_id = %id,
                        rcpt,
                        recipients = m.rcpt_status.len(),
                        segment = seq,
                        offset,
                        "spool: status record for a recipient the message does not have; ignored"
                    );
                }
                self.set_status(id, rcpt, status);
            }
            Decoded::Remove { id } => {
                self.remove(id);
            }
            // For a message removed earlier in the log: nothing to hold any more.
            Decoded::Hold { id, held } => {
                self.set_held(id, held);
            }
            Decoded::Skip => {}
        }
    }

    /// Segments that may be deleted, oldest first: a prefix of the segment list in which no
    /// segment holds a live message, stopping before `active` (the segment being written).
    /// Deleting only such a prefix, in order, guarantees a Remove or status record never
    /// disappears while an older record it refers to is still on disk.
    pub fn collectable(&self, active: Option<u64>) -> Vec<u64> {
        self.live
            .iter()
            .take_while(|&(&seq, &n)| n == 0 && Some(seq) != active)
            .map(|(&seq, _)| seq)
            .collect()
    }

    pub fn highest_id(&self) -> u64 {
        self.messages.keys().next_back().map_or(0, |id| id.0)
    }
}
