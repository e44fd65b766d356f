//! The maildrop: where the `sendmail` command leaves messages for the daemon to pick
//! up, whether the daemon runs or not (Postfix's postdrop/pickup model; the security
//! model is in `docs/local-submission.md`).
//!
//! # The directory
//!
//! Mode 1730, owned by the daemon's user and the submission group (`local-submission
//! { group }`): the group may create files but not list, read or (sticky bit) remove
//! anyone else's; others may not enter. The daemon refuses a maildrop that is
//! world-writable, and so does the submitting side.
//!
//! # A drop file (this is a contract between `sendmail` and the daemon of the same
//! version or newer)
//!
//! Created `O_EXCL | O_NOFOLLOW`, mode 0604 (the daemon's user reads it as "other";
//! the submission group, which every submitter's `sendmail` runs with, cannot), owned
//! by the submitter's real uid, which is what the daemon trusts as the submitter.
//!
//! ```text
//! MTADDROP1\n
//! S sender\n        envelope sender as given (-f/-r); absent: the submitter's login
//! R address\n       a recipient from the command line (repeated)
//! T\n               -t: recipients are also read from To/Cc/Bcc (Bcc removed)
//! F full name\n     -F
//! B 8BITMIME\n      -B 8BITMIME (or 7BIT)
//! U\n               SMTPUTF8 requested
//! N notify\n        -N (kept for the record)
//! V envid\n         -V (kept for the record)
//! L length\n        the message's length in bytes; the message follows
//! <length bytes>END\n
//! ```
//!
//! A file is complete when its trailer `END\n` ends it exactly where `L` says; the
//! writer fsyncs it before `sendmail` exits 0. An incomplete file is one still being
//! written, or one whose writer died: the daemon leaves it alone, and removes it once
//! it is a day old.
//!
//! # Picking up exactly once
//!
//! The daemon claims a file by renaming `NAME` to `NAME@QUEUEID` (directory fsync'd),
//! commits the message to the spool under that queue id, removes the file (directory
//! fsync'd) and only then lets the scheduler deliver it. At start, before the
//! scheduler runs, a claimed file whose id is in the spool is removed (it was queued);
//! one whose id is not is renamed back and picked up again. So a crash at any point
//! neither loses nor duplicates a message.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::QueueId;

const MAGIC: &[u8] = b"MTADDROP1\n";
const TRAILER: &[u8] = b"END\n";
/// The longest header line of a drop file (an address, a full name).
const MAX_LINE: usize = 4096;
/// The most recipients a drop file may name on its command line.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Mode of a drop file: owner read/write, others (the daemon's user) read.
pub const FILE_MODE: u32 = 0o604;
/// Mode of the maildrop directory: sticky, owner rwx, group wx.
pub const DIR_MODE: u32 = 0o1730;

/// A message as `sendmail` hands it over: what the command line said and the
/// message read from its standard input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// `-f`/`-r` as given (`Some("")` is the null sender); `None`: the submitter.
    pub sender: Option<String>,
    /// Recipients from the command line.
    pub recipients: Vec<String>,
    /// `-t`: read recipients from the headers too, and remove Bcc.
    pub extract: bool,
    /// `-F`: the full name for a From: header that cleanup adds.
    pub full_name: Option<String>,
    /// `-B`: `Some(true)` 8BITMIME, `Some(false)` 7BIT, `None` not said.
    pub body_8bit: Option<bool>,
    pub smtputf8: bool,
    /// `-N` and `-V`, as given.
    pub notify: Option<String>,
    pub envid: Option<String>,
    /// The message, line endings as read (LF or CRLF).
    pub message: Vec<u8>,
}

/// Why a drop file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum MaildropError {
    #[error("cannot write to the maildrop {}: {source}", dir.display())]
    Write { dir: PathBuf, source: io::Error },
    #[error("the maildrop {} is world-writable: refusing to use it (chmod 1730 it)", .0.display())]
    WorldWritable(PathBuf),
    #[error("{0}")]
    Format(String),
    #[error("incomplete (still being written, or its writer died)")]
    Incomplete,
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("a value holds a line break or NUL: {0:?}")]
    BadValue(String),
}

fn format_err(what: impl Into<String>) -> MaildropError {
    MaildropError::Format(what.into())
}

/// Refuses a maildrop directory anyone may write to (whatever else its mode).
pub fn check_dir(dir: &Path) -> Result<fs::Metadata, MaildropError> {
    let meta = fs::metadata(dir).map_err(|source| MaildropError::Write {
        dir: dir.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(MaildropError::WorldWritable(dir.to_path_buf()));
    }
    Ok(meta)
}

/// The drop file's bytes.
pub fn encode(d: &Dropped) -> Result<Vec<u8>, MaildropError> {
    let mut out = Vec::with_capacity(d.message.len() + 256);
    out.extend_from_slice(MAGIC);
    let mut line = |tag: &str, value: Option<&str>| -> Result<(), MaildropError> {
        if let Some(v) = value {
            if v.len() > MAX_LINE || v.bytes().any(|b| b == b'\n' || b == b'\r' || b == 0) {
                return Err(MaildropError::BadValue(v.chars().take(80).collect()));
            }
            out.extend_from_slice(tag.as_bytes());
            if !v.is_empty() || tag == "S" {
                out.push(b' ');
                out.extend_from_slice(v.as_bytes());
            }
            out.push(b'\n');
        }
        Ok(())
    };
    line("S", d.sender.as_deref())?;
    for r in &d.recipients {
        line("R", Some(r))?;
    }
    line("T", d.extract.then_some(""))?;
    line("F", d.full_name.as_deref())?;
    line(
        "B",
        d.body_8bit.map(|b| if b { "8BITMIME" } else { "7BIT" }),
    )?;
    line("U", d.smtputf8.then_some(""))?;
    line("N", d.notify.as_deref())?;
    line("V", d.envid.as_deref())?;
    out.extend_from_slice(format!("L {}\n", d.message.len()).as_bytes());
    out.extend_from_slice(&d.message);
    out.extend_from_slice(TRAILER);
    Ok(out)
}

/// Reads a drop file's bytes back; `limit` bounds the message.
pub fn decode(bytes: &[u8], limit: u64) -> Result<Dropped, MaildropError> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| format_err("not a drop file (no MTADDROP1 line)"))?;
    let mut d = Dropped::default();
    loop {
        let end = memchr::memchr(b'\n', rest).ok_or(MaildropError::Incomplete)?;
        if end > MAX_LINE + 2 {
            return Err(format_err("a header line is too long"));
        }
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| format_err("a header line is not UTF-8"))?;
        rest = &rest[end + 1..];
        let (tag, value) = match line.split_once(' ') {
            Some((t, v)) => (t, v),
            None => (line, ""),
        };
        match tag {
            "S" => d.sender = Some(value.to_owned()),
            "R" => {
                if d.recipients.len() >= MAX_RECIPIENTS {
                    return Err(format_err("too many recipients"));
                }
                d.recipients.push(value.to_owned());
            }
            "T" => d.extract = true,
            "F" => d.full_name = Some(value.to_owned()),
            "B" => d.body_8bit = Some(value.eq_ignore_ascii_case("8BITMIME")),
            "U" => d.smtputf8 = true,
            "N" => d.notify = Some(value.to_owned()),
            "V" => d.envid = Some(value.to_owned()),
            "L" => {
                let len: u64 = value
                    .parse()
                    .map_err(|_| format_err("the length is not a number"))?;
                if len > limit {
                    return Err(format_err(format!(
                        "the message ({len} bytes) is larger than the limit ({limit})"
                    )));
                }
                let len = len as usize;
                if rest.len() < len + TRAILER.len() {
                    return Err(MaildropError::Incomplete);
                }
                if &rest[len..] != TRAILER {
                    return Err(if rest[len..].starts_with(TRAILER) {
                        format_err("bytes after the trailer")
                    } else {
                        MaildropError::Incomplete
                    });
                }
                d.message = rest[..len].to_vec();
                return Ok(d);
            }
            other => return Err(format_err(format!("unknown line tag {other:?}"))),
        }
    }
}

/// Writes `d` into the maildrop `dir` as a new file, durably (fsync'd) before it
/// returns; the file's name.
pub fn write(dir: &Path, d: &Dropped) -> Result<PathBuf, MaildropError> {
    check_dir(dir)?;
    let bytes = encode(d)?;
    let werr = |source| MaildropError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    let mut tries = 0;
    let (path, mut file) = loop {
        let path = dir.join(unique_name());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => break (path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => tries += 1,
            Err(e) => return Err(werr(e)),
        }
    };
    let written = (|| {
        // the umask may have taken bits away; the daemon needs "other" read
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(&bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(werr(e));
    }
    // A new file's fsync commits its directory entry on Linux's journaling file
    // systems; where we may open the directory (root, the daemon's user) we fsync
    // it too. The submission group cannot: it has no read permission on it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// `{micros:x}.{pid}.{random:x}`: unique across processes and time (O_EXCL catches
/// the rest).
fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now);
    h.write_u32(std::process::id());
    format!("{now:x}.{}.{:016x}", std::process::id(), h.finish())
}

/// A file found in the maildrop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Waiting to be picked up.
    New(PathBuf),
    /// Claimed for this queue id by a pickup that may not have finished.
    Claimed(PathBuf, QueueId),
}

/// What a drop file holds and who wrote it.
#[derive(Debug)]
pub struct Submitted {
    pub dropped: Dropped,
    /// The file's owner: the submitter's real uid.
    pub uid: u32,
    /// When it was written (unix seconds).
    pub mtime: i64,
}

/// The maildrop directory as the daemon sees it.
#[derive(Clone, Debug)]
pub struct Maildrop {
    dir: PathBuf,
}

impl Maildrop {
    /// The maildrop at `dir`, created if missing (mode 1730, group `gid` when given);
    /// refused if world-writable.
    pub fn open(dir: &Path, gid: Option<u32>) -> Result<Maildrop, MaildropError> {
        let werr = |source| MaildropError::Write {
            dir: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(werr)?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(werr)?;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(werr)?;
        }
        check_dir(dir)?;
        Ok(Maildrop {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file in the maildrop, oldest name first.
    pub fn scan(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            match name.rsplit_once('@') {
                Some((_, id)) => match id.parse::<QueueId>() {
                    Ok(id) => out.push(Entry::Claimed(path, id)),
                    Err(_) => out.push(Entry::New(path)),
                },
                None => out.push(Entry::New(path)),
            }
        }
        out.sort_by(|a, b| a.path().cmp(b.path()));
        Ok(out)
    }

    /// Reads a drop file without following links: a regular file with one link,
    /// whose owner is the submitter. `limit` bounds the message.
    pub fn read(&self, path: &Path, limit: u64) -> Result<Submitted, MaildropError> {
        let rerr = |source| MaildropError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(rerr)?;
        let meta = file.metadata().map_err(rerr)?;
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            return Err(format_err("not a regular file with a single link"));
        }
        // header, message, trailer: the limit plus room for the envelope lines
        let cap = limit
            .saturating_add((MAX_RECIPIENTS as u64 + 16) * (MAX_LINE as u64 + 3))
            .saturating_add(64);
        if meta.len() > cap {
            return Err(format_err("the file is larger than any message may be"));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(cap).read_to_end(&mut bytes).map_err(rerr)?;
        let dropped = decode(&bytes, limit)?;
        Ok(Submitted {
            dropped,
            uid: meta.uid(),
            mtime: meta.mtime(),
        })
    }

    /// Claims `path` for `id`: renamed to `NAME@ID`, the directory fsync'd.
    pub fn claim(&self, path: &Path, id: QueueId) -> io::Result<PathBuf> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!("@{id}"));
        let claimed = self.dir.join(name);
        fs::rename(path, &claimed)?;
        self.sync()?;
        Ok(claimed)
    }

    /// A claimed file back to its first name (its message was not queued).
    pub fn unclaim(&self, claimed: &Path) -> io::Result<PathBuf> {
        let name = claimed
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('@'))
            .map(|(n, _)| n.to_owned())
            .ok_or_else(|| io::Error::other("not a claimed file"))?;
        let back = self.dir.join(name);
        fs::rename(claimed, &back)?;
        self.sync()?;
        Ok(back)
    }

    /// Removes files (picked up, or refused), then fsyncs the directory once.
    pub fn remove(&self, paths: &[PathBuf]) -> io::Result<()> {
        for p in paths {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.sync()
    }

    pub fn sync(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::New(p) | Entry::Claimed(p, _) => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dropped {
        Dropped {
            sender: Some("root".into()),
            recipients: vec!["a@example.org".into(), "b".into()],
            extract: true,
            full_name: Some("Cron Daemon".into()),
            body_8bit: Some(true),
            smtputf8: false,
            notify: Some("never".into()),
            envid: None,
            message: b"Subject: x\n\nbody\nEND\n".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let bytes = encode(&d).unwrap();
        assert_eq!(decode(&bytes, 1 << 20).unwrap(), d);
        let null = Dropped {
            sender: Some(String::new()),
            ..Dropped::default()
        };
        assert_eq!(decode(&encode(&null).unwrap(), 10).unwrap(), null);
    }

    #[test]
    fn every_cut_is_incomplete_or_refused_never_accepted() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(decode(&longer, 1 << 20).is_err());
    }

    #[test]
    fn limit_and_values() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(decode(&bytes, 3), Err(MaildropError::Format(_))));
        let bad = Dropped {
            recipients: vec!["a\nS evil".into()],
            ..Dropped::default()
        };
        assert!(matches!(encode(&bad), Err(MaildropError::BadValue(_))));
    }

    #[test]
    fn write_scan_claim_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("maildrop");
        let drop = Maildrop::open(&dir, None).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            DIR_MODE
        );
        let path = write(&dir, &sample()).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(drop.scan().unwrap(), vec![Entry::New(path.clone())]);
        let got = drop.read(&path, 1 << 20).unwrap();
        assert_eq!(got.dropped, sample());
        let id: QueueId = "00000000000000AB".parse().unwrap();
        let claimed = drop.claim(&path, id).unwrap();
        assert_eq!(
            drop.scan().unwrap(),
            vec![Entry::Claimed(claimed.clone(), id)]
        );
        let back = drop.unclaim(&claimed).unwrap();
        assert_eq!(back, path);
        drop.remove(&[back]).unwrap();
        assert!(drop.scan().unwrap().is_empty());
    }

    #[test]
    fn world_writable_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            write(tmp.path(), &sample()),
            Err(MaildropError::WorldWritable(_))
        ));
        assert!(Maildrop::open(tmp.path(), None).is_err());
    }

    #[test]
    fn links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let drop = Maildrop::open(tmp.path(), None).unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, encode(&sample()).unwrap()).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(drop.read(&link, 1 << 20).is_err());
        let hard = tmp.path().join("hard");
        fs::hard_link(&target, &hard).unwrap();
        assert!(drop.read(&hard, 1 << 20).is_err());
    }
}
