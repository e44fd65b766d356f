//! The SMTP server: listeners, sessions, and one file per verb.
//!
//! - [`server`]: binds the listeners, enforces connection limits, runs sessions and
//!   shuts down gracefully (the daemon around them is [`crate::control::daemon`]).
//! - `session`: the [`Session`](session::Session) state and its `ingest` loop; the verbs
//!   extend it in `ehlo`, `mail`, `rcpt`, `data` (DATA and BDAT) and `simple` (the rest).
//! - [`line`] and [`dot`]: the framers for command lines and DATA content.
//! - [`reply`]: every reply we send, by name.
//! - [`transcript`]: a whole session played in memory (or against a live daemon) from
//!   a transcript of lines to send and replies to expect.
//! - [`dry_run`]: `mtactl test-policy`'s dry run: an envelope sent to the real session in
//!   memory, reported from what it answered, decided ([`Tapped`]) and queued.

pub mod dot;
pub mod line;
pub mod proxy;
pub mod reply;
pub mod server;

mod auth;
mod conn;
mod data;
pub mod dry_run;
mod ehlo;
pub mod inflight;
pub mod local;
mod mail;
mod milter;
pub mod rate;
mod rcpt;
mod session;
mod shared;
mod simple;
pub mod tls;
mod transaction;
pub mod transcript;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::cluster::filter_loops::FilterLoops;
use crate::config::{AuthMode, BareNewline, Config, Limits, Listener, ListenerTls};
use crate::lookup::NetworkSet;
use crate::net::dns::Resolver;
use crate::policy::Pipeline;
use crate::queue::{QueueId, Spool};

pub use conn::Connections;
pub use session::Session;

/// What every session of a running server shares, for the life of the process. What a
/// reload may change lives elsewhere: the policy in [`Core::policy`] (swapped whole),
/// the listener settings, limits and greeting in each [`Listen`] (rebuilt).
pub struct Core {
    /// Shared with the delivery scheduler, which routes with the current policy.
    pub policy: Arc<ArcSwap<Pipeline>>,
    pub spool: Spool,
    /// Told about every message queued (the scheduler attempts it at once).
    pub on_queued: Box<dyn Fn(QueueId) + Send + Sync>,
    pub connections: Arc<Connections>,
    /// Messages inside a content filter right now, to notice one coming back to a
    /// listener that would filter it again (shared with the scheduler; in the cluster's
    /// Redis when there is one).
    pub filter_loops: Arc<FilterLoops>,
    /// `rate-limits`: connections, messages and recipients per client address.
    pub rate: rate::RateLimiter,
    /// `cluster`: where the limits are counted across the nodes (the process's
    /// counters in `rate` are then the fallback).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Where `greylist` rules keep the state of triplets: the process's (in memory,
    /// saved under the spool by the daemon) or the cluster's Redis.
    pub greylist: Arc<dyn crate::policy::greylist::Store>,
    /// `limits { data-memory }`: message data being received, in all sessions.
    pub data_memory: Arc<inflight::DataMemory>,
    /// Becomes `true` when the server stops: idle sessions say 421 and close, sessions
    /// in the middle of a message finish it first.
    pub shutdown: watch::Receiver<bool>,
    /// The resolver the `authentication` checks ask (delivery's, swapped with it by a
    /// reload).
    pub resolver: Arc<ArcSwap<Resolver>>,
    /// Parsed SPF, DKIM, DMARC records and addresses for the checks, kept across
    /// reloads.
    pub dns_cache: Arc<crate::mailauth::DnsCache>,
    /// Set for a session run in memory ([`transcript`]): the checks answer from these
    /// records only, never from `resolver`.
    pub dns_fixture: Option<crate::mailauth::DnsFixture>,
    /// Set for a session run in memory: what the session decided, in order, for a dry
    /// run's report and a suite's coverage ([`Tapped`]).
    pub tap: Option<std::sync::Mutex<Vec<Tapped>>>,
}

/// What an in-memory session records as it decides ([`Core::tap`]): the dry run
/// reports these beside the replies the client got, so that `mtactl test-policy`
/// shows what the daemon decided, not what a second implementation thinks it would.
#[derive(Clone, Debug)]
pub enum Tapped {
    /// A stage's decision, as [`Session`] applied it to the command just read.
    Decision {
        stage: crate::policy::Stage,
        decision: Box<crate::policy::Decision>,
    },
    /// What the `authentication` checks found: at MAIL (SPF), or at the end of DATA
    /// (`data`: DKIM, DMARC, ARC, iprev too).
    Auth {
        results: crate::mailauth::AuthResults,
        data: bool,
    },
    /// The content filter the accepted message goes through, and the rule (or table
    /// line) that chose it; `None`: the listener's or the server's default.
    Filter {
        name: String,
        by: Option<crate::policy::Origin>,
    },
    /// What would be sent to a milter (a session in memory never contacts one): the
    /// milter, the event and its arguments, the macros with their values.
    Milter(String),
}

impl Core {
    /// Records `what` when this is a session run in memory; nothing otherwise (the
    /// daemon pays one branch).
    pub(crate) fn tap(&self, what: impl FnOnce() -> Tapped) {
        if let Some(tap) = &self.tap {
            tap.lock().unwrap_or_else(|e| e.into_inner()).push(what());
        }
    }

    /// Takes what was recorded since the last call.
    pub fn drain_tap(&self) -> Vec<Tapped> {
        match &self.tap {
            Some(tap) => std::mem::take(&mut *tap.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        }
    }
}

/// How many records of each kind the checks' DNS cache holds.
const DNS_CACHE_ENTRIES: usize = 10_000;

impl Core {
    /// The checker for one transaction's `authentication` checks: the live resolver
    /// behind the shared cache, or the fixture of a session run in memory.
    pub fn checker(&self, timeout: std::time::Duration) -> crate::mailauth::Checker {
        match &self.dns_fixture {
            Some(fixture) => crate::mailauth::Checker::fixture(fixture),
            None => crate::mailauth::Checker::live(
                &self.resolver.load(),
                self.dns_cache.clone(),
                timeout,
            ),
        }
    }

    pub fn new(
        config: &Config,
        pipeline: impl Into<Arc<Pipeline>>,
        spool: Spool,
        resolver: Arc<ArcSwap<Resolver>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            resolver,
            dns_cache: Arc::new(crate::mailauth::DnsCache::new(DNS_CACHE_ENTRIES)),
            dns_fixture: None,
            tap: None,
            policy: Arc::new(ArcSwap::new(pipeline.into())),
            on_queued: Box::new(|_| {}),
            spool,
            connections: Arc::new(Connections::default()),
            filter_loops: Arc::new(FilterLoops::default()),
            rate: rate::RateLimiter::new(config),
            cluster: None,
            greylist: Arc::new(crate::policy::greylist::Local::in_memory()),
            data_memory: Arc::default(),
            shutdown,
        }
    }
}

/// The server-wide settings a session runs with, from the `server` and `limits`
/// blocks: built at start and by every reload, and kept by a session from its start
/// to its end.
pub struct Settings {
    pub hostname: String,
    /// The full `220` greeting line. It names the host, never the software or version.
    pub greeting: String,
    /// The EHLO reply's extensions, the same for every listener (`PIPELINING` ...);
    /// [`Listen`] renders them with what the listener adds.
    pub extensions: Vec<String>,
    pub limits: Limits,
}

impl Settings {
    pub fn new(config: &Config) -> Self {
        let hostname = config.server.hostname.clone();
        let banner = reply::sanitize(&config.server.banner, 200);
        let greeting = format!("220 {hostname} {banner}\r\n");
        let extensions = [
            "PIPELINING".to_owned(),
            format!("SIZE {}", config.limits.message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            "SMTPUTF8".to_owned(),
        ]
        .to_vec();
        Self {
            hostname,
            greeting,
            extensions,
            limits: config.limits.clone(),
        }
    }
}

/// What a session needs to know of its listener: its name, how it uses TLS and AUTH,
/// the server settings, and its EHLO replies, rendered once. A reload builds a new one
/// for every listener; sessions already running keep theirs.
pub struct Listen {
    pub name: Arc<str>,
    pub settings: Arc<Settings>,
    pub tls: ListenerTls,
    /// Set when `tls` is not `Off`.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub auth: AuthMode,
    pub auth_plaintext: bool,
    /// The table AUTH verifies against (set when `auth` is not `Off`).
    pub users: Option<crate::auth::Users>,
    /// The proxies a PROXY protocol listener accepts connections from (`proxy=`).
    pub proxies: Option<Arc<NetworkSet>>,
    /// Whose bare LFs are read as CRLF (`bare-newline="normalize"`).
    pub normalize_lf: NormalizeLf,
    /// Where the listener listens (`None`: the local submission), for the milters'
    /// `{daemon_addr}`.
    pub address: Option<std::net::SocketAddr>,
    /// `milters=`: the milters of its sessions, in order.
    pub milters: Vec<Arc<crate::milter::Milter>>,
    /// `milter-skip-clients=`: clients whose sessions no milter sees.
    pub milter_skip: Option<Arc<NetworkSet>>,
    /// The EHLO reply before TLS (with STARTTLS when offered) and after it.
    ehlo_plain: String,
    ehlo_tls: String,
}

impl Listen {
    pub fn new(
        settings: Arc<Settings>,
        l: &Listener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        users: Option<crate::auth::Users>,
        proxies: Option<Arc<NetworkSet>>,
        normalize_lf: NormalizeLf,
    ) -> Self {
        let tls = if acceptor.is_some() {
            l.tls
        } else {
            ListenerTls::Off
        };
        let auth_ext = "AUTH PLAIN LOGIN";
        let mut plain: Vec<&str> = settings.extensions.iter().map(String::as_str).collect();
        let mut encrypted = plain.clone();
        if matches!(tls, ListenerTls::Offered | ListenerTls::Required) {
            plain.push("STARTTLS");
        }
        let auth = if users.is_some() {
            l.auth
        } else {
            AuthMode::Off
        };
        if auth != AuthMode::Off {
            encrypted.push(auth_ext);
            if l.auth_plaintext {
                plain.push(auth_ext);
            }
        }
        let ehlo_plain = render_ehlo(&settings.hostname, &plain);
        let ehlo_tls = render_ehlo(&settings.hostname, &encrypted);
        Self {
            name: Arc::from(l.name.as_str()),
            settings,
            tls,
            acceptor,
            auth,
            auth_plaintext: l.auth_plaintext,
            users,
            proxies,
            normalize_lf,
            address: None,
            milters: Vec::new(),
            milter_skip: None,
            ehlo_plain,
            ehlo_tls,
        }
    }

    /// Every listener of `config`, with its certificate's acceptor, users table and
    /// proxies: what a start or a reload runs with. Fails if a certificate cannot be
    /// used now (it was checked when the configuration was).
    pub fn all(config: &Config) -> Result<Vec<(Listener, Listen)>, tls::ListenerTlsError> {
        let acceptors = tls::acceptors(config)?;
        let settings = Arc::new(Settings::new(config));
        Ok(config
            .listeners
            .iter()
            .map(|l| {
                let users = l.users.as_ref().and_then(|u| config.users.get(u)).cloned();
                let proxies = l
                    .proxy
                    .as_ref()
                    .and_then(|set| config.networks.get(set))
                    .map(|set| Arc::new(set.clone()));
                let normalize_lf = match &l.bare_newline {
                    BareNewline::Reject => NormalizeLf::Nobody,
                    BareNewline::Normalize { clients: None } => NormalizeLf::Everyone,
                    BareNewline::Normalize { clients: Some(set) } => {
                        config.networks.get(set).map_or(NormalizeLf::Nobody, |set| {
                            NormalizeLf::Clients(Arc::new(set.clone()))
                        })
                    }
                };
                let mut listen = Listen::new(
                    settings.clone(),
                    l,
                    acceptors.get(&l.name).cloned(),
                    users,
                    proxies,
                    normalize_lf,
                );
                listen.address = Some(l.address);
                listen.milters = l
                    .milters
                    .iter()
                    .filter_map(|m| config.milters.get(m).cloned())
                    .collect();
                listen.milter_skip = l
                    .milter_skip
                    .as_ref()
                    .and_then(|set| config.networks.get(set))
                    .map(|set| Arc::new(set.clone()));
                (l.clone(), listen)
            })
            .collect())
    }

    /// The EHLO reply for a session that is (or is not yet) encrypted.
    pub fn ehlo(&self, encrypted: bool) -> &str {
        if encrypted {
            &self.ehlo_tls
        } else {
            &self.ehlo_plain
        }
    }
}

/// Whose bare LFs a listener reads as CRLF: [`BareNewline`] with its networks set.
#[derive(Clone, Debug)]
pub enum NormalizeLf {
    /// Every bare LF is refused (the default).
    Nobody,
    Everyone,
    /// The clients in this set; the others' are refused.
    Clients(Arc<NetworkSet>),
}

impl NormalizeLf {
    /// Whether the client at `ip` (as policy sees it: after PROXY) gets its bare LFs
    /// read as CRLF.
    pub fn applies_to(&self, ip: std::net::IpAddr) -> bool {
        match self {
            NormalizeLf::Nobody => false,
            NormalizeLf::Everyone => true,
            NormalizeLf::Clients(set) => set.contains(server::canonical_ip(ip)),
        }
    }
}

/// `250-host`, then each extension, the last with `250 `.
fn render_ehlo(hostname: &str, extensions: &[&str]) -> String {
    let mut out = format!("250-{hostname}\r\n");
    for (i, e) in extensions.iter().enumerate() {
        let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
        out.push_str(&format!("250{sep}{e}\r\n"));
    }
    out
}
