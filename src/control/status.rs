//! `mtactl status` and the daemon's side of it: uptime, the policy revision, the
//! listeners with their open sessions, and the queue by state. The same [`Observer`]
//! answers `{"status":true}` on the control socket and fills in what the Prometheus
//! endpoint measures at scrape time.
//!
//! ```text
//! > {"status":true}
//! < {"ok":true,"started":"2026-11-23T21:00:00Z","uptime_seconds":3600,"revision":"3f2a9c0d1b7e",
//!    "listeners":[{"name":"mx","address":"127.0.0.1:25","tls":"off","auth":"off","sessions":2}],
//!    "sessions":2,"queue":{"active":1,"deferred":4,"hold":0}}
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{AuthMode, Listener, ListenerTls};
use crate::policy::Pipeline;
use crate::queue::{QueueCounts, Spool};

/// `{"status":true}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: bool,
}

/// One listener as `mtactl status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    /// Where it is bound (the real port when the configuration said 0).
    pub address: String,
    /// `off`, `offered`, `required` or `implicit`.
    pub tls: String,
    /// `off`, `offered` or `required`.
    pub auth: String,
    /// Sessions open on it now.
    #[serde(default)]
    pub sessions: u64,
}

impl ListenerStatus {
    /// A listener bound at `address` (its `sessions` filled in at each request).
    pub fn new(listener: &Listener, address: SocketAddr, tls: ListenerTls, auth: AuthMode) -> Self {
        ListenerStatus {
            name: listener.name.clone(),
            address: address.to_string(),
            tls: tls.as_str().to_owned(),
            auth: auth.as_str().to_owned(),
            sessions: 0,
        }
    }
}

/// The answer to a [`StatusRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub ok: bool,
    /// Set when `ok` is false.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// When the daemon started (RFC 3339, UTC).
    #[serde(default)]
    pub started: String,
    #[serde(default)]
    pub uptime_seconds: u64,
    /// The running policy's revision.
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// Sessions open now, on all listeners.
    #[serde(default)]
    pub sessions: u64,
    #[serde(default)]
    pub queue: QueueCounts,
}

/// The listeners a running server has bound, for [`Observer::status`]; they come and
/// go with reloads (the server's `Listeners` implements it).
pub trait ListenerSource: Send + Sync {
    fn listeners(&self) -> Vec<ListenerStatus>;
}

/// What the daemon reports about itself, gathered when asked.
pub struct Observer {
    started: SystemTime,
    clock: Instant,
    policy: Arc<ArcSwap<Pipeline>>,
    spool: Spool,
    listeners: Arc<dyn ListenerSource>,
}

impl Observer {
    pub fn new(
        policy: Arc<ArcSwap<Pipeline>>,
        spool: Spool,
        listeners: Arc<dyn ListenerSource>,
    ) -> Observer {
        Observer {
            started: SystemTime::now(),
            clock: Instant::now(),
            policy,
            spool,
            listeners,
        }
    }

    /// The status now; open sessions come from the metrics' per-listener gauge.
    pub fn status(&self) -> Status {
        let metrics = crate::metrics::get();
        let mut listeners = self.listeners.listeners();
        for l in &mut listeners {
            l.sessions = metrics.open_sessions(&l.name);
        }
        Status {
            ok: true,
            error: String::new(),
            started: DateTime::<Utc>::from(self.started)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            uptime_seconds: self.clock.elapsed().as_secs(),
            revision: self.policy.load().revision().to_owned(),
            sessions: listeners.iter().map(|l| l.sessions).sum(),
            listeners,
            queue: self.spool.counts(),
        }
    }

    /// The running policy's shared revision (every file but the main one: what the
    /// nodes of a cluster compare, see [`crate::config::Sources::shared_revision`]).
    pub fn policy_revision(&self) -> String {
        self.policy.load().sources().shared_revision()
    }

    /// The Prometheus exposition, with the queue and the revision measured now.
    pub fn metrics(&self) -> String {
        let metrics = crate::metrics::get();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let oldest = self.spool.oldest_arrival_ms().map_or(Duration::ZERO, |at| {
            now.saturating_sub(Duration::from_millis(at))
        });
        let spool = crate::metrics::SpoolFacts {
            queue: self.spool.counts().by_state().to_vec(),
            oldest,
            fsyncs: self.spool.fsyncs(),
        };
        metrics.scraped(&spool, self.policy.load().revision());
        metrics.encode()
    }

    /// [`Observer::status`] for [`super::socket::ControlSocket::with_status`].
    pub fn status_fn(self: &Arc<Self>) -> super::socket::StatusFn {
        let me = self.clone();
        Arc::new(move || me.status())
    }

    /// [`Observer::metrics`] for [`crate::metrics::http::Endpoint::serve`].
    pub fn metrics_fn(self: &Arc<Self>) -> crate::metrics::http::RenderFn {
        let me = self.clone();
        Arc::new(move || me.metrics())
    }
}

/// `mtactl status`'s text: one line each for uptime and revision, one per listener,
/// then sessions and the queue.
pub fn render(status: &Status) -> String {
    let mut out = format!(
        "uptime: {} (since {})\nrevision: {}\n",
        humantime::format_duration(std::time::Duration::from_secs(status.uptime_seconds)),
        status.started,
        status.revision
    );
    out.push_str("listeners:\n");
    let width = status
        .listeners
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(0);
    for l in &status.listeners {
        out.push_str(&format!(
            "  {:<width$}  {}  tls={} auth={}  sessions={}\n",
            l.name, l.address, l.tls, l.auth, l.sessions
        ));
    }
    let q = &status.queue;
    out.push_str(&format!(
        "sessions: {} open\nqueue: {} message{} (active {}, deferred {}, hold {})\n",
        status.sessions,
        q.total(),
        if q.total() == 1 { "" } else { "s" },
        q.active,
        q.deferred,
        q.hold
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_wire() {
        let status = Status {
            ok: true,
            started: "2026-11-23T21:00:00Z".into(),
            uptime_seconds: 3723,
            revision: "3f2a9c0d1b7e".into(),
            listeners: vec![
                ListenerStatus {
                    name: "mx".into(),
                    address: "127.0.0.1:25".into(),
                    tls: "off".into(),
                    auth: "off".into(),
                    sessions: 2,
                },
                ListenerStatus {
                    name: "submission".into(),
                    address: "127.0.0.1:587".into(),
                    tls: "required".into(),
                    auth: "required".into(),
                    sessions: 0,
                },
            ],
            sessions: 2,
            queue: QueueCounts {
                active: 1,
                deferred: 4,
                hold: 0,
            },
            ..Status::default()
        };
        assert_eq!(
            render(&status),
            "uptime: 1h 2m 3s (since 2026-11-23T21:00:00Z)\n\
             revision: 3f2a9c0d1b7e\n\
             listeners:\n  \
               mx          127.0.0.1:25  tls=off auth=off  sessions=2\n  \
               submission  127.0.0.1:587  tls=required auth=required  sessions=0\n\
             sessions: 2 open\n\
             queue: 5 messages (active 1, deferred 4, hold 0)\n"
        );
        let wire = serde_json::to_string(&status).unwrap();
        assert!(!wire.contains("error"), "{wire}");
        assert_eq!(serde_json::from_str::<Status>(&wire).unwrap(), status);
        assert!(serde_json::from_str::<StatusRequest>(r#"{"status":true}"#).is_ok());
        assert!(serde_json::from_str::<StatusRequest>(r#"{"status":true,"x":1}"#).is_err());
    }
}
