//! Reloading the policy while the server runs (SIGHUP, `mtactl reload`).
//!
//! The configuration is read and compiled anew — rules, hooks, tables, aliases,
//! content checks — and, only if all of it is valid, swapped in at once. On any error
//! the running policy stays and every error is logged with its file:line:col. A session
//! keeps the policy it started with; queued mail is routed by the new one from its next
//! attempt (the scheduler loads the policy per attempt).
//!
//! What the running server was built from at start — the `server` block, listeners
//! (and their certificates and users tables), `limits`, `rate-limits` and `delivery` —
//! is not changed by a reload yet: a reload that changes it says so in the log, and it
//! takes effect at the next restart.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigErrors, Delivery, Limits, Listener, RateLimits, Server, render};
use crate::control::socket::{ReloadFn, ReloadResponse};
use crate::policy::Pipeline;

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new policy is live; these parts changed but need a restart.
    Reloaded { needs_restart: Vec<&'static str> },
    /// Nothing changed: the configuration has errors.
    Refused(ConfigErrors),
}

/// The settings the server was started with, which a reload does not change.
#[derive(Clone, PartialEq)]
struct Fixed {
    server: Server,
    listeners: Vec<Listener>,
    limits: Limits,
    rate_limits: RateLimits,
    delivery: Delivery,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        Fixed {
            server: config.server.clone(),
            listeners: config.listeners.clone(),
            limits: config.limits.clone(),
            rate_limits: config.rate_limits.clone(),
            delivery: config.delivery.clone(),
        }
    }

    fn changed(&self, other: &Fixed) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.server != other.server {
            out.push("server");
        }
        if self.listeners != other.listeners {
            out.push("listen");
        }
        if self.limits != other.limits {
            out.push("limits");
        }
        if self.rate_limits != other.rate_limits {
            out.push("rate-limits");
        }
        if self.delivery != other.delivery {
            out.push("delivery");
        }
        out
    }
}

pub struct Reloader {
    path: PathBuf,
    policy: Arc<ArcSwap<Pipeline>>,
    fixed: Fixed,
}

impl Reloader {
    /// `config` is what the server runs with; `policy` the slot sessions and the
    /// scheduler load the policy from.
    pub fn new(config: &Config, policy: Arc<ArcSwap<Pipeline>>) -> Self {
        Reloader {
            path: config.path.clone(),
            policy,
            fixed: Fixed::of(config),
        }
    }

    /// Reads, checks and compiles the configuration file again and swaps the policy in
    /// (blocking: it reads files and compiles hooks). Logs what it did.
    pub fn reload(&self) -> ReloadOutcome {
        let (config, pipeline) = match Pipeline::load(&self.path) {
            Ok(b) => b,
            Err(errors) => {
                for e in &errors.errors {
                    let at = e
                        .location
                        .as_ref()
                        .map_or_else(|| errors.file.clone(), ToString::to_string);
                    error!(at = %at, error = %e.message, "reload: configuration error");
                }
                crate::metrics::get().reloaded(false);
                error!(
                    errors = errors.errors.len(),
                    "reload refused; the running policy stays"
                );
                return ReloadOutcome::Refused(errors);
            }
        };
        self.policy.store(Arc::new(pipeline));
        let needs_restart = self.fixed.changed(&Fixed::of(&config));
        if !needs_restart.is_empty() {
            warn!(
                blocks = %needs_restart.join(", "),
                "reload: these changed and take effect at the next restart"
            );
        }
        crate::metrics::get().reloaded(true);
        info!(config = %self.path.display(), "policy reloaded");
        ReloadOutcome::Reloaded { needs_restart }
    }

    /// What the control socket calls for `mtactl reload`.
    pub fn answer(self: Arc<Self>) -> ReloadFn {
        Arc::new(move || match self.reload() {
            ReloadOutcome::Reloaded { needs_restart } => ReloadResponse {
                ok: true,
                errors: String::new(),
                needs_restart: needs_restart.into_iter().map(str::to_owned).collect(),
            },
            ReloadOutcome::Refused(errors) => ReloadResponse {
                ok: false,
                errors: render(&errors),
                needs_restart: Vec::new(),
            },
        })
    }
}
