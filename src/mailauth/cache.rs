//! The cache of parsed DNS records mail-auth reads before it queries anything.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnssecStatus, MX, RecordSet, ResolverCache, Txt};

/// A cache of parsed DNS records in front of the resolver (mail-auth's
/// `ResolverCache` for TXT, MX, A, AAAA and PTR), bounded; shared across reloads.
/// Closed (a fixture's): a name it does not hold is NXDOMAIN, and nothing is queried.
///
/// Each record type has its own map of at most `entries` records. An entry is used
/// until its `valid_until` (the TTL the resolver gave); an expired entry is a miss.
/// When a map is full, its expired entries are dropped first, then the ones that
/// expire soonest, down to seven eighths of the bound, so an insert into a full map
/// costs one scan now and then rather than every time.
pub struct DnsCache {
    pub(super) txt: Kind<Box<str>, Txt>,
    pub(super) mx: Kind<Box<str>, RecordSet<MX>>,
    pub(super) ipv4: Kind<Box<str>, RecordSet<Ipv4Addr>>,
    pub(super) ipv6: Kind<Box<str>, RecordSet<Ipv6Addr>>,
    pub(super) ptr: Kind<IpAddr, RecordSet<Box<str>>>,
}

impl std::fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsCache")
            .field("txt", &self.txt.len())
            .field("mx", &self.mx.len())
            .field("a", &self.ipv4.len())
            .field("aaaa", &self.ipv6.len())
            .field("ptr", &self.ptr.len())
            .finish()
    }
}

impl DnsCache {
    /// An open cache of at most `entries` records per type.
    pub fn new(entries: usize) -> DnsCache {
        DnsCache {
            txt: Kind::new(entries),
            mx: Kind::new(entries),
            ipv4: Kind::new(entries),
            ipv6: Kind::new(entries),
            ptr: Kind::new(entries),
        }
    }

    /// A closed cache (a fixture's): a miss is NXDOMAIN for TXT (mail-auth's "no
    /// record": SPF `none`, no DKIM key, no DMARC record) and an empty answer for the
    /// other types, except for the names in `failing`, whose misses stay misses so that
    /// mail-auth asks the (unreachable) resolver and gets an error.
    pub(super) fn closed(failing: &HashSet<Box<str>>, failing_ptr: &HashSet<IpAddr>) -> DnsCache {
        // Unbounded: it holds what the fixture gives, and mail-auth adds nothing (it
        // inserts only what a resolver answered, and this one never answers).
        let mut cache = DnsCache::new(usize::MAX);
        let nxdomain = Txt::Error(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(
            ResponseCode::NXDomain,
        )));
        cache.txt.closed = Some(Closed::new(nxdomain, HashSet::new()));
        cache.mx.closed = Some(Closed::new(empty_set(), failing.clone()));
        cache.ipv4.closed = Some(Closed::new(empty_set(), failing.clone()));
        cache.ipv6.closed = Some(Closed::new(empty_set(), failing.clone()));
        cache.ptr.closed = Some(Closed::new(empty_set(), failing_ptr.clone()));
        cache
    }

    /// How many entries the cache holds, of every type (expired ones included).
    pub fn len(&self) -> usize {
        self.txt.len() + self.mx.len() + self.ipv4.len() + self.ipv6.len() + self.ptr.len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(super) fn empty_set<T>() -> RecordSet<T> {
    RecordSet {
        rrset: Arc::from(Vec::new()),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

/// A long time from now, for entries that never expire (a fixture's).
pub(super) fn forever() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(100 * 365 * 86400))
        .or_else(|| now.checked_add(Duration::from_secs(86400)))
        .unwrap_or(now)
}

/// What a closed cache answers for a miss.
pub(super) struct Closed<K, V> {
    answer: V,
    /// Keys that are a miss all the same (`DnsFixture::fail`).
    failing: HashSet<K>,
}

impl<K, V> Closed<K, V> {
    fn new(answer: V, failing: HashSet<K>) -> Self {
        Closed { answer, failing }
    }
}

/// The cache of one record type.
pub(super) struct Kind<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    max: usize,
    closed: Option<Closed<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Kind<K, V> {
    fn new(max: usize) -> Self {
        Kind {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            closed: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Kind<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        if let Some((value, until)) = self.lock().get(name)
            && *until > now
        {
            return Some(value.clone());
        }
        let closed = self.closed.as_ref()?;
        if closed.failing.contains(name) {
            return None;
        }
        Some(closed.answer.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            let keep = self.max - self.max / 8 - 1;
            if map.len() > keep {
                // Evict the entries that expire soonest.
                let mut untils: Vec<Instant> = map.values().map(|(_, u)| *u).collect();
                let cut = map.len() - keep;
                untils.select_nth_unstable(cut - 1);
                let limit = untils[cut - 1];
                let mut left = cut;
                map.retain(|_, (_, until)| {
                    if left > 0 && *until <= limit {
                        left -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        map.insert(key, (value, valid_until));
    }
}
