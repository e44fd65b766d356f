//! The nodes of a cluster: each daemon's heartbeat ([`heartbeats`]) and
//! `mtactl cluster status` ([`cluster_status`]), which lists them and flags a node
//! whose heartbeat stopped or whose shared policy revision differs from the majority's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use super::status::Observer;
use crate::cluster::Cluster;
use crate::cluster::nodes::{Heartbeat, NodeState, read_nodes};

/// Writes this node's heartbeat every `cluster { heartbeat }` until `shutdown`.
/// A heartbeat that fails is counted (`mtad_cluster_redis_errors_total{feature=
/// "heartbeats"}`) and tried again at the next one.
pub async fn heartbeats(
    cluster: Arc<Cluster>,
    observer: Arc<Observer>,
    hostname: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = cluster.settings().heartbeat;
    loop {
        let status = observer.status();
        let beat = Heartbeat {
            node: cluster.settings().node.clone(),
            hostname: hostname.clone(),
            addresses: status.listeners.iter().map(|l| l.address.clone()).collect(),
            revision: status.revision.clone(),
            policy_revision: observer.policy_revision(),
            queue_active: status.queue.active as u64,
            queue_deferred: status.queue.deferred as u64,
            queue_hold: status.queue.hold as u64,
            version: super::VERSION.to_owned(),
            started: status.started.clone(),
        };
        let _ = cluster.beat(&beat).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One node in `mtactl cluster status`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub node: String,
    /// `up` (its heartbeat lives) or `stopped`.
    pub state: &'static str,
    /// Seconds since its last heartbeat (by the Redis server's clock).
    pub last_seen_seconds_ago: u64,
    /// Its last heartbeat, while it lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    /// Why it is flagged (empty: it is not).
    pub flags: Vec<String>,
}

/// `mtactl cluster status`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub nodes: Vec<NodeReport>,
    /// The shared policy revision most live nodes run (`None`: no majority).
    pub majority_policy_revision: Option<String>,
    pub flagged: bool,
}

/// Flags the nodes: a heartbeat that stopped; a shared policy revision that is not the
/// one more than half of the live nodes run (every live node's when none is).
pub fn judge(nodes: Vec<NodeState>, now: u64) -> Report {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for h in nodes.iter().filter_map(|n| n.heartbeat.as_ref()) {
        *counts.entry(h.policy_revision.clone()).or_default() += 1;
    }
    let live: usize = counts.values().sum();
    let majority = counts
        .iter()
        .find(|(_, n)| **n * 2 > live)
        .map(|(r, _)| r.clone());
    let mut out = Vec::new();
    for n in nodes {
        let mut flags = Vec::new();
        match &n.heartbeat {
            None => flags.push("heartbeat stopped".to_owned()),
            Some(h) => match &majority {
                Some(m) if *m != h.policy_revision => flags.push(format!(
                    "policy revision {} differs from the majority's {m}",
                    h.policy_revision
                )),
                None if counts.len() > 1 => flags.push(format!(
                    "policy revision {}: the nodes disagree, no majority",
                    h.policy_revision
                )),
                _ => {}
            },
        }
        out.push(NodeReport {
            node: n.node,
            state: if n.heartbeat.is_some() {
                "up"
            } else {
                "stopped"
            },
            last_seen_seconds_ago: now.saturating_sub(n.last_seen),
            heartbeat: n.heartbeat,
            flags,
        });
    }
    Report {
        flagged: out.iter().any(|n| !n.flags.is_empty()),
        nodes: out,
        majority_policy_revision: majority,
    }
}

/// The report as text: a line per node, its flags under it.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:<8} {:<13} {:<13} {:>17} {:<12} {}\n",
        "node", "state", "policy", "revision", "queue a/d/h", "version", "addresses"
    );
    for n in &report.nodes {
        match &n.heartbeat {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} {:<13} {:<13} {:>17} {:<12} {}",
                    n.node,
                    n.state,
                    h.policy_revision,
                    h.revision,
                    format!("{}/{}/{}", h.queue_active, h.queue_deferred, h.queue_hold),
                    h.version.split_whitespace().next().unwrap_or(""),
                    h.addresses.join(" ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} last heartbeat {}s ago",
                    n.node, n.state, n.last_seen_seconds_ago
                );
            }
        }
        for f in &n.flags {
            let _ = writeln!(out, "  ! {f}");
        }
    }
    if report.nodes.is_empty() {
        out.push_str("no node has written a heartbeat\n");
    }
    out
}

/// `mtactl cluster status`: exit 0 when no node is flagged, 1 when one is, 2 when the
/// configuration has no cluster or Redis does not answer.
pub fn cluster_status(path: &Path, json: bool) -> ExitCode {
    let fail = |why: String| {
        errln!("mtactl cluster status: {why}");
        ExitCode::from(2)
    };
    let config = match crate::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(crate::config::render(&e)),
    };
    let Some(settings) = config.cluster else {
        return fail("the configuration has no `cluster` block".into());
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start a runtime: {e}")),
    };
    let read = runtime.block_on(async {
        let nodes = read_nodes(&settings).await?;
        let now = crate::cluster::nodes::server_time(&settings).await?;
        Ok::<_, crate::cluster::Unavailable>((nodes, now))
    });
    let (nodes, now) = match read {
        Ok(r) => r,
        Err(e) => return fail(format!("Redis {}: {e}", settings.redis_shown())),
    };
    let report = judge(nodes, now);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => outln!("{text}"),
            Err(e) => return fail(e.to_string()),
        }
    } else {
        out!("{}", render(&report));
    }
    if report.flagged {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, policy: Option<&str>) -> NodeState {
        NodeState {
            node: name.into(),
            heartbeat: policy.map(|p| Heartbeat {
                node: name.into(),
                policy_revision: p.into(),
                ..Default::default()
            }),
            last_seen: 90,
        }
    }

    #[test]
    fn the_odd_one_and_the_stopped_one_are_flagged() {
        let r = judge(
            vec![
                node("a", Some("r1")),
                node("b", Some("r1")),
                node("c", Some("r2")),
            ],
            100,
        );
        assert!(r.flagged);
        assert_eq!(r.majority_policy_revision.as_deref(), Some("r1"));
        let flagged: Vec<&str> = r
            .nodes
            .iter()
            .filter(|n| !n.flags.is_empty())
            .map(|n| n.node.as_str())
            .collect();
        assert_eq!(flagged, ["c"]);
        let r = judge(vec![node("a", Some("r1")), node("b", None)], 100);
        assert!(r.flagged);
        assert_eq!(r.nodes[1].flags, ["heartbeat stopped"]);
        assert_eq!(r.nodes[1].last_seen_seconds_ago, 10);
        let r = judge(vec![node("a", Some("r1")), node("b", Some("r1"))], 100);
        assert!(!r.flagged);
        // two nodes that disagree: no majority, both flagged
        let r = judge(vec![node("a", Some("r1")), node("b", Some("r2"))], 100);
        assert_eq!(r.nodes.iter().filter(|n| !n.flags.is_empty()).count(), 2);
    }
}
