//! Asking another control-plane node which proxies it serves.

use crate::grpc_client;
use meridian_proto::v1::{admin_client::AdminClient, ListProxiesRequest, Proxy};
use std::time::Duration;

const PEER_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn list_remote(
    node_id: u64,
    addr: &str,
) -> Result<Vec<Proxy>, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = AdminClient::new(grpc_client::channel(node_id, addr)?);
    let mut request = tonic::Request::new(ListProxiesRequest { local_only: true });
    request.set_timeout(PEER_TIMEOUT);
    Ok(client.list_proxies(request).await?.into_inner().proxies)
}
