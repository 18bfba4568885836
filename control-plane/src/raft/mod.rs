//! Raft for the control plane: the type declarations, the RocksDB log store
//! and state machine, the gRPC transport between nodes, and snapshot files
//! for backup and restore.

// openraft's traits fix the error types (StorageError, RPCError), large as they are.
#![allow(clippy::result_large_err)]

pub mod applied_once;
pub mod backup;
pub mod durability;
pub mod log_store;
pub mod network;
mod peer_io;
pub mod proposer;
pub mod read_index;
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

/// What applying one command produced: per write, the object's revision
/// afterwards, or why the whole command was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome(pub Result<Vec<u64>, Rejection>);

/// What applying one log entry produced: an outcome per command, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied(pub Vec<ApplyOutcome>);

/// The payload of one log entry: commands proposed together, applied in
/// order, each all or nothing, all at the entry's index (their revision).
/// The leader puts commands in one entry only when none writes what
/// another does (`Command::written_keys`), so no two writes of one object
/// share a revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

impl Proposal {
    pub fn one(command: Command) -> Self {
        Proposal {
            commands: vec![command],
        }
    }
}

/// Entries written before proposals held several commands hold one
/// `Command` as it is: read as a proposal of that one.
impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Commands { commands: Vec<Command> },
            One(Command),
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Commands { commands } => Proposal { commands },
            Stored::One(command) => Proposal::one(command),
        })
    }
}

openraft::declare_raft_types!(
    /// Meridian's Raft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::Op;

    #[test]
    fn an_entry_written_with_one_command_reads_as_a_proposal_of_it() {
        let command = Command::new(vec![Op::RecordBootstrapped { node: 2 }]);
        let stored = serde_json::to_vec(&command).expect("encode");
        let read: Proposal = serde_json::from_slice(&stored).expect("decode");
        assert_eq!(read, Proposal::one(command.clone()));
        // With an id (applied once; `applied_once`), alone and with others.
        let mut sent_again = command.clone();
        sent_again.id = Some(meridian_model::CommandId(u128::MAX));
        let stored = serde_json::to_vec(&sent_again).expect("encode");
        let read: Proposal = serde_json::from_slice(&stored).expect("decode");
        assert_eq!(read, Proposal::one(sent_again.clone()));
        let several = Proposal {
            commands: vec![command.clone(), sent_again, command],
        };
        let stored = serde_json::to_vec(&several).expect("encode");
        assert_eq!(
            serde_json::from_slice::<Proposal>(&stored).expect("decode"),
            several
        );
        assert!(serde_json::from_slice::<Proposal>(b"{\"other\": 1}").is_err());
    }
}
