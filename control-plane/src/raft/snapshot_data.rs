//! What a snapshot holds and its one encoding (JSON): every stored resource,
//! the nodes recorded as holding the cluster's data, and the applied log id
//! and membership they were read at. Raft sends it to
//! lagging followers; `meridian snapshot save` wraps it in a backup file.

use super::{applied_once::Remembered, LogId, Membership};
use meridian_model::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The whole replicated state at one log id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    /// Stored resources as their JSON.
    pub resources: Vec<String>,
    /// The nodes recorded as holding the cluster's data; absent from
    /// snapshots taken before the record existed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub bootstrapped: BTreeSet<u64>,
    /// The commands with an id applied lately (`applied_once`); absent
    /// from snapshots taken before they were remembered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_once: Vec<Remembered>,
}

impl SnapshotData {
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The index the state was read at (0 before anything was applied).
    pub fn index(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Every resource parsed, beside the JSON it is stored as; the first
    /// that does not parse is an error.
    pub fn parsed(&self) -> Result<Vec<(Resource, &str)>, serde_json::Error> {
        self.resources
            .iter()
            .map(|json| Ok((serde_json::from_str(json)?, json.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_resource_that_does_not_parse() {
        let cluster =
            r#"{"kind":"Cluster","metadata":{"name":"east"},"spec":{"region":"us-east-1"}}"#;
        let data = SnapshotData {
            last_applied: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(3, 1),
                42,
            )),
            membership: Membership::default(),
            resources: vec![cluster.to_string()],
            bootstrapped: BTreeSet::from([1, 3]),
            applied_once: Vec::new(),
        };
        let decoded = SnapshotData::decode(&data.encode().expect("encode")).expect("decode");
        assert_eq!(decoded, data);
        assert_eq!(decoded.index(), 42);
        let parsed = decoded.parsed().expect("parses");
        assert_eq!(parsed[0].0.metadata.name, "east");

        // A snapshot from before the record reads as one with no node recorded.
        let mut older: serde_json::Value =
            serde_json::from_slice(&data.encode().expect("encode")).expect("json");
        older
            .as_object_mut()
            .expect("an object")
            .remove("bootstrapped");
        let older = SnapshotData::decode(&serde_json::to_vec(&older).expect("encode"))
            .expect("an older snapshot decodes");
        assert!(older.bootstrapped.is_empty());

        let broken = SnapshotData {
            resources: vec!["{not json".into()],
            ..data
        };
        assert!(broken.parsed().is_err());
    }
}
