//! What rules and hooks may ask of the rate limiter: the kinds of events it counts,
//! and the read-only view of its counters. The limiter itself (windows, eviction)
//! belongs to the session that feeds it.

use std::net::IpAddr;

/// The kinds of events a client is counted for (`rate-limit { connections ... }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKind {
    Connections,
    Messages,
    Recipients,
    Auth,
    AuthFailures,
}

impl RateKind {
    pub const ALL: [RateKind; 5] = [
        RateKind::Connections,
        RateKind::Messages,
        RateKind::Recipients,
        RateKind::Auth,
        RateKind::AuthFailures,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Connections => "connections",
            RateKind::Messages => "messages",
            RateKind::Recipients => "recipients",
            RateKind::Auth => "auth",
            RateKind::AuthFailures => "auth-failures",
        }
    }
}

/// Reads the rate-limit counters: how many `kind` events (`connections`, `messages`,
/// `recipients`, `auth`, `auth-failures`) a client had in its current window; `None`
/// when no limit of that kind is set. In memory today; a store shared by several nodes
/// would implement it too.
pub trait RateView: std::fmt::Debug + Sync {
    fn count(&self, kind: RateKind, client: IpAddr) -> Option<u32>;
}
