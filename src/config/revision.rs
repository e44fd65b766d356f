//! The policy revision: which exact files a policy was compiled from, as one short hash.
//!
//! Every file read while the configuration is loaded and compiled — the main file,
//! `include`d files, table, alias, users, credentials and header-checks files,
//! certificates and keys, the CA file, and the Rhai hooks — is recorded here with the
//! SHA-256 of its bytes exactly as read. The revision is the SHA-256 of the sorted list
//! of `name digest` lines, shortened to [`Sources::REVISION_LEN`] hex digits (like a short
//! git commit id).
//!
//! Names are relative to the main file's directory when the file is under it (the main
//! file itself by its file name), so a policy repository checked out anywhere gives the
//! same revision; a file elsewhere is named by its absolute path. Sorting by name makes
//! the revision independent of the order files were read in. The same bytes give the
//! same revision on any machine; a change to any byte of any file gives a new one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The files a policy was compiled from, by name, with the digest of their bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// The main file's directory: names are relative to it.
    base: PathBuf,
    /// The main file's name (as recorded), left out of [`Sources::shared_revision`].
    main: String,
    files: BTreeMap<String, [u8; 32]>,
    /// Each file's modification time and length just after it was read, for
    /// `reload { watch }` to notice a change without reading every file.
    stamps: BTreeMap<String, Option<Stamp>>,
}

/// A file's modification time and length.
pub type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Sources {
    /// Hex digits of the revision.
    pub const REVISION_LEN: usize = 12;

    /// Sources of a configuration whose main file is `main` (not recorded yet).
    pub fn new(main: &Path) -> Sources {
        let base = main.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = match main.strip_prefix(&base) {
            Ok(relative) if !base.as_os_str().is_empty() => relative,
            _ => main,
        };
        Sources {
            main: name.to_string_lossy().into_owned(),
            base,
            files: BTreeMap::new(),
            stamps: BTreeMap::new(),
        }
    }

    /// Records that `path` was read and held `bytes`.
    pub fn add(&mut self, path: &Path, bytes: &[u8]) {
        let name = match path.strip_prefix(&self.base) {
            Ok(relative) if !self.base.as_os_str().is_empty() => relative,
            _ => path,
        };
        let name = name.to_string_lossy().into_owned();
        self.stamps.insert(name.clone(), stamp(path));
        self.files.insert(name, Sha256::digest(bytes).into());
    }

    /// Reads `path` and records it (for files whose bytes are consumed by another
    /// reader, such as certificates); unreadable files are left to that reader to
    /// report.
    pub fn add_file(&mut self, path: &Path) {
        if let Ok(bytes) = std::fs::read(path) {
            self.add(path, &bytes);
        }
    }

    /// Where the file recorded as `name` is.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// The names recorded, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Each file's modification time and length now (`None`: cannot be read), in name
    /// order; equal to [`stamps`](Self::stamps) when no file has been touched since.
    pub fn stamps_now(&self) -> Vec<Option<Stamp>> {
        self.files
            .keys()
            .map(|name| stamp(&self.base.join(name)))
            .collect()
    }

    /// Each file's modification time and length when it was read, in name order.
    pub fn stamps(&self) -> Vec<Option<Stamp>> {
        self.files
            .keys()
            .map(|name| self.stamps.get(name).copied().flatten())
            .collect()
    }

    /// Whether a file now holds other bytes than were read (or cannot be read).
    pub fn changed(&self) -> bool {
        self.files.iter().any(|(name, digest)| {
            std::fs::read(self.base.join(name)).map_or(true, |bytes| {
                <[u8; 32]>::from(Sha256::digest(&bytes)) != *digest
            })
        })
    }

    /// The revision: 12 lowercase hex digits.
    pub fn revision(&self) -> String {
        self.revision_of(|_| true)
    }

    /// The revision of every file but the main one (the included policy, tables,
    /// hooks...): what the nodes of a cluster share when each node's own main file
    /// holds what is its own (`server`, `listen`, `cluster { node }`) and includes the
    /// rest. With nothing included, the revision of the main file alone.
    pub fn shared_revision(&self) -> String {
        if self.files.keys().all(|n| *n == self.main) {
            return self.revision();
        }
        self.revision_of(|name| name != self.main)
    }

    fn revision_of(&self, keep: impl Fn(&str) -> bool) -> String {
        let mut listing = String::new();
        for (name, digest) in self.files.iter().filter(|(n, _)| keep(n)) {
            listing.push_str(name);
            listing.push(' ');
            listing.push_str(&hex(digest));
            listing.push('\n');
        }
        let mut out = hex(&Sha256::digest(listing.as_bytes()));
        out.truncate(Self::REVISION_LEN);
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(base: &str, files: &[(&str, &str)]) -> Sources {
        let mut s = Sources::new(&Path::new(base).join("mtad.kdl"));
        for (name, text) in files {
            s.add(&Path::new(base).join(name), text.as_bytes());
        }
        s
    }

    #[test]
    fn the_same_files_anywhere_give_the_same_revision() {
        let files = [
            ("mtad.kdl", "server {}\n"),
            ("hooks/rcpt.rhai", "fn rcpt(ctx) {}"),
        ];
        let here = sources("/etc/mtad", &files);
        let there = sources("/home/ops/policy", &files);
        assert_eq!(here.revision(), there.revision());
        // pinned: the same files give this revision with every release, on any machine
        // (sha256 of "hooks/rcpt.rhai <sha256>\nmtad.kdl <sha256>\n", 12 digits)
        assert_eq!(here.revision(), "9836d545bdb6");
        assert_eq!(here.revision().len(), Sources::REVISION_LEN);
        assert!(here.revision().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            here.names().collect::<Vec<_>>(),
            ["hooks/rcpt.rhai", "mtad.kdl"]
        );
        // the order of reading does not matter
        let reversed: Vec<_> = files.iter().rev().copied().collect();
        assert_eq!(sources("/srv", &reversed).revision(), here.revision());
    }

    #[test]
    fn any_change_gives_a_new_revision() {
        let base = sources("/p", &[("mtad.kdl", "a"), ("t.map", "x y\n")]);
        let edited = sources("/p", &[("mtad.kdl", "a"), ("t.map", "x z\n")]);
        let renamed = sources("/p", &[("mtad.kdl", "a"), ("u.map", "x y\n")]);
        let more = sources(
            "/p",
            &[("mtad.kdl", "a"), ("t.map", "x y\n"), ("h.rhai", "")],
        );
        let revisions = [&base, &edited, &renamed, &more].map(Sources::revision);
        for (i, a) in revisions.iter().enumerate() {
            for b in &revisions[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // and nothing else does: recording a file twice is recording it once
        let mut again = base.clone();
        again.add(Path::new("/p/t.map"), b"x y\n");
        assert_eq!(again.revision(), base.revision());
    }

    #[test]
    fn files_outside_the_directory_keep_their_absolute_name() {
        let mut s = Sources::new(Path::new("/etc/mtad/mtad.kdl"));
        s.add(Path::new("/etc/ssl/cert.pem"), b"pem");
        assert_eq!(s.names().collect::<Vec<_>>(), ["/etc/ssl/cert.pem"]);
    }
}
