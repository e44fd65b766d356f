//! The queue manager: which message is tried when, and what each attempt does.
//!
//! One task owns the schedule (a due time per message, in a `BTreeSet`). When a message
//! is due it runs one *attempt* as its own task:
//!
//! 1. every recipient that is due (queued, or deferred with its retry time reached;
//!    all pending ones on `flush`) is expanded through aliases and routed by the route
//!    stage of the policy current at that moment;
//! 2. recipients that share a route are sent together, in one transaction per host
//!    ([`Outbound::send`]); routes run in parallel;
//! 3. each outcome is logged in Postfix's form and recorded durably
//!    ([`Spool::set_status`]); permanent failures are returned to the sender in one
//!    DSN; a message whose recipients are all final is removed.
//!
//! A deferred recipient is retried after `backoff-min`, doubling per attempt up to
//! `backoff-max`; past `lifetime` it bounces.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::client::Envelope as ClientEnvelope;
use super::delays::{self, Delays, Timing};
use super::dsn;
use super::hops::{Outbound, Outcome};
use super::maildir;
use crate::cluster::filter_loops::FilterLoops;
use crate::config::route::{DkimSign, RouteOptions, Transport};
use crate::policy::{Pipeline, Route, RouteInput, RoutedOutcome, TlsInfo};
use crate::queue::{Envelope, MessageRecord, QueueId, QueuedMessage, RcptState, RcptStatus, Spool};

/// What the rest of the daemon tells the scheduler.
#[derive(Debug)]
enum Event {
    /// A message was just queued.
    Queued(QueueId),
    /// Try these now, ignoring backoff; all queued messages when empty.
    Flush(Vec<QueueId>),
    /// Stop scheduling this message (deleted or held).
    Forget(QueueId),
    /// `mtactl queue evacuate`: from now on every attempt goes to this transport
    /// (another node), and every message is attempted now.
    Evacuate(Transport),
}

/// The way to reach the scheduler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    events: mpsc::UnboundedSender<Event>,
}

impl SchedulerHandle {
    /// A message was queued: attempt it right away.
    pub fn queued(&self, id: QueueId) {
        let _ = self.events.send(Event::Queued(id));
    }

    /// Attempt these messages now (all when `ids` is empty), whatever their backoff.
    pub fn flush(&self, ids: &[QueueId]) {
        let _ = self.events.send(Event::Flush(ids.to_vec()));
    }

    /// Drop a message from the schedule; an attempt already running finishes.
    pub fn forget(&self, id: QueueId) {
        let _ = self.events.send(Event::Forget(id));
    }

    /// Hand every message over to `to` (another node), until the daemon stops: each
    /// attempt sends the queued envelope there instead of routing it, and every
    /// message not on hold is attempted now ([`evacuate_and_send`]).
    pub fn evacuate(&self, to: Transport) {
        let _ = self.events.send(Event::Evacuate(to));
    }
}

/// What every attempt needs.
struct Shared {
    spool: Spool,
    policy: Arc<ArcSwap<Pipeline>>,
    /// The delivery settings and connections; a reload puts in a new one.
    outbound: Arc<ArcSwap<Outbound>>,
    hostname: String,
    handle: SchedulerHandle,
    /// Messages inside a content filter, to notice one coming back.
    filter_loops: Arc<FilterLoops>,
    /// `mtactl queue evacuate`: where every attempt goes instead of its route.
    evacuation: Mutex<Option<Transport>>,
}

pub struct Scheduler {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    fn outbound(&self) -> Arc<Outbound> {
        self.outbound.load_full()
    }
}

impl Scheduler {
    pub fn new(
        spool: Spool,
        policy: Arc<ArcSwap<Pipeline>>,
        outbound: Arc<ArcSwap<Outbound>>,
        hostname: String,
        filter_loops: Arc<FilterLoops>,
    ) -> (Scheduler, SchedulerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = SchedulerHandle { events: tx };
        let shared = Arc::new(Shared {
            spool,
            policy,
            outbound,
            hostname,
            handle: handle.clone(),
            filter_loops,
            evacuation: Mutex::new(None),
        });
        (Scheduler { shared, events: rx }, handle.clone())
    }

    /// Runs until `shutdown` turns true; then lets running attempts finish for up to
    /// `grace` and closes idle connections.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let mut plan = Plan::default();
        // Deliver only when flushed.
        let queue_only = || self.shared.outbound().settings().queue_only;
        for msg in self.shared.spool.list() {
            for (i, s) in msg.rcpt_status.iter().enumerate() {
                if s.in_flight() {
                    warn!(
                        queue_id = %msg.id,
                        to = %msg.envelope.recipients.get(i).map_or("", String::as_str),
                        "delivery was under way when mtad stopped; if the next hop \
                         had accepted it, it gets a second copy"
                    );
                }
            }
            if let Some(t) = next_due(&msg)
                && !queue_only()
            {
                plan.schedule(msg.id, t, false);
            }
        }
        info!(messages = plan.len(), "scheduler started");
        let mut tasks: JoinSet<(QueueId, Option<u64>)> = JoinSet::new();
        // which message each attempt is, for one whose task fails (a panic)
        let mut attempts: HashMap<tokio::task::Id, QueueId> = HashMap::new();
        loop {
            let now = now_ms();
            // messages attempted at once
            let parallel = self.shared.outbound().settings().connections.max(1);
            while tasks.len() < parallel {
                let Some((id, force)) = plan.pop_due(now) else {
                    break;
                };
                let shared = self.shared.clone();
                // boxed: the attempt's future is about 16 KB, which tokio would
                // otherwise copy on every move of the task (spawn, completion)
                let task = tasks.spawn(Box::pin(
                    async move { (id, attempt(&shared, id, force).await) },
                ));
                attempts.insert(task.id(), id);
            }
            let wait = plan
                .next_time()
                .map_or(1000, |t| t.saturating_sub(now).clamp(1, 1000));
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::Queued(id)) if !queue_only() => plan.schedule(id, now, false),
                    Some(Event::Queued(_)) => {}
                    Some(Event::Flush(ids)) => {
                        let ids = if ids.is_empty() {
                            self.shared.spool.list().into_iter().filter(|m| !m.envelope.held).map(|m| m.id).collect()
                        } else {
                            ids
                        };
                        for id in ids {
                            plan.schedule(id, now, true);
                        }
                    }
                    Some(Event::Forget(id)) => plan.forget(id),
                    Some(Event::Evacuate(to)) => {
                        info!(to = %to, "evacuating the queue");
                        *self.shared.evacuation.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
                        for m in self.shared.spool.list().into_iter().filter(|m| !m.envelope.held) {
                            plan.schedule(m.id, now, true);
                        }
                    }
                    None => break,
                },
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => match done {
                    Ok((task, (id, next))) => {
                        attempts.remove(&task);
                        plan.finished(id, next.filter(|_| !queue_only()));
                    }
                    // the message is not left "running" for good: it is tried again
                    // after the shortest backoff
                    Err(e) => match attempts.remove(&e.id()) {
                        Some(id) => {
                            error!(queue_id = %id, error = %e, "delivery attempt task failed; retrying later");
                            let backoff = self.shared.outbound().settings().backoff_min;
                            let next = now + backoff.as_millis() as u64;
                            plan.finished(id, Some(next).filter(|_| !queue_only()));
                        }
                        None => error!(error = %e, "delivery attempt task failed"),
                    },
                },
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    self.shared.outbound().close_idle();
                }
                _ = shutdown.changed() => break,
            }
        }
        if !tasks.is_empty() {
            info!(
                attempts = tasks.len(),
                "waiting for delivery attempts to finish"
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(grace, drain).await.is_err() {
                warn!("shutdown timeout: abandoning the remaining delivery attempts");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        self.shared.outbound().close_all().await;
    }
}

/// The schedule: due time per message, plus what is running.
#[derive(Default)]
struct Plan {
    due: BTreeSet<(u64, QueueId)>,
    when: HashMap<QueueId, u64>,
    forced: HashSet<QueueId>,
    running: HashSet<QueueId>,
    /// Scheduled again while running: attempted once more right after.
    again: HashMap<QueueId, bool>,
}

impl Plan {
    fn len(&self) -> usize {
        self.when.len() + self.running.len()
    }

    fn schedule(&mut self, id: QueueId, at: u64, force: bool) {
        if self.running.contains(&id) {
            let f = self.again.entry(id).or_insert(false);
            *f |= force;
            return;
        }
        if force {
            self.forced.insert(id);
        }
        match self.when.get(&id) {
            Some(&t) if t <= at => {}
            Some(&t) => {
                self.due.remove(&(t, id));
                self.due.insert((at, id));
                self.when.insert(id, at);
            }
            None => {
                self.due.insert((at, id));
                self.when.insert(id, at);
            }
        }
    }

    fn pop_due(&mut self, now: u64) -> Option<(QueueId, bool)> {
        let &(t, id) = self.due.first()?;
        if t > now {
            return None;
        }
        self.due.pop_first();
        self.when.remove(&id);
        self.running.insert(id);
        Some((id, self.forced.remove(&id)))
    }

    fn next_time(&self) -> Option<u64> {
        self.due.first().map(|&(t, _)| t)
    }

    fn finished(&mut self, id: QueueId, next: Option<u64>) {
        self.running.remove(&id);
        if let Some(force) = self.again.remove(&id) {
            self.schedule(id, 0, force);
        } else if let Some(t) = next {
            self.schedule(id, t, false);
        }
    }

    fn forget(&mut self, id: QueueId) {
        if let Some(t) = self.when.remove(&id) {
            self.due.remove(&(t, id));
        }
        self.forced.remove(&id);
        self.again.remove(&id);
    }
}

/// When a message is next due: the earliest retry time of its pending recipients.
fn next_due(msg: &QueuedMessage) -> Option<u64> {
    if msg.envelope.held {
        return None;
    }
    msg.rcpt_status
        .iter()
        .filter(|s| s.pending())
        .map(|s| s.next_attempt_ms)
        .min()
}

/// The retry delay after `attempts` failed attempts: `backoff-min` doubling up to
/// `backoff-max`.
fn backoff(settings: &crate::config::Delivery, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    settings
        .backoff_min
        .saturating_mul(1u32 << doublings)
        .min(settings.backoff_max)
}

/// One recipient after alias expansion: which queued recipient it came from.
struct Leg {
    orig: usize,
    rcpt: String,
    outcome: Option<Outcome>,
    /// The transport's kind (`smtp`, `local`, ...), `filter` for a content filter,
    /// `none` when no transport was reached: for `mtad_deliveries_total`.
    transport: &'static str,
    /// The transport call's moments (None: decided without one), for `delays=`.
    timing: Option<Timing>,
}

/// One attempt at one message; returns when it is due next (None: done, held or gone).
async fn attempt(shared: &Arc<Shared>, id: QueueId, force: bool) -> Option<u64> {
    let spool = &shared.spool;
    let msg = spool.get(id)?;
    if msg.envelope.held {
        return None;
    }
    let now = now_ms();
    let picked = std::time::Instant::now();
    let outbound = shared.outbound();
    let settings = outbound.settings();
    let due: Vec<usize> = (0..msg.rcpt_status.len())
        .filter(|&i| {
            let s = &msg.rcpt_status[i];
            s.pending() && (force || s.next_attempt_ms <= now)
        })
        .collect();
    if due.is_empty() {
        return match next_due(&msg) {
            Some(t) => Some(t),
            None => {
                remove(spool, id).await;
                None
            }
        };
    }
    let body = if let Some(body) = spool.fresh_body(id) {
        body
    } else {
        let spool = spool.clone();
        match tokio::task::spawn_blocking(move || spool.read_body(id)).await {
            Ok(Ok(body)) => Bytes::from(body),
            Ok(Err(e)) => {
                error!(queue_id = %id, error = %e, "cannot read the message from the spool; retrying later");
                return Some(now + settings.backoff_min.as_millis() as u64);
            }
            Err(e) => {
                error!(queue_id = %id, error = %e, "spool read task failed");
                return Some(now + settings.backoff_min.as_millis() as u64);
            }
        }
    };

    let mut legs = Vec::new();
    let expired = now.saturating_sub(msg.arrival_ms) >= settings.lifetime.as_millis() as u64;
    if expired {
        for &i in &due {
            let last = &msg.rcpt_status[i].detail;
            let detail = format!(
                "message expired after {} in the queue{}",
                humantime::format_duration(Duration::from_secs(settings.lifetime.as_secs())),
                if last.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last}")
                }
            );
            legs.push(Leg {
                orig: i,
                rcpt: msg.envelope.recipients[i].clone(),
                outcome: Some(Outcome::bounced("none", [4, 4, 7], detail)),
                transport: "none",
                timing: None,
            });
        }
    } else {
        // Recorded before anything is sent: if mtad dies before the outcome is
        // recorded, the next start says so (a 250 may have come in: a possible duplicate).
        let marks = due
            .iter()
            .map(|&i| (i as u32, msg.rcpt_status[i].attempt_started(now)))
            .collect();
        if let Err(e) = spool.set_statuses(id, marks).await {
            error!(queue_id = %id, error = %e, "cannot record the attempt; retrying later");
            return Some(now + settings.backoff_min.as_millis() as u64);
        }
        let evacuation = shared
            .evacuation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (evacuation, msg.envelope.filter.as_deref()) {
            (Some(to), _) => evacuate_and_send(shared, &msg, &due, &body, &mut legs, &to).await,
            (None, Some(name)) => filter_and_send(shared, &msg, &due, &body, &mut legs, name).await,
            (None, None) => route_and_send(shared, &msg, &due, &body, &mut legs).await,
        }
    }

    finish(shared, &msg, &due, legs, &body, (now, picked)).await
}

/// What the route stage sees of a queued message (`tls`: its `tls` record, read with
/// [`TlsInfo::from_record`]): the scheduler routes with it at every attempt, and
/// `mtactl test-policy` reports the routes of the message its dry run queued with it.
pub fn route_input<'a>(env: &'a Envelope, tls: Option<&'a TlsInfo>) -> RouteInput<'a> {
    RouteInput {
        client_ip: env.client_ip,
        listener: &env.listener,
        helo: &env.helo,
        tls,
        auth_user: env.auth_user.as_deref(),
        sender: &env.sender,
        recipients: &env.recipients,
        expanded: env.expanded,
        queue_id: None,
    }
}

/// Expands and routes the due recipients, then sends each route's share.
async fn route_and_send(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    due: &[usize],
    body: &Bytes,
    legs: &mut Vec<Leg>,
) {
    let env = &msg.envelope;
    let policy = shared.policy.load_full();
    // (transport, options) -> legs
    let mut routes: Vec<(Transport, RouteOptions, Vec<usize>)> = Vec::new();
    let tls = env.tls.as_deref().and_then(TlsInfo::from_record);
    let queue_id = msg.id.to_string();
    let input = RouteInput {
        queue_id: Some(&queue_id),
        ..route_input(env, tls.as_ref())
    };
    for routed in policy.route_all(&input, due, true) {
        let (i, f) = (routed.index, routed.rcpt);
        match routed.outcome {
            RoutedOutcome::ExpandFailed(e) => legs.push(Leg {
                orig: i,
                rcpt: f,
                outcome: Some(Outcome::deferred(
                    "none",
                    [4, 3, 0],
                    format!("alias expansion failed: {e}"),
                )),
                transport: "none",
                timing: None,
            }),
            RoutedOutcome::Duplicate => {
                info!(queue_id = %msg.id, rcpt = %f, "duplicate recipient: delivered once");
                legs.push(Leg {
                    orig: i,
                    rcpt: f,
                    outcome: Some(Outcome::Sent {
                        relay: "none".into(),
                        reply: "duplicate of another recipient of this message, delivered once"
                            .into(),
                        tls: None,
                    }),
                    transport: "none",
                    timing: None,
                });
            }
            RoutedOutcome::Route(Route::Refused { reply, .. }, _) => {
                let detail = reply.to_string();
                let outcome = if reply.code >= 500 {
                    Outcome::bounced("none", reply.enhanced, detail)
                } else {
                    Outcome::deferred("none", reply.enhanced, detail)
                };
                legs.push(Leg {
                    orig: i,
                    rcpt: f,
                    outcome: Some(outcome),
                    transport: "none",
                    timing: None,
                });
            }
            RoutedOutcome::Route(
                Route::To {
                    transport, options, ..
                },
                _,
            ) => {
                let leg = legs.len();
                legs.push(Leg {
                    orig: i,
                    rcpt: f,
                    outcome: None,
                    transport: transport.kind(),
                    timing: None,
                });
                match routes
                    .iter_mut()
                    .find(|(t, o, _)| *t == transport && *o == options)
                {
                    Some((_, _, members)) => members.push(leg),
                    None => routes.push((transport, options, vec![leg])),
                }
            }
        }
    }

    // Signed once per attempt (and per `dkim=`/`dkim-sign=` a route has), after every
    // content change (they were all made before the message was queued), and only
    // what leaves over SMTP; which mail is signed: `Pipeline::dkim_plan`.
    // (the route's signing options, the signed message or None when nobody signs)
    type SignKey = (Option<String>, Option<DkimSign>);
    let key = |o: &RouteOptions| -> SignKey { (o.dkim.clone(), o.dkim_sign) };
    let mut signed: Vec<(SignKey, Option<Body>)> = Vec::new();
    for (t, o, _) in &routes {
        if matches!(t, Transport::Smtp(_)) && !signed.iter().any(|(k, _)| *k == key(o)) {
            let s = dkim_signed(&policy, msg.id, env, body, o).await;
            signed.push((key(o), s));
        }
    }
    let mut sends = JoinSet::new();
    let per_transaction = shared.outbound().settings().recipients.max(1);
    for (transport, options, members) in routes {
        let mine = signed
            .iter()
            .find(|(k, _)| *k == key(&options))
            .and_then(|(_, s)| s.as_ref());
        let body = match (&transport, mine) {
            (Transport::Smtp(_), Some(signed)) => signed,
            _ => body,
        };
        for members in members.chunks(per_transaction) {
            let members = members.to_vec();
            let rcpts: Vec<String> = members.iter().map(|&l| legs[l].rcpt.clone()).collect();
            let (shared, body, env) = (shared.clone(), body.clone(), env.clone());
            let (transport, options) = (transport.clone(), options.clone());
            // boxed, as the attempts are (about 15 KB)
            sends.spawn(Box::pin(async move {
                let (outcomes, timing) = delays::timed(send_route(
                    &shared,
                    &transport,
                    &options,
                    &env,
                    &rcpts,
                    &body,
                    &[],
                ))
                .await;
                (members, outcomes, timing)
            }));
        }
    }
    while let Some(done) = sends.join_next().await {
        match done {
            Ok((members, outcomes, timing)) => {
                let mut origs: Vec<usize> = members.iter().map(|&l| legs[l].orig).collect();
                for (l, o) in members.into_iter().zip(outcomes) {
                    legs[l].outcome = Some(o);
                    legs[l].timing = Some(timing);
                }
                // Delivered is recorded as soon as it is known, not when the slowest
                // route of the message is done: a crash meanwhile must not send it twice.
                origs.dedup();
                let delivered: Vec<(u32, RcptStatus)> = origs
                    .into_iter()
                    .filter(|&i| {
                        let mut mine = legs.iter().filter(|l| l.orig == i).peekable();
                        mine.peek().is_some()
                            && mine.all(|l| matches!(l.outcome, Some(Outcome::Sent { .. })))
                    })
                    .map(|i| {
                        let detail = legs
                            .iter()
                            .find(|l| l.orig == i)
                            .and_then(|l| l.outcome.as_ref())
                            .map_or_else(String::new, |o| o.detail().to_owned());
                        let status = RcptStatus {
                            state: RcptState::Delivered,
                            at_ms: now_ms(),
                            attempts: msg.rcpt_status[i].attempts.saturating_add(1),
                            next_attempt_ms: 0,
                            detail,
                        };
                        (i as u32, status)
                    })
                    .collect();
                if !delivered.is_empty()
                    && !sends.is_empty()
                    && let Err(e) = shared.spool.set_statuses(msg.id, delivered).await
                {
                    error!(queue_id = %msg.id, error = %e, "cannot record a delivery; it may be repeated");
                }
            }
            Err(e) => error!(queue_id = %msg.id, error = %e, "delivery task failed"),
        }
    }
}

/// `mtactl queue evacuate`: the due recipients go to `to` (another node) as queued,
/// unrouted and unexpanded (the peer routes them), the message as stored (the peer
/// signs and filters as it would any message it receives). A recipient is done here
/// only once the peer answered 250 for it (then [`finish`] records it, and removes the
/// message when every recipient is); a refusal there, even a 5xx, is a deferral: the
/// message stays, and is tried again with the backoff.
async fn evacuate_and_send(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    due: &[usize],
    body: &Bytes,
    legs: &mut Vec<Leg>,
    to: &Transport,
) {
    let env = &msg.envelope;
    let per_transaction = shared.outbound().settings().recipients.max(1);
    for chunk in due.chunks(per_transaction) {
        let rcpts: Vec<String> = chunk
            .iter()
            .filter_map(|&i| env.recipients.get(i).cloned())
            .collect();
        let (outcomes, timing) = delays::timed(send_route(
            shared,
            to,
            &RouteOptions::default(),
            env,
            &rcpts,
            body,
            &[],
        ))
        .await;
        for ((&i, rcpt), outcome) in chunk.iter().zip(rcpts).zip(outcomes) {
            let outcome = match outcome {
                Outcome::Bounced {
                    relay,
                    enhanced,
                    detail,
                } => Outcome::deferred(
                    &relay,
                    [4, enhanced[1], enhanced[2]],
                    format!("evacuation: the peer refused it, kept here: {detail}"),
                ),
                other => other,
            };
            legs.push(Leg {
                orig: i,
                rcpt,
                outcome: Some(outcome),
                transport: to.kind(),
                timing: Some(timing),
            });
        }
    }
}

/// A message's bytes, shared by the transactions that send it.
type Body = Bytes;

/// The message with its DKIM signatures in front ([`crate::mailauth::dkim::sign`]), or None
/// when it is not signed on a route with these options ([`Pipeline::dkim_plan`]: mail
/// that originates with us, by the `dkim` node of its From domain, else its sender's,
/// or the one the route names). Hashing and signing run off the async threads.
async fn dkim_signed(
    policy: &Arc<Pipeline>,
    id: QueueId,
    env: &Envelope,
    body: &Bytes,
    options: &RouteOptions,
) -> Option<Bytes> {
    if policy.dkim_signers().is_empty() {
        return None;
    }
    let (policy, body, sender) = (policy.clone(), body.clone(), env.sender.clone());
    let (ours, options) = (!env.external, options.clone());
    let task = tokio::task::spawn_blocking(move || {
        let plan = policy.message_dkim_plan(ours, &body, &sender, &options);
        if let Some(why) = &plan.unsigned {
            debug!(queue_id = %id, reason = %why, "not DKIM-signed");
            return None;
        }
        let (signed, by) = crate::mailauth::dkim::sign(&plan.signers, &body);
        for s in by {
            info!(queue_id = %id, d = %s.domain, s = %s.selector, a = %s.key.algorithm(), "DKIM-Signature added");
        }
        Some(Bytes::from(signed))
    });
    match task.await {
        Ok(signed) => signed,
        Err(e) => {
            error!(queue_id = %id, error = %e, "DKIM signing task failed; sending unsigned");
            None
        }
    }
}

/// A message that must go through its content filter first: every due recipient, as
/// received (aliases are expanded on the way back), in one transaction to the filter,
/// with XFORWARD. The filter's 250 ends our part: it injects the message again. A
/// filter that is down or answers 4xx keeps the message queued, or with
/// `on-failure="bypass"` lets it be delivered unfiltered; a 5xx bounces.
async fn filter_and_send(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    due: &[usize],
    body: &Bytes,
    legs: &mut Vec<Leg>,
    name: &str,
) {
    let env = &msg.envelope;
    let policy = shared.policy.load_full();
    let Some(filter) = policy.content_filter(name).cloned() else {
        error!(queue_id = %msg.id, filter = %name, "content filter is not configured (any more); the message stays queued");
        for &i in due {
            legs.push(Leg {
                orig: i,
                rcpt: env.recipients[i].clone(),
                outcome: Some(Outcome::deferred(
                    "none",
                    [4, 3, 5],
                    format!("content filter {name} is not configured"),
                )),
                transport: "filter",
                timing: None,
            });
        }
        return;
    };
    let rcpts: Vec<String> = due.iter().map(|&i| env.recipients[i].clone()).collect();
    let xforward = xforward_attributes(msg, body);
    // Recorded before sending: a filter injects the message again before it answers.
    let (_, body_start) = crate::policy::parse_headers(body);
    let digest = FilterLoops::digest(
        &env.sender,
        &rcpts,
        body.get(body_start..).unwrap_or_default(),
    );
    shared
        .filter_loops
        .entered(name, digest, env.external)
        .await;
    let (outcomes, timing) = delays::timed(send_route(
        shared,
        &filter.transport,
        &RouteOptions::default(),
        env,
        &rcpts,
        body,
        &xforward,
    ))
    .await;
    if !outcomes.iter().all(|o| matches!(o, Outcome::Sent { .. })) {
        // not (wholly) taken: nothing of it comes back as this digest
        shared.filter_loops.not_taken(digest).await;
    }
    let mut bypass = Vec::new();
    for ((&i, rcpt), outcome) in due.iter().zip(rcpts).zip(outcomes) {
        if filter.bypass && matches!(outcome, Outcome::Deferred { .. }) {
            warn!(queue_id = %msg.id, filter = %name, to = %crate::logsafe::esc(rcpt), detail = %crate::logsafe::esc(outcome.detail()), "content filter unavailable; delivering unfiltered (on-failure=bypass)");
            bypass.push(i);
            continue;
        }
        legs.push(Leg {
            orig: i,
            rcpt,
            outcome: Some(outcome),
            transport: "filter",
            timing: Some(timing),
        });
    }
    if !bypass.is_empty() {
        route_and_send(shared, msg, &bypass, body, legs).await;
    }
}

/// What XFORWARD tells a content filter about the original client: its address and
/// HELO name, the protocol (from our own Received: header on top of the message), the
/// queue id. The client's name is not looked up.
fn xforward_attributes(msg: &QueuedMessage, body: &[u8]) -> Vec<(&'static str, String)> {
    let env = &msg.envelope;
    let mut attrs = vec![("NAME", "[UNAVAILABLE]".to_owned())];
    match env.client_ip {
        Some(ip) => {
            attrs.push(("ADDR", ip.to_string()));
            attrs.push(("SOURCE", "REMOTE".to_owned()));
        }
        None => {
            attrs.push(("ADDR", "[UNAVAILABLE]".to_owned()));
            attrs.push(("SOURCE", "LOCAL".to_owned()));
        }
    }
    if let Some(proto) = received_protocol(body) {
        attrs.push(("PROTO", proto));
    }
    attrs.push((
        "HELO",
        if env.helo.is_empty() {
            "[UNAVAILABLE]".to_owned()
        } else {
            env.helo.clone()
        },
    ));
    attrs.push(("IDENT", msg.id.to_string()));
    attrs
}

/// `ESMTP` or `SMTP`, from `... with ESMTP id ...` in the first (our) Received: header.
fn received_protocol(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(1024)];
    let text = std::str::from_utf8(head).ok().or_else(|| {
        let end = std::str::from_utf8(head).err()?.valid_up_to();
        std::str::from_utf8(&head[..end]).ok()
    })?;
    if !text.starts_with("Received:") {
        return None;
    }
    let after = &text[text.find(" with ")? + 6..];
    let proto: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if proto.contains("SMTP") {
        Some(
            if proto.starts_with("ESMTP") {
                "ESMTP"
            } else {
                "SMTP"
            }
            .to_owned(),
        )
    } else {
        None
    }
}

/// One route's recipients: the network transports through [`Outbound::send`], the
/// others here.
async fn send_route(
    shared: &Shared,
    transport: &Transport,
    options: &RouteOptions,
    env: &Envelope,
    rcpts: &[String],
    body: &Bytes,
    xforward: &[(&'static str, String)],
) -> Vec<Outcome> {
    match transport {
        Transport::Discard(text) => {
            let reply = if text.is_empty() {
                "discarded".to_owned()
            } else {
                format!("discarded: {text}")
            };
            rcpts
                .iter()
                .map(|_| Outcome::Sent {
                    relay: "none".into(),
                    reply: reply.clone(),
                    tls: None,
                })
                .collect()
        }
        Transport::Error { enhanced, text } => rcpts
            .iter()
            .map(|_| {
                if enhanced[0] == 5 {
                    Outcome::bounced("none", *enhanced, text.clone())
                } else {
                    Outcome::deferred("none", *enhanced, text.clone())
                }
            })
            .collect(),
        Transport::Local => {
            let mut out = Vec::with_capacity(rcpts.len());
            for rcpt in rcpts {
                let local_part = rcpt.rsplit_once('@').map_or(rcpt.as_str(), |(l, _)| l);
                let mailbox = maildir::mailbox_name(local_part).map(PathBuf::from);
                out.push(maildir_delivery(shared, env, rcpt, mailbox, body, "local").await);
            }
            out
        }
        Transport::Virtual(path) => {
            let mut out = Vec::with_capacity(rcpts.len());
            for rcpt in rcpts {
                let mailbox = maildir::mailbox_path(path);
                out.push(maildir_delivery(shared, env, rcpt, mailbox, body, "virtual").await);
            }
            out
        }
        Transport::Smtp(_) | Transport::Lmtp(_) => {
            let envelope = ClientEnvelope {
                sender: &env.sender,
                recipients: rcpts,
                body_8bit: env.body_8bit,
                smtputf8: env.smtputf8,
                size: body.len(),
                xforward,
            };
            // a content filter (the only sender with XFORWARD) is no mail loop
            if env.listener == super::tls_rpt::report::LISTENER && xforward.is_empty() {
                shared
                    .outbound()
                    .send_tls_report(transport, options, &envelope, body)
                    .await
            } else if xforward.is_empty() {
                shared
                    .outbound()
                    .send(transport, options, &envelope, body)
                    .await
            } else {
                shared
                    .outbound()
                    .send_to_filter(transport, &envelope, body)
                    .await
            }
        }
    }
}

/// Maildir delivery of one recipient into `{local-base}/{mailbox}` (`relay` names the
/// transport in the log).
async fn maildir_delivery(
    shared: &Shared,
    env: &Envelope,
    rcpt: &str,
    mailbox: Result<PathBuf, maildir::MaildirError>,
    body: &Bytes,
    relay: &'static str,
) -> Outcome {
    let mailbox = match mailbox {
        Ok(m) => m,
        Err(e) => return Outcome::bounced(relay, e.enhanced_code(), e.to_string()),
    };
    let base = shared.outbound().settings().local_base.clone();
    let body = body.clone();
    let (sender, rcpt_owned, host) = (env.sender.clone(), rcpt.to_owned(), shared.hostname.clone());
    let done = tokio::task::spawn_blocking(move || {
        maildir::deliver(&base, &mailbox, &body, &sender, &rcpt_owned, &host)
    })
    .await;
    match done {
        Ok(Ok(path)) => Outcome::Sent {
            relay: relay.into(),
            reply: format!("delivered to maildir {}", path.display()),
            tls: None,
        },
        Ok(Err(e)) if e.is_permanent() => Outcome::bounced(relay, e.enhanced_code(), e.to_string()),
        Ok(Err(e)) => Outcome::deferred(relay, e.enhanced_code(), e.to_string()),
        Err(e) => Outcome::deferred(
            relay,
            [4, 3, 0],
            format!("{relay} delivery task failed: {e}"),
        ),
    }
}

/// Logs and records the outcomes, bounces what failed for good, removes the message
/// when nothing is left; returns when it is due next.
async fn finish(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    due: &[usize],
    legs: Vec<Leg>,
    body: &[u8],
    (now, picked): (u64, std::time::Instant),
) -> Option<u64> {
    let outbound = shared.outbound();
    let settings = outbound.settings();
    let env = &msg.envelope;
    let delay = Duration::from_millis(now_ms().saturating_sub(msg.arrival_ms));
    let queued_for = Duration::from_millis(now.saturating_sub(msg.arrival_ms));
    let decided = std::time::Instant::now();
    let mut bounced: Vec<dsn::DsnRecipient> = Vec::new();
    let mut statuses = msg.rcpt_status.clone();
    for &i in due {
        let mine: Vec<&Leg> = legs.iter().filter(|l| l.orig == i).collect();
        let orig = &env.recipients[i];
        let attempts = msg.rcpt_status[i].attempts.saturating_add(1);
        let mut state = RcptState::Delivered;
        let mut detail = String::new();
        for leg in &mine {
            let outcome = leg.outcome.clone().unwrap_or_else(|| {
                Outcome::deferred("none", [4, 3, 0], "no delivery was attempted")
            });
            let metrics = crate::metrics::get();
            metrics.delivery(outcome.status(), leg.transport);
            match &outcome {
                Outcome::Sent { .. } if leg.transport != "none" => {
                    metrics.delivered(leg.transport, body.len() as u64);
                }
                Outcome::Deferred { .. } => {
                    metrics.deferral(leg.rcpt.rsplit_once('@').map_or("", |(_, d)| d));
                }
                _ => {}
            }
            let connects = matches!(leg.transport, "smtp" | "lmtp" | "filter");
            let timing = leg.timing.unwrap_or_else(|| Timing::none(decided));
            let delays = Delays::of(queued_for, picked, timing, connects);
            log_outcome(
                msg.id,
                &leg.rcpt,
                orig,
                &outcome,
                (delay, delays),
                leg.transport,
            );
            match &outcome {
                Outcome::Sent { .. } => {}
                Outcome::Deferred { .. } => {
                    state = RcptState::Deferred;
                    detail = outcome.detail().to_owned();
                }
                Outcome::Bounced {
                    relay,
                    enhanced,
                    detail: d,
                } => {
                    if state == RcptState::Delivered {
                        state = RcptState::Bounced;
                        detail = d.clone();
                    }
                    bounced.push(dsn::DsnRecipient {
                        original: orig.clone(),
                        final_rcpt: leg.rcpt.clone(),
                        status: *enhanced,
                        diagnostic: Some(d.clone()),
                        remote_mta: (relay != "none").then(|| relay.clone()),
                        last_attempt_ms: Some(now),
                        will_retry_until_ms: None,
                    });
                }
            }
            if state == RcptState::Delivered {
                detail = outcome.detail().to_owned();
            }
        }
        if mine.is_empty() {
            state = RcptState::Delivered;
            detail = "no recipients after alias expansion".into();
        }
        // An alias that expanded to several addresses, some delivered and some not:
        // the rest continue as a message of their own, so a retry never repeats the
        // delivered ones.
        let sent = mine
            .iter()
            .any(|l| matches!(l.outcome, Some(Outcome::Sent { .. })));
        if state == RcptState::Deferred && sent {
            let rest: Vec<String> = mine
                .iter()
                .filter(|l| matches!(l.outcome, Some(Outcome::Deferred { .. }) | None))
                .map(|l| l.rcpt.clone())
                .collect();
            let retry = RcptStatus {
                state: RcptState::Deferred,
                at_ms: now,
                attempts,
                next_attempt_ms: now + backoff(settings, attempts).as_millis() as u64,
                detail: detail.clone(),
            };
            if let Some(nid) = split_off(shared, msg, rest, retry, body).await {
                state = RcptState::Delivered;
                detail = format!("partly delivered; the rest continues as {nid}");
            }
        }
        let next = match state {
            RcptState::Deferred => now + backoff(settings, attempts).as_millis() as u64,
            _ => 0,
        };
        statuses[i] = RcptStatus {
            state,
            at_ms: now,
            attempts,
            next_attempt_ms: next,
            detail,
        };
    }

    if !bounced.is_empty() {
        bounce(shared, msg, dsn::DsnKind::Failure, &bounced, body, now).await;
    }
    let all_final = statuses.iter().all(|s| !s.pending());
    if all_final {
        remove(&shared.spool, msg.id).await;
        return None;
    }
    for &i in due {
        if let Err(e) = shared
            .spool
            .set_status(msg.id, i as u32, statuses[i].clone())
            .await
        {
            error!(queue_id = %msg.id, error = %e, "cannot record a delivery status; the recipient may be tried again");
        }
    }
    delay_warning(shared, msg, &statuses, body, now).await;
    statuses
        .iter()
        .filter(|s| s.pending())
        .map(|s| s.next_attempt_ms)
        .min()
}

/// Queues `rcpts` (final addresses) as a message of their own, with `msg`'s envelope
/// and body; None if it could not be queued.
async fn split_off(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    rcpts: Vec<String>,
    retry: RcptStatus,
    body: &[u8],
) -> Option<QueueId> {
    let count = rcpts.len() as u32;
    let envelope = Envelope {
        recipients: rcpts,
        expanded: true,
        ..msg.envelope.clone()
    };
    let mut record = MessageRecord::new(shared.spool.new_id(), msg.arrival_ms, &envelope);
    record.body_mut().extend_from_slice(body);
    match shared.spool.commit(record).await {
        Ok(nid) => {
            info!(
                "{}: recipients left after alias expansion continue as {nid}",
                msg.id
            );
            let deferred = (0..count).map(|i| (i, retry.clone())).collect();
            if let Err(e) = shared.spool.set_statuses(nid, deferred).await {
                warn!(queue_id = %nid, error = %e, "cannot record the retry time; trying at once");
            }
            shared.handle.queued(nid);
            Some(nid)
        }
        Err(e) => {
            error!(queue_id = %msg.id, error = %e, "cannot queue the recipients left; the alias is retried whole");
            None
        }
    }
}

async fn remove(spool: &Spool, id: QueueId) {
    match spool.remove_delivered(id).await {
        Ok(()) => crate::mail!(crate::maillog::Agent::Qmgr, INFO, "{id}: removed"),
        Err(e) => error!(queue_id = %id, error = %e, "cannot remove a delivered message"),
    }
}

/// Postfix's delivery log line, so pflogsumm and friends read ours, written as the
/// Postfix program that delivers over `transport` (`smtp`, `lmtp`, `local`, ...;
/// `error` for a recipient refused before any transport, `smtp` for a content filter).
fn log_outcome(
    id: QueueId,
    rcpt: &str,
    orig: &str,
    outcome: &Outcome,
    (delay, delays): (Duration, Delays),
    transport: &str,
) {
    use crate::maillog::Agent;
    let status = outcome.status();
    let orig_to = if orig.eq_ignore_ascii_case(rcpt) {
        String::new()
    } else {
        format!(", orig_to=<{}>", crate::policy::echo(orig))
    };
    let [a, b, c] = outcome.dsn();
    // the TLS policy that applied, after the reply (where pflogsumm's pattern, which
    // ends in `status=(\S+)(.*)`, takes it as part of the text)
    let tls = match outcome {
        Outcome::Sent { tls: Some(t), .. } => format!(" tls={t}"),
        _ => String::new(),
    };
    let line = format!(
        "{id}: to=<{}>{orig_to}, relay={}, delay={}, delays={delays}, dsn={a}.{b}.{c}, status={status} ({}){tls}",
        crate::policy::echo(rcpt),
        outcome.relay(),
        delays::Seconds(delay),
        crate::config::sanitize_text(outcome.detail(), 512),
    );
    let agent = match transport {
        "lmtp" => Agent::Lmtp,
        "local" => Agent::Local,
        "virtual" => Agent::Virtual,
        "discard" => Agent::Discard,
        "none" => Agent::Error,
        _ => Agent::Smtp,
    };
    match outcome {
        Outcome::Sent { .. } => crate::mail!(agent, INFO, "{line}"),
        _ => crate::mail!(agent, WARN, "{line}"),
    }
}

/// Sends a DSN about `rcpts` of `msg`: to its sender; for a message from the null
/// sender, to postmaster (a double bounce), unless it is itself a notice to postmaster.
async fn bounce(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    kind: dsn::DsnKind,
    rcpts: &[dsn::DsnRecipient],
    body: &[u8],
    now: u64,
) {
    let env = &msg.envelope;
    let postmaster = format!("postmaster@{}", shared.hostname);
    let to = if env.sender.is_empty() {
        if env
            .recipients
            .iter()
            .all(|r| r.eq_ignore_ascii_case(&postmaster))
        {
            warn!(queue_id = %msg.id, "undeliverable notice to postmaster; dropped");
            return;
        }
        postmaster
    } else {
        env.sender.clone()
    };
    let id_text = msg.id.to_string();
    let text = dsn::build(&dsn::DsnRequest {
        kind,
        reporting_mta: &shared.hostname,
        queue_id: &id_text,
        arrival_ms: msg.arrival_ms,
        to: &to,
        original_sender: &env.sender,
        recipients: rcpts,
        original: body,
        now_ms: now,
    });
    let notice = Envelope {
        sender: String::new(),
        recipients: vec![to.clone()],
        listener: "bounce".into(),
        helo: shared.hostname.clone(),
        client_ip: None,
        auth_user: None,
        body_8bit: text.iter().any(|b| *b >= 0x80),
        smtputf8: false,
        held: false,
        expanded: false,
        filter: None,
        tls: None,
        revision: Some(shared.policy.load().revision().to_owned()),
        // written by us, from MAILER-DAEMON at our hostname: ours, signed as such
        external: false,
    };
    let nid = shared.spool.new_id();
    let mut record = MessageRecord::new(nid, now, &notice);
    record.body_mut().extend_from_slice(&text);
    match shared.spool.commit(record).await {
        Ok(nid) => {
            let what = match kind {
                dsn::DsnKind::Failure => "non-delivery",
                dsn::DsnKind::Delay => "delay",
            };
            crate::mail!(
                crate::maillog::Agent::Bounce,
                INFO,
                "{}: sender {what} notification: {nid}",
                msg.id
            );
            shared.handle.queued(nid);
        }
        Err(e) => error!(queue_id = %msg.id, error = %e, "cannot queue the bounce"),
    }
}

/// Once a message has waited `delay-warning`, tells its sender (never the null sender)
/// that it is still being retried: at the first attempt after that moment, and never
/// again. `msg` is the message as it was before this attempt, so its recipients' times
/// say when it was last attempted; the spool keeps them, so a restart does not warn a
/// second time (Postfix records the warning in the queue file).
async fn delay_warning(
    shared: &Arc<Shared>,
    msg: &QueuedMessage,
    statuses: &[RcptStatus],
    body: &[u8],
    now: u64,
) {
    let outbound = shared.outbound();
    let settings = outbound.settings();
    let Some(after) = settings.delay_warning else {
        return;
    };
    let due_at = msg.arrival_ms.saturating_add(after.as_millis() as u64);
    let last_attempt = msg.rcpt_status.iter().map(|s| s.at_ms).max();
    if msg.envelope.sender.is_empty() || now < due_at || last_attempt.is_some_and(|t| t >= due_at) {
        return;
    }
    let until = msg.arrival_ms + settings.lifetime.as_millis() as u64;
    let rcpts: Vec<dsn::DsnRecipient> = statuses
        .iter()
        .zip(&msg.envelope.recipients)
        .filter(|(s, _)| s.state == RcptState::Deferred)
        .map(|(s, r)| dsn::DsnRecipient {
            original: r.clone(),
            final_rcpt: r.clone(),
            status: [4, 0, 0],
            diagnostic: Some(s.detail.clone()),
            remote_mta: None,
            last_attempt_ms: Some(s.at_ms),
            will_retry_until_ms: Some(until),
        })
        .collect();
    if !rcpts.is_empty() {
        bounce(shared, msg, dsn::DsnKind::Delay, &rcpts, body, now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let settings = crate::config::Delivery::defaults_for(std::path::Path::new("spool"));
        let secs: Vec<u64> = (1..=6).map(|a| backoff(&settings, a).as_secs()).collect();
        assert_eq!(secs, [300, 600, 1200, 2400, 4000, 4000]);
        assert_eq!(backoff(&settings, 100).as_secs(), 4000);
    }

    #[test]
    fn plan_runs_each_message_once_and_again_when_asked() {
        let mut plan = Plan::default();
        let (a, b) = (QueueId(1), QueueId(2));
        plan.schedule(a, 100, false);
        plan.schedule(b, 50, false);
        plan.schedule(a, 10, false); // earlier wins
        assert_eq!(plan.pop_due(5), None);
        assert_eq!(plan.pop_due(60), Some((a, false)));
        assert_eq!(plan.pop_due(60), Some((b, false)));
        assert_eq!(plan.pop_due(1000), None);
        // queued again while running: once more right after
        plan.schedule(a, 0, true);
        plan.finished(a, Some(5000));
        assert_eq!(plan.pop_due(1), Some((a, true)));
        plan.finished(a, None);
        plan.finished(b, Some(70));
        plan.forget(b);
        assert_eq!(plan.pop_due(u64::MAX), None);
    }
}
