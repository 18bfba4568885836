//! The Raft log in RocksDB: entries, vote, committed and purged ids; every
//! write but the committed id synced before Raft is told it is durable.

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
        let result = self.db.write_opt(batch, &sync_writes());
        let io_result = result
            .as_ref()
            .map(drop)
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io_result);
        result.map_err(|e| write_err(ErrorSubject::Logs, e))
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
