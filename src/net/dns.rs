//! Next-hop resolution in DNS (docs/delivery.md, "DNS: next hops"): the mail hosts of a
//! domain (MX by preference, equal preferences shuffled, implicit MX, RFC 7505 null MX)
//! and the addresses of one host (A, then AAAA).
//!
//! Built on hickory-resolver, either from `/etc/resolv.conf` ([`Resolver::system`]) or
//! pointed at one nameserver ([`Resolver::with_nameserver`], UDP with TCP fallback).
//! Every name is queried as fully qualified: no search domains are ever appended.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// How long and how often a query is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsTimeouts {
    /// Per query sent to a nameserver.
    pub query_timeout: Duration,
    /// How many times a failed query is tried again (hickory's `attempts`).
    pub attempts: usize,
}

impl Default for DnsTimeouts {
    fn default() -> Self {
        DnsTimeouts {
            query_timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl DnsTimeouts {
    /// A bound on one whole lookup (all attempts, UDP then TCP), a safety net over
    /// hickory's own timeouts.
    fn overall(&self) -> Duration {
        self.query_timeout * (2 * (self.attempts as u32 + 1)) + Duration::from_secs(1)
    }
}

/// A DNS resolver for next hops. Cheap to clone; share it between deliveries.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
    timeouts: DnsTimeouts,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// One host to try for a domain. `name` is lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailHost {
    pub name: String,
    pub preference: u16,
}

/// Why no next hop could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// RFC 7505: the domain accepts no mail. Permanent, 5.1.10.
    #[error("{domain} does not accept mail (null MX)")]
    NullMx { domain: String },
    /// NXDOMAIN. Permanent, 5.1.2.
    #[error("{domain}: no such domain")]
    NoSuchDomain { domain: String },
    /// The host exists but has no A or AAAA record. Permanent, 5.4.4.
    #[error("{host}: host has no address")]
    NoAddresses { host: String },
    /// SERVFAIL, REFUSED, a timeout, no nameserver reachable: try again later. 4.4.3.
    #[error("{domain}: temporary DNS failure: {message}")]
    Temporary { domain: String, message: String },
    /// The resolver could not be set up (e.g. an unreadable `/etc/resolv.conf`).
    /// Temporary, 4.3.5.
    #[error("DNS resolver configuration: {message}")]
    Config { message: String },
}

impl DnsError {
    /// True when retrying cannot help: the message bounces.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DnsError::NullMx { .. } | DnsError::NoSuchDomain { .. } | DnsError::NoAddresses { .. }
        )
    }

    /// The RFC 3463 enhanced status code for a DSN or a log line.
    pub fn enhanced_code(&self) -> [u8; 3] {
        match self {
            DnsError::NullMx { .. } => [5, 1, 10],
            DnsError::NoSuchDomain { .. } => [5, 1, 2],
            DnsError::NoAddresses { .. } => [5, 4, 4],
            DnsError::Temporary { .. } => [4, 4, 3],
            DnsError::Config { .. } => [4, 3, 5],
        }
    }
}

impl Resolver {
    /// The nameservers of `/etc/resolv.conf`, default timeouts.
    pub fn system() -> Result<Resolver, DnsError> {
        Self::system_with(DnsTimeouts::default())
    }

    /// The nameservers of `/etc/resolv.conf`, given timeouts.
    pub fn system_with(timeouts: DnsTimeouts) -> Result<Resolver, DnsError> {
        let (config, _) =
            hickory_resolver::system_conf::read_system_conf().map_err(|e| DnsError::Config {
                message: e.to_string(),
            })?;
        // The system's options (ndots, timeout...) are replaced by ours; /etc/hosts is
        // still read, as every MTA does.
        Ok(Self::build(config, timeouts, ResolveHosts::Auto))
    }

    /// No nameserver and no `/etc/hosts`: every query fails at once, and nothing goes
    /// to the network (a session run in memory, whose checks answer from a fixture).
    pub fn offline() -> Resolver {
        let config = ResolverConfig::from_name_servers(Vec::new());
        Self::build(config, DnsTimeouts::default(), ResolveHosts::Never)
    }

    /// One nameserver (UDP, TCP when a reply is truncated), default timeouts. `/etc/hosts`
    /// is not read.
    pub fn with_nameserver(addr: SocketAddr) -> Resolver {
        Self::with_nameserver_and(addr, DnsTimeouts::default())
    }

    /// One nameserver, given timeouts.
    pub fn with_nameserver_and(addr: SocketAddr, timeouts: DnsTimeouts) -> Resolver {
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        let config = ResolverConfig::from_name_servers(vec![server]);
        Self::build(config, timeouts, ResolveHosts::Never)
    }

    fn build(config: ResolverConfig, timeouts: DnsTimeouts, hosts: ResolveHosts) -> Resolver {
        // No search domains: a next hop is always a fully qualified name.
        let (_, _, name_servers) = config.into_parts();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut options = ResolverOpts::default();
        options.timeout = timeouts.query_timeout;
        options.attempts = timeouts.attempts;
        options.ndots = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = hosts;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = options;
        // Building fails only when TLS is configured, and these features have none.
        let inner = builder
            .build()
            .expect("a resolver without TLS always builds");
        Resolver {
            inner: Arc::new(inner),
            timeouts,
        }
    }

    /// The hickory resolver itself, for mail-auth (SPF, DKIM, DMARC, iprev). A clone
    /// shares the original's connections and cache.
    pub(crate) fn hickory(&self) -> TokioResolver {
        (*self.inner).clone()
    }

    /// The hosts to try for `domain`, in order: its MX records by preference, equal
    /// preferences shuffled; with no MX record, the domain itself (implicit MX,
    /// RFC 5321 5.1). A null MX (RFC 7505) is [`DnsError::NullMx`].
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<MailHost>, DnsError> {
        let domain = normalize(domain);
        let name = fqdn(&domain).ok_or_else(|| DnsError::NoSuchDomain {
            domain: domain.clone(),
        })?;
        let lookup = self.inner.lookup(name, RecordType::MX);
        let answer = match tokio::time::timeout(self.timeouts.overall(), lookup).await {
            Err(_) => {
                return Err(DnsError::Temporary {
                    domain,
                    message: "timed out".into(),
                });
            }
            Ok(Err(e)) => match classify(&e) {
                Failure::NoSuchDomain => return Err(DnsError::NoSuchDomain { domain }),
                Failure::NoData => Vec::new(),
                Failure::Temporary => {
                    return Err(DnsError::Temporary {
                        domain,
                        message: e.to_string(),
                    });
                }
            },
            Ok(Ok(lookup)) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
        };
        order_mail_hosts(&domain, answer, &mut Shuffler::new())
    }

    /// The addresses of one host (an MX host, or the host of a `[host]` next hop): its A
    /// records, then its AAAA records. An IP address literal is returned as it is.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let host = normalize(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(&host).ok_or_else(|| DnsError::NoSuchDomain {
            domain: host.clone(),
        })?;
        let lookup = self.inner.lookup_ip(name);
        match tokio::time::timeout(self.timeouts.overall(), lookup).await {
            Err(_) => Err(DnsError::Temporary {
                domain: host,
                message: "timed out".into(),
            }),
            Ok(Err(e)) => Err(match classify(&e) {
                Failure::NoSuchDomain => DnsError::NoSuchDomain { domain: host },
                Failure::NoData => DnsError::NoAddresses { host },
                Failure::Temporary => DnsError::Temporary {
                    domain: host,
                    message: e.to_string(),
                },
            }),
            Ok(Ok(ips)) => {
                let mut ips: Vec<IpAddr> = ips.iter().collect();
                // A before AAAA, whatever order the answers came in; stable within each.
                ips.sort_by_key(|ip| ip.is_ipv6());
                ips.dedup();
                if ips.is_empty() {
                    Err(DnsError::NoAddresses { host })
                } else {
                    Ok(ips)
                }
            }
        }
    }
}

/// The record types policy may ask for (DNS lists, hooks' `dns_*` functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    A,
    Aaaa,
    Txt,
    Ptr,
}

/// Longest text kept of one answer (a TXT record's strings joined, a name): answers
/// are untrusted input, and end up in replies and logs.
pub const MAX_ANSWER_TEXT: usize = 512;
/// Most records kept of one answer.
pub const MAX_ANSWERS: usize = 32;

impl Resolver {
    /// The records of `kind` at `name`, as text (addresses, a TXT record's strings
    /// joined, names without the trailing dot), at most [`MAX_ANSWERS`] of them, each
    /// cut to [`MAX_ANSWER_TEXT`] bytes of printable ASCII. No such name and no such
    /// record are both an empty answer; a timeout, SERVFAIL or REFUSED is
    /// [`DnsError::Temporary`]. Answers come from, and go to, the resolver's cache.
    pub async fn records(&self, name: &str, kind: Query) -> Result<Vec<String>, DnsError> {
        let domain = normalize(name);
        let Some(fq) = fqdn(&domain) else {
            return Ok(Vec::new());
        };
        let rtype = match kind {
            Query::A => RecordType::A,
            Query::Aaaa => RecordType::AAAA,
            Query::Txt => RecordType::TXT,
            Query::Ptr => RecordType::PTR,
        };
        let lookup = self.inner.lookup(fq, rtype);
        let answer = match tokio::time::timeout(self.timeouts.overall(), lookup).await {
            Err(_) => {
                return Err(DnsError::Temporary {
                    domain,
                    message: "timed out".into(),
                });
            }
            Ok(Err(e)) => {
                return match classify(&e) {
                    Failure::NoSuchDomain | Failure::NoData => Ok(Vec::new()),
                    Failure::Temporary => Err(DnsError::Temporary {
                        domain,
                        message: e.to_string(),
                    }),
                };
            }
            Ok(Ok(lookup)) => lookup,
        };
        let printable = |bytes: &[u8]| -> String {
            bytes
                .iter()
                .take(MAX_ANSWER_TEXT)
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '?'
                    }
                })
                .collect()
        };
        Ok(answer
            .answers()
            .iter()
            .filter_map(|record| match (&record.data, kind) {
                (RData::A(a), Query::A) => Some(a.0.to_string()),
                (RData::AAAA(a), Query::Aaaa) => Some(a.0.to_string()),
                (RData::TXT(txt), Query::Txt) => {
                    let joined: Vec<u8> = txt
                        .txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .take(MAX_ANSWER_TEXT)
                        .collect();
                    Some(printable(&joined))
                }
                (RData::PTR(ptr), Query::Ptr) => {
                    Some(printable(normalize(&ptr.0.to_ascii()).as_bytes()))
                }
                _ => None,
            })
            .take(MAX_ANSWERS)
            .collect())
    }
}

/// The name a DNS list is asked at for `ip` in `zone`: the address's octets (IPv4)
/// or nibbles (IPv6) reversed, then the zone (`2.0.0.127.zone`).
pub fn reversed(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str(zone);
            out
        }
    }
}

/// Lowercase, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The fully qualified form of a normalized name; None for an empty or invalid one.
fn fqdn(name: &str) -> Option<Name> {
    if name.is_empty() {
        return None;
    }
    let mut name = Name::from_utf8(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

enum Failure {
    NoSuchDomain,
    NoData,
    Temporary,
}

fn classify(error: &NetError) -> Failure {
    if error.is_nx_domain() {
        Failure::NoSuchDomain
    } else if let NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(no_records)) = error
    {
        if no_records.response_code == ResponseCode::NoError {
            Failure::NoData
        } else {
            Failure::Temporary
        }
    } else {
        Failure::Temporary
    }
}

/// The decision on an MX answer, `(preference, exchange)` as received: ordered by
/// preference, equal preferences shuffled, names normalized and duplicates dropped. An
/// empty answer is the implicit MX. Exchanges that are the root (".") are null MX
/// records: when they are all there is, the domain accepts no mail (RFC 7505 says a null
/// MX must be the only MX; if other records are published, those are used).
pub fn order_mail_hosts(
    domain: &str,
    answer: Vec<(u16, String)>,
    shuffler: &mut Shuffler,
) -> Result<Vec<MailHost>, DnsError> {
    let domain = normalize(domain);
    if answer.is_empty() {
        return Ok(vec![MailHost {
            name: domain,
            preference: 0,
        }]);
    }
    let mut hosts: Vec<MailHost> = Vec::with_capacity(answer.len());
    for (preference, exchange) in answer {
        let name = normalize(&exchange);
        if name.is_empty() {
            continue;
        }
        match hosts.iter_mut().find(|h| h.name == name) {
            Some(h) => h.preference = h.preference.min(preference),
            None => hosts.push(MailHost { name, preference }),
        }
    }
    if hosts.is_empty() {
        return Err(DnsError::NullMx { domain });
    }
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].preference;
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == preference)
                .count();
        shuffler.shuffle(&mut hosts[start..end]);
        start = end;
    }
    Ok(hosts)
}

/// A small non-cryptographic random source for shuffling equal MX preferences (load
/// spreading, not security), seeded from std's per-process random hash keys.
pub struct Shuffler {
    state: u64,
}

impl Shuffler {
    pub fn new() -> Shuffler {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        Self::from_seed(hasher.finish())
    }

    /// A fixed sequence, for tests.
    pub fn from_seed(seed: u64) -> Shuffler {
        Shuffler { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

impl Default for Shuffler {
    fn default() -> Self {
        Self::new()
    }
}

/// A DNS name: dot-separated labels of 1..=63 letters, digits and hyphens, not
/// starting or ending with a hyphen, 253 bytes at most (no trailing dot).
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[MailHost]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn null_mx_is_a_permanent_5_1_10() {
        let err = order_mail_hosts(
            "NullMX.Example.",
            vec![(0, ".".into())],
            &mut Shuffler::from_seed(1),
        )
        .unwrap_err();
        assert_eq!(
            err,
            DnsError::NullMx {
                domain: "nullmx.example".into()
            }
        );
        assert!(err.is_permanent());
        assert_eq!(err.enhanced_code(), [5, 1, 10]);
    }

    #[test]
    fn a_null_mx_beside_real_ones_is_ignored() {
        let hosts = order_mail_hosts(
            "d.example",
            vec![(0, ".".into()), (10, "MX.d.example.".into())],
            &mut Shuffler::from_seed(1),
        )
        .unwrap();
        assert_eq!(names(&hosts), ["mx.d.example"]);
    }

    #[test]
    fn no_mx_is_the_implicit_mx() {
        let hosts = order_mail_hosts("D.Example.", vec![], &mut Shuffler::from_seed(1)).unwrap();
        assert_eq!(
            hosts,
            [MailHost {
                name: "d.example".into(),
                preference: 0
            }]
        );
    }

    #[test]
    fn ordered_by_preference_and_deduplicated() {
        let hosts = order_mail_hosts(
            "d.example",
            vec![
                (20, "c.example.".into()),
                (5, "a.example.".into()),
                (10, "b.example".into()),
                (30, "A.example.".into()),
            ],
            &mut Shuffler::from_seed(7),
        )
        .unwrap();
        assert_eq!(names(&hosts), ["a.example", "b.example", "c.example"]);
        assert_eq!(hosts[0].preference, 5);
    }

    #[test]
    fn equal_preferences_take_every_order() {
        let mut shuffler = Shuffler::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let hosts = order_mail_hosts(
                "d.example",
                vec![
                    (10, "x.example".into()),
                    (10, "y.example".into()),
                    (10, "z.example".into()),
                    (0, "first.example".into()),
                ],
                &mut shuffler,
            )
            .unwrap();
            assert_eq!(hosts[0].name, "first.example");
            seen.insert(names(&hosts).join(","));
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn codes_and_permanence() {
        let d = || "d".to_string();
        assert_eq!(
            DnsError::NoSuchDomain { domain: d() }.enhanced_code(),
            [5, 1, 2]
        );
        assert!(DnsError::NoSuchDomain { domain: d() }.is_permanent());
        let temp = DnsError::Temporary {
            domain: d(),
            message: "SERVFAIL".into(),
        };
        assert!(!temp.is_permanent());
        assert_eq!(temp.enhanced_code()[0], 4);
    }

    #[test]
    fn reversed_names() {
        assert_eq!(
            reversed("192.0.2.10".parse().unwrap(), "bl.test"),
            "10.2.0.192.bl.test"
        );
        assert_eq!(
            reversed("2001:db8::1".parse().unwrap(), "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("MX.Example.COM."), "mx.example.com");
        assert!(fqdn("").is_none());
        assert!(fqdn("example.com").unwrap().is_fqdn());
    }
}
