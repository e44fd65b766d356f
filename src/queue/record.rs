//! Record encoding and decoding (see the format in the module docs of `queue`).

use std::net::IpAddr;

use super::{Envelope, QueueId, RcptState, RcptStatus, SpoolError};

/// First 8 bytes of every segment file.
pub(crate) const MAGIC: &[u8; 8] = b"MTADSEG1";
/// `[u32 payload_len][u32 crc][u8 kind]`.
pub(crate) const HEADER_LEN: usize = 9;

pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_STATUS: u8 = 2;
pub(crate) const KIND_REMOVE: u8 = 3;
pub(crate) const KIND_HOLD: u8 = 4;
/// Filler over damaged bytes that were moved to `corrupt/` (see `queue` § Recovery).
pub(crate) const KIND_SKIP: u8 = 5;

/// Version byte at the start of each payload kind.
pub(crate) const MESSAGE_VERSION: u8 = 1;
pub(crate) const STATUS_VERSION: u8 = 1;
pub(crate) const REMOVE_VERSION: u8 = 1;
pub(crate) const HOLD_VERSION: u8 = 1;
pub(crate) const SKIP_VERSION: u8 = 1;

const FLAG_8BITMIME: u8 = 1 << 0;
const FLAG_SMTPUTF8: u8 = 1 << 1;
const FLAG_HELD: u8 = 1 << 2;
const FLAG_EXPANDED: u8 = 1 << 3;
const FLAG_FILTER: u8 = 1 << 4;
const FLAG_TLS: u8 = 1 << 5;
const FLAG_REVISION: u8 = 1 << 6;
/// A `u32` of further flags (`XFLAG_*`) follows the flags byte: room for flags after
/// the byte was full. Set only when one of them is, so other records stay readable by
/// an mtad that predates it.
const FLAG_MORE: u8 = 1 << 7;
/// The message does not originate with us (`Envelope::external`): not DKIM-signed.
/// Clear in records written before it existed, which were signed as before.
const XFLAG_EXTERNAL: u32 = 1 << 0;
/// Every further flag this code knows.
const KNOWN_XFLAGS: u32 = XFLAG_EXTERNAL;
/// Room reserved for the body when a record is created, so a typical message is appended
/// without reallocating.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

/// CRC of the kind byte followed by the payload, i.e. of `record[8..]`.
pub(crate) fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Fills in the length and CRC of a record built as `[9 header bytes][payload]`.
/// The caller guarantees the payload fits in u32.
fn seal(buf: &mut [u8]) {
    let payload_len = (buf.len() - HEADER_LEN) as u32;
    buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

struct Writer(Vec<u8>);

impl Writer {
    fn record(kind: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(&[0; 8]);
        buf.push(kind);
        Writer(buf)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        // Envelope strings are bounded by SMTP line limits; a 4 GiB string cannot get here.
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Encodes `[header placeholder][version, id, arrival, flags, strings, recipients, body_len=0]`.
fn encode_message_prefix(id: QueueId, arrival_ms: u64, envelope: &Envelope) -> Vec<u8> {
    let mut w = Writer::record(KIND_MESSAGE, 256 + INITIAL_BODY_CAPACITY);
    w.u8(MESSAGE_VERSION);
    w.u64(id.0);
    w.u64(arrival_ms);
    let mut flags = 0;
    if envelope.body_8bit {
        flags |= FLAG_8BITMIME;
    }
    if envelope.smtputf8 {
        flags |= FLAG_SMTPUTF8;
    }
    if envelope.held {
        flags |= FLAG_HELD;
    }
    if envelope.expanded {
        flags |= FLAG_EXPANDED;
    }
    if envelope.filter.is_some() {
        flags |= FLAG_FILTER;
    }
    if envelope.tls.is_some() {
        flags |= FLAG_TLS;
    }
    if envelope.revision.is_some() {
        flags |= FLAG_REVISION;
    }
    let mut more = 0;
    if envelope.external {
        more |= XFLAG_EXTERNAL;
    }
    if more != 0 {
        flags |= FLAG_MORE;
    }
    w.u8(flags);
    if more != 0 {
        w.u32(more);
    }
    w.str(&envelope.sender);
    w.str(&envelope.listener);
    w.str(&envelope.helo);
    w.str(
        &envelope
            .client_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    );
    w.str(envelope.auth_user.as_deref().unwrap_or(""));
    if let Some(filter) = &envelope.filter {
        w.str(filter);
    }
    if let Some(tls) = &envelope.tls {
        w.str(tls);
    }
    if let Some(revision) = &envelope.revision {
        w.str(revision);
    }
    w.u32(envelope.recipients.len() as u32);
    for rcpt in &envelope.recipients {
        w.str(rcpt);
    }
    w.u64(0); // body length, patched by `MessageRecord::finish`
    w.0
}

/// A message record under construction.
///
/// The SMTP session creates it when DATA/BDAT starts and appends the message straight into
/// [`body_mut`](Self::body_mut), so the body is never copied again before it is written:
/// the buffer already holds the record header and the envelope, and [`Spool::commit`]
/// only patches the lengths and the CRC in place.
///
/// [`Spool::commit`]: super::Spool::commit
#[derive(Debug)]
pub struct MessageRecord {
    /// `[record header][payload prefix][body...]`.
    buf: Vec<u8>,
    /// Length of header + envelope prefix; the body starts here.
    prefix_len: usize,
    id: QueueId,
    arrival_ms: u64,
    /// Kept (it is small) so the index entry can be built without decoding the prefix.
    envelope: Envelope,
}

impl MessageRecord {
    pub fn new(id: QueueId, arrival_ms: u64, envelope: &Envelope) -> Self {
        let buf = encode_message_prefix(id, arrival_ms, envelope);
        MessageRecord {
            prefix_len: buf.len(),
            buf,
            id,
            arrival_ms,
            envelope: envelope.clone(),
        }
    }

    /// The same message with another envelope (held, a content filter...): the body
    /// is copied once behind the new envelope prefix.
    pub fn with_envelope(self, envelope: &Envelope) -> Self {
        let mut record = Self::new(self.id, self.arrival_ms, envelope);
        record.buf.reserve(self.body().len());
        record.buf.extend_from_slice(self.body());
        record
    }

    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn arrival_ms(&self) -> u64 {
        self.arrival_ms
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The buffer to append the message to. The body is everything after the bytes already
    /// in it: only append (or truncate no shorter than its length on return from `new`);
    /// `commit` refuses a record whose envelope prefix was changed.
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn body_len(&self) -> usize {
        self.buf.len().saturating_sub(self.prefix_len)
    }

    pub fn body(&self) -> &[u8] {
        self.buf.get(self.prefix_len..).unwrap_or(&[])
    }

    /// Drops the body appended so far and keeps the envelope prefix (a refused message).
    pub fn truncate_body(&mut self) {
        self.buf.truncate(self.prefix_len);
    }

    /// Patches body length, payload length and CRC; the bytes are then ready to append.
    pub(crate) fn finish(mut self) -> Result<SealedMessage, SpoolError> {
        if self.buf.len() < self.prefix_len
            || self.buf[..self.prefix_len]
                != encode_message_prefix(self.id, self.arrival_ms, &self.envelope)[..]
        {
            return Err(SpoolError::InvalidRecord(
                "the envelope prefix of the message record was modified through body_mut()",
            ));
        }
        let body_len = self.buf.len() - self.prefix_len;
        if self.buf.len() - HEADER_LEN > u32::MAX as usize {
            return Err(SpoolError::TooLarge {
                size: body_len as u64,
            });
        }
        let at = self.prefix_len - 8;
        self.buf[at..self.prefix_len].copy_from_slice(&(body_len as u64).to_le_bytes());
        seal(&mut self.buf);
        Ok(SealedMessage {
            bytes: self.buf,
            id: self.id,
            arrival_ms: self.arrival_ms,
            envelope: self.envelope,
            body_start: self.prefix_len as u64,
            body_len: body_len as u64,
        })
    }
}

/// A finished message record, ready for the committer.
#[derive(Debug)]
pub(crate) struct SealedMessage {
    pub bytes: Vec<u8>,
    pub id: QueueId,
    pub arrival_ms: u64,
    pub envelope: Envelope,
    /// Offset of the body within `bytes`.
    pub body_start: u64,
    pub body_len: u64,
}

pub(crate) fn encode_status(id: QueueId, rcpt: u32, status: &RcptStatus) -> Vec<u8> {
    let mut w = Writer::record(KIND_STATUS, 64 + status.detail.len());
    w.u8(STATUS_VERSION);
    w.u64(id.0);
    w.u32(rcpt);
    w.u8(match status.state {
        RcptState::Queued => 0,
        RcptState::Delivered => 1,
        RcptState::Bounced => 2,
        RcptState::Deferred => 3,
    });
    w.u64(status.at_ms);
    w.u32(status.attempts);
    w.u64(status.next_attempt_ms);
    // Keep an absurd remote reply from making the record unwritable.
    let detail = truncate_utf8(&status.detail, 64 * 1024);
    w.str(detail);
    let mut buf = w.0;
    seal(&mut buf);
    buf
}

pub(crate) fn encode_remove(id: QueueId) -> Vec<u8> {
    let mut w = Writer::record(KIND_REMOVE, HEADER_LEN + 9);
    w.u8(REMOVE_VERSION);
    w.u64(id.0);
    let mut buf = w.0;
    seal(&mut buf);
    buf
}

pub(crate) fn encode_hold(id: QueueId, held: bool) -> Vec<u8> {
    let mut w = Writer::record(KIND_HOLD, HEADER_LEN + 10);
    w.u8(HOLD_VERSION);
    w.u64(id.0);
    w.u8(u8::from(held));
    let mut buf = w.0;
    seal(&mut buf);
    buf
}

/// The header of a Skip record `len` bytes long in all (at least `HEADER_LEN + 1`), whose
/// payload is the version byte then zeros: what is written over damaged bytes once they
/// are kept in `corrupt/`. The caller writes the zeros after it.
pub(crate) fn skip_header(len: u64) -> Option<[u8; HEADER_LEN + 1]> {
    let payload_len = u32::try_from(len.checked_sub(HEADER_LEN as u64)?).ok()?;
    if payload_len == 0 {
        return None;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[KIND_SKIP, SKIP_VERSION]);
    let zeros = [0u8; 8192];
    let mut left = u64::from(payload_len) - 1;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        crc.update(&zeros[..n]);
        left -= n as u64;
    }
    let mut header = [0u8; HEADER_LEN + 1];
    header[0..4].copy_from_slice(&payload_len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    header[8] = KIND_SKIP;
    header[9] = SKIP_VERSION;
    Some(header)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The envelope part of a decoded Message record; the body stays on disk.
#[derive(Debug)]
pub(crate) struct MessageMeta {
    pub id: QueueId,
    pub arrival_ms: u64,
    pub envelope: Envelope,
    /// Offset of the body within the payload.
    pub body_start: usize,
    pub body_len: u64,
}

#[derive(Debug)]
pub(crate) enum Decoded {
    Message(MessageMeta),
    Status {
        id: QueueId,
        rcpt: u32,
        status: RcptStatus,
    },
    Remove {
        id: QueueId,
    },
    Hold {
        id: QueueId,
        held: bool,
    },
    /// Damaged bytes that were moved aside: nothing to apply.
    Skip,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| format!("payload ends inside {what}"))?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    fn version(&mut self, kind: &str, supported: u8) -> Result<(), String> {
        let v = self.u8("the version byte")?;
        if v != supported {
            return Err(format!(
                "{kind} record version {v} is not supported by this mtad (it reads version \
                 {supported}); was the spool written by a newer release?"
            ));
        }
        Ok(())
    }
    fn end(&self, kind: &str) -> Result<(), String> {
        if self.pos != self.buf.len() {
            return Err(format!(
                "{} unexpected bytes after the {kind} record",
                self.buf.len() - self.pos
            ));
        }
        Ok(())
    }
}

/// Decodes a payload whose CRC already matched. An error here is not a torn write but a
/// record this code cannot understand (a bug or a newer format), so the caller must not
/// silently drop it.
pub(crate) fn decode(kind: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_record(kind, payload).map_err(DecodeError)
}

/// A record whose CRC matched but whose contents this mtad cannot read (a bug, or a
/// format written by a newer mtad); the text says what did not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(String);

/// [`decode`], its error as text.
fn decode_record(kind: u8, payload: &[u8]) -> Result<Decoded, String> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    match kind {
        KIND_MESSAGE => {
            r.version("message", MESSAGE_VERSION)?;
            let id = QueueId(r.u64("the queue id")?);
            let arrival_ms = r.u64("the arrival time")?;
            let flags = r.u8("the flags")?;
            // every bit of the flags byte is known: a newer mtad's flags are in `more`
            let more = if flags & FLAG_MORE != 0 {
                r.u32("the further flags")?
            } else {
                0
            };
            if more & !KNOWN_XFLAGS != 0 {
                return Err(format!(
                    "message flags {more:#010x} include bits this mtad does not know \
                     (written by a newer mtad?)"
                ));
            }
            let sender = r.string("the sender")?;
            let listener = r.string("the listener name")?;
            let helo = r.string("the HELO name")?;
            let ip = r.string("the client address")?;
            let client_ip = if ip.is_empty() {
                None
            } else {
                Some(
                    ip.parse::<IpAddr>()
                        .map_err(|_| format!("client address {ip:?} is not an IP address"))?,
                )
            };
            let auth = r.string("the authenticated user")?;
            let filter = if flags & FLAG_FILTER != 0 {
                Some(r.string("the content filter")?)
            } else {
                None
            };
            let tls = if flags & FLAG_TLS != 0 {
                Some(r.string("the TLS parameters")?)
            } else {
                None
            };
            let revision = if flags & FLAG_REVISION != 0 {
                Some(r.string("the policy revision")?)
            } else {
                None
            };
            let count = r.u32("the recipient count")?;
            let mut recipients = Vec::with_capacity((count as usize).min(1024));
            for _ in 0..count {
                recipients.push(r.string("a recipient")?);
            }
            let body_len = r.u64("the body length")?;
            let body_start = r.pos;
            if body_len != (payload.len() - body_start) as u64 {
                return Err(format!(
                    "body length {body_len} does not match the {} bytes in the record",
                    payload.len() - body_start
                ));
            }
            Ok(Decoded::Message(MessageMeta {
                id,
                arrival_ms,
                envelope: Envelope {
                    sender,
                    recipients,
                    listener,
                    helo,
                    client_ip,
                    auth_user: if auth.is_empty() { None } else { Some(auth) },
                    body_8bit: flags & FLAG_8BITMIME != 0,
                    smtputf8: flags & FLAG_SMTPUTF8 != 0,
                    held: flags & FLAG_HELD != 0,
                    expanded: flags & FLAG_EXPANDED != 0,
                    filter,
                    tls,
                    revision,
                    external: more & XFLAG_EXTERNAL != 0,
                },
                body_start,
                body_len,
            }))
        }
        KIND_STATUS => {
            r.version("recipient status", STATUS_VERSION)?;
            let id = QueueId(r.u64("the queue id")?);
            let rcpt = r.u32("the recipient index")?;
            let state = match r.u8("the status")? {
                0 => RcptState::Queued,
                1 => RcptState::Delivered,
                2 => RcptState::Bounced,
                3 => RcptState::Deferred,
                other => return Err(format!("unknown recipient status {other}")),
            };
            let at_ms = r.u64("the status time")?;
            let attempts = r.u32("the attempt count")?;
            let next_attempt_ms = r.u64("the next attempt time")?;
            let detail = r.string("the status detail")?;
            r.end("recipient status")?;
            Ok(Decoded::Status {
                id,
                rcpt,
                status: RcptStatus {
                    state,
                    at_ms,
                    attempts,
                    next_attempt_ms,
                    detail,
                },
            })
        }
        KIND_REMOVE => {
            r.version("remove", REMOVE_VERSION)?;
            let id = QueueId(r.u64("the queue id")?);
            r.end("remove")?;
            Ok(Decoded::Remove { id })
        }
        KIND_HOLD => {
            r.version("hold", HOLD_VERSION)?;
            let id = QueueId(r.u64("the queue id")?);
            let held = match r.u8("the held flag")? {
                0 => false,
                1 => true,
                other => return Err(format!("hold record with held flag {other} (not 0 or 1)")),
            };
            r.end("hold")?;
            Ok(Decoded::Hold { id, held })
        }
        KIND_SKIP => {
            // the rest is filler, whatever it holds
            r.version("skip", SKIP_VERSION)?;
            Ok(Decoded::Skip)
        }
        other => Err(format!(
            "unknown record kind {other} (written by a newer mtad?)"
        )),
    }
}
