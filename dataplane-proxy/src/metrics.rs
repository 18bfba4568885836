//! The proxy's Prometheus metrics.

use meridian_identity::expiry::ExpiryGauge;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    cluster: String,
    locality: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
    locality: String,
}

pub struct Metrics {
    registry: Registry,
    pub certificate_expiry: ExpiryGauge,
    requests: Family<Labels, Counter>,
    latency: Family<ClusterLabels, Histogram>,
    ejections: Family<ClusterLabels, Counter>,
    retries: Family<ClusterOnly, Counter>,
    config_updates: Counter,
    config_updated_at: Gauge,
    connections_refused: Counter,
    open_connections: Gauge,
    accepted: Family<WorkerLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterOnly {
    cluster: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian_proxy");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by cluster, locality of the host chosen, and outcome",
            requests.clone(),
        );
        let latency = Family::<ClusterLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to about 16 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to the upstream's response headers, retries included",
            latency.clone(),
        );
        let certificate_expiry = ExpiryGauge::register(
            &mut registry,
            "Seconds until the proxy's mesh certificate expires (absent without one)",
        );
        let ejections = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "ejections",
            "Hosts ejected by outlier detection",
            ejections.clone(),
        );
        let retries = Family::<ClusterOnly, Counter>::default();
        registry.register(
            "retries",
            "Tries after a request's first: to another host, or the next priority",
            retries.clone(),
        );
        let config_updates = Counter::default();
        registry.register(
            "config_updates",
            "Configurations from the control plane (or the saved state) installed",
            config_updates.clone(),
        );
        let config_updated_at = Gauge::default();
        registry.register(
            "config_updated_timestamp_seconds",
            "When the configuration now served was installed (Unix seconds)",
            config_updated_at.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed on arrival: the proxy held --max-connections",
            connections_refused.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections held now, every listener (at most --max-connections)",
            open_connections.clone(),
        );
        let accepted = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "worker_connections",
            "Client connections accepted on the outbound listeners, by worker thread",
            accepted.clone(),
        );
        Metrics {
            accepted,
            registry,
            certificate_expiry,
            requests,
            latency,
            ejections,
            retries,
            config_updates,
            config_updated_at,
            connections_refused,
            open_connections,
        }
    }
}

/// The metrics of one locality of a cluster, resolved once when the
/// cluster's configuration is installed: a request counts without building
/// labels or looking them up.
#[derive(Clone)]
pub struct LocalityMetrics {
    ok: Counter,
    upstream_5xx: Counter,
    latency: Histogram,
    ejections: Counter,
}

impl LocalityMetrics {
    /// Counts a response from the upstream (`ok`, or `upstream_5xx`).
    pub fn answered(&self, server_error: bool) {
        if server_error {
            self.upstream_5xx.inc();
        } else {
            self.ok.inc();
        }
    }

    pub fn observe(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    pub fn ejected(&self) {
        self.ejections.inc();
    }
}

impl Metrics {
    /// The handles of `cluster`'s `locality`.
    pub fn locality(&self, cluster: &str, locality: &str) -> LocalityMetrics {
        let outcome = |outcome: &str| {
            self.requests
                .get_or_create(&Labels {
                    cluster: cluster.to_string(),
                    locality: locality.to_string(),
                    outcome: outcome.to_string(),
                })
                .clone()
        };
        let labels = ClusterLabels {
            cluster: cluster.to_string(),
            locality: locality.to_string(),
        };
        LocalityMetrics {
            ok: outcome("ok"),
            upstream_5xx: outcome("upstream_5xx"),
            latency: self.latency.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
        }
    }

    /// Counts a request's outcome; `locality` is empty when no host was chosen.
    pub fn count(&self, cluster: &str, locality: &str, outcome: &str) {
        self.requests
            .get_or_create(&Labels {
                cluster: cluster.to_string(),
                locality: locality.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn retried(&self, cluster: &str) {
        self.retries
            .get_or_create(&ClusterOnly {
                cluster: cluster.to_string(),
            })
            .inc();
    }

    pub fn config_installed(&self) {
        self.config_updates.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.config_updated_at.set(now);
    }

    /// The counter of connections worker `worker` accepts.
    pub fn worker_connections(&self, worker: usize) -> Counter {
        self.accepted
            .get_or_create(&WorkerLabels {
                worker: worker as u64,
            })
            .clone()
    }

    /// The gauge of client connections held now.
    pub fn open_connections(&self) -> Gauge {
        self.open_connections.clone()
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn render(&self) -> String {
        self.certificate_expiry.refresh();
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}
