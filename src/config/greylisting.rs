//! The `greylisting` block's settings: postgrey's options, for the built-in greylisting
//! that `greylist` rules and hooks' `greylist()` apply (see `docs/greylisting.md` and
//! [`crate::policy::greylist`]).

use std::time::Duration;

/// The `greylisting` block (every setting at postgrey's default when the block is
/// absent and a `greylist` rule is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greylisting {
    /// `delay "5m"` (postgrey `--delay=300`): how long a new triplet is refused.
    pub delay: Duration,
    /// `retry-window "2d"` (`--retry-window=2`): a triplet not retried successfully
    /// within this long after it was first seen starts again.
    pub retry_window: Duration,
    /// `max-age "35d"` (`--max-age=35`): a triplet (or an auto-allowlisted client) not
    /// seen for this long is forgotten.
    pub max_age: Duration,
    /// `ipv4-prefix 24` (`--ipv4cidr=24`): the part of an IPv4 client address that
    /// names its network in a triplet (32: the address, `--lookup-by-host`).
    pub ipv4_prefix: u8,
    /// `ipv6-prefix 64` (`--ipv6cidr=64`).
    pub ipv6_prefix: u8,
    /// `auto-allowlist 5` (`--auto-whitelist-clients=5`): a client address that
    /// passed greylisting this many times (at most once an hour counts) is not
    /// greylisted any more; 0: never.
    pub auto_allowlist: u32,
    /// `allow-clients "NETWORKS"...`: `networks` sets whose clients are never
    /// greylisted (postgrey's `whitelist_clients` addresses).
    pub allow_clients: Vec<String>,
    /// `allow-recipients "DOMAINS"...`: `domains` sets whose recipients are never
    /// greylisted (postgrey's `whitelist_recipients` domains).
    pub allow_recipients: Vec<String>,
    /// `text "..."` (`--greylist-text`): the reply's text; `%s` is the seconds left,
    /// `%r` the recipient's domain.
    pub text: String,
    /// `max-entries 100000`: the most triplets a node keeps when the state is local
    /// (the least recently seen go first).
    pub max_entries: usize,
}

impl Default for Greylisting {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 24 * 3600),
            max_age: Duration::from_secs(35 * 24 * 3600),
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            auto_allowlist: 5,
            allow_clients: Vec::new(),
            allow_recipients: Vec::new(),
            text: Self::DEFAULT_TEXT.to_owned(),
            max_entries: 100_000,
        }
    }
}

impl Greylisting {
    pub const DEFAULT_TEXT: &'static str = "Greylisted, try again in %s seconds";
}
