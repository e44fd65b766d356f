//! Given DNS answers for `mtactl test-policy` and tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::Spf;
use mail_auth::{DnssecStatus, MX, RecordSet, ResolverCache, Txt};

use super::cache::{DnsCache, forever};

/// Given DNS answers, for test-policy and tests.
///
/// Names are case-insensitive and may be given with or without the trailing dot. A
/// TXT value is parsed the way mail-auth parses what it finds at that name: a DMARC
/// record at `_dmarc.DOMAIN`, a DKIM key at `SELECTOR._domainkey.DOMAIN`, an SPF record
/// anywhere else;
/// of several values at one name the first that parses is used (as mail-auth does).
/// Every name not given is NXDOMAIN (for A, AAAA, MX and PTR: no records).
///
/// [`DnsFixture::fail`] makes a name fail temporarily. For TXT the cache carries the
/// error itself (SPF, DKIM and DMARC see a resolver error: `temperror`). mail-auth's
/// cache cannot carry an error for A, AAAA, MX or PTR: those names stay a cache miss,
/// so mail-auth asks the fixture checker's resolver, which has no nameserver and
/// fails at once (no query is sent, no runtime is needed): `temperror` again. Should
/// a hickory release ever make that lookup wait instead, [`super::Checker::now`]
/// gives `None`, which the caller reports as temperror.
///
/// A known difference from real DNS: SPF's `exists:` mechanism takes a name the
/// fixture does not hold for an existing one (mail-auth treats any cached A or AAAA
/// answer, even an empty one, as "exists"); give `exists:` targets with
/// [`DnsFixture::a`] only when they should match, and avoid `exists:` otherwise.
#[derive(Clone, Debug, Default)]
pub struct DnsFixture {
    txt: BTreeMap<Box<str>, Vec<String>>,
    a: BTreeMap<Box<str>, Vec<Ipv4Addr>>,
    aaaa: BTreeMap<Box<str>, Vec<Ipv6Addr>>,
    mx: BTreeMap<Box<str>, Vec<(u16, Box<str>)>>,
    ptr: BTreeMap<IpAddr, Vec<Box<str>>>,
    fail: HashSet<Box<str>>,
    /// Not DNS, but the other answer a dry run is given from outside: what a policy
    /// service (by its configured name) answers (`policy-service "NAME" "ACTION"` in a
    /// suite). Carried here so that it reaches every stage the way the DNS answers do.
    policy: BTreeMap<String, String>,
    /// Not DNS either: the greylisting state of the case's triplets (`greylist
    /// seen="6m"` in a suite); `None`: never seen.
    greylist: Option<GreylistFixture>,
    /// Nor these: what SQL tables answer (`table "NAME" "KEY" "VALUE"` in a suite) and
    /// rate counters read (`rate "KIND" N`), as the decision log's answers, given to
    /// the evaluation through the tape ([`crate::lookup::tape::fixture`]).
    answers: Vec<crate::lookup::tape::Answer>,
}

/// A dry run's greylisting state, for every triplet of the case (`greylist` in a suite).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GreylistFixture {
    /// The triplet was first seen this long ago (`None`: never).
    pub seen: Option<std::time::Duration>,
    /// It has passed greylisting already (a retry came after the delay).
    pub passed: bool,
    /// How many times the client address passed (the auto-allowlist's count).
    pub client_passes: u32,
}

fn fqdn(name: &str) -> Box<str> {
    name.to_fqdn().into_owned().into_boxed_str()
}

impl DnsFixture {
    /// A TXT record (SPF, DKIM key or DMARC record, by its name) at `name`.
    pub fn txt(&mut self, name: &str, value: &str) -> &mut Self {
        self.txt
            .entry(fqdn(name))
            .or_default()
            .push(value.to_owned());
        self
    }

    /// An A record.
    pub fn a(&mut self, name: &str, addr: Ipv4Addr) -> &mut Self {
        self.a.entry(fqdn(name)).or_default().push(addr);
        self
    }

    /// An AAAA record.
    pub fn aaaa(&mut self, name: &str, addr: Ipv6Addr) -> &mut Self {
        self.aaaa.entry(fqdn(name)).or_default().push(addr);
        self
    }

    /// An MX record.
    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        self.mx
            .entry(fqdn(name))
            .or_default()
            .push((preference, fqdn(exchange)));
        self
    }

    /// A PTR record for `addr`.
    pub fn ptr(&mut self, addr: IpAddr, name: &str) -> &mut Self {
        self.ptr.entry(addr).or_default().push(fqdn(name));
        self
    }

    /// Every query for `name` fails temporarily (SERVFAIL): temperror results. An IP
    /// address as `name` makes its PTR query fail. See the type's doc for A, AAAA, MX
    /// and PTR.
    pub fn fail(&mut self, name: &str) -> &mut Self {
        self.fail.insert(fqdn(name));
        self
    }

    /// What the policy service `service` answers in this dry run (an access(5)
    /// action: `DUNNO`, `DEFER_IF_PERMIT Greylisted`, `550 5.7.1 No`...).
    pub fn policy_answer(&mut self, service: &str, action: &str) -> &mut Self {
        self.policy.insert(service.to_owned(), action.to_owned());
        self
    }

    /// The greylisting state of this dry run's triplets.
    pub fn greylist(&mut self, state: GreylistFixture) -> &mut Self {
        self.greylist = Some(state);
        self
    }

    /// What the SQL table `table` answers for `key` in this dry run: `Ok(None)`
    /// nothing, `Err` a failure (the decision defers). A key given again replaces it.
    pub fn table_answer(
        &mut self,
        table: &str,
        key: &str,
        answer: Result<Option<String>, String>,
    ) -> &mut Self {
        use crate::lookup::tape::Answer;
        self.answers.retain(|a| {
            !matches!(a, Answer::Table { table: t, key: k, .. } if t == table && k.eq_ignore_ascii_case(key))
        });
        let (value, error) = match answer {
            Ok(v) => (v, None),
            Err(e) => (None, Some(e)),
        };
        self.answers.push(Answer::Table {
            table: table.to_owned(),
            key: key.to_owned(),
            value,
            error,
        });
        self
    }

    /// What the rate counter `rate` (`messages`, `recipients`...) reads in this dry
    /// run (`None`: no limit of that kind).
    pub fn rate(&mut self, rate: &str, count: Option<u32>) -> &mut Self {
        use crate::lookup::tape::Answer;
        self.answers
            .retain(|a| !matches!(a, Answer::Rate { rate: r, .. } if r == rate));
        self.answers.push(Answer::Rate {
            rate: rate.to_owned(),
            count,
        });
        self
    }

    /// The SQL tables' answers and rate counters given (the tape's fixtures).
    pub fn answers(&self) -> &[crate::lookup::tape::Answer] {
        &self.answers
    }

    /// The greylisting state given, if any.
    pub fn greylist_state(&self) -> Option<GreylistFixture> {
        self.greylist
    }

    /// The answer given for `service`, if any.
    pub fn policy_answer_of(&self, service: &str) -> Option<&str> {
        self.policy.get(service).map(String::as_str)
    }

    /// What a query for `kind` at `name` gets from these answers (DNS lists and
    /// hooks' lookups in a dry run): the records as text, empty when none are given,
    /// `Err` for a [`DnsFixture::fail`]ed name.
    pub fn records(
        &self,
        name: &str,
        kind: crate::net::dns::Query,
    ) -> Result<Vec<String>, FixtureFailure> {
        use crate::net::dns::Query;
        let key = fqdn(&name.to_ascii_lowercase());
        if self.fail.contains(&key) {
            return Err(FixtureFailure(name.to_owned()));
        }
        Ok(match kind {
            Query::A => self
                .a
                .get(&key)
                .map_or(Vec::new(), |v| v.iter().map(|a| a.to_string()).collect()),
            Query::Aaaa => self
                .aaaa
                .get(&key)
                .map_or(Vec::new(), |v| v.iter().map(|a| a.to_string()).collect()),
            Query::Txt => self.txt.get(&key).cloned().unwrap_or_default(),
            Query::Ptr => {
                let ip = ptr_address(key.trim_end_matches('.'));
                ip.and_then(|ip| self.ptr.get(&ip)).map_or(Vec::new(), |v| {
                    v.iter()
                        .map(|n| n.trim_end_matches('.').to_owned())
                        .collect()
                })
            }
        })
    }

    /// The closed cache holding these answers.
    pub(super) fn cache(&self) -> DnsCache {
        let failing_ptr: HashSet<IpAddr> = self
            .fail
            .iter()
            .filter_map(|n| n.trim_end_matches('.').parse().ok())
            .collect();
        let cache = DnsCache::closed(&self.fail, &failing_ptr);
        let until = forever();
        for (name, values) in &self.txt {
            cache
                .txt
                .insert(name.clone(), parse_txt(name, values), until);
        }
        for name in &self.fail {
            cache.txt.insert(
                name.clone(),
                Txt::Error(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
                    "SERVFAIL (fixture)".to_owned(),
                ))),
                until,
            );
        }
        for (name, addrs) in &self.a {
            cache.ipv4.insert(name.clone(), set(addrs.clone()), until);
        }
        for (name, addrs) in &self.aaaa {
            cache.ipv6.insert(name.clone(), set(addrs.clone()), until);
        }
        for (name, hosts) in &self.mx {
            let mut by_preference: BTreeMap<u16, Vec<Box<str>>> = BTreeMap::new();
            for (preference, exchange) in hosts {
                by_preference
                    .entry(*preference)
                    .or_default()
                    .push(exchange.clone());
            }
            let mx = by_preference
                .into_iter()
                .map(|(preference, exchanges)| MX {
                    exchanges: exchanges.into_boxed_slice(),
                    preference,
                })
                .collect();
            cache.mx.insert(name.clone(), set(mx), until);
        }
        for (addr, names) in &self.ptr {
            cache.ptr.insert(*addr, set(names.clone()), until);
        }
        // A failing name is a miss in the maps too, whatever else was given for it.
        for name in &self.fail {
            cache.mx.remove::<str>(name);
            cache.ipv4.remove::<str>(name);
            cache.ipv6.remove::<str>(name);
        }
        for addr in &failing_ptr {
            cache.ptr.remove(addr);
        }
        cache
    }
}

/// A name the fixture makes fail ([`DnsFixture::fail`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}: temporary DNS failure (fixture)")]
pub struct FixtureFailure(pub String);

/// The address an `in-addr.arpa` / `ip6.arpa` name stands for.
fn ptr_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| {
            u8::from_str_radix(n, 16)
                .ok()
                .filter(|v| *v < 16 && n.len() == 1)
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(bytes))
}

fn set<T>(items: Vec<T>) -> RecordSet<T> {
    RecordSet {
        rrset: Arc::from(items),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

/// What mail-auth would cache for these values at `name`: the first that parses as
/// the kind of record looked up there, else the last one's error.
fn parse_txt(name: &str, values: &[String]) -> Txt {
    fn first<T: TxtRecordParser + Into<Txt>>(values: &[String]) -> Txt {
        let mut result = Err(mail_auth::Error::Dns(
            mail_auth::DnsError::InvalidRecordType,
        ));
        for value in values {
            result = T::parse(value.as_bytes());
            if result.is_ok() {
                break;
            }
        }
        result.into()
    }
    if name.starts_with("_dmarc.") {
        first::<Dmarc>(values)
    } else if name.contains("._domainkey.") {
        first::<DomainKey>(values)
    } else {
        first::<Spf>(values)
    }
}

/// The fixture's raw TXT values, by FQDN, for what mail-auth does not keep parsed
/// (DMARC's `pct=`).
pub(super) type RawTxt = HashMap<Box<str>, Vec<String>>;

impl DnsFixture {
    pub(super) fn raw(&self) -> RawTxt {
        self.txt
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
