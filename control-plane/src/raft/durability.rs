//! What of this node's Raft log is on its disk, for a leader that reports
//! its own appends before they are synced.
//!
//! openraft 0.9 waits inside its core task until an append is reported
//! before it runs its next command, so a leader sent a new entry to its
//! followers only once its own fsync was done: two fsyncs one after the
//! other on every write's path. A leader's own appends (entries of its own
//! term, while it holds a committed vote for itself) are therefore reported
//! as soon as they are written, and synced in the background: the
//! followers' fsyncs run while the leader's does (the Raft thesis, 10.2.1).
//!
//! openraft then counts the leader towards a commit before its copy is on
//! disk. Every effect of a commit still waits for a majority of disks:
//! - nothing is applied on this node (so no client is answered, no read
//!   served and no proxy told) until its own appends up to the entry are
//!   synced (`Durability::until_durable`);
//! - no follower is told of a commit beyond them (`Durability::limit_commit`);
//!   once the sync catches up, a heartbeat tells them (`released`);
//! - a follower answers an append only once it is synced, as before, and a
//!   membership entry is synced before it is reported.
//!
//! So an entry is applied anywhere only once the leader and a follower (a
//! majority of three) hold it on disk; a leader that loses power with
//! appends unsynced loses only entries nobody has applied.

use super::LogId;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// The bookkeeping, without locks or waiting.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The sequence number of the last write to the log.
    written: u64,
    /// Own appends reported and not yet synced: (write sequence, first
    /// index), oldest first.
    unsynced: VecDeque<(u64, u64)>,
    /// Commits recorded beyond what is on disk here, oldest first.
    commits: VecDeque<LogId>,
    /// The newest commit recorded whose entries are all on disk here.
    durable_commit: Option<LogId>,
    /// Whether a follower was told less than the commit since the last sync.
    held_back: bool,
    /// Why syncing failed, if it did: nothing reported early becomes durable.
    failed: Option<String>,
}

impl Ledger {
    /// Records a write to the log; `own_from` is the first index of an own
    /// append reported before its sync. Returns the write's sequence number.
    pub fn written(&mut self, own_from: Option<u64>) -> u64 {
        self.written += 1;
        if let Some(first) = own_from {
            self.unsynced.push_back((self.written, first));
        }
        self.written
    }

    /// The highest index up to which every own append is on disk.
    pub fn durable_upto(&self) -> u64 {
        self.unsynced
            .front()
            .map_or(u64::MAX, |&(_, first)| first.saturating_sub(1))
    }

    /// Records that every write up to sequence `upto` is on disk. Returns
    /// whether a commit held back from followers may now go to them.
    pub fn synced(&mut self, upto: u64) -> bool {
        let before = self.unsynced.len();
        while self.unsynced.front().is_some_and(|&(seq, _)| seq <= upto) {
            self.unsynced.pop_front();
        }
        self.promote();
        self.unsynced.len() < before && std::mem::take(&mut self.held_back)
    }

    pub fn sync_failed(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    /// Records the commit openraft saved.
    pub fn committed(&mut self, commit: LogId) {
        self.commits.push_back(commit);
        self.promote();
    }

    fn promote(&mut self) {
        let upto = self.durable_upto();
        while self.commits.front().is_some_and(|c| c.index <= upto) {
            self.durable_commit = self.commits.pop_front();
        }
    }

    /// The commit to tell a follower when openraft would tell it `commit`:
    /// no further than what is on disk here.
    pub fn limit_commit(&mut self, commit: Option<LogId>) -> Option<LogId> {
        match commit {
            Some(c) if c.index > self.durable_upto() => {
                self.held_back = true;
                self.durable_commit.filter(|d| *d <= c)
            }
            other => other,
        }
    }

    /// Whether every own append up to `index` is on disk; an error if
    /// syncing failed.
    pub fn is_durable(&self, index: u64) -> Result<bool, String> {
        match &self.failed {
            Some(why) => Err(why.clone()),
            None => Ok(index <= self.durable_upto()),
        }
    }
}

/// The ledger shared by the log store, its sync thread, the state machine
/// and the connections to peers.
#[derive(Debug, Default)]
pub struct Durability {
    ledger: Mutex<Ledger>,
    /// Woken at every sync, for `until_durable`.
    synced: Notify,
    /// Woken when a commit held back from followers may go to them.
    pub released: Notify,
}

impl Durability {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that every write up to sequence `upto` is on disk, or that
    /// syncing failed, and wakes whoever waits on it.
    pub fn synced(&self, upto: Result<u64, String>) {
        let release = match upto {
            Ok(upto) => self.ledger().synced(upto),
            Err(why) => {
                self.ledger().sync_failed(why);
                false
            }
        };
        self.synced.notify_waiters();
        if release {
            self.released.notify_one();
        }
    }

    /// Waits until every own append up to `index` is on disk.
    pub async fn until_durable(&self, index: u64) -> Result<(), String> {
        loop {
            let synced = self.synced.notified();
            tokio::pin!(synced);
            // Registered before checking: a sync in between still wakes it.
            synced.as_mut().enable();
            if self.ledger().is_durable(index)? {
                return Ok(());
            }
            synced.await;
        }
    }
}

/// Tells the followers of each commit held back from them, once this
/// node's sync catches up (a heartbeat carries it): ends with Raft.
pub async fn release_commits(raft: super::Raft, durability: std::sync::Arc<Durability>) {
    loop {
        durability.released.notified().await;
        if raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn an_own_append_is_durable_once_a_sync_after_it_reports() {
        let mut ledger = Ledger::default();
        // A follower's append (synced before it is reported) holds nothing back.
        ledger.written(None);
        assert_eq!(ledger.is_durable(u64::MAX), Ok(true));
        let first = ledger.written(Some(5));
        let second = ledger.written(Some(7));
        assert_eq!(ledger.durable_upto(), 4);
        assert_eq!(ledger.is_durable(5), Ok(false));
        ledger.synced(first);
        assert_eq!(ledger.durable_upto(), 6);
        assert_eq!(ledger.is_durable(6), Ok(true));
        assert_eq!(ledger.is_durable(7), Ok(false));
        ledger.synced(second);
        assert_eq!(ledger.is_durable(100), Ok(true));
    }

    #[test]
    fn followers_hear_of_a_commit_only_once_it_is_on_disk_here() {
        let mut ledger = Ledger::default();
        ledger.committed(log_id(1, 4));
        let seq = ledger.written(Some(5));
        ledger.committed(log_id(2, 5));
        // Entry 5 is committed (this leader and a follower) but not synced
        // here: followers are told 4, and a heartbeat follows the sync.
        assert_eq!(ledger.limit_commit(Some(log_id(2, 5))), Some(log_id(1, 4)));
        assert_eq!(ledger.limit_commit(Some(log_id(1, 4))), Some(log_id(1, 4)));
        assert!(ledger.synced(seq), "the held-back commit is released");
        assert_eq!(ledger.limit_commit(Some(log_id(2, 5))), Some(log_id(2, 5)));
        // Nothing held back since: no release at the next sync.
        let seq = ledger.written(Some(6));
        assert!(!ledger.synced(seq));
    }

    #[test]
    fn a_failed_sync_keeps_everything_reported_early_from_being_applied() {
        let mut ledger = Ledger::default();
        ledger.written(Some(3));
        ledger.sync_failed("disk full".into());
        assert_eq!(ledger.is_durable(3), Err("disk full".into()));
        assert_eq!(ledger.is_durable(1), Err("disk full".into()));
    }

    #[tokio::test]
    async fn a_wait_for_an_own_append_ends_at_its_sync() {
        let durability = std::sync::Arc::new(Durability::default());
        let seq = durability.ledger().written(Some(1));
        let waiting = tokio::spawn({
            let durability = durability.clone();
            async move { durability.until_durable(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        durability.synced(Ok(seq));
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends at the sync");
        assert_eq!(waited.expect("task"), Ok(()));
    }
}
