//! Metrics of the path a change takes through this node: its Raft
//! proposals, the federation batches it commits, and the xDS pushes it
//! makes. Each is a cheap handle (clones share the counters) held by the
//! code on that path; `Metrics` registers them once.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

/// A histogram of seconds, from a millisecond to about half a minute.
#[derive(Clone)]
struct Seconds(Histogram);

impl Default for Seconds {
    fn default() -> Self {
        Seconds(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

/// A histogram of counts, from 1 to about 16,000.
#[derive(Clone)]
struct Sizes(Histogram);

impl Default for Sizes {
    fn default() -> Self {
        Sizes(Histogram::new(exponential_buckets(1.0, 2.0, 15)))
    }
}

/// The label for an xDS type URL: one of Meridian's four types, or
/// `other` (a client names types as it likes; labels stay bounded).
pub fn xds_type(type_url: &str) -> &'static str {
    match type_url.rsplit('.').next() {
        Some("Listener") => "listener",
        Some("RouteConfiguration") => "route",
        Some("Cluster") => "cluster",
        Some("ClusterLoadAssignment") => "endpoint",
        _ => "other",
    }
}

/// Raft proposals made on this node, by outcome, and their latency.
#[derive(Clone, Default)]
pub struct ProposalMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    latency: Seconds,
}

impl ProposalMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "raft_proposals",
            "Raft proposals made on this node, by outcome (committed, not_leader, error)",
            self.outcomes.clone(),
        );
        registry.register(
            "raft_proposal_duration_seconds",
            "Time from proposing an entry on this node to its apply here",
            self.latency.0.clone(),
        );
    }

    pub fn observe(&self, outcome: &'static str, took: Duration) {
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == "committed" {
            self.latency.0.observe(took.as_secs_f64());
        }
    }
}

/// What the xDS server sends and hears back.
#[derive(Clone, Default)]
pub struct XdsMetrics {
    pushes: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
    streams: Family<ProtocolLabels, Gauge>,
    change_to_ack: Seconds,
}

impl XdsMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "xds_pushes",
            "xDS responses sent, by resource type",
            self.pushes.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses a client refused (NACK), by resource type",
            self.nacks.clone(),
        );
        registry.register(
            "xds_streams",
            "Connected ADS streams, by protocol (sotw, delta)",
            self.streams.clone(),
        );
        registry.register(
            "xds_change_to_ack_seconds",
            "Time from a change's apply on this node to a client's ACK of the push carrying it",
            self.change_to_ack.0.clone(),
        );
    }

    pub fn pushed(&self, type_url: &str) {
        let labels = TypeLabels {
            r#type: xds_type(type_url),
        };
        self.pushes.get_or_create(&labels).inc();
    }

    pub fn nacked(&self, type_url: &str) {
        let labels = TypeLabels {
            r#type: xds_type(type_url),
        };
        self.nacks.get_or_create(&labels).inc();
    }

    pub fn acked_after(&self, took: Duration) {
        self.change_to_ack.0.observe(took.as_secs_f64());
    }

    /// A stream of `protocol` opened (`1`) or closed (`-1`).
    pub fn stream(&self, protocol: &'static str, change: i64) {
        self.streams
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(change);
    }
}

/// Federation batches committed through this node.
#[derive(Clone, Default)]
pub struct FederationMetrics {
    batch_sets: Sizes,
    source_to_commit: Seconds,
    source_errors: Family<ClusterLabels, Counter>,
}

impl FederationMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "federation_batch_endpoint_sets",
            "Endpoint sets (upserts and removals) per federation batch committed",
            self.batch_sets.0.clone(),
        );
        registry.register(
            "federation_source_to_commit_seconds",
            "Time from an agent's source seeing a change to its batch's commit (by the agent's and this node's clocks)",
            self.source_to_commit.0.clone(),
        );
        registry.register(
            "federation_source_errors",
            "Discovery source errors agents reported to this node, by cluster",
            self.source_errors.clone(),
        );
    }

    /// A batch of `sets` endpoint sets, seen by its source at
    /// `observed_unix_ms` (0: unknown), is committed.
    pub fn committed(&self, sets: usize, observed_unix_ms: u64) {
        self.batch_sets.0.observe(sets as f64);
        if observed_unix_ms > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let lag_ms = now.saturating_sub(u128::from(observed_unix_ms));
            self.source_to_commit.0.observe(lag_ms as f64 / 1000.0);
        }
    }

    pub fn source_error(&self, cluster: &str) {
        self.source_errors
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .inc();
    }
}

/// The three, registered together.
#[derive(Clone, Default)]
pub struct PipelineMetrics {
    pub proposals: ProposalMetrics,
    pub xds: XdsMetrics,
    pub federation: FederationMetrics,
}

impl PipelineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        self.proposals.register(registry);
        self.xds.register(registry);
        self.federation.register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_labels_are_bounded() {
        assert_eq!(
            xds_type("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
            "cluster"
        );
        assert_eq!(
            xds_type("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"),
            "endpoint"
        );
        assert_eq!(xds_type("type.googleapis.com/anything.Else"), "other");
        assert_eq!(xds_type(""), "other");
    }
}
