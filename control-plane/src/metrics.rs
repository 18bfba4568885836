//! Prometheus metrics of a control-plane node.

pub mod pipeline;

pub use pipeline::PipelineMetrics;

use crate::node::Node;
use meridian_identity::expiry::ExpiryGauge;
use meridian_model::{Kind, StateView};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    service: String,
    code: String,
}

pub struct Metrics {
    registry: Registry,
    pub certificate_expiry: ExpiryGauge,
    admin_requests: Family<RequestLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    term: Gauge,
    applied_index: Gauge,
    commit_index: Gauge,
    last_log_index: Gauge,
    snapshot_index: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    voters: Gauge,
    cluster_stale: Family<ClusterLabels, Gauge>,
    cluster_source_error: Family<ClusterLabels, Gauge>,
    cluster_invalid_endpoints: Family<ClusterLabels, Gauge>,
    invalid_endpoints: Family<ClusterLabels, Counter>,
    apply_lag: Gauge,
    /// Proposals, federation batches and xDS pushes, held by the code on that path.
    pub pipeline: PipelineMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian");
        let admin_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admin_requests",
            "Admin API requests by method and gRPC status code",
            admin_requests.clone(),
        );
        let certificate_expiry = ExpiryGauge::register(
            &mut registry,
            "Seconds until this node's certificate expires (absent over plaintext)",
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "grpc_refusals",
            "gRPC calls refused by authentication or authorization, by service and status code",
            refusals.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let term = gauge("raft_term", "Current Raft term");
        let applied_index = gauge(
            "raft_applied_index",
            "Last log index applied to the state machine",
        );
        let commit_index = gauge(
            "raft_commit_index",
            "Last committed log index known to this node",
        );
        let last_log_index = gauge("raft_last_log_index", "Last log index in this node's log");
        let snapshot_index = gauge(
            "raft_snapshot_index",
            "Last log index covered by the current snapshot",
        );
        let is_leader = gauge("raft_is_leader", "1 if this node is the leader");
        let has_leader = gauge("raft_has_leader", "1 if this node knows a leader");
        let voters = gauge("raft_voters", "Voting members in the current membership");
        let apply_lag = gauge(
            "raft_apply_lag",
            "Committed entries not yet applied on this node (commit index minus applied index)",
        );
        let cluster_stale = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_stale",
            "1 if the cluster's agent has been gone longer than the grace period",
            cluster_stale.clone(),
        );
        let cluster_source_error = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_source_error",
            "1 if the cluster's discovery source reports an error (its last good view is kept)",
            cluster_source_error.clone(),
        );
        let cluster_invalid_endpoints = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_invalid_endpoints",
            "Endpoints left out of the cluster agent's last batch as invalid (the rest were taken)",
            cluster_invalid_endpoints.clone(),
        );
        let invalid_endpoints = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "federation_invalid_endpoints",
            "Endpoints left out of agents' batches on this node as invalid",
            invalid_endpoints.clone(),
        );
        let pipeline = PipelineMetrics::default();
        pipeline.register(&mut registry);
        Metrics {
            registry,
            certificate_expiry,
            admin_requests,
            refusals,
            term,
            applied_index,
            commit_index,
            last_log_index,
            snapshot_index,
            is_leader,
            has_leader,
            voters,
            cluster_stale,
            cluster_source_error,
            cluster_invalid_endpoints,
            invalid_endpoints,
            apply_lag,
            pipeline,
        }
    }
}

fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Endpoints an agent of `cluster` (a verified, existing cluster) reported invalid.
    pub fn count_invalid_endpoints(&self, cluster: &str, count: usize) {
        self.invalid_endpoints
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .inc_by(count as u64);
    }

    pub fn count_admin_request(&self, method: &str, code: tonic::Code) {
        self.admin_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Counts a call to `service` refused by authentication or authorization.
    pub fn count_refusal(&self, service: &str, code: tonic::Code) {
        self.refusals
            .get_or_create(&RefusalLabels {
                service: service.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Refreshes the Raft gauges from the node and renders the text exposition.
    pub fn render(&self, node: &Node) -> String {
        self.certificate_expiry.refresh();
        let m = node.metrics();
        self.term.set(as_gauge(m.current_term));
        self.applied_index
            .set(as_gauge(m.last_applied.map(|l| l.index).unwrap_or(0)));
        self.commit_index.set(as_gauge(node.committed_index()));
        self.apply_lag
            .set(as_gauge(node.committed_index().saturating_sub(
                m.last_applied.map(|l| l.index).unwrap_or(0),
            )));
        self.last_log_index
            .set(as_gauge(m.last_log_index.unwrap_or(0)));
        self.snapshot_index
            .set(as_gauge(m.snapshot.map(|l| l.index).unwrap_or(0)));
        self.is_leader
            .set(i64::from(m.current_leader == Some(node.id)));
        self.has_leader.set(i64::from(m.current_leader.is_some()));
        self.voters.set(as_gauge(
            m.membership_config.membership().voter_ids().count() as u64,
        ));
        self.cluster_stale.clear();
        self.cluster_source_error.clear();
        self.cluster_invalid_endpoints.clear();
        for cluster in node.state.view().list(Kind::Cluster) {
            let labels = ClusterLabels {
                cluster: cluster.metadata.name.clone(),
            };
            let status = cluster.status.unwrap_or_default();
            self.cluster_stale
                .get_or_create(&labels)
                .set(i64::from(status.stale));
            self.cluster_source_error
                .get_or_create(&labels)
                .set(i64::from(status.source_error.is_some()));
            self.cluster_invalid_endpoints
                .get_or_create(&labels)
                .set(i64::from(status.invalid_endpoints));
        }
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }
}
