//! Who mtad runs as: root only long enough to bind its ports, never for good unless
//! told.
//!
//! - Started as root with `server { user "mtad" }` (hosts without systemd): the
//!   listeners are bound, the spool, the maildrop and the control socket's directory
//!   are created for that user if missing, then the process takes the user's groups,
//!   gid and uid for good ([`enter`]) before it opens anything else. Files read later
//!   (at a reload: the configuration, certificates, keys, tables) are read as that
//!   user.
//! - Started as that user (systemd's `User=mtad` with `CAP_NET_BIND_SERVICE`): nothing
//!   to do. Started as another user who is not root: refused, nobody can switch.
//! - Started as root without `user`: refused, unless `mtad --allow-root` says so
//!   (tests and throw-away setups); it then warns and runs as root.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use tracing::{info, warn};

use crate::config::Config;
use crate::smtp::server::{BindError, Prebound, bind_all};

/// Why mtad will not run as it was started.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "mtad does not run as root: set `server {{ user \"mtad\" }}` (mtad binds its ports, then becomes that user), start it as that user (systemd's User=), or pass --allow-root to run as root all the same"
    )]
    Root,
    #[error("server.user: there is no account `{0}` on this system")]
    NoSuchUser(String),
    #[error("server.user: cannot look up the account `{name}`: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error(
        "server.user: `{0}` is root (uid 0); to run as root, leave `user` out and pass --allow-root"
    )]
    UserIsRoot(String),
    #[error(
        "server.user is `{wanted}` but mtad was started as uid {uid}; only root can become another user"
    )]
    WrongUser { wanted: String, uid: u32 },
    #[error(
        "{what} {} belongs to uid {owner}, not to `{user}` (uid {uid}), who will run mtad: chown -R {user} {}",
        path.display(),
        path.display()
    )]
    Owner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        user: String,
        uid: u32,
    },
    #[error("cannot prepare {what} {}: {source}", path.display())]
    Prepare {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot become `{user}`: {step}: {source}")]
    Drop {
        user: String,
        step: &'static str,
        source: nix::Error,
    },
    #[error("`{user}` could become root again after dropping privileges; refusing to run")]
    Regained { user: String },
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// What [`enter`] did: the listeners it bound before dropping privileges (none when
/// there was nothing to drop).
pub struct Entered {
    pub prebound: Option<Prebound>,
}

/// Checks who mtad runs as against `server { user }` and `allow_root`, and, when it
/// runs as root with a `user`, binds the listeners, prepares the directories for that
/// user and becomes it. Call inside the runtime, before the spool is opened.
pub fn enter(config: &Config, allow_root: bool) -> Result<Entered, PrivilegeError> {
    let euid = Uid::effective();
    let wanted = config.server.user.as_deref();
    match (euid.is_root(), wanted) {
        (false, None) => Ok(Entered { prebound: None }),
        (true, None) if allow_root => {
            warn!("running as root (--allow-root); set server {{ user }} to drop privileges");
            Ok(Entered { prebound: None })
        }
        (true, None) => Err(PrivilegeError::Root),
        (false, Some(name)) => {
            let user = account(name)?;
            if user.uid == euid {
                Ok(Entered { prebound: None })
            } else {
                Err(PrivilegeError::WrongUser {
                    wanted: name.to_owned(),
                    uid: euid.as_raw(),
                })
            }
        }
        (true, Some(name)) => {
            let user = account(name)?;
            if user.uid.is_root() {
                return Err(PrivilegeError::UserIsRoot(name.to_owned()));
            }
            let prebound = bind_all(&config.listeners)?;
            prepare_directories(config, &user)?;
            become_user(&user)?;
            info!(user = %user.name, uid = user.uid.as_raw(), gid = user.gid.as_raw(), "listeners bound; running as this user from now on");
            Ok(Entered {
                prebound: Some(prebound),
            })
        }
    }
}

fn account(name: &str) -> Result<User, PrivilegeError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(PrivilegeError::NoSuchUser(name.to_owned())),
        Err(source) => Err(PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        }),
    }
}

/// The directories the daemon writes to, made for `user` when missing (as root, before
/// the drop); an existing spool or maildrop must already be `user`'s.
fn prepare_directories(config: &Config, user: &User) -> Result<(), PrivilegeError> {
    own_dir("the spool", &config.server.spool, user, 0o700, None)?;
    // the control socket's directory (/run/mtad, where systemd is not there to make
    // it): created when missing; an existing one may be shared (the spool, /run)
    if let Some(socket_dir) = config.server.control_socket.parent()
        && !socket_dir.as_os_str().is_empty()
        && !socket_dir.exists()
    {
        own_dir(
            "the control socket's directory",
            socket_dir,
            user,
            0o750,
            None,
        )?;
    }
    if let Some(local) = &config.local_submission {
        let group = local
            .group
            .as_deref()
            .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| g.gid);
        own_dir(
            "the maildrop",
            &local.maildrop,
            user,
            crate::queue::maildrop::DIR_MODE,
            group,
        )?;
    }
    Ok(())
}

/// `dir` created (with its parents) owned by `user` (and `group`, or the user's own
/// group) with `mode` when missing; refused when it exists and is someone else's.
fn own_dir(
    what: &'static str,
    dir: &Path,
    user: &User,
    mode: u32,
    group: Option<Gid>,
) -> Result<(), PrivilegeError> {
    let fail = |source| PrivilegeError::Prepare {
        what,
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        // not a directory: the spool or the maildrop says so when it is opened
        Ok(meta) if meta.uid() == user.uid.as_raw() || !meta.is_dir() => Ok(()),
        Ok(meta) => Err(PrivilegeError::Owner {
            what,
            path: dir.to_path_buf(),
            owner: meta.uid(),
            user: user.name.clone(),
            uid: user.uid.as_raw(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(fail)?;
            let gid = group.unwrap_or(user.gid);
            std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(gid.as_raw()))
                .map_err(fail)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(fail)
        }
        Err(err) => Err(fail(err)),
    }
}

/// The user's supplementary groups, gid and uid, for good; checked by trying to get
/// root back.
fn become_user(user: &User) -> Result<(), PrivilegeError> {
    let fail = |step, source| PrivilegeError::Drop {
        user: user.name.clone(),
        step,
        source,
    };
    let name = CString::new(user.name.as_bytes()).map_err(|_| PrivilegeError::Drop {
        user: user.name.clone(),
        step: "initgroups",
        source: nix::Error::EINVAL,
    })?;
    nix::unistd::initgroups(&name, user.gid).map_err(|e| fail("initgroups", e))?;
    nix::unistd::setgid(user.gid).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(user.uid).map_err(|e| fail("setuid", e))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
        return Err(PrivilegeError::Regained {
            user: user.name.clone(),
        });
    }
    Ok(())
}
