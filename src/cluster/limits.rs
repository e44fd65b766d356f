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

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::{Cluster, Feature, Unavailable};

/// The script: `KEYS[i]` with `ARGV[4i-3..4i]` = op, limit, a, member for each op `i`:
///
/// - `take LIMIT INTERVAL_US`: count one event unless `LIMIT` are outstanding;
/// - `check LIMIT INTERVAL_US`: refuse when `LIMIT` are outstanding, count nothing;
/// - `view LIMIT INTERVAL_US`: only what is outstanding;
/// - `lease LIMIT TTL_MS MEMBER`: hold a slot unless `LIMIT` live ones are held;
/// - `renew - TTL_MS MEMBER`: extend a slot still held (one given back stays so);
/// - `try LIMIT INTERVAL_US`: count one event if fewer than `LIMIT` are outstanding,
///   refuse nothing: answers what is used after it, or `-2 - used` when it did not
///   count (an event counted ahead, [`Op::Try`]; its `LIMIT` may be under the
///   limit's own, `INTERVAL_US` is the limit's);
/// - `untake - INTERVAL_US`: give one counted event back (a reservation not used);
/// - `release - - MEMBER`: give a slot back (a connection closed);
/// - `set - TTL_S VALUE`: store `VALUE` for `TTL_S` seconds (a greylisting record,
///   written after its decision, [`Op::Set`]).
///
/// Ops run in order; after a refusal the rest are skipped (neither counted nor held).
/// Answers `{admitted (1 or 0), used_1, used_2, ...}`, `-1` for a skipped op.
pub const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
for i, key in ipairs(KEYS) do
  local op = ARGV[4 * i - 3]
  local limit = tonumber(ARGV[4 * i - 2])
  local a = tonumber(ARGV[4 * i - 1])
  if out[1] == 0 then
    out[i + 1] = -1
  elseif op == 'release' then
    redis.call('ZREM', key, ARGV[4 * i])
    out[i + 1] = 0
  elseif op == 'set' then
    redis.call('SET', key, ARGV[4 * i], 'EX', a)
    out[i + 1] = 0
  elseif op == 'untake' then
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    if tat > now then
      tat = tat - a
      if tat > now then
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      else
        redis.call('DEL', key)
      end
    end
    out[i + 1] = 0
  elseif op == 'renew' then
    if redis.call('ZSCORE', key, ARGV[4 * i]) then
      redis.call('ZADD', key, 'XX', math.floor(now / 1000) + a, ARGV[4 * i])
      redis.call('PEXPIRE', key, a)
    end
    out[i + 1] = 0
  elseif op == 'lease' then
    local now_ms = math.floor(now / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    local added = redis.call('ZADD', key, now_ms + a, ARGV[4 * i])
    local held = redis.call('ZCARD', key)
    if held > limit then
      -- over the limit with this one: it goes again (a member that was there stays)
      if added == 1 then
        redis.call('ZREM', key, ARGV[4 * i])
      end
      out[1] = 0
      out[i + 1] = held - 1
    else
      redis.call('PEXPIRE', key, a)
      out[i + 1] = held
    end
  else
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    if tat < now then tat = now end
    local used = math.ceil((tat - now) / a)
    if op == 'try' then
      if used >= limit then
        used = -2 - used
      else
        tat = tat + a
        used = used + 1
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      end
    elseif op == 'take' then
      if used >= limit then
        out[1] = 0
      else
        tat = tat + a
        used = used + 1
        redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
      end
    elseif op == 'check' and used >= limit then
      out[1] = 0
    end
    out[i + 1] = used
  end
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
    /// Count one event if fewer than `upto` (at most `limit`) are outstanding; refuse
    /// nothing (a reservation: the answer says whether it counted).
    Try {
        key: String,
        limit: u32,
        per: Duration,
        upto: u32,
    },
    /// Give back one event counted by a `Try` that was not used.
    Untake {
        key: String,
        limit: u32,
        per: Duration,
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
    /// For each `Try`, whether it counted (`false` for the other ops).
    pub counted: Vec<bool>,
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

    fn is_empty(&self) -> bool {
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
                match op {
                    Op::Take { limit, per, .. } => cmd
                        .arg("take")
                        .arg(*limit)
                        .arg(interval_us(*limit, *per))
                        .arg(""),
                    Op::Check { limit, per, .. } => cmd
                        .arg("check")
                        .arg(*limit)
                        .arg(interval_us(*limit, *per))
                        .arg(""),
                    Op::View { limit, per, .. } => cmd
                        .arg("view")
                        .arg(*limit)
                        .arg(interval_us(*limit, *per))
                        .arg(""),
                    Op::Lease {
                        limit, ttl, member, ..
                    } => cmd
                        .arg("lease")
                        .arg(*limit)
                        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                        .arg(member.as_str()),
                    Op::Try {
                        limit, per, upto, ..
                    } => cmd
                        .arg("try")
                        .arg(*upto.min(limit))
                        .arg(interval_us(*limit, *per))
                        .arg(""),
                    Op::Untake { limit, per, .. } => cmd
                        .arg("untake")
                        .arg(0)
                        .arg(interval_us(*limit, *per))
                        .arg(""),
                    Op::Release { member, .. } => {
                        cmd.arg("release").arg(0).arg(0).arg(member.as_str())
                    }
                    Op::Set { value, ttl, .. } => cmd
                        .arg("set")
                        .arg(0)
                        .arg(ttl.as_secs().max(1))
                        .arg(value.as_str()),
                };
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
            let tries: Vec<bool> = all().map(|o| matches!(o, Op::Try { .. })).collect();
            let answer =
                parse(&raw, &tries).ok_or(Unavailable::Answer("the limits script's answer"))?;
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

/// The script's answer to ops of which those marked in `tries` are `try`.
fn parse(raw: &[i64], tries: &[bool]) -> Option<Answer> {
    let (&admitted, used) = raw.split_first()?;
    if used.len() != tries.len() || !matches!(admitted, 0 | 1) {
        return None;
    }
    let mut answer = Answer {
        admitted: admitted == 1,
        used: Vec::with_capacity(used.len()),
        counted: Vec::with_capacity(used.len()),
    };
    for (&n, &is_try) in used.iter().zip(tries) {
        let (n, counted) = match n {
            n if is_try && n <= -2 => (n.checked_neg()?.checked_sub(2)?, false),
            n => (n, is_try && n >= 1),
        };
        answer.used.push(u32::try_from(n).ok());
        answer.counted.push(counted);
    }
    Some(answer)
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
            parse(&[1, 2, -1], &[false, false]),
            Some(Answer {
                admitted: true,
                used: vec![Some(2), None],
                counted: vec![false, false],
            })
        );
        assert_eq!(parse(&[0, 5], &[false]).map(|a| a.admitted), Some(false));
        assert_eq!(parse(&[1, 2], &[false, false]), None, "one answer per op");
        assert_eq!(parse(&[7, 2], &[false]), None);
        assert_eq!(parse(&[], &[]), None);
        // a try that counted (used 3 after it), one that did not (5 in use)
        assert_eq!(
            parse(&[1, 3, -7, -1], &[true, true, true]),
            Some(Answer {
                admitted: true,
                used: vec![Some(3), Some(5), None],
                counted: vec![true, false, false],
            })
        );
        assert_eq!(parse(&[1, i64::MIN], &[true]), None);
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
