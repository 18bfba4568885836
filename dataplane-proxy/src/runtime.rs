//! What serves requests: the current configuration, a balancer per cluster,
//! in-flight counts for least request, and request counters. Replaced
//! wholesale when a new configuration is accepted.

use crate::config::{Route, Snapshot};
use meridian_balance::{hash64, Balancer, HostId, OutlierTracker, PickContext, Verdict};
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
    /// Requests in flight per cluster, for its circuit breaker.
    active: HashMap<String, AtomicU32>,
    /// Each host's locality (`region/zone/sub_zone`), for metrics.
    localities: HashMap<String, HashMap<String, String>>,
    /// Circuit breakers' connection slots per cluster: (slots, pending, max pending).
    connections: HashMap<String, (Arc<tokio::sync::Semaphore>, AtomicU32, u32)>,
    /// Retries in flight per cluster, for the retry budget.
    retries: HashMap<String, AtomicU32>,
    /// Why hosts are held out beyond what the control plane says: (ejected, failing checks).
    held_out: Mutex<HashMap<(String, String), (bool, bool)>>,
}

/// Counts a request to a host while it is in flight.
pub struct InFlight<'a> {
    counter: Option<&'a AtomicU32>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.counter {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Runtime {
    pub fn new(snapshot: Snapshot) -> Self {
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
                let hosts = c.localities.iter().map(|l| l.hosts.len()).sum();
                Some((
                    name.clone(),
                    Mutex::new(OutlierTracker::new(c.outlier?, hosts)),
                ))
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
            active: HashMap::new(),
            retries: HashMap::new(),
            localities: HashMap::new(),
            connections: HashMap::new(),
        };
        runtime.connections = runtime
            .snapshot
            .clusters
            .iter()
            .filter_map(|(name, c)| {
                let limits = c.limits?;
                let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections as usize));
                Some((
                    name.clone(),
                    (slots, AtomicU32::new(0), limits.max_pending_requests),
                ))
            })
            .collect();
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
        runtime.retries = runtime
            .snapshot
            .clusters
            .keys()
            .map(|c| (c.clone(), AtomicU32::new(0)))
            .collect();
        runtime.active = runtime
            .snapshot
            .clusters
            .keys()
            .map(|c| (c.clone(), AtomicU32::new(0)))
            .collect();
        runtime
    }

    /// Admits a request to the cluster unless its circuit breaker is open.
    pub fn admit(&self, cluster: &str) -> Option<InFlight<'_>> {
        let counter = self.active.get(cluster)?;
        let limit = self
            .snapshot
            .clusters
            .get(cluster)?
            .limits
            .map(|l| l.max_requests)
            .unwrap_or(u32::MAX);
        let previous = counter.fetch_add(1, Ordering::Relaxed);
        let admitted = InFlight {
            counter: Some(counter),
        };
        (previous < limit).then_some(admitted)
    }

    /// Whether the host is within its connection limit, counting the request
    /// just picked for it.
    /// A connection slot to the cluster: at once if one of `maxConnections`
    /// is free, else after waiting (at most `wait`) as one of at most
    /// `maxPendingRequests` pending requests; refused beyond that.
    pub async fn connection(
        &self,
        cluster: &str,
        wait: std::time::Duration,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
        let Some((slots, pending, max_pending)) = self.connections.get(cluster) else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        if pending.fetch_add(1, Ordering::Relaxed) >= *max_pending {
            pending.fetch_sub(1, Ordering::Relaxed);
            return Err(());
        }
        let permit = tokio::time::timeout(wait, slots.clone().acquire_owned()).await;
        pending.fetch_sub(1, Ordering::Relaxed);
        match permit {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(()),
        }
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

    /// A host of the cluster (its address), counted in flight until the guard drops.
    pub fn pick_host(
        &self,
        cluster: &str,
        hash: Option<u64>,
        avoid: Option<&str>,
    ) -> Option<(String, InFlight<'_>)> {
        self.readmit_expired(cluster);
        let balancer = self.balancers.get(cluster)?;
        let counters = self.in_flight.get(cluster)?;
        let counter = |id: HostId| counters.get(id.locality).and_then(|l| l.get(id.host));
        let loads = |id: HostId| counter(id).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
        let mut balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
        let mut chosen = None;
        // A retry tries another host when there is one.
        for _ in 0..3 {
            let ctx = PickContext {
                random: [self.next_random(), self.next_random(), self.next_random()],
                hash,
                in_flight: &loads,
            };
            let id = balancer.pick(&ctx)?;
            let address = balancer.host(id)?.address.clone();
            let is_avoided = avoid == Some(address.as_str());
            chosen = Some((address, id));
            if !is_avoided || hash.is_some() {
                break;
            }
        }
        let (address, id) = chosen?;
        let counter = counter(id);
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Some((address, InFlight { counter }))
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
    /// failing; true when this outcome ejected it.
    pub fn report(&self, cluster: &str, address: &str, failed: bool) -> bool {
        let Some(tracker) = self.outliers.get(cluster) else {
            return false;
        };
        let verdict = tracker.lock().unwrap_or_else(|p| p.into_inner()).record(
            address,
            failed,
            Instant::now(),
        );
        match verdict {
            Some(verdict) => {
                tracing::info!(%cluster, ?verdict, "outlier detection");
                self.act(cluster, verdict);
                true
            }
            None => false,
        }
    }

    /// Admits a retry unless retries in flight already reach the budget:
    /// a fifth of the cluster's requests in flight, and at least three.
    pub fn admit_retry(&self, cluster: &str) -> Option<InFlight<'_>> {
        let retries = self.retries.get(cluster)?;
        let active = self
            .active
            .get(cluster)
            .map(|a| a.load(Ordering::Relaxed))
            .unwrap_or(0);
        let budget = (active / 5).max(3);
        let previous = retries.fetch_add(1, Ordering::Relaxed);
        let admitted = InFlight {
            counter: Some(retries),
        };
        (previous < budget).then_some(admitted)
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

    /// Hosts per cluster with health, for /clusters.
    pub fn hosts(&self) -> Vec<(String, String, u32, bool, u32)> {
        let mut rows = Vec::new();
        for (cluster, balancer) in &self.balancers {
            let balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
            for locality in balancer.localities() {
                for host in &locality.hosts {
                    rows.push((
                        cluster.clone(),
                        host.address.clone(),
                        locality.priority,
                        host.healthy,
                        host.weight,
                    ));
                }
            }
        }
        rows.sort();
        rows
    }
}
