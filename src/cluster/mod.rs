//! A cluster of mtad nodes sharing policy state through Redis (or Valkey): the client
//! every node keeps ([`Cluster`]), and what it computes there ([`limits`]: rate limits
//! and connection leases; [`greylist`]'s records; [`filter_loops`]: the content-filter
//! loop record, which lives here with or without a cluster). See `docs/cluster.md`.
//!
//! One multiplexed connection per node, shared by every session and reconnected by the
//! `redis` crate's connection manager when it breaks. Every call is bounded by
//! `cluster { timeout }`; a call that fails or takes longer is the caller's to fall back
//! from (`cluster { fallback }`), and is counted here: in
//! `mtad_cluster_redis_errors_total{feature}`, in the `mtad_cluster_redis_up` gauge,
//! and in the log once when Redis stops answering and once when it answers again.

pub mod filter_loops;
pub mod greylist;
pub mod limits;
pub mod nodes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

pub use crate::config::cluster::{Cluster as Settings, Fallback};

/// What a call to Redis was for: the label of `mtad_cluster_redis_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `rate-limits`, counted across the nodes.
    RateLimits,
    /// `limits { connections-per-ip }` across the nodes (leases).
    Leases,
    /// The state of `greylist` rules.
    Greylisting,
    /// The node's heartbeat (`mtactl cluster status`).
    Heartbeats,
    /// The content-filter loop record ([`filter_loops`]).
    ContentFilter,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::RateLimits => "rate-limits",
            Feature::Leases => "leases",
            Feature::Greylisting => "greylisting",
            Feature::Heartbeats => "heartbeats",
            Feature::ContentFilter => "content-filter",
        }
    }
}

/// Redis did not answer a call in time, or answered with an error: the caller applies
/// its fallback.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something it never answers (another program's keys?).
    #[error("Redis answered an unexpected value: {0}")]
    Answer(&'static str),
}

/// Why the cluster client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cluster: cannot use Redis at {url}: {source}")]
pub struct ClusterError {
    url: String,
    source: redis::RedisError,
}

/// A node's client of the cluster's Redis.
pub struct Cluster {
    settings: Settings,
    conn: ConnectionManager,
    /// Whether the last call succeeded; a change is logged once (outage, recovery).
    up: AtomicBool,
    /// The connection leases this node holds, renewed while held.
    pub leases: limits::Leases,
    /// What this node gives back, riding along with its next call.
    pub pending: limits::Pending,
    /// What this node holds counted ahead for its busy clients' next sessions.
    pub stash: limits::Stash,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.settings.redis_shown())
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The client for `settings`, connecting lazily (a node starts while Redis is down
    /// and uses its fallback until it is up). Must be called inside a Tokio runtime.
    pub fn new(settings: &Settings) -> Result<Self, ClusterError> {
        let error = |source| ClusterError {
            url: settings.redis_shown(),
            source,
        };
        let client = redis::Client::open(settings.redis.as_str()).map_err(error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // reconnect in the background, quickly at first, then every second at most
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(error)?;
        crate::metrics::get().cluster_up(true);
        Ok(Self {
            settings: settings.clone(),
            conn,
            up: AtomicBool::new(true),
            leases: limits::Leases::default(),
            pending: limits::Pending::default(),
            stash: limits::Stash::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `key-prefix` + `parts` joined by `:`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.settings.key_prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(p);
        }
        key
    }

    /// Runs `cmd` (or a pipeline) with the timeout; records the outcome for `feature`.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        feature: Feature,
        cmd: &(impl Query + ?Sized),
    ) -> Result<T, Unavailable> {
        let outcome = self.query_unrecorded(cmd).await;
        self.record(feature, outcome.as_ref().map(|_| ()));
        outcome
    }

    /// [`Cluster::query`] without recording the outcome (the caller records it once
    /// it knows: a `NOSCRIPT` answered to `EVALSHA` is no failure).
    pub(crate) async fn query_unrecorded<T: redis::FromRedisValue>(
        &self,
        cmd: &(impl Query + ?Sized),
    ) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        crate::metrics::get().cluster_round_trip();
        match tokio::time::timeout(self.settings.timeout, cmd.run(&mut conn)).await {
            Ok(Ok(value)) => redis::from_redis_value(value)
                .map_err(|e| Unavailable::Redis(redis::RedisError::from(e))),
            Ok(Err(e)) => Err(Unavailable::Redis(e)),
            Err(_) => Err(Unavailable::Timeout(self.settings.timeout)),
        }
    }

    /// Counts and logs a call's outcome.
    pub(crate) fn record(&self, feature: Feature, outcome: Result<(), &Unavailable>) {
        match outcome {
            Ok(()) => self.answered(),
            Err(e) => self.failed(feature, e),
        }
    }

    /// A call failed: counted; logged only when Redis was up until now.
    pub fn failed(&self, feature: Feature, err: &Unavailable) {
        crate::metrics::get().cluster_redis_error(feature.as_str());
        if self.up.swap(false, Ordering::AcqRel) {
            crate::metrics::get().cluster_up(false);
            warn!(
                redis = %self.settings.redis_shown(),
                %err,
                feature = feature.as_str(),
                fallback = self.settings.fallback.as_str(),
                "cluster: Redis unavailable; the shared limits fall back until it answers again"
            );
        }
    }

    fn answered(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            crate::metrics::get().cluster_up(true);
            info!(redis = %self.settings.redis_shown(), "cluster: Redis answers again; limits are shared again");
        }
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// One connection of its own and a `PING`, for `mtactl check --connect`: the
    /// server's own reason when it refuses (a wrong password), not a timeout.
    pub async fn probe(settings: &Settings) -> Result<(), Unavailable> {
        let client = redis::Client::open(settings.redis.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout));
        let ping = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(settings.timeout * 2, ping).await {
            Ok(Ok(pong)) if pong == "PONG" => Ok(()),
            Ok(Ok(_)) => Err(Unavailable::Answer("PING answered other than PONG")),
            Ok(Err(e)) => Err(Unavailable::Redis(e)),
            Err(_) => Err(Unavailable::Timeout(settings.timeout * 2)),
        }
    }
}

#[cfg(test)]
impl Cluster {
    /// A client of a Redis that does not answer (a port nothing listens on), with
    /// `fallback`: for unit tests that must not reach Redis. Inside a Tokio runtime.
    pub(crate) fn without_redis(fallback: Fallback) -> Self {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        Cluster::new(&Settings {
            redis: format!("redis://127.0.0.1:{port}/0"),
            node: "n".into(),
            timeout: Duration::from_millis(100),
            key_prefix: "mtad:".into(),
            fallback,
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
        })
        .unwrap()
    }
}

/// A command or a pipeline, sent over the shared connection.
pub trait Query: Sync {
    fn run<'a>(&'a self, conn: &'a mut ConnectionManager) -> redis::RedisFuture<'a, redis::Value>;
}

impl Query for redis::Cmd {
    fn run<'a>(&'a self, conn: &'a mut ConnectionManager) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(self.query_async(conn))
    }
}

impl Query for redis::Pipeline {
    fn run<'a>(&'a self, conn: &'a mut ConnectionManager) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move { self.query_async(conn).await })
    }
}
