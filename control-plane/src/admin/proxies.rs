//! The proxies of the whole control plane: this node's, and those every
//! other member node serves, asked over the admin API; and which of them
//! hold a revision.

use crate::{grpc_client, xds::standing};
use meridian_proto::v1::{
    admin_client::AdminClient, ListProxiesRequest, Member, PropagationResponse, Proxy,
};
use std::time::Duration;

const PEER_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn list_remote(
    node_id: u64,
    addr: &str,
) -> Result<Vec<Proxy>, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = AdminClient::new(grpc_client::channel(node_id, addr)?)
        .max_decoding_message_size(meridian_proto::v1::MAX_ADMIN_RESPONSE);
    let mut request = tonic::Request::new(ListProxiesRequest { local_only: true });
    request.set_timeout(PEER_TIMEOUT);
    Ok(client.list_proxies(request).await?.into_inner().proxies)
}

/// `local` and the proxies of every other member (`peers`): all proxies,
/// and the members that did not answer.
pub async fn everywhere(
    mut local: Vec<Proxy>,
    peers: impl IntoIterator<Item = Member>,
) -> (Vec<Proxy>, Vec<u64>) {
    let mut unreachable = Vec::new();
    for peer in peers {
        match list_remote(peer.node_id, &peer.addr).await {
            Ok(remote) => local.extend(remote),
            Err(e) => {
                tracing::debug!(node = peer.node_id, error = %e, "listing a peer's proxies failed");
                unreachable.push(peer.node_id);
            }
        }
    }
    (local, unreachable)
}

/// Sorts proxies by where they stand against `revision`.
pub fn propagation(proxies: Vec<Proxy>, revision: u64) -> PropagationResponse {
    let mut response = PropagationResponse {
        revision,
        ..Default::default()
    };
    for proxy in proxies {
        match standing::propagation(&proxy.types, revision) {
            standing::Propagation::Holds => response.holding.push(proxy),
            standing::Propagation::Pending => response.pending.push(proxy),
            standing::Propagation::Rejected => response.rejected.push(proxy),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::v1::ProxyTypeStatus;

    fn proxy(name: &str, acked_revision: u64, rejected_at: Option<u64>) -> Proxy {
        Proxy {
            node_id: name.into(),
            types: vec![ProxyTypeStatus {
                type_url: "cds".into(),
                acked_version: "v".into(),
                acked_revision,
                sent_revision: rejected_at.unwrap_or(acked_revision),
                rejected: rejected_at.is_some(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn proxies_are_sorted_by_where_they_stand() {
        let sorted = propagation(
            vec![
                proxy("current", 9, None),
                proxy("behind", 6, None),
                proxy("refuser", 6, Some(8)),
                proxy("refused-older", 6, Some(7)),
            ],
            8,
        );
        let names = |list: &[Proxy]| list.iter().map(|p| p.node_id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&sorted.holding), ["current"]);
        assert_eq!(names(&sorted.rejected), ["refuser"]);
        assert_eq!(names(&sorted.pending), ["behind", "refused-older"]);
    }
}
