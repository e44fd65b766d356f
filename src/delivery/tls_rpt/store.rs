//! TLS-RPT's counts under the spool (`SPOOL/tls-rpt/`), kept across restarts and
//! `kill -9` without counting anything twice, and bounded.
//!
//! - `current/` is the open period: `start` (Unix seconds), `snapshot.json` (the counts
//!   up to journal generation G: `{"generation":G,"rows":[...]}`) and `journal.N` files, one
//!   JSON line per recorded event, appended with one `write(2)` each. A process that
//!   dies keeps what it wrote (the kernel has it); a machine that loses power may lose
//!   the last events, never count one twice. A torn last line is skipped.
//! - Opening replays the snapshot and the journals above its generation, then appends
//!   to a new generation (never after a possibly torn line). Every
//!   [`COMPACT_LINES`] lines the counts are written as a new snapshot (fsync'd, renamed
//!   into place) and the journals it covers are removed: a crash between the two
//!   replays nothing twice, since the snapshot names the generations it holds.
//! - [`Store::rotate`] closes the period: `current/` is renamed `closed/START-END/`
//!   (atomic), and a new `current/` starts. A closed period is read back whole for its
//!   reports; `closed/START-END/sent` lists the domains whose report is queued, so a
//!   restart half-way through sends the others only.
//! - Bounds ([`Limits`]): policy domains per period, policies per domain, and
//!   `failure-details` rows per policy; past them an event is dropped (a new domain or
//!   policy) or counted without its details row (a failure of a full policy).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Event, Failure, ReportPolicy};

/// Journal lines before the counts are compacted into a snapshot.
pub const COMPACT_LINES: u64 = 10_000;
/// Policies counted per domain and period (one per MX host with its own TLSA records,
/// one MTA-STS policy, no-policy-found...).
pub const MAX_POLICIES: usize = 32;
/// The longest journal or snapshot line read back.
const MAX_LINE: usize = 64 * 1024;

/// How much one period may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Policy domains (`tls-rpt-max-domains`).
    pub domains: usize,
    /// `failure-details` rows per policy (`tls-rpt-max-failures`).
    pub details: usize,
}

/// One policy's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub success: u64,
    pub failure: u64,
    /// Failure rows: how many, and the first one's text.
    pub details: BTreeMap<Failure, (u64, Option<String>)>,
}

/// A period's counts: policy domain → policy → counts.
pub type Aggregate = BTreeMap<String, BTreeMap<ReportPolicy, Counts>>;

/// A journal line or a snapshot row: an event counted `n` times.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Row {
    #[serde(flatten)]
    event: Event,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    n: u64,
    /// A failure counted without its details row (`event.failure` is then `None`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    generation: u64,
    rows: Vec<Row>,
}

/// Adds `row` to `agg` within `limits`; false when it was dropped.
fn apply(agg: &mut Aggregate, row: Row, limits: Limits) -> bool {
    if !agg.contains_key(&row.event.domain) && agg.len() >= limits.domains {
        return false;
    }
    let policies = agg.entry(row.event.domain).or_default();
    if !policies.contains_key(&row.event.policy) && policies.len() >= MAX_POLICIES {
        return false;
    }
    let counts = policies.entry(row.event.policy).or_default();
    match (row.event.failure, row.x) {
        (None, false) => counts.success = counts.success.saturating_add(row.n),
        (None, true) => counts.failure = counts.failure.saturating_add(row.n),
        (Some(f), _) => {
            counts.failure = counts.failure.saturating_add(row.n);
            if counts.details.contains_key(&f) || counts.details.len() < limits.details {
                let d = counts.details.entry(f).or_insert((0, row.event.info));
                d.0 = d.0.saturating_add(row.n);
            }
        }
    }
    true
}

/// The rows that rebuild `agg`.
fn rows(agg: &Aggregate) -> Vec<Row> {
    let mut out = Vec::new();
    for (domain, policies) in agg {
        for (policy, c) in policies {
            let event = |failure: Option<Failure>, info: Option<String>| Event {
                domain: domain.clone(),
                policy: policy.clone(),
                failure,
                info,
            };
            if c.success > 0 {
                out.push(Row {
                    event: event(None, None),
                    n: c.success,
                    x: false,
                });
            }
            let mut detailed = 0u64;
            for (f, (n, info)) in &c.details {
                detailed = detailed.saturating_add(*n);
                out.push(Row {
                    event: event(Some(f.clone()), info.clone()),
                    n: *n,
                    x: false,
                });
            }
            let rest = c.failure.saturating_sub(detailed);
            if rest > 0 {
                out.push(Row {
                    event: event(None, None),
                    n: rest,
                    x: true,
                });
            }
        }
    }
    out
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the
/// directory.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The lines of `path` that are whole and parse (a torn or oversized line is skipped).
fn read_rows(path: &Path, mut each: impl FnMut(Row)) -> io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE {
                // skip the rest of an oversized line
                let mut sink = Vec::new();
                reader.read_until(b'\n', &mut sink)?;
                continue;
            }
            return Ok(()); // torn: the process died while writing it
        }
        match serde_json::from_slice::<Row>(&line) {
            Ok(row) => each(row),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "TLS-RPT journal: a line that does not parse, skipped")
            }
        }
    }
}

/// The generations of the `journal.N` files in `dir`, sorted.
fn journals(dir: &Path) -> io::Result<Vec<u64>> {
    let mut gens: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("journal.")?
                .parse()
                .ok()
        })
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

/// The counts in a period directory: its snapshot and the journals after it. Returns
/// them and the highest generation seen.
fn load(dir: &Path, limits: Limits) -> io::Result<(Aggregate, u64)> {
    let mut agg = Aggregate::new();
    let mut covered = 0;
    let snap = dir.join("snapshot.json");
    match fs::read(&snap) {
        Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) => {
                covered = s.generation;
                for row in s.rows {
                    apply(&mut agg, row, limits);
                }
            }
            Err(e) => {
                warn!(path = %snap.display(), error = %e, "TLS-RPT snapshot does not parse; its counts are lost")
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut high = covered;
    for g in journals(dir)? {
        high = high.max(g);
        if g <= covered {
            continue;
        }
        read_rows(&dir.join(format!("journal.{g}")), |row| {
            apply(&mut agg, row, limits);
        })?;
    }
    Ok((agg, high))
}

/// A period that is over, waiting for its reports to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub dir: PathBuf,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
}

impl Closed {
    /// Its counts.
    pub fn load(&self, limits: Limits) -> io::Result<Aggregate> {
        load(&self.dir, limits).map(|(agg, _)| agg)
    }

    /// The domains whose report is already queued (or that need none).
    pub fn done(&self) -> io::Result<BTreeSet<String>> {
        match fs::read_to_string(self.dir.join("sent")) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    /// Notes (durably) that `domain` needs nothing more.
    pub fn mark_done(&self, domain: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sent"))?;
        f.write_all(format!("{domain}\n").as_bytes())?;
        f.sync_all()
    }

    /// Removes the period once every domain is done.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.dir)
    }
}

struct Inner {
    start: u64,
    generation: u64,
    journal: Option<File>,
    lines: u64,
    agg: Aggregate,
    limits: Limits,
    /// Events dropped by the limits in this period (logged once).
    dropped: u64,
}

/// The open period's counts and the closed periods, under one directory.
pub struct Store {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The store under `dir` (created if needed), its open period loaded.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Store> {
        fs::create_dir_all(dir.join("closed"))?;
        let current = dir.join("current");
        if !current.exists() {
            new_period(&current, now_secs())?;
        }
        let start = fs::read_to_string(current.join("start"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::other("tls-rpt/current/start is not a number"))?;
        let (agg, high) = load(&current, limits)?;
        let store = Store {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                start,
                generation: high + 1,
                journal: None,
                lines: 0,
                agg,
                limits,
                dropped: 0,
            }),
        };
        Ok(store)
    }

    /// The one store for `dir` in this process (deliveries under an old and a new
    /// configuration share it across a reload), with `limits` from now on.
    pub fn shared(dir: &Path, limits: Limits) -> io::Result<Arc<Store>> {
        static STORES: OnceLock<Mutex<HashMap<PathBuf, Weak<Store>>>> = OnceLock::new();
        let mut all = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get(dir).and_then(Weak::upgrade) {
            s.inner.lock().unwrap_or_else(|e| e.into_inner()).limits = limits;
            return Ok(s);
        }
        let s = Arc::new(Store::open(dir, limits)?);
        all.insert(dir.to_owned(), Arc::downgrade(&s));
        Ok(s)
    }

    /// When the open period started (Unix seconds).
    pub fn start(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).start
    }

    /// Counts `event` in the open period (and appends it to the journal).
    pub fn record(&self, event: Event) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let row = Row {
            event,
            n: 1,
            x: false,
        };
        let line = match serde_json::to_vec(&row) {
            Ok(mut l) => {
                l.push(b'\n');
                l
            }
            Err(e) => {
                warn!(error = %e, "TLS-RPT event not recorded");
                return;
            }
        };
        let limits = inner.limits;
        if !apply(&mut inner.agg, row, limits) {
            inner.dropped += 1;
            if inner.dropped == 1 {
                warn!(
                    max_domains = limits.domains,
                    "TLS-RPT: this period's limits are reached; further domains and policies are not counted"
                );
            }
            return;
        }
        if let Err(e) = self.append(&mut inner, &line) {
            warn!(error = %e, dir = %self.dir.display(), "TLS-RPT journal write failed");
        }
    }

    fn append(&self, inner: &mut Inner, line: &[u8]) -> io::Result<()> {
        let current = self.dir.join("current");
        if inner.lines >= COMPACT_LINES {
            let snap = Snapshot {
                generation: inner.generation,
                rows: rows(&inner.agg),
            };
            // the snapshot already holds this event (applied above): written after it
            // and with it, the journal line is not needed
            write_durably(
                &current.join("snapshot.json"),
                &serde_json::to_vec(&snap).map_err(io::Error::other)?,
            )?;
            for g in journals(&current)? {
                if g <= inner.generation {
                    let _ = fs::remove_file(current.join(format!("journal.{g}")));
                }
            }
            inner.generation += 1;
            inner.journal = None;
            inner.lines = 0;
            return Ok(());
        }
        if inner.journal.is_none() {
            inner.journal = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(current.join(format!("journal.{}", inner.generation)))?,
            );
        }
        if let Some(f) = inner.journal.as_mut() {
            f.write_all(line)?;
        }
        inner.lines += 1;
        Ok(())
    }

    /// Closes the open period at `now` (it becomes `closed/START-END`) and opens the
    /// next.
    pub fn rotate(&self, now: u64) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.dir.join("current");
        inner.journal = None;
        let end = now.max(inner.start);
        let closed = self
            .dir
            .join("closed")
            .join(format!("{}-{end}", inner.start));
        fs::rename(&current, &closed)?;
        sync_dir(&self.dir.join("closed"))?;
        inner.agg.clear();
        inner.start = end;
        inner.generation = 1;
        inner.lines = 0;
        inner.dropped = 0;
        new_period(&current, end)
    }

    /// The closed periods, oldest first.
    pub fn closed(&self) -> io::Result<Vec<Closed>> {
        let mut out: Vec<Closed> = fs::read_dir(self.dir.join("closed"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let (s, t) = name.split_once('-')?;
                Some(Closed {
                    dir: e.path(),
                    start: s.parse().ok()?,
                    end: t.parse().ok()?,
                })
            })
            .collect();
        out.sort_by_key(|c| (c.start, c.end));
        Ok(out)
    }

    pub fn limits(&self) -> Limits {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).limits
    }

    /// The open period's counts so far (for tests and `mtactl`).
    pub fn snapshot(&self) -> Aggregate {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .agg
            .clone()
    }
}

/// Creates `current` for a period starting at `start`: built aside, then renamed.
fn new_period(current: &Path, start: u64) -> io::Result<()> {
    let aside = current.with_extension("new");
    let _ = fs::remove_dir_all(&aside);
    fs::create_dir_all(&aside)?;
    let mut f = File::create(aside.join("start"))?;
    f.write_all(start.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&aside, current)?;
    sync_dir(current.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::super::{PolicyType, ResultType};
    use super::*;

    const LIMITS: Limits = Limits {
        domains: 3,
        details: 2,
    };

    fn sts() -> ReportPolicy {
        ReportPolicy {
            kind: PolicyType::Sts,
            strings: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx_host: vec!["mx.a.test".into()],
        }
    }

    fn fail(domain: &str, mx: &str) -> Event {
        Event::failure(
            domain,
            sts(),
            Failure {
                result: ResultType::ValidationFailure,
                sending_ip: Some("127.0.0.1".parse().unwrap()),
                mx: mx.into(),
                receiving_ip: Some("127.0.0.2".parse().unwrap()),
            },
            "mx not in policy",
        )
    }

    fn counts(store: &Store, domain: &str) -> (u64, u64, usize) {
        let agg = store.snapshot();
        let c = &agg[domain][&sts()];
        (c.success, c.failure, c.details.len())
    }

    #[test]
    fn counts_survive_a_restart_without_being_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LIMITS).unwrap();
        store.record(Event::success("a.test", sts()));
        store.record(fail("a.test", "mx1.a.test"));
        store.record(fail("a.test", "mx1.a.test"));
        // a torn line, as a process killed while writing leaves it
        drop(store);
        let j = dir.path().join("current/journal.1");
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(b"{\"d\":\"a.test\",\"p\"").unwrap();
        drop(f);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(counts(&store, "a.test"), (1, 2, 1));
        store.record(Event::success("a.test", sts()));
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(counts(&store, "a.test"), (2, 2, 1));
    }

    #[test]
    fn compaction_keeps_the_counts_and_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LIMITS).unwrap();
        let n = COMPACT_LINES + 5;
        for _ in 0..n {
            store.record(Event::success("a.test", sts()));
        }
        store.record(fail("a.test", "mx1.a.test"));
        assert!(dir.path().join("current/snapshot.json").exists());
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(counts(&store, "a.test"), (n, 1, 1));
        // a crash after the snapshot but before its journals were removed: a journal
        // it covers is still there, and is not replayed
        let snap: Snapshot =
            serde_json::from_slice(&fs::read(dir.path().join("current/snapshot.json")).unwrap())
                .unwrap();
        fs::write(
            dir.path()
                .join(format!("current/journal.{}", snap.generation)),
            b"{\"d\":\"a.test\",\"p\":{\"t\":\"sts\"}}\n",
        )
        .unwrap();
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(counts(&store, "a.test"), (n, 1, 1));
    }

    #[test]
    fn periods_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LIMITS).unwrap();
        for d in ["a.test", "b.test", "c.test", "d.test"] {
            store.record(Event::success(d, sts()));
        }
        assert_eq!(store.snapshot().len(), 3, "max 3 domains");
        for mx in ["mx1", "mx2", "mx3", "mx1"] {
            store.record(fail("a.test", mx));
        }
        // 4 failures, 2 detail rows (mx3 counted without its row)
        assert_eq!(counts(&store, "a.test"), (1, 4, 2));
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert_eq!(counts(&store, "a.test"), (1, 4, 2));
        assert!(!store.snapshot().contains_key("d.test"));
    }

    #[test]
    fn a_rotated_period_is_read_back_and_done_domains_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LIMITS).unwrap();
        let start = store.start();
        store.record(fail("a.test", "mx1.a.test"));
        store.record(Event::success("b.test", sts()));
        store.rotate(start + 10).unwrap();
        assert!(store.snapshot().is_empty());
        assert_eq!(store.start(), start + 10);
        store.record(Event::success("c.test", sts()));
        let closed = store.closed().unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start, closed[0].end), (start, start + 10));
        let agg = closed[0].load(LIMITS).unwrap();
        assert_eq!(
            agg.keys().collect::<Vec<_>>(),
            vec!["a.test", "b.test"],
            "the closed period has its own counts"
        );
        closed[0].mark_done("a.test").unwrap();
        drop(store);
        let store = Store::open(dir.path(), LIMITS).unwrap();
        assert!(store.snapshot().contains_key("c.test"));
        let closed = store.closed().unwrap();
        assert_eq!(
            closed[0].done().unwrap().into_iter().collect::<Vec<_>>(),
            vec!["a.test"]
        );
        closed[0].remove().unwrap();
        assert!(store.closed().unwrap().is_empty());
    }
}
