//! Stored passwords in Dovecot's `{SCHEME}hash` form, and users files in Dovecot's
//! passwd-file form.
//!
//! ```text
//! # users.passwd — make a hash with: doveadm pw -s ARGON2ID
//! alice@example.test:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$bvp1...$ebxz...
//! bob@example.test:{BLF-CRYPT}$2y$05$/B.kZcLTdPHzu8FeCXB8OefB3/...::::::
//! carol@example.test:{SHA512-CRYPT}$6$mwEOBa.7daaIXze6$N1x0v8.6...:1000:1000::/home/carol::
//! ```
//!
//! A line is `user:{SCHEME}hash`, optionally followed by passwd-file's other fields
//! (`:uid:gid:gecos:home:shell:extra`), which are ignored. Blank lines and lines that
//! start with `#` are skipped. Every problem is reported at its line and column:
//! an unknown scheme, a hash that does not parse for its scheme, a duplicate user.
//!
//! Schemes (case-insensitive, as in Dovecot), each verified by a RustCrypto or
//! well-kept crate, never by hand:
//!
//! | scheme | hash | crate |
//! |---|---|---|
//! | `{ARGON2ID}`, `{ARGON2I}` | PHC string `$argon2id$v=19$m=..,t=..,p=..$salt$hash` | `argon2` |
//! | `{BLF-CRYPT}` | `$2y$`, `$2b$`, `$2a$` + cost (passwords truncated at 72 bytes, as everywhere) | `bcrypt` |
//! | `{SHA512-CRYPT}`, `{SHA256-CRYPT}` | `$6$` / `$5$` [`rounds=N$`] salt `$` hash | `sha-crypt` |
//! | `{PLAIN}`, `{CLEAR}` | the password itself: for tests only | constant-time compare (`subtle`) |
//!
//! **User names** follow Dovecot's defaults: `auth_username_format = %Lu` lowercases
//! the name a client logs in with (ASCII) before the lookup, and
//! `auth_username_chars` allows only `a-z A-Z 0-9 . - _ @`. The lookup itself is
//! exact, so a file entry with an upper-case letter could never match: it is an error
//! here, as is an entry with a character Dovecot would refuse.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use argon2::PasswordVerifier as _;
use subtle::ConstantTimeEq as _;

use crate::lookup::TableError;

/// The schemes we verify, by the name Dovecot writes in braces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Argon2id,
    Argon2i,
    BlfCrypt,
    Sha512Crypt,
    Sha256Crypt,
    /// `{PLAIN}` and `{CLEAR}` (the same thing in Dovecot).
    Plain,
}

/// Scheme names as written, and what they mean.
const SCHEMES: &[(&str, Scheme)] = &[
    ("ARGON2ID", Scheme::Argon2id),
    ("ARGON2I", Scheme::Argon2i),
    ("BLF-CRYPT", Scheme::BlfCrypt),
    ("SHA512-CRYPT", Scheme::Sha512Crypt),
    ("SHA256-CRYPT", Scheme::Sha256Crypt),
    ("PLAIN", Scheme::Plain),
    ("CLEAR", Scheme::Plain),
];

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Plain => "PLAIN",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Argon2 memory above this (in KiB, 1 GiB) is refused: each verification allocates
/// it, and Dovecot's default is 64 MiB.
const MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;

/// A parsed, checked stored password. Verifying it is slow on purpose (except PLAIN):
/// call [`StoredPassword::verify`] off the async workers.
#[derive(Clone)]
pub struct StoredPassword {
    scheme: Scheme,
    hash: Hash,
}

#[derive(Clone)]
enum Hash {
    Argon2(Box<argon2::PasswordHash>),
    /// bcrypt and SHA-crypt: the checked modular-crypt string, verified by its crate.
    Crypt(String),
    Plain(Vec<u8>),
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredPassword({{{}}}..)", self.scheme)
    }
}

/// Why a stored password does not parse: the byte range of `{SCHEME}hash` at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashError {
    pub span: Range<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StoredPassword {
    /// Reads `{SCHEME}hash`, checking that the hash is well formed for its scheme
    /// (without verifying anything: that is the slow part).
    pub fn parse(text: &str) -> Result<StoredPassword, HashError> {
        let err = |span: Range<usize>, message: String, help: Option<String>| HashError {
            span,
            message,
            help,
        };
        let Some(rest) = text.strip_prefix('{') else {
            let help = guess_scheme(text).map_or_else(
                || {
                    format!(
                        "write the scheme first, e.g. {{ARGON2ID}}$argon2id$...; {}",
                        scheme_list()
                    )
                },
                |s| format!("this looks like {{{s}}}: write {{{s}}}{}", ellipsis(text)),
            );
            return Err(err(
                0..text.len().min(1),
                "the password has no {SCHEME} prefix".to_owned(),
                Some(help),
            ));
        };
        let Some(close) = rest.find('}') else {
            return Err(err(
                0..1,
                "`{` without a closing `}`".to_owned(),
                Some(scheme_list()),
            ));
        };
        let name = &rest[..close];
        let name_span = 1..1 + close;
        let Some(scheme) = SCHEMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
        else {
            return Err(err(
                name_span,
                format!("unknown password scheme `{name}`"),
                Some(scheme_list()),
            ));
        };
        let at = close + 2;
        let data = &text[at..];
        let data_span = at..text.len();
        if data.is_empty() {
            return Err(err(name_span, format!("empty {{{scheme}}} password"), None));
        }
        let hash = match scheme {
            Scheme::Plain => Hash::Plain(data.as_bytes().to_vec()),
            Scheme::Argon2id | Scheme::Argon2i => Hash::Argon2(Box::new(
                argon2_hash(scheme, data).map_err(|m| err(data_span.clone(), m, None))?,
            )),
            Scheme::BlfCrypt => {
                bcrypt_check(data).map_err(|m| err(data_span.clone(), m, None))?;
                Hash::Crypt(data.to_owned())
            }
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
                sha_crypt_check(scheme, data).map_err(|m| err(data_span.clone(), m, None))?;
                Hash::Crypt(data.to_owned())
            }
        };
        Ok(StoredPassword { scheme, hash })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether `password` is the one stored. Slow on purpose (tens to hundreds of
    /// milliseconds with Dovecot's default costs): run it in `spawn_blocking`.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.hash {
            Hash::Argon2(hash) => argon2::Argon2::default()
                .verify_password(password, &**hash)
                .is_ok(),
            Hash::Crypt(text) if self.scheme == Scheme::BlfCrypt => {
                bcrypt::verify(password, text).unwrap_or(false)
            }
            Hash::Crypt(text) => sha_crypt::PasswordVerifier::<str>::verify_password(
                &sha_crypt::ShaCrypt::default(),
                password,
                text.as_str(),
            )
            .is_ok(),
            Hash::Plain(stored) => stored.ct_eq(password).into(),
        }
    }

    /// What a verification costs, as a string that is equal for equal costs (scheme
    /// and parameters): the users file picks its stand-in hash for unknown users by it.
    fn cost_class(&self) -> String {
        match &self.hash {
            Hash::Argon2(hash) => format!("{} {}", self.scheme, hash.params),
            Hash::Crypt(text) => {
                // `$2y$05$...` → cost `05`; `$6$rounds=N$...` → `rounds=N`, else default
                let mut fields = text.split('$').skip(2);
                let param = fields.next().unwrap_or_default();
                let param = if self.scheme == Scheme::BlfCrypt || param.starts_with("rounds=") {
                    param
                } else {
                    ""
                };
                format!("{} {param}", self.scheme)
            }
            Hash::Plain(_) => "PLAIN".to_owned(),
        }
    }
}

fn scheme_list() -> String {
    "known schemes: ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, PLAIN (tests only)"
        .to_owned()
}

fn ellipsis(text: &str) -> String {
    let short: String = text.chars().take(12).collect();
    if short.len() < text.len() {
        format!("{short}...")
    } else {
        short
    }
}

/// The scheme a bare hash looks like (Dovecot would read it as `{CRYPT}`).
fn guess_scheme(text: &str) -> Option<Scheme> {
    [
        ("$argon2id$", Scheme::Argon2id),
        ("$argon2i$", Scheme::Argon2i),
        ("$2y$", Scheme::BlfCrypt),
        ("$2b$", Scheme::BlfCrypt),
        ("$2a$", Scheme::BlfCrypt),
        ("$6$", Scheme::Sha512Crypt),
        ("$5$", Scheme::Sha256Crypt),
    ]
    .into_iter()
    .find(|(prefix, _)| text.starts_with(prefix))
    .map(|(_, s)| s)
}

/// A PHC string of the scheme's variant, with parameters argon2 accepts.
fn argon2_hash(scheme: Scheme, data: &str) -> Result<argon2::PasswordHash, String> {
    let (ident, variant) = if scheme == Scheme::Argon2id {
        (argon2::ARGON2ID_IDENT, "argon2id")
    } else {
        (argon2::ARGON2I_IDENT, "argon2i")
    };
    let hash = argon2::PasswordHash::new(data).map_err(|e| {
        format!("not an Argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {e}")
    })?;
    if hash.algorithm != ident {
        return Err(format!(
            "{{{scheme}}} needs a `${variant}$` hash, not `${}$`",
            hash.algorithm
        ));
    }
    if !matches!(hash.version, Some(0x10 | 0x13)) {
        return Err("Argon2 version must be v=16 or v=19".to_owned());
    }
    let params = argon2::Params::try_from(&hash).map_err(|e| format!("Argon2 parameters: {e}"))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(format!(
            "Argon2 memory m={} KiB is over the limit of {MAX_ARGON2_MEMORY_KIB} KiB",
            params.m_cost()
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("Argon2 hash without salt or output".to_owned());
    }
    Ok(hash)
}

/// `$2y$`, `$2b$` or `$2a$`, a cost of 4 to 31, 22 characters of salt, 31 of hash.
fn bcrypt_check(data: &str) -> Result<(), String> {
    if !["$2y$", "$2b$", "$2a$"].iter().any(|p| data.starts_with(p)) {
        return Err("a BLF-CRYPT hash starts with $2y$, $2b$ or $2a$".to_owned());
    }
    let parts = bcrypt::HashParts::from_str(data).map_err(|e| format!("not a bcrypt hash: {e}"))?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(format!(
            "bcrypt cost {} is outside 4 to 31",
            parts.get_cost()
        ));
    }
    Ok(())
}

/// `$6$` (or `$5$`), optional `rounds=N$`, a salt, and a hash of the right length in
/// crypt's base64.
fn sha_crypt_check(scheme: Scheme, data: &str) -> Result<(), String> {
    let (id, len) = if scheme == Scheme::Sha512Crypt {
        ("6", sha_crypt::BLOCK_SIZE_SHA512)
    } else {
        ("5", sha_crypt::BLOCK_SIZE_SHA256)
    };
    let usage = format!("a {{{scheme}}} hash is ${id}$[rounds=N$]salt$hash");
    let Some(rest) = data.strip_prefix(&format!("${id}$")) else {
        return Err(usage);
    };
    let mut fields: Vec<&str> = rest.split('$').collect();
    if fields.first().is_some_and(|f| f.starts_with("rounds=")) {
        sha_crypt::Params::from_str(fields[0])
            .map_err(|_| "rounds must be 1000 to 999999999".to_owned())?;
        fields.remove(0);
    }
    let [salt, hash] = fields[..] else {
        return Err(usage);
    };
    let crypt_b64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    if salt.is_empty() || salt.len() > 16 || !salt.chars().all(crypt_b64) {
        return Err("the salt is 1 to 16 characters of ./0-9A-Za-z".to_owned());
    }
    // crypt's base64: 4 characters per 3 bytes, the last group shorter
    if hash.len() != (len * 4).div_ceil(3) || !hash.chars().all(crypt_b64) {
        return Err(format!(
            "the hash part must be {} characters of ./0-9A-Za-z",
            (len * 4).div_ceil(3)
        ));
    }
    // and the crate, which verifies it, must read it too
    sha_crypt::PasswordHashRef::new(data).map_err(|e| format!("not a SHA-crypt hash: {e}"))?;
    Ok(())
}

/// Dovecot's default `auth_username_chars`.
pub fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')
}

/// The name to look up for what a client logged in with, Dovecot's way
/// (`auth_username_format = %Lu`): ASCII lowercase; `None` when it has a character
/// outside `auth_username_chars`, is empty, or is longer than 255 bytes.
pub fn lookup_name(login: &str) -> Option<String> {
    (!login.is_empty() && login.len() <= 255 && login.chars().all(is_username_char))
        .then(|| login.to_ascii_lowercase())
}

/// A users file, read and checked.
#[derive(Debug)]
pub struct PasswdFile {
    users: HashMap<String, Arc<StoredPassword>>,
    /// The hash unknown users are verified against, so that they cost what a known
    /// user costs: the first entry of the most common scheme and parameters.
    stand_in: Option<String>,
}

impl PasswdFile {
    /// The stored password of `user` (a name from [`lookup_name`]).
    pub fn get(&self, user: &str) -> Option<&Arc<StoredPassword>> {
        self.users.get(user)
    }

    /// The hash to verify against when the user is unknown (`None`: the file is empty).
    pub fn stand_in(&self) -> Option<&Arc<StoredPassword>> {
        self.stand_in.as_ref().and_then(|u| self.users.get(u))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads a users file; every error is collected, with its line and column.
pub fn parse_passwd(text: &str) -> Result<PasswdFile, Vec<TableError>> {
    let mut users: HashMap<String, Arc<StoredPassword>> = HashMap::new();
    let mut lines: HashMap<String, u32> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new(); // (user, cost class)
    let mut errors = Vec::new();
    let mut offset = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw.len();
        let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let error = |range: Range<usize>, message: String, help: Option<String>| TableError {
            line: line_no,
            column: column(line, range.start),
            byte_span: start + range.start..start + range.end,
            message,
            help,
        };
        let (user, rest) = line.split_once(':').unwrap_or((line, ""));
        let user_span = 0..user.len();
        let pass_at = (user.len() + 1).min(line.len());
        let password = rest.split(':').next().unwrap_or_default();
        if user.is_empty() {
            errors.push(error(
                0..1,
                "empty user name".to_owned(),
                Some("expected `user:{SCHEME}hash`".to_owned()),
            ));
            continue;
        }
        if let Some((i, c)) = user.char_indices().find(|(_, c)| !is_username_char(*c)) {
            errors.push(error(
                i..i + c.len_utf8(),
                format!("`{c}` in user name `{user}`"),
                Some(
                    "user names are letters, digits and . - _ @ (Dovecot's auth_username_chars)"
                        .to_owned(),
                ),
            ));
            continue;
        }
        if user.chars().any(|c| c.is_ascii_uppercase()) {
            errors.push(error(
                user_span,
                format!("user name `{user}` has upper-case letters and could never log in"),
                Some(format!(
                    "login names are lowercased before the lookup (Dovecot's auth_username_format=%Lu): write `{}`",
                    user.to_ascii_lowercase()
                )),
            ));
            continue;
        }
        if password.is_empty() {
            errors.push(error(
                user_span,
                format!("no password for `{user}`"),
                Some(
                    "expected `user:{SCHEME}hash`; make one with `doveadm pw -s ARGON2ID`"
                        .to_owned(),
                ),
            ));
            continue;
        }
        let stored = match StoredPassword::parse(password) {
            Ok(stored) => stored,
            Err(e) => {
                errors.push(error(
                    pass_at + e.span.start..pass_at + e.span.end,
                    e.message,
                    e.help,
                ));
                continue;
            }
        };
        if let Some(first) = lines.get(user) {
            errors.push(error(
                user_span,
                format!("duplicate user `{user}` (first on line {first})"),
                None,
            ));
            continue;
        }
        lines.insert(user.to_owned(), line_no);
        order.push((user.to_owned(), stored.cost_class()));
        users.insert(user.to_owned(), Arc::new(stored));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, class) in &order {
        *counts.entry(class).or_default() += 1;
    }
    // most common class; among equals, the one whose first entry comes first
    let stand_in = order
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, class))| (counts[class.as_str()], std::cmp::Reverse(*i)))
        .map(|(_, (user, _))| user.clone());
    Ok(PasswdFile { users, stand_in })
}

/// The 1-based character column of byte `at` in `line`.
fn column(line: &str, at: usize) -> u32 {
    let chars = line.get(..at).map_or(at, |s| s.chars().count());
    u32::try_from(chars + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
