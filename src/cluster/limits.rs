//! Rate limits and connection leases computed in Redis, atomically, by one Lua script
//! ([`SCRIPT`]): every limit one SMTP command needs goes in one call, so a command
//! costs at most one round trip (`EVALSHA`; `EVAL` once when the server has not seen
//! the script yet).
//!
//! Rates are GCRA (the generic cell rate algorithm): `N per P` keeps one number per
//! client and kind, the theoretical arrival time (TAT), in microseconds of the Redis
//! server's clock (one clock for every node). Each event moves it `P/N` later; an event
//! is refused when `N` are outstanding, i.e. when it would move the TAT more than `P`
//! past now. A client may use its `N` at once, then gets one more every `P/N`; the key
//! expires when its TAT has passed. What a client has used is `ceil((TAT - now) / (P/N))`,
//! what hooks read as `ctx.rate(kind)`.
//!
//! Leases are a sorted set per client: one member per connection (`node:session`), its
//! score the time it expires. A connection is admitted when fewer than the limit are
//! live; a node renews the leases it holds every third of their life, and removes each
//! when its connection closes. A node that dies stops renewing: its leases expire.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Cluster, Feature, Unavailable};

/// The script: `KEYS[i]` with `ARGV[5i-4..5i]` = op, limit, a, member, n for each op `i`:
///
/// - `take LIMIT INTERVAL_US`: count one event unless `LIMIT` are outstanding;
/// - `check LIMIT INTERVAL_US`: refuse when `LIMIT` are outstanding, count nothing;
/// - `view LIMIT INTERVAL_US`: only what is outstanding;
/// - `lease LIMIT TTL_MS MEMBER`: hold a slot unless `LIMIT` live ones are held;
/// - `spares UPTO TTL_MS PREFIX N`: hold up to `N` more slots while fewer than `UPTO`
///   are held, `PREFIX:1` to `PREFIX:N`, refusing nothing (slots held ahead,
///   [`Op::Spares`]);
/// - `renew - TTL_MS MEMBER`: extend a slot still held (one given back stays so);
/// - `try UPTO INTERVAL_US - N`: count up to `N` events while fewer than `UPTO` are
///   outstanding, refuse nothing (events counted ahead, [`Op::Try`]; `UPTO` may be
///   under the limit's own, `INTERVAL_US` is the limit's);
/// - `untake - INTERVAL_US - N`: give `N` counted events back (counted ahead, unused);
/// - `release - - MEMBER`: give a slot back (a connection closed);
/// - `set - TTL_S VALUE`: store `VALUE` for `TTL_S` seconds (a greylisting record,
///   written after its decision, [`Op::Set`]).
///
/// Ops run in order; after a refusal the rest are skipped (neither counted nor held).
/// Answers `{admitted (1 or 0), used_1, used_2, ..., counted_1, counted_2, ...}`:
/// what each op found in use after it ran (`-1`: skipped), then how many events or
/// slots each counted or held.
pub const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local counted = {}
for i, key in ipairs(KEYS) do
  local op = ARGV[5 * i - 4]
  local limit = tonumber(ARGV[5 * i - 3])
  local a = tonumber(ARGV[5 * i - 2])
  local member = ARGV[5 * i - 1]
  local n = tonumber(ARGV[5 * i]) or 1
  counted[i] = 0
  if out[1] == 0 then
    out[i + 1] = -1
  elseif op == 'release' then
    redis.call('ZREM', key, member)
    out[i + 1] = 0
  elseif op == 'set' then
    redis.call('SET', key, member, 'EX', a)
    out[i + 1] = 0
  elseif op == 'untake' then
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    if tat > now then
      tat = tat - a * n
      if tat > now then
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      else
        redis.call('DEL', key)
      end
    end
    out[i + 1] = 0
  elseif op == 'renew' then
    if redis.call('ZSCORE', key, member) then
      redis.call('ZADD', key, 'XX', math.floor(now / 1000) + a, member)
      redis.call('PEXPIRE', key, a)
    end
    out[i + 1] = 0
  elseif op == 'lease' then
    local now_ms = math.floor(now / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    local added = redis.call('ZADD', key, now_ms + a, member)
    local held = redis.call('ZCARD', key)
    if held > limit then
      -- over the limit with this one: it goes again (a member that was there stays)
      if added == 1 then
        redis.call('ZREM', key, member)
      end
      out[1] = 0
      out[i + 1] = held - 1
    else
      redis.call('PEXPIRE', key, a)
      counted[i] = 1
      out[i + 1] = held
    end
  elseif op == 'spares' then
    local now_ms = math.floor(now / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    local held = redis.call('ZCARD', key)
    local m = math.min(n, limit - held)
    if m > 0 then
      local args = {}
      for j = 1, m do
        args[2 * j - 1] = now_ms + a
        args[2 * j] = member .. ':' .. j
      end
      redis.call('ZADD', key, unpack(args))
      redis.call('PEXPIRE', key, a)
      held = held + m
      counted[i] = m
    end
    out[i + 1] = held
  else
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    if tat < now then tat = now end
    local used = math.ceil((tat - now) / a)
    if op == 'try' then
      local m = math.min(n, limit - used)
      if m > 0 then
        tat = tat + a * m
        used = used + m
        counted[i] = m
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      end
    elseif op == 'take' then
      if used >= limit then
        out[1] = 0
      else
        tat = tat + a
        used = used + 1
        counted[i] = 1
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      end
    elseif op == 'check' and used >= limit then
      out[1] = 0
    end
    out[i + 1] = used
  end
end
for i = 1, #KEYS do
  out[#KEYS + 1 + i] = counted[i]
end
return out
"#;

/// The SHA-1 Redis knows [`SCRIPT`] by (`EVALSHA`).
fn sha() -> &'static str {
    static SHA: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| redis::Script::new(SCRIPT).get_hash().to_owned());
    &SHA
}

/// What one op asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Count one event unless `limit` are outstanding in `per`.
    Take {
        key: String,
        limit: u32,
        per: Duration,
    },
    /// Refuse when `limit` are outstanding; count nothing.
    Check {
        key: String,
        limit: u32,
        per: Duration,
    },
    /// Only read what is outstanding.
    View {
        key: String,
        limit: u32,
        per: Duration,
    },
    /// Hold one of `limit` slots under `key` as `member`, for `ttl` unless renewed.
    Lease {
        key: String,
        limit: u32,
        ttl: Duration,
        member: String,
    },
    /// Count up to `count` events while fewer than `upto` (at most `limit`) are
    /// outstanding; refuse nothing (counted ahead: the answer says how many counted).
    Try {
        key: String,
        limit: u32,
        per: Duration,
        upto: u32,
        count: u32,
    },
    /// Give back `count` events counted ahead and not used.
    Untake {
        key: String,
        limit: u32,
        per: Duration,
        count: u32,
    },
    /// Hold up to `count` more slots under `key` while fewer than `upto` are held,
    /// as `prefix:1` to `prefix:count`, for `ttl` unless renewed; refuse nothing
    /// (slots held ahead: the answer says how many).
    Spares {
        key: String,
        upto: u32,
        ttl: Duration,
        prefix: String,
        count: u32,
    },
    /// Give the slot `member` back.
    Release { key: String, member: String },
    /// Store `value` under `key` for `ttl` (whole seconds, at least one).
    Set {
        key: String,
        value: String,
        ttl: Duration,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Take { key, .. }
            | Op::Check { key, .. }
            | Op::View { key, .. }
            | Op::Lease { key, .. }
            | Op::Try { key, .. }
            | Op::Untake { key, .. }
            | Op::Spares { key, .. }
            | Op::Release { key, .. }
            | Op::Set { key, .. } => key,
        }
    }
}

/// GCRA's emission interval: `per / limit`, in whole microseconds, at least one.
fn interval_us(limit: u32, per: Duration) -> u64 {
    let per = u64::try_from(per.as_micros()).unwrap_or(u64::MAX);
    (per / u64::from(limit.max(1))).max(1)
}

/// The script's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Every op passed (takes counted, leases held).
    pub admitted: bool,
    /// What each op found in use after it ran (`None`: skipped after a refusal).
    pub used: Vec<Option<u32>>,
    /// How many events or slots each op counted or held (`take` and `lease`: 1 when
    /// they did; `try` and `spares`: up to their `count`; the other ops: 0).
    pub counted: Vec<u32>,
}

/// Most ops in one call (a command needs at most a handful).
pub const MAX_OPS: usize = 16;

/// Most ops waiting for a call to ride along ([`Pending`]); past it the oldest are
/// dropped (a lease then expires by itself within `lease`, a reservation when its
/// rate's period has passed).
const MAX_PENDING: usize = 10_000;

/// How long an op given back waits for a call to ride along before it is sent alone.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// What a node gives back (leases of closed sessions, reservations not used) or has
/// decided to store (greylisting's records): sent with the next call this node makes,
/// so that it costs no round trip of its own under load, or alone after
/// [`FLUSH_AFTER`] when no call comes.
#[derive(Default)]
pub struct Pending(Mutex<std::collections::VecDeque<Op>>);

impl Pending {
    pub fn push(&self, op: Op) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_PENDING {
            q.pop_front();
        }
        q.push_back(op);
    }

    /// Up to `n` of them, oldest first.
    fn take(&self, n: usize) -> Vec<Op> {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Values read in the same round trip as a call's ops ([`Cluster::limits_reading`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reads {
    /// The server's clock, in seconds.
    pub time: u64,
    /// Each key's value, in the order asked (`None`: no such key).
    pub values: Vec<Option<Vec<u8>>>,
}

/// Most keys read along with a call.
pub const MAX_READS: usize = 8;

impl Cluster {
    /// Runs `ops` in one call (`EVALSHA`, or `EVAL` when Redis answers `NOSCRIPT`),
    /// with what this node gives back riding in front of them ([`Pending`]).
    pub async fn limits(&self, feature: Feature, ops: &[Op]) -> Result<Answer, Unavailable> {
        Ok(self.limits_reading(feature, ops, &[]).await?.0)
    }

    /// [`Cluster::limits`], and in the same round trip (one pipeline) the server's
    /// clock and the values of `reads` (at most [`MAX_READS`]), when there are any:
    /// what a later command will need, read with a call made anyway (greylisting's
    /// records, read with MAIL's limits when the RCPT is pipelined behind it).
    pub async fn limits_reading(
        &self,
        feature: Feature,
        ops: &[Op],
        reads: &[String],
    ) -> Result<(Answer, Option<Reads>), Unavailable> {
        let ops = &ops[..ops.len().min(MAX_OPS)];
        let reads = &reads[..reads.len().min(MAX_READS)];
        let riding = self.pending.take(MAX_OPS - ops.len());
        let answer = Answer {
            admitted: true,
            used: Vec::new(),
            counted: Vec::new(),
        };
        if ops.is_empty() && riding.is_empty() {
            if reads.is_empty() {
                return Ok((answer, None));
            }
            // only reads: no script to run
            let read = self.read(feature, reads).await?;
            return Ok((answer, Some(read)));
        }
        let skip = riding.len();
        let (mut answer, read) = self.call(feature, &riding, ops, reads).await?;
        answer.used.drain(..skip);
        answer.counted.drain(..skip);
        Ok((answer, read))
    }

    /// The server's clock and the values of `reads`, in one round trip.
    pub async fn read(&self, feature: Feature, reads: &[String]) -> Result<Reads, Unavailable> {
        let mut pipe = redis::pipe();
        reading(&mut pipe, reads);
        let values: Vec<redis::Value> = self.query(feature, &pipe).await?;
        reads_of(values, reads.len()).ok_or(Unavailable::Answer("the values read"))
    }

    /// Stores `value` under `key` for `ttl` with the next call this node makes
    /// ([`Pending`]): a write nobody waits for costs no round trip of its own.
    pub fn set_later(&self, key: String, value: String, ttl: Duration) {
        self.pending.push(Op::Set { key, value, ttl });
    }

    /// Sends what waits in [`Pending`] when no call took it along within
    /// [`FLUSH_AFTER`], until `shutdown` (and once more then). Run by the daemon.
    pub async fn flush_pending(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                _ = tokio::time::sleep(FLUSH_AFTER) => false,
            };
            self.give_back_expired(stop);
            while !self.pending.is_empty() {
                if self.limits(Feature::Leases, &[]).await.is_err() {
                    break;
                }
            }
            if stop {
                return;
            }
        }
    }

    /// One call of the script with `riding` then `ops`, and the reads of `reads` in
    /// the same pipeline when there are any.
    async fn call(
        &self,
        feature: Feature,
        riding: &[Op],
        ops: &[Op],
        reads: &[String],
    ) -> Result<(Answer, Option<Reads>), Unavailable> {
        let all = || riding.iter().chain(ops);
        // EVALSHA, or EVAL with the script's text (built only when Redis asks for it)
        let script = |verb: &str, text: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(text).arg(riding.len() + ops.len());
            for op in all() {
                cmd.arg(op.key());
            }
            for op in all() {
                let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
                let (verb, limit, a, member, n): (&str, u32, u64, &str, u32) = match op {
                    Op::Take { limit, per, .. } => {
                        ("take", *limit, interval_us(*limit, *per), "", 1)
                    }
                    Op::Check { limit, per, .. } => {
                        ("check", *limit, interval_us(*limit, *per), "", 1)
                    }
                    Op::View { limit, per, .. } => {
                        ("view", *limit, interval_us(*limit, *per), "", 1)
                    }
                    Op::Lease {
                        limit, ttl, member, ..
                    } => ("lease", *limit, ms(ttl), member, 1),
                    Op::Spares {
                        upto,
                        ttl,
                        prefix,
                        count,
                        ..
                    } => ("spares", *upto, ms(ttl), prefix, *count),
                    Op::Try {
                        limit,
                        per,
                        upto,
                        count,
                        ..
                    } => (
                        "try",
                        *upto.min(limit),
                        interval_us(*limit, *per),
                        "",
                        *count,
                    ),
                    Op::Untake {
                        limit, per, count, ..
                    } => ("untake", 0, interval_us(*limit, *per), "", *count),
                    Op::Release { member, .. } => ("release", 0, 0, member, 1),
                    Op::Set { value, ttl, .. } => ("set", 0, ttl.as_secs().max(1), value, 1),
                };
                cmd.arg(verb).arg(limit).arg(a).arg(member).arg(n);
            }
            cmd
        };
        let answer = if reads.is_empty() {
            let raw: Result<Vec<i64>, _> =
                match self.query_unrecorded(&script("EVALSHA", sha())).await {
                    Err(Unavailable::Redis(e)) if no_script(&e) => {
                        self.query_unrecorded(&script("EVAL", SCRIPT)).await
                    }
                    other => other,
                };
            raw.map(|raw| (raw, None))
        } else {
            let piped = |script: redis::Cmd| {
                let mut pipe = redis::pipe();
                pipe.add_command(script);
                reading(&mut pipe, reads);
                pipe
            };
            let raw: Result<Vec<redis::Value>, _> = match self
                .query_unrecorded(&piped(script("EVALSHA", sha())))
                .await
            {
                Err(Unavailable::Redis(e)) if no_script(&e) => {
                    self.query_unrecorded(&piped(script("EVAL", SCRIPT))).await
                }
                other => other,
            };
            raw.and_then(|values| {
                split_reads(values, reads.len()).ok_or(Unavailable::Answer(
                    "the values read with the limits script",
                ))
            })
            .map(|(raw, read)| (raw, Some(read)))
        };
        let answer = answer.and_then(|(raw, read)| {
            let answer = parse(&raw, riding.len() + ops.len())
                .ok_or(Unavailable::Answer("the limits script's answer"))?;
            Ok((answer, read))
        });
        self.record(feature, answer.as_ref().map(|_| ()));
        answer
    }

    /// Gives a lease back (the connection closed): no longer renewed here, and removed
    /// from Redis with the next call this node makes ([`Pending`]).
    pub fn release(&self, key: &str, member: &str) {
        self.leases.forget(key, member);
        self.pending.push(Op::Release {
            key: key.to_owned(),
            member: member.to_owned(),
        });
    }

    /// A spare of `key` from the [`Stash`], if one was kept less than [`HOLD`] ago
    /// (what expired meanwhile is given back).
    pub fn spare(&self, key: &str) -> Option<Spare> {
        let (spare, expired) = self.stash.take(key, Instant::now());
        self.give_back(key, expired);
        spare
    }

    /// Keeps `spare` of `key` in the [`Stash`] for the client's next session, or gives
    /// it back when the stash holds enough of it, or when its limit is too small to
    /// hold any for the node ([`spares`]: given back at once, as a node alone would).
    pub fn keep(&self, key: &str, spare: Spare) {
        if spares(spare.limit()) == 0 {
            self.give_back(key, vec![spare]);
        } else if let Some(spare) = self.stash.keep(key, spare, Instant::now()) {
            self.give_back(key, vec![spare]);
        }
    }

    /// How many events or slots of `key` (a limit of `limit`) to count ahead for the
    /// node with a call made now: what its stash misses of [`spares`] and no call
    /// asks for already, when the client is busy here, else none; records this ask.
    /// Until the [`Asked`] returned is dropped (the call answered or failed), they
    /// count as coming.
    pub fn wanted(self: &Arc<Self>, key: &str, limit: u32) -> (u32, Asked) {
        let count = self.stash.wanted(key, limit, Instant::now());
        let asked = Asked {
            cluster: self.clone(),
            key: key.to_owned(),
            count,
        };
        (count, asked)
    }

    /// Gives back what the [`Stash`] kept [`HOLD`] or more ago (everything with
    /// `all`: the node stops).
    fn give_back_expired(&self, all: bool) {
        for (key, spares) in self.stash.expired(Instant::now(), all) {
            self.give_back(&key, spares);
        }
    }

    /// Events given back in one `untake` per rate, slots one by one.
    fn give_back(&self, key: &str, spares: Vec<Spare>) {
        let mut events: Option<(u32, Duration, u32)> = None;
        for spare in spares {
            match spare {
                Spare::Event { limit, per, .. } => match &mut events {
                    Some((l, p, n)) if *l == limit && *p == per => *n += 1,
                    _ => {
                        if let Some((limit, per, count)) = events.take() {
                            self.untake(key, limit, per, count);
                        }
                        events = Some((limit, per, 1));
                    }
                },
                Spare::Lease { member, .. } => self.release(key, &member),
            }
        }
        if let Some((limit, per, count)) = events {
            self.untake(key, limit, per, count);
        }
    }

    fn untake(&self, key: &str, limit: u32, per: Duration, count: u32) {
        self.pending.push(Op::Untake {
            key: key.to_owned(),
            limit,
            per,
            count,
        });
    }

    /// Renews every lease this node holds, in one pipeline, every third of their life,
    /// until `shutdown`. Run by the daemon.
    pub async fn renew_leases(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let lease = self.settings.lease;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(lease / 3) => {}
            }
            let held = self.leases.held();
            if held.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            let ttl = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
            for (key, member) in &held {
                // the score is the expiry in ms of the server's clock, computed by
                // the script as when the lease was taken
                pipe.cmd("EVALSHA")
                    .arg(sha())
                    .arg(1)
                    .arg(key)
                    .arg("renew")
                    .arg(0)
                    .arg(ttl)
                    .arg(member)
                    .arg(1)
                    .ignore();
            }
            if let Err(Unavailable::Redis(e)) = self.query::<()>(Feature::Leases, &pipe).await
                && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
            {
                // the server lost its scripts (a restart): load it again for the next round
                let _: Result<String, _> = self
                    .query(
                        Feature::Leases,
                        redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT),
                    )
                    .await;
            }
        }
    }
}

fn no_script(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// `TIME`, then a `GET` of each of `reads`, added to `pipe`.
fn reading(pipe: &mut redis::Pipeline, reads: &[String]) {
    pipe.cmd("TIME");
    for key in reads {
        pipe.cmd("GET").arg(key);
    }
}

/// A pipeline's answers (the script's, `TIME`'s, then one value per key read): the
/// script's numbers and what was read. `None` for anything else.
fn split_reads(values: Vec<redis::Value>, keys: usize) -> Option<(Vec<i64>, Reads)> {
    let mut values = values.into_iter();
    let raw: Vec<i64> = redis::from_redis_value(values.next()?).ok()?;
    Some((raw, reads_of(values, keys)?))
}

/// `TIME`'s answer, then one value per key read (`keys` of them): what was read.
fn reads_of(values: impl IntoIterator<Item = redis::Value>, keys: usize) -> Option<Reads> {
    let mut values = values.into_iter();
    let (time, _): (u64, u64) = redis::from_redis_value(values.next()?).ok()?;
    let values = values
        .map(|v| redis::from_redis_value::<Option<Vec<u8>>>(v).ok())
        .collect::<Option<Vec<_>>>()?;
    (values.len() == keys).then_some(Reads { time, values })
}

/// The script's answer to `ops` ops.
fn parse(raw: &[i64], ops: usize) -> Option<Answer> {
    let (&admitted, rest) = raw.split_first()?;
    if rest.len() != 2 * ops || !matches!(admitted, 0 | 1) {
        return None;
    }
    let (used, counted) = rest.split_at(ops);
    Some(Answer {
        admitted: admitted == 1,
        used: used.iter().map(|&n| u32::try_from(n).ok()).collect(),
        counted: counted
            .iter()
            .map(|&n| u32::try_from(n).ok())
            .collect::<Option<_>>()?,
    })
}

/// How long an event counted ahead or a slot held ahead waits in the [`Stash`] for a
/// session of its client: given back when none used it by then. A busy client's
/// events are counted this much early at most (GCRA sees them then).
pub const HOLD: Duration = Duration::from_secs(1);

/// A node's share of a limit to count ahead, per client and kind, at most: and never
/// more than a sixteenth of the limit, so that a limit under 16 is never counted ahead
/// for the node ([`spares`]). The node's stash holds up to twice its share.
pub const SPARES: u32 = 32;

/// Most keys the [`Stash`] follows (clients × kinds); past it, a new key gets nothing
/// counted ahead.
const MAX_STASHED: usize = 16_384;

/// A node's share of a limit of `limit` to count ahead: it keeps up to twice that.
pub fn spares(limit: u32) -> u32 {
    SPARES.min(limit / 16)
}

/// Something counted or held in Redis for a session that has not come yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Spare {
    /// One event counted under a rate of `limit` per `per`, with what was in use then.
    Event {
        limit: u32,
        per: Duration,
        used: Option<u32>,
    },
    /// A connection slot held as `member` (renewed with the node's leases), among
    /// at most `limit`.
    Lease { member: String, limit: u32 },
}

impl Spare {
    fn limit(&self) -> u32 {
        match self {
            Spare::Event { limit, .. } | Spare::Lease { limit, .. } => *limit,
        }
    }
}

#[derive(Default)]
struct Kept {
    /// Oldest first, each with when it was kept.
    spares: std::collections::VecDeque<(Instant, Spare)>,
    /// When a session last asked for this key (a call, or a spare taken).
    asked: Option<Instant>,
    /// Asked for by calls not answered yet: not asked again meanwhile (the node's
    /// concurrent sessions would each ask for the same).
    coming: u32,
    /// Its client was busy here at the last call that asked for it: what its
    /// sessions leave is kept for the next ones (else given back at once, as for a
    /// client seen once).
    busy: bool,
}

/// What a node holds counted ahead for its busy clients, by Redis key: events counted
/// and connection slots held by one call for the sessions that follow within
/// [`HOLD`], and what a session ended without using. A client whose sessions come
/// one after the other then costs a call every few connections, not one each; a
/// client seen once costs what it did (nothing is counted ahead for it). The limits
/// hold in total, since what is stashed is counted; what differs is at a limit's
/// edge, where another node's client may be refused for up to [`HOLD`] because of
/// what this node holds: at most twice the key's [`spares`] (an eighth of the limit,
/// 16 at most), counted ahead only while the client has used less than half of it.
#[derive(Default)]
pub struct Stash(Mutex<HashMap<String, Kept>>);

impl Stash {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest spare of `key` kept less than [`HOLD`] ago, and the expired ones to
    /// give back.
    fn take(&self, key: &str, now: Instant) -> (Option<Spare>, Vec<Spare>) {
        let mut map = self.lock();
        let Some(kept) = map.get_mut(key) else {
            return (None, Vec::new());
        };
        kept.asked = Some(now);
        let mut expired = Vec::new();
        while let Some((at, spare)) = kept.spares.pop_front() {
            if now.duration_since(at) < HOLD {
                return (Some(spare), expired);
            }
            expired.push(spare);
        }
        (None, expired)
    }

    /// Keeps `spare` for `key`: given back (returned) unless the key's client was
    /// busy here at its last call ([`Stash::wanted`]), or when the key holds twice
    /// its [`spares`] already.
    fn keep(&self, key: &str, spare: Spare, now: Instant) -> Option<Spare> {
        let mut map = self.lock();
        let Some(kept) = map.get_mut(key).filter(|k| k.busy) else {
            return Some(spare);
        };
        if kept.spares.len() >= 2 * spares(spare.limit()) as usize {
            return Some(spare);
        }
        kept.spares.push_back((now, spare));
        None
    }

    /// How many of `key` to count ahead for a limit of `limit`: what is missing to
    /// twice its [`spares`] (what the stash keeps at most) and no call asks for
    /// already, when a session asked for `key` within [`HOLD`] (the client is busy on
    /// this node), else none; records this ask.
    fn wanted(&self, key: &str, limit: u32, now: Instant) -> u32 {
        let mut map = self.lock();
        if let Some(kept) = map.get_mut(key) {
            let busy = kept.asked.is_some_and(|at| now.duration_since(at) < HOLD);
            kept.asked = Some(now);
            kept.busy = busy;
            if !busy {
                return 0;
            }
            let held = u32::try_from(kept.spares.len()).unwrap_or(u32::MAX);
            let wanted = (2 * spares(limit)).saturating_sub(held.saturating_add(kept.coming));
            kept.coming += wanted;
            return wanted;
        }
        if map.len() < MAX_STASHED {
            map.insert(
                key.to_owned(),
                Kept {
                    asked: Some(now),
                    ..Kept::default()
                },
            );
        }
        0
    }

    /// The call that asked for `count` of `key` ([`Stash::wanted`]) has answered, or
    /// failed.
    fn answered(&self, key: &str, count: u32) {
        if let Some(kept) = self.lock().get_mut(key) {
            kept.coming = kept.coming.saturating_sub(count);
        }
    }

    /// Takes out what was kept [`HOLD`] or more ago (everything with `all`), and
    /// forgets keys with nothing kept that no session asked for within it.
    fn expired(&self, now: Instant, all: bool) -> Vec<(String, Vec<Spare>)> {
        let mut out = Vec::new();
        self.lock().retain(|key, kept| {
            let mut gone = Vec::new();
            while let Some((at, _)) = kept.spares.front() {
                if !all && now.duration_since(*at) < HOLD {
                    break;
                }
                if let Some((_, spare)) = kept.spares.pop_front() {
                    gone.push(spare);
                }
            }
            if !gone.is_empty() {
                out.push((key.clone(), gone));
            }
            !all && (!kept.spares.is_empty()
                || kept.coming > 0
                || kept.asked.is_some_and(|at| now.duration_since(at) < HOLD))
        });
        out
    }
}

/// Events or slots a call asks to count ahead ([`Cluster::wanted`]): no longer
/// coming once dropped.
pub struct Asked {
    cluster: Arc<Cluster>,
    key: String,
    count: u32,
}

impl Drop for Asked {
    fn drop(&mut self) {
        if self.count > 0 {
            self.cluster.stash.answered(&self.key, self.count);
        }
    }
}

/// The leases this node holds now: (key, member).
#[derive(Default)]
pub struct Leases(Mutex<HashSet<(String, String)>>);

impl Leases {
    pub fn hold(&self, key: &str, member: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key.to_owned(), member.to_owned()));
    }

    fn forget(&self, key: &str, member: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(key.to_owned(), member.to_owned()));
    }

    fn held(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_answers() {
        assert_eq!(interval_us(3, Duration::from_secs(60)), 20_000_000);
        assert_eq!(interval_us(0, Duration::from_secs(1)), 1_000_000);
        assert_eq!(interval_us(u32::MAX, Duration::from_secs(1)), 1);
        assert_eq!(
            parse(&[1, 2, -1, 1, 0], 2),
            Some(Answer {
                admitted: true,
                used: vec![Some(2), None],
                counted: vec![1, 0],
            })
        );
        assert_eq!(parse(&[0, 5, 0], 1).map(|a| a.admitted), Some(false));
        assert_eq!(parse(&[1, 2, 0], 2), None, "two answers per op");
        assert_eq!(parse(&[7, 2, 0], 1), None);
        assert_eq!(parse(&[], 0), None);
        assert_eq!(parse(&[1], 0).map(|a| a.used.len()), Some(0));
        // tries that counted 3 (9 in use after them) and none (5 in use)
        assert_eq!(
            parse(&[1, 9, 5, -1, 3, 0, 0], 3),
            Some(Answer {
                admitted: true,
                used: vec![Some(9), Some(5), None],
                counted: vec![3, 0, 0],
            })
        );
        assert_eq!(parse(&[1, 3, -4], 1), None, "a count is never negative");
    }

    #[test]
    fn the_stash_keeps_for_busy_clients_and_gives_back_what_waits_too_long() {
        let stash = Stash::default();
        let t0 = Instant::now();
        // (HOLD is a second)
        let t = |ms| t0 + Duration::from_millis(ms);
        let event = |used| Spare::Event {
            limit: 100,
            per: Duration::from_secs(60),
            used: Some(used),
        };
        // a key first asked for: its client is not busy, what its session leaves is
        // given back at once (a client seen once costs what it did)
        assert_eq!(stash.wanted("k", 100, t(0)), 0);
        assert_eq!(stash.keep("k", event(0), t(0)), Some(event(0)));
        assert_eq!(stash.keep("new", event(0), t(0)), Some(event(0)));
        // asked again within HOLD: busy, twice its share wanted (100 / 16 = 6)
        assert_eq!(stash.wanted("k", 100, t(500)), 12);
        stash.answered("k", 12);
        // kept, and taken oldest first
        assert_eq!(stash.keep("k", event(1), t(500)), None);
        assert_eq!(stash.keep("k", event(2), t(700)), None);
        assert_eq!(stash.take("k", t(700)), (Some(event(1)), vec![]));
        assert_eq!(stash.keep("k", event(3), t(700)), None);
        assert_eq!(stash.wanted("k", 100, t(700)), 10, "12 less the 2 kept");
        assert_eq!(stash.wanted("k", 100, t(700)), 0, "10 are coming");
        stash.answered("k", 10);
        assert_eq!(stash.wanted("k", 100, t(700)), 10, "none came");
        stash.answered("k", 10);
        // what waited a HOLD is given back, not taken
        assert_eq!(stash.take("k", t(1750)), (None, vec![event(2), event(3)]));
        assert_eq!(stash.take("other", t(1750)), (None, vec![]));
        // at most twice its share: the rest is given back at once
        assert_eq!(stash.wanted("k", 100, t(1800)), 12);
        stash.answered("k", 12);
        for i in 0..12 {
            assert_eq!(stash.keep("k", event(i), t(1800)), None);
        }
        assert_eq!(stash.keep("k", event(99), t(1800)), Some(event(99)));
        // not asked for a HOLD: no longer busy
        assert_eq!(stash.wanted("k", 100, t(3000)), 0);
        assert_eq!(stash.keep("k", event(7), t(3000)), Some(event(7)));
        let lease = Spare::Lease {
            member: "n:1:a".into(),
            limit: 50,
        };
        assert_eq!(stash.wanted("conn", 50, t(3000)), 0);
        assert_eq!(stash.wanted("conn", 50, t(3100)), 6);
        stash.answered("conn", 6);
        assert_eq!(stash.keep("conn", lease.clone(), t(3100)), None);
        // expired: what waited a HOLD, per key; keys idle and empty are forgotten
        let gone = stash.expired(t(4050), false);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "k");
        assert_eq!(gone[0].1.len(), 12);
        assert_eq!(stash.lock().len(), 1, "k forgotten, conn kept");
        // all of it when the node stops
        assert_eq!(
            stash.expired(t(4050), true),
            vec![("conn".to_owned(), vec![lease])]
        );
        assert!(stash.lock().is_empty());
        // counted ahead for the node: a sixteenth of the limit, at most SPARES
        assert_eq!(spares(15), 0);
        assert_eq!(spares(64), 4);
        assert_eq!(spares(1_000_000), SPARES);
    }

    #[test]
    fn reads_come_after_the_scripts_answer_and_the_clock() {
        use redis::Value::{Array, BulkString, Int, Nil};
        let answer = |values: Vec<redis::Value>| split_reads(values, 2);
        let clock = || {
            Array(vec![
                BulkString(b"1700000000".to_vec()),
                BulkString(b"5".to_vec()),
            ])
        };
        assert_eq!(
            answer(vec![
                Array(vec![Int(1), Int(2)]),
                clock(),
                BulkString(b"1,2".to_vec()),
                Nil
            ]),
            Some((
                vec![1, 2],
                Reads {
                    time: 1_700_000_000,
                    values: vec![Some(b"1,2".to_vec()), None],
                }
            ))
        );
        // one value missing, or no clock: nothing is taken from it
        assert_eq!(answer(vec![Array(vec![Int(1)]), clock(), Nil]), None);
        assert_eq!(answer(vec![Array(vec![Int(1)]), Int(7), Nil, Nil]), None);
    }
}
