//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): one datagram to
//! `$NOTIFY_SOCKET` per change of state. Without `$NOTIFY_SOCKET` (not started by
//! systemd) each call does nothing.
//!
//! - `READY=1` once every listener is bound and mail is accepted ([`ready`]);
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts, `READY=1` when it ends,
//!   put in force or refused ([`reloading`], [`ready`]);
//! - `STOPPING=1` when a shutdown starts ([`stopping`]).
//!
//! A message that cannot be sent is logged and otherwise ignored: the service runs all
//! the same (systemd then reports the start as timed out).

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// `READY=1`, with `STATUS=` saying what is in force.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` and `MONOTONIC_USEC=` (now, as systemd's reload protocol asks).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => {
            warn!(%err, "cannot read the monotonic clock for sd_notify");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => debug!(states = ?states, "sd_notify"),
        Err(err) => warn!(%err, "cannot notify systemd (NOTIFY_SOCKET)"),
    }
}
