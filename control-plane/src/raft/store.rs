//! The node's RocksDB: one database, a column family per concern.

use super::StorageError;
use openraft::{ErrorSubject, ErrorVerb};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::{path::Path, sync::Arc};

/// Raft log entries, keyed by big-endian index.
pub const CF_LOGS: &str = "logs";
/// Vote, committed log id, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Replicated resources, keyed by `ResourceKey::encode`.
pub const CF_RESOURCES: &str = "resources";
/// Last applied log id, last membership, current snapshot.
pub const CF_SM_META: &str = "sm_meta";

const ALL_CFS: [&str; 4] = [CF_LOGS, CF_RAFT_META, CF_RESOURCES, CF_SM_META];

pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Every write that Raft relies on for safety (log entries, the vote,
/// truncation and purge points, snapshots) is synced to disk before it is
/// acknowledged; a leader's own log entries are acknowledged before, and
/// nothing acts on their commit until they are synced (`durability`).
///
/// What the state machine applies, and the committed index (a hint,
/// written with the next append), are written without a sync of their
/// own: one database means one write-ahead log,
/// recovered as a prefix, so the next synced write (the next log append)
/// makes every earlier write durable with it. A crash can lose only a tail
/// of applies whose entries are in the synced log, and openraft applies
/// them again on restart; the log is purged only after a snapshot is
/// stored (synced), so nothing applied is ever missing from both. This is
/// etcd's model too: one fsync per appended batch, none per apply.
pub fn sync_writes() -> rocksdb::WriteOptions {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    opts
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // The column families are created in `open`; a missing one is a programming error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} was not created"))
}

pub fn read_err(subject: ErrorSubject<u64>, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(subject, ErrorVerb::Read, openraft::AnyError::new(&e)).into()
}

pub fn write_err(subject: ErrorSubject<u64>, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(subject, ErrorVerb::Write, openraft::AnyError::new(&e)).into()
}
