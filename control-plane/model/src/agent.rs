//! What an agent's stream writes, decided against the state its entry meets
//! rather than the copy of the node that received it (which may lag): the
//! agent's session, the order of its batches, and what a full snapshot
//! removes. A batch from a session that a newer one has replaced, or one
//! that arrives after a later batch of its own session, changes nothing.

use crate::{plan::StateView, Kind, Rejection, RejectionCode, Resource, ResourceKey, Status};
use std::collections::BTreeSet;

/// The `Cluster` named `name`, with its key; NOT_FOUND if there is none.
pub(crate) fn cluster(
    view: &dyn StateView,
    name: &str,
) -> Result<(ResourceKey, Resource), Rejection> {
    let key = ResourceKey::new(Kind::Cluster, None, name, None)?;
    let stored = view
        .get(&key)
        .ok_or_else(|| Rejection::new(RejectionCode::NotFound, format!("{key} not found")))?;
    Ok((key, stored))
}

/// A new session of `agent` for `cluster`, numbered `index` (the entry's
/// log index, so every session is numbered above the ones before it).
pub fn start_session(
    view: &dyn StateView,
    name: &str,
    agent: &str,
    index: u64,
) -> Result<(ResourceKey, Resource), Rejection> {
    let (key, mut stored) = cluster(view, name)?;
    stored.status = Some(Status {
        stale: false,
        agent: Some(agent.to_string()),
        session: index,
        ..Status::default()
    });
    stored.metadata.revision = Some(index);
    Ok((key, stored))
}

/// Checks that `session` is the cluster's current one and, for a batch,
/// that `seq` follows the last batch applied from it; the cluster with the
/// batch recorded, if it moved.
pub fn fence(
    view: &dyn StateView,
    name: &str,
    session: u64,
    seq: Option<u64>,
    index: u64,
) -> Result<Option<(ResourceKey, Resource)>, Rejection> {
    let (key, mut stored) = cluster(view, name)?;
    let mut status = stored.status.clone().unwrap_or_default();
    if session != status.session {
        return Err(Rejection::new(
            RejectionCode::Aborted,
            format!(
                "agent session {session} of cluster '{name}' was replaced by session {}",
                status.session
            ),
        ));
    }
    let Some(seq) = seq else {
        return Ok(None);
    };
    if seq <= status.seq {
        return Err(Rejection::new(
            RejectionCode::Aborted,
            format!(
                "batch {seq} of cluster '{name}' arrives after batch {} of its session",
                status.seq
            ),
        ));
    }
    status.seq = seq;
    stored.status = Some(status);
    stored.metadata.revision = Some(index);
    Ok(Some((key, stored)))
}

/// The `Endpoints` of `cluster` that a full snapshot naming `keep` removes.
pub fn pruned(view: &dyn StateView, cluster: &str, keep: &[ResourceKey]) -> Vec<ResourceKey> {
    let keep: BTreeSet<&ResourceKey> = keep.iter().collect();
    view.list(Kind::Endpoints)
        .into_iter()
        .map(|r| r.key())
        .filter(|k| k.cluster == cluster && !keep.contains(k))
        .collect()
}
