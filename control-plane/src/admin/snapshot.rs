//! `Admin/Snapshot`: the replicated state as a snapshot file, streamed in
//! chunks. Read after a linearizable read barrier, so the file holds every
//! write acknowledged before the call, whichever node serves it.

use super::node_error;
use crate::node::{Consistency, Node};
use crate::raft::backup;
use meridian_proto::v1 as pb;
use tonic::Status;

/// Chunks well under gRPC's default 4 MiB message limit.
const CHUNK: usize = 1 << 20;

pub type SnapshotStream =
    futures::stream::Iter<std::vec::IntoIter<Result<pb::SnapshotFileChunk, Status>>>;

pub async fn stream(node: &Node) -> Result<SnapshotStream, Status> {
    let index = node
        .read_barrier(Consistency::Linearizable)
        .await
        .map_err(node_error)?;
    let data = node
        .state
        .read_state()
        .map_err(|e| Status::internal(format!("reading the state for a snapshot: {e}")))?;
    let file = backup::encode(&data)
        .map_err(|e| Status::internal(format!("encoding the snapshot: {e}")))?;
    tracing::info!(
        read_index = index,
        index = data.index(),
        objects = data.resources.len(),
        bytes = file.len(),
        "sending a snapshot"
    );
    let chunks: Vec<_> = file
        .chunks(CHUNK)
        .map(|data| {
            Ok(pb::SnapshotFileChunk {
                data: data.to_vec(),
            })
        })
        .collect();
    Ok(futures::stream::iter(chunks))
}
