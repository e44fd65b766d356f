//! The SMTP server: listeners, sessions, and one file per verb.
//!
//! - [`server`]: binds the listeners, enforces connection limits, runs sessions and
//!   shuts down gracefully.
//! - `session`: the [`Session`](session::Session) state and its `ingest` loop; the verbs
//!   extend it in `ehlo`, `mail`, `rcpt`, `data` (DATA and BDAT) and `simple` (the rest).
//! - [`line`] and [`dot`]: the framers for command lines and DATA content.
//! - [`reply`]: every reply we send, by name.

pub mod dot;
pub mod line;
pub mod proxy;
pub mod reply;
pub mod server;

mod conn;
mod data;
mod ehlo;
mod mail;
pub mod rate;
mod rcpt;
mod session;
mod simple;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, Limits};
use crate::delivery::filter::FilterLoops;
use crate::policy::Pipeline;
use crate::queue::{QueueId, Spool};

pub use conn::Connections;
pub use session::Session;

/// What every session of a running server shares. Built once at start; the policy
/// inside is swapped whole when it is reloaded, and each session keeps the snapshot it
/// started with.
pub struct Core {
    pub hostname: String,
    /// The full `220` greeting line. It names the host, never the software or version.
    pub greeting: String,
    /// The full multi-line EHLO reply, rendered once.
    pub ehlo: String,
    pub limits: Limits,
    /// Shared with the delivery scheduler, which routes with the current policy.
    pub policy: Arc<ArcSwap<Pipeline>>,
    pub spool: Spool,
    /// Told about every message queued (the scheduler attempts it at once).
    pub on_queued: Box<dyn Fn(QueueId) + Send + Sync>,
    pub connections: Arc<Connections>,
    /// Messages inside a content filter right now, to notice one coming back to a
    /// listener that would filter it again (shared with the scheduler).
    pub filter_loops: Arc<FilterLoops>,
    /// `rate-limits`: connections, messages and recipients per client address.
    pub rate: rate::RateLimiter,
    /// Becomes `true` when the server stops: idle sessions say 421 and close, sessions
    /// in the middle of a message finish it first.
    pub shutdown: watch::Receiver<bool>,
}

impl Core {
    pub fn new(
        config: &Config,
        pipeline: Pipeline,
        spool: Spool,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let hostname = config.server.hostname.clone();
        let banner = reply::sanitize(&config.server.banner, 200);
        let greeting = format!("220 {hostname} {banner}\r\n");
        let ehlo = format!(
            "250-{hostname}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
            config.limits.message_size
        );
        Self {
            hostname,
            greeting,
            ehlo,
            limits: config.limits.clone(),
            policy: Arc::new(ArcSwap::from_pointee(pipeline)),
            on_queued: Box::new(|_| {}),
            spool,
            connections: Arc::new(Connections::default()),
            filter_loops: Arc::new(FilterLoops::default()),
            rate: rate::RateLimiter::new(config),
            shutdown,
        }
    }
}
