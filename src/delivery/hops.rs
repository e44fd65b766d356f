//! From a route to the hosts that get the mail: next hops resolved through DNS, the
//! fallback chain, connection reuse and per-destination concurrency. [`Outbound::send`]
//! delivers one message to the recipients that share a route and says what became of
//! each.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::client::{
    ClientConfig, Credentials, DeliveryError, Envelope, RcptOutcome, SmtpConnection,
};
use super::reply::Reply;
use super::tls::{TlsClient, TlsMode};
use super::tls_policy::{Destination, HostPolicy};
use crate::config::Delivery;
use crate::config::route::{LmtpTarget, NextHop, RouteOptions, Transport, credential_keys};
use crate::lookup::Table;
use crate::net::dns::{DnsError, Resolver};
use crate::net::dnssec::Dnssec;

/// How long an idle connection is kept for the next message to the same host
/// (Postfix's `smtp_connection_cache_time_limit`).
const IDLE_REUSE: Duration = Duration::from_secs(2);
/// Idle connections kept per host.
const IDLE_PER_HOST: usize = 32;

/// One host to try.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The host's name (an MX host, a `[host]`), for TLS and logs; the address
    /// literal itself when there is no name.
    pub name: String,
    pub target: Target,
    pub lmtp: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Hop {
    /// Postfix's `relay=` form: `host[ip]:port`, or `host[/path]` for a socket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Inet(addr) => write!(f, "{}[{}]:{}", self.name, addr.ip(), addr.port()),
            Target::Unix(path) => write!(f, "{}[{}]", self.name, path.display()),
        }
    }
}

/// What became of one recipient at this attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took it (or it was discarded / written to a Maildir).
    Sent {
        relay: String,
        reply: String,
        /// The TLS policy the connection met (SMTP and LMTP): `dane`, `mta-sts`,
        /// `verify`, ..., `none` for plaintext ([`HostPolicy::applied`]).
        tls: Option<&'static str>,
    },
    /// Try again later.
    Deferred {
        relay: String,
        enhanced: [u8; 3],
        detail: String,
    },
    /// Bounce.
    Bounced {
        relay: String,
        enhanced: [u8; 3],
        detail: String,
    },
}

impl Outcome {
    pub fn deferred(relay: &str, enhanced: [u8; 3], detail: impl Into<String>) -> Outcome {
        Outcome::Deferred {
            relay: relay.to_owned(),
            enhanced,
            detail: detail.into(),
        }
    }

    pub fn bounced(relay: &str, enhanced: [u8; 3], detail: impl Into<String>) -> Outcome {
        Outcome::Bounced {
            relay: relay.to_owned(),
            enhanced,
            detail: detail.into(),
        }
    }

    /// `sent`, `deferred` or `bounced`, as the delivery log line says.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Bounced { .. } => "bounced",
        }
    }

    pub fn relay(&self) -> &str {
        match self {
            Outcome::Sent { relay, .. }
            | Outcome::Deferred { relay, .. }
            | Outcome::Bounced { relay, .. } => relay,
        }
    }

    /// `2.0.0`, or the failure's enhanced status.
    pub fn dsn(&self) -> [u8; 3] {
        match self {
            Outcome::Sent { .. } => [2, 0, 0],
            Outcome::Deferred { enhanced, .. } | Outcome::Bounced { enhanced, .. } => *enhanced,
        }
    }

    /// The reply or reason, as the log and `mtactl queue` show it.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Sent { reply, .. } => reply,
            Outcome::Deferred { detail, .. } | Outcome::Bounced { detail, .. } => detail,
        }
    }

    fn from_reply(relay: &str, outcome: &RcptOutcome, tls: &'static str) -> Outcome {
        let reply = outcome.reply();
        match outcome {
            RcptOutcome::Delivered(_) => Outcome::Sent {
                relay: relay.to_owned(),
                reply: reply.to_string(),
                tls: Some(tls),
            },
            RcptOutcome::TempFail(_) => {
                Outcome::deferred(relay, enhanced_of(reply, 4), reply.to_string())
            }
            RcptOutcome::PermFail(_) => {
                Outcome::bounced(relay, enhanced_of(reply, 5), reply.to_string())
            }
        }
    }

    fn from_error(relay: &str, e: &DeliveryError) -> Outcome {
        let detail = e.to_string();
        match e {
            DeliveryError::Rejected {
                reply,
                permanent: true,
                ..
            } => Outcome::bounced(relay, enhanced_of(reply, 5), detail),
            DeliveryError::Rejected { reply, .. } => {
                Outcome::deferred(relay, enhanced_of(reply, 4), detail)
            }
            DeliveryError::Connect { .. } => Outcome::deferred(relay, [4, 4, 1], detail),
            DeliveryError::Tls { .. } => Outcome::deferred(relay, [4, 7, 4], detail),
            DeliveryError::Auth { .. } => Outcome::deferred(relay, [4, 7, 0], detail),
            DeliveryError::Loop { .. } => Outcome::deferred(relay, [4, 4, 6], detail),
            DeliveryError::Lookup(_) => Outcome::deferred(relay, [4, 3, 0], detail),
            DeliveryError::Timeout { .. }
            | DeliveryError::Io { .. }
            | DeliveryError::Protocol(_) => Outcome::deferred(relay, [4, 4, 2], detail),
        }
    }

    fn from_dns(relay: &str, e: &DnsError) -> Outcome {
        let enhanced = e.enhanced_code();
        if e.is_permanent() {
            Outcome::bounced(relay, enhanced, e.to_string())
        } else {
            Outcome::deferred(relay, enhanced, e.to_string())
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self, Outcome::Deferred { .. })
    }
}

/// The enhanced code of a reply, or `class.0.0` when it has none.
fn enhanced_of(reply: &Reply, class: u8) -> [u8; 3] {
    match &reply.enhanced {
        Some(e) if e.class == class => [
            e.class,
            u8::try_from(e.subject).unwrap_or(0),
            u8::try_from(e.detail).unwrap_or(0),
        ],
        _ => [class, 0, 0],
    }
}

type Pooled = (SmtpConnection, Instant);

/// What a delivery carries: mail, mail to a content filter (no loop detection), or a
/// TLS report (sent despite TLS failures, not itself reported on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mail,
    Filter,
    TlsReport,
}

/// Connections are reused only for the same host with the same TLS policy and account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    hop: Hop,
    tls: TlsMode,
    /// The policy's label and certificate names: a connection verified for one set of
    /// names or TLSA records is not reused for another.
    policy: String,
    auth: Option<String>,
}

/// Everything outbound deliveries share: the resolver, the client settings, idle
/// connections, and the concurrency limits.
pub struct Outbound {
    resolver: Resolver,
    settings: Delivery,
    helo_name: String,
    tls: Option<Arc<TlsClient>>,
    /// DNSSEC-validated lookups for DANE; `None`: none (nothing is DNSSEC-secure, so
    /// `dane` is `opportunistic` and `dane-only` defers).
    dnssec: Option<Dnssec>,
    /// MTA-STS policies (`delivery { mta-sts #true }`); `None`: not used.
    mta_sts: Option<Arc<super::mta_sts::MtaSts>>,
    /// Where TLS policy outcomes are counted for TLS reports (`delivery { tls-rpt
    /// #true }`); `None`: not counted.
    tls_rpt: Option<Arc<super::tls_rpt::store::Store>>,
    credentials: std::collections::BTreeMap<String, Arc<Table>>,
    idle: Mutex<HashMap<PoolKey, Vec<Pooled>>>,
    per_host: Mutex<HashMap<Target, Arc<Semaphore>>>,
    total: Arc<Semaphore>,
    /// Our own listening sockets: a next hop that is one of them is mail that loops
    /// back to us ([`Outbound::with_listeners`]).
    own: Vec<SocketAddr>,
}

impl Outbound {
    /// `tls`: None when TLS cannot be used (every TLS policy but `none` then fails).
    pub fn new(
        resolver: Resolver,
        settings: Delivery,
        helo_name: String,
        tls: Option<Arc<TlsClient>>,
        credentials: std::collections::BTreeMap<String, Arc<Table>>,
    ) -> Outbound {
        let total = Arc::new(Semaphore::new(settings.connections));
        Outbound {
            resolver,
            settings,
            helo_name,
            tls,
            dnssec: None,
            mta_sts: None,
            tls_rpt: None,
            credentials,
            idle: Mutex::new(HashMap::new()),
            per_host: Mutex::new(HashMap::new()),
            total,
            own: Vec::new(),
        }
    }

    /// Validate DNS for DANE with `dnssec`.
    pub fn with_dnssec(mut self, dnssec: Option<Dnssec>) -> Outbound {
        self.dnssec = dnssec;
        self
    }

    /// Honour recipient domains' MTA-STS policies with `mta_sts`.
    pub fn with_mta_sts(mut self, mta_sts: Option<Arc<super::mta_sts::MtaSts>>) -> Outbound {
        self.mta_sts = mta_sts;
        self
    }

    /// Count TLS policy outcomes in `store` for TLS reports.
    pub fn with_tls_rpt(mut self, store: Option<Arc<super::tls_rpt::store::Store>>) -> Outbound {
        self.tls_rpt = store;
        self
    }

    /// Where TLS policy outcomes are counted, when TLS reporting is on.
    pub fn tls_rpt(&self) -> Option<&Arc<super::tls_rpt::store::Store>> {
        self.tls_rpt.as_ref()
    }

    pub fn dnssec(&self) -> Option<&Dnssec> {
        self.dnssec.as_ref()
    }

    /// The TLS policy of `transport` (one destination of a route with `options`): the
    /// configured level ([`crate::config::tls_policy::choose`]) and what DNSSEC says of
    /// its MX records. Delivery and `mtactl tls-probe` both start here.
    pub async fn destination_tls(
        &self,
        transport: &Transport,
        options: &RouteOptions,
    ) -> Destination {
        let chosen = crate::config::tls_policy::choose(
            options.tls,
            self.settings.tls_policy_map.as_ref().map(|(_, m)| &**m),
            self.settings.tls,
            transport,
        );
        Destination::new(
            chosen,
            transport,
            self.dnssec.as_ref(),
            self.mta_sts.as_deref(),
        )
        .await
    }

    /// The TLS policy of a connection to `hop` of `destination` (its port names its
    /// TLSA records).
    async fn host_policy(&self, destination: &Destination, hop: &Hop) -> HostPolicy {
        let port = match hop.target {
            Target::Inet(a) => a.port(),
            Target::Unix(_) => 0,
        };
        destination
            .host(&hop.name, port, self.dnssec.as_ref())
            .await
    }

    /// `mtactl tls-probe`: the TLS policy each host of `transport` gets, decided as
    /// delivery decides it; with `connect`, also EHLO and STARTTLS under that policy
    /// (no MAIL, no AUTH), and how it went. One line per host.
    pub async fn probe_tls(
        &self,
        transport: &Transport,
        options: &RouteOptions,
        connect: bool,
    ) -> Result<Vec<String>, DnsError> {
        let destination = self.destination_tls(transport, options).await;
        let mut lines = Vec::new();
        for (hop, _) in self.ranked_hops(transport).await? {
            let policy = self.host_policy(&destination, &hop).await;
            let mut line = format!("{hop} tls {} policy {policy}", policy.mode);
            if !policy.names.is_empty() {
                let names: Vec<String> = policy.names.iter().map(ToString::to_string).collect();
                line.push_str(&format!(" names {}", names.join(",")));
            }
            if let Some(r) = &policy.refusal {
                line.push_str(&format!(" => deferred: {r}"));
            } else if connect {
                let check = match (&self.tls, policy.mode) {
                    (Some(c), m) if m != TlsMode::None => policy.check(c).ok().flatten(),
                    _ => None,
                };
                let mut config = self.client_config(&hop, policy.mode, None);
                config.tls_check = check;
                let said = match self::connect(&hop, &config).await {
                    Ok(mut conn) => {
                        let r = match conn.ehlo().await {
                            Ok(_) => Ok(conn.tls_description()),
                            Err(e) => Err(e),
                        };
                        tokio::spawn(conn.quit());
                        match r {
                            Ok(Some(tls)) => format!("ok: {tls}"),
                            Ok(None) => "ok: plaintext".to_owned(),
                            Err(e) => format!("failed: {e}"),
                        }
                    }
                    Err(e) => format!("failed: {e}"),
                };
                line.push_str(&format!(" => {said}"));
            }
            lines.push(line);
        }
        Ok(lines)
    }

    /// The addresses this server listens on (a wildcard address stands for every
    /// address of this host): a next hop among them is a mail loop.
    pub fn with_listeners(mut self, own: impl IntoIterator<Item = SocketAddr>) -> Outbound {
        self.own = own.into_iter().collect();
        self
    }

    /// Whether connecting to `target` would reach one of our own listeners: the same
    /// port, and the same address, or any address of this host for a listener on the
    /// wildcard address.
    fn is_self(&self, target: &Target) -> bool {
        let Target::Inet(addr) = target else {
            return false;
        };
        self.own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip() || (l.ip().is_unspecified() && is_local_ip(addr.ip())))
        })
    }

    pub fn settings(&self) -> &Delivery {
        &self.settings
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The hosts to try for a transport, in order. SMTP and LMTP only.
    pub async fn hops(&self, transport: &Transport) -> Result<Vec<Hop>, DnsError> {
        Ok(self
            .ranked_hops(transport)
            .await?
            .into_iter()
            .map(|(hop, _)| hop)
            .collect())
    }

    /// [`Outbound::hops`], each with its MX preference (0 for a host that is not an MX
    /// host). A next-hop list gives the hosts of its destinations in turn.
    async fn ranked_hops(&self, transport: &Transport) -> Result<Vec<(Hop, u16)>, DnsError> {
        let zero = |hops: Vec<Hop>| hops.into_iter().map(|h| (h, 0)).collect::<Vec<_>>();
        match transport {
            Transport::Smtp(NextHop::Host { host, port }) => Ok(zero(
                self.host_hops(host, port.unwrap_or(self.settings.smtp_port), false)
                    .await?,
            )),
            Transport::Smtp(NextHop::Mx { domain, port }) => {
                let port = port.unwrap_or(self.settings.smtp_port);
                let mut hops = Vec::new();
                let mut last_error = None;
                for mx in self.resolver.mail_hosts(domain).await? {
                    match self.host_hops(&mx.name, port, false).await {
                        Ok(h) => hops.extend(h.into_iter().map(|h| (h, mx.preference))),
                        Err(e) => last_error = Some(e),
                    }
                }
                match (hops.is_empty(), last_error) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(hops),
                }
            }
            Transport::Smtp(NextHop::List(all)) => {
                let mut hops = Vec::new();
                let mut last_error = None;
                for one in all {
                    match Box::pin(self.ranked_hops(&Transport::Smtp(one.clone()))).await {
                        Ok(mut h) => hops.append(&mut h),
                        Err(e) => last_error = Some(e),
                    }
                }
                match (hops.is_empty(), last_error) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(hops),
                }
            }
            Transport::Smtp(NextHop::RecipientDomain) => Err(DnsError::NoSuchDomain {
                domain: String::new(),
            }),
            Transport::Lmtp(LmtpTarget::Inet { host, port, .. }) => {
                Ok(zero(self.host_hops(host, *port, true).await?))
            }
            Transport::Lmtp(LmtpTarget::Unix(path)) => Ok(vec![(
                Hop {
                    name: "localhost".into(),
                    target: Target::Unix(PathBuf::from(path)),
                    lmtp: true,
                },
                0,
            )]),
            Transport::Local
            | Transport::Virtual(_)
            | Transport::Discard(_)
            | Transport::Error { .. } => Ok(Vec::new()),
        }
    }

    async fn host_hops(&self, host: &str, port: u16, lmtp: bool) -> Result<Vec<Hop>, DnsError> {
        Ok(self
            .resolver
            .addresses(host)
            .await?
            .into_iter()
            .map(|ip| Hop {
                name: host.to_owned(),
                target: Target::Inet(SocketAddr::new(ip, port)),
                lmtp,
            })
            .collect())
    }

    /// Delivers `message` to `recipients`, which share `transport` and `options`: each
    /// destination of the transport in turn (a next-hop list's in order, each one's
    /// hosts in turn), then each fallback relay (the route's, then the global ones)
    /// while recipients are left that failed temporarily. A 5xx is final: no fallback
    /// after it. One outcome per recipient, in order.
    ///
    /// Postfix's rules for next hops that do not resolve and for mail loops
    /// (smtp_connect.c, smtp_addr.c) apply: a configured next hop (a relay, a
    /// transport's host, a fallback relay) whose name does not resolve is a
    /// configuration problem, deferred (4.3.5) after the fallback relays were tried;
    /// only the recipient's own domain bounces when it does not exist. A next hop that
    /// is this server (one of its listeners, or a host on port 25 that greets with our
    /// hostname) is a loop: `5.4.6 mail for X loops back to myself`, no fallback tried;
    /// for a fallback relay, 4.3.5.
    pub async fn send(
        &self,
        transport: &Transport,
        options: &RouteOptions,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Vec<Outcome> {
        self.deliver(transport, options, envelope, message, Kind::Mail)
            .await
    }

    /// [`Outbound::send`] for a TLS report (RFC 8460 §5.3): sent despite any TLS
    /// failure (at most opportunistic TLS, nothing checked) and not itself counted for
    /// TLS reports.
    pub async fn send_tls_report(
        &self,
        transport: &Transport,
        options: &RouteOptions,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Vec<Outcome> {
        self.deliver(transport, options, envelope, message, Kind::TlsReport)
            .await
    }

    /// [`Outbound::send`] to a content filter: no loop detection (a filter is another
    /// service on this host by design; its loops are [`crate::cluster::filter_loops::FilterLoops`]').
    pub async fn send_to_filter(
        &self,
        transport: &Transport,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Vec<Outcome> {
        self.deliver(
            transport,
            &RouteOptions::default(),
            envelope,
            message,
            Kind::Filter,
        )
        .await
    }

    async fn deliver(
        &self,
        transport: &Transport,
        options: &RouteOptions,
        envelope: &Envelope<'_>,
        message: &[u8],
        kind: Kind,
    ) -> Vec<Outcome> {
        let loop_detect = kind != Kind::Filter;
        let n = envelope.recipients.len();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut last: Vec<Option<Outcome>> = vec![None; n];
        let primary = transport.destinations();
        let n_primary = primary.len();
        let chain: Vec<Transport> = primary
            .into_iter()
            .chain(options.fallback.iter().flat_map(Transport::destinations))
            .chain(
                self.settings
                    .fallback
                    .iter()
                    .flat_map(Transport::destinations),
            )
            .collect();
        // the MX hosts of the recipients' own domain (the default route)
        let own_domain = match transport {
            Transport::Smtp(NextHop::Mx { domain, .. }) => envelope.recipients.iter().all(|r| {
                r.rsplit_once('@')
                    .is_some_and(|(_, d)| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
            }),
            _ => false,
        };
        'chain: for (step, t) in chain.iter().enumerate() {
            let fallback = step >= n_primary;
            let hops = match self.ranked_hops(t).await {
                Ok(h) if h.is_empty() => {
                    let o =
                        Outcome::deferred(&t.to_string(), [4, 4, 4], format!("no hosts for {t}"));
                    fill(&mut outcomes, &mut last, &o, false);
                    continue;
                }
                Ok(h) => h,
                Err(e) if e.is_permanent() && step == 0 && own_domain => {
                    // A domain that does not exist or takes no mail bounces; a fallback
                    // relay cannot change that.
                    let o = Outcome::from_dns(&t.to_string(), &e);
                    fill(&mut outcomes, &mut last, &o, true);
                    break 'chain;
                }
                Err(e) if e.is_permanent() => {
                    // "Don't bounce mail after a host lookup problem with a relayhost
                    // or with a fallback relay" (Postfix): a next hop from the
                    // configuration that does not resolve is a configuration problem.
                    warn!(next_hop = %t, error = %e, "a configured next hop does not resolve: configuration problem; deferring");
                    let o = Outcome::deferred(
                        &t.to_string(),
                        [4, 3, 5],
                        format!("{e} (configuration problem: next hop {t})"),
                    );
                    fill(&mut outcomes, &mut last, &o, false);
                    continue;
                }
                Err(e) => {
                    let o = Outcome::from_dns(&t.to_string(), &e);
                    fill(&mut outcomes, &mut last, &o, false);
                    continue;
                }
            };
            let destination = self.destination_tls(t, options).await;
            // The hosts before the first that is ourselves (Postfix truncates an MX
            // list there: only more preferred hosts may take the mail). None: a loop.
            let best = hops.first().map_or(0, |(_, p)| *p);
            let mut hops = hops;
            let mut final_step = false;
            if loop_detect && let Some(me) = hops.iter().position(|(h, _)| self.is_self(&h.target))
            {
                let my_pref = hops[me].1;
                hops.truncate(me);
                hops.retain(|(_, p)| *p < my_pref);
                final_step = true;
                if hops.is_empty() {
                    let o = if fallback {
                        warn!(next_hop = %t, "mail for a fallback relay loops back to myself: configuration problem; deferring");
                        Outcome::deferred(
                            &t.to_string(),
                            [4, 3, 5],
                            format!("mail for {t} loops back to myself (configuration problem)"),
                        )
                    } else if my_pref == best {
                        Outcome::bounced(
                            &t.to_string(),
                            [5, 4, 6],
                            format!("mail for {} loops back to myself", loop_name(t, envelope)),
                        )
                    } else {
                        Outcome::deferred(
                            &t.to_string(),
                            [4, 4, 4],
                            format!(
                                "unable to find primary relay for {}",
                                loop_name(t, envelope)
                            ),
                        )
                    };
                    let bounce = matches!(o, Outcome::Bounced { .. });
                    fill(&mut outcomes, &mut last, &o, bounce);
                    break 'chain;
                }
            }
            for (hop, pref) in hops {
                let pending: Vec<usize> = (0..n).filter(|&i| outcomes[i].is_none()).collect();
                if pending.is_empty() {
                    break 'chain;
                }
                let rcpts: Vec<String> = pending
                    .iter()
                    .map(|&i| envelope.recipients[i].clone())
                    .collect();
                let sub = Envelope {
                    recipients: &rcpts,
                    ..*envelope
                };
                let relay = hop.to_string();
                let result = self
                    .transaction(&hop, t, &destination, options, &sub, message, kind)
                    .await;
                match result {
                    Ok((per, tls)) => {
                        for (&i, r) in pending.iter().zip(per.iter()) {
                            let o = Outcome::from_reply(&relay, r, tls);
                            if o.is_final() {
                                outcomes[i] = Some(o);
                            } else {
                                last[i] = Some(o);
                            }
                        }
                    }
                    Err(DeliveryError::Loop { name }) => {
                        // Postfix: 5.4.6 from a best MX (or a host without MX), else
                        // 4.4.6 and the next host; no fallback relay after it.
                        warn!(relay = %relay, %name, "host replied to EHLO with my own hostname");
                        let text =
                            format!("mail for {} loops back to myself", loop_name(t, envelope));
                        let o = if fallback {
                            Outcome::deferred(
                                &relay,
                                [4, 3, 5],
                                format!("{text} (configuration problem)"),
                            )
                        } else if pref == best {
                            Outcome::bounced(&relay, [5, 4, 6], text)
                        } else {
                            Outcome::deferred(&relay, [4, 4, 6], text)
                        };
                        final_step = true;
                        if matches!(o, Outcome::Bounced { .. }) {
                            for &i in &pending {
                                outcomes[i] = Some(o.clone());
                            }
                            break 'chain;
                        }
                        for &i in &pending {
                            last[i] = Some(o.clone());
                        }
                    }
                    Err(e) => {
                        let o = Outcome::from_error(&relay, &e);
                        let permanent = e.is_permanent();
                        for &i in &pending {
                            if permanent {
                                outcomes[i] = Some(o.clone());
                            } else {
                                last[i] = Some(o.clone());
                            }
                        }
                        if permanent {
                            break 'chain;
                        }
                    }
                }
            }
            if final_step {
                break 'chain;
            }
        }
        outcomes
            .into_iter()
            .zip(last)
            .map(|(o, l)| {
                o.or(l).unwrap_or_else(|| {
                    Outcome::deferred(&transport.to_string(), [4, 4, 4], "no host could be tried")
                })
            })
            .collect()
    }

    /// One transaction with one host, on an idle connection when there is one. An
    /// opportunistic STARTTLS that fails is retried once in plaintext, as Postfix does.
    #[allow(clippy::too_many_arguments)]
    async fn transaction(
        &self,
        hop: &Hop,
        transport: &Transport,
        destination: &Destination,
        options: &RouteOptions,
        envelope: &Envelope<'_>,
        message: &[u8],
        kind: Kind,
    ) -> Result<(Vec<RcptOutcome>, &'static str), DeliveryError> {
        let loop_detect = kind != Kind::Filter;
        let mut policy = self.host_policy(destination, hop).await;
        if kind == Kind::TlsReport {
            // RFC 8460 §5.3: reports go out despite TLS failures
            policy.refusal = None;
            policy.dane = super::tls_policy::DaneState::NotUsed;
            policy.names.clear();
            if policy.mode != TlsMode::None {
                policy.mode = TlsMode::Opportunistic;
            }
        }
        let report = |failure: Option<(super::tls_rpt::ResultType, &str)>| {
            if kind == Kind::TlsReport {
                return;
            }
            self.report_tls(destination, &policy, hop, failure);
        };
        let with_policy = |e: DeliveryError| with_policy(e, &policy);
        let metrics = crate::metrics::get();
        if let Some(refusal) = &policy.refusal {
            metrics.tls_policy(policy.chosen.rule.level.as_str(), "refused");
            report(Some((policy.refusal_result, refusal)));
            return Err(with_policy(DeliveryError::Tls {
                message: refusal.clone(),
                result: policy.refusal_result,
                plaintext_retry: false,
            }));
        }
        let tls = policy.mode;
        let check = match (&self.tls, tls) {
            (_, TlsMode::None) | (None, _) => None,
            (Some(client), _) => policy.check(client).map_err(|e| {
                with_policy(DeliveryError::Tls {
                    message: format!("TLS client configuration: {e}"),
                    result: super::tls_rpt::ResultType::ValidationFailure,
                    plaintext_retry: false,
                })
            })?,
        };
        let auth = self
            .credentials_for(transport, options)
            .map_err(|e| DeliveryError::Lookup(e.to_string()))?;
        // with TLS reports on, a connection serves one policy domain: its sessions are
        // counted for that domain (a reused connection is not counted again)
        let domain = match (&self.tls_rpt, kind) {
            (Some(_), Kind::Mail) => destination.policy_domain().unwrap_or_default(),
            _ => "",
        };
        let key = PoolKey {
            hop: hop.clone(),
            tls,
            policy: format!("{} {:?} {domain}", policy.label(), policy.names),
            auth: auth.as_ref().map(|c| c.user.clone()),
        };
        let _slot = self.slot(&hop.target).await;
        if let Some(mut conn) = self.take_idle(&key) {
            match conn.send_transaction(envelope, message).await {
                Ok(per) => {
                    let applied = policy.applied(conn.is_encrypted());
                    self.put_idle(&key, conn);
                    return Ok((per, applied));
                }
                // The server may have closed the idle connection: try a fresh one.
                Err(DeliveryError::Io { .. } | DeliveryError::Protocol(_)) => {
                    debug!(relay = %hop, "idle connection failed; reconnecting");
                }
                Err(e) => return Err(e),
            }
        }
        let mut config = self.client_config(hop, tls, auth);
        config.tls_check = check;
        // Postfix's SMTP_MISC_FLAG_LOOP_DETECT: SMTP to port 25 only.
        config.loop_detect =
            loop_detect && !hop.lmtp && matches!(hop.target, Target::Inet(a) if a.port() == 25);
        let result = self.fresh(hop, &config, envelope, message).await;
        // a TLS failure is reported once, even when the mail then goes in plaintext
        let mut reported = false;
        if let Some((r, text)) = &policy.report_failure {
            report(Some((*r, text)));
            reported = true;
        }
        if let Err(DeliveryError::Tls {
            result: r, message, ..
        }) = &result
        {
            report(Some((*r, message)));
            reported = true;
        }
        let result = match result {
            Err(e) if e.allows_plaintext_retry() => {
                debug!(relay = %hop, error = %e, "STARTTLS failed; trying once in plaintext");
                config.tls = TlsMode::None;
                self.fresh(hop, &config, envelope, message).await
            }
            other => other,
        };
        let (per, conn) = match result {
            Ok(r) => r,
            Err(e) => {
                if e.is_tls_failure() {
                    metrics.tls_policy(policy.chosen.rule.level.as_str(), "failed");
                }
                return Err(with_policy(e));
            }
        };
        if !reported && tls != TlsMode::None {
            if conn.is_encrypted() {
                report(None);
            } else {
                report(Some((
                    super::tls_rpt::ResultType::StarttlsNotSupported,
                    "STARTTLS not offered",
                )));
            }
        }
        metrics.tls_policy(
            policy.chosen.rule.level.as_str(),
            if conn.is_encrypted() {
                "satisfied"
            } else {
                "plaintext"
            },
        );
        tracing::info!(
            relay = %hop,
            tls_policy = %policy,
            tls = conn.tls_description().as_deref().unwrap_or("none"),
            "TLS policy satisfied."
        );
        let applied = policy.applied(conn.is_encrypted());
        if config.tls == tls {
            self.put_idle(&key, conn);
        } else {
            tokio::spawn(conn.quit());
        }
        Ok((per, applied))
    }

    /// Counts, for TLS reports, what became of `policy` on a new connection to `hop`
    /// (`failure`: its result type and text; `None`: satisfied). MX next hops only: a
    /// policy domain is a recipient domain.
    fn report_tls(
        &self,
        destination: &Destination,
        policy: &HostPolicy,
        hop: &Hop,
        failure: Option<(super::tls_rpt::ResultType, &str)>,
    ) {
        use super::tls_rpt::{Event, Failure};
        let (Some(store), Some(domain)) = (&self.tls_rpt, destination.policy_domain()) else {
            return;
        };
        let event = match failure {
            None => Event::success(domain, policy.report.clone()),
            Some((result, text)) => {
                let ip = match hop.target {
                    Target::Inet(a) => Some(a.ip()),
                    Target::Unix(_) => None,
                };
                let failure = Failure {
                    result,
                    sending_ip: ip.and_then(super::tls_rpt::source_address),
                    mx: hop.name.trim_end_matches('.').to_ascii_lowercase(),
                    receiving_ip: ip,
                };
                Event::failure(domain, policy.report.clone(), failure, text)
            }
        };
        store.record(event);
    }

    async fn fresh(
        &self,
        hop: &Hop,
        config: &ClientConfig,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Result<(Vec<RcptOutcome>, SmtpConnection), DeliveryError> {
        let mut conn = connect(hop, config).await?;
        let result = async {
            conn.ehlo().await?;
            conn.send_transaction(envelope, message).await
        }
        .await;
        match result {
            Ok(per) => Ok((per, conn)),
            Err(e) => {
                tokio::spawn(conn.quit());
                Err(e)
            }
        }
    }

    /// The account for `transport` in the route's `credentials` file: the next hop as
    /// the transport names it (`[host]:port`, `[host]`, `domain:port`, `domain`).
    fn credentials_for(
        &self,
        transport: &Transport,
        options: &RouteOptions,
    ) -> Result<Option<Credentials>, crate::lookup::LookupError> {
        let Some(table) = options
            .auth
            .as_deref()
            .and_then(|a| self.credentials.get(a))
        else {
            return Ok(None);
        };
        for k in credential_keys(transport) {
            if let Some(value) = table.lookup(&k)? {
                return Ok(value.split_once(':').map(|(user, password)| Credentials {
                    user: user.to_owned(),
                    password: password.to_owned(),
                }));
            }
        }
        Ok(None)
    }

    fn client_config(&self, hop: &Hop, tls: TlsMode, auth: Option<Credentials>) -> ClientConfig {
        ClientConfig {
            connect_timeout: self.settings.connect_timeout,
            command_timeout: self.settings.command_timeout,
            data_timeout: self.settings.data_timeout,
            lmtp: hop.lmtp,
            tls,
            tls_client: self.tls.clone(),
            tls_name: Some(hop.name.clone()),
            auth,
            auth_plaintext: self.settings.auth_plaintext,
            ..ClientConfig::new(&self.helo_name)
        }
    }

    /// A permit of the host's concurrency limit and one of the total.
    async fn slot(&self, target: &Target) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let host = {
            let mut per_host = self.per_host.lock().unwrap_or_else(|e| e.into_inner());
            per_host
                .entry(target.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.concurrency)))
                .clone()
        };
        let host = host
            .acquire_owned()
            .await
            .expect("semaphores are never closed");
        let total = self
            .total
            .clone()
            .acquire_owned()
            .await
            .expect("semaphores are never closed");
        (host, total)
    }

    fn take_idle(&self, key: &PoolKey) -> Option<SmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < IDLE_REUSE && conn.is_usable() {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    fn put_idle(&self, key: &PoolKey, conn: SmtpConnection) {
        if !conn.is_usable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key.clone()).or_default();
        if list.len() >= IDLE_PER_HOST {
            tokio::spawn(conn.quit());
            return;
        }
        list.push((conn, Instant::now()));
    }

    /// Says QUIT on idle connections past their reuse time. Called now and then.
    pub fn close_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for list in idle.values_mut() {
            let (keep, old): (Vec<Pooled>, Vec<Pooled>) = list
                .drain(..)
                .partition(|(c, since)| since.elapsed() < IDLE_REUSE && c.is_usable());
            *list = keep;
            for (conn, _) in old {
                tokio::spawn(conn.quit());
            }
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Closes every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Pooled> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, list)| list).collect()
        };
        for (conn, _) in all {
            conn.quit().await;
        }
    }
}

/// A new connection to `hop` (its greeting read).
async fn connect(hop: &Hop, config: &ClientConfig) -> Result<SmtpConnection, DeliveryError> {
    match &hop.target {
        Target::Inet(addr) => SmtpConnection::connect(*addr, config).await,
        Target::Unix(path) => SmtpConnection::connect_unix(path, config).await,
    }
}

/// A TLS failure's text with the policy that required it (`... (TLS policy dane (1
/// TLSA record(s)) from delivery tls)`), for the log line and the DSN.
fn with_policy(e: DeliveryError, policy: &HostPolicy) -> DeliveryError {
    match e {
        DeliveryError::Tls {
            message,
            result,
            plaintext_retry,
        } => DeliveryError::Tls {
            message: format!("{message} (TLS policy {policy})"),
            result,
            plaintext_retry,
        },
        other => other,
    }
}

/// The destination a loop is reported for, as Postfix names it: the recipients'
/// domain for an MX next hop of that domain, else the next hop.
fn loop_name(t: &Transport, envelope: &Envelope<'_>) -> String {
    match t {
        Transport::Smtp(NextHop::Mx { domain, .. }) => domain.clone(),
        Transport::Smtp(hop) => hop.to_string(),
        other => match envelope.recipients.first().and_then(|r| r.rsplit_once('@')) {
            Some((_, d)) => d.to_owned(),
            None => other.to_string(),
        },
    }
}

/// Whether `ip` is an address of this host: a loopback address, or one the kernel
/// routes to this host (a UDP socket "connected" to it, which sends nothing, gets it
/// as its own source address). Not a bind test: with `ip_nonlocal_bind` any address
/// can be bound.
fn is_local_ip(ip: std::net::IpAddr) -> bool {
    if ip.is_loopback() || ip.to_canonical().is_loopback() {
        return true;
    }
    let any: std::net::IpAddr = match ip {
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    std::net::UdpSocket::bind(SocketAddr::new(any, 0))
        .and_then(|s| {
            s.connect(SocketAddr::new(ip, 9))?;
            s.local_addr()
        })
        .is_ok_and(|local| local.ip() == ip)
}

/// Records `o` for every recipient without a final outcome: as final when `bounce`,
/// else as the latest temporary failure.
fn fill(outcomes: &mut [Option<Outcome>], last: &mut [Option<Outcome>], o: &Outcome, bounce: bool) {
    for (slot, l) in outcomes.iter_mut().zip(last.iter_mut()) {
        if slot.is_none() {
            if bounce {
                *slot = Some(o.clone());
            } else if l.is_none() {
                *l = Some(o.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_told_from_remote_ones() {
        assert!(is_local_ip("127.0.0.1".parse().unwrap()));
        assert!(is_local_ip("127.0.0.45".parse().unwrap()));
        assert!(is_local_ip("::1".parse().unwrap()));
        assert!(!is_local_ip("198.51.100.1".parse().unwrap()));
        // this host's own outgoing address (when it has a route at all) is local
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        if s.connect("198.51.100.1:9").is_ok() {
            let mine = s.local_addr().unwrap().ip();
            assert!(is_local_ip(mine), "{mine}");
        }
    }

    #[test]
    fn a_next_hop_is_ourselves_on_a_listener_port_only() {
        let settings = Delivery::defaults_for(std::path::Path::new("/nonexistent"));
        let out = Outbound::new(
            Resolver::with_nameserver("127.0.0.1:9".parse().unwrap()),
            settings,
            "mx.example.test".into(),
            None,
            Default::default(),
        )
        .with_listeners([
            "127.0.0.1:2525".parse().unwrap(),
            "0.0.0.0:25".parse().unwrap(),
        ]);
        let inet = |a: &str| Target::Inet(a.parse().unwrap());
        assert!(out.is_self(&inet("127.0.0.1:2525")));
        assert!(!out.is_self(&inet("127.0.0.1:10026")), "a content filter");
        assert!(out.is_self(&inet("127.0.0.7:25")), "the wildcard listener");
        assert!(!out.is_self(&inet("198.51.100.1:25")));
        assert!(!out.is_self(&Target::Unix("/run/lmtp".into())));
    }
}
