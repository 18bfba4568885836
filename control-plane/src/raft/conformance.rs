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
        Ok((dir, LogStore::new(db.clone())?, StateMachine::new(db)?))
    }
}

#[test]
fn rocksdb_store_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}
