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
    /// About how many bytes the change holds (its stored encoding), to bound the history.
    pub size: usize,
    /// The trace context of the apply that made it, when its change was traced.
    pub trace: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Change(Box<Change>),
    /// The replica's state was replaced by a snapshot: watchers must start over.
    Reset,
}

/// How many recent changes a watch can resume from, at most ...
const HISTORY: usize = 10_000;
/// ... and how many bytes of them: large objects keep fewer.
const HISTORY_BYTES: usize = 64 << 20;

pub struct EventHub {
    inner: Mutex<History>,
    live: broadcast::Sender<Event>,
}

struct History {
    changes: VecDeque<Change>,
    /// The sum of the changes' sizes.
    bytes: usize,
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
                bytes: 0,
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
            history.bytes += change.size;
            history.changes.push_back(change.clone());
            while history.changes.len() > HISTORY || history.bytes > HISTORY_BYTES {
                let Some(old) = history.changes.pop_front() else {
                    break;
                };
                history.bytes -= old.size;
                history.compacted = old.revision;
            }
            let _ = self.live.send(Event::Change(Box::new(change)));
        }
        Ok(())
    }

    pub fn reset(&self, applied: u64) {
        let mut history = self.lock();
        history.changes.clear();
        history.bytes = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::Kind;

    fn change(revision: u64, size: usize) -> Change {
        Change {
            revision,
            change: ChangeType::Added,
            key: ResourceKey::new(Kind::Cluster, None, &format!("c{revision}"), None).expect("key"),
            resource: None,
            size,
            trace: None,
        }
    }

    #[test]
    fn the_history_is_bounded_by_bytes_as_well_as_count() {
        let hub = EventHub::new(0);
        // Three changes of 30 MiB each: only the last two fit in 64 MiB.
        for revision in 1..=3 {
            hub.commit(|| Ok::<(), ()>(()), vec![change(revision, 30 << 20)])
                .expect("commit");
        }
        assert!(hub.resume(0).is_none(), "revision 1 was compacted away");
        let resume = hub.resume(1).expect("from 1");
        let revisions: Vec<u64> = resume.backlog.iter().map(|c| c.revision).collect();
        assert_eq!(revisions, [2, 3]);
    }
}
