//! Per-client rate limits (`rate-limits`): fixed windows per client address, in memory.
//! The counters are a map bounded by [`MAX_CLIENTS`]; a store shared by several nodes
//! (Redis) would implement the same [`RateLimiter::allow`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::lookup::NetworkSet;

/// Most client addresses tracked at once; past it, expired windows are dropped, and if
/// all are live the oldest half goes (those clients start a new window).
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Connections,
    Messages,
    Recipients,
    Auth,
    AuthFailures,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Connections,
        Kind::Messages,
        Kind::Recipients,
        Kind::Auth,
        Kind::AuthFailures,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connections => "connections",
            Kind::Messages => "messages",
            Kind::Recipients => "recipients",
            Kind::Auth => "auth",
            Kind::AuthFailures => "auth-failures",
        }
    }
}

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
#[derive(Default)]
struct Rules {
    limits: [Option<(u32, Duration)>; 5],
    exempt: Vec<Arc<NetworkSet>>,
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

#[derive(Default)]
pub struct RateLimiter {
    rules: ArcSwap<Rules>,
    windows: Mutex<HashMap<(Kind, IpAddr), (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(config: &Config) -> Self {
        Self {
            rules: ArcSwap::from_pointee(Rules::of(config)),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the limits of a reloaded configuration. Counts so far are kept: a client
    /// does not get a fresh window because the policy was reloaded.
    pub fn reconfigure(&self, config: &Config) {
        self.rules.store(Arc::new(Rules::of(config)));
    }

    fn rule(&self, kind: Kind) -> Option<(u32, Duration)> {
        self.rules.load().limits[kind as usize]
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
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        Some(match windows.get(&(kind, ip)) {
            Some((start, n)) if now.duration_since(*start) < per => *n,
            _ => 0,
        })
    }

    fn allow_at(&self, kind: Kind, ip: IpAddr, now: Instant) -> bool {
        let rules = self.rules.load();
        let Some((limit, per)) = rules.limits[kind as usize] else {
            return true;
        };
        if rules.exempts(ip) {
            return true;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_CLIENTS && !windows.contains_key(&(kind, ip)) {
            windows.retain(|(k, _), (start, _)| {
                rules.limits[*k as usize].is_some_and(|(_, per)| now.duration_since(*start) < per)
            });
            if windows.len() >= MAX_CLIENTS {
                let mut starts: Vec<Instant> = windows.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, (s, _)| *s > cut);
            }
        }
        let w = windows.entry((kind, ip)).or_insert((now, 0));
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
                exempt: exempt
                    .map(|n| Arc::new(NetworkSet::new(vec![n.parse().unwrap()])))
                    .into_iter()
                    .collect(),
            }),
            windows: Mutex::new(HashMap::new()),
        }
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
        assert!(r.windows.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
