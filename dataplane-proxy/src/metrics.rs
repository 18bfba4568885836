//! The proxy's Prometheus metrics.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

pub struct Metrics {
    registry: Registry,
    certificate_expiry: Family<IdentityLabels, Gauge>,
    credentials: std::sync::OnceLock<std::sync::Arc<meridian_identity::tls::Credentials>>,
    requests: Family<Labels, Counter>,
    latency: Family<ClusterLabels, Histogram>,
    ejections: Family<ClusterLabels, Counter>,
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
        let certificate_expiry = Family::<IdentityLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until the proxy's mesh certificate expires (absent without one)",
            certificate_expiry.clone(),
        );
        let ejections = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "ejections",
            "Hosts ejected by outlier detection",
            ejections.clone(),
        );
        Metrics {
            registry,
            certificate_expiry,
            credentials: std::sync::OnceLock::new(),
            requests,
            latency,
            ejections,
        }
    }
}

impl Metrics {
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

    pub fn observe(&self, cluster: &str, locality: &str, seconds: f64) {
        self.latency
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
                locality: locality.to_string(),
            })
            .observe(seconds);
    }

    pub fn ejected(&self, cluster: &str, locality: &str) {
        self.ejections
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
                locality: locality.to_string(),
            })
            .inc();
    }

    /// Reports the expiry of the certificate in `credentials` from now on.
    pub fn track_certificate(
        &self,
        credentials: std::sync::Arc<meridian_identity::tls::Credentials>,
    ) {
        let _ = self.credentials.set(credentials);
    }

    pub fn render(&self) -> String {
        if let Some((id, seconds)) = self.credentials.get().and_then(|c| c.expiry()) {
            self.certificate_expiry.clear();
            self.certificate_expiry
                .get_or_create(&IdentityLabels {
                    identity: id.to_string(),
                })
                .set(seconds);
        }
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}
