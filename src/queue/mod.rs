//! The spool: a log-structured, group-committed queue. Nothing is acknowledged before it
//! is on stable storage (DESIGN.md §5, contract 1: durable before 250).
//!
//! # On-disk format (this is a contract: old spools must stay readable)
//!
//! The spool directory holds:
//!
//! - `lock` — `flock`ed (exclusive, non-blocking) by the daemon for as long as it runs, so
//!   two daemons can never append to the same spool. It contains the holder's pid, for
//!   error messages only.
//! - `corrupt/seg-{seq:016x}.log@{offset}` — damaged bytes found in segment `seq` at byte
//!   `offset`, moved aside at a start (see Recovery); never read by mtad.
//! - `seg-{seq:016x}.log` — segment files, `seq` increasing. Every daemon start begins a
//!   new segment, and only the process that created a segment ever appends to it, so an
//!   interrupted write can only leave damage at the *end* of a segment.
//!
//! A segment is the 8-byte magic `MTADSEG1` followed by records:
//!
//! ```text
//! [u32 LE payload_len][u32 LE crc32(kind byte ++ payload)][u8 kind][payload_len bytes]
//! ```
//!
//! then zeros to the end of the file: the committer grows a segment by writing zeros
//! ahead of its records (1 MiB at a time, [`committer::ZERO_AHEAD`]), so that most fsyncs
//! write data only. A reader takes a record header of zeros followed by nothing but zeros
//! for the segment's end (kind 0 is no record); zeros with anything after them are
//! damage. (Spools written before the zeros read the same; an mtad older than them reads
//! a segment of this one as having a damaged tail, keeps it aside and cuts it: nothing
//! queued is lost.)
//!
//! CRC-32 is the IEEE polynomial (crc32fast). Integers are little-endian; a "string" is
//! `u32 LE length` + UTF-8 bytes. Every payload starts with a version byte (currently 1)
//! so a kind can grow; a reader refuses versions and kinds it does not know rather than
//! drop queued mail.
//!
//! | kind | name       | payload after the version byte |
//! |------|------------|--------------------------------|
//! | 1    | Message    | id u64, arrival unix ms u64, flags u8 (bit0 8BITMIME body, bit1 SMTPUTF8, bit2 held, bit3 recipients already alias-expanded, bit4 a content filter follows, bit5 TLS parameters follow, bit6 a policy revision follows, bit7 a u32 of further flags follows: bit0 the message is not ours, not DKIM-signed), strings sender (`""` = null sender), listener, helo, client ip (`""` if unknown), auth user (`""` if none), with bit4 the content filter's name, with bit5 the TLS parameters, with bit6 the revision of the policy that accepted the message, u32 recipient count + one string each, u64 body length, body bytes (the message as received, `Received:` included) |
//! | 2    | RcptStatus | id u64, rcpt index u32, status u8 (0 queued, 1 delivered, 2 bounced, 3 deferred), at unix ms u64, attempts u32, next attempt unix ms u64, detail string |
//! | 3    | Remove     | id u64 |
//! | 4    | Hold       | id u64, held u8 (1 = put on hold, 0 = released) |
//! | 5    | Skip       | filler (zeros) over damaged bytes that were moved to `corrupt/` |
//!
//! The body length is redundant with `payload_len`; it is checked on reading so a bug in
//! either cannot pass unnoticed.
//!
//! ## Recovery
//!
//! Segments are replayed in `seq` order, records in file order; later records win. A second
//! Message record with the same id replaces the first entirely (that is how a future
//! compaction moves a message to a new segment: it must re-append the status records
//! too, and write the current held state in the flags). Status, Remove and Hold records
//! for an id that is not queued are ignored. A Hold record sets the held state, replacing
//! the Message record's flag bit2 and any earlier Hold record.
//!
//! //! Flag bits 5 (TLS) and 6 (revision) were added after the first release: records without
//! them read as before. A reader refuses a record with a flag bit it does not know (written
//! by a newer mtad) rather than misread the strings that follow. Bit7 (further flags, for
//! now only "not ours": mail from outside, not DKIM-signed) is set only on the records that
//! need it, so the others stay readable by an older mtad; its u32 follows the flags byte.
//!
//! Kind 4 (Hold) was added after the first release: spools without it read as before, but
//! an mtad older than `mtactl queue hold` refuses a spool that contains one (unknown kind),
//! as it should rather than deliver held mail.
//!
//! A record whose header is cut short, or whose stated length runs past the end of the
//! file, is a *torn tail*: a write that was never acknowledged, interrupted by a crash.
//! Reading that segment stops there; the daemon truncates the file to the last good record
//! and fsyncs it (keeping the cut bytes in `corrupt/` first if intact-looking records
//! follow: the length may be damaged instead). A file too short to hold its magic is a
//! segment whose creation was interrupted (nothing in it was ever acknowledged) and is
//! deleted.
//!
//! A record whose CRC does not match (or whose header cannot be one) is *damage*. The
//! format has no sync marker, so the next record is looked for: where the damaged
//! record's length says it ends, else at every later offset in turn (a header with a known
//! kind, a plausible length and version 1, a matching CRC, a payload that decodes; at most
//! 1 GiB checksummed). If one is found, the bytes in between are copied to `corrupt/`
//! (fsync'd, renamed into place, directory fsync'd; an existing copy is kept), then
//! overwritten in place by one Skip record (zeros first, the header last, fsync'd), and
//! reading goes on: later records are never lost to damage before them. If none is
//! found, the damage is the segment's tail: its bytes are kept in `corrupt/` (up to its
//! last byte that is not zero: the zeros after it are the committer's), then it is
//! cut. A record written into the zeros and torn by a crash looks like this too. A region too short for a Skip record (under 10 bytes) is left and skipped again
//! at every start. A record with a good CRC that cannot be decoded is reported as
//! corruption and stops the daemon from starting: dropping it could lose mail.
//!
//! Kind 5 (Skip) was added after the first release; an mtad older than it refuses a spool
//! that holds one (unknown kind).
//!
//! Every directory the spool creates is 0700 and every file 0600, set explicitly after
//! creation (the umask does not matter); the lock file and segments are opened with
//! `O_NOFOLLOW`.
//!
//! ## Writing: group commit
//!
//! One thread (the committer) owns the newest segment. Callers send it requests over a
//! channel; it takes the first, drains whatever else is already waiting (up to 8 MiB or 2048
//! requests), writes them all (one `pwritev`, over the zeros ahead, after another MiB of
//! zeros when the batch would go past them), calls `fdatasync` once and only then answers
//! every request.
//! A batch of only delivery statuses and removals of delivered messages is answered
//! without an fsync: those records are made durable by the next batch's fsync, or a second
//! later, or before the segment is rotated or the committer stops. A power loss in that
//! second can bring a delivered message back for one more attempt (a duplicate, as with
//! Postfix, which marks recipients done without an fsync), never lose one.
//! A failed write truncates the segment back to the start of the batch (or abandons the
//! segment if that fails); a failed fsync abandons the segment (page state is unknown after
//! one). Either way the whole batch gets an error (the session answers 451). Past 64 MiB the
//! committer starts a new segment: magic written, file and directory fsync'd before any
//! record in it is acknowledged.
//!
//! ## Deleting segments
//!
//! A segment is deleted only when it and every older segment hold no live message, oldest
//! first with a directory fsync after each: a Remove or status record can therefore never
//! vanish while the Message record it refers to is still on disk.

mod committer;
mod id;
mod index;
pub mod maildrop;
mod record;
mod segment;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::oneshot;

use committer::{Committer, Op, Request, collect_segments};
use id::IdGenerator;
pub use id::{ParseQueueIdError, QueueId};
use index::Index;
pub use record::MessageRecord;
use record::{HEADER_LEN, KIND_MESSAGE, decode};
use segment::{create_segment, io_err, list_segments, read_record, read_segment, segment_path};

/// Segments are rotated once they grow past this size. Small enough that deleting a
/// segment frees space soon after its messages are gone, large enough that rotation
/// (two extra fsyncs) is rare.
const DEFAULT_ROTATE_BYTES: u64 = 64 << 20;

/// The envelope of a queued message, as accepted by the SMTP session.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Envelope {
    /// Reverse path; `""` for the null sender (bounces).
    pub sender: String,
    pub recipients: Vec<String>,
    /// Name of the listener that accepted the message (policy may depend on it at delivery).
    pub listener: String,
    pub helo: String,
    /// None if the address was unknown (e.g. a local injection).
    pub client_ip: Option<std::net::IpAddr>,
    /// The SASL identity, if the client authenticated.
    pub auth_user: Option<String>,
    /// `TLSv1.3 TLS_AES_256_GCM_SHA384` when the message came over TLS (for the route
    /// stage's `tls=` and hooks).
    pub tls: Option<String>,
    /// The body was declared 8BITMIME: delivery must not relay it to a 7-bit-only peer as is.
    pub body_8bit: bool,
    /// SMTPUTF8 was requested: addresses may be UTF-8; the next hop must support it.
    pub smtputf8: bool,
    /// Put on hold by policy (`hold`): kept in the queue, not delivered until released.
    pub held: bool,
    /// The recipients are final: aliases were expanded already (a message split off
    /// from another whose alias expansion was partly delivered). Not expanded again.
    pub expanded: bool,
    /// The content filter the message goes through before delivery (a
    /// `content-filter` name); `None` once filtered or when none applies.
    pub filter: Option<String>,
    /// The revision of the policy that accepted the message
    /// ([`crate::policy::Pipeline::revision`]); `None` in records written before it
    /// was kept.
    pub revision: Option<String>,
    /// The message does not originate with us: it came from a client that neither
    /// authenticated nor is in `dkim-internal` (see [`crate::policy::MailOrigin`]),
    /// so it is not DKIM-signed unless a route says `dkim-sign="always"`. Decided at
    /// receipt; false for mtad's own mail (bounces) and for records written before it
    /// was kept.
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RcptState {
    /// Not attempted yet, or waiting for its first attempt.
    Queued,
    Delivered,
    /// Failed permanently; a bounce is (or was) generated.
    Bounced,
    /// Failed temporarily; retried at `next_attempt_ms`.
    Deferred,
}

/// Where one recipient of a queued message stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RcptStatus {
    pub state: RcptState,
    /// When this status was set (unix ms); the arrival time for a new message.
    pub at_ms: u64,
    pub attempts: u32,
    /// When the scheduler should try next (unix ms); the arrival time for a new message.
    pub next_attempt_ms: u64,
    /// The last reply or reason, for the operator and for bounces.
    pub detail: String,
}

/// The start of the detail of a recipient whose attempt is under way (written just
/// before anything is sent, see [`RcptStatus::attempt_started`]): if mtad stops before
/// the outcome is recorded, the next start sees it.
const IN_FLIGHT: &str = "attempt in progress";
/// What follows [`IN_FLIGHT`] when there was an earlier reason.
const IN_FLIGHT_BEFORE: &str = "attempt in progress; before: ";

impl RcptStatus {
    /// The status recorded just before an attempt starts: deferred, due now, with the
    /// earlier reason kept after the in-flight marker.
    pub fn attempt_started(&self, now_ms: u64) -> RcptStatus {
        RcptStatus {
            state: RcptState::Deferred,
            at_ms: now_ms,
            attempts: self.attempts,
            next_attempt_ms: now_ms,
            detail: format!("{IN_FLIGHT_BEFORE}{}", self.detail),
        }
    }

    /// An attempt was under way when this status was written (and, if the daemon is not
    /// running any more, never finished).
    pub fn in_flight(&self) -> bool {
        self.state == RcptState::Deferred && self.detail.starts_with(IN_FLIGHT)
    }

    /// Still to be delivered: neither delivered nor bounced.
    pub fn pending(&self) -> bool {
        matches!(self.state, RcptState::Queued | RcptState::Deferred)
    }

    /// The last reason the recipient is not delivered yet, without the in-flight marker
    /// (`""` if none): what `mailq` shows in parentheses.
    pub fn reason(&self) -> &str {
        if self.in_flight() {
            self.detail.strip_prefix(IN_FLIGHT_BEFORE).unwrap_or("")
        } else {
            &self.detail
        }
    }
}

/// Where a message's record and body are on disk. Only meaningful to this module and to
/// [`read_body`]; a message moved by compaction gets a new location.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyLocation {
    /// Segment sequence number (`seg-{segment:016x}.log`).
    pub segment: u64,
    /// Offset of the record header in the segment; the whole record is read back so its
    /// CRC can be checked before the body is delivered.
    pub record_offset: u64,
    /// Header + payload length.
    pub record_len: u64,
    /// Offset of the first body byte in the segment.
    pub body_offset: u64,
    pub body_len: u64,
}

/// A queued message as the index holds it: everything but the body, which stays on disk
/// (memory per message is the envelope plus one status per recipient).
#[derive(Clone, Debug, serde::Serialize)]
pub struct QueuedMessage {
    /// Serialized as the 16-digit hex string shown to clients.
    pub id: QueueId,
    pub arrival_ms: u64,
    /// Body length in bytes (the message as received, `Received:` header included).
    pub size: u64,
    pub envelope: Envelope,
    /// One per recipient, in the order of `envelope.recipients`.
    pub rcpt_status: Vec<RcptStatus>,
    #[serde(skip)]
    pub location: BodyLocation,
}

/// Where a queued message stands as a whole, for `mtactl status` and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for its first attempt, or being attempted.
    Active,
    /// A recipient failed temporarily and waits for its retry.
    Deferred,
    /// On hold (policy `hold`, `mtactl queue hold`): not delivered until released.
    Hold,
}

impl MessageState {
    pub const ALL: [MessageState; 3] = [Self::Active, Self::Deferred, Self::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deferred => "deferred",
            Self::Hold => "hold",
        }
    }
}

impl QueuedMessage {
    pub fn state(&self) -> MessageState {
        if self.envelope.held {
            MessageState::Hold
        } else if self.rcpt_status.iter().any(RcptStatus::in_flight) {
            MessageState::Active
        } else if self.rcpt_status.iter().any(|s| {
            s.state == RcptState::Deferred || (s.state == RcptState::Queued && s.attempts > 0)
        }) {
            MessageState::Deferred
        } else {
            MessageState::Active
        }
    }
}

/// How many messages are in each [`MessageState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueCounts {
    pub active: usize,
    pub deferred: usize,
    pub hold: usize,
}

impl QueueCounts {
    pub fn total(&self) -> usize {
        self.active + self.deferred + self.hold
    }

    /// `(state name, count)` for every state.
    pub fn by_state(&self) -> [(&'static str, usize); 3] {
        MessageState::ALL.map(|s| (s.as_str(), self.get(s)))
    }

    pub fn get(&self, state: MessageState) -> usize {
        match state {
            MessageState::Active => self.active,
            MessageState::Deferred => self.deferred,
            MessageState::Hold => self.hold,
        }
    }

    fn add(&mut self, state: MessageState) {
        match state {
            MessageState::Active => self.active += 1,
            MessageState::Deferred => self.deferred += 1,
            MessageState::Hold => self.hold += 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "spool {} is in use by another mtad{} (its lock file is held); stop that daemon or \
         configure a different spool directory",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error(
        "spool: the lock file {} is a symbolic link; mtad does not follow links in its spool \
         (remove it)",
        path.display()
    )]
    LockIsLink { path: PathBuf },
    #[error("the spool is closed (mtad is shutting down)")]
    Closed,
    #[error("spool segment {} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    #[error("message {0} is already queued")]
    DuplicateId(QueueId),
    #[error("message {id} has {count} recipient(s); there is no recipient #{rcpt}")]
    NoSuchRecipient {
        id: QueueId,
        rcpt: u32,
        count: usize,
    },
    #[error("message of {size} bytes is too large for the spool (at most 4 GiB per record)")]
    TooLarge { size: u64 },
    #[error("invalid message record: {0}")]
    InvalidRecord(&'static str),
    #[error("the spool cannot accept writes: {0}")]
    Unavailable(String),
}

/// What [`Spool::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Messages queued after replay.
    pub messages: usize,
    /// Segments whose end held an interrupted (never acknowledged) write, now cut off.
    pub discarded_tails: usize,
    /// Damaged regions in the middle of segments, skipped (every intact record after
    /// them is read) and moved to `corrupt/`.
    pub damaged: usize,
    /// Segment files found before the new one was started.
    pub segments: usize,
}

/// Crate-private knobs, so tests can force rotation.
#[derive(Clone, Debug)]
pub(crate) struct SpoolOptions {
    pub rotate_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            rotate_bytes: DEFAULT_ROTATE_BYTES,
        }
    }
}

pub(crate) fn lock_index(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    // The index is updated in small steps that keep it consistent; a panic elsewhere while
    // holding the lock must not take the spool down with it.
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// The daemon's handle on the spool. Cheap to clone; every clone talks to one committer.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
    ids: IdGenerator,
    sender: RwLock<Option<mpsc::Sender<Request>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// fdatasync calls of the committer on segments.
    fsyncs: Arc<AtomicU64>,
    /// Held for the life of the handle; released after the committer has stopped.
    lock: Flock<File>,
}

impl Inner {
    fn shutdown(&self) {
        // Dropping the sender lets the committer finish what is queued, then exit.
        drop(
            self.sender
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("spool committer thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Creates the directory and its missing parents, each 0700 whatever the umask, then
/// fsyncs the parent of every directory it created: an acknowledged message must not
/// vanish with a directory entry that never reached the disk.
fn create_spool_dir(dir: &Path) -> Result<(), SpoolError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    for created in missing.iter().rev() {
        match segment::create_private_dir(created) {
            Ok(()) => {}
            // made by someone else meanwhile: not ours to chmod
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(e) => return Err(io_err("create spool directory", created, e)),
        }
    }
    for created in missing {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        segment::sync_dir(parent)?;
    }
    Ok(())
}

fn take_lock(dir: &Path) -> Result<Flock<File>, SpoolError> {
    let path = dir.join("lock");
    let file = segment::spool_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == Errno::ELOOP as i32 => {
                SpoolError::LockIsLink { path: path.clone() }
            }
            _ => io_err("open lock file", &path, e),
        })?;
    segment::make_private(&file).map_err(|e| io_err("chmod lock file", &path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let pid = format!("{}\n", std::process::id());
            let written = lock
                .set_len(0)
                .and_then(|()| lock.write_all_at(pid.as_bytes(), 0));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "spool: cannot record the pid in the lock file");
            }
            Ok(lock)
        }
        Err((mut file, errno)) if errno == Errno::EWOULDBLOCK => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            Err(SpoolError::Locked {
                dir: dir.to_path_buf(),
                holder,
            })
        }
        Err((_, errno)) => Err(io_err("lock", &path, io::Error::from(errno))),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Lock held: repair torn tails.
    Daemon,
    /// A daemon may be writing: change nothing, hide what may be a write in progress.
    ReadOnly,
}

struct Recovered {
    index: Index,
    stats: Recovery,
    max_seq: Option<u64>,
    max_id: u64,
}

fn record_id(decoded: &record::Decoded) -> QueueId {
    match decoded {
        record::Decoded::Message(m) => m.id,
        record::Decoded::Status { id, .. }
        | record::Decoded::Remove { id }
        | record::Decoded::Hold { id, .. } => *id,
        record::Decoded::Skip => QueueId(0),
    }
}

fn recover(dir: &Path, mode: Mode) -> Result<Recovered, SpoolError> {
    let seqs = list_segments(dir)?;
    let newest = seqs.last().copied();
    let mut index = Index::default();
    let mut stats = Recovery {
        segments: seqs.len(),
        ..Recovery::default()
    };
    let mut max_id = 0;
    let mut deleted_any = false;
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let read = read_segment(&path, |rec| {
            let decoded = decode(rec.kind, rec.payload).map_err(|e| SpoolError::Corrupt {
                path: path.clone(),
                offset: rec.offset,
                reason: e.to_string(),
            })?;
            max_id = max_id.max(record_id(&decoded).0);
            index.apply(seq, rec.offset, rec.len, decoded);
            Ok(())
        });
        let end = match read {
            Ok(end) => end,
            // Deleted by the daemon's garbage collection since we listed the directory.
            Err(SpoolError::Io { source, .. })
                if mode == Mode::ReadOnly && source.kind() == io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        for damage in &end.damaged {
            match mode {
                Mode::Daemon => {
                    stats.damaged += 1;
                    move_aside(dir, seq, &path, damage.offset, damage.len, damage.reason)?;
                }
                Mode::ReadOnly => {
                    tracing::warn!(segment = %path.display(), offset = damage.offset,
                        bytes = damage.len, reason = damage.reason,
                        "spool scan: damaged record in the middle of a segment, skipped; \
                         mtad moves it to corrupt/ at its next start");
                }
            }
        }
        if let Some(reason) = end.torn {
            match mode {
                Mode::Daemon => {
                    stats.discarded_tails += 1;
                    let discarded_bytes = end.file_len - end.good_len;
                    if end.keep_tail {
                        // an interrupted write, or an acknowledged record damaged on
                        // disk: they look alike, so the bytes are kept
                        let kept = segment::keep_aside(
                            dir,
                            seq,
                            end.good_len,
                            end.kept_end - end.good_len,
                        )?;
                        tracing::warn!(
                            segment = %path.display(),
                            offset = end.good_len,
                            discarded_bytes,
                            reason,
                            kept = %kept.display(),
                            "spool: cutting a damaged record off the end of a segment (an \
                             interrupted write, or damage on disk); its bytes are kept"
                        );
                    } else {
                        tracing::warn!(
                            segment = %path.display(),
                            offset = end.good_len,
                            discarded_bytes,
                            reason,
                            "spool: discarding an interrupted write at the end of a segment \
                             (it was never acknowledged)"
                        );
                    }
                    if end.no_magic {
                        fs::remove_file(&path)
                            .map_err(|e| io_err("delete empty segment", &path, e))?;
                        deleted_any = true;
                        continue;
                    }
                    segment::spool_file()
                        .write(true)
                        .open(&path)
                        .and_then(|f| {
                            f.set_len(end.good_len)?;
                            f.sync_all()
                        })
                        .map_err(|e| io_err("truncate torn segment", &path, e))?;
                }
                Mode::ReadOnly => {
                    if Some(seq) == newest {
                        tracing::debug!(segment = %path.display(), offset = end.good_len, reason,
                            "spool scan: incomplete record at the end of the newest segment (a write in progress?)");
                    } else {
                        tracing::warn!(segment = %path.display(), offset = end.good_len, reason,
                            "spool scan: torn record at the end of a segment; mtad cuts it at its next start");
                    }
                    if end.no_magic {
                        continue;
                    }
                }
            }
        }
        index.add_segment(seq);
    }
    if deleted_any {
        segment::sync_dir(dir)?;
    }
    stats.messages = index.messages.len();
    Ok(Recovered {
        index,
        stats,
        max_seq: newest,
        max_id,
    })
}

/// Damaged bytes in the middle of segment `seq`: copied to `corrupt/`, then overwritten
/// with a Skip record, with one warning. Every record before and after them was read.
fn move_aside(
    dir: &Path,
    seq: u64,
    path: &Path,
    offset: u64,
    len: u64,
    reason: &'static str,
) -> Result<(), SpoolError> {
    let kept = segment::keep_aside(dir, seq, offset, len)?;
    let filled = segment::fill_with_skip(path, offset, len)?;
    tracing::warn!(
        segment = %path.display(),
        offset,
        bytes = len,
        reason,
        kept = %kept.display(),
        "spool: damaged record in the middle of a segment moved to corrupt/; the records \
         after it are read{}",
        if filled { "" } else { " (too short to overwrite: skipped again at every start)" }
    );
    Ok(())
}

impl Spool {
    /// Daemon open: creates the directory if missing, takes the lock, replays every
    /// segment, cuts torn tails, deletes dead segments and starts the committer on a fresh
    /// segment.
    pub fn open(dir: &Path) -> Result<(Spool, Recovery), SpoolError> {
        Self::open_with(dir, SpoolOptions::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        options: SpoolOptions,
    ) -> Result<(Spool, Recovery), SpoolError> {
        create_spool_dir(dir)?;
        let lock = take_lock(dir)?;
        let recovered = recover(dir, Mode::Daemon)?;
        let index = Arc::new(Mutex::new(recovered.index));

        let dead = lock_index(&index).collectable(None);
        collect_segments(dir, &index, &dead);

        let first_seq = recovered.max_seq.map_or(1, |s| s + 1);
        let first_file = create_segment(dir, first_seq)?;
        lock_index(&index).add_segment(first_seq);

        let highest = recovered.max_id.max(lock_index(&index).highest_id());
        let (tx, rx) = mpsc::channel();
        let fsyncs = Arc::new(AtomicU64::new(0));
        let committer = Committer::new(
            dir.to_path_buf(),
            Arc::clone(&index),
            first_seq,
            first_file,
            options.rotate_bytes,
            Arc::clone(&fsyncs),
        );
        let handle = std::thread::Builder::new()
            .name("mtad-spool".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| io_err("start the committer thread for", dir, e))?;

        let stats = recovered.stats;
        tracing::debug!(
            spool = %dir.display(),
            messages = stats.messages,
            segments = stats.segments,
            discarded_tails = stats.discarded_tails,
            damaged = stats.damaged,
            "spool opened"
        );
        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                index,
                ids: IdGenerator::new(highest),
                sender: RwLock::new(Some(tx)),
                committer: Mutex::new(Some(handle)),
                fsyncs,
                lock,
            }),
        };
        Ok((spool, stats))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A fresh id, strictly greater than every id handed out before by this process and
    /// every id found in the spool.
    pub fn new_id(&self) -> QueueId {
        self.inner.ids.next()
    }

    /// How many times the committer has called fdatasync on a segment since the spool
    /// was opened (`mtad_spool_fsyncs_total`).
    pub fn fsyncs(&self) -> u64 {
        self.inner.fsyncs.load(Ordering::Relaxed)
    }

    /// Bytes available to unprivileged users on the spool's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        // of the lock file, which is in the spool: no path to look up
        let st = nix::sys::statvfs::fstatvfs(&*self.inner.lock).map_err(io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // the widths differ between platforms
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    async fn submit(&self, op: Op) -> Result<(), SpoolError> {
        self.send(op)?.await.map_err(|_| SpoolError::Closed)?
    }

    /// Hands `op` to the committer; the receiver gets its answer.
    fn send(&self, op: Op) -> Result<oneshot::Receiver<Result<(), SpoolError>>, SpoolError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.inner.sender.read().unwrap_or_else(|e| e.into_inner());
        let sender = sender.as_ref().ok_or(SpoolError::Closed)?;
        sender
            .send(Request { op, reply })
            .map_err(|_| SpoolError::Closed)?;
        Ok(answer)
    }

    /// Queues a message. When this returns Ok the record is fsync'd and so is the directory
    /// entry of its segment: the caller may answer 250. On Err nothing was acknowledged and
    /// the caller answers 451. (If the future is dropped after the request was sent, the
    /// message may still be queued: a duplicate, never a loss.)
    pub async fn commit(&self, record: MessageRecord) -> Result<QueueId, SpoolError> {
        let id = record.id();
        let sealed = record.finish()?;
        self.submit(Op::Message(sealed)).await?;
        Ok(id)
    }

    /// Records the outcome of a delivery attempt for recipient `rcpt` (index into
    /// `envelope.recipients`). Written when this returns, durable with the next fsync (at
    /// most a second later; see [`Spool::remove_delivered`]).
    pub async fn set_status(
        &self,
        id: QueueId,
        rcpt: u32,
        status: RcptStatus,
    ) -> Result<(), SpoolError> {
        let bytes = record::encode_status(id, rcpt, &status);
        self.submit(Op::Status {
            id,
            rcpt,
            status,
            bytes,
        })
        .await
    }

    /// Several statuses of one message at once, written together (as
    /// [`Spool::set_status`]). Stops at the first error.
    pub async fn set_statuses(
        &self,
        id: QueueId,
        statuses: Vec<(u32, RcptStatus)>,
    ) -> Result<(), SpoolError> {
        let mut answers = Vec::with_capacity(statuses.len());
        for (rcpt, status) in statuses {
            let bytes = record::encode_status(id, rcpt, &status);
            answers.push(self.send(Op::Status {
                id,
                rcpt,
                status,
                bytes,
            })?);
        }
        for answer in answers {
            answer.await.map_err(|_| SpoolError::Closed)??;
        }
        Ok(())
    }

    /// Removes a message from the queue, durably (an operator's delete); segments left
    /// without live messages are then deleted (oldest first).
    pub async fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let bytes = record::encode_remove(id);
        self.submit(Op::Remove {
            id,
            bytes,
            durable: true,
        })
        .await
    }

    /// Removes a message whose delivery is over (every recipient delivered, bounced or
    /// expired), like [`Spool::remove`] but without an fsync of its own: the record is
    /// written at once and made durable by the next fsync, at most a second later. A power
    /// loss in between can only bring the message back for one more delivery attempt.
    pub async fn remove_delivered(&self, id: QueueId) -> Result<(), SpoolError> {
        let bytes = record::encode_remove(id);
        self.submit(Op::Remove {
            id,
            bytes,
            durable: false,
        })
        .await
    }

    /// Puts a message on hold (`held = true`: kept, not delivered) or releases it, durably.
    /// [`SpoolError::NotFound`] if it is not queued. Always writes a record, even if the
    /// message is already in that state.
    pub async fn set_held(&self, id: QueueId, held: bool) -> Result<(), SpoolError> {
        let bytes = record::encode_hold(id, held);
        self.submit(Op::Hold { id, held, bytes }).await
    }

    #[cfg(test)]
    pub(crate) async fn break_active_segment(&self) -> Result<(), SpoolError> {
        self.submit(Op::BreakActiveSegment).await
    }

    /// Waits until the committer has finished everything sent before (rotation and
    /// segment deletion happen after the replies).
    #[cfg(test)]
    pub(crate) async fn barrier(&self) {
        self.submit(Op::Barrier).await.unwrap();
    }

    /// Every queued message, sorted by id.
    pub fn list(&self) -> Vec<QueuedMessage> {
        lock_index(&self.inner.index)
            .messages
            .values()
            .cloned()
            .collect()
    }

    /// Messages per state, counted without copying the index.
    pub fn counts(&self) -> QueueCounts {
        let mut counts = QueueCounts::default();
        for m in lock_index(&self.inner.index).messages.values() {
            counts.add(m.state());
        }
        counts
    }

    /// When the oldest message in the queue arrived (ms since the epoch); None when
    /// the queue is empty.
    pub fn oldest_arrival_ms(&self) -> Option<u64> {
        lock_index(&self.inner.index)
            .messages
            .values()
            .map(|m| m.arrival_ms)
            .min()
    }

    pub fn get(&self, id: QueueId) -> Option<QueuedMessage> {
        lock_index(&self.inner.index).messages.get(&id).cloned()
    }

    /// Reads the body back from its segment, checking the record's CRC.
    /// The body of a message the committer wrote moments ago, if it is still in memory
    /// (once: a second call, or a later attempt, reads the spool). Never blocks on I/O.
    pub fn fresh_body(&self, id: QueueId) -> Option<bytes::Bytes> {
        lock_index(&self.inner.index).fresh.take(id)
    }

    pub fn read_body(&self, id: QueueId) -> Result<Vec<u8>, SpoolError> {
        let location = lock_index(&self.inner.index)
            .messages
            .get(&id)
            .map(|m| m.location)
            .ok_or(SpoolError::NotFound(id))?;
        read_body_at(&self.inner.dir, id, &location)
    }

    /// Stops the committer once it has answered every request already sent; later calls
    /// to `commit`, `set_status` and `remove` fail with [`SpoolError::Closed`]. Reading
    /// (`list`, `get`, `read_body`) keeps working. The lock is released when the last
    /// clone is dropped.
    pub fn close(&self) {
        self.inner.shutdown();
    }
}

/// Read-only view for `mtactl` while a daemon may be running: no lock, no truncation, no
/// deletion. An incomplete record at the end of a segment is not reported (on the newest
/// segment it may be a write in progress). Sorted by id.
pub fn scan(dir: &Path) -> Result<Vec<QueuedMessage>, SpoolError> {
    let recovered = recover(dir, Mode::ReadOnly)?;
    Ok(recovered.index.messages.into_values().collect())
}

/// Reads a message body found by [`scan`], checking its CRC. Fails if the daemon deleted
/// the message (and its segment) since.
pub fn read_body(dir: &Path, msg: &QueuedMessage) -> Result<Vec<u8>, SpoolError> {
    read_body_at(dir, msg.id, &msg.location)
}

fn read_body_at(dir: &Path, id: QueueId, loc: &BodyLocation) -> Result<Vec<u8>, SpoolError> {
    let path = segment_path(dir, loc.segment);
    let mut rec = read_record(&path, loc.record_offset, loc.record_len)?;
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.clone(),
        offset: loc.record_offset,
        reason,
    };
    // Payload: version u8, then the id.
    let id_at = HEADER_LEN + 1;
    if rec[8] != KIND_MESSAGE || rec.len() < id_at + 8 {
        return Err(corrupt(
            "the index points at a record that is not a message".into(),
        ));
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&rec[id_at..id_at + 8]);
    if u64::from_le_bytes(found) != id.0 {
        return Err(corrupt(format!(
            "the index points at message {} instead of {id}",
            QueueId(u64::from_le_bytes(found))
        )));
    }
    let start = loc
        .body_offset
        .checked_sub(loc.record_offset)
        .and_then(|s| usize::try_from(s).ok())
        .filter(|&s| s as u64 + loc.body_len == rec.len() as u64)
        .ok_or_else(|| corrupt("the body location does not match the record".into()))?;
    rec.drain(..start);
    Ok(rec)
}
