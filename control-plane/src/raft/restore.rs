//! `meridian snapshot restore`: a new node's data dir from a snapshot, made
//! offline. The state machine installs the snapshot as it would one sent by
//! a leader and the log starts purged at its index, so the node starts as if
//! it had just installed it. The membership is the new cluster's, given by
//! the operator; terms start again from zero while indexes, and so object
//! revisions, go on from the snapshot's. The record of which nodes held the
//! old cluster's data is left behind.

use super::{
    log_store::LogStore, snapshot_data::SnapshotData, state_machine::StateMachine, store, LogId,
    Membership, NodeId, StorageError,
};
use openraft::{
    storage::{RaftLogStorage, RaftStateMachine},
    BasicNode, CommittedLeaderId, SnapshotMeta,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Cursor,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("data dir {0} is not empty: restore into a new (or empty) directory")]
    NotEmpty(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the new RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("writing the new RocksDB: {0}")]
    Storage(String),
    #[error("encoding the snapshot: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<StorageError> for RestoreError {
    fn from(e: StorageError) -> Self {
        RestoreError::Storage(e.to_string())
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { what, path, source }
}

/// Creates `data_dir` holding `data`'s objects, for a node of a new cluster
/// whose voters are `members`. `data_dir` must not exist or be empty; its
/// database appears whole or not at all (built beside where it goes, then
/// renamed, so an empty mount point works too).
pub async fn restore(
    data: &SnapshotData,
    data_dir: &Path,
    members: &BTreeMap<NodeId, String>,
) -> Result<(), RestoreError> {
    let is_empty = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io("reading", data_dir)(e)),
    };
    if !is_empty {
        return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
    }
    std::fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
    let staging = data_dir.join(format!(".db.restoring-{}", std::process::id()));
    let db_dir = data_dir.join("db");
    let built = build(data, &staging, members).await.and_then(|()| {
        std::fs::rename(&staging, &db_dir).map_err(io("moving the restored database to", &db_dir))
    });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built?;
    sync_dir(data_dir)
}

async fn build(
    data: &SnapshotData,
    dir: &Path,
    members: &BTreeMap<NodeId, String>,
) -> Result<(), RestoreError> {
    let db = store::open(dir)?;
    // The same first leader id `Raft::initialize` gives a new cluster's
    // first entry: every node restored from this file agrees on it, and the
    // new cluster's first term (1) is above it.
    let log_id = LogId::new(CommittedLeaderId::new(0, NodeId::default()), data.index());
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    let membership = Membership::new(Some(log_id), openraft::Membership::new(vec![voters], nodes));
    let restored = SnapshotData {
        last_applied: Some(log_id),
        membership: membership.clone(),
        resources: data.resources.clone(),
        // A restored cluster is a new one: its nodes record themselves as
        // they start. The old cluster's record would refuse an empty
        // founding member of the new one that never held its data.
        bootstrapped: BTreeSet::new(),
        // Its log starts afresh: no command of the old one comes again.
        applied_once: Vec::new(),
    };
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("{}-restored", log_id.index),
    };
    // Offline: no node appends here, so none is the leader (node 0).
    let mut log = LogStore::new(db.clone(), 0)?;
    let mut state = StateMachine::new(db.clone(), log.durability())?;
    state
        .install_snapshot(&meta, Box::new(Cursor::new(restored.encode()?)))
        .await?;
    // No committed id of its own: openraft starts from the applied one.
    log.purge(log_id).await?;
    db.flush()?;
    drop((state, log));
    // The last handle: RocksDB closes here, before the directory moves.
    drop(db);
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogReader;

    fn snapshot() -> SnapshotData {
        SnapshotData {
            last_applied: Some(LogId::new(CommittedLeaderId::new(7, 2), 40)),
            membership: Membership::default(),
            resources: vec![
                r#"{"kind":"Cluster","metadata":{"name":"east","revision":12},"spec":{"region":"us-east-1"}}"#
                    .into(),
            ],
            bootstrapped: BTreeSet::from([1, 2]),
            applied_once: Vec::new(),
        }
    }

    fn members() -> BTreeMap<NodeId, String> {
        BTreeMap::from([(1, "127.0.0.1:1".into()), (2, "127.0.0.1:2".into())])
    }

    #[tokio::test]
    async fn a_restored_dir_reads_as_a_node_that_installed_the_snapshot() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("node-1");
        restore(&snapshot(), &dir, &members())
            .await
            .expect("restore");
        let db = store::open(&dir.join("db")).expect("open");
        let mut state = StateMachine::new(db.clone(), Default::default()).expect("state machine");
        let (applied, membership) = state.applied_state().await.expect("applied");
        let expected = LogId::new(CommittedLeaderId::new(0, 0), 40);
        assert_eq!(applied, Some(expected));
        let voters: Vec<NodeId> = membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2]);
        let restored = state.read_state().expect("read");
        assert_eq!(restored.resources.len(), 1);
        assert!(
            restored.bootstrapped.is_empty(),
            "the old cluster's record stays behind"
        );
        let current = state
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("stored");
        assert_eq!(current.meta.last_log_id, Some(expected));
        let mut log = LogStore::new(db, 0).expect("log");
        let log_state = log.get_log_state().await.expect("log state");
        assert_eq!(log_state.last_purged_log_id, Some(expected));
        assert_eq!(log_state.last_log_id, Some(expected));
        assert!(log.try_get_log_entries(0..).await.expect("read").is_empty());
        let left: Vec<_> = dir
            .read_dir()
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("db")]);
    }

    #[tokio::test]
    async fn refuses_a_dir_that_holds_anything() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("node-1");
        std::fs::create_dir(&dir).expect("mkdir");
        // An empty one is fine (a volume's mount point, say)...
        restore(&snapshot(), &dir, &members())
            .await
            .expect("into an empty dir");
        // ...one with anything in it is not, and is left alone.
        let again = restore(&snapshot(), &dir, &members()).await;
        assert!(matches!(again, Err(RestoreError::NotEmpty(_))), "{again:?}");
        assert!(dir.join("db").exists());
    }
}
