//! Segment files: naming, creation, sequential reading with torn-tail detection, and
//! reading one record back.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SpoolError;
use super::record::{HEADER_LEN, MAGIC, record_crc};

pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:016x}.log")
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

/// `seg-{16 lowercase hex}.log` → seq. Anything else in the directory is not ours.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> SpoolError {
    SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Segment sequence numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("read spool directory", dir, e))?;
    let mut seqs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("read spool directory", dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Mode of every directory the spool creates: only mtad's user may list or enter it.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file the spool creates: only mtad's user may read it (mail).
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates one directory, mode 0700 whatever the umask (`mkdir` applies the umask, so
/// the mode is set again once it exists).
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Options for opening a spool file: never through a symbolic link (`O_NOFOLLOW`: a
/// link planted in the spool must not make mtad write, truncate or read elsewhere),
/// created 0600 (see [`make_private`]).
pub(crate) fn spool_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .mode(FILE_MODE)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    options
}

/// Sets a file mtad created (or owns) to 0600 whatever the umask was at creation.
pub(crate) fn make_private(file: &File) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// fsync the directory itself, so created or deleted entries are on disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync spool directory", dir, e))
}

/// Creates a segment with its magic, fsyncs the file and the directory: after this returns,
/// anything appended and fsync'd to the file survives a crash.
pub(crate) fn create_segment(dir: &Path, seq: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, seq);
    let mut file = spool_file()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create segment", &path, e))?;
    let result = make_private(&file)
        .and_then(|()| file.write_all(MAGIC))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write segment header", &path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = result {
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// One intact record found while reading a segment.
pub(crate) struct RecordAt<'a> {
    /// Offset of the record header in the file.
    pub offset: u64,
    /// Header + payload length.
    pub len: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// Bytes in the middle of a segment that are not an intact record, followed by one that
/// is: damage on disk (a flipped bit, a bad sector), not an interrupted write (those only
/// ever leave damage at the end). Reading resumes at `offset + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Damaged {
    pub offset: u64,
    pub len: u64,
    pub reason: &'static str,
}

/// What reading a segment found.
#[derive(Debug)]
pub(crate) struct SegmentEnd {
    /// End of the last intact record (at least the magic length unless `no_magic`).
    pub good_len: u64,
    pub file_len: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub torn: Option<&'static str>,
    /// The tail from `good_len` on may hold acknowledged records, so its bytes are kept
    /// aside before it is cut: it held a whole record whose checksum does not match (an
    /// interrupted write and an acknowledged record damaged on disk look alike), or a
    /// record whose length runs past the end of the file followed by bytes that look
    /// like intact records (a damaged length rather than a torn write).
    pub keep_tail: bool,
    /// With `keep_tail`: the end of the tail's last byte that is not zero (the zeros
    /// after it are the committer's, written ahead of its records): what is kept ends
    /// there.
    pub kept_end: u64,
    /// Damaged regions skipped in the middle of the segment, in file order.
    pub damaged: Vec<Damaged>,
    /// The file is too short to hold its magic (created, then a crash before the magic
    /// was on disk): it never held an acknowledged record.
    pub no_magic: bool,
}

/// How many payload bytes the searches for the next intact record after a damaged one
/// may checksum in all, per segment (candidates whose framing looks right but whose CRC
/// is wrong). Past it the rest of the segment is handled as a damaged tail. Bounds the time a start can
/// take on a hostile or badly damaged segment.
const RESYNC_BUDGET: u64 = 1 << 30;
/// The search reads the file in windows of this size.
const RESYNC_WINDOW: usize = 1 << 20;

/// The payload length a record of `kind` may have, for the search's cheap first test:
/// kinds with a fixed layout have a fixed or bounded length.
fn plausible(kind: u8, len: u64) -> bool {
    use super::record::{KIND_HOLD, KIND_MESSAGE, KIND_REMOVE, KIND_SKIP, KIND_STATUS};
    match kind {
        // version, id, arrival, flags, five strings, recipient count, body length
        KIND_MESSAGE => len >= 1 + 8 + 8 + 1 + 5 * 4 + 4 + 8,
        // version .. detail length, then a detail of at most 64 KiB
        KIND_STATUS => (38..=38 + 64 * 1024).contains(&len),
        KIND_REMOVE => len == 9,
        KIND_HOLD => len == 10,
        KIND_SKIP => len >= 1,
        _ => false,
    }
}

/// Whether an intact record starts at `offset`: its header fits, its kind and length
/// are plausible, its CRC matches and it decodes. `Some(record length)` if so.
/// Checksummed bytes are taken from `budget`; `Err` once it is spent.
fn intact_at(
    file: &File,
    offset: u64,
    file_len: u64,
    budget: &mut u64,
) -> io::Result<Result<Option<u64>, ()>> {
    if file_len.saturating_sub(offset) < HEADER_LEN as u64 + 1 {
        return Ok(Ok(None));
    }
    let mut header = [0u8; HEADER_LEN + 1];
    file.read_exact_at(&mut header, offset)?;
    let len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let kind = header[8];
    // every kind's version is 1 so far
    if header[9] != 1 || !plausible(kind, len) || len > file_len - offset - HEADER_LEN as u64 {
        return Ok(Ok(None));
    }
    if len > *budget {
        return Ok(Err(()));
    }
    *budget -= len;
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)?;
    if record_crc(kind, &payload) != crc || super::record::decode(kind, &payload).is_err() {
        return Ok(Ok(None));
    }
    Ok(Ok(Some(HEADER_LEN as u64 + len)))
}

/// After a damaged record at `damaged`, whose header says it is `stated` bytes long
/// (header included; `None` if that runs past the end): where the next intact record
/// starts, or `None` when there is none (the damage is the segment's tail).
///
/// The record's own length is tried first (a bit flipped in a payload leaves the
/// framing intact); if no intact record starts there, every later offset is tried in
/// turn, within what is left of the segment's [`RESYNC_BUDGET`].
fn resync(
    file: &File,
    damaged: u64,
    stated: Option<u64>,
    file_len: u64,
    budget: &mut u64,
) -> io::Result<Option<u64>> {
    if let Some(stated) = stated {
        let end = damaged + stated;
        if end == file_len {
            return Ok(None);
        }
        if let Ok(Some(_)) = intact_at(file, end, file_len, budget)? {
            return Ok(Some(end));
        }
    }
    let mut window = vec![0u8; RESYNC_WINDOW];
    let mut start = damaged + 1;
    while file_len.saturating_sub(start) > HEADER_LEN as u64 {
        let n = (RESYNC_WINDOW as u64).min(file_len - start) as usize;
        file.read_exact_at(&mut window[..n], start)?;
        // a header's kind and version bytes must be in this window to test it here;
        // the last few offsets are tested again at the start of the next window
        let last = n.saturating_sub(HEADER_LEN + 1);
        for i in 0..=last {
            if i + HEADER_LEN >= n {
                break;
            }
            let kind = window[i + 8];
            if !(1..=5).contains(&kind) || window[i + HEADER_LEN] != 1 {
                continue;
            }
            match intact_at(file, start + i as u64, file_len, budget)? {
                Ok(Some(_)) => return Ok(Some(start + i as u64)),
                Ok(None) => {}
                Err(()) => {
                    tracing::warn!(
                        offset = damaged,
                        "spool: gave up looking for an intact record after a damaged one \
                         (too many false candidates); the rest of the segment is damaged"
                    );
                    return Ok(None);
                }
            }
        }
        if start + n as u64 >= file_len {
            break;
        }
        start += (last + 1) as u64;
    }
    Ok(None)
}

/// Whether the bytes from `from` to `file_len` are all zero.
fn zeros_to_end(file: &File, from: u64, file_len: u64) -> io::Result<bool> {
    Ok(nonzero_end(file, from, file_len)? == from)
}

/// The end of the last byte that is not zero between `from` and `file_len` (`from` if
/// there is none): where a segment's tail stops holding anything but the committer's
/// zeros ([`super::committer::ZERO_AHEAD`]). Reads backwards in windows.
fn nonzero_end(file: &File, from: u64, file_len: u64) -> io::Result<u64> {
    let mut window = vec![0u8; RESYNC_WINDOW];
    let mut end = file_len;
    while end > from {
        let n = (RESYNC_WINDOW as u64).min(end - from) as usize;
        let at = end - n as u64;
        file.read_exact_at(&mut window[..n], at)?;
        if let Some(last) = window[..n].iter().rposition(|&b| b != 0) {
            return Ok(at + last as u64 + 1);
        }
        end = at;
    }
    Ok(from)
}

/// Reads every intact record of a segment in order and calls `visit` for each.
///
/// A record whose CRC does not match, or whose header cannot be one, is damage: if an
/// intact record follows it, the bytes in between are reported in
/// [`SegmentEnd::damaged`] and reading goes on there; otherwise it is the segment's
/// tail. A record whose stated length runs past the end of the file is a torn tail (an
/// unacknowledged write interrupted by a crash), and so is a header cut short.
pub(crate) fn read_segment(
    path: &Path,
    mut visit: impl FnMut(RecordAt<'_>) -> Result<(), SpoolError>,
) -> Result<SegmentEnd, SpoolError> {
    let file = spool_file()
        .read(true)
        .open(path)
        .map_err(|e| io_err("open segment", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| io_err("stat segment", path, e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let read_err = |e: io::Error| io_err("read segment", path, e);

    let magic_len = MAGIC.len() as u64;
    let mut head = [0u8; 8];
    let got = (file_len.min(magic_len)) as usize;
    reader.read_exact(&mut head[..got]).map_err(read_err)?;
    if file_len <= magic_len && &head[..got] != MAGIC {
        // Only the magic was ever written before the file was fsync'd and used, so a short
        // or zero-filled file this small is a segment whose creation was interrupted.
        if head[..got].iter().all(|&b| b == 0) || MAGIC.starts_with(&head[..got]) {
            return Ok(SegmentEnd {
                good_len: 0,
                file_len,
                torn: Some("segment header cut short"),
                keep_tail: false,
                kept_end: file_len,
                damaged: Vec::new(),
                no_magic: true,
            });
        }
    }
    if &head[..got] != MAGIC {
        return Err(SpoolError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "the file does not start with the MTADSEG1 magic; it is not an mtad \
                     segment, or its start was overwritten"
                .into(),
        });
    }

    let mut offset = magic_len;
    let mut payload = Vec::new();
    let mut damaged = Vec::new();
    let mut keep_tail = false;
    let mut budget = RESYNC_BUDGET;
    let torn = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < HEADER_LEN as u64 {
            break Some("record header cut short");
        }
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            // The file shrank under a read-only scan.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break Some("record header cut short");
            }
            Err(e) => return Err(read_err(e)),
        }
        // the zeros the committer writes ahead of its records (no record's header is
        // zeros: kind 0 is none)
        if header == [0; HEADER_LEN]
            && zeros_to_end(reader.get_ref(), offset, file_len).map_err(read_err)?
        {
            break None;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        if u64::from(len) > remaining - HEADER_LEN as u64 {
            // What a crash leaves: the header written, the payload not (all of it). Not
            // searched for a next record to read on: what a torn write leaves may hold
            // record-shaped bytes of the message being written. But if something that
            // looks intact follows, the length may be damage instead: the bytes are kept.
            keep_tail = resync(reader.get_ref(), offset, None, file_len, &mut budget)
                .map_err(read_err)?
                .is_some();
            break Some("record payload cut short");
        }
        payload.resize(len as usize, 0);
        match reader.read_exact(&mut payload) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break Some("record payload cut short");
            }
            Err(e) => return Err(read_err(e)),
        }
        let rec_len = HEADER_LEN as u64 + u64::from(len);
        if record_crc(kind, &payload) != crc {
            match resync(
                reader.get_ref(),
                offset,
                Some(rec_len),
                file_len,
                &mut budget,
            )
            .map_err(read_err)?
            {
                Some(next) => {
                    damaged.push(Damaged {
                        offset,
                        len: next - offset,
                        reason: "record checksum mismatch",
                    });
                    reader.seek(SeekFrom::Start(next)).map_err(read_err)?;
                    offset = next;
                    continue;
                }
                None => {
                    keep_tail = true;
                    break Some("record checksum mismatch");
                }
            }
        }
        visit(RecordAt {
            offset,
            len: rec_len,
            kind,
            payload: &payload,
        })?;
        offset += rec_len;
    };
    let kept_end = if keep_tail {
        nonzero_end(reader.get_ref(), offset, file_len).map_err(read_err)?
    } else {
        file_len
    };
    Ok(SegmentEnd {
        good_len: offset,
        file_len,
        torn,
        keep_tail,
        kept_end,
        damaged,
        no_magic: false,
    })
}

/// The directory damaged bytes are moved to, inside the spool.
pub(crate) const CORRUPT_DIR: &str = "corrupt";

/// Copies `len` bytes at `offset` of segment `seq` to `corrupt/seg-{seq:016x}.log@OFFSET`
/// in the spool (0600; the directory 0700, created if need be), durably: written to a
/// temporary name, fsync'd, renamed, the directory fsync'd. A copy that is already there
/// (kept at an earlier start that was interrupted before the segment was repaired) is
/// left as it is: it holds the bytes as they first were found.
pub(crate) fn keep_aside(
    dir: &Path,
    seq: u64,
    offset: u64,
    len: u64,
) -> Result<PathBuf, SpoolError> {
    let corrupt = dir.join(CORRUPT_DIR);
    match fs::symlink_metadata(&corrupt) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io_err(
                "use the corrupt directory",
                &corrupt,
                io::Error::other("it exists and is not a directory"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(&corrupt)
                .map_err(|e| io_err("create the corrupt directory", &corrupt, e))?;
            sync_dir(dir)?;
        }
        Err(e) => return Err(io_err("stat the corrupt directory", &corrupt, e)),
    }
    let name = format!("{}@{offset}", segment_name(seq));
    let dest = corrupt.join(&name);
    if fs::symlink_metadata(&dest).is_ok() {
        return Ok(dest);
    }
    let tmp = corrupt.join(format!("{name}.tmp"));
    let source = segment_path(dir, seq);
    let copy = || -> Result<(), SpoolError> {
        let from = spool_file()
            .read(true)
            .open(&source)
            .map_err(|e| io_err("open segment", &source, e))?;
        let to = spool_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err("create", &tmp, e))?;
        make_private(&to).map_err(|e| io_err("chmod", &tmp, e))?;
        let mut buf = vec![0u8; (1 << 20).min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], offset + done)
                .map_err(|e| io_err("read segment", &source, e))?;
            to.write_all_at(&buf[..n], done)
                .map_err(|e| io_err("write", &tmp, e))?;
            done += n as u64;
        }
        to.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        fs::rename(&tmp, &dest).map_err(|e| io_err("rename", &tmp, e))?;
        sync_dir(&corrupt)
    };
    copy().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(dest)
}

/// Overwrites `len` damaged bytes at `offset` of a segment with one Skip record (the
/// version byte, then zeros), fsync'd: the segment reads cleanly from then on. False
/// when `len` is too short to hold a record (the bytes are then left as they are and
/// skipped again at every start).
pub(crate) fn fill_with_skip(path: &Path, offset: u64, len: u64) -> Result<bool, SpoolError> {
    let Some(header) = super::record::skip_header(len) else {
        return Ok(false);
    };
    let file = spool_file()
        .write(true)
        .open(path)
        .map_err(|e| io_err("open segment", path, e))?;
    let write = || -> io::Result<()> {
        // zeros first, the header last: until the header is in place the region still
        // fails its checksum and is found again, and the copy in corrupt/ is kept
        let zeros = vec![0u8; (1 << 20).min(len as usize)];
        let mut at = header.len() as u64;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], offset + at)?;
            at += n as u64;
        }
        file.sync_data()?;
        file.write_all_at(&header, offset)?;
        file.sync_data()
    };
    write().map_err(|e| io_err("repair segment", path, e))?;
    Ok(true)
}

/// Reads the record at `offset` (`len` bytes including the header) and checks its CRC.
/// Returns the whole record; the payload starts at `HEADER_LEN`.
pub(crate) fn read_record(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
    let file = spool_file()
        .read(true)
        .open(path)
        .map_err(|e| io_err("open segment", path, e))?;
    let len_usize = usize::try_from(len).map_err(|_| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: format!("record length {len} does not fit in memory"),
    })?;
    let mut buf = vec![0u8; len_usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| io_err("read segment", path, e))?;
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if buf.len() < HEADER_LEN {
        return Err(corrupt("record shorter than its header".into()));
    }
    let payload_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if u64::from(payload_len) + HEADER_LEN as u64 != len {
        return Err(corrupt(format!(
            "record length {payload_len} does not match the index ({} expected)",
            len - HEADER_LEN as u64
        )));
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32fast::hash(&buf[8..]) != crc {
        return Err(corrupt(
            "record checksum mismatch: the message changed on disk since it was queued".into(),
        ));
    }
    Ok(buf)
}
