//! Greylisting, built in, with postgrey's semantics (postgrey 1.37's
//! `smtpd_access_policy`): a `greylist` rule (or a hook's `greylist()`) refuses for
//! now the first attempt of a (client network, sender, recipient) triplet, and lets it
//! through when it comes back after `delay` and within `retry-window`.
//!
//! - The triplet is postgrey's key: the client's network (`ipv4-prefix`, 24;
//!   `ipv6-prefix`, 64), the sender with postgrey's substitutions ([`sender_key`]:
//!   BATV tags and `+extensions` taken off, numbers made `#`) and the recipient, the
//!   whole lowercased. It is stored as a digest (postgrey's `--privacy`).
//! - The state of a triplet is (first seen, last seen); of a client address, (passes,
//!   last counted) for the auto-allowlist. [`decide`] is postgrey's decision on them,
//!   the one function every store calls.
//! - Where the state lives is a [`Store`]: [`Local`] (this process, bounded, saved
//!   under the spool so that it survives a restart), the cluster's Redis
//!   ([`Shared`], with `cluster { fallback }`), or a dry run's fixture.
//!
//! A greylisted triplet makes no decision by itself: like postgrey's default action
//! `DEFER_IF_PERMIT`, the stage is deferred (`450 4.7.1`) only if it would otherwise
//! accept, so a later refusal (relay denied) still refuses for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::Digest;

pub use crate::config::greylisting::Greylisting as Settings;

/// A triplet's state: when it was first and last seen, in seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triplet {
    pub first: u64,
    pub last: u64,
}

/// A client address's auto-allowlist state: how many passes counted, the last when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub count: u32,
    pub last: u64,
}

/// What to store after a decision, each record with how long it lives (seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub triplet: Option<(Triplet, u64)>,
    pub client: Option<(Client, u64)>,
}

/// What greylisting says of a triplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused for now: `left` seconds of the delay remain.
    Greylisted { left: u64 },
    /// Let through; `first_pass`: this is the retry that passed (postgrey's
    /// "triplet found" with its delay), not a triplet known to pass already.
    Passed { first_pass: bool },
    /// The client address passed `auto-allowlist` times: not greylisted.
    AutoAllowlisted,
}

/// The store's keys of one triplet and its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// A digest of postgrey's key `net/sender/recipient`, lowercased.
    pub triplet: String,
    /// A digest of the client's address (the auto-allowlist counts addresses).
    pub client: String,
}

/// Seconds of an hour: postgrey counts at most one pass per hour for the
/// auto-allowlist.
const HOUR: u64 = 3600;

/// Postgrey's `do_sender_substitutions`: a BATV `prvs=TAG=local` (or `local=TAG`) is
/// `local`, a `+extension` is taken off, and every number that is a word of its own
/// becomes `#`, so that VERP and BATV senders make one triplet.
pub fn sender_key(sender: &str) -> String {
    let Some((user, domain)) = sender.split_once('@') else {
        return sender.to_owned();
    };
    let mut user = user.to_owned();
    if user.starts_with("prvs=") {
        let parts: Vec<&str> = user.split('=').collect();
        if parts.len() == 3 {
            let tag = |s: &str| {
                s.len() >= 10
                    && s.bytes()
                        .take(10)
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            };
            user = if tag(parts[1]) && !tag(parts[2]) {
                parts[2].to_owned()
            } else if tag(parts[2]) && !tag(parts[1]) {
                parts[1].to_owned()
            } else {
                parts[2].to_owned()
            };
        }
    }
    if let Some(plus) = user.find('+') {
        user.truncate(plus);
    }
    format!("{}@{domain}", numbers_to_hash(&user))
}

/// Perl's `s/\b\d+\b/#/g`: a run of digits with a word boundary on both sides (word
/// characters are letters, digits and `_`).
fn numbers_to_hash(s: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !word(chars[i - 1])) {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j == chars.len() || !word(chars[j]) {
                out.push('#');
                i = j;
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The client's network as postgrey writes it: the address with the bits past the
/// prefix cleared (`192.0.2.0` for `192.0.2.77` and 24).
pub fn client_net(ip: IpAddr, settings: &Settings) -> String {
    let net = match ip {
        IpAddr::V4(v4) => ipnet::Ipv4Net::new(v4, settings.ipv4_prefix.min(32))
            .map(|n| IpAddr::V4(n.network()))
            .unwrap_or(ip),
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, settings.ipv6_prefix.min(128))
            .map(|n| IpAddr::V6(n.network()))
            .unwrap_or(ip),
    };
    net.to_string()
}

/// Postgrey's lookup key, `lc "NET/SENDER/RECIPIENT"`.
pub fn triplet_text(ip: IpAddr, sender: &str, rcpt: &str, settings: &Settings) -> String {
    format!(
        "{}/{}/{}",
        client_net(ip, settings),
        sender_key(sender),
        rcpt
    )
    .to_lowercase()
}

fn digest(text: &str) -> String {
    let d = sha2::Sha256::digest(text.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The store's keys for this triplet.
pub fn keys(ip: IpAddr, sender: &str, rcpt: &str, settings: &Settings) -> Keys {
    Keys {
        triplet: digest(&triplet_text(ip, sender, rcpt, settings)),
        client: digest(&ip.to_string()),
    }
}

/// Postgrey's decision for a triplet seen `now` whose stored state is `triplet`, from
/// a client address whose auto-allowlist state is `client`; and what to store.
///
/// As postgrey: an allowlisted client passes (its last-seen refreshed once an hour);
/// a triplet not yet passed whose first attempt is older than `retry-window` starts
/// again; the triplet is let through once `delay` has passed since it was first seen,
/// and that first pass counts for its client's auto-allowlist (once an hour). A
/// triplet lives `max-age` after it was last seen once it has passed, and until its
/// retry window ends before (postgrey's nightly clean-up, as expiry times).
pub fn decide(
    s: &Settings,
    now: u64,
    triplet: Option<Triplet>,
    client: Option<Client>,
) -> (Outcome, Update) {
    let delay = s.delay.as_secs();
    let max_age = s.max_age.as_secs().max(1);
    let window = s.retry_window.as_secs();
    let mut update = Update::default();
    if s.auto_allowlist > 0
        && let Some(c) = client
        && c.count >= s.auto_allowlist
    {
        if now >= c.last.saturating_add(HOUR) || c.last > now {
            let c = Client {
                count: c.count.saturating_add(1),
                last: now,
            };
            update.client = Some((c, max_age));
        }
        return (Outcome::AutoAllowlisted, update);
    }
    let (mut first, succeeded) = match triplet {
        Some(t) if t.last.saturating_sub(t.first) >= delay => (t.first, true),
        Some(t) if now.saturating_sub(t.first) > window => (now, false),
        Some(t) => (t.first, false),
        None => (now, false),
    };
    if first > now {
        first = now;
    }
    let waited = now - first;
    let passed = waited >= delay;
    let ttl = if passed {
        max_age
    } else {
        // the rest of its retry window (at least a second)
        (first + window).saturating_sub(now).max(1)
    };
    update.triplet = Some((Triplet { first, last: now }, ttl));
    if s.auto_allowlist > 0 && passed && !succeeded {
        let count_it = client.is_none_or(|c| now >= c.last.saturating_add(HOUR));
        if count_it {
            let c = Client {
                count: client.map_or(0, |c| c.count).saturating_add(1),
                last: now,
            };
            update.client = Some((c, max_age));
        }
    }
    let outcome = if passed {
        Outcome::Passed {
            first_pass: !succeeded,
        }
    } else {
        Outcome::Greylisted {
            left: delay - waited,
        }
    };
    (outcome, update)
}

/// The greylisting state cannot be read or written (Redis does not answer and the
/// fallback is `tempfail`; no store in this process).
#[derive(Debug, thiserror::Error)]
#[error("greylisting state unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where the state of triplets lives.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Reads the state of `keys`, decides ([`decide`]) and stores the new state.
    fn check(&self, keys: &Keys, settings: &Settings) -> Result<Outcome, Unavailable>;

    /// The Redis keys [`Store::check`] of `keys` will read, for a caller that can read
    /// them ahead with a call it makes anyway (MAIL's limits, when the RCPT is
    /// pipelined behind it; RCPT's), in its own task rather than waiting for them in
    /// the policy's evaluation; `None` (the default): nothing to read ahead, or they
    /// were read already.
    fn read_ahead(&self, _keys: &Keys) -> Option<Vec<String>> {
        None
    }

    /// What was read at [`Store::read_ahead`]'s keys, for the next `check` of `keys`.
    fn read_ahead_done(&self, _keys: Keys, _reads: &crate::cluster::limits::Reads) {}
}

/// Seconds since the epoch, by this machine's clock.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A record with the time it expires.
#[derive(Clone, Copy, Debug)]
struct Kept<T> {
    value: T,
    expires: u64,
}

#[derive(Debug, Default)]
struct Tables {
    triplets: HashMap<String, Kept<Triplet>>,
    clients: HashMap<String, Kept<Client>>,
    /// Changed since the last save.
    dirty: bool,
}

/// The state in this process: bounded (`max-entries` triplets and as many clients;
/// past it, the expired then the least recently seen go), and saved to a file under
/// the spool ([`Local::save`]) that [`Local::open`] reads back at start.
#[derive(Debug, Default)]
pub struct Local {
    tables: Mutex<Tables>,
    path: Option<PathBuf>,
}

/// The file's first line.
const MAGIC: &str = "mtad-greylist 1";
/// Longest line read back from the file (a digest, two numbers, a tag).
const MAX_LINE: usize = 128;

impl Local {
    /// A state kept in memory only (tests, and what a dry run builds from a fixture).
    pub fn in_memory() -> Local {
        Local::default()
    }

    /// The state saved at `path` (none when there is no file yet; lines that do not
    /// read as records are skipped, and records already expired are dropped).
    pub fn open(path: &Path) -> Local {
        let local = Local {
            tables: Mutex::default(),
            path: Some(path.to_owned()),
        };
        if let Ok(text) = std::fs::read_to_string(path) {
            let now = now();
            let mut t = local.lock();
            let mut lines = text.lines();
            if lines.next() == Some(MAGIC) {
                for line in lines.filter(|l| l.len() <= MAX_LINE) {
                    let f: Vec<&str> = line.split(' ').collect();
                    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
                    let (Some(kind), Some(key), Some(a), Some(b), Some(expires)) =
                        (f.first(), f.get(1), num(2), num(3), num(4))
                    else {
                        continue;
                    };
                    if expires <= now || key.len() != 32 || f.len() != 5 {
                        continue;
                    }
                    match *kind {
                        "t" => {
                            t.triplets.insert(
                                (*key).to_owned(),
                                Kept {
                                    value: Triplet { first: a, last: b },
                                    expires,
                                },
                            );
                        }
                        "c" => {
                            t.clients.insert(
                                (*key).to_owned(),
                                Kept {
                                    value: Client {
                                        count: u32::try_from(a).unwrap_or(u32::MAX),
                                        last: b,
                                    },
                                    expires,
                                },
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        local
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a triplet's state in (a dry run's fixture).
    pub fn put(&self, keys: &Keys, triplet: Option<Triplet>, client: Option<Client>) {
        let mut t = self.lock();
        let far = u64::MAX;
        if let Some(value) = triplet {
            t.triplets.insert(
                keys.triplet.clone(),
                Kept {
                    value,
                    expires: far,
                },
            );
        }
        if let Some(value) = client {
            t.clients.insert(
                keys.client.clone(),
                Kept {
                    value,
                    expires: far,
                },
            );
        }
    }

    /// [`Store::check`] at `now` (seconds since the epoch).
    pub fn check_at(&self, keys: &Keys, settings: &Settings, now: u64) -> Outcome {
        let mut t = self.lock();
        let live = |k: Option<&Kept<Triplet>>| k.filter(|k| k.expires > now).map(|k| k.value);
        let triplet = live(t.triplets.get(&keys.triplet));
        let client = t
            .clients
            .get(&keys.client)
            .filter(|k| k.expires > now)
            .map(|k| k.value);
        let (outcome, update) = decide(settings, now, triplet, client);
        if let Some((value, ttl)) = update.triplet {
            t.triplets.insert(
                keys.triplet.clone(),
                Kept {
                    value,
                    expires: now.saturating_add(ttl),
                },
            );
        }
        if let Some((value, ttl)) = update.client {
            t.clients.insert(
                keys.client.clone(),
                Kept {
                    value,
                    expires: now.saturating_add(ttl),
                },
            );
        }
        t.dirty = true;
        let bound = settings.max_entries.max(1);
        if t.triplets.len() > bound {
            evict(&mut t.triplets, bound, now, |v| v.last);
        }
        if t.clients.len() > bound {
            evict(&mut t.clients, bound, now, |v| v.last);
        }
        outcome
    }

    /// How many triplets are kept.
    pub fn len(&self) -> usize {
        self.lock().triplets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the state to its file when it changed since the last save: a new file
    /// beside it, synced, then renamed over it (a crash leaves the old or the new).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = {
            let mut t = self.lock();
            if !t.dirty {
                return Ok(());
            }
            t.dirty = false;
            let now = now();
            let mut text = format!("{MAGIC}\n");
            for (k, v) in t.triplets.iter().filter(|(_, v)| v.expires > now) {
                text.push_str(&format!(
                    "t {k} {} {} {}\n",
                    v.value.first, v.value.last, v.expires
                ));
            }
            for (k, v) in t.clients.iter().filter(|(_, v)| v.expires > now) {
                text.push_str(&format!(
                    "c {k} {} {} {}\n",
                    v.value.count, v.value.last, v.expires
                ));
            }
            text
        };
        let tmp = path.with_extension("tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            self.lock().dirty = true;
        }
        written
    }

    /// Saves every `every` until `shutdown`, and once more then. Run by the daemon.
    pub async fn keep_saved(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                _ = tokio::time::sleep(every) => false,
            };
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(path = ?self.path, %err, "greylisting: cannot save the state")
                }
                Err(err) => tracing::warn!(%err, "greylisting: the save task failed"),
            }
            if stop {
                return;
            }
        }
    }
}

/// Keeps `bound` entries: the expired go, then the least recently seen (a tenth more
/// than needed, so that a full table is not scanned at every new triplet).
fn evict<T>(map: &mut HashMap<String, Kept<T>>, bound: usize, now: u64, last: fn(&T) -> u64) {
    map.retain(|_, k| k.expires > now);
    if map.len() <= bound {
        return;
    }
    let excess = map.len() - bound + bound / 10;
    let mut ages: Vec<(u64, String)> = map
        .iter()
        .map(|(k, v)| (last(&v.value), k.clone()))
        .collect();
    ages.sort_unstable();
    for (_, k) in ages.into_iter().take(excess) {
        map.remove(&k);
    }
}

impl Store for Local {
    fn check(&self, keys: &Keys, settings: &Settings) -> Result<Outcome, Unavailable> {
        Ok(self.check_at(keys, settings, now()))
    }
}

/// The state in the cluster's Redis: one round trip reads the triplet, its client and
/// the server's clock (one clock for every node), unless MAIL's call read them ahead;
/// what [`decide`] made is written with the node's next call. While Redis does not
/// answer, `cluster { fallback }`: the node's own [`Local`] state, or [`Unavailable`]
/// (a 451, never a 5xx).
#[derive(Debug)]
pub struct Shared {
    pub cluster: Arc<crate::cluster::Cluster>,
    pub local: Arc<Local>,
    /// Records read ahead, waiting for their RCPT ([`Store::read_ahead`]).
    pub ahead: Ahead,
    /// Triplets and clients this node saw pass lately ([`Passed`]).
    pub passed: Passed,
}

/// Triplets this node saw pass, and clients it saw auto-allowlisted, in the last
/// [`PASSED_FRESH`], with the records as written then: their next RCPTs decide on
/// these, with no read. A triplet that passed stays passed until `max-age` after it
/// was last seen, an allowlisted client stays so as long, and no command deletes a
/// record: what is remembered decides as a read would (at most the last-seen time
/// written lags by [`PASSED_FRESH`], and a client counted to the allowlist by another
/// node meanwhile is reported as `passed` rather than `auto-allowlisted`). A triplet
/// still greylisted is never remembered: its retry reads its record.
#[derive(Debug, Default)]
pub struct Passed(Mutex<PassedMaps>);

#[derive(Debug, Default)]
struct PassedMaps {
    /// By triplet digest: the records after the pass, and when.
    triplets: HashMap<String, (crate::cluster::greylist::Read, Instant)>,
    /// By client digest: the client's record after it passed as allowlisted, and when.
    clients: HashMap<String, (crate::cluster::greylist::Read, Instant)>,
}

/// How long a pass is remembered ([`Passed`]).
const PASSED_FRESH: Duration = Duration::from_secs(60);

/// Most passes remembered, of each kind; past it, the stale go, then all of them.
const PASSED_MAX: usize = 16_384;

impl Passed {
    /// Remembers the pass of `keys` decided on `read` at the server's clock `now`.
    fn put(&self, keys: &Keys, read: crate::cluster::greylist::Read, allowlisted: bool) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (map, key) = if allowlisted {
            (&mut m.clients, &keys.client)
        } else {
            (&mut m.triplets, &keys.triplet)
        };
        if map.len() >= PASSED_MAX && !map.contains_key(key) {
            map.retain(|_, (_, at)| at.elapsed() <= PASSED_FRESH);
            if map.len() >= PASSED_MAX {
                map.clear();
            }
        }
        map.insert(key.clone(), (read, Instant::now()));
    }

    /// What was remembered of `keys` (its client's allowlisting first), the server's
    /// clock moved on by the time since.
    fn get(&self, keys: &Keys) -> Option<crate::cluster::greylist::Read> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ((time, t, c), at) = m
            .clients
            .get(&keys.client)
            .or_else(|| m.triplets.get(&keys.triplet))
            .filter(|(_, at)| at.elapsed() <= PASSED_FRESH)?;
        Some((time + at.elapsed().as_secs(), *t, *c))
    }
}

/// Records read ahead: (keys, what was read, when), newest last.
#[derive(Debug, Default)]
pub struct Ahead(
    Mutex<std::collections::VecDeque<(Keys, crate::cluster::greylist::Read, Instant)>>,
);

/// How long records read ahead may be used: a pipelined RCPT follows its MAIL within
/// milliseconds (MAIL's SPF check can take a few seconds); older ones are read again.
const AHEAD_FRESH: Duration = Duration::from_secs(5);

/// Most records read ahead kept (one per session waiting for its RCPT).
const AHEAD_MAX: usize = 4096;

impl Ahead {
    fn put(&self, keys: Keys, read: crate::cluster::greylist::Read) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() >= AHEAD_MAX
            || q.front()
                .is_some_and(|(_, _, at)| at.elapsed() > AHEAD_FRESH)
        {
            q.pop_front();
        }
        q.push_back((keys, read, Instant::now()));
    }

    /// Whether records of `keys` read ahead wait, fresh.
    fn holds(&self, keys: &Keys) -> bool {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .any(|(k, _, at)| k == keys && at.elapsed() <= AHEAD_FRESH)
    }

    /// The records read ahead for `keys`, the server's clock moved on by the time
    /// since; taken (they serve one check).
    fn take(&self, keys: &Keys) -> Option<crate::cluster::greylist::Read> {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = q.iter().rposition(|(k, _, _)| k == keys)?;
        let ((time, t, c), at) = q.remove(i).map(|(_, read, at)| (read, at))?;
        let age = at.elapsed();
        (age <= AHEAD_FRESH).then(|| (time + age.as_secs(), t, c))
    }
}

impl Shared {
    /// [`decide`] on what was read; the new records go with the node's next call, and
    /// a pass is remembered ([`Passed`]).
    fn settle(
        &self,
        keys: &Keys,
        settings: &Settings,
        read: crate::cluster::greylist::Read,
    ) -> Outcome {
        let (outcome, (t, c)) = settled(settings, read);
        self.cluster
            .greylist_write(&keys.triplet, &keys.client, (t, c));
        if !matches!(outcome, Outcome::Greylisted { .. }) {
            let record = |r: Option<((u64, u64), u64)>| r.map(|(r, _)| r);
            // the records as they are now (those not written, as they were read)
            let now = (read.0, record(t).or(read.1), record(c).or(read.2));
            self.passed
                .put(keys, now, outcome == Outcome::AutoAllowlisted);
        }
        outcome
    }
}

/// [`decide`] on records read: the outcome, and the records to write.
fn settled(
    settings: &Settings,
    (now, t, c): crate::cluster::greylist::Read,
) -> (Outcome, crate::cluster::greylist::Write) {
    let triplet = t.map(|(first, last)| Triplet { first, last });
    let client = c.map(|(n, last)| Client {
        count: u32::try_from(n).unwrap_or(u32::MAX),
        last,
    });
    let (outcome, update) = decide(settings, now, triplet, client);
    let write = (
        update.triplet.map(|(t, ttl)| ((t.first, t.last), ttl)),
        update
            .client
            .map(|(c, ttl)| ((u64::from(c.count), c.last), ttl)),
    );
    (outcome, write)
}

impl Store for Shared {
    fn read_ahead(&self, keys: &Keys) -> Option<Vec<String>> {
        (!self.ahead.holds(keys) && self.passed.get(keys).is_none())
            .then(|| self.cluster.greylist_keys(&keys.triplet, &keys.client))
    }

    fn read_ahead_done(&self, keys: Keys, reads: &crate::cluster::limits::Reads) {
        if let Some(read) = crate::cluster::greylist::read_of(reads) {
            self.ahead.put(keys, read);
        }
    }

    fn check(&self, keys: &Keys, settings: &Settings) -> Result<Outcome, Unavailable> {
        if let Some(read) = self.ahead.take(keys) {
            return Ok(self.settle(keys, settings, read));
        }
        if let Some(read) = self.passed.get(keys) {
            // decided as a read would; the last-seen time is written again when the
            // pass is no longer remembered and the records are read
            let (outcome, _) = settled(settings, read);
            if !matches!(outcome, Outcome::Greylisted { .. }) {
                return Ok(outcome);
            }
        }
        let limit = self.cluster.settings().timeout * 2 + Duration::from_millis(100);
        let cluster = self.cluster.clone();
        let k = keys.clone();
        let asked = crate::lookup::sql_table::block_on(
            async move { cluster.greylist_read(&k.triplet, &k.client).await },
            limit,
        );
        let asked = asked.map(|read| read.map(|read| self.settle(keys, settings, read)));
        match asked {
            Some(Ok(outcome)) => Ok(outcome),
            failed => {
                let why = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => format!("no answer from Redis within {limit:?}"),
                };
                match self.cluster.settings().fallback {
                    crate::cluster::Fallback::Local => self.local.check(keys, settings),
                    crate::cluster::Fallback::Tempfail => Err(Unavailable(why)),
                }
            }
        }
    }
}

/// The reply's text: postgrey's `%s` (seconds left) and `%r` (the recipient's domain).
pub fn reply_text(settings: &Settings, left: u64, rcpt: &str) -> String {
    let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
    settings
        .text
        .replacen("%s", &left.to_string(), 1)
        .replacen("%r", domain, 1)
}

#[cfg(test)]
mod tests;

/// The state a dry run's fixture gives, at `now`, for a triplet and its client.
fn from_fixture(
    f: crate::mailauth::GreylistFixture,
    settings: &Settings,
    now: u64,
) -> (Option<Triplet>, Option<Client>) {
    let delay = settings.delay.as_secs();
    let triplet = f.seen.map(|ago| {
        let ago = ago.as_secs();
        if f.passed {
            let first = now.saturating_sub(ago.max(delay));
            Triplet {
                first,
                last: first + delay,
            }
        } else {
            let first = now.saturating_sub(ago);
            Triplet { first, last: first }
        }
    });
    let client = (f.client_passes > 0).then(|| Client {
        count: f.client_passes,
        last: now.saturating_sub(HOUR),
    });
    (triplet, client)
}

impl super::Pipeline {
    /// The keys a `greylist` rule (or a rcpt hook's `greylist()`) would check for
    /// recipient `rcpt` (canonical), so that its records can be read with a call the
    /// session makes anyway ([`Store::read_ahead`]); `None` when no rule or hook at rcpt
    /// can greylist, or the client is allowlisted.
    pub fn greylist_ahead(&self, client: IpAddr, sender: &str, rcpt: &str) -> Option<Keys> {
        let may_greylist = self.stages[super::Stage::Rcpt.index()]
            .iter()
            .any(|r| matches!(r.action, super::Action::Greylist | super::Action::Hook(_)));
        let g = &self.greylisting;
        if !may_greylist || g.allow_clients.iter().any(|s| s.contains(client)) {
            return None;
        }
        Some(keys(client, sender, rcpt, &g.settings))
    }

    /// A `greylist` rule (or a hook's `greylist()`) for this recipient: no decision
    /// when the triplet passes (or is allowlisted), postgrey's `DEFER_IF_PERMIT` with
    /// the `text` while it is greylisted, `451 4.3.0` when its state cannot be had.
    /// Counted in `mtad_greylist_total{result}`.
    pub(super) fn greylist(
        &self,
        ctx: &super::Context<'_>,
        origin: &super::Origin,
    ) -> super::services::PolicyAnswer {
        use super::services::{Effect, PolicyAnswer};
        let g = &self.greylisting;
        let pass = |result: &'static str, action: &str| {
            crate::metrics::get().greylist(result);
            PolicyAnswer {
                effect: Effect::Next,
                action: action.to_owned(),
                error: None,
            }
        };
        let unavailable = |why: String| {
            tracing::error!(rule = %origin, error = %crate::logsafe::esc(&why), "greylisting: no state; deferring");
            crate::metrics::get().greylist("unavailable");
            PolicyAnswer {
                effect: Effect::Decide(super::Verdict::Defer(super::Reply::new(
                    451,
                    [4, 3, 0],
                    "Greylisting unavailable, try again later",
                ))),
                action: String::new(),
                error: Some(why),
            }
        };
        let (Some(sender), Some(rcpt)) = (ctx.sender, ctx.rcpt) else {
            return pass("allowlisted", "DUNNO (no triplet)");
        };
        if g.allow_clients.iter().any(|s| s.contains(ctx.client_ip)) {
            return pass("allowlisted", "DUNNO (client allowlist)");
        }
        if let Some(domain) = super::routing_domain(rcpt) {
            for set in &g.allow_recipients {
                match set.contains(&domain) {
                    Ok(true) => return pass("allowlisted", "DUNNO (recipient allowlist)"),
                    Ok(false) => {}
                    Err(e) => return unavailable(format!("allow-recipients: {e}")),
                }
            }
        }
        let keys = keys(ctx.client_ip, sender, rcpt, &g.settings);
        let outcome = match super::services::greylist_fixture() {
            Some(fixture) => {
                let local = Local::in_memory();
                let now = now();
                if let Some(f) = fixture {
                    let (t, c) = from_fixture(f, &g.settings, now);
                    local.put(&keys, t, c);
                }
                Ok(local.check_at(&keys, &g.settings, now))
            }
            None => match ctx.greylist {
                Some(store) => store.check(&keys, &g.settings),
                None => Err(Unavailable("no greylisting state in this process".into())),
            },
        };
        match outcome {
            Ok(Outcome::Greylisted { left }) => {
                crate::metrics::get().greylist("greylisted");
                let action = format!("DEFER_IF_PERMIT {}", reply_text(&g.settings, left, rcpt));
                let (effect, error) = super::services::effect_of(&action, super::Stage::Rcpt, ctx);
                PolicyAnswer {
                    effect,
                    action,
                    error,
                }
            }
            Ok(Outcome::Passed { first_pass: true }) => pass(
                "passed",
                "DUNNO (greylisting passed: retried after the delay)",
            ),
            Ok(Outcome::Passed { first_pass: false }) => pass("passed", "DUNNO (triplet known)"),
            Ok(Outcome::AutoAllowlisted) => {
                pass("auto-allowlisted", "DUNNO (client auto-allowlisted)")
            }
            Err(e) => unavailable(e.to_string()),
        }
    }
}
