//! The stages of a message's path at which policy runs.
//!
//! Defined here, because the configuration names stages (`stage "rcpt" { ... }`) and
//! config must not depend on policy; [`crate::policy`] re-exports [`Stage`].

use std::fmt;

/// A point in the message's path where the pipeline is consulted. Rule and hook
/// lists are arrays indexed by [`Stage::index`], never maps keyed by strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// A client connected (before the banner).
    Connect,
    /// HELO / EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// Each RCPT TO: the relay decision.
    Rcpt,
    /// End of DATA / BDAT LAST, with the whole message.
    Data,
    /// Per recipient at each delivery attempt: where it goes.
    Route,
}

impl Stage {
    /// How many stages there are (the length of per-stage arrays).
    pub const COUNT: usize = 6;

    /// Every stage, in the order a message meets them.
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Route,
    ];

    /// The name used in the configuration (`stage "rcpt"`) and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Route => "route",
        }
    }

    /// The position of this stage in [`Stage::ALL`] and in per-stage arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stage with this configuration name, if any (exact, lowercase).
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
