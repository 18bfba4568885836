//! A command sent more than once is applied once. A follower forwards a
//! write to the leader; when that leader stops answering and another is
//! elected, the follower sends the write to the new one (`Node::write`),
//! but the first copy may still be committed: it reached a quorum before
//! the old leader fell silent, or waited in its proposer. Applied twice,
//! the second copy would undo whatever was written in between.
//!
//! Such a command carries an id (`Command::id`). Every replica remembers,
//! for the commands with an id applied in the last [`REMEMBERED_ENTRIES`]
//! entries, the entry and the outcome: a later copy changes nothing and
//! answers with the first one's outcome. What is remembered is replicated
//! state (in snapshots too), and forgotten at the same indexes on every
//! replica, so all decide alike.

use super::{
    state_machine::{put_json, read_json},
    store::{cf, read_err, CF_SM_META},
    ApplyOutcome, StorageError,
};
use meridian_model::{Command, CommandId};
use openraft::ErrorSubject;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

/// How long a command's id is remembered, in log entries. A copy comes
/// within the seconds a follower keeps trying (`LEADER_WAIT` and one
/// forwarding timeout); entries come at most a few thousand a second.
pub const REMEMBERED_ENTRIES: u64 = 100_000;
/// Ids are forgotten at indexes that are multiples of this (so each apply
/// does not scan for them), the same ones on every replica.
const FORGET_EVERY: u64 = 1_024;

/// `BY_ID` + id (16 bytes, big-endian) → the JSON of [`Remembered`].
const BY_ID: &[u8] = b"once/id/";
const BY_ID_END: &[u8] = b"once/id0";
/// `BY_INDEX` + index (8 bytes, big-endian) + id → nothing: what to forget.
const BY_INDEX: &[u8] = b"once/at/";
const BY_INDEX_END: &[u8] = b"once/at0";

/// A command applied with an id: where, and what it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub id: CommandId,
    pub index: u64,
    pub outcome: ApplyOutcome,
}

fn by_id(id: CommandId) -> Vec<u8> {
    [BY_ID, &id.0.to_be_bytes()].concat()
}

fn by_index(index: u64, id: CommandId) -> Vec<u8> {
    [BY_INDEX, &index.to_be_bytes(), &id.0.to_be_bytes()].concat()
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    read_err(ErrorSubject::StateMachine, e)
}

/// The outcome of the command `id` if a copy of it was applied already.
fn earlier(db: &DB, id: CommandId) -> Result<Option<ApplyOutcome>, StorageError> {
    let remembered: Option<Remembered> = read_json(db, &by_id(id))?;
    Ok(remembered.map(|r| r.outcome))
}

/// Per command of an entry, the outcome of its copy applied before, if any.
pub fn earlier_copies(
    db: &DB,
    commands: &[Command],
) -> Result<Vec<Option<ApplyOutcome>>, StorageError> {
    commands
        .iter()
        .map(|command| command.id.map_or(Ok(None), |id| earlier(db, id)))
        .collect()
}

/// Adds to `batch` that a command was applied (its id, entry and outcome).
pub fn remember(
    db: &DB,
    batch: &mut WriteBatch,
    remembered: &Remembered,
) -> Result<(), StorageError> {
    put_json(db, batch, &by_id(remembered.id), remembered)?;
    batch.put_cf(
        cf(db, CF_SM_META),
        by_index(remembered.index, remembered.id),
        [],
    );
    Ok(())
}

/// At the indexes where ids are forgotten, adds to `batch` the removal of
/// those applied more than [`REMEMBERED_ENTRIES`] entries before `index`.
pub fn forget_old(db: &DB, batch: &mut WriteBatch, index: u64) -> Result<(), StorageError> {
    if !index.is_multiple_of(FORGET_EVERY) || index <= REMEMBERED_ENTRIES {
        return Ok(());
    }
    let before = index - REMEMBERED_ENTRIES;
    let meta = cf(db, CF_SM_META);
    for item in db.iterator_cf(meta, IteratorMode::From(BY_INDEX, Direction::Forward)) {
        let (key, _) = item.map_err(sm_err)?;
        let Some((at, id)) = parse_by_index(&key) else {
            break;
        };
        if at >= before {
            break;
        }
        batch.delete_cf(meta, &key);
        batch.delete_cf(meta, by_id(id));
    }
    Ok(())
}

fn parse_by_index(key: &[u8]) -> Option<(u64, CommandId)> {
    let rest = key.strip_prefix(BY_INDEX)?;
    let index = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let id = u128::from_be_bytes(rest.get(8..24)?.try_into().ok()?);
    Some((index, CommandId(id)))
}

/// Everything remembered, as read through `point` (for a snapshot).
pub fn read_all(
    db: &DB,
    point: &rocksdb::SnapshotWithThreadMode<DB>,
) -> Result<Vec<Remembered>, StorageError> {
    let mut all = Vec::new();
    let from = IteratorMode::From(BY_ID, Direction::Forward);
    for item in point.iterator_cf(cf(db, CF_SM_META), from) {
        let (key, value) = item.map_err(sm_err)?;
        if !key.starts_with(BY_ID) {
            break;
        }
        all.push(serde_json::from_slice(&value).map_err(sm_err)?);
    }
    Ok(all)
}

/// Adds to `batch` the replacement of everything remembered by `all` (a
/// snapshot's).
pub fn replace_all(
    db: &DB,
    batch: &mut WriteBatch,
    all: &[Remembered],
) -> Result<(), StorageError> {
    let meta = cf(db, CF_SM_META);
    batch.delete_range_cf(meta, BY_ID, BY_ID_END);
    batch.delete_range_cf(meta, BY_INDEX, BY_INDEX_END);
    for remembered in all {
        remember(db, batch, remembered)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_only_what_is_older_than_the_window_and_only_at_its_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::store::open(dir.path()).expect("rocksdb");
        let outcome = |i: u64| ApplyOutcome(Ok(vec![i]));
        let mut batch = WriteBatch::default();
        for (id, index) in [(7u128, 5u64), (3, 2_000), (9, 2_399), (1, 2_400)] {
            let remembered = Remembered {
                id: CommandId(id),
                index,
                outcome: outcome(index),
            };
            remember(&db, &mut batch, &remembered).expect("remember");
        }
        db.write(batch).expect("write");
        assert_eq!(
            earlier(&db, CommandId(3)).expect("read"),
            Some(outcome(2_000))
        );
        assert_eq!(earlier(&db, CommandId(4)).expect("read"), None);

        let forget_at = |index: u64| {
            let mut batch = WriteBatch::default();
            forget_old(&db, &mut batch, index).expect("forget");
            db.write(batch).expect("write");
        };
        // Not an index where ids are forgotten: all kept.
        forget_at(REMEMBERED_ENTRIES + 2_401);
        assert!(earlier(&db, CommandId(7)).expect("read").is_some());
        // Forgets what came before REMEMBERED_ENTRIES entries ago, only.
        assert!((REMEMBERED_ENTRIES + 2_400).is_multiple_of(FORGET_EVERY));
        forget_at(REMEMBERED_ENTRIES + 2_400);
        let left: Vec<CommandId> = {
            let point = db.snapshot();
            read_all(&db, &point)
                .expect("read")
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(
            left,
            vec![CommandId(1)],
            "1 at 2,400 is kept, the older ones go"
        );
        assert_eq!(earlier(&db, CommandId(9)).expect("read"), None);

        // A snapshot's record replaces this one's.
        let mut batch = WriteBatch::default();
        let installed = Remembered {
            id: CommandId(42),
            index: 9_000,
            outcome: outcome(9_000),
        };
        replace_all(&db, &mut batch, std::slice::from_ref(&installed)).expect("replace");
        db.write(batch).expect("write");
        assert_eq!(earlier(&db, CommandId(1)).expect("read"), None);
        let point = db.snapshot();
        assert_eq!(read_all(&db, &point).expect("read"), vec![installed]);
    }
}
