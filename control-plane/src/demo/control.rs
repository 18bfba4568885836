//! The demo's operator: the admin gRPC API over mutual TLS, as the CLI uses
//! it, plus each node's own status.

use crate::cli;
use meridian_identity::tls::{Dialer, TlsFiles};
use meridian_proto::v1::{self as pb, admin_client::AdminClient};
use std::time::Duration;
use tonic::transport::Channel;

/// How long one status or listing call may take before the node counts as
/// not answering.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
pub struct ControlPlane {
    /// Every node, `HOST:PORT,...`, as the CLI's `--server` takes them.
    pub servers: String,
    dialer: Dialer,
    /// One lazily connected channel per node, by node id.
    nodes: Vec<(u64, Channel)>,
}

/// What the view shows of the control plane.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Each node and its status, when it answered.
    pub nodes: Vec<(u64, Option<pb::StatusResponse>)>,
    pub proxies: Vec<pb::Proxy>,
}

impl ClusterState {
    /// The leader that the answering nodes agree on.
    pub fn leader(&self) -> Option<u64> {
        let mut leaders = self
            .nodes
            .iter()
            .filter_map(|(_, s)| s.as_ref().and_then(|s| s.leader));
        let first = leaders.next()?;
        leaders.all(|l| l == first).then_some(first)
    }

    pub fn status_of(&self, node: u64) -> Option<&pb::StatusResponse> {
        self.nodes
            .iter()
            .find(|(id, _)| *id == node)
            .and_then(|(_, s)| s.as_ref())
    }

    /// The route configuration version a proxy has acknowledged.
    pub fn route_version(&self, proxy: &str) -> Option<&str> {
        self.proxies
            .iter()
            .find(|p| p.node_id == proxy)
            .and_then(|p| {
                p.acked_versions
                    .iter()
                    .find(|(type_url, _)| type_url.ends_with("RouteConfiguration"))
                    .map(|(_, version)| version.as_str())
            })
    }
}

impl ControlPlane {
    pub fn new(nodes: &[(u64, String)], operator: TlsFiles) -> anyhow::Result<ControlPlane> {
        let dialer = cli::dialer(Some(operator))?;
        let channels = nodes
            .iter()
            .map(|(id, addr)| Ok((*id, dialer.channel(addr)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(ControlPlane {
            servers: nodes
                .iter()
                .map(|(_, addr)| addr.as_str())
                .collect::<Vec<_>>()
                .join(","),
            dialer,
            nodes: channels,
        })
    }

    /// `meridian apply`: to the first node that answers, forwarded to the leader.
    pub async fn apply(&self, manifests: &str) -> anyhow::Result<()> {
        let mut client = cli::connect(&self.servers, &self.dialer).await?;
        cli::apply_manifests(&mut client, manifests, &meridian_telemetry::Context::new()).await?;
        Ok(())
    }

    /// Every node's status and the proxies connected anywhere.
    pub async fn state(&self) -> ClusterState {
        let statuses = futures::future::join_all(self.nodes.iter().map(|(id, channel)| async {
            let mut client = AdminClient::new(channel.clone());
            let status = tokio::time::timeout(CALL_TIMEOUT, client.status(pb::StatusRequest {}))
                .await
                .ok()
                .and_then(Result::ok)
                .map(tonic::Response::into_inner);
            (*id, status)
        }))
        .await;
        let mut proxies = Vec::new();
        for (_, channel) in &self.nodes {
            let mut client = AdminClient::new(channel.clone());
            let listing = tokio::time::timeout(
                CALL_TIMEOUT,
                client.list_proxies(pb::ListProxiesRequest { local_only: false }),
            )
            .await;
            if let Ok(Ok(reply)) = listing {
                proxies = reply.into_inner().proxies;
                break;
            }
        }
        ClusterState {
            nodes: statuses,
            proxies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: Option<u64>) -> Option<pb::StatusResponse> {
        Some(pb::StatusResponse {
            leader,
            ..Default::default()
        })
    }

    #[test]
    fn the_leader_is_the_one_answering_nodes_agree_on() {
        let mut state = ClusterState {
            nodes: vec![(1, None), (2, status(Some(3))), (3, status(Some(3)))],
            proxies: vec![],
        };
        assert_eq!(state.leader(), Some(3));
        state.nodes[1].1 = status(Some(2));
        assert_eq!(state.leader(), None, "nodes disagree during an election");
    }
}
