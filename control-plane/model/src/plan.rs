//! Planning a replicated command: given the state a replica has applied, decide
//! deterministically what a batch of writes changes, or why it changes nothing.

use crate::{
    agent,
    nesting::check_split_nesting,
    references::{check_delete, check_references},
    CommandId, Kind, Rejection, RejectionCode, Resource, ResourceKey, Status,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Read access to applied state, as the planner needs it.
pub trait StateView {
    fn get(&self, key: &ResourceKey) -> Option<Resource>;
    fn list(&self, kind: Kind) -> Vec<Resource>;
}

/// A state held in memory, by key: what tests and offline tools plan against.
impl StateView for BTreeMap<ResourceKey, Resource> {
    fn get(&self, key: &ResourceKey) -> Option<Resource> {
        BTreeMap::get(self, key).cloned()
    }

    fn list(&self, kind: Kind) -> Vec<Resource> {
        self.values()
            .filter(|r| r.kind() == kind)
            .cloned()
            .collect()
    }
}

/// One write in a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace. `expected_revision`: `Some(0)` means "must not exist yet".
    Put {
        resource: Box<Resource>,
        expected_revision: Option<u64>,
    },
    Delete {
        key: ResourceKey,
        expected_revision: Option<u64>,
        /// Deleting what does not exist is a no-op rather than NOT_FOUND
        /// (agents resynchronising after a reconnect).
        #[serde(default)]
        ignore_missing: bool,
    },
    /// Replaces a cluster's observed status; nothing else about it changes,
    /// nor do the agent session and batch the status records.
    SetStatus { cluster: String, status: Status },
    /// An agent's stream starts: the cluster's status names the agent and a
    /// new session, numbered by this entry's index.
    StartAgentSession { cluster: String, agent: String },
    /// Fences the rest of the command: refused unless `session` is the
    /// cluster's current agent session and `seq` (a batch's number, if
    /// given) follows the last batch applied from it.
    AgentFence {
        cluster: String,
        session: u64,
        seq: Option<u64>,
    },
    /// A full snapshot: every `Endpoints` of `cluster` not in `keep` is
    /// deleted, decided against the state this entry meets.
    PruneEndpoints {
        cluster: String,
        keep: Vec<ResourceKey>,
    },
    /// Node `node` holds this cluster's data: it has been a member with a
    /// log and a vote it must not forget. Each node records itself once;
    /// the record is never removed, so a node that comes back with an empty
    /// data dir under the same id can be told from a founding member that
    /// has not started yet.
    RecordBootstrapped { node: u64 },
}

/// One change to the replicated state: writes applied all or nothing (a log
/// entry holds one or more).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub ops: Vec<Op>,
    /// The W3C trace context of the change (`traceparent[;tracestate]`), so
    /// that every replica's apply joins the trace of the request that made
    /// it. Carried, never interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Set on a command that may reach the log more than once (a follower
    /// sends a forwarded write again when the leader changes): every
    /// replica applies a command with a given id once, and answers a later
    /// copy with the first one's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
}

impl Command {
    pub fn new(ops: Vec<Op>) -> Command {
        Command {
            ops,
            trace: None,
            id: None,
        }
    }

    /// The objects this command puts or deletes, when that is all it does:
    /// such commands may share a log entry (and so a revision) with others
    /// that write none of the same objects. `None` for a command that does
    /// anything else (agent sessions and fences, status, pruning, records),
    /// which goes in an entry of its own.
    pub fn written_keys(&self) -> Option<BTreeSet<ResourceKey>> {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { resource, .. } => Some(resource.key()),
                Op::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }
}

/// What applying a command writes to storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `created`: the object did not exist before this command.
    Put {
        resource: Box<Resource>,
        created: bool,
    },
    Delete(ResourceKey),
    /// Adds `node` to the nodes recorded as holding the cluster's data
    /// (a set: recording a node again changes nothing).
    Bootstrapped(u64),
}

/// Plans `command` at log index `index`. Each op sees the effect of the ops
/// before it; if any op is refused, the whole command changes nothing.
/// Returns the writes and, per op, the revision of the object afterwards.
pub fn plan(
    view: &dyn StateView,
    command: &Command,
    index: u64,
) -> Result<(Vec<Write>, Vec<u64>), Rejection> {
    let mut overlay = Overlay {
        base: view,
        changes: BTreeMap::new(),
        created: BTreeSet::new(),
        bootstrapped: BTreeSet::new(),
    };
    let mut revisions = Vec::with_capacity(command.ops.len());
    for (i, op) in command.ops.iter().enumerate() {
        let revision = plan_op(&mut overlay, op, index).map_err(|mut e| {
            if command.ops.len() > 1 {
                e.message = format!("write {} of {}: {}", i + 1, command.ops.len(), e.message);
            }
            e
        })?;
        revisions.push(revision);
    }
    let mut writes: Vec<Write> = overlay
        .changes
        .into_iter()
        .map(|(key, change)| match change {
            Some(resource) => Write::Put {
                created: overlay.created.contains(&key),
                resource: Box::new(resource),
            },
            None => Write::Delete(key),
        })
        .collect();
    writes.extend(overlay.bootstrapped.into_iter().map(Write::Bootstrapped));
    Ok((writes, revisions))
}

/// Plans the commands of one log entry at `index`, in order, each all or
/// nothing and each seeing what the earlier ones that were not refused
/// write. Returns, per command, what `plan` returns for it.
pub fn plan_each(view: &dyn StateView, commands: &[Command], index: u64) -> Vec<Planned> {
    let mut earlier: BTreeMap<ResourceKey, Option<Resource>> = BTreeMap::new();
    let mut planned = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        let this = plan(&Layered::over(view, &earlier), command, index);
        match &this {
            // Kept for the commands after it; the last one's need not be.
            Ok((writes, _)) if i + 1 < commands.len() => {
                for write in writes {
                    match write {
                        Write::Put { resource, .. } => {
                            earlier.insert(resource.key(), Some(Resource::clone(resource)));
                        }
                        Write::Delete(key) => {
                            earlier.insert(key.clone(), None);
                        }
                        Write::Bootstrapped(_) => {}
                    }
                }
            }
            _ => {}
        }
        planned.push(this);
    }
    planned
}

/// What planning one command gives: its writes and, per op, the object's
/// revision afterwards; or why it changes nothing.
pub type Planned = Result<(Vec<Write>, Vec<u64>), Rejection>;

fn plan_op(overlay: &mut Overlay<'_>, op: &Op, index: u64) -> Result<u64, Rejection> {
    match op {
        Op::Put {
            resource,
            expected_revision,
        } => {
            let key = resource.key();
            let current = overlay.get(&key);
            check_expected(&key, current.as_ref(), *expected_revision)?;
            check_references(overlay, resource)?;
            check_split_nesting(overlay, resource)?;
            if let Some(current) = current.as_ref().filter(|c| c.same_content(resource)) {
                return Ok(current.revision());
            }
            let mut stored = Resource::clone(resource);
            // Status is the control plane's to write: a put keeps what is there.
            let is_new = current.is_none();
            stored.status = current.and_then(|c| c.status);
            stored.metadata.revision = Some(index);
            // Absent here and not deleted earlier in this batch: absent from the base too.
            if is_new && !overlay.changes.contains_key(&key) {
                overlay.created.insert(key.clone());
            }
            overlay.changes.insert(key, Some(stored));
            Ok(index)
        }
        Op::Delete {
            key,
            expected_revision,
            ignore_missing,
        } => {
            let current = overlay.get(key);
            if current.is_none() {
                if *ignore_missing {
                    return Ok(0);
                }
                return Err(Rejection::new(
                    RejectionCode::NotFound,
                    format!("{key} not found"),
                ));
            }
            check_expected(key, current.as_ref(), *expected_revision)?;
            check_delete(overlay, key)?;
            overlay.changes.insert(key.clone(), None);
            Ok(index)
        }
        Op::SetStatus { cluster, status } => {
            let (key, mut stored) = agent::cluster(overlay, cluster)?;
            let current = stored.status.clone().unwrap_or_default();
            let status = Status {
                session: current.session,
                seq: current.seq,
                ..status.clone()
            };
            if stored.status.as_ref() == Some(&status) {
                return Ok(stored.revision());
            }
            stored.status = Some(status);
            stored.metadata.revision = Some(index);
            overlay.changes.insert(key, Some(stored));
            Ok(index)
        }
        Op::StartAgentSession { cluster, agent } => {
            let (key, stored) = agent::start_session(overlay, cluster, agent, index)?;
            overlay.changes.insert(key, Some(stored));
            Ok(index)
        }
        Op::AgentFence {
            cluster,
            session,
            seq,
        } => {
            if let Some((key, stored)) = agent::fence(overlay, cluster, *session, *seq, index)? {
                overlay.changes.insert(key, Some(stored));
            }
            Ok(index)
        }
        Op::PruneEndpoints { cluster, keep } => {
            for key in agent::pruned(overlay, cluster, keep) {
                overlay.changes.insert(key, None);
            }
            Ok(index)
        }
        Op::RecordBootstrapped { node: 0 } => Err(Rejection::new(
            RejectionCode::InvalidArgument,
            "node ids are positive; node 0 cannot be recorded",
        )),
        Op::RecordBootstrapped { node } => {
            overlay.bootstrapped.insert(*node);
            Ok(index)
        }
    }
}

fn check_expected(
    key: &ResourceKey,
    current: Option<&Resource>,
    expected: Option<u64>,
) -> Result<(), Rejection> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = current.map(Resource::revision).unwrap_or(0);
    if actual == expected {
        return Ok(());
    }
    let message = match (expected, current) {
        (0, Some(_)) => format!("{key} already exists (revision {actual})"),
        (_, None) => format!("{key} does not exist, expected revision {expected}"),
        _ => format!("{key} is at revision {actual}, expected {expected}"),
    };
    Err(Rejection::new(RejectionCode::Aborted, message))
}

/// The base state with a batch's earlier writes laid over it.
struct Overlay<'a> {
    base: &'a dyn StateView,
    changes: BTreeMap<ResourceKey, Option<Resource>>,
    /// Keys this batch creates (absent from the base).
    created: BTreeSet<ResourceKey>,
    /// Nodes this batch records as holding the cluster's data.
    bootstrapped: BTreeSet<u64>,
}

impl StateView for Overlay<'_> {
    fn get(&self, key: &ResourceKey) -> Option<Resource> {
        Layered::over(self.base, &self.changes).get(key)
    }

    fn list(&self, kind: Kind) -> Vec<Resource> {
        Layered::over(self.base, &self.changes).list(kind)
    }
}

/// A state with changes laid over it: a command's own writes, or an
/// entry's earlier commands'.
struct Layered<'a> {
    base: &'a dyn StateView,
    changes: &'a BTreeMap<ResourceKey, Option<Resource>>,
}

impl<'a> Layered<'a> {
    fn over(base: &'a dyn StateView, changes: &'a BTreeMap<ResourceKey, Option<Resource>>) -> Self {
        Layered { base, changes }
    }
}

impl StateView for Layered<'_> {
    fn get(&self, key: &ResourceKey) -> Option<Resource> {
        match self.changes.get(key) {
            Some(change) => change.clone(),
            None => self.base.get(key),
        }
    }

    fn list(&self, kind: Kind) -> Vec<Resource> {
        let mut merged: BTreeMap<ResourceKey, Resource> = self
            .base
            .list(kind)
            .into_iter()
            .map(|r| (r.key(), r))
            .collect();
        for (key, change) in self.changes.range(..).filter(|(k, _)| k.kind == kind) {
            match change {
                Some(resource) => merged.insert(key.clone(), resource.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_values().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parse_manifests;

    /// A state held in memory, for tests.
    #[derive(Default)]
    pub(crate) struct MemState(pub(crate) BTreeMap<ResourceKey, Resource>);

    impl StateView for MemState {
        fn get(&self, key: &ResourceKey) -> Option<Resource> {
            StateView::get(&self.0, key)
        }
        fn list(&self, kind: Kind) -> Vec<Resource> {
            self.0.list(kind)
        }
    }

    impl MemState {
        fn apply(&mut self, command: &Command, index: u64) -> Result<Vec<u64>, Rejection> {
            let (writes, revisions) = plan(self, command, index)?;
            for write in writes {
                match write {
                    Write::Put { resource, .. } => self.0.insert(resource.key(), *resource),
                    Write::Delete(k) => self.0.remove(&k),
                    Write::Bootstrapped(_) => None,
                };
            }
            Ok(revisions)
        }
    }

    fn puts(text: &str) -> Command {
        Command::new(
            parse_manifests(text)
                .expect("valid manifests")
                .into_iter()
                .map(|resource| Op::Put {
                    resource: Box::new(resource),
                    expected_revision: None,
                })
                .collect(),
        )
    }

    const SERVICES: &str = "kind: Service\nmetadata: {name: checkout, namespace: shop}\nspec: {protocol: http, port: 80}\n---\nkind: Service\nmetadata: {name: v1, namespace: shop}\nspec: {protocol: http, port: 80}\n";
    const SPLIT: &str = "kind: TrafficSplit\nmetadata: {name: checkout, namespace: shop}\nspec: {service: checkout, backends: [{service: v1, weight: 1}]}\n";

    #[test]
    fn a_batch_sees_its_own_earlier_writes() {
        let mut state = MemState::default();
        let revisions = state
            .apply(&puts(&format!("{SERVICES}---\n{SPLIT}")), 7)
            .expect("applies");
        assert_eq!(revisions, vec![7, 7, 7]);
        assert_eq!(state.0.len(), 3);
    }

    #[test]
    fn commands_of_one_entry_each_see_the_earlier_ones_and_fail_alone() {
        let state = MemState::default();
        let split = puts(SPLIT);
        let services = puts(SERVICES);
        let mut conflicting = puts(SERVICES);
        if let Op::Put {
            expected_revision, ..
        } = &mut conflicting.ops[0]
        {
            // "Must not exist yet": the services command before it made it.
            *expected_revision = Some(0);
        }
        let planned = plan_each(&state, &[split, services, conflicting, puts(SPLIT)], 9);
        // The split comes before its services: refused, alone.
        let refused = planned[0].as_ref().expect_err("no services yet");
        assert_eq!(refused.code, RejectionCode::FailedPrecondition);
        let (writes, revisions) = planned[1].as_ref().expect("services");
        assert_eq!((writes.len(), revisions.clone()), (2, vec![9, 9]));
        assert!(writes
            .iter()
            .all(|w| matches!(w, Write::Put { created: true, .. })));
        let conflict = planned[2].as_ref().expect_err("exists by now");
        assert_eq!(conflict.code, RejectionCode::Aborted);
        // The split, after them, sees the services written earlier in the entry.
        let (writes, _) = planned[3].as_ref().expect("the split");
        assert_eq!(writes.len(), 1);
        assert!(matches!(&writes[0], Write::Put { created: true, .. }));
    }

    #[test]
    fn only_plain_puts_and_deletes_name_the_objects_they_write() {
        let services = puts(SERVICES);
        let keys = services.written_keys().expect("puts only");
        assert_eq!(keys.len(), 2);
        let mut mixed = puts(SERVICES);
        mixed.ops.push(Op::RecordBootstrapped { node: 1 });
        assert_eq!(mixed.written_keys(), None);
        let delete = Command::new(vec![Op::Delete {
            key: keys.iter().next().expect("a key").clone(),
            expected_revision: None,
            ignore_missing: false,
        }]);
        assert_eq!(delete.written_keys().expect("a delete").len(), 1);
    }

    #[test]
    fn a_rejected_batch_changes_nothing() {
        let mut state = MemState::default();
        let err = state.apply(&puts(SPLIT), 3).expect_err("missing service");
        assert_eq!(err.code, RejectionCode::FailedPrecondition);
        assert!(err.message.contains("spec.service"), "{}", err.message);
        assert!(state.0.is_empty());

        let cmd = puts(&format!("{SERVICES}---\nkind: FailoverPolicy\nmetadata: {{name: checkout, namespace: shop}}\nspec: {{service: checkout, order: [nowhere]}}\n"));
        let err = state.apply(&cmd, 4).expect_err("unknown cluster");
        assert!(
            err.message
                .contains("spec.order[0]: unknown cluster 'nowhere'"),
            "{}",
            err.message
        );
        assert!(state.0.is_empty());
    }

    #[test]
    fn a_batch_that_makes_splits_loop_is_refused_whole() {
        let mut state = MemState::default();
        let back = "kind: TrafficSplit\nmetadata: {name: v1, namespace: shop}\nspec: {service: v1, backends: [{service: checkout, weight: 1}]}\n";
        let err = state
            .apply(&puts(&format!("{SERVICES}---\n{SPLIT}---\n{back}")), 5)
            .expect_err("a cycle");
        assert_eq!(err.code, RejectionCode::InvalidArgument);
        assert!(err.message.contains("cycle"), "{}", err.message);
        assert!(state.0.is_empty());
    }

    const C1: &str = "kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1}\n";

    fn endpoints_put(name: &str) -> Op {
        let text = format!("kind: Endpoints\nmetadata: {{name: {name}, namespace: shop, cluster: c1}}\nspec: {{endpoints: [{{address: 10.0.0.1, port: 80}}]}}\n");
        puts(&text).ops.remove(0)
    }

    fn endpoints_key(name: &str) -> ResourceKey {
        ResourceKey::new(Kind::Endpoints, Some("shop"), name, Some("c1")).expect("key")
    }

    #[test]
    fn a_full_snapshot_prunes_what_the_state_holds_when_it_is_applied() {
        let mut state = MemState::default();
        state.apply(&puts(C1), 1).expect("cluster");
        state
            .apply(&Command::new(vec![endpoints_put("x")]), 2)
            .expect("x");
        // The node that built the snapshot had not applied x yet: the entry removes it all the same.
        let snapshot = Command::new(vec![
            endpoints_put("y"),
            Op::PruneEndpoints {
                cluster: "c1".into(),
                keep: vec![endpoints_key("y")],
            },
        ]);
        state.apply(&snapshot, 3).expect("snapshot");
        assert!(state.get(&endpoints_key("x")).is_none());
        assert!(state.get(&endpoints_key("y")).is_some());
    }

    #[test]
    fn a_batch_of_a_replaced_session_or_out_of_order_changes_nothing() {
        let mut state = MemState::default();
        state.apply(&puts(C1), 1).expect("cluster");
        let start = Command::new(vec![Op::StartAgentSession {
            cluster: "c1".into(),
            agent: "agent-1".into(),
        }]);
        assert_eq!(state.apply(&start, 2).expect("session"), vec![2]);
        let batch = |session: u64, seq: u64, name: &str| {
            Command::new(vec![
                Op::AgentFence {
                    cluster: "c1".into(),
                    session,
                    seq: Some(seq),
                },
                endpoints_put(name),
            ])
        };
        state.apply(&batch(2, 1, "a"), 3).expect("first batch");
        // The agent reconnects to another node: a new session begins.
        state.apply(&start, 4).expect("second session");
        // A batch of the old session, retried during an election, lands late.
        let late = state.apply(&batch(2, 2, "late"), 5).expect_err("replaced");
        assert_eq!(late.code, RejectionCode::Aborted);
        assert!(state.get(&endpoints_key("late")).is_none());
        state.apply(&batch(4, 2, "b"), 6).expect("new session");
        let reordered = state.apply(&batch(4, 1, "c"), 7).expect_err("out of order");
        assert_eq!(reordered.code, RejectionCode::Aborted);
        assert!(state.get(&endpoints_key("c")).is_none());
        // A status write (liveness, say) keeps the session and its last batch.
        let stale = Command::new(vec![Op::SetStatus {
            cluster: "c1".into(),
            status: Status {
                stale: true,
                ..Status::default()
            },
        }]);
        state.apply(&stale, 8).expect("status");
        let key = ResourceKey::new(Kind::Cluster, None, "c1", None).expect("key");
        let status = state.get(&key).and_then(|c| c.status).expect("status");
        assert_eq!((status.session, status.seq, status.stale), (4, 2, true));
    }

    #[test]
    fn referenced_services_cannot_be_deleted() {
        let mut state = MemState::default();
        state
            .apply(&puts(&format!("{SERVICES}---\n{SPLIT}")), 1)
            .expect("applies");
        let key = ResourceKey::new(Kind::Service, Some("shop"), "v1", None).expect("key");
        let delete = Command::new(vec![Op::Delete {
            key: key.clone(),
            expected_revision: None,
            ignore_missing: false,
        }]);
        let err = state.apply(&delete, 2).expect_err("still referenced");
        assert_eq!(err.code, RejectionCode::FailedPrecondition);
        assert!(state.0.contains_key(&key));
    }

    #[test]
    fn optimistic_concurrency() {
        let mut state = MemState::default();
        state.apply(&puts(SERVICES), 5).expect("applies");
        let mut cmd = puts("kind: Service\nmetadata: {name: v1, namespace: shop}\nspec: {protocol: tcp, port: 81}\n");
        if let Op::Put {
            expected_revision, ..
        } = &mut cmd.ops[0]
        {
            *expected_revision = Some(4);
        }
        assert_eq!(
            state.apply(&cmd, 6).expect_err("stale").code,
            RejectionCode::Aborted
        );
        if let Op::Put {
            expected_revision, ..
        } = &mut cmd.ops[0]
        {
            *expected_revision = Some(5);
        }
        assert_eq!(state.apply(&cmd, 6).expect("current"), vec![6]);
    }

    #[test]
    fn writes_say_whether_they_create() {
        let mut state = MemState::default();
        let (writes, _) = plan(&state, &puts(SERVICES), 1).expect("plans");
        assert!(writes
            .iter()
            .all(|w| matches!(w, Write::Put { created: true, .. })));
        state.apply(&puts(SERVICES), 1).expect("applies");
        let changed = puts("kind: Service\nmetadata: {name: v1, namespace: shop}\nspec: {protocol: tcp, port: 81}\n");
        let (writes, _) = plan(&state, &changed, 2).expect("plans");
        assert!(matches!(writes[..], [Write::Put { created: false, .. }]));
        // Deleted and written again in one batch: the object existed before, so not created.
        let key = ResourceKey::new(Kind::Service, Some("shop"), "v1", None).expect("key");
        let mut again = Command::new(vec![Op::Delete {
            key,
            expected_revision: None,
            ignore_missing: false,
        }]);
        again.ops.extend(changed.ops);
        let (writes, _) = plan(&state, &again, 3).expect("plans");
        assert!(matches!(writes[..], [Write::Put { created: false, .. }]));
    }

    #[test]
    fn an_unchanged_put_keeps_its_revision() {
        let mut state = MemState::default();
        state.apply(&puts(SERVICES), 5).expect("applies");
        assert_eq!(
            state.apply(&puts(SERVICES), 9).expect("applies"),
            vec![5, 5]
        );
    }

    #[test]
    fn status_is_kept_by_puts_and_set_by_set_status() {
        let mut state = MemState::default();
        let cluster = "kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1}\n";
        state.apply(&puts(cluster), 1).expect("applies");
        let stale = Status {
            stale: true,
            ..Status::default()
        };
        let set = Command::new(vec![Op::SetStatus {
            cluster: "c1".into(),
            status: stale.clone(),
        }]);
        assert_eq!(state.apply(&set, 2).expect("sets"), vec![2]);
        state
            .apply(
                &puts("kind: Cluster\nmetadata: {name: c1}\nspec: {region: r2}\n"),
                3,
            )
            .expect("applies");
        let key = ResourceKey::new(Kind::Cluster, None, "c1", None).expect("key");
        assert_eq!(state.0[&key].status, Some(stale));
        let missing = Command::new(vec![Op::SetStatus {
            cluster: "c9".into(),
            status: Status::default(),
        }]);
        assert_eq!(
            state.apply(&missing, 4).expect_err("missing").code,
            RejectionCode::NotFound
        );
    }

    #[test]
    fn recording_a_node_writes_it_beside_the_batch_or_nothing_if_refused() {
        let state = MemState::default();
        let record = |node| Op::RecordBootstrapped { node };
        let (writes, revisions) =
            plan(&state, &Command::new(vec![record(3), record(3)]), 9).expect("plans");
        assert_eq!(writes, vec![Write::Bootstrapped(3)]);
        assert_eq!(revisions, vec![9, 9]);
        let refused = plan(&state, &Command::new(vec![record(0)]), 10).expect_err("node 0");
        assert_eq!(refused.code, RejectionCode::InvalidArgument);
        // All or nothing, as for any batch.
        let mut mixed = puts(SPLIT);
        mixed.ops.insert(0, record(2));
        assert!(plan(&state, &mixed, 11).is_err());
    }

    #[test]
    fn deleting_the_missing_is_not_found() {
        let mut state = MemState::default();
        let key = ResourceKey::new(Kind::Cluster, None, "nowhere", None).expect("key");
        let cmd = Command::new(vec![Op::Delete {
            key: key.clone(),
            expected_revision: None,
            ignore_missing: false,
        }]);
        assert_eq!(
            state.apply(&cmd, 1).expect_err("missing").code,
            RejectionCode::NotFound
        );
        let tolerant = Command::new(vec![Op::Delete {
            key,
            expected_revision: None,
            ignore_missing: true,
        }]);
        assert!(
            state.apply(&tolerant, 2).is_ok(),
            "ignore_missing makes it a no-op"
        );
    }
}
