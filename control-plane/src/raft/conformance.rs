//! The RocksDB log store and state machine against openraft's storage
//! conformance suite.

use super::{log_store::LogStore, state_machine::StateMachine, store, StorageError, TypeConfig};
use openraft::{
    testing::{StoreBuilder, Suite},
    AnyError, ErrorSubject, ErrorVerb, StorageIOError,
};
use tempfile::TempDir;

struct RocksBuilder;

fn io_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let db = store::open(dir.path()).map_err(io_error)?;
        // Node 1: the suite's appends under a vote of node 1 take the
        // leader's path (reported before synced), the others the follower's.
        let log = LogStore::new(db.clone(), 1)?;
        let state = StateMachine::new(db, log.durability())?;
        Ok((dir, log, state))
    }
}

#[test]
fn rocksdb_store_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}
