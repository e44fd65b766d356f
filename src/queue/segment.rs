//! Segment files: naming, creation, sequential reading with torn-tail detection, and
//! reading one record back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
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
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create segment", &path, e))?;
    let result = file
        .write_all(MAGIC)
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

/// What reading a segment found.
#[derive(Debug)]
pub(crate) struct SegmentEnd {
    /// End of the last intact record (at least the magic length unless `no_magic`).
    pub good_len: u64,
    pub file_len: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub torn: Option<&'static str>,
    /// The file is too short to hold its magic (created, then a crash before the magic
    /// was on disk): it never held an acknowledged record.
    pub no_magic: bool,
}

/// Reads every intact record of a segment in order and calls `visit` for each. Stops at the
/// first record whose header or payload is cut short or whose CRC does not match: that is
/// a torn tail (an unacknowledged write interrupted by a crash).
pub(crate) fn read_segment(
    path: &Path,
    mut visit: impl FnMut(RecordAt<'_>) -> Result<(), SpoolError>,
) -> Result<SegmentEnd, SpoolError> {
    let file = File::open(path).map_err(|e| io_err("open segment", path, e))?;
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
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        if u64::from(len) > remaining - HEADER_LEN as u64 {
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
        if record_crc(kind, &payload) != crc {
            break Some("record checksum mismatch");
        }
        let rec_len = HEADER_LEN as u64 + u64::from(len);
        visit(RecordAt {
            offset,
            len: rec_len,
            kind,
            payload: &payload,
        })?;
        offset += rec_len;
    };
    Ok(SegmentEnd {
        good_len: offset,
        file_len,
        torn,
        no_magic: false,
    })
}

/// Reads the record at `offset` (`len` bytes including the header) and checks its CRC.
/// Returns the whole record; the payload starts at `HEADER_LEN`.
pub(crate) fn read_record(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
    let file = File::open(path).map_err(|e| io_err("open segment", path, e))?;
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
