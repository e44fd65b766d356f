//! The `cluster` block's settings: the Redis (or Valkey) server that several mtad nodes
//! share their policy state through (see `docs/cluster.md` and [`crate::cluster`]).

use std::time::Duration;

/// What a feature does while Redis does not answer within `timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Count in this process, as a node without `cluster` does (the default for
    /// limits): a client may get up to one limit per node during the outage.
    Local,
    /// Refuse for now: `421` at connect, `451`/`454` at a command.
    Tempfail,
}

impl Fallback {
    pub const NAMES: [&'static str; 2] = ["local", "tempfail"];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Tempfail => "tempfail",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "local" => Some(Fallback::Local),
            "tempfail" => Some(Fallback::Tempfail),
            _ => None,
        }
    }
}

/// The `cluster` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// `redis "redis://[user:password@]host[:port][/db]"` (`rediss://` for TLS,
    /// `redis+unix:///path` for a socket), as the `redis` crate reads it; checked when
    /// the configuration is read.
    pub redis: String,
    /// `node "name"`: this node's name in the cluster (default: the server hostname);
    /// it names the connection leases this node holds.
    pub node: String,
    /// `timeout "250ms"`: the longest one call to Redis may take, connecting included;
    /// past it the call counts as failed and the feature's fallback applies.
    pub timeout: Duration,
    /// `key-prefix "mtad:"`: what every key this cluster writes starts with (several
    /// clusters may share one Redis).
    pub key_prefix: String,
    /// `fallback "local"`: what the rate limits and connection leases do while Redis
    /// does not answer.
    pub fallback: Fallback,
    /// `lease "1m"`: how long a node's connection lease lives unless renewed (a node
    /// renews its leases every third of it); a node that dies holds them no longer.
    pub lease: Duration,
    /// `heartbeat "5s"`: how often the node writes its state to Redis (name, address,
    /// policy revision, queue, version, start); it lives three heartbeats, so a node
    /// whose heartbeat stopped is seen within three (`mtactl cluster status`).
    pub heartbeat: Duration,
}

impl Cluster {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
    pub const DEFAULT_PREFIX: &'static str = "mtad:";

    /// The Redis URL with its password replaced by `***`, for logs and `mtactl config`.
    pub fn redis_shown(&self) -> String {
        redact(&self.redis)
    }
}

/// Whether the `redis` crate can connect with `url` (its scheme, host, port, database
/// and credentials); the reason when it cannot, never with the password in it.
pub fn check_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    if url.len() > 2048 {
        return Err("longer than 2048 bytes".to_owned());
    }
    match url.into_connection_info() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{} ({})",
            redact(url),
            e.detail().unwrap_or(e.category())
        )),
    }
}

/// `url` without its password (`redis://user:***@host/0`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                // `redis://password@host`? The crate reads a bare userinfo as a user name;
                // it is hidden all the same.
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_never_shown() {
        use super::redact;
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            redact("rediss://mtad:p@ss@redis.example.test/0"),
            "rediss://mtad:***@redis.example.test/0"
        );
        assert_eq!(redact("redis://tok@h"), "redis://***@h");
        assert_eq!(
            redact("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
    }
}
