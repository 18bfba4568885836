//! Change events from the state machine, for Watch: a bounded history of
//! recent changes plus a live broadcast, like etcd's watch with compaction.

use meridian_model::{Resource, ResourceKey};
use std::{collections::VecDeque, sync::Mutex};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub change: ChangeType,
    pub key: ResourceKey,
    /// The object after the change; `None` for deletions.
    pub resource: Option<Resource>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Change(Box<Change>),
    /// The replica's state was replaced by a snapshot: watchers must start over.
    Reset,
}

/// How many recent changes a watch can resume from.
const HISTORY: usize = 10_000;

pub struct EventHub {
    inner: Mutex<History>,
    live: broadcast::Sender<Event>,
}

struct History {
    changes: VecDeque<Change>,
    /// Changes at or below this revision are no longer in `changes`.
    compacted: u64,
}

/// A watch's starting point, taken atomically with its live subscription.
pub struct Resume {
    pub backlog: Vec<Change>,
    pub live: broadcast::Receiver<Event>,
}

impl EventHub {
    pub fn new(applied: u64) -> Self {
        let (live, _) = broadcast::channel(4096);
        EventHub {
            inner: Mutex::new(History {
                changes: VecDeque::new(),
                compacted: applied,
            }),
            live,
        }
    }

    /// Runs `write` (the storage write that makes `changes` true) and
    /// publishes the changes, with no reader in between: a watch that lists
    /// state and subscribes under [`EventHub::list_and_subscribe`] sees each
    /// change exactly once.
    pub fn commit<E>(
        &self,
        write: impl FnOnce() -> Result<(), E>,
        changes: Vec<Change>,
    ) -> Result<(), E> {
        let mut history = self.lock();
        write()?;
        for change in changes {
            history.changes.push_back(change.clone());
            if history.changes.len() > HISTORY {
                if let Some(old) = history.changes.pop_front() {
                    history.compacted = old.revision;
                }
            }
            let _ = self.live.send(Event::Change(Box::new(change)));
        }
        Ok(())
    }

    pub fn reset(&self, applied: u64) {
        let mut history = self.lock();
        history.changes.clear();
        history.compacted = applied;
        let _ = self.live.send(Event::Reset);
    }

    /// Changes after `from_revision`, then live ones. `None` when that
    /// history is no longer kept.
    pub fn resume(&self, from_revision: u64) -> Option<Resume> {
        let history = self.lock();
        if from_revision < history.compacted {
            return None;
        }
        let backlog = history
            .changes
            .iter()
            .filter(|c| c.revision > from_revision)
            .cloned()
            .collect();
        Some(Resume {
            backlog,
            live: self.live.subscribe(),
        })
    }

    /// Reads state with `read` and subscribes to what changes after it, atomically.
    pub fn list_and_subscribe<T>(
        &self,
        read: impl FnOnce() -> T,
    ) -> (T, broadcast::Receiver<Event>) {
        let _history = self.lock();
        (read(), self.live.subscribe())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
