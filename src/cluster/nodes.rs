//! Heartbeats: every `cluster { heartbeat }` each node writes what it is (name,
//! address, policy revisions, queue, version, start) under `PREFIX:node:NAME`, living
//! three heartbeats, and its name with the time in the sorted set `PREFIX:nodes`. A node
//! whose key is gone but whose name is in the set has stopped beating (it died, or
//! cannot reach Redis); `mtactl cluster status` reads both ([`read_nodes`]).

use serde::{Deserialize, Serialize};

use super::{Cluster, Feature, Settings, Unavailable};

/// What a node says of itself at each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `cluster { node }`.
    pub node: String,
    /// The server's hostname.
    #[serde(default)]
    pub hostname: String,
    /// Where its listeners are bound.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The revision of every file its policy was compiled from.
    #[serde(default)]
    pub revision: String,
    /// The revision of the files but its main one (the shared, included policy).
    #[serde(default)]
    pub policy_revision: String,
    /// Messages queued by state.
    #[serde(default)]
    pub queue_active: u64,
    #[serde(default)]
    pub queue_deferred: u64,
    #[serde(default)]
    pub queue_hold: u64,
    /// mtad's version.
    #[serde(default)]
    pub version: String,
    /// When it started (RFC 3339).
    #[serde(default)]
    pub started: String,
}

/// A node as `mtactl cluster status` finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub node: String,
    /// Its last heartbeat, if it still lives.
    pub heartbeat: Option<Heartbeat>,
    /// When it was last seen (the Redis server's clock, seconds).
    pub last_seen: u64,
}

/// Longest heartbeat read back.
const MAX_HEARTBEAT: usize = 64 * 1024;
/// Writes the heartbeat, and notes the node in the set with the server's clock
/// (forgetting those not seen for a day).
const BEAT: &str = r#"
local t = tonumber(redis.call('TIME')[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], t, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t - ARGV[4])
return t
"#;

/// A node not seen for a day is dropped from the set.
const FORGET_AFTER: u64 = 24 * 3600;
/// Most nodes listed.
const MAX_NODES: isize = 1000;

impl Cluster {
    /// Writes `beat`, in one round trip.
    pub async fn beat(&self, beat: &Heartbeat) -> Result<(), Unavailable> {
        let s = &self.settings;
        let life = u64::try_from((s.heartbeat * 3).as_millis()).unwrap_or(u64::MAX);
        let key = self.key(&["node", &s.node]);
        let nodes = self.key(&["nodes"]);
        let json = serde_json::to_string(beat).map_err(|_| Unavailable::Answer("heartbeat"))?;
        // the server's clock stamps it (one clock for every node)
        let mut eval = redis::cmd("EVAL");
        eval.arg(BEAT)
            .arg(2)
            .arg(key)
            .arg(nodes)
            .arg(json)
            .arg(life)
            .arg(&s.node)
            .arg(FORGET_AFTER);
        self.query::<i64>(Feature::Heartbeats, &eval)
            .await
            .map(|_| ())
    }
}

/// Every node seen within a day, by name: its last heartbeat if it still lives.
/// With a connection of its own (for `mtactl`).
pub async fn read_nodes(settings: &Settings) -> Result<Vec<NodeState>, Unavailable> {
    let client = redis::Client::open(settings.redis.as_str())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout * 4));
    let prefix = &settings.key_prefix;
    let read = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let seen: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}nodes"))
            .arg(0)
            .arg(MAX_NODES - 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for (node, at) in seen {
            let beat: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("{prefix}node:{node}"))
                .query_async(&mut conn)
                .await?;
            let heartbeat = beat
                .filter(|b| b.len() <= MAX_HEARTBEAT)
                .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok());
            out.push(NodeState {
                node,
                heartbeat,
                last_seen: at.max(0.0) as u64,
            });
        }
        Ok::<_, redis::RedisError>(out)
    };
    match tokio::time::timeout(settings.timeout * 20, read).await {
        Ok(Ok(nodes)) => Ok(nodes),
        Ok(Err(e)) => Err(Unavailable::Redis(e)),
        Err(_) => Err(Unavailable::Timeout(settings.timeout * 20)),
    }
}

/// The Redis server's clock (seconds), with a connection of its own.
pub async fn server_time(settings: &Settings) -> Result<u64, Unavailable> {
    let client = redis::Client::open(settings.redis.as_str())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout));
    let ask = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("TIME")
            .query_async::<(u64, u64)>(&mut conn)
            .await
    };
    match tokio::time::timeout(settings.timeout * 2, ask).await {
        Ok(Ok((secs, _))) => Ok(secs),
        Ok(Err(e)) => Err(Unavailable::Redis(e)),
        Err(_) => Err(Unavailable::Timeout(settings.timeout * 2)),
    }
}
