//! What serves requests: the current configuration, a balancer per cluster,
//! in-flight counts for least request, and request counters. Rebuilt when a
//! new configuration is accepted; circuit breakers and outlier ejections
//! carry over for the clusters and hosts that are still there.

use crate::breaker::{Breaker, InFlight};
use crate::config::{Route, Snapshot};
use meridian_balance::{hash64, Balancer, HostId, Outcome, OutlierTracker, PickContext, Verdict};
use std::time::Instant;
use std::{
    collections::HashMap,
    sync::Arc,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex,
    },
};

pub struct Runtime {
    pub snapshot: Snapshot,
    balancers: HashMap<String, Mutex<Balancer>>,
    /// Passive outlier detection, for clusters that ask for it.
    outliers: HashMap<String, Mutex<OutlierTracker>>,
    /// Requests in flight per host, indexed like the balancer's hosts.
    in_flight: HashMap<String, Vec<Vec<AtomicU32>>>,
    random: AtomicU64,
    /// Circuit breakers per cluster.
    breakers: HashMap<String, Arc<Breaker>>,
    /// Each host's locality (`region/zone/sub_zone`), for metrics.
    localities: HashMap<String, HashMap<String, String>>,
    /// Why hosts are held out beyond what the control plane says: (ejected, failing checks).
    held_out: Mutex<HashMap<(String, String), (bool, bool)>>,
}

impl Runtime {
    /// The runtime of `snapshot`; circuit breakers whose limits did not
    /// change carry over from `previous`.
    pub fn new(snapshot: Snapshot, previous: Option<&Runtime>) -> Self {
        let balancers = snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    Mutex::new(Balancer::new(
                        c.policy,
                        c.localities.clone(),
                        c.overprovisioning,
                    )),
                )
            })
            .collect();
        let outliers = snapshot
            .clusters
            .iter()
            .filter_map(|(name, c)| {
                let policy = c.outlier?;
                let hosts: Vec<&str> = c
                    .localities
                    .iter()
                    .flat_map(|l| &l.hosts)
                    .map(|h| h.address.as_str())
                    .collect();
                let tracker = match previous.and_then(|p| p.outliers.get(name)) {
                    Some(old) => old
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .carry_over(policy, &hosts),
                    None => OutlierTracker::new(policy, hosts.len()),
                };
                Some((name.clone(), Mutex::new(tracker)))
            })
            .collect();
        let in_flight = snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                let counters = c
                    .localities
                    .iter()
                    .map(|l| l.hosts.iter().map(|_| AtomicU32::new(0)).collect())
                    .collect();
                (name.clone(), counters)
            })
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let mut runtime = Runtime {
            snapshot,
            balancers,
            outliers,
            in_flight,
            random: AtomicU64::new(seed),
            held_out: Mutex::new(HashMap::new()),
            breakers: HashMap::new(),
            localities: HashMap::new(),
        };
        runtime.localities = runtime
            .snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                let by_host = c
                    .localities
                    .iter()
                    .zip(&c.locality_names)
                    .flat_map(|(l, label)| {
                        l.hosts
                            .iter()
                            .map(move |h| (h.address.clone(), label.clone()))
                    })
                    .collect();
                (name.clone(), by_host)
            })
            .collect();
        runtime.breakers = runtime
            .snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                let previous = previous.and_then(|p| p.breakers.get(name));
                (name.clone(), Breaker::for_limits(c.limits, previous))
            })
            .collect();
        runtime.hold_out_carried_ejections();
        if let Some(previous) = previous {
            runtime.hold_out_carried_check_failures(previous);
        }
        runtime
    }

    /// Keeps out the hosts that were failing their active health checks, in
    /// clusters whose checks are unchanged: a configuration update (of any
    /// other service) must not put a dead host back into rotation until its
    /// checks fail again.
    fn hold_out_carried_check_failures(&self, previous: &Runtime) {
        let failing: Vec<(String, String)> = previous
            .held_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (_, failing))| *failing)
            .map(|(key, _)| key.clone())
            .collect();
        for (cluster, address) in failing {
            let same_checks = match (
                self.snapshot.clusters.get(&cluster),
                previous.snapshot.clusters.get(&cluster),
            ) {
                (Some(now), Some(before)) => {
                    now.health_check.is_some() && now.health_check == before.health_check
                }
                _ => false,
            };
            let still_there = self
                .localities
                .get(&cluster)
                .is_some_and(|hosts| hosts.contains_key(&address));
            if same_checks && still_there {
                self.set_check(&cluster, &address, false);
            }
        }
    }

    /// Takes the hosts that a carried-over outlier tracker still ejects out of rotation.
    fn hold_out_carried_ejections(&self) {
        for (cluster, tracker) in &self.outliers {
            let ejected: Vec<String> = tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ejected_hosts()
                .map(str::to_string)
                .collect();
            for address in ejected {
                self.hold_out(cluster, &address, |flags| flags.0 = true);
            }
        }
    }

    /// The cluster's circuit breakers.
    pub fn breaker(&self, cluster: &str) -> Option<&Breaker> {
        self.breakers.get(cluster).map(|b| &**b)
    }

    fn next_random(&self) -> u64 {
        let x = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        hash64(&x.to_le_bytes())
    }

    /// A cluster of the route, by the route's weights.
    pub fn pick_cluster<'r>(&self, route: &'r Route) -> Option<&'r str> {
        let total: u64 = route.clusters.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut point = self.next_random() % total;
        for (name, weight) in &route.clusters {
            if point < u64::from(*weight) {
                return Some(name);
            }
            point -= u64::from(*weight);
        }
        None
    }

    /// A host of the cluster (its id and address), counted in flight until
    /// the guard drops; none of `avoid`, the hosts this request already
    /// failed on, while another is left.
    pub fn pick_host(
        &self,
        cluster: &str,
        hash: Option<u64>,
        avoid: &[HostId],
    ) -> Option<(HostId, String, InFlight<'_>)> {
        self.readmit_expired(cluster);
        let balancer = self.balancers.get(cluster)?;
        let counters = self.in_flight.get(cluster)?;
        let counter = |id: HostId| counters.get(id.locality).and_then(|l| l.get(id.host));
        let loads = |id: HostId| counter(id).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
        let mut balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = PickContext {
            random: [self.next_random(), self.next_random(), self.next_random()],
            hash,
            in_flight: &loads,
        };
        let id = balancer.pick_avoiding(&ctx, avoid)?;
        let address = balancer.host(id)?.address.clone();
        Some((id, address, InFlight::enter(counter(id)?).0))
    }

    /// The host's locality, `region/zone/sub_zone`.
    pub fn locality(&self, cluster: &str, host: &str) -> &str {
        self.localities
            .get(cluster)
            .and_then(|hosts| hosts.get(host))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Records a request's outcome at a host, ejecting it if it keeps
    /// failing (or cannot be connected to); true when this outcome ejected it.
    pub fn report(&self, cluster: &str, address: &str, outcome: Outcome) -> bool {
        let Some(tracker) = self.outliers.get(cluster) else {
            return false;
        };
        let verdict = tracker.lock().unwrap_or_else(|p| p.into_inner()).record(
            address,
            outcome,
            Instant::now(),
        );
        match verdict {
            Some(verdict) => {
                tracing::info!(%cluster, ?verdict, ?outcome, "outlier detection");
                self.act(cluster, verdict);
                true
            }
            None => false,
        }
    }

    /// Readmits hosts whose ejection has run out.
    fn readmit_expired(&self, cluster: &str) {
        let Some(tracker) = self.outliers.get(cluster) else {
            return;
        };
        let verdicts = tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(Instant::now());
        for verdict in verdicts {
            tracing::info!(%cluster, ?verdict, "outlier detection");
            self.act(cluster, verdict);
        }
    }

    fn act(&self, cluster: &str, verdict: Verdict) {
        let (address, ejected) = match &verdict {
            Verdict::Eject(a) => (a.clone(), true),
            Verdict::Readmit(a) => (a.clone(), false),
        };
        self.hold_out(cluster, &address, |flags| flags.0 = ejected);
    }

    /// Records an active health check's verdict for a host.
    pub fn set_check(&self, cluster: &str, address: &str, up: bool) {
        self.hold_out(cluster, address, |flags| flags.1 = !up);
    }

    /// A host takes traffic when the control plane says healthy, it is not
    /// ejected, and its health checks pass.
    fn hold_out(&self, cluster: &str, address: &str, change: impl FnOnce(&mut (bool, bool))) {
        let flags = {
            let mut held = self.held_out.lock().unwrap_or_else(|p| p.into_inner());
            let flags = held
                .entry((cluster.to_string(), address.to_string()))
                .or_default();
            change(flags);
            *flags
        };
        let Some(balancer) = self.balancers.get(cluster) else {
            return;
        };
        let eds_healthy = self
            .snapshot
            .clusters
            .get(cluster)
            .and_then(|c| {
                c.localities
                    .iter()
                    .flat_map(|l| &l.hosts)
                    .find(|h| h.address == address)
            })
            .is_some_and(|h| h.healthy);
        let mut balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
        let id = balancer
            .hosts()
            .find(|(_, h)| h.address == address)
            .map(|(id, _)| id);
        if let Some(id) = id {
            balancer.set_healthy(id, eds_healthy && !flags.0 && !flags.1);
        }
    }

    /// Every host of every cluster with its health, for /clusters.
    pub fn hosts(&self) -> Vec<HostRow> {
        let held = self
            .held_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut rows = Vec::new();
        for (cluster, balancer) in &self.balancers {
            let balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
            for locality in balancer.localities() {
                for host in &locality.hosts {
                    let (ejected, failing_checks) = held
                        .get(&(cluster.clone(), host.address.clone()))
                        .copied()
                        .unwrap_or_default();
                    rows.push(HostRow {
                        cluster: cluster.clone(),
                        address: host.address.clone(),
                        priority: locality.priority,
                        healthy: host.healthy,
                        weight: host.weight,
                        ejected,
                        failing_checks,
                    });
                }
            }
        }
        rows.sort_by(|a, b| (&a.cluster, &a.address).cmp(&(&b.cluster, &b.address)));
        rows
    }
}

/// One host as /clusters shows it: `healthy` is whether it takes traffic;
/// `ejected` and `failing_checks` say why not, beyond the control plane's word.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostRow {
    pub cluster: String,
    pub address: String,
    pub priority: u32,
    pub healthy: bool,
    pub weight: u32,
    pub ejected: bool,
    pub failing_checks: bool,
}
