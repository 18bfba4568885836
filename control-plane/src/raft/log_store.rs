//! The Raft log in RocksDB: entries, vote, committed and purged ids. Every
//! write is synced before Raft is told it is durable (a replicated append
//! where it is made while the disk syncs quickly, others by a group-commit
//! thread, many to one fsync), except two: the committed id, a hint written
//! with the next append, and a leader's own appends, told at once and
//! synced meanwhile (`durability`).

use super::{
    durability::Durability,
    store::{cf, read_err, sync_writes, write_err, CF_LOGS, CF_RAFT_META},
    LogId, NodeId, StorageError, TypeConfig,
};
use openraft::{
    storage::{LogFlushed, RaftLogStorage},
    Entry, EntryPayload, ErrorSubject, LogState, OptionalSend, RaftLogReader, Vote,
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
    time::{Duration, Instant},
};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    node_id: NodeId,
    /// The vote as last saved: whether this node leads, and in which term.
    vote: Option<Vote<NodeId>>,
    /// The committed index as last saved, for status and readiness.
    committed_index: Arc<AtomicU64>,
    /// The committed log id saved since the last append, written with the
    /// next one.
    unwritten_committed: Option<LogId>,
    /// Makes appended entries durable, many appends per fsync.
    syncer: std::sync::mpsc::Sender<Written>,
    /// How long the last sync of the write-ahead log took, in nanoseconds
    /// (made here or by the syncer).
    last_sync: Arc<AtomicU64>,
    durability: Arc<Durability>,
}

/// An append written and not yet synced: its sequence number in the
/// ledger, and openraft's callback unless it was called at once.
struct Written {
    seq: u64,
    callback: Option<LogFlushed<TypeConfig>>,
}

/// Group commit: appends are written at once and their callbacks queued
/// here; one thread syncs the write-ahead log and reports every append
/// written before that sync as durable, so a burst of proposals costs one
/// fsync instead of one each. (openraft's core waits for the report of
/// each append it makes; a leader's own are reported before, see
/// `durability`.)
/// The thread holds the database weakly (it never keeps it open) and ends
/// with the last `LogStore`.
fn spawn_syncer(
    db: &Arc<DB>,
    durability: Arc<Durability>,
    last_sync: Arc<AtomicU64>,
) -> std::sync::mpsc::Sender<Written> {
    let (tx, rx) = std::sync::mpsc::channel::<Written>();
    let db = Arc::downgrade(db);
    let spawned = std::thread::Builder::new()
        .name("raft-log-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut written = vec![first];
                written.extend(rx.try_iter());
                let synced = match db.upgrade() {
                    Some(db) => sync_wal(&db, &last_sync),
                    None => Err("the database is closed".to_string()),
                };
                let upto = written.iter().map(|w| w.seq).max().unwrap_or_default();
                durability.synced(synced.clone().map(|()| upto));
                for callback in written.into_iter().filter_map(|w| w.callback) {
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

/// A sync of the write-ahead log this quick is made in the append that
/// waits for it (`sync_in_place`).
const QUICK_SYNC: Duration = Duration::from_millis(1);

/// Syncs the write-ahead log, and notes in `last` how long it took.
fn sync_wal(db: &DB, last: &AtomicU64) -> Result<(), String> {
    let started = Instant::now();
    let synced = db.flush_wal(true).map_err(|e| e.to_string());
    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    last.store(took, Ordering::Relaxed);
    synced
}

/// Whether an append is synced where it is made rather than by the sync
/// thread: one reported only once durable (not a leader's own, `own_from`),
/// while the last sync took less than `QUICK_SYNC`. openraft's core waits
/// for such an append before it does anything else, so syncing in place
/// costs it nothing and saves two hand-offs between threads (to the sync
/// thread and back to the runtime), on every follower's path of every
/// write; but it holds this runtime thread from the node's other tasks for
/// as long as the disk takes, so a slow disk's syncs go to the thread.
fn sync_in_place(own_from: Option<u64>, last_sync: Duration) -> bool {
    own_from.is_none() && last_sync < QUICK_SYNC
}

/// The first index of `entries` if they may be reported before they are
/// synced: all are node `node_id`'s own, appended as the leader of the term
/// `vote` (committed, for itself) is in, not replicated to it; and none
/// changes the membership (joint consensus needs those on disk first).
fn own_first_index(
    vote: Option<&Vote<NodeId>>,
    node_id: NodeId,
    entries: &[Entry<TypeConfig>],
) -> Option<u64> {
    let vote = vote.filter(|v| v.is_committed() && v.leader_id().voted_for() == Some(node_id))?;
    let own = |entry: &Entry<TypeConfig>| {
        entry.log_id.leader_id == *vote.leader_id()
            && !matches!(entry.payload, EntryPayload::Membership(_))
    };
    entries
        .iter()
        .all(own)
        .then(|| entries.first().map(|e| e.log_id.index))
        .flatten()
}

/// A `raft_meta` value as stored.
fn meta_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| write_err(ErrorSubject::Store, e))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl LogStore {
    /// The log of node `node_id`.
    pub fn new(db: Arc<DB>, node_id: NodeId) -> Result<Self, StorageError> {
        let durability = Arc::new(Durability::default());
        let last_sync = Arc::new(AtomicU64::new(0));
        let mut store = LogStore {
            syncer: spawn_syncer(&db, durability.clone(), last_sync.clone()),
            last_sync,
            db,
            node_id,
            vote: None,
            committed_index: Arc::new(AtomicU64::new(0)),
            unwritten_committed: None,
            durability,
        };
        store.vote = store.get_meta(KEY_VOTE)?;
        let committed: Option<LogId> = store.get_meta(KEY_COMMITTED)?;
        store
            .committed_index
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(store)
    }

    /// What of this log is on disk, for the state machine and the peers.
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
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
        let bytes = meta_json(value)?;
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
            .map_err(|e| write_err(ErrorSubject::Vote, std::io::Error::other(e.to_string())))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for restarts (how far to apply again), not a promise:
        // written with the next append, not a write of its own for every
        // commit (openraft reapplies from the last applied entry at least).
        self.unwritten_committed = committed;
        self.committed_index
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        if let Some(committed) = committed {
            self.durability.ledger().committed(committed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self.unwritten_committed {
            Some(committed) => Ok(Some(committed)),
            None => Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten()),
        }
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
        let entries: Vec<_> = entries.into_iter().collect();
        let own_from = own_first_index(self.vote.as_ref(), self.node_id, &entries);
        let mut batch = WriteBatch::default();
        if let Some(committed) = self.unwritten_committed.take() {
            batch.put_cf(
                cf(&self.db, CF_RAFT_META),
                KEY_COMMITTED,
                meta_json(&committed)?,
            );
        }
        let logs = cf(&self.db, CF_LOGS);
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(|e| write_err(ErrorSubject::Logs, e))?;
            batch.put_cf(logs, index_key(entry.log_id.index), value);
        }
        // Written now, durable once synced: here, or by the syncer.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(write_err(ErrorSubject::Logs, e));
        }
        let seq = self.durability.ledger().written(own_from);
        let last_sync = Duration::from_nanos(self.last_sync.load(Ordering::Relaxed));
        if sync_in_place(own_from, last_sync) {
            let synced = sync_wal(&self.db, &self.last_sync);
            self.durability.synced(synced.clone().map(|()| seq));
            callback.log_io_completed(synced.map_err(std::io::Error::other));
            return Ok(());
        }
        let callback = match own_from {
            // Reported at once: openraft replicates it while it is synced.
            Some(_) => {
                callback.log_io_completed(Ok(()));
                None
            }
            None => Some(callback),
        };
        if let Err(unsent) = self.syncer.send(Written { seq, callback }) {
            let gone = "the log sync thread is gone";
            match unsent.0.callback {
                Some(callback) => callback.log_io_completed(Err(std::io::Error::other(gone))),
                None => self.durability.synced(Err(gone.into())),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership};

    fn entry(term: u64, leader: NodeId, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn only_a_leaders_own_entries_are_reported_before_their_sync() {
        let mut leading = Vote::new(3, 1);
        leading.commit();
        let own = [entry(3, 1, 10), entry(3, 1, 11)];
        assert_eq!(own_first_index(Some(&leading), 1, &own), Some(10));
        // Another node's view of the same vote: replicated to it, synced first.
        assert_eq!(own_first_index(Some(&leading), 2, &own), None);
        // A vote not (yet) granted by a quorum: a candidate, not a leader.
        assert_eq!(own_first_index(Some(&Vote::new(3, 1)), 1, &own), None);
        // Entries this node made as leader of an earlier term, sent back by
        // the current leader: a follower's append.
        assert_eq!(
            own_first_index(Some(&leading), 1, &[entry(2, 1, 9), entry(3, 1, 10)]),
            None
        );
        let membership = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 12),
            payload: EntryPayload::Membership(Membership::new(vec![[1, 2, 3].into()], None)),
        };
        assert_eq!(
            own_first_index(Some(&leading), 1, &[entry(3, 1, 11), membership]),
            None
        );
        assert_eq!(own_first_index(None, 1, &own), None);
        assert_eq!(own_first_index(Some(&leading), 1, &[]), None);
    }

    #[test]
    fn a_replicated_append_is_synced_in_place_while_the_disk_is_quick() {
        let quick = Duration::from_micros(150);
        let slow = Duration::from_millis(5);
        // A follower's append, as a node starts (no sync timed yet) and after quick ones.
        assert!(sync_in_place(None, Duration::ZERO));
        assert!(sync_in_place(None, quick));
        // After a slow sync, to the sync thread (which times its own).
        assert!(!sync_in_place(None, slow));
        assert!(!sync_in_place(None, QUICK_SYNC));
        // A leader's own append is reported at once and synced by the thread.
        assert!(!sync_in_place(Some(10), quick));
    }

    #[test]
    fn a_sync_notes_how_long_it_took() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::raft::store::open(dir.path()).expect("open");
        let last = AtomicU64::new(u64::MAX);
        db.put(b"k", b"v").expect("put");
        sync_wal(&db, &last).expect("synced");
        assert!(last.load(Ordering::Relaxed) < u64::MAX);
    }
}
