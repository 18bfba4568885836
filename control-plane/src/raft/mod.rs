//! Raft for the control plane: the type declarations, the RocksDB log store
//! and state machine, the gRPC transport between nodes, and snapshot files
//! for backup and restore.

// openraft's traits fix the error types (StorageError, RPCError), large as they are.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod log_store;
pub mod network;
pub mod restore;
pub mod snapshot_data;
pub mod state_machine;
pub mod store;
pub mod transport;
pub mod view;

use meridian_model::{Command, Rejection};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub type NodeId = u64;

/// What applying one log entry produced: per write, the object's revision
/// afterwards, or why the whole command was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome(pub Result<Vec<u64>, Rejection>);

openraft::declare_raft_types!(
    /// Meridian's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Membership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

#[cfg(test)]
mod conformance;
