//! Which clusters have a live agent, and the leader's rule for the `stale`
//! mark: a cluster whose agent has not been seen on any node for longer than
//! the grace period is marked stale (its endpoints stay); seen again, the mark
//! is cleared. Every node tells the leader each second which clusters'
//! agents stream to it.

use crate::{forward, node::Node};
use meridian_model::{Command, Kind, Op, StateView, Status};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Liveness {
    /// Clusters with agent streams on this node, and how many.
    local: Mutex<BTreeMap<String, usize>>,
    /// On the leader: when each cluster's agent was last reported by any node.
    seen: Mutex<HashMap<String, Instant>>,
}

/// Counts a stream while it lives.
pub struct Connected {
    liveness: Arc<Liveness>,
    cluster: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut local = self
            .liveness
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = local.get_mut(&self.cluster) {
            *count -= 1;
            if *count == 0 {
                local.remove(&self.cluster);
            }
        }
    }
}

impl Liveness {
    pub fn connect(self: &Arc<Self>, cluster: &str) -> Connected {
        *self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cluster.to_string())
            .or_default() += 1;
        Connected {
            liveness: self.clone(),
            cluster: cluster.to_string(),
        }
    }

    fn local_clusters(&self) -> Vec<String> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Records that these clusters' agents are connected somewhere (leader side).
    pub fn seen(&self, clusters: &[String]) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for cluster in clusters {
            seen.insert(cluster.clone(), now);
        }
    }

    fn last_seen(&self, cluster: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .copied()
    }
}

/// What the leader decides for one cluster. Pure.
pub fn decide(
    status: &Status,
    last_seen: Option<Instant>,
    leader_since: Instant,
    now: Instant,
    grace: Duration,
) -> Option<bool> {
    // A new leader has seen nothing yet: it waits a grace period before judging.
    let reference = last_seen.map_or(leader_since, |seen| seen.max(leader_since));
    let gone = now.saturating_duration_since(reference) > grace;
    match (gone, status.stale) {
        (true, false) => Some(true),
        (false, true) if last_seen.is_some_and(|s| now.saturating_duration_since(s) <= grace) => {
            Some(false)
        }
        _ => None,
    }
}

/// Runs on every node: heartbeats to the leader, and on the leader, the stale rule.
pub async fn run(node: Arc<Node>, liveness: Arc<Liveness>, grace: Duration) {
    let mut leader_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        ticker.tick().await;
        let local = liveness.local_clusters();
        let metrics = node.metrics();
        if metrics.current_leader != Some(node.id) {
            leader_since = None;
            if let Some(leader) = node.leader() {
                if let Err(e) = forward::agent_heartbeat(&leader, &local).await {
                    tracing::debug!(error = %e, "agent heartbeat to the leader failed");
                }
            }
            continue;
        }
        liveness.seen(&local);
        let since = *leader_since.get_or_insert_with(Instant::now);
        let now = Instant::now();
        let managed = node
            .state
            .view()
            .list(Kind::Cluster)
            .into_iter()
            .filter_map(|c| {
                let status = c.status.clone().filter(|s| s.agent.is_some())?;
                Some((c.metadata.name.clone(), status))
            });
        let mut changes: BTreeSet<(String, bool)> = BTreeSet::new();
        let mut statuses = BTreeMap::new();
        for (cluster, status) in managed {
            if let Some(stale) = decide(&status, liveness.last_seen(&cluster), since, now, grace) {
                changes.insert((cluster.clone(), stale));
                statuses.insert(cluster, status);
            }
        }
        for (cluster, stale) in changes {
            let mut status = statuses.remove(&cluster).unwrap_or_default();
            status.stale = stale;
            tracing::info!(%cluster, stale, "agent liveness changed");
            let command = Command::new(vec![Op::SetStatus { cluster, status }]);
            if let Err(e) = node.write(command).await {
                tracing::warn!(error = %e, "recording a cluster's staleness failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_grace_and_back() {
        let grace = Duration::from_secs(10);
        let t0 = Instant::now();
        let fresh = Status::default();
        let stale = Status {
            stale: true,
            ..Status::default()
        };
        // A new leader waits a grace period, even for a cluster it never saw.
        assert_eq!(
            decide(&fresh, None, t0, t0 + Duration::from_secs(5), grace),
            None
        );
        assert_eq!(
            decide(&fresh, None, t0, t0 + Duration::from_secs(11), grace),
            Some(true)
        );
        // Seen recently: nothing to do; gone too long: stale.
        let seen = t0 + Duration::from_secs(20);
        assert_eq!(
            decide(&fresh, Some(seen), t0, seen + Duration::from_secs(3), grace),
            None
        );
        assert_eq!(
            decide(
                &fresh,
                Some(seen),
                t0,
                seen + Duration::from_secs(11),
                grace
            ),
            Some(true)
        );
        // Back: the mark is cleared.
        assert_eq!(
            decide(&stale, Some(seen), t0, seen + Duration::from_secs(1), grace),
            Some(false)
        );
        assert_eq!(
            decide(
                &stale,
                Some(seen),
                t0,
                seen + Duration::from_secs(30),
                grace
            ),
            None
        );
    }
}
