//! The node's RocksDB: one database, a column family per concern.

use super::StorageError;
use openraft::{ErrorSubject, ErrorVerb};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};
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

/// How much a write-ahead log holds before RocksDB starts the next (and
/// flushes what the oldest held), and how long each of its recycled files
/// is: what a restart replays at most.
const WAL_BYTES: usize = 16 << 20;

/// Write-ahead log files RocksDB keeps to write the next logs into.
const RECYCLED_WALS: usize = 2;

pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // A synced append to a file that grows makes the file system journal
    // its new size with every fsync; one that overwrites blocks the file
    // already has does not (on this project's ext4 disk, 100-byte synced
    // appends: 130–175 µs growing, 95–113 µs overwriting). So a log is
    // written into a file an earlier log left behind (RocksDB marks each
    // record with its log's number, so recovery stops where the old
    // records begin: still a prefix), and logs are switched at a fixed
    // size, so each recycled file is as long as the next log needs. What
    // etcd gets from its preallocated WAL segments.
    opts.set_recycle_log_file_num(RECYCLED_WALS);
    opts.set_max_total_wal_size(WAL_BYTES as u64);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Leaves `RECYCLED_WALS` files of `WAL_BYTES` for the write-ahead logs
/// to come, the first of them the log written now: RocksDB starts each
/// open with a new, empty log and keeps no recycled file across restarts.
/// Two logs of filler (log data only, kept in no table) are written and
/// switched away from. Call it on a database just opened, before it takes
/// writes: about 32 MiB written once per start.
pub fn prime_wal(db: &DB) -> Result<(), rocksdb::Error> {
    let filler = vec![0; WAL_BYTES];
    for _ in 0..RECYCLED_WALS {
        let mut batch = WriteBatch::default();
        batch.put_log_data(&filler);
        // A flush switches logs only when a table has something to flush.
        batch.put(PRIMED_KEY, []);
        db.write(batch)?;
        db.flush()?;
    }
    db.delete(PRIMED_KEY)
}

/// The default column family's one key, written only while the logs are primed.
const PRIMED_KEY: &[u8] = b"wal-primed";

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.log` files in `dir`, by number: (number, length).
    fn wal_files(dir: &Path) -> Vec<(u64, u64)> {
        let mut wals: Vec<(u64, u64)> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| entry.expect("entry"))
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let number = name.strip_suffix(".log")?.parse().ok()?;
                Some((number, entry.metadata().expect("metadata").len()))
            })
            .collect();
        wals.sort();
        wals
    }

    /// A database in a new directory, primed, then `count` synced puts.
    fn primed_with(count: u32) -> (tempfile::TempDir, Arc<DB>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(dir.path()).expect("open");
        prime_wal(&db).expect("prime");
        for i in 0..count {
            db.put_cf_opt(
                cf(&db, CF_RESOURCES),
                i.to_be_bytes(),
                [7; 100],
                &sync_writes(),
            )
            .expect("put");
        }
        (dir, db)
    }

    #[test]
    fn a_primed_database_writes_its_log_into_a_file_already_long_enough() {
        let (dir, _db) = primed_with(100);
        let wals = wal_files(dir.path());
        // The log being written is the newest; the other waits for the next.
        assert_eq!(wals.len(), RECYCLED_WALS, "{wals:?}");
        for (number, length) in &wals {
            assert!(
                *length >= WAL_BYTES as u64,
                "log {number} is {length} bytes: {wals:?}"
            );
        }
    }

    #[test]
    fn a_crash_image_of_a_recycled_log_holds_every_synced_write() {
        let (dir, db) = primed_with(500);
        // The files as a crash would leave them: the log's old records
        // (the filler) still after the new ones.
        let image = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(dir.path()).expect("read dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), image.path().join(entry.file_name())).expect("copy");
        }
        let newest = wal_files(image.path()).last().copied().expect("a log");
        assert!(newest.1 >= WAL_BYTES as u64, "{newest:?}");
        drop(db);
        let recovered = open(image.path()).expect("open the image");
        for i in 0..500u32 {
            let value = recovered
                .get_cf(cf(&recovered, CF_RESOURCES), i.to_be_bytes())
                .expect("get");
            assert_eq!(value.as_deref(), Some(&[7; 100][..]), "key {i}");
        }
    }
}
