//! The replicated state machine in RocksDB: resources, the nodes recorded as
//! holding the cluster's data, the last applied log id and membership, and
//! the current snapshot. Deciding what a command changes is
//! `meridian_model::plan`; this module only carries it out.

use super::applied_once::{self, Remembered};
use super::durability::Durability;
use super::snapshot_data::SnapshotData;
use super::view::DbView;
use super::{
    store::{cf, read_err, sync_writes, write_err, CF_RESOURCES, CF_SM_META},
    Applied, ApplyOutcome, LogId, Membership, StorageError, TypeConfig,
};
use crate::events::{Change, ChangeType, EventHub};
use meridian_model::{plan_each, Command, Planned, Write};
use meridian_telemetry::{self as telemetry, KeyValue, SpanKind, TraceContextExt};
use openraft::{
    storage::{RaftStateMachine, Snapshot},
    EntryPayload, ErrorSubject, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
};
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeSet, io::Cursor, sync::Arc};

const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// The nodes recorded as holding the cluster's data (`Op::RecordBootstrapped`).
const KEY_BOOTSTRAPPED: &[u8] = b"bootstrapped";

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    events: Arc<EventHub>,
    /// Held while a snapshot is stored (built or installed), so a build
    /// that finishes late cannot replace a newer installed snapshot.
    snapshots: Arc<std::sync::Mutex<()>>,
    /// What of the log is on disk: an entry is applied only once this
    /// node's own copy of it is (see `durability`).
    durability: Arc<Durability>,
}

impl StateMachine {
    pub fn new(db: Arc<DB>, durability: Arc<Durability>) -> Result<Self, StorageError> {
        let applied = applied_index(&db)?;
        Ok(StateMachine {
            db,
            events: Arc::new(EventHub::new(applied)),
            snapshots: Arc::new(std::sync::Mutex::new(())),
            durability,
        })
    }

    /// Stores a snapshot this node built, unless the one stored is as new
    /// or newer (installed from the leader while this one was being built).
    fn store_built_snapshot(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        bytes: &[u8],
    ) -> Result<bool, StorageError> {
        let _serial = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let stored =
            read_json::<SnapshotMeta<u64, openraft::BasicNode>>(&self.db, KEY_SNAPSHOT_META)?;
        if stored.is_some_and(|s| s.last_log_id >= meta.last_log_id) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        put_json(&self.db, &mut batch, KEY_SNAPSHOT_META, meta)?;
        batch.put_cf(cf(&self.db, CF_SM_META), KEY_SNAPSHOT_DATA, bytes);
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| write_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        Ok(true)
    }

    /// The index of the last entry this replica applied, as stored.
    pub fn last_applied_index(&self) -> Result<u64, StorageError> {
        applied_index(&self.db)
    }

    /// The nodes this replica has applied records of: each has held the
    /// cluster's data, so none may come back with an empty data dir.
    pub fn bootstrapped(&self) -> Result<BTreeSet<u64>, StorageError> {
        Ok(read_json(&self.db, KEY_BOOTSTRAPPED)?.unwrap_or_default())
    }

    pub fn events(&self) -> Arc<EventHub> {
        self.events.clone()
    }

    /// A read view of what this replica has applied.
    pub fn view(&self) -> DbView {
        DbView::new(self.db.clone())
    }

    /// Everything this replica has applied, read at one instant (a RocksDB
    /// snapshot) while the state machine goes on applying: resources,
    /// applied log id and membership always agree.
    pub fn read_state(&self) -> Result<SnapshotData, StorageError> {
        let point = self.db.snapshot();
        let read = |key: &[u8]| {
            point
                .get_cf(cf(&self.db, CF_SM_META), key)
                .map_err(|e| read_err(ErrorSubject::StateMachine, e))
        };
        let last_applied: Option<LogId> = parse_json(read(KEY_APPLIED)?)?;
        let membership: Membership = parse_json(read(KEY_MEMBERSHIP)?)?.unwrap_or_default();
        let bootstrapped = parse_json(read(KEY_BOOTSTRAPPED)?)?.unwrap_or_default();
        let applied_once = applied_once::read_all(&self.db, &point)?;
        let mut resources = Vec::new();
        for item in point.iterator_cf(cf(&self.db, CF_RESOURCES), IteratorMode::Start) {
            let (_, value) = item.map_err(|e| read_err(ErrorSubject::StateMachine, e))?;
            resources.push(String::from_utf8_lossy(&value).into_owned());
        }
        Ok(SnapshotData {
            last_applied,
            membership,
            resources,
            bootstrapped,
            applied_once,
        })
    }

    /// Plans the commands of the entry at `index` against what this replica
    /// has applied. A read that failed while planning is a storage error
    /// (fatal for this node), never a plan made as if the object were absent.
    fn plan(&self, commands: &[Command], index: u64) -> Result<Vec<Planned>, StorageError> {
        let view = self.view();
        let planned = plan_each(&view, commands, index);
        match view.failure() {
            Some(failure) => Err(read_err(
                ErrorSubject::StateMachine,
                std::io::Error::other(failure),
            )),
            None => Ok(planned),
        }
    }

    /// Adds `writes` to `batch`; the nodes they record go to `recorded`.
    fn apply_writes(
        &self,
        writes: Vec<Write>,
        revision: u64,
        batch: &mut WriteBatch,
        recorded: &mut Vec<u64>,
    ) -> Result<Vec<Change>, StorageError> {
        let resources = cf(&self.db, CF_RESOURCES);
        let mut changes = Vec::with_capacity(writes.len());
        for write in writes {
            match write {
                Write::Put { resource, created } => {
                    let key = resource.key();
                    let json = serde_json::to_vec(&resource)
                        .map_err(|e| write_err(ErrorSubject::StateMachine, e))?;
                    let size = json.len();
                    batch.put_cf(resources, key.encode(), json);
                    changes.push(Change {
                        size,
                        revision,
                        change: if created {
                            ChangeType::Added
                        } else {
                            ChangeType::Modified
                        },
                        key,
                        resource: Some(*resource),
                        trace: None,
                    });
                }
                Write::Delete(key) => {
                    batch.delete_cf(resources, key.encode());
                    changes.push(Change {
                        size: key.encode().len(),
                        revision,
                        change: ChangeType::Deleted,
                        key,
                        resource: None,
                        trace: None,
                    });
                }
                Write::Bootstrapped(node) => recorded.push(node),
            }
        }
        Ok(changes)
    }

    /// Applies the commands of the entry at `index` into `batch`: per
    /// command its outcome, and every change, in order.
    fn apply_commands(
        &self,
        commands: &[Command],
        index: u64,
        batch: &mut WriteBatch,
    ) -> Result<(Applied, Vec<Change>), StorageError> {
        // A copy of a command applied before changes nothing (`applied_once`).
        let earlier = applied_once::earlier_copies(&self.db, commands)?;
        let planned = if earlier.iter().all(Option::is_none) {
            self.plan(commands, index)?
        } else {
            let fresh: Vec<Command> = commands
                .iter()
                .zip(&earlier)
                .filter(|(_, earlier)| earlier.is_none())
                .map(|(command, _)| command.clone())
                .collect();
            self.plan(&fresh, index)?
        };
        let mut planned = planned.into_iter();
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut changes = Vec::new();
        let mut recorded = Vec::new();
        for (command, earlier) in commands.iter().zip(earlier) {
            if let Some(outcome) = earlier {
                outcomes.push(outcome);
                continue;
            }
            let Some(planned) = planned.next() else {
                return Err(write_err(
                    ErrorSubject::StateMachine,
                    std::io::Error::other("a command of the entry was not planned"),
                ));
            };
            // A traced command is applied in a `raft.apply` span on every
            // replica; its changes carry that span on to the xDS pushes.
            let traced = command
                .trace
                .as_deref()
                .map(|trace| apply_span(trace, index));
            let (outcome, mut written) = match planned {
                Ok((writes, revisions)) => (
                    Ok(revisions),
                    self.apply_writes(writes, index, batch, &mut recorded)?,
                ),
                Err(rejection) => (Err(rejection), Vec::new()),
            };
            if let Some(cx) = &traced {
                let trace = telemetry::propagation::to_string(cx);
                for change in &mut written {
                    change.trace.clone_from(&trace);
                }
                cx.span()
                    .set_attribute(KeyValue::new("meridian.changes", written.len() as i64));
                if let Err(rejection) = &outcome {
                    telemetry::fail(cx, rejection.to_string());
                }
            }
            changes.extend(written);
            let outcome = ApplyOutcome(outcome);
            if let Some(id) = command.id {
                let remembered = Remembered {
                    id,
                    index,
                    outcome: outcome.clone(),
                };
                applied_once::remember(&self.db, batch, &remembered)?;
            }
            outcomes.push(outcome);
        }
        if !recorded.is_empty() {
            // Earlier entries of this apply are written already: this reads them.
            let mut nodes = self.bootstrapped()?;
            nodes.extend(recorded);
            put_json(&self.db, batch, KEY_BOOTSTRAPPED, &nodes)?;
        }
        Ok((Applied(outcomes), changes))
    }
}

/// The `raft.apply` span of the entry at `index`, a child of its proposal.
fn apply_span(trace: &str, index: u64) -> telemetry::Context {
    telemetry::start(
        "raft.apply",
        SpanKind::Internal,
        &telemetry::propagation::from_string(trace),
        vec![KeyValue::new("meridian.raft.index", index as i64)],
    )
}

fn applied_index(db: &DB) -> Result<u64, StorageError> {
    Ok(read_json::<LogId>(db, KEY_APPLIED)?.map_or(0, |l| l.index))
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(
    db: &DB,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let bytes = db
        .get_cf(cf(db, CF_SM_META), key)
        .map_err(|e| read_err(ErrorSubject::StateMachine, e))?;
    parse_json(bytes)
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StorageError> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(|e| read_err(ErrorSubject::StateMachine, e)))
        .transpose()
}

pub(super) fn put_json<T: Serialize>(
    db: &DB,
    batch: &mut WriteBatch,
    key: &[u8],
    value: &T,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| write_err(ErrorSubject::StateMachine, e))?;
    batch.put_cf(cf(db, CF_SM_META), key, bytes);
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let applied = read_json(&self.db, KEY_APPLIED)?;
        let membership = read_json(&self.db, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.durability
                .until_durable(last.log_id.index)
                .await
                .map_err(|why| {
                    write_err(ErrorSubject::Apply(last.log_id), std::io::Error::other(why))
                })?;
        }
        let mut outcomes = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let mut batch = WriteBatch::default();
            let (applied, changes) = match entry.payload {
                EntryPayload::Blank => (Applied::default(), Vec::new()),
                EntryPayload::Normal(proposal) => {
                    self.apply_commands(&proposal.commands, index, &mut batch)?
                }
                EntryPayload::Membership(membership) => {
                    let stored = Membership::new(Some(entry.log_id), membership);
                    put_json(&self.db, &mut batch, KEY_MEMBERSHIP, &stored)?;
                    (Applied::default(), Vec::new())
                }
            };
            applied_once::forget_old(&self.db, &mut batch, index)?;
            put_json(&self.db, &mut batch, KEY_APPLIED, &entry.log_id)?;
            // Later entries in this call plan against what earlier ones wrote.
            self.events
                .commit(|| self.db.write(batch), changes)
                .map_err(|e| write_err(ErrorSubject::Apply(entry.log_id), e))?;
            outcomes.push(applied);
        }
        // Not synced here: the next synced log append carries these writes
        // to disk (one write-ahead log; see `store::sync_writes`).
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let unreadable = |e| read_err(ErrorSubject::Snapshot(Some(meta.signature())), e);
        let data = SnapshotData::decode(&bytes).map_err(unreadable)?;
        let resources = cf(&self.db, CF_RESOURCES);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(resources, [0u8].as_slice(), [0xffu8].as_slice());
        for (resource, json) in data.parsed().map_err(unreadable)? {
            batch.put_cf(resources, resource.key().encode(), json);
        }
        put_json(&self.db, &mut batch, KEY_APPLIED, &meta.last_log_id)?;
        put_json(&self.db, &mut batch, KEY_MEMBERSHIP, &meta.last_membership)?;
        put_json(&self.db, &mut batch, KEY_BOOTSTRAPPED, &data.bootstrapped)?;
        applied_once::replace_all(&self.db, &mut batch, &data.applied_once)?;
        put_json(&self.db, &mut batch, KEY_SNAPSHOT_META, meta)?;
        batch.put_cf(cf(&self.db, CF_SM_META), KEY_SNAPSHOT_DATA, &bytes);
        {
            let _serial = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            self.db
                .write_opt(batch, &sync_writes())
                .map_err(|e| write_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        }
        self.events
            .reset(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Metadata and data from one RocksDB snapshot: never one snapshot's
        // metadata with another's data.
        let point = self.db.snapshot();
        let read = |key: &[u8]| {
            point
                .get_cf(cf(&self.db, CF_SM_META), key)
                .map_err(|e| read_err(ErrorSubject::StateMachine, e))
        };
        let Some(meta) =
            parse_json::<SnapshotMeta<u64, openraft::BasicNode>>(read(KEY_SNAPSHOT_META)?)?
        else {
            return Ok(None);
        };
        let data = read(KEY_SNAPSHOT_DATA)?.unwrap_or_default();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = self.read_state()?;
        let (last_applied, membership) = (data.last_applied, data.membership.clone());
        let bytes = data
            .encode()
            .map_err(|e| write_err(ErrorSubject::StateMachine, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: format!("{}-{nanos}", last_applied.map(|l| l.index).unwrap_or(0)),
        };
        if !self.store_built_snapshot(&meta, &bytes)? {
            tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot was installed meanwhile; keeping it");
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Proposal;
    use meridian_model::{parse_manifests, CommandId, Kind, Op, ResourceKey, StateView};

    /// A state machine on an empty database, and the directory that holds it.
    fn empty_machine() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::store::open(dir.path()).expect("rocksdb");
        (
            dir,
            StateMachine::new(db, Default::default()).expect("state machine"),
        )
    }

    /// The entry at `index` (term 1) of `commands`.
    fn entry(index: u64, commands: Vec<Command>) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal { commands }),
        }
    }

    /// A command that puts the objects of `manifests`.
    fn put(manifests: &str, expected_revision: Option<u64>) -> Command {
        Command::new(
            parse_manifests(manifests)
                .expect("manifest")
                .into_iter()
                .map(|resource| Op::Put {
                    resource: Box::new(resource),
                    expected_revision,
                })
                .collect(),
        )
    }

    #[test]
    fn a_snapshot_built_late_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::store::open(dir.path()).expect("rocksdb");
        let machine = StateMachine::new(db.clone(), Default::default()).expect("state machine");
        let meta = |index: u64| SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                index,
            )),
            last_membership: Membership::default(),
            snapshot_id: format!("{index}"),
        };
        // Installed from the leader at 10 while this node was building one at 5.
        assert!(machine
            .store_built_snapshot(&meta(10), b"ten")
            .expect("store"));
        assert!(!machine
            .store_built_snapshot(&meta(5), b"five")
            .expect("store"));
        let current = stored_snapshot(&machine);
        assert_eq!(current, Some(("10".to_string(), b"ten".to_vec())));
        assert!(machine
            .store_built_snapshot(&meta(12), b"twelve")
            .expect("store"));
    }

    /// The stored snapshot's id and data.
    fn stored_snapshot(machine: &StateMachine) -> Option<(String, Vec<u8>)> {
        let mut machine = machine.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(machine.get_current_snapshot())
            .expect("read")
            .map(|s| (s.meta.snapshot_id, s.snapshot.into_inner()))
    }

    #[tokio::test]
    async fn recorded_nodes_accumulate_and_travel_in_snapshots() {
        let (_dir, mut machine) = empty_machine();
        let record = |node: u64| Command::new(vec![Op::RecordBootstrapped { node }]);
        // Two in one apply (the second reads the first), and one again.
        machine
            .apply([entry(1, vec![record(3)]), entry(2, vec![record(1)])])
            .await
            .expect("apply");
        machine
            .apply([entry(3, vec![record(3)])])
            .await
            .expect("apply");
        assert_eq!(
            machine.bootstrapped().expect("read"),
            BTreeSet::from([1, 3])
        );
        // Two commands of one entry: both kept.
        machine
            .apply([entry(4, vec![record(5), record(4)])])
            .await
            .expect("apply");
        assert_eq!(
            machine.bootstrapped().expect("read"),
            BTreeSet::from([1, 3, 4, 5])
        );

        // A follower that catches up through a snapshot holds the record too.
        let snapshot = machine.build_snapshot().await.expect("build");
        let (_other_dir, mut other) = empty_machine();
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(
            other.bootstrapped().expect("read"),
            BTreeSet::from([1, 3, 4, 5])
        );
    }

    #[tokio::test]
    async fn a_copy_of_a_command_applied_before_changes_nothing() {
        let (_dir, mut machine) = empty_machine();
        let set_region = |region: &str, id: Option<u128>| {
            let text =
                format!("kind: Cluster\nmetadata: {{name: c1}}\nspec: {{region: {region}}}\n");
            let mut command = put(&text, None);
            command.id = id.map(CommandId);
            command
        };
        let region = |machine: &StateMachine| {
            let key = ResourceKey::new(Kind::Cluster, None, "c1", None).expect("key");
            let cluster = machine.view().get(&key).expect("stored");
            serde_json::to_value(&cluster).expect("json")["spec"]["region"].clone()
        };
        // A write forwarded to the old leader and committed, a write after
        // it, then the copy sent to the new leader (and another command in
        // its entry, applied as usual).
        machine
            .apply([
                entry(5, vec![set_region("first", Some(77))]),
                entry(6, vec![set_region("second", None)]),
            ])
            .await
            .expect("apply");
        let other = |id: Option<u128>| {
            let mut command = Command::new(vec![Op::RecordBootstrapped { node: 2 }]);
            command.id = id.map(CommandId);
            command
        };
        let applied = machine
            .apply([entry(
                7,
                vec![set_region("first", Some(77)), other(Some(78))],
            )])
            .await
            .expect("apply");
        assert_eq!(region(&machine), "second", "the copy undid a later write");
        assert_eq!(
            applied[0].0[0],
            ApplyOutcome(Ok(vec![5])),
            "the first copy's outcome"
        );
        assert_eq!(machine.bootstrapped().expect("read"), BTreeSet::from([2]));

        // A replica that catches up through a snapshot knows it too.
        let snapshot = machine.build_snapshot().await.expect("build");
        let (_other_dir, mut follower) = empty_machine();
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        let applied = follower
            .apply([entry(8, vec![set_region("first", Some(77))])])
            .await
            .expect("apply");
        assert_eq!(region(&follower), "second");
        assert_eq!(applied[0].0[0], ApplyOutcome(Ok(vec![5])));
        // A command without an id, or with a new one, is applied as ever.
        follower
            .apply([entry(9, vec![set_region("third", Some(79))])])
            .await
            .expect("apply");
        assert_eq!(region(&follower), "third");
    }

    #[test]
    fn a_failed_read_while_planning_is_a_storage_error_not_an_absent_object() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::store::open(dir.path()).expect("rocksdb");
        let machine = StateMachine::new(db.clone(), Default::default()).expect("state machine");
        // The cluster the endpoints need is stored, but its value is corrupt:
        // planning must not go on as if it were absent ("unknown cluster"),
        // which would make this replica differ from the others for good.
        let key = ResourceKey::new(Kind::Cluster, None, "c1", None).expect("key");
        db.put_cf(cf(&db, CF_RESOURCES), key.encode(), b"{not json")
            .expect("put");
        let endpoints = parse_manifests(
            "kind: Endpoints\nmetadata: {name: web, namespace: shop, cluster: c1}\nspec: {endpoints: []}\n",
        )
        .expect("manifest")
        .remove(0);
        let command = Command::new(vec![Op::Put {
            resource: Box::new(endpoints),
            expected_revision: None,
        }]);
        let commands = [command];
        assert!(machine.plan(&commands, 5).is_err());
        // A sound state plans as before.
        db.delete_cf(cf(&db, CF_RESOURCES), key.encode())
            .expect("delete");
        let refused = machine.plan(&commands, 6).expect("no storage error");
        assert!(refused[0].is_err(), "unknown cluster, refused by the model");
    }

    #[tokio::test]
    async fn the_commands_of_one_entry_apply_in_order_each_all_or_nothing() {
        let (_dir, mut machine) = empty_machine();
        let cluster = "kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1}\n";
        let endpoints = "kind: Endpoints\nmetadata: {name: web, namespace: shop, cluster: c1}\nspec: {endpoints: []}\n";
        let commands = vec![
            // Needs the cluster, which comes later: refused alone.
            put(endpoints, None),
            put(cluster, None),
            // "Must not exist yet", but the command before made it.
            put(cluster, Some(0)),
            // Sees the cluster written earlier in the entry.
            put(endpoints, None),
        ];
        let applied = machine.apply([entry(7, commands)]).await.expect("apply");
        let outcomes: Vec<_> = applied[0].0.iter().map(|o| o.0.clone()).collect();
        assert!(outcomes[0].is_err(), "{outcomes:?}");
        assert_eq!(outcomes[1], Ok(vec![7]));
        assert!(outcomes[2].is_err(), "{outcomes:?}");
        assert_eq!(outcomes[3], Ok(vec![7]));
        let view = machine.view();
        let web = ResourceKey::new(Kind::Endpoints, Some("shop"), "web", Some("c1")).expect("key");
        assert_eq!(
            view.get(&web).map(|r| r.revision()),
            Some(7),
            "written, at the entry's index"
        );
    }

    #[tokio::test]
    async fn an_entry_is_applied_only_once_this_leaders_own_copy_is_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::store::open(dir.path()).expect("rocksdb");
        let durability = Arc::new(Durability::default());
        let mut machine = StateMachine::new(db, durability.clone()).expect("state machine");
        // Entry 3 appended by this leader, reported at once, not yet synced:
        // committed by a follower and this leader's count of itself.
        let seq = durability.ledger().written(Some(3));
        let blank = openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Blank,
        };
        let applying = tokio::spawn({
            let mut machine = machine.clone();
            async move { machine.apply([blank]).await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !applying.is_finished(),
            "applied before it was on disk here"
        );
        assert_eq!(machine.applied_state().await.expect("read").0, None);
        durability.synced(Ok(seq));
        let applied = tokio::time::timeout(std::time::Duration::from_secs(10), applying)
            .await
            .expect("applied once synced");
        applied.expect("task").expect("apply");
        let index = machine
            .applied_state()
            .await
            .expect("read")
            .0
            .map(|l| l.index);
        assert_eq!(index, Some(3));
    }
}
