//! The provider's client of the admin API: the listed nodes tried in order
//! (the CLI's [`Dialer::connect_first`]), and a call that finds a node gone
//! moved to the next one, so a plan or apply survives a node's death.

use meridian_identity::tls::Dialer;
use meridian_proto::v1::{self as pb, admin_client::AdminClient};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Whether a call failed for the node's sake (unreachable, gone mid-call,
/// or without a leader) rather than by the control plane's answer: an
/// error the client's transport made carries its cause as a source, one
/// the server sent does not.
fn node_failed(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Cancelled => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

pub struct Admin {
    servers: Vec<String>,
    dialer: Dialer,
    /// The node in use and its client, once one answered.
    current: Mutex<Option<(usize, AdminClient<Channel>)>>,
}

/// One object as the control plane holds it.
pub struct Stored {
    pub manifest: serde_json::Value,
    pub revision: u64,
}

impl Admin {
    pub fn new(servers: Vec<String>, dialer: Dialer) -> Admin {
        Admin {
            servers,
            dialer,
            current: Mutex::new(None),
        }
    }

    /// A client of a node that answers, starting after `skip` (the node
    /// that just failed) when given.
    async fn client(&self, skip: Option<usize>) -> Result<(usize, AdminClient<Channel>), Status> {
        let mut current = self.current.lock().await;
        if let (Some((i, client)), None) = (current.as_ref(), skip) {
            return Ok((*i, client.clone()));
        }
        let start = skip.map_or(0, |i| i + 1);
        let count = self.servers.len();
        let order: Vec<&str> = (0..count)
            .map(|k| self.servers[(start + k) % count].as_str())
            .collect();
        let (k, channel) = self
            .dialer
            .connect_first(order)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let index = (start + k) % count.max(1);
        let client = AdminClient::new(channel)
            .max_decoding_message_size(meridian_proto::v1::MAX_ADMIN_RESPONSE);
        *current = Some((index, client.clone()));
        Ok((index, client))
    }

    /// Runs `call` on a node; a node that is unreachable (or has no leader)
    /// is left for the next, each listed node tried at most twice.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut skip = None;
        let mut last = Status::unavailable("no control-plane node is listed");
        for _ in 0..self.servers.len() * 2 {
            let (index, client) = match self.client(skip).await {
                Ok(found) => found,
                Err(status) => {
                    last = status;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    skip = None;
                    continue;
                }
            };
            match call(client).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if node_failed(&status) => {
                    tracing::warn!(node = %self.servers[index], error = %status.message(), "control-plane node unavailable; trying the next");
                    last = status;
                    skip = Some(index);
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    pub async fn get(&self, key: pb::ResourceKey) -> Result<Option<Stored>, Status> {
        let request = pb::GetRequest {
            key: Some(key),
            consistency: pb::Consistency::Linearizable as i32,
        };
        let reply = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.get(request).await }
            })
            .await;
        match reply {
            Ok(resource) => {
                let manifest = serde_json::from_str(&resource.manifest_json)
                    .map_err(|e| Status::internal(format!("unreadable manifest: {e}")))?;
                Ok(Some(Stored {
                    manifest,
                    revision: resource.revision,
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Writes `manifest` if the object is still at `expected` (0: absent);
    /// returns its new revision.
    pub async fn put(&self, manifest: &serde_json::Value, expected: u64) -> Result<u64, Status> {
        let request = pb::PutRequest {
            manifest_json: manifest.to_string(),
            expected_revision: Some(expected),
        };
        let reply = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.put(request).await }
            })
            .await?;
        Ok(reply.revisions.first().copied().unwrap_or(reply.index))
    }

    /// Deletes the object if it is still at `expected`; one already gone is fine.
    pub async fn delete(&self, key: pb::ResourceKey, expected: u64) -> Result<(), Status> {
        let request = pb::DeleteRequest {
            key: Some(key),
            expected_revision: Some(expected),
        };
        let reply = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.delete(request).await }
            })
            .await;
        match reply {
            Err(status) if status.code() == Code::NotFound => Ok(()),
            other => other.map(drop),
        }
    }
}
