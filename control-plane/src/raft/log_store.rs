//! The Raft log in RocksDB: entries, vote, committed and purged ids; every
//! write but the committed id synced before Raft is told it is durable
//! (appends by a group-commit thread, many to one fsync).

use super::{
    store::{cf, read_err, sync_writes, write_err, CF_LOGS, CF_RAFT_META},
    LogId, NodeId, StorageError, TypeConfig,
};
use openraft::{
    storage::{LogFlushed, RaftLogStorage},
    Entry, ErrorSubject, LogState, OptionalSend, RaftLogReader, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{de::DeserializeOwned, Serialize};
use std::{
    fmt::Debug,
    ops::{Bound, RangeBounds},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// The committed index as last saved, for status and readiness.
    committed_index: Arc<AtomicU64>,
    /// Makes appended entries durable, many appends per fsync.
    syncer: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Group commit: appends are written at once and their callbacks queued
/// here; one thread syncs the write-ahead log and reports every append
/// written before that sync as durable, so a burst of proposals costs one
/// fsync instead of one each (and Raft's core never waits on the disk).
/// The thread holds the database weakly (it never keeps it open) and ends
/// with the last `LogStore`.
fn spawn_syncer(db: &Arc<DB>) -> std::sync::mpsc::Sender<LogFlushed<TypeConfig>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    let db = Arc::downgrade(db);
    let spawned = std::thread::Builder::new()
        .name("raft-log-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut flushed = vec![first];
                flushed.extend(rx.try_iter());
                let synced = match db.upgrade() {
                    Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
                    None => Err("the database is closed".to_string()),
                };
                for callback in flushed {
                    callback.log_io_completed(synced.clone().map_err(std::io::Error::other));
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread every append reports a failed flush: fatal
        // for Raft, so the node stops rather than run undurable.
        tracing::error!(error = %e, "cannot start the raft log sync thread");
    }
    tx
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Result<Self, StorageError> {
        let store = LogStore {
            syncer: spawn_syncer(&db),
            db,
            committed_index: Arc::new(AtomicU64::new(0)),
        };
        let committed: Option<LogId> = store.get_meta(KEY_COMMITTED)?;
        store
            .committed_index
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(store)
    }

    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_META), key)
            .map_err(|e| read_err(ErrorSubject::Store, e))?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| read_err(ErrorSubject::Store, e)))
            .transpose()
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        options: &rocksdb::WriteOptions,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| write_err(ErrorSubject::Store, e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT_META), key, bytes, options)
            .map_err(|e| write_err(ErrorSubject::Store, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        for item in self.db.iterator_cf(cf(&self.db, CF_LOGS), mode) {
            let (key, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
            let Some(index) = index_of(&key) else {
                continue;
            };
            if !range.contains(&index) {
                break;
            }
            let entry =
                serde_json::from_slice(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, &sync_writes())
            .map_err(|e| write_err(ErrorSubject::Vote, std::io::Error::other(e.to_string())))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for restarts (how far to apply again), not a promise: it
        // rides on the next synced append (see `sync_writes`).
        self.put_meta(KEY_COMMITTED, &committed, &rocksdb::WriteOptions::default())?;
        self.committed_index
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let logs = cf(&self.db, CF_LOGS);
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(|e| write_err(ErrorSubject::Logs, e))?;
            batch.put_cf(logs, index_key(entry.log_id.index), value);
        }
        // Written now, durable once the syncer's next fsync reports it.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(write_err(ErrorSubject::Logs, e));
        }
        if let Err(unsent) = self.syncer.send(callback) {
            let callback = unsent.0;
            callback.log_io_completed(Err(std::io::Error::other("the log sync thread is gone")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        batch.delete_cf(cf(&self.db, CF_LOGS), index_key(u64::MAX));
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| write_err(ErrorSubject::Logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(KEY_LAST_PURGED, &log_id, &sync_writes())?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| write_err(ErrorSubject::Logs, e))
    }
}
