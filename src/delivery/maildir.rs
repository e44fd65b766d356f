//! Maildir delivery for the `local` transport (docs/bounces.md, "Maildir").
//!
//! [`mailbox_name`] turns a recipient's local part into a directory name, refusing
//! anything that could leave the base directory; [`deliver`] writes one message into
//! `{base}/{mailbox}/` the Maildir way: into `tmp/` under a unique name, fsync'd, then
//! renamed into `new/`, and `new/` fsync'd, so that once it returns the message is on
//! stable storage and a reader never sees a partial file.
//!
//! Both are blocking (`std::fs`): the async caller runs [`deliver`] in
//! `tokio::task::spawn_blocking`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::route;
pub use crate::config::route::MAX_MAILBOX;

/// The longest value written in the Return-Path and Delivered-To lines, in bytes.
const MAX_HEADER_VALUE: usize = 512;

/// Why a local delivery failed. [`is_permanent`](Self::is_permanent) tells the
/// scheduler whether to bounce the recipient or keep the message queued.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// The local part cannot name a mailbox directory (empty, a path, a dot file,
    /// control characters, too long). Permanent: 5.1.1.
    #[error("invalid mailbox name {name:?}: {reason}")]
    InvalidMailbox {
        /// The name as given, cut to 80 characters (it is logged).
        name: String,
        reason: &'static str,
    },
    /// A filesystem operation failed (disk full, permissions, something in the way).
    /// Temporary: 4.3.1 for a full disk, 4.2.2 for a full quota, 4.2.0 otherwise; the
    /// message stays queued and is retried.
    #[error("maildir: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MaildirError {
    /// True when retrying cannot help: the recipient should be bounced.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MaildirError::InvalidMailbox { .. })
    }

    /// The RFC 3463 enhanced status for the DSN or the LMTP-style reply.
    pub fn enhanced_code(&self) -> [u8; 3] {
        match self {
            MaildirError::InvalidMailbox { .. } => [5, 1, 1],
            MaildirError::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull => [4, 3, 1],
                io::ErrorKind::QuotaExceeded => [4, 2, 2],
                _ => [4, 2, 0],
            },
        }
    }

    fn invalid(name: &str, reason: &'static str) -> Self {
        MaildirError::InvalidMailbox {
            name: name.chars().take(80).collect(),
            reason,
        }
    }
}

/// The mailbox directory name for a recipient's local part: lowercased, and a
/// `+extension` removed (`Alice+lists` → `alice`). Refuses (permanently) a name that
/// is empty, contains `/`, NUL or any other control character, starts with `.`,
/// contains `..`, or is longer than [`MAX_MAILBOX`] bytes.
pub fn mailbox_name(local_part: &str) -> Result<String, MaildirError> {
    let base = local_part.split('+').next().unwrap_or_default();
    let name = base.to_lowercase();
    route::check_mailbox(&name).map_err(|reason| MaildirError::invalid(local_part, reason))?;
    Ok(name)
}

/// A virtual mailbox's Maildir as a table gives it (PostfixAdmin's `maildir` column,
/// `example.com/alice/`), relative to the Maildir base (the rules are
/// [`crate::config::route::mailbox_path`]'s, which `virtual:` transports are checked with).
pub fn mailbox_path(value: &str) -> Result<PathBuf, MaildirError> {
    route::mailbox_path(value).map_err(|reason| MaildirError::invalid(value, reason))
}

/// Delivers `message` (as queued: CRLF line endings) into the Maildir
/// `{base}/{mailbox}/`, with `Return-Path: <return_path>` and
/// `Delivered-To: delivered_to` lines prepended, every CRLF turned into LF. Returns the
/// path of the new file in `new/`.
///
/// `base` must exist (it is not created: a missing base is more likely an unmounted
/// filesystem than a place to start writing mail). The mailbox directory and its
/// `tmp`, `new` and `cur` are created with mode 0700 when missing, and the directories
/// holding them fsync'd. The file is created with mode 0600 in `tmp/`, written, fsync'd,
/// renamed into `new/`, and `new/` is fsync'd before returning: an `Ok` means the
/// message survives a crash. On error, the file in `tmp/` is removed (best effort).
///
/// Blocking: call it from `spawn_blocking`.
pub fn deliver(
    base: &Path,
    mailbox: impl AsRef<Path>,
    message: &[u8],
    return_path: &str,
    delivered_to: &str,
    hostname: &str,
) -> Result<PathBuf, MaildirError> {
    let mailbox = mailbox.as_ref();
    let shown = mailbox.display().to_string();
    let parts: Vec<&str> = mailbox
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or(""))
        .collect();
    if parts.is_empty() || parts.len() > route::MAX_DEPTH {
        return Err(MaildirError::invalid(&shown, "is not a mailbox path"));
    }
    for part in &parts {
        route::check_mailbox(part).map_err(|reason| MaildirError::invalid(&shown, reason))?;
    }
    // the directories above the Maildir (a virtual mailbox's domain), as needed
    let mut parent = base.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        let next = parent.join(part);
        if ensure_dir(&next)? {
            sync_dir(&parent)?;
        }
        parent = next;
    }
    let dir = base.join(mailbox);
    let (tmp, new) = ensure_maildir(&parent, &dir)?;

    let (tmp_path, file) = create_unique(&tmp, hostname)?;
    let name = tmp_path.file_name().unwrap_or_default().to_owned();
    let new_path = new.join(name);
    let result = write_message(file, message, return_path, delivered_to)
        .map_err(io_error("write", &tmp_path))
        .and_then(|()| fs::rename(&tmp_path, &new_path).map_err(io_error("rename", &tmp_path)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    // if this fails the file is already in new/: a retry may deliver it twice, which
    // beats reporting success for a message a crash could still lose
    sync_dir(&new)?;
    Ok(new_path)
}

/// Creates `dir` and its `tmp`, `new`, `cur` as needed; returns `tmp` and `new`.
fn ensure_maildir(base: &Path, dir: &Path) -> Result<(PathBuf, PathBuf), MaildirError> {
    if ensure_dir(dir)? {
        sync_dir(base)?;
    }
    let (tmp, new, cur) = (dir.join("tmp"), dir.join("new"), dir.join("cur"));
    let mut created = false;
    for sub in [&tmp, &new, &cur] {
        created |= ensure_dir(sub)?;
    }
    if created {
        sync_dir(dir)?;
    }
    Ok((tmp, new))
}

/// Makes sure `path` is a directory, creating it with mode 0700 if it does not exist.
/// Returns whether it was created. Something else at `path` is an error.
fn ensure_dir(path: &Path) -> Result<bool, MaildirError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(path).map_err(io_error("stat", path))?;
            if meta.is_dir() {
                Ok(false)
            } else {
                Err(MaildirError::Io {
                    op: "mkdir",
                    path: path.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::NotADirectory,
                        "exists and is not a directory",
                    ),
                })
            }
        }
        Err(e) => Err(io_error("mkdir", path)(e)),
    }
}

/// fsyncs a directory, so that the entries made in it are on stable storage.
fn sync_dir(path: &Path) -> Result<(), MaildirError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", path))
}

/// Creates a new file in `tmp` under a unique name, retrying a few times if the name
/// is taken (which the counter makes unlikely even with a clock going backwards).
fn create_unique(tmp: &Path, hostname: &str) -> Result<(PathBuf, File), MaildirError> {
    let host = clean_hostname(hostname);
    let mut attempt = 0;
    loop {
        let path = tmp.join(unique_name(&host));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(e) => return Err(io_error("create", &path)(e)),
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `{secs}.M{micros}P{pid}Q{counter}.{host}`, the modern Maildir unique name.
fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let q = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{q}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

/// The host name as a file name part: `/` and `:` written as `\057` and `\072` (the
/// Maildir convention), other characters that are not printable ASCII as `_`, at most
/// 255 characters, `localhost` when empty.
fn clean_hostname(hostname: &str) -> String {
    let mut out = String::new();
    for c in hostname.chars().take(255) {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            '!'..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

/// A header value on one line: control characters (CR and LF included) removed, at
/// most [`MAX_HEADER_VALUE`] bytes (cut at a character boundary).
fn header_value(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_HEADER_VALUE {
            break;
        }
        out.push(c);
    }
    out
}

/// Writes the two delivery lines and the message with CRLF turned into LF (a bare CR
/// is left alone; a missing final line ending is added), then fsyncs the file.
fn write_message(
    file: File,
    message: &[u8],
    return_path: &str,
    delivered_to: &str,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, file);
    writeln!(w, "Return-Path: <{}>", header_value(return_path))?;
    writeln!(w, "Delivered-To: {}", header_value(delivered_to))?;
    let mut rest = message;
    while let Some(i) = memchr::memmem::find(rest, b"\r\n") {
        w.write_all(&rest[..i])?;
        w.write_all(b"\n")?;
        rest = &rest[i + 2..];
    }
    w.write_all(rest)?;
    if !rest.is_empty() && !rest.ends_with(b"\n") {
        w.write_all(b"\n")?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MaildirError {
    let path = path.to_owned();
    move |source| MaildirError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const MESSAGE: &[u8] = b"From: a@b.test\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn delivery_creates_the_maildir() {
        let base = tempfile::tempdir().unwrap();
        let path = deliver(
            base.path(),
            "alice",
            MESSAGE,
            "a@b.test",
            "alice@local.test",
            "mx.local.test",
        )
        .unwrap();
        let dir = base.path().join("alice");
        for sub in ["", "tmp", "new", "cur"] {
            assert!(dir.join(sub).is_dir(), "{sub}");
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
        assert_eq!(path.parent(), Some(dir.join("new").as_path()));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        let name = path.file_name().unwrap().to_str().unwrap();
        let pid = format!("P{}Q", std::process::id());
        assert!(
            name.ends_with(".mx.local.test") && name.contains(".M") && name.contains(&pid),
            "{name}"
        );
    }

    #[test]
    fn content_has_the_delivery_lines_and_lf_endings() {
        let base = tempfile::tempdir().unwrap();
        let path = deliver(
            base.path(),
            "alice",
            MESSAGE,
            "a@b.test\r\nX-Injected: 1",
            "alice@local.test\n",
            "mx",
        )
        .unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Return-Path: <a@b.testX-Injected: 1>\nDelivered-To: alice@local.test\n\
              From: a@b.test\nSubject: hi\n\nline one\nline two\n"
        );
        // null sender, no final line ending, a bare CR kept
        let path = deliver(
            base.path(),
            "alice",
            b"Subject: x\r\n\r\na\rb",
            "",
            "alice@local.test",
            "mx",
        )
        .unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Return-Path: <>\nDelivered-To: alice@local.test\nSubject: x\n\na\rb\n"
        );
    }

    #[test]
    fn two_deliveries_get_distinct_names() {
        let base = tempfile::tempdir().unwrap();
        let a = deliver(base.path(), "bob", MESSAGE, "a@b.test", "bob@l.test", "mx").unwrap();
        let b = deliver(base.path(), "bob", MESSAGE, "a@b.test", "bob@l.test", "mx").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            fs::read_dir(base.path().join("bob/new")).unwrap().count(),
            2
        );
    }

    #[test]
    fn an_existing_maildir_is_reused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("carol");
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("cur/1.old:2,S"), b"old").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let path = deliver(
            base.path(),
            "carol",
            MESSAGE,
            "a@b.test",
            "carol@l.test",
            "mx",
        )
        .unwrap();
        assert!(path.starts_with(dir.join("new")));
        assert_eq!(fs::read(dir.join("cur/1.old:2,S")).unwrap(), b"old");
        assert_eq!(mode(&dir), 0o750, "left as it was");
    }

    #[test]
    fn hostname_is_made_safe_for_a_file_name() {
        assert_eq!(clean_hostname("mx.local.test"), "mx.local.test");
        assert_eq!(clean_hostname("a/b:c d\n"), "a\\057b\\072c_d_");
        assert_eq!(clean_hostname(""), "localhost");
        let base = tempfile::tempdir().unwrap();
        let path = deliver(base.path(), "dan", MESSAGE, "", "dan@l.test", "../../x:y").unwrap();
        assert!(path.starts_with(base.path().join("dan/new")));
        assert!(
            path.to_str().unwrap().ends_with("..\\057..\\057x\\072y"),
            "{path:?}"
        );
    }

    #[test]
    fn mailbox_names() {
        assert_eq!(mailbox_name("Alice").unwrap(), "alice");
        assert_eq!(mailbox_name("Alice+Lists+x").unwrap(), "alice");
        assert_eq!(mailbox_name("first.last").unwrap(), "first.last");
        assert_eq!(mailbox_name("J\u{d6}RG").unwrap(), "j\u{f6}rg");
        assert_eq!(mailbox_name(&"a".repeat(64)).unwrap().len(), 64);
        for bad in [
            "",
            "+ext",
            "a/b",
            "../etc",
            "..",
            ".",
            ".hidden",
            "a..b",
            "a\0b",
            "a\nb",
            "a\x7fb",
            "a\u{85}b",
            &"a".repeat(65),
        ] {
            let err = mailbox_name(bad).unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
            assert_eq!(err.enhanced_code(), [5, 1, 1]);
        }
        // deliver checks what it is given, too
        let base = tempfile::tempdir().unwrap();
        for bad in ["../escape", "a/../b", "", "..", "/abs", "a/.hidden"] {
            let err = deliver(base.path(), bad, MESSAGE, "", "x", "mx").unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
        }
        assert_eq!(fs::read_dir(base.path()).unwrap().count(), 0);
    }

    #[test]
    fn virtual_mailbox_paths() {
        assert_eq!(
            mailbox_path("example.com/alice/").unwrap(),
            Path::new("example.com/alice")
        );
        for bad in [
            "/var/mail/x",
            "a/../b",
            "../x",
            "a//b",
            "",
            "a/.x",
            &"a/".repeat(9),
        ] {
            let err = mailbox_path(bad).unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
        }
        // delivered into {base}/example.com/alice/new, the domain directory made too
        let base = tempfile::tempdir().unwrap();
        let path = deliver(
            base.path(),
            mailbox_path("example.com/alice/").unwrap(),
            MESSAGE,
            "a@b.test",
            "alice@example.com",
            "mx",
        )
        .unwrap();
        assert!(path.starts_with(base.path().join("example.com/alice/new")));
    }

    #[test]
    fn something_in_the_way_is_a_temporary_error() {
        let base = tempfile::tempdir().unwrap();
        fs::write(base.path().join("erin"), b"not a directory").unwrap();
        let err = deliver(base.path(), "erin", MESSAGE, "", "erin@l.test", "mx").unwrap_err();
        assert!(!err.is_permanent());
        assert_eq!(err.enhanced_code(), [4, 2, 0]);
        assert!(err.to_string().contains("erin"), "{err}");

        fs::create_dir(base.path().join("frank")).unwrap();
        fs::write(base.path().join("frank/new"), b"").unwrap();
        let err = deliver(base.path(), "frank", MESSAGE, "", "frank@l.test", "mx").unwrap_err();
        assert!(!err.is_permanent());

        let missing = base.path().join("no-such-base");
        let err = deliver(&missing, "gina", MESSAGE, "", "gina@l.test", "mx").unwrap_err();
        assert!(!err.is_permanent());
        assert!(!missing.exists(), "the base is not created");
    }

    #[test]
    fn full_disks_and_quotas_have_their_codes() {
        let io = |kind| MaildirError::Io {
            op: "write",
            path: PathBuf::from("/x"),
            source: io::Error::from(kind),
        };
        assert_eq!(io(io::ErrorKind::StorageFull).enhanced_code(), [4, 3, 1]);
        assert_eq!(io(io::ErrorKind::QuotaExceeded).enhanced_code(), [4, 2, 2]);
        assert_eq!(
            io(io::ErrorKind::PermissionDenied).enhanced_code(),
            [4, 2, 0]
        );
        assert!(!io(io::ErrorKind::StorageFull).is_permanent());
    }
}
