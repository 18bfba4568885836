//! What serves one cluster: its balancer, requests in flight per host,
//! outlier ejections, health-check verdicts, circuit breakers and metric
//! handles, with each host's upstream authority parsed once. A cluster
//! whose configuration a new snapshot leaves unchanged keeps this state
//! whole (the runtime shares it); a changed one carries over what still
//! applies.

use crate::breaker::{Breaker, InFlight};
use crate::config::ClusterConfig;
use crate::metrics::{LocalityMetrics, Metrics};
use hyper::http::uri::Authority;
use meridian_balance::{Balancer, HostId, Outcome, OutlierTracker, PickContext, Verdict};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct ClusterState {
    pub name: String,
    pub config: ClusterConfig,
    balancer: Mutex<Balancer>,
    /// Passive outlier detection, when the cluster asks for it.
    outliers: Option<Mutex<OutlierTracker>>,
    /// Requests in flight per host, indexed like the balancer's hosts.
    in_flight: Vec<Vec<AtomicU32>>,
    pub breaker: Arc<Breaker>,
    /// Each host's `ip:port` as a URI authority (`None`: not one), indexed
    /// like the balancer's hosts.
    authorities: Vec<Vec<Option<Authority>>>,
    /// Metric handles per locality, indexed like the balancer's localities.
    metrics: Vec<LocalityMetrics>,
    /// Why hosts are held out beyond what the control plane says, by
    /// address: (ejected, failing checks).
    held_out: Mutex<HashMap<String, (bool, bool)>>,
}

/// A host chosen for one try: counted in flight until dropped.
pub struct Chosen<'a> {
    pub id: HostId,
    pub address: &'a str,
    pub authority: Option<&'a Authority>,
    pub metrics: &'a LocalityMetrics,
    pub locality: &'a str,
    _in_flight: InFlight<'a>,
}

impl ClusterState {
    /// The state of cluster `name` with `config`: `previous` itself when
    /// the configuration is unchanged; otherwise new, keeping the
    /// breakers, ejections and failing checks that still apply.
    pub fn new(
        name: &str,
        config: &ClusterConfig,
        previous: Option<&Arc<ClusterState>>,
        metrics: &Metrics,
    ) -> Arc<ClusterState> {
        if let Some(previous) = previous.filter(|p| p.config == *config) {
            return previous.clone();
        }
        let hosts: Vec<&str> = config
            .localities
            .iter()
            .flat_map(|l| &l.hosts)
            .map(|h| h.address.as_str())
            .collect();
        let outliers = config.outlier.map(|policy| {
            Mutex::new(match previous.and_then(|p| p.outliers.as_ref()) {
                Some(old) => lock(old).carry_over(policy, &hosts),
                None => OutlierTracker::new(policy, hosts.len()),
            })
        });
        let state = ClusterState {
            name: name.to_string(),
            balancer: Mutex::new(Balancer::new(
                config.policy,
                config.localities.clone(),
                config.overprovisioning,
            )),
            outliers,
            in_flight: config
                .localities
                .iter()
                .map(|l| l.hosts.iter().map(|_| AtomicU32::new(0)).collect())
                .collect(),
            breaker: Breaker::for_limits(config.limits, previous.map(|p| &p.breaker)),
            authorities: config
                .localities
                .iter()
                .map(|l| l.hosts.iter().map(|h| h.address.parse().ok()).collect())
                .collect(),
            metrics: config
                .locality_names
                .iter()
                .map(|locality| metrics.locality(name, locality))
                .collect(),
            held_out: Mutex::new(HashMap::new()),
            config: config.clone(),
        };
        state.hold_out_carried_ejections();
        if let Some(previous) = previous {
            state.hold_out_carried_check_failures(previous);
        }
        Arc::new(state)
    }

    /// Keeps out the hosts that were failing their active health checks,
    /// when the checks are unchanged: a configuration update must not put
    /// a dead host back into rotation until its checks fail again.
    fn hold_out_carried_check_failures(&self, previous: &ClusterState) {
        let same_checks = self.config.health_check.is_some()
            && self.config.health_check == previous.config.health_check;
        if !same_checks {
            return;
        }
        let failing: Vec<String> = lock(&previous.held_out)
            .iter()
            .filter(|(_, (_, failing))| *failing)
            .map(|(address, _)| address.clone())
            .collect();
        for address in failing {
            if self.host_id(&address).is_some() {
                self.set_check(&address, false);
            }
        }
    }

    /// Takes the hosts that a carried-over outlier tracker still ejects out of rotation.
    fn hold_out_carried_ejections(&self) {
        let Some(tracker) = &self.outliers else {
            return;
        };
        let ejected: Vec<String> = lock(tracker).ejected_hosts().map(str::to_string).collect();
        for address in ejected {
            self.hold_out(&address, |flags| flags.0 = true);
        }
    }

    fn host_id(&self, address: &str) -> Option<HostId> {
        self.config
            .localities
            .iter()
            .enumerate()
            .find_map(|(l, locality)| {
                let h = locality.hosts.iter().position(|h| h.address == address)?;
                Some(HostId {
                    locality: l,
                    host: h,
                })
            })
    }

    /// A host (none of `avoid`, the hosts this request already failed on,
    /// while another is left), counted in flight until the guard drops.
    pub fn pick_host(
        &self,
        random: [u64; 3],
        hash: Option<u64>,
        avoid: &[HostId],
    ) -> Option<Chosen<'_>> {
        self.readmit_expired();
        let counter = |id: HostId| self.in_flight.get(id.locality)?.get(id.host);
        let loads = |id: HostId| counter(id).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
        let ctx = PickContext {
            random,
            hash,
            in_flight: &loads,
        };
        let id = lock(&self.balancer).pick_avoiding(&ctx, avoid)?;
        let host = self
            .config
            .localities
            .get(id.locality)?
            .hosts
            .get(id.host)?;
        Some(Chosen {
            id,
            address: &host.address,
            authority: self.authorities[id.locality][id.host].as_ref(),
            metrics: self.metrics.get(id.locality)?,
            locality: self
                .config
                .locality_names
                .get(id.locality)
                .map_or("", String::as_str),
            _in_flight: InFlight::enter(counter(id)?).0,
        })
    }

    /// Records a request's outcome at a host, ejecting it if it keeps
    /// failing (or cannot be connected to); true when this outcome ejected it.
    pub fn report(&self, address: &str, outcome: Outcome) -> bool {
        let Some(tracker) = &self.outliers else {
            return false;
        };
        let verdict = lock(tracker).record(address, outcome, Instant::now());
        match verdict {
            Some(verdict) => {
                tracing::info!(cluster = %self.name, ?verdict, ?outcome, "outlier detection");
                self.act(verdict);
                true
            }
            None => false,
        }
    }

    /// Readmits hosts whose ejection has run out.
    fn readmit_expired(&self) {
        let Some(tracker) = &self.outliers else {
            return;
        };
        let verdicts = lock(tracker).expire(Instant::now());
        for verdict in verdicts {
            tracing::info!(cluster = %self.name, ?verdict, "outlier detection");
            self.act(verdict);
        }
    }

    fn act(&self, verdict: Verdict) {
        let (address, ejected) = match &verdict {
            Verdict::Eject(a) => (a.as_str(), true),
            Verdict::Readmit(a) => (a.as_str(), false),
        };
        self.hold_out(address, |flags| flags.0 = ejected);
    }

    /// Records an active health check's verdict for a host.
    pub fn set_check(&self, address: &str, up: bool) {
        self.hold_out(address, |flags| flags.1 = !up);
    }

    /// A host takes traffic when the control plane says healthy, it is not
    /// ejected, and its health checks pass.
    fn hold_out(&self, address: &str, change: impl FnOnce(&mut (bool, bool))) {
        let flags = {
            let mut held = lock(&self.held_out);
            let flags = held.entry(address.to_string()).or_default();
            change(flags);
            *flags
        };
        let Some(id) = self.host_id(address) else {
            return;
        };
        let eds_healthy = self.config.localities[id.locality].hosts[id.host].healthy;
        lock(&self.balancer).set_healthy(id, eds_healthy && !flags.0 && !flags.1);
    }

    /// Every host with its health, for /clusters.
    pub fn hosts(&self) -> Vec<HostRow> {
        let held = lock(&self.held_out).clone();
        let balancer = lock(&self.balancer);
        let mut rows = Vec::new();
        for locality in balancer.localities() {
            for host in &locality.hosts {
                let (ejected, failing_checks) =
                    held.get(&host.address).copied().unwrap_or_default();
                rows.push(HostRow {
                    cluster: self.name.clone(),
                    address: host.address.clone(),
                    priority: locality.priority,
                    healthy: host.healthy,
                    weight: host.weight,
                    ejected,
                    failing_checks,
                });
            }
        }
        rows
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
