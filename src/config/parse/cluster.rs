//! The `cluster` block (a child module of `parser`, for its helpers): the Redis server
//! several nodes share their rate limits and connection leases through.
//!
//! ```kdl
//! cluster {
//!     redis "redis://127.0.0.1:6379/0"   // rediss:// for TLS; user:password@ for AUTH
//!     node "mx1"                         // default: the server hostname
//!     timeout "250ms"                    // each call to Redis (default 250ms)
//!     key-prefix "mtad:"                 // the default
//!     fallback "local"                   // or "tempfail", while Redis does not answer
//!     lease "1m"                         // connection leases live this long unless renewed
//!     heartbeat "5s"                     // the node's state written to Redis this often
//! }
//! ```

use std::time::Duration;

use kdl::KdlNode;

use super::{Parser, suggest};
use crate::config::cluster::{Cluster, Fallback};

pub(crate) const KEYS: &[&str] = &[
    "redis",
    "node",
    "timeout",
    "key-prefix",
    "fallback",
    "lease",
    "heartbeat",
];
const USAGE: &str = "cluster { redis \"redis://127.0.0.1:6379/0\"; node \"mx1\" }";

impl Parser {
    /// The block; its `node` is left empty when not written (the caller puts the server
    /// hostname there). `None` after an error that leaves no Redis to talk to.
    pub(super) fn cluster(&mut self, node: &KdlNode) -> Option<Cluster> {
        let children = self.settings_block(node, "cluster", KEYS, USAGE)?;
        let mut cluster = Cluster {
            redis: String::new(),
            node: String::new(),
            timeout: Cluster::DEFAULT_TIMEOUT,
            key_prefix: Cluster::DEFAULT_PREFIX.to_owned(),
            fallback: Fallback::Local,
            lease: Cluster::DEFAULT_LEASE,
            heartbeat: Cluster::DEFAULT_HEARTBEAT,
        };
        let mut ok = true;
        for child in children {
            let key = child.name().value();
            let usage = match key {
                "redis" => "redis \"redis://127.0.0.1:6379/0\"",
                "node" => "node \"mx1\"",
                "timeout" => "timeout \"250ms\"",
                "key-prefix" => "key-prefix \"mtad:\"",
                "fallback" => "fallback \"local\"",
                "heartbeat" => "heartbeat \"5s\"",
                _ => "lease \"1m\"",
            };
            let Some(entry) = self.setting(child, usage) else {
                ok = false;
                continue;
            };
            match key {
                "redis" => {
                    let Some(url) = self.string(entry, "the Redis URL") else {
                        ok = false;
                        continue;
                    };
                    if let Err(why) = crate::config::cluster::check_url(url) {
                        self.error(entry.span(), format!("invalid Redis URL: {why}"), "here")
                            .help = Some(
                            "e.g. redis://127.0.0.1:6379/0, rediss://user:password@redis.example.test/0, redis+unix:///run/redis/redis.sock"
                                .to_owned(),
                        );
                        ok = false;
                        continue;
                    }
                    cluster.redis = url.to_owned();
                }
                "node" => {
                    let Some(name) = self.string(entry, "the node name") else {
                        continue;
                    };
                    if name.is_empty()
                        || name.len() > 64
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        self.error(
                            entry.span(),
                            "a node name is 1 to 64 letters, digits, `-`, `_` or `.`",
                            "invalid name",
                        );
                        continue;
                    }
                    cluster.node = name.to_owned();
                }
                "key-prefix" => {
                    let Some(prefix) = self.string(entry, "the key prefix") else {
                        continue;
                    };
                    if prefix.len() > 64 || prefix.bytes().any(|b| !b.is_ascii_graphic()) {
                        self.error(
                            entry.span(),
                            "a key prefix is at most 64 printable characters, no spaces",
                            "invalid prefix",
                        );
                        continue;
                    }
                    cluster.key_prefix = prefix.to_owned();
                }
                "fallback" => {
                    let Some(name) = self.string(entry, "the fallback") else {
                        continue;
                    };
                    match Fallback::from_name(name) {
                        Some(f) => cluster.fallback = f,
                        None => {
                            let help = suggest(name, Fallback::NAMES).unwrap_or_else(|| {
                                format!("one of: {}", Fallback::NAMES.join(", "))
                            });
                            self.error(
                                entry.span(),
                                format!("unknown fallback `{name}`"),
                                "unknown",
                            )
                            .help = Some(help);
                        }
                    }
                }
                "timeout" => {
                    let range = (Duration::from_millis(10), Duration::from_secs(10));
                    if let Some(d) = self.duration_within(entry, "the Redis timeout", range) {
                        cluster.timeout = d;
                    }
                }
                "heartbeat" => {
                    let range = (Duration::from_secs(1), Duration::from_secs(300));
                    if let Some(d) = self.duration_within(entry, "the heartbeat", range) {
                        cluster.heartbeat = d;
                    }
                }
                _ => {
                    let range = (Duration::from_secs(3), Duration::from_secs(3600));
                    if let Some(d) = self.duration_within(entry, "a lease", range) {
                        cluster.lease = d;
                    }
                }
            }
        }
        if cluster.redis.is_empty() {
            if ok {
                self.node_error(node, "`cluster` needs `redis \"URL\"`", "which Redis?")
                    .help = Some(format!("usage: {USAGE}"));
            }
            return None;
        }
        Some(cluster)
    }

    /// A duration in `min..=max`, written as humantime writes them in the error.
    pub(super) fn duration_within(
        &mut self,
        entry: &kdl::KdlEntry,
        what: &str,
        (min, max): (Duration, Duration),
    ) -> Option<Duration> {
        let d = self.duration(entry, what)?;
        if (min..=max).contains(&d) {
            return Some(d);
        }
        self.error(
            entry.span(),
            format!(
                "{what} must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
            "out of range",
        );
        None
    }
}
