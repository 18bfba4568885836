//! What serves requests: the current configuration, compiled when it is
//! installed into a route table per HTTP listener and a state per cluster.
//! A cluster the new configuration leaves unchanged keeps its state whole
//! (balancer position, requests in flight, ejections, health-check
//! verdicts, breakers); a changed one carries over what still applies.

use crate::cluster::{ClusterState, HostRow};
use crate::config::{ListenerKind, Snapshot};
use crate::metrics::Metrics;
use crate::route_table::RouteTable;
use std::{collections::HashMap, sync::Arc};

pub struct Runtime {
    pub snapshot: Snapshot,
    clusters: HashMap<String, Arc<ClusterState>>,
    /// The route table of each HTTP listener, by port.
    routes: foldhash::HashMap<u16, Arc<RouteTable>>,
}

impl Runtime {
    /// The runtime of `snapshot`, keeping from `previous` the state of the
    /// clusters that are still there.
    pub fn new(snapshot: Snapshot, previous: Option<&Runtime>, metrics: &Metrics) -> Self {
        let clusters: HashMap<String, Arc<ClusterState>> = snapshot
            .clusters
            .iter()
            .map(|(name, config)| {
                let previous = previous.and_then(|p| p.clusters.get(name));
                (
                    name.clone(),
                    ClusterState::new(name, config, previous, metrics),
                )
            })
            .collect();
        let tables: HashMap<&String, Arc<RouteTable>> = snapshot
            .routes
            .iter()
            .map(|(name, vhosts)| (name, Arc::new(RouteTable::new(vhosts, &clusters))))
            .collect();
        let routes = snapshot
            .listeners
            .iter()
            .filter_map(|(port, kind)| match kind {
                ListenerKind::Http(route) => Some((*port, tables.get(route)?.clone())),
                ListenerKind::Tcp(_) => None,
            })
            .collect();
        Runtime {
            snapshot,
            clusters,
            routes,
        }
    }

    /// The route table of the HTTP listener on `port`.
    pub fn routes(&self, port: u16) -> Option<&RouteTable> {
        self.routes.get(&port).map(|t| &**t)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)
    }

    /// Records an active health check's verdict for a host.
    pub fn set_check(&self, cluster: &str, address: &str, up: bool) {
        if let Some(state) = self.clusters.get(cluster) {
            state.set_check(address, up);
        }
    }

    /// Every host of every cluster with its health, for /clusters.
    pub fn hosts(&self) -> Vec<HostRow> {
        let mut rows: Vec<HostRow> = self.clusters.values().flat_map(|c| c.hosts()).collect();
        rows.sort_by(|a, b| (&a.cluster, &a.address).cmp(&(&b.cluster, &b.address)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_cluster_of, ClusterConfig};
    use std::collections::BTreeMap;

    fn two_hosts() -> ClusterConfig {
        test_cluster_of(&["10.0.0.1:80", "10.0.0.2:80"])
    }

    fn snapshot(clusters: &[(&str, ClusterConfig)]) -> Snapshot {
        Snapshot {
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            clusters: clusters
                .iter()
                .map(|(name, c)| (name.to_string(), c.clone()))
                .collect(),
        }
    }

    fn next_host(runtime: &Runtime, cluster: &str) -> String {
        let state = runtime.cluster(cluster).expect("cluster");
        let host = state
            .pick_host(crate::random::three(), None, &[])
            .expect("host");
        host.address.to_string()
    }

    #[test]
    fn an_unchanged_cluster_keeps_its_balancer_across_updates() {
        let metrics = Metrics::default();
        let first = Runtime::new(snapshot(&[("a", two_hosts())]), None, &metrics);
        let picked = next_host(&first, "a");
        // Another cluster arrives; `a` is unchanged: round robin goes on
        // where it was instead of starting over on the same host.
        let second = Runtime::new(
            snapshot(&[("a", two_hosts()), ("b", two_hosts())]),
            Some(&first),
            &metrics,
        );
        assert_ne!(next_host(&second, "a"), picked);
        // A changed cluster starts afresh.
        let mut heavier = two_hosts();
        heavier.localities[0].hosts[1].weight = 2;
        let third = Runtime::new(snapshot(&[("a", heavier)]), Some(&second), &metrics);
        assert!(!Arc::ptr_eq(
            third.cluster("a").expect("a"),
            second.cluster("a").expect("a")
        ));
    }
}
