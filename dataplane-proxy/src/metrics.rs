//! The proxy's Prometheus metrics.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    cluster: String,
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian_proxy");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests by cluster and outcome",
            requests.clone(),
        );
        Metrics { registry, requests }
    }
}

impl Metrics {
    pub fn count(&self, cluster: &str, outcome: &str) {
        self.requests
            .get_or_create(&Labels {
                cluster: cluster.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}
