//! SMTP AUTH, the server side: what a client's credentials are checked against.
//!
//! - [`sasl`] decodes the PLAIN and LOGIN exchanges (RFC 4616, RFC 4954) into a user
//!   name and a [`sasl::Password`].
//! - [`Users`] is a named `users` table from the configuration, either a Dovecot
//!   passwd-file ([`passwd`]) or an SQL query (through [`crate::lookup::sql`]), and
//!   [`Users::verify`] is the one call the SMTP session makes:
//!
//! ```no_run
//! # async fn session(users: &mtad::auth::Users, line: &str) {
//! use mtad::auth::{AuthOutcome, sasl};
//! match sasl::decode_plain(line) {
//!     Err(sasl::SaslError::AuthzidMismatch) => { /* 535 5.7.8 */ }
//!     Err(sasl::SaslError::Cancelled) => { /* 501 5.7.0 */ }
//!     Err(sasl::SaslError::Malformed(_)) => { /* 501 5.5.2 */ }
//!     Ok(c) => match users.verify(&c.user, c.password.as_bytes()).await {
//!         AuthOutcome::Ok(user) => { /* 235 2.7.0; the session is `user` */ }
//!         AuthOutcome::Failed => { /* 535 5.7.8 */ }
//!         AuthOutcome::Unavailable(reason) => { /* log reason; 454 4.7.0 */ }
//!     },
//! }
//! # }
//! ```
//!
//! Verification is built so that answers leak as little as possible: the slow hash
//! (Argon2, bcrypt, SHA-crypt) runs on tokio's blocking pool, never on an async
//! worker, with at most as many at once as there are CPUs (Argon2 allocates its
//! memory for each one); an unknown user costs what a known one costs, because the
//! password is then verified against a stand-in hash of the same kind and thrown
//! away; and a backend that cannot answer gives [`AuthOutcome::Unavailable`], never
//! `Ok`. Passwords are never logged.

pub mod passwd;
pub mod sasl;

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Semaphore;

use crate::lookup::sql::{SqlQuery, SqlSource};
use passwd::{PasswdFile, StoredPassword, lookup_name};

/// What [`Users::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password is right; the session is authenticated as this user (the name as
    /// the table knows it: lowercased, see [`passwd`]).
    Ok(String),
    /// Unknown user or wrong password (deliberately the same answer).
    Failed,
    /// The backend could not answer (database down or slow, a stored hash that does
    /// not parse): answer a temporary failure and log the reason, which names the
    /// table and never a password.
    Unavailable(String),
}

/// A `users` table: cheap to clone (an `Arc`), shared by every session.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    backend: Backend,
}

enum Backend {
    File(PasswdFile),
    Sql {
        source: SqlSource,
        query: SqlQuery,
        /// The last hash the database returned: what an unknown user is verified
        /// against, so both cost the same even when the database's hashes are not
        /// Argon2 like [`STAND_IN`].
        last_seen: Mutex<Option<Arc<StoredPassword>>>,
    },
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Users");
        d.field("name", &self.inner.name);
        match &self.inner.backend {
            Backend::File(file) => d.field("file_users", &file.len()),
            Backend::Sql { source, query, .. } => {
                d.field("sql", source).field("query", &query.as_str())
            }
        };
        d.finish()
    }
}

/// A hash nobody knows the password of, for unknown users when nothing better is
/// known (an empty file; an SQL table before its first hit): made with `doveadm pw -s
/// ARGON2ID` (Dovecot's default cost) from 32 random characters that were discarded.
const STAND_IN: &str = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$mGwpogKYx4odi/RPAZGmYw$bdZUpwilrdLk5Th4rrx5LsTxE3uvleiQQc0K/rATygk";

static STAND_IN_HASH: LazyLock<Arc<StoredPassword>> = LazyLock::new(|| {
    Arc::new(StoredPassword::parse(STAND_IN).expect("the built-in stand-in hash parses"))
});

/// Hash verifications running at once, process-wide: one per CPU. Argon2 with
/// Dovecot's defaults allocates 64 MiB per verification; this bounds the memory and
/// keeps a flood of AUTH attempts from starving the blocking pool.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
});

impl Users {
    /// A table read from a passwd-file (see [`passwd::parse_passwd`]).
    pub fn from_file(name: &str, file: PasswdFile) -> Users {
        Self::new(name, Backend::File(file))
    }

    /// A table in a database: `query` returns the `{SCHEME}hash` of its one
    /// parameter, the user name. Nothing connects until the first [`Users::verify`].
    pub fn from_sql(name: &str, source: SqlSource, query: SqlQuery) -> Users {
        Self::new(
            name,
            Backend::Sql {
                source,
                query,
                last_seen: Mutex::new(None),
            },
        )
    }

    fn new(name: &str, backend: Backend) -> Users {
        Users {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                backend,
            }),
        }
    }

    /// The table's name in the configuration.
    /// The database and query of an SQL users table (`mtactl check --connect`).
    pub fn sql(&self) -> Option<(&SqlSource, &SqlQuery)> {
        match &self.inner.backend {
            Backend::Sql { source, query, .. } => Some((source, query)),
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Checks `password` for the user a client logged in as. The name is looked up
    /// as Dovecot does by default: lowercased (ASCII), and refused outright when it
    /// has a character outside letters, digits and `.-_@`.
    pub async fn verify(&self, user: &str, password: &[u8]) -> AuthOutcome {
        let Some(login) = lookup_name(user) else {
            return AuthOutcome::Failed;
        };
        let (stored, known) = match &self.inner.backend {
            Backend::File(file) => match file.get(&login) {
                Some(stored) => (stored.clone(), true),
                None => (file.stand_in().unwrap_or(&STAND_IN_HASH).clone(), false),
            },
            Backend::Sql {
                source,
                query,
                last_seen,
            } => match source.lookup(query, &login).await {
                Err(e) => {
                    return AuthOutcome::Unavailable(format!("users `{}`: {e}", self.name()));
                }
                Ok(None) => {
                    let seen = last_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    (seen.unwrap_or_else(|| STAND_IN_HASH.clone()), false)
                }
                Ok(Some(text)) => match StoredPassword::parse(&text) {
                    Ok(stored) => {
                        let stored = Arc::new(stored);
                        *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored.clone());
                        (stored, true)
                    }
                    Err(e) => {
                        return AuthOutcome::Unavailable(format!(
                            "users `{}`: the stored password of `{login}` is not {{SCHEME}}hash: {e}",
                            self.name()
                        ));
                    }
                },
            },
        };
        match check(stored, password, SLOT_WAIT).await {
            Ok(true) if known => AuthOutcome::Ok(login),
            Ok(_) => AuthOutcome::Failed,
            Err(reason) => AuthOutcome::Unavailable(format!("users `{}`: {reason}", self.name())),
        }
    }
}

/// How long an AUTH waits for a verification slot before it gives up with a
/// temporary failure (`454 4.7.0`): a flood of attempts must not queue sessions
/// behind it without end.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Verifies on the blocking pool, at most [`SLOTS`] at once, after waiting at most
/// `wait` for a slot.
async fn check(
    stored: Arc<StoredPassword>,
    password: &[u8],
    wait: std::time::Duration,
) -> Result<bool, String> {
    let _slot = match tokio::time::timeout(wait, SLOTS.acquire()).await {
        Ok(slot) => slot.map_err(|_| "verification slots closed".to_owned())?,
        Err(_) => {
            return Err(format!(
                "no password verification slot free within {}s (too many AUTH at once)",
                wait.as_secs_f32()
            ));
        }
    };
    let password = sasl::Password::new(password.to_vec());
    tokio::task::spawn_blocking(move || stored.verify(password.as_bytes()))
        .await
        .map_err(|e| format!("password verification failed: {e}"))
}

#[cfg(test)]
mod tests;
