//! Per-client rate limits (`rate-limits`): fixed windows per client address, in memory.
//! The counters are a map bounded by [`MAX_CLIENTS`]. With a `cluster` block the limits
//! are counted in Redis instead (`super::shared`), and these counters are the fallback
//! while Redis does not answer.
//!
//! A client is its IPv4 address, or its IPv6 address cut to `ipv6-prefix` bits (a /64
//! by default: one customer's network, which hands its hosts any address inside it).
//! Failed AUTH attempts are also counted per user name (`auth-failures-per-user`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::lookup::NetworkSet;
use crate::policy::RateKind as Kind;

/// Most client addresses tracked at once; past it, expired windows are dropped, and if
/// all are live the oldest half goes (those clients start a new window).
pub const MAX_CLIENTS: usize = 100_000;

impl crate::policy::RateView for RateLimiter {
    fn count(&self, kind: Kind, ip: IpAddr) -> Option<u32> {
        RateLimiter::count(self, kind, ip)
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rules", &self.rules.load().limits)
            .finish_non_exhaustive()
    }
}

/// The limits of `rate-limits`, replaced whole by a reload; the counters stay.
struct Rules {
    limits: [Option<(u32, Duration)>; 5],
    per_user: Option<(u32, Duration)>,
    ipv6_prefix: u8,
    exempt: Vec<Arc<NetworkSet>>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            limits: [None; 5],
            per_user: None,
            ipv6_prefix: 64,
            exempt: Vec::new(),
        }
    }
}

/// The key a client is counted under: an IPv4 address as it is, an IPv6 address with
/// all but its first `prefix` bits cleared.
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl Rules {
    fn of(config: &Config) -> Self {
        let r = &config.rate_limits;
        Self {
            limits: [
                r.connections,
                r.messages,
                r.recipients,
                r.auth,
                r.auth_failures,
            ],
            per_user: r.auth_failures_per_user,
            ipv6_prefix: r.ipv6_prefix,
            exempt: r
                .exempt
                .iter()
                .filter_map(|name| config.networks.get(name))
                .map(|set| Arc::new(set.clone()))
                .collect(),
        }
    }

    fn exempts(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|set| set.contains(ip))
    }
}

/// Fixed windows: when each key's window started, and its count in it.
struct Windows<K>(Mutex<HashMap<K, (Instant, u32)>>);

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq> Windows<K> {
    fn count(&self, key: &K, per: Duration, now: Instant) -> u32 {
        let windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(key) {
            Some((start, n)) if now.duration_since(*start) < per => *n,
            _ => 0,
        }
    }

    /// Counts one event for `key` unless it is at `limit`. `per_of` tells each key's
    /// window, for dropping expired ones when the map is full.
    fn allow(
        &self,
        key: K,
        (limit, per): (u32, Duration),
        now: Instant,
        per_of: impl Fn(&K) -> Option<Duration>,
    ) -> bool {
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_CLIENTS && !windows.contains_key(&key) {
            windows.retain(|k, (start, _)| {
                per_of(k).is_some_and(|per| now.duration_since(*start) < per)
            });
            if windows.len() >= MAX_CLIENTS {
                let mut starts: Vec<Instant> = windows.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, (s, _)| *s > cut);
            }
        }
        let w = windows.entry(key).or_insert((now, 0));
        if now.duration_since(w.0) >= per {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }
}

#[derive(Default)]
pub struct RateLimiter {
    rules: ArcSwap<Rules>,
    windows: Windows<(Kind, IpAddr)>,
    /// Failed AUTH attempts by user name (lowercased).
    users: Windows<Box<str>>,
}

impl RateLimiter {
    pub fn new(config: &Config) -> Self {
        Self {
            rules: ArcSwap::from_pointee(Rules::of(config)),
            windows: Windows::default(),
            users: Windows::default(),
        }
    }

    /// The key `ip` is counted under, here and by `connections-per-ip`.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        client_key(ip, self.rules.load().ipv6_prefix)
    }

    /// Whether the failed AUTH attempts for `user` have reached
    /// `auth-failures-per-user` in the current window.
    pub fn user_exhausted(&self, user: &str) -> bool {
        let Some((limit, per)) = self.rules.load().per_user else {
            return false;
        };
        self.users.count(&user_key(user), per, Instant::now()) >= limit
    }

    /// Counts a failed AUTH attempt for `user`.
    pub fn user_failed(&self, user: &str) {
        let Some(rule) = self.rules.load().per_user else {
            return;
        };
        let _ = self
            .users
            .allow(user_key(user), rule, Instant::now(), |_| Some(rule.1));
    }

    /// Takes the limits of a reloaded configuration. Counts so far are kept: a client
    /// does not get a fresh window because the policy was reloaded.
    pub fn reconfigure(&self, config: &Config) {
        self.rules.store(Arc::new(Rules::of(config)));
    }

    /// The limit of `kind`, when one is set.
    pub fn rule(&self, kind: Kind) -> Option<(u32, Duration)> {
        self.rules.load().limits[kind as usize]
    }

    /// `auth-failures-per-user`, when set.
    pub fn per_user(&self) -> Option<(u32, Duration)> {
        self.rules.load().per_user
    }

    /// Whether `ip` is in an `exempt` set.
    pub fn exempts(&self, ip: IpAddr) -> bool {
        self.rules.load().exempts(ip)
    }

    /// Counts one `kind` event for `ip`; `false` when it is over the limit (then it is
    /// not counted).
    pub fn allow(&self, kind: Kind, ip: IpAddr) -> bool {
        self.allow_at(kind, ip, Instant::now())
    }

    /// Whether `ip` has used up its `kind` events in the current window, without
    /// counting one (a failed AUTH is counted only once it has failed).
    pub fn exhausted(&self, kind: Kind, ip: IpAddr) -> bool {
        let Some((limit, _)) = self.rule(kind) else {
            return false;
        };
        self.count(kind, ip).is_some_and(|n| n >= limit)
    }

    /// The `kind` events counted for `ip` in its current window: `None` when no limit
    /// is set for `kind` (nothing is counted), `Some(0)` for an exempt client.
    pub fn count(&self, kind: Kind, ip: IpAddr) -> Option<u32> {
        self.count_at(kind, ip, Instant::now())
    }

    fn count_at(&self, kind: Kind, ip: IpAddr, now: Instant) -> Option<u32> {
        let rules = self.rules.load();
        let (_, per) = rules.limits[kind as usize]?;
        if rules.exempts(ip) {
            return Some(0);
        }
        let key = (kind, client_key(ip, rules.ipv6_prefix));
        Some(self.windows.count(&key, per, now))
    }

    fn allow_at(&self, kind: Kind, ip: IpAddr, now: Instant) -> bool {
        let rules = self.rules.load();
        let Some(rule) = rules.limits[kind as usize] else {
            return true;
        };
        if rules.exempts(ip) {
            return true;
        }
        let key = (kind, client_key(ip, rules.ipv6_prefix));
        self.windows.allow(key, rule, now, |(k, _)| {
            rules.limits[*k as usize].map(|(_, per)| per)
        })
    }
}

/// User names are counted as AUTH looks them up: ASCII-lowercased.
pub(crate) fn user_key(user: &str) -> Box<str> {
    user.to_ascii_lowercase().into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, per: u64, exempt: Option<&str>) -> RateLimiter {
        RateLimiter {
            rules: ArcSwap::from_pointee(Rules {
                limits: [
                    Some((limit, Duration::from_secs(per))),
                    None,
                    None,
                    None,
                    None,
                ],
                per_user: Some((2, Duration::from_secs(per))),
                ipv6_prefix: 64,
                exempt: exempt
                    .map(|n| Arc::new(NetworkSet::new(vec![n.parse().unwrap()])))
                    .into_iter()
                    .collect(),
            }),
            ..RateLimiter::default()
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_prefix() {
        let key = |ip: &str, prefix| client_key(ip.parse().unwrap(), prefix).to_string();
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64),
            "2001:db8:1:2::"
        );
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48), "2001:db8:1::");
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128),
            "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
        );
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 1), "::");
        assert_eq!(
            key("192.0.2.77", 64),
            "192.0.2.77",
            "IPv4 is counted per address"
        );
        let r = limiter(2, 60, None);
        let t0 = Instant::now();
        let a = "2001:db8:1:2::1".parse().unwrap();
        let b = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c = "2001:db8:1:3::1".parse().unwrap();
        assert!(r.allow_at(Kind::Connections, a, t0));
        assert!(r.allow_at(Kind::Connections, b, t0));
        assert!(!r.allow_at(Kind::Connections, a, t0), "one /64, one count");
        assert_eq!(r.count_at(Kind::Connections, b, t0), Some(2));
        assert!(r.allow_at(Kind::Connections, c, t0), "another /64");
        assert_eq!(r.key(b), r.key(a));
    }

    #[test]
    fn failures_per_user_name() {
        let r = limiter(2, 60, None);
        assert!(!r.user_exhausted("alice"));
        r.user_failed("alice");
        r.user_failed("ALICE");
        assert!(r.user_exhausted("Alice"), "the name is counted case-blind");
        assert!(!r.user_exhausted("bob"));
        let off = RateLimiter::default();
        off.user_failed("alice");
        off.user_failed("alice");
        off.user_failed("alice");
        assert!(!off.user_exhausted("alice"), "no limit, no lockout");
    }

    #[test]
    fn a_fixed_window_per_client_with_exemptions() {
        let r = limiter(2, 60, Some("10.0.0.0/8"));
        let (a, b, t0) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            Instant::now(),
        );
        assert!(r.allow_at(Kind::Connections, a, t0));
        assert!(r.allow_at(Kind::Connections, a, t0));
        assert!(!r.allow_at(Kind::Connections, a, t0));
        assert!(r.allow_at(Kind::Connections, b, t0), "another client");
        assert!(r.allow_at(Kind::Messages, a, t0), "no rule for messages");
        assert_eq!(r.count_at(Kind::Connections, a, t0), Some(2));
        assert_eq!(r.count_at(Kind::Messages, a, t0), None);
        assert_eq!(
            r.count_at(Kind::Connections, a, t0 + Duration::from_secs(60)),
            Some(0),
            "a new window"
        );
        // the next window
        assert!(r.allow_at(Kind::Connections, a, t0 + Duration::from_secs(60)));
        let inside = "10.1.2.3".parse().unwrap();
        for _ in 0..10 {
            assert!(r.allow_at(Kind::Connections, inside, t0));
        }
    }

    #[test]
    fn the_map_stays_bounded() {
        let r = limiter(5, 3600, None);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            let at = t0 + Duration::from_micros(u64::from(i));
            assert!(r.allow_at(Kind::Connections, ip, at));
        }
        assert!(r.windows.0.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
