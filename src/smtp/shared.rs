//! The rate limits and connection leases a command needs, decided in one place for
//! both kinds of node: alone (the process's counters, [`super::rate`]) or in a
//! `cluster` (one call to Redis per command, [`crate::cluster::limits`]; the process's
//! counters again, or a tempfail, while Redis does not answer, `cluster { fallback }`).

use std::net::IpAddr;
use std::sync::Arc;

use sha2::Digest;

use super::Core;
use super::session::{Flow, Session};
use crate::cluster::limits::{Op, Reads};
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

/// The slots of the `Try`s at `at` in `ops` that counted.
fn slots(
    cluster: &Arc<Cluster>,
    ops: &[Op],
    answer: &crate::cluster::limits::Answer,
    at: &[Option<usize>],
) -> Vec<Option<Slot>> {
    at.iter()
        .map(|i| {
            let i = (*i)?;
            answer.counted.get(i).copied()?.then(|| Slot {
                cluster: cluster.clone(),
                op: Some(ops[i].clone()),
                used: answer.used.get(i).copied().flatten(),
            })
        })
        .collect()
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
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.cluster.release(&self.key, &self.member);
    }
}

/// One event counted ahead (a `Try`), for a later command to use without a call of its
/// own: a recipient counted at MAIL for the transaction's first RCPT, or a message and
/// a recipient counted for the session's next MAIL ([`Ahead`]). Given back (with this
/// node's next call) if nothing used it.
pub struct Slot {
    cluster: Arc<Cluster>,
    /// The `Try` that counted it; `None` once used.
    op: Option<Op>,
    /// What its kind had in use once it was counted (hooks' `ctx.rate`).
    used: Option<u32>,
}

impl Slot {
    /// The command that uses it: counted already. What was in use then.
    pub(crate) fn use_it(mut self) -> Option<u32> {
        self.op = None;
        self.used
    }

    /// What its kind had in use once it was counted.
    pub(crate) fn used(&self) -> Option<u32> {
        self.used
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(Op::Try {
            key, limit, per, ..
        }) = self.op.take()
        {
            self.cluster.pending.push(Op::Untake { key, limit, per });
        }
    }
}

/// What a session in a cluster holds counted ahead for its next MAIL: a message and
/// its first recipient, counted with the call made at connect and again with each MAIL
/// that makes a call, so that a connection with one message costs one round trip and
/// one with many half a round trip a message. At most one of each per session; what
/// the session ends without using is given back.
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
    /// The ops of `wants` for `ip`, paired with the kind each reports (for [`Seen`]).
    fn ops(&self, cluster: &Cluster, ip: IpAddr, wants: &[Want<'_>]) -> Vec<(Op, Option<Kind>)> {
        let client = self.rate.key(ip).to_string();
        let exempt = self.rate.exempts(ip);
        let mut ops = Vec::new();
        for want in wants {
            match *want {
                Want::Take(kind) | Want::Check(kind) => {
                    let Some((limit, per)) = self.rate.rule(kind) else {
                        continue;
                    };
                    if exempt {
                        continue;
                    }
                    let key = cluster.key(&["rate", kind.as_str(), &client]);
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
        let mut ops = self.ops(cluster, ip, wants);
        let at = self.reserve(cluster, ip, reserve, &mut ops);
        if ops.is_empty() && reads.is_empty() {
            return (Limited::Allowed, Vec::new(), None);
        }
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
                (Limited::Allowed, slots(cluster, &ops, &answer, &at), read)
            }
            // only reads (no limit asked): what needed them has its own fallback
            Err(_) if ops.is_empty() => (Limited::Allowed, Vec::new(), None),
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

    /// Adds a `Try` to `ops` for each of `reserve` that has a limit for `ip`; where
    /// each went (an index into `ops`), in order.
    fn reserve(
        &self,
        cluster: &Cluster,
        ip: IpAddr,
        reserve: &[Reserve],
        ops: &mut Vec<(Op, Option<Kind>)>,
    ) -> Vec<Option<usize>> {
        reserve
            .iter()
            .map(|r| {
                let (kind, shown) = match *r {
                    Reserve::Now(kind) => (kind, Some(kind)),
                    Reserve::Later(kind) => (kind, None),
                };
                let (Op::Take { key, limit, per }, _) =
                    self.ops(cluster, ip, &[Want::Take(kind)]).pop()?
                else {
                    return None;
                };
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
                    },
                    shown,
                ));
                Some(ops.len() - 1)
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
    /// first recipient counted ahead for the first MAIL ([`Ahead`]), all in one call.
    /// Admitted with no lease and nothing ahead without a cluster, or while Redis does
    /// not answer and the fallback is local.
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
        let mut wants = vec![Want::Take(Kind::Connections)];
        // what hooks read as `ctx.rate(kind)` before the command that counts it: no
        // reads when the policy has no hook
        if self.policy.load().has_hooks() {
            wants.extend(
                Kind::ALL
                    .iter()
                    .filter(|k| **k != Kind::Connections)
                    .map(|k| Want::Check(*k)),
            );
        }
        let mut ops = self.ops(cluster, ip, &wants);
        // the other kinds are only read: they refuse nothing here
        for (op, _) in &mut ops {
            if let Op::Check { key, limit, per } = op {
                *op = Op::View {
                    key: std::mem::take(key),
                    limit: *limit,
                    per: *per,
                };
            }
        }
        let lease_key = cluster.key(&["conn", &self.rate.key(ip).to_string()]);
        // the process id too: a node restarted while its old leases live numbers its
        // sessions from the start again
        let member = format!(
            "{}:{}:{session:x}",
            cluster.settings().node,
            std::process::id()
        );
        let at = usize::from(matches!(ops.first(), Some((_, Some(Kind::Connections)))));
        let lease = Op::Lease {
            key: lease_key.clone(),
            limit: u32::try_from(per_client).unwrap_or(u32::MAX),
            ttl: cluster.settings().lease,
            member: member.clone(),
        };
        ops.insert(at, (lease, None));
        // after the lease: skipped (nothing counted) when the connection is refused
        let ahead = [
            Reserve::Later(Kind::Messages),
            Reserve::Later(Kind::Recipients),
        ];
        let reserved = self.reserve(cluster, ip, &ahead, &mut ops);
        let (ops, kinds): (Vec<Op>, Vec<Option<Kind>>) = ops.into_iter().unzip();
        match cluster.limits(Feature::Leases, &ops).await {
            Ok(answer) => {
                for (kind, used) in kinds.iter().zip(&answer.used) {
                    if let Some(kind) = kind {
                        seen.set(*kind, *used);
                    }
                }
                if !answer.admitted {
                    // the lease was skipped when the rate refused first
                    return Err(match answer.used.get(at) {
                        Some(Some(_)) => Refusal::PerClient,
                        _ => Refusal::Rate,
                    });
                }
                cluster.leases.hold(&lease_key, &member);
                let mut slots = slots(cluster, &ops, &answer, &reserved).into_iter();
                Ok(Admitted {
                    lease: Some(Lease {
                        cluster: cluster.clone(),
                        key: lease_key,
                        member,
                    }),
                    ahead: Ahead {
                        message: slots.next().flatten(),
                        recipient: slots.next().flatten(),
                    },
                })
            }
            Err(_) => match cluster.settings().fallback {
                Fallback::Local => {
                    let admitted = self.admit_here(ip);
                    seen.local(&self.rate, ip);
                    admitted
                }
                Fallback::Tempfail => Err(Refusal::Unavailable),
            },
        }
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
