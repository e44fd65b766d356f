//! Reloading the policy while the server runs (SIGHUP, `mtactl reload`).
//!
//! The configuration is read and compiled anew — rules, hooks, tables, aliases,
//! content checks — and, only if all of it is valid, swapped in at once. On any error
//! the running policy stays and every error is logged with its file:line:col. A session
//! keeps the policy it started with; queued mail is routed by the new one from its next
//! attempt (the scheduler loads the policy per attempt).
//!
//! The listeners are bound, updated or closed to match (a listener is its address:
//! sessions on a listener that is closed go on to their end), their certificates and
//! users tables read again; `server`, `limits`, `rate-limits` (the counts so far are
//! kept) and `delivery` take effect for new sessions and attempts. Only the spool, the
//! control socket and the shutdown timeout need a restart: a reload that changes them
//! says so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::daemon::outbound;
use super::socket::{ReloadFn, ReloadResponse};
use super::{Refusal, load_live};
use crate::config::{Config, Stamp, WATCH_INTERVAL};
use crate::delivery::hops::Outbound;
use crate::policy::Pipeline;
use crate::smtp::server::Listeners;
use crate::smtp::{Core, Listen};

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new configuration is live; these parts changed but need a restart.
    Reloaded { needs_restart: Vec<&'static str> },
    /// Nothing changed.
    Refused(Refusal),
}

/// The settings only a restart changes: the spool, the control socket, where the
/// log goes.
#[derive(Clone, PartialEq)]
struct Fixed {
    spool: PathBuf,
    control_socket: PathBuf,
    shutdown_timeout: std::time::Duration,
    log: crate::config::LogSettings,
    cluster: Option<crate::config::cluster::Cluster>,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        Fixed {
            spool: config.server.spool.clone(),
            control_socket: config.server.control_socket.clone(),
            shutdown_timeout: config.server.shutdown_timeout,
            log: config.log.clone(),
            cluster: config.cluster.clone(),
        }
    }

    fn changed(&self, other: &Fixed) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.spool != other.spool {
            out.push("server.spool");
        }
        if self.control_socket != other.control_socket {
            out.push("server.control-socket");
        }
        if self.shutdown_timeout != other.shutdown_timeout {
            out.push("server.shutdown-timeout");
        }
        if self.log != other.log {
            out.push("log");
        }
        if self.cluster != other.cluster {
            out.push("cluster");
        }
        out
    }
}

/// Reloads a running server: the policy, the listeners (with their certificates and
/// users tables), the `server` settings sessions use, `limits`, `rate-limits` and
/// `delivery`.
pub struct Reloader {
    path: PathBuf,
    core: Arc<Core>,
    listeners: Arc<Listeners>,
    outbound: Arc<ArcSwap<Outbound>>,
    fixed: Fixed,
    /// One reload at a time (SIGHUP and `mtactl reload` may come together).
    lock: Mutex<()>,
    /// `reload { watch }` of the configuration in force.
    watch: Mutex<Option<Duration>>,
}

impl Reloader {
    /// `config` is what the server runs with; `core`, `listeners` and `outbound` are
    /// what a reload changes.
    pub fn new(
        config: &Config,
        core: Arc<Core>,
        listeners: Arc<Listeners>,
        outbound: Arc<ArcSwap<Outbound>>,
    ) -> Self {
        Reloader {
            path: config.path.clone(),
            core,
            listeners,
            outbound,
            fixed: Fixed::of(config),
            lock: Mutex::new(()),
            watch: Mutex::new(config.reload.watch),
        }
    }

    /// Reads, checks and compiles the configuration file again and puts it in force
    /// (blocking: it reads files, compiles hooks and binds sockets; call it from the
    /// blocking pool of the server's runtime). Everything is prepared first; only if
    /// all of it succeeds does anything change. Logs what it did.
    pub fn reload(&self) -> ReloadOutcome {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        super::notify::reloading();
        let outcome = self.reload_now(started);
        super::notify::ready(&format!(
            "accepting mail; policy revision {}",
            self.core.policy.load().revision()
        ));
        outcome
    }

    fn reload_now(&self, started: std::time::Instant) -> ReloadOutcome {
        match self.prepare() {
            Ok(next) => {
                let needs_restart = self.fixed.changed(&Fixed::of(&next.config));
                self.commit(next);
                if !needs_restart.is_empty() {
                    warn!(
                        settings = %needs_restart.join(", "),
                        "reload: these changed and take effect at the next restart"
                    );
                }
                crate::metrics::get().reloaded(true);
                info!(config = %self.path.display(), revision = %self.core.policy.load().revision(), ms = started.elapsed().as_millis() as u64, "configuration reloaded");
                ReloadOutcome::Reloaded { needs_restart }
            }
            Err(refusal) => {
                refusal.log();
                refused(refusal.count(), "mtad");
                ReloadOutcome::Refused(refusal)
            }
        }
    }

    fn prepare(&self) -> Result<Next, Refusal> {
        let (config, pipeline) = load_live(&self.path)?;
        let listens = Listen::all(&config).map_err(|e| Refusal::Other(vec![e.to_string()]))?;
        let outbound = outbound(&config).map_err(|e| Refusal::Other(vec![e.to_string()]))?;
        let bound = self
            .listeners
            .prepare(listens)
            .map_err(|e| Refusal::Other(vec![e.to_string()]))?;
        Ok(Next {
            config,
            pipeline,
            outbound,
            bound,
        })
    }

    fn commit(&self, next: Next) {
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = next.config.reload.watch;
        self.core.policy.store(next.pipeline);
        self.core.rate.reconfigure(&next.config);
        self.core
            .resolver
            .store(Arc::new(next.outbound.resolver().clone()));
        let old = self.outbound.swap(Arc::new(next.outbound));
        // its idle connections say QUIT; attempts still using it finish with it
        tokio::spawn(async move { old.close_all().await });
        self.listeners.commit(next.bound);
    }

    /// `reload { watch }`: looks at the files the running policy was built from every
    /// interval and reloads when one holds other bytes. A state of the files that was
    /// tried (and refused, or only touched) is not tried again until they change again.
    /// Runs until shutdown; idle while the configuration does not ask for it.
    pub async fn watch_files(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tried: Option<Vec<Option<Stamp>>> = None;
        loop {
            let interval = *self.watch.lock().unwrap_or_else(|e| e.into_inner());
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(interval.unwrap_or(WATCH_INTERVAL)) => {}
            }
            if interval.is_none() {
                tried = None;
                continue;
            }
            let policy = self.core.policy.load_full();
            let now = policy.sources().stamps_now();
            if now == policy.sources().stamps() || tried.as_ref() == Some(&now) {
                continue;
            }
            tried = Some(now);
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                if policy.sources().changed() {
                    info!("a configuration file changed; reloading");
                    me.reload();
                }
            })
            .await;
            if let Err(err) = done {
                error!(%err, "the reload task failed; the running configuration stays");
            }
        }
    }

    /// What the control socket calls for `mtactl reload`.
    pub fn answer(self: Arc<Self>) -> ReloadFn {
        Arc::new(move || match self.reload() {
            ReloadOutcome::Reloaded { needs_restart } => ReloadResponse {
                ok: true,
                errors: String::new(),
                needs_restart: needs_restart.into_iter().map(str::to_owned).collect(),
            },
            ReloadOutcome::Refused(refusal) => ReloadResponse {
                ok: false,
                errors: refusal.render(),
                needs_restart: Vec::new(),
            },
        })
    }
}

/// A reload was refused, by this daemon (`by` = `mtad`: a `SIGHUP`, `mtactl reload`,
/// a watched file) or by `mtactl reload` before asking (`mtactl`): counted in
/// `mtad_reload_failures_total` and logged alike.
pub fn refused(errors: usize, by: &str) {
    crate::metrics::get().reloaded(false);
    error!(
        errors,
        by, "reload refused; the running configuration stays"
    );
}

/// A configuration ready to be put in force.
struct Next {
    config: Config,
    pipeline: Arc<Pipeline>,
    outbound: Outbound,
    bound: crate::smtp::server::Prepared,
}
