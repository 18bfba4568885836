//! A route configuration compiled when it is installed: virtual hosts found
//! by a hash of the lowercase authority, each route's weighted clusters
//! resolved to their state. A request's lookup allocates nothing (unless
//! its authority has capitals).

use crate::cluster::ClusterState;
use crate::config::{Route, VirtualHost};
use std::collections::HashMap;
use std::sync::Arc;

pub struct RouteTable {
    vhosts: Vec<Vec<CompiledRoute>>,
    /// Domain → the first virtual host that names it.
    by_domain: foldhash::HashMap<String, usize>,
    /// The first virtual host with the domain `*`.
    wildcard: Option<usize>,
}

pub struct CompiledRoute {
    pub config: Route,
    /// The route's clusters with their weights; `None` for a cluster the
    /// configuration does not hold.
    targets: Vec<(Option<Arc<ClusterState>>, u32)>,
    total_weight: u64,
}

/// Where a route sends a request: a cluster's state, or the name of one
/// the configuration does not hold.
pub enum Target<'a> {
    Cluster(&'a Arc<ClusterState>),
    Unknown(&'a str),
}

impl RouteTable {
    pub fn new(vhosts: &[VirtualHost], clusters: &HashMap<String, Arc<ClusterState>>) -> Self {
        let mut by_domain = foldhash::HashMap::default();
        let mut wildcard = None;
        for (i, vhost) in vhosts.iter().enumerate() {
            for domain in &vhost.domains {
                if domain == "*" {
                    wildcard.get_or_insert(i);
                } else {
                    by_domain.entry(domain.clone()).or_insert(i);
                }
            }
        }
        let vhosts = vhosts
            .iter()
            .map(|vhost| {
                vhost
                    .routes
                    .iter()
                    .map(|route| CompiledRoute::new(route, clusters))
                    .collect()
            })
            .collect();
        RouteTable {
            vhosts,
            by_domain,
            wildcard,
        }
    }

    /// The route for `authority` (a host, with or without a port, in any
    /// case) and `path`: the first virtual host naming the authority or
    /// `*`, else the first naming the host without its port; its first
    /// route whose prefix the path starts with.
    pub fn route(&self, authority: &str, path: &str) -> Option<&CompiledRoute> {
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let exact = self.by_domain.get(host).copied();
        let vhost = match (exact, self.wildcard) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .or_else(|| {
            let (bare, _port) = host.rsplit_once(':')?;
            self.by_domain.get(bare).copied()
        })?;
        self.vhosts[vhost]
            .iter()
            .find(|r| path.starts_with(&r.config.prefix))
    }
}

impl CompiledRoute {
    fn new(route: &Route, clusters: &HashMap<String, Arc<ClusterState>>) -> Self {
        CompiledRoute {
            targets: route
                .clusters
                .iter()
                .map(|(name, weight)| (clusters.get(name).cloned(), *weight))
                .collect(),
            total_weight: route.clusters.iter().map(|(_, w)| u64::from(*w)).sum(),
            config: route.clone(),
        }
    }

    /// A cluster of the route by the route's weights, for a uniform
    /// `random`; `None` when every weight is zero.
    pub fn pick(&self, random: u64) -> Option<Target<'_>> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = random % self.total_weight;
        for (i, (state, weight)) in self.targets.iter().enumerate() {
            if point < u64::from(*weight) {
                return Some(match state {
                    Some(state) => Target::Cluster(state),
                    None => Target::Unknown(&self.config.clusters[i].0),
                });
            }
            point -= u64::from(*weight);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vhost(name: &str, domains: &[&str], prefixes: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: prefixes
                .iter()
                .map(|prefix| Route {
                    prefix: prefix.to_string(),
                    clusters: vec![(format!("{name}{prefix}"), 1)],
                    timeout: None,
                    retry: None,
                    hash: None,
                })
                .collect(),
        }
    }

    fn found(table: &RouteTable, authority: &str, path: &str) -> Option<String> {
        let route = table.route(authority, path)?;
        Some(route.config.clusters[0].0.clone())
    }

    #[test]
    fn finds_virtual_hosts_as_the_linear_scan_did() {
        let table = RouteTable::new(
            &[
                vhost("a", &["web.shop", "web.shop:80"], &["/api", "/"]),
                vhost("any", &["*"], &["/"]),
                vhost("b", &["late.shop"], &["/"]),
            ],
            &HashMap::new(),
        );
        assert_eq!(
            found(&table, "web.shop", "/api/x").as_deref(),
            Some("a/api")
        );
        assert_eq!(found(&table, "WEB.Shop:80", "/x").as_deref(), Some("a/"));
        // The port is dropped only when the whole authority names nothing.
        assert_eq!(found(&table, "web.shop:8080", "/").as_deref(), Some("any/"));
        // `*` comes before `b`: the first virtual host that matches wins.
        assert_eq!(found(&table, "late.shop", "/").as_deref(), Some("any/"));
        let no_wildcard = RouteTable::new(&[vhost("a", &["web.shop"], &["/api"])], &HashMap::new());
        assert_eq!(
            found(&no_wildcard, "web.shop:9", "/api").as_deref(),
            Some("a/api")
        );
        assert_eq!(found(&no_wildcard, "web.shop", "/other"), None);
        assert_eq!(found(&no_wildcard, "other.shop", "/api"), None);
    }

    #[test]
    fn picks_clusters_by_weight_and_names_unknown_ones() {
        let mut route = vhost("a", &["x"], &["/"]);
        route.routes[0].clusters = vec![("gone".into(), 1), ("zero".into(), 0)];
        let table = RouteTable::new(&[route], &HashMap::new());
        let compiled = table.route("x", "/").expect("route");
        for random in 0..10 {
            assert!(matches!(
                compiled.pick(random),
                Some(Target::Unknown("gone"))
            ));
        }
        let mut weightless = vhost("a", &["x"], &["/"]);
        weightless.routes[0].clusters = vec![("zero".into(), 0)];
        let table = RouteTable::new(&[weightless], &HashMap::new());
        assert!(table.route("x", "/").expect("route").pick(7).is_none());
    }
}
