//! The rate limits and connection leases a command needs, decided in one place for
//! both kinds of node: alone (the process's counters, [`super::rate`]) or in a
//! `cluster` (one call to Redis per command, [`crate::cluster::limits`]; the process's
//! counters again, or a tempfail, while Redis does not answer, `cluster { fallback }`).

use std::net::IpAddr;
use std::sync::Arc;

use sha2::Digest;

use super::Core;
use super::session::{Flow, Session};
use crate::cluster::limits::{self, Op, Reads, Spare};
use crate::cluster::{Cluster, Fallback, Feature};
use crate::policy::{RateKind as Kind, RateView};

/// What one command asks of the limits, in order; the first refusal stops the rest.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Want<'a> {
    /// Count one `kind` event unless the client is at its limit.
    Take(Kind),
    /// Refuse when the client is at its `kind` limit; count nothing.
    Check(Kind),
    /// Refuse when the user name is at `auth-failures-per-user`.
    CheckUser(&'a str),
    /// Count a failed AUTH for the user name.
    TakeUser(&'a str),
}

/// The limits' answer to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limited {
    Allowed,
    /// Over a limit: the command's refusal, as a node alone gives it.
    Refused,
    /// Redis does not answer and `fallback "tempfail"`: a 4xx, never an accept.
    Unavailable,
}

/// An event to count ahead ([`Core::limit_reserving`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reserve {
    /// For this command's transaction: what it finds in use is what hooks see now.
    Now(Kind),
    /// For a later command ([`Ahead`]): hooks see its count when it is used.
    Later(Kind),
}

/// Where an event counted ahead for a session comes from.
enum Got {
    /// The `Try` at this index of the call's ops.
    At(usize),
    /// The node's [`crate::cluster::limits::Stash`].
    Stashed(Slot),
    /// Nowhere: the client has no limit of its kind.
    Nothing,
}

/// The slots of `got`: those stashed, and those of the `Try`s in `ops` that counted
/// (`answer`: none without a call).
fn slots(
    cluster: &Arc<Cluster>,
    ops: &[Op],
    answer: Option<&crate::cluster::limits::Answer>,
    got: Vec<Got>,
) -> Vec<Option<Slot>> {
    got.into_iter()
        .map(|g| match g {
            Got::Stashed(slot) => Some(slot),
            Got::Nothing => None,
            Got::At(i) => {
                let answer = answer?;
                let Op::Try {
                    key, limit, per, ..
                } = &ops[i]
                else {
                    return None;
                };
                (answer.counted.get(i).copied()? > 0).then(|| Slot {
                    cluster: cluster.clone(),
                    key: key.clone(),
                    limit: *limit,
                    per: *per,
                    used: answer.used.get(i).copied().flatten(),
                    live: true,
                })
            }
        })
        .collect()
}

/// Ops counting ahead for the node ([`crate::cluster::limits::Stash`]), added to a
/// call's `ops`: for each rate of `rates` (key, limit, period) whose client is busy
/// here, what its stash misses of twice its [`limits::spares`] and no call in flight
/// asks for, counted while the client has used less than half its limit. Where each
/// went, and the asks (what they ask for is coming until they are dropped).
fn refill(
    cluster: &Arc<Cluster>,
    ops: &mut Vec<(Op, Option<Kind>)>,
    rates: Vec<(String, u32, std::time::Duration)>,
) -> (Vec<usize>, Vec<limits::Asked>) {
    let mut keys: Vec<(String, u32, std::time::Duration)> = Vec::new();
    for rate in rates {
        if !keys.iter().any(|(k, ..)| *k == rate.0) {
            keys.push(rate);
        }
    }
    let mut at = Vec::new();
    let mut asked = Vec::new();
    for (key, limit, per) in keys {
        let (count, ask) = cluster.wanted(&key, limit);
        asked.push(ask);
        if count > 0 {
            ops.push((
                Op::Try {
                    key,
                    limit,
                    per,
                    upto: limit / 2,
                    count,
                },
                None,
            ));
            at.push(ops.len() - 1);
        }
    }
    (at, asked)
}

/// An event counted ahead under `key` in the node's stash.
fn stashed(cluster: &Arc<Cluster>, key: String) -> Option<Slot> {
    match cluster.spare(&key)? {
        Spare::Event { limit, per, used } => Some(Slot {
            cluster: cluster.clone(),
            key,
            limit,
            per,
            used,
            live: true,
        }),
        lease => {
            cluster.keep(&key, lease);
            None
        }
    }
}

/// Keeps what the refills at `at` counted in the stash, each event with what was in
/// use once it was counted.
fn stash_refills(cluster: &Cluster, ops: &[Op], answer: &limits::Answer, at: &[usize]) {
    for &i in at {
        let (
            Some(Op::Try {
                key,
                limit,
                per,
                count,
                ..
            }),
            Some(&n),
        ) = (ops.get(i), answer.counted.get(i))
        else {
            continue;
        };
        // never more than asked for, whatever the answer says
        let n = n.min(*count);
        let after = answer.used.get(i).copied().flatten();
        for j in 0..n {
            let used = after.map(|u| u.saturating_sub(n - 1 - j));
            cluster.keep(
                key,
                Spare::Event {
                    limit: *limit,
                    per: *per,
                    used,
                },
            );
        }
    }
}

/// What the session last learnt from Redis of its client's counts, for hooks'
/// `ctx.rate(kind)` (the policy cannot wait for Redis): every limited kind at connect,
/// each again with the command that counts it.
#[derive(Clone, Debug, Default)]
pub struct Seen([Option<u32>; 5]);

impl Seen {
    pub(crate) fn set(&mut self, kind: Kind, used: Option<u32>) {
        if let Some(n) = used {
            self.0[kind as usize] = Some(n);
        }
    }

    /// The process's counts, while Redis does not answer (`fallback "local"`).
    fn local(&mut self, rate: &super::rate::RateLimiter, ip: IpAddr) {
        for kind in Kind::ALL {
            self.0[kind as usize] = rate.count(kind, ip);
        }
    }
}

impl RateView for Seen {
    fn count(&self, kind: Kind, _client: IpAddr) -> Option<u32> {
        self.0[kind as usize]
    }
}

/// A connection's lease in the cluster: given back when the session ends.
pub struct Lease {
    cluster: Arc<Cluster>,
    key: String,
    member: String,
    /// `connections-per-ip`.
    limit: u32,
}

impl Drop for Lease {
    /// Kept in the node's stash for the client's next connection (renewed meanwhile),
    /// or given back.
    fn drop(&mut self) {
        let member = std::mem::take(&mut self.member);
        let limit = self.limit;
        self.cluster.keep(&self.key, Spare::Lease { member, limit });
    }
}

/// One event counted ahead (a `Try`), for a later command to use without a call of its
/// own: a recipient counted at MAIL for the transaction's first RCPT, or a message and
/// a recipient counted for the session's next MAIL ([`Ahead`]). Kept in the node's
/// stash for another session of the client if nothing used it (given back from there
/// when none does).
pub struct Slot {
    cluster: Arc<Cluster>,
    key: String,
    limit: u32,
    per: std::time::Duration,
    /// What its kind had in use once it was counted (hooks' `ctx.rate`).
    used: Option<u32>,
    /// Not used yet.
    live: bool,
}

impl Slot {
    /// The command that uses it: counted already. What was in use then.
    pub(crate) fn use_it(mut self) -> Option<u32> {
        self.live = false;
        self.used
    }

    /// What its kind had in use once it was counted.
    pub(crate) fn used(&self) -> Option<u32> {
        self.used
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.live {
            let spare = Spare::Event {
                limit: self.limit,
                per: self.per,
                used: self.used,
            };
            self.cluster.keep(&self.key, spare);
        }
    }
}

/// What a session in a cluster holds counted ahead for its next MAIL: a message and
/// its first recipient, counted with the call made at connect and again with each MAIL
/// that makes a call, so that a connection with one message costs one round trip and
/// one with many half a round trip a message (or taken from the node's stash, with no
/// call). At most one of each per session; what the session ends without using goes
/// to the node's stash, or back.
#[derive(Default)]
pub struct Ahead {
    pub(crate) message: Option<Slot>,
    pub(crate) recipient: Option<Slot>,
}

/// The Redis key of a user name's failures: a digest, so that any name makes a short
/// key of safe characters.
fn user_key(cluster: &Cluster, user: &str) -> String {
    let digest = sha2::Sha256::digest(super::rate::user_key(user).as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    cluster.key(&["rate", "auth-failures-per-user", &hex])
}

impl Core {
    /// The Redis key of `kind`'s rate for `ip`, with its limit and period: `None` when
    /// the kind has no limit or the client is exempt.
    fn rate_of(
        &self,
        cluster: &Cluster,
        ip: IpAddr,
        kind: Kind,
    ) -> Option<(String, u32, std::time::Duration)> {
        let (limit, per) = self.rate.rule(kind)?;
        if self.rate.exempts(ip) {
            return None;
        }
        let client = self.rate.key(ip).to_string();
        Some((cluster.key(&["rate", kind.as_str(), &client]), limit, per))
    }

    /// The ops of `wants` for `ip`, paired with the kind each reports (for [`Seen`]).
    fn ops(&self, cluster: &Cluster, ip: IpAddr, wants: &[Want<'_>]) -> Vec<(Op, Option<Kind>)> {
        let mut ops = Vec::new();
        for want in wants {
            match *want {
                Want::Take(kind) | Want::Check(kind) => {
                    let Some((key, limit, per)) = self.rate_of(cluster, ip, kind) else {
                        continue;
                    };
                    let op = if matches!(want, Want::Take(_)) {
                        Op::Take { key, limit, per }
                    } else {
                        Op::Check { key, limit, per }
                    };
                    ops.push((op, Some(kind)));
                }
                Want::CheckUser(user) | Want::TakeUser(user) => {
                    let Some((limit, per)) = self.rate.per_user() else {
                        continue;
                    };
                    let key = user_key(cluster, user);
                    let op = if matches!(want, Want::TakeUser(_)) {
                        Op::Take { key, limit, per }
                    } else {
                        Op::Check { key, limit, per }
                    };
                    ops.push((op, None));
                }
            }
        }
        ops
    }

    /// Decides `wants` for a client at `ip`: in Redis (one call) with a cluster, in
    /// this process otherwise or while Redis does not answer (`fallback "local"`).
    pub(crate) async fn limit(&self, ip: IpAddr, wants: &[Want<'_>], seen: &mut Seen) -> Limited {
        self.limit_reserving(ip, wants, &[], &[], seen).await.0
    }

    /// [`Core::limit`], and in a cluster, when `wants` are allowed, one event of each
    /// of `reserve` counted in the same call if the client has one left (a [`Slot`]
    /// each, in order: MAIL counts the first recipient with the message, so that its
    /// RCPT needs no call, and the next message and its recipient, [`Ahead`]), and the
    /// values of `reads` read in the same round trip when a call is made
    /// ([`crate::cluster::Cluster::limits_reading`]).
    pub(crate) async fn limit_reserving(
        &self,
        ip: IpAddr,
        wants: &[Want<'_>],
        reserve: &[Reserve],
        reads: &[String],
        seen: &mut Seen,
    ) -> (Limited, Vec<Option<Slot>>, Option<Reads>) {
        let Some(cluster) = &self.cluster else {
            return (self.limit_here(ip, wants), Vec::new(), None);
        };
        // an event counted ahead in the node's stash decides a `Take` with no call
        let mut ops = Vec::new();
        for want in wants {
            if let Want::Take(kind) = *want
                && let Some((key, ..)) = self.rate_of(cluster, ip, kind)
                && let Some(slot) = stashed(cluster, key)
            {
                seen.set(kind, slot.use_it());
                continue;
            }
            ops.extend(self.ops(cluster, ip, std::slice::from_ref(want)));
        }
        let got = self.reserve(cluster, ip, reserve, &mut ops, seen);
        if ops.is_empty() && reads.is_empty() {
            return (Limited::Allowed, slots(cluster, &[], None, got), None);
        }
        // the rates this command counts, whether a call or the stash counted them
        let rates = wants
            .iter()
            .filter_map(|w| match w {
                Want::Take(kind) => Some(*kind),
                _ => None,
            })
            .chain(reserve.iter().map(|r| match r {
                Reserve::Now(kind) | Reserve::Later(kind) => *kind,
            }))
            .filter_map(|kind| self.rate_of(cluster, ip, kind))
            .collect();
        let (refills, _asked) = if ops.is_empty() {
            Default::default()
        } else {
            refill(cluster, &mut ops, rates)
        };
        let (ops, kinds): (Vec<Op>, Vec<Option<Kind>>) = ops.into_iter().unzip();
        let feature = if ops.is_empty() {
            Feature::Greylisting
        } else {
            Feature::RateLimits
        };
        match cluster.limits_reading(feature, &ops, reads).await {
            Ok((answer, read)) => {
                for (kind, used) in kinds.iter().zip(&answer.used) {
                    if let Some(kind) = kind {
                        seen.set(*kind, *used);
                    }
                }
                if !answer.admitted {
                    return (Limited::Refused, Vec::new(), None);
                }
                stash_refills(cluster, &ops, &answer, &refills);
                (
                    Limited::Allowed,
                    slots(cluster, &ops, Some(&answer), got),
                    read,
                )
            }
            // only reads (no limit asked): what needed them has its own fallback
            Err(_) if ops.is_empty() => (Limited::Allowed, slots(cluster, &[], None, got), None),
            Err(_) => match cluster.settings().fallback {
                Fallback::Local => {
                    let limited = self.limit_here(ip, wants);
                    seen.local(&self.rate, ip);
                    (limited, Vec::new(), None)
                }
                Fallback::Tempfail => (Limited::Unavailable, Vec::new(), None),
            },
        }
    }

    /// For each of `reserve` that has a limit for `ip`: an event of the node's stash,
    /// or else a `Try` added to `ops`.
    fn reserve(
        &self,
        cluster: &Arc<Cluster>,
        ip: IpAddr,
        reserve: &[Reserve],
        ops: &mut Vec<(Op, Option<Kind>)>,
        seen: &mut Seen,
    ) -> Vec<Got> {
        reserve
            .iter()
            .map(|r| {
                let (kind, shown) = match *r {
                    Reserve::Now(kind) => (kind, Some(kind)),
                    Reserve::Later(kind) => (kind, None),
                };
                let Some((key, limit, per)) = self.rate_of(cluster, ip, kind) else {
                    return Got::Nothing;
                };
                if let Some(slot) = stashed(cluster, key.clone()) {
                    if shown.is_some() {
                        seen.set(kind, slot.used());
                    }
                    return Got::Stashed(slot);
                }
                // ahead of a command that may never come: only while the client has
                // used less than half its limit, so that near it every event is
                // counted by its own command, as on a node alone
                let upto = match r {
                    Reserve::Now(_) => limit,
                    Reserve::Later(_) => limit / 2,
                };
                ops.push((
                    Op::Try {
                        key,
                        limit,
                        per,
                        upto,
                        count: 1,
                    },
                    shown,
                ));
                Got::At(ops.len() - 1)
            })
            .collect()
    }

    /// [`Core::limit`] with the process's counters.
    fn limit_here(&self, ip: IpAddr, wants: &[Want<'_>]) -> Limited {
        for want in wants {
            let refused = match *want {
                Want::Take(kind) => !self.rate.allow(kind, ip),
                Want::Check(kind) => self.rate.exhausted(kind, ip),
                Want::CheckUser(user) => self.rate.user_exhausted(user),
                Want::TakeUser(user) => {
                    self.rate.user_failed(user);
                    false
                }
            };
            if refused {
                return Limited::Refused;
            }
        }
        Limited::Allowed
    }

    /// A new connection from `ip`: its `connections` rate and, in a cluster, a lease
    /// among at most `per_client` across the nodes (`connections-per-ip`), with a view
    /// of every other limited kind when the policy has hooks, and a message and its
    /// first recipient counted ahead for the first MAIL ([`Ahead`]), all in one call;
    /// none when the node's stash holds the connection's event and a lease for the
    /// client (a busy client: a call every few connections). Admitted with no lease
    /// and nothing ahead without a cluster, or while Redis does not answer and the
    /// fallback is local.
    pub(crate) async fn admit(
        &self,
        ip: IpAddr,
        per_client: usize,
        session: u64,
        seen: &mut Seen,
    ) -> Result<Admitted, Refusal> {
        let Some(cluster) = &self.cluster else {
            return self.admit_here(ip);
        };
        let mut ops = Vec::new();
        if let Some((key, limit, per)) = self.rate_of(cluster, ip, Kind::Connections) {
            match stashed(cluster, key.clone()) {
                Some(slot) => seen.set(Kind::Connections, slot.use_it()),
                None => ops.push((Op::Take { key, limit, per }, Some(Kind::Connections))),
            }
        }
        let lease_key = cluster.key(&["conn", &self.rate.key(ip).to_string()]);
        // the process id too: a node restarted while its old leases live numbers its
        // sessions from the start again
        let own = format!(
            "{}:{}:{session:x}",
            cluster.settings().node,
            std::process::id()
        );
        let limit = u32::try_from(per_client).unwrap_or(u32::MAX);
        let at = ops.len();
        let mut member = match cluster.spare(&lease_key) {
            Some(Spare::Lease { member, .. }) => Some(member),
            Some(event) => {
                cluster.keep(&lease_key, event);
                None
            }
            None => None,
        };
        if member.is_none() {
            ops.push((
                Op::Lease {
                    key: lease_key.clone(),
                    limit,
                    ttl: cluster.settings().lease,
                    member: own.clone(),
                },
                None,
            ));
        }
        // what hooks read as `ctx.rate(kind)` before the command that counts it: no
        // reads when the policy has no hook
        if self.policy.load().has_hooks() {
            for kind in Kind::ALL.iter().filter(|k| **k != Kind::Connections) {
                if let Some((key, limit, per)) = self.rate_of(cluster, ip, *kind) {
                    ops.push((Op::View { key, limit, per }, Some(*kind)));
                }
            }
        }
        let ahead = [
            Reserve::Later(Kind::Messages),
            Reserve::Later(Kind::Recipients),
        ];
        if ops.is_empty() {
            // no call: what the stash holds for the first MAIL, nothing counted for it
            let ahead = [Kind::Messages, Kind::Recipients].into_iter().map(|kind| {
                self.rate_of(cluster, ip, kind)
                    .and_then(|(key, ..)| stashed(cluster, key))
            });
            return Ok(Admitted::new(cluster, lease_key, member, limit, ahead));
        }
        // after the lease: skipped (nothing counted) when the connection is refused
        let reserved = self.reserve(cluster, ip, &ahead, &mut ops, seen);
        let rates = [Kind::Connections, Kind::Messages, Kind::Recipients]
            .into_iter()
            .filter_map(|kind| self.rate_of(cluster, ip, kind))
            .collect();
        let (refills, _asked) = refill(cluster, &mut ops, rates);
        let (spares, _asked_lease) = cluster.wanted(&lease_key, limit);
        let spares_at = (spares > 0).then(|| {
            ops.push((
                Op::Spares {
                    key: lease_key.clone(),
                    upto: limit / 2,
                    ttl: cluster.settings().lease,
                    prefix: own.clone(),
                    count: spares,
                },
                None,
            ));
            ops.len() - 1
        });
        let (ops, kinds): (Vec<Op>, Vec<Option<Kind>>) = ops.into_iter().unzip();
        let outcome = cluster.limits(Feature::Leases, &ops).await;
        let refused = match outcome {
            Ok(answer) => {
                for (kind, used) in kinds.iter().zip(&answer.used) {
                    if let Some(kind) = kind {
                        seen.set(*kind, *used);
                    }
                }
                if answer.admitted {
                    if member.is_none() {
                        cluster.leases.hold(&lease_key, &own);
                        member = Some(own.clone());
                    }
                    stash_refills(cluster, &ops, &answer, &refills);
                    // never more than asked for, whatever the answer says
                    let held = spares_at.and_then(|i| answer.counted.get(i).copied());
                    for j in 1..=held.unwrap_or(0).min(spares) {
                        let spare = format!("{own}:{j}");
                        cluster.leases.hold(&lease_key, &spare);
                        cluster.keep(
                            &lease_key,
                            Spare::Lease {
                                member: spare,
                                limit,
                            },
                        );
                    }
                    let slots = slots(cluster, &ops, Some(&answer), reserved).into_iter();
                    return Ok(Admitted::new(cluster, lease_key, member, limit, slots));
                }
                // the lease was skipped when the rate refused first
                match member.is_none().then(|| answer.used.get(at)).flatten() {
                    Some(Some(_)) => Refusal::PerClient,
                    _ => Refusal::Rate,
                }
            }
            Err(_) => match cluster.settings().fallback {
                Fallback::Local => {
                    let admitted = self.admit_here(ip);
                    seen.local(&self.rate, ip);
                    if let Some(member) = member {
                        cluster.keep(&lease_key, Spare::Lease { member, limit });
                    }
                    return admitted;
                }
                Fallback::Tempfail => Refusal::Unavailable,
            },
        };
        // a lease from the stash goes back there
        if let Some(member) = member {
            cluster.keep(&lease_key, Spare::Lease { member, limit });
        }
        Err(refused)
    }

    fn admit_here(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        match self.limit_here(ip, &[Want::Take(Kind::Connections)]) {
            Limited::Allowed => Ok(Admitted::default()),
            _ => Err(Refusal::Rate),
        }
    }
}

/// An admitted connection's lease in the cluster, and what it holds counted ahead.
#[derive(Default)]
pub(crate) struct Admitted {
    pub(crate) lease: Option<Lease>,
    pub(crate) ahead: Ahead,
}

impl Admitted {
    /// Holding `member` under `key` (if any), among at most `limit`, and the first two
    /// of `ahead`: the first MAIL's message and its recipient.
    fn new(
        cluster: &Arc<Cluster>,
        key: String,
        member: Option<String>,
        limit: u32,
        mut ahead: impl Iterator<Item = Option<Slot>>,
    ) -> Self {
        Admitted {
            lease: member.map(|member| Lease {
                cluster: cluster.clone(),
                key,
                member,
                limit,
            }),
            ahead: Ahead {
                message: ahead.next().flatten(),
                recipient: ahead.next().flatten(),
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `rate-limits { connections }`.
    Rate,
    /// `connections-per-ip`, counted across the nodes.
    PerClient,
    /// Redis does not answer and `fallback "tempfail"`.
    Unavailable,
}

impl Session {
    /// The limits' answer to the command `verb` as its reply: `None` when allowed,
    /// else the refusal sent (`over` over the limit, `unavailable` while Redis does not
    /// answer and the fallback is tempfail), logged with the `limit`.
    pub(super) fn refuse_limited(
        &mut self,
        limited: Limited,
        verb: &str,
        limit: &'static str,
        (over, unavailable): (&str, &str),
    ) -> Option<Flow> {
        match limited {
            Limited::Allowed => None,
            Limited::Refused => {
                tracing::warn!(limit, "rate limit: {verb} refused");
                Some(self.fail(over))
            }
            Limited::Unavailable => {
                tracing::warn!(
                    limit,
                    "cluster: Redis unavailable, fallback tempfail: {verb} refused"
                );
                Some(self.fail(unavailable))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A hostile or broken Redis that answers it counted more than was asked for
    /// stashes no more than was asked for (and spends no time on the rest).
    #[tokio::test]
    async fn a_refill_keeps_no_more_than_it_asked_for() {
        // (nothing here calls Redis)
        let cluster = Arc::new(Cluster::without_redis(Fallback::Local));
        let key = "mtad:rate:messages:192.0.2.1";
        let (limit, per) = (1_000, Duration::from_secs(60));
        let mut ops = Vec::new();
        // the client is busy here once asked for twice within a second
        let rates = || vec![(key.to_owned(), limit, per)];
        assert_eq!(refill(&cluster, &mut ops, rates()).0, Vec::<usize>::new());
        let (at, asked) = refill(&cluster, &mut ops, rates());
        assert_eq!(at, vec![0]);
        let Op::Try { count, .. } = ops[0].0 else {
            panic!("{:?}", ops[0].0)
        };
        assert_eq!(count, 2 * limits::spares(limit));
        let (ops, _): (Vec<Op>, Vec<Option<Kind>>) = ops.into_iter().unzip();
        // a few more than asked for: none of them kept, none given back
        let answer = |counted| limits::Answer {
            admitted: true,
            used: vec![Some(u32::MAX)],
            counted: vec![counted],
        };
        stash_refills(&cluster, &ops, &answer(count + 5), &at);
        assert!(
            cluster.pending.is_empty(),
            "gave back what it never asked for"
        );
        // many more: as many (those past what the stash keeps given back at once)
        stash_refills(&cluster, &ops, &answer(u32::MAX), &at);
        drop(asked);
        let mut taken = 0;
        while let Some(slot) = stashed(&cluster, key.to_owned()) {
            slot.use_it();
            taken += 1;
            assert!(taken <= count, "more stashed than asked for");
        }
        assert_eq!(taken, count);
    }
}
