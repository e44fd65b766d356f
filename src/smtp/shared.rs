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

/// What the session last learnt from Redis of its client's counts, for hooks'
/// `ctx.rate(kind)` (the policy cannot wait for Redis): every limited kind at connect,
/// each again with the command that counts it.
#[derive(Clone, Debug, Default)]
pub struct Seen([Option<u32>; 5]);

impl Seen {
    fn set(&mut self, kind: Kind, used: Option<u32>) {
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

/// One recipient counted at MAIL, in the same call as the message, for the
/// transaction's first RCPT to use without a call of its own; given back (with this
/// node's next call) if no RCPT used it.
pub struct Slot {
    cluster: Arc<Cluster>,
    /// The `Try` that counted it; `None` once used.
    op: Option<Op>,
}

impl Slot {
    /// The RCPT that uses it: counted already.
    pub(crate) fn use_it(mut self) {
        self.op = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(Op::Try { key, limit, per }) = self.op.take() {
            self.cluster.pending.push(Op::Untake { key, limit, per });
        }
    }
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
        self.limit_reserving(ip, wants, None, &[], seen).await.0
    }

    /// [`Core::limit`], and in a cluster, when `wants` are allowed, one `reserve`
    /// event counted in the same call if the client has one left (a [`Slot`]: MAIL
    /// counts the first recipient with the message, so that its RCPT needs no call),
    /// and the values of `reads` read in the same round trip when a call is made
    /// ([`crate::cluster::Cluster::limits_reading`]).
    pub(crate) async fn limit_reserving(
        &self,
        ip: IpAddr,
        wants: &[Want<'_>],
        reserve: Option<Kind>,
        reads: &[String],
        seen: &mut Seen,
    ) -> (Limited, Option<Slot>, Option<Reads>) {
        let Some(cluster) = &self.cluster else {
            return (self.limit_here(ip, wants), None, None);
        };
        let mut ops = self.ops(cluster, ip, wants);
        if let Some(kind) = reserve {
            ops.extend(
                self.ops(cluster, ip, &[Want::Take(kind)])
                    .into_iter()
                    .map(|(op, kind)| match op {
                        Op::Take { key, limit, per } => (Op::Try { key, limit, per }, kind),
                        other => (other, kind),
                    }),
            );
        }
        if ops.is_empty() && reads.is_empty() {
            return (Limited::Allowed, None, None);
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
                    return (Limited::Refused, None, None);
                }
                let slot = ops
                    .iter()
                    .zip(&answer.counted)
                    .find(|(op, counted)| matches!(op, Op::Try { .. }) && **counted)
                    .map(|(op, _)| Slot {
                        cluster: cluster.clone(),
                        op: Some(op.clone()),
                    });
                (Limited::Allowed, slot, read)
            }
            // only reads (no limit asked): what needed them has its own fallback
            Err(_) if ops.is_empty() => (Limited::Allowed, None, None),
            Err(_) => match cluster.settings().fallback {
                Fallback::Local => {
                    let limited = self.limit_here(ip, wants);
                    seen.local(&self.rate, ip);
                    (limited, None, None)
                }
                Fallback::Tempfail => (Limited::Unavailable, None, None),
            },
        }
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
    /// of every other limited kind when the policy has hooks, all in one call. `Ok(None)`: admitted, no lease
    /// (no cluster, or Redis did not answer and the fallback is local).
    pub(crate) async fn admit(
        &self,
        ip: IpAddr,
        per_client: usize,
        session: u64,
        seen: &mut Seen,
    ) -> Result<Option<Lease>, Refusal> {
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
        let (mut ops, mut kinds): (Vec<Op>, Vec<Option<Kind>>) =
            self.ops(cluster, ip, &wants).into_iter().unzip();
        // the other kinds are only read: they refuse nothing here
        for op in &mut ops {
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
        let at = usize::from(matches!(kinds.first(), Some(Some(Kind::Connections))));
        ops.insert(
            at,
            Op::Lease {
                key: lease_key.clone(),
                limit: u32::try_from(per_client).unwrap_or(u32::MAX),
                ttl: cluster.settings().lease,
                member: member.clone(),
            },
        );
        kinds.insert(at, None);
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
                Ok(Some(Lease {
                    cluster: cluster.clone(),
                    key: lease_key,
                    member,
                }))
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

    fn admit_here(&self, ip: IpAddr) -> Result<Option<Lease>, Refusal> {
        match self.limit_here(ip, &[Want::Take(Kind::Connections)]) {
            Limited::Allowed => Ok(None),
            _ => Err(Refusal::Rate),
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
