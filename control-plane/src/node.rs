//! One control-plane node: its Raft handle and replica, and the rules for
//! writes (forwarded to the leader), linearizable reads (the leader's read
//! index) and membership changes.

use crate::metrics::pipeline::ProposalMetrics;
use crate::{
    forward::{self, Leader, LeaderReply},
    raft::{
        proposer::{NotWritten, Proposer},
        read_index::{NotConfirmed, ReadIndex},
        state_machine::StateMachine,
        ApplyOutcome, NodeId, Raft,
    },
};
use meridian_model::{plan, Command, CommandId, Rejection};
use meridian_telemetry::{self as telemetry, KeyValue, SpanKind, TraceContextExt};
use openraft::{
    error::{ClientWriteError, RaftError},
    BasicNode, ChangeMembers, RaftMetrics,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::Instant;

/// How long a write or a linearizable read may wait for a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InvalidMembership(String),
}

/// A membership change, carried out by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    AddLearner { node_id: NodeId, addr: String },
    Promote { node_id: NodeId },
    Remove { node_id: NodeId },
}

/// Where a read is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    committed: Arc<AtomicU64>,
    proposals: ProposalMetrics,
    proposer: Proposer,
    read_index: ReadIndex,
}

/// What one attempt at the leader's work returned.
pub enum Attempt<T> {
    Done(T),
    /// Not the leader; the hint names who is, if known.
    NotLeader(Option<Leader>),
}

impl Node {
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateMachine,
        committed: Arc<AtomicU64>,
        proposals: ProposalMetrics,
    ) -> Self {
        Node {
            id,
            proposer: Proposer::start(raft.clone()),
            read_index: ReadIndex::start(raft.clone(), LEADER_WAIT),
            raft,
            state,
            committed,
            proposals,
        }
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn applied_index(&self) -> u64 {
        self.metrics().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Validates `command` against this replica, then proposes it. The
    /// pre-check fails fast without a Raft round trip, but this replica may
    /// not have applied writes already acknowledged (a follower whose
    /// leader's messages arrive late): a refusal is final only once it has
    /// caught up to the leader's read index. The apply on every replica
    /// checks again against the state the entry actually meets.
    pub async fn submit(&self, command: Command) -> Result<(u64, Vec<u64>), NodeError> {
        if plan(&self.state.view(), &command, 0).is_err() {
            self.read_barrier(Consistency::Linearizable).await?;
            plan(&self.state.view(), &command, 0)?;
        }
        self.write(command).await
    }

    /// Proposes `command`, here if this node leads, else through the leader.
    /// Returns the entry's index and the per-write revisions.
    pub async fn write(&self, mut command: Command) -> Result<(u64, Vec<u64>), NodeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let hint = match self.propose_local(command.clone()).await? {
                Attempt::Done((index, outcome)) => return finish(index, outcome),
                Attempt::NotLeader(hint) => hint,
            };
            if let Some(leader) = hint {
                // A leader that stops answering (paused, partitioned) would
                // hold the write for the whole forwarding timeout although
                // a new leader is elected in a second or two: the write goes
                // to the new one as soon as this replica learns of it. The
                // first copy may be committed all the same; the id makes
                // every replica apply only one (`raft::applied_once`).
                if command.id.is_none() {
                    command.id = Some(new_command_id()?);
                }
                let forwarded = tokio::select! {
                    reply = forward::propose(&leader, &command) => Some(reply),
                    () = self.leader_replaced(leader.id) => None,
                };
                match forwarded {
                    Some(Ok(LeaderReply::Done((index, outcome)))) => return finish(index, outcome),
                    Some(Ok(LeaderReply::NotLeader)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(leader = %leader.addr, error = %e, "forwarding a write failed; retrying")
                    }
                    None => {
                        tracing::info!(leader = %leader.addr, "the leader changed while a write was forwarded to it; sending it to the new one")
                    }
                }
            }
            wait_or_give_up(deadline, "no leader accepted the write").await?;
        }
    }

    /// Resolves once this replica knows a leader other than `old`.
    async fn leader_replaced(&self, old: NodeId) {
        let mut metrics = self.raft.metrics();
        let replaced = metrics
            .wait_for(|m| m.current_leader.is_some_and(|l| l != old))
            .await
            .is_ok();
        if !replaced {
            // Raft is shutting down: nothing will change any more.
            std::future::pending::<()>().await;
        }
    }

    /// The leader's half of a write; also serves writes forwarded by followers.
    ///
    /// A traced command is proposed in a `raft.propose` span (a child of
    /// its trace), and the entry carries that span's context so that every
    /// replica's apply is its child.
    pub async fn propose_local(
        &self,
        mut command: Command,
    ) -> Result<Attempt<(u64, ApplyOutcome)>, NodeError> {
        let cx = command.trace.as_deref().map(|trace| {
            telemetry::start(
                "raft.propose",
                SpanKind::Internal,
                &telemetry::propagation::from_string(trace),
                vec![KeyValue::new("meridian.node", self.id as i64)],
            )
        });
        if let Some(cx) = &cx {
            command.trace = telemetry::propagation::to_string(cx).or(command.trace.take());
        }
        let started = Instant::now();
        let attempt = match self.proposer.propose(command).await {
            Ok(done) => Ok(Attempt::Done(done)),
            Err(NotWritten::NotLeader { id, node }) => {
                Ok(Attempt::NotLeader(Leader::from_hint(id, node)))
            }
            Err(NotWritten::Failed(e)) => Err(NodeError::Unavailable(e)),
        };
        self.proposals.observe(
            match &attempt {
                Ok(Attempt::Done(_)) => "committed",
                Ok(Attempt::NotLeader(_)) => "not_leader",
                Err(_) => "error",
            },
            started.elapsed(),
        );
        if let Some(cx) = &cx {
            match &attempt {
                Ok(Attempt::Done((index, _))) => cx
                    .span()
                    .set_attribute(KeyValue::new("meridian.raft.index", *index as i64)),
                Ok(Attempt::NotLeader(_)) => telemetry::fail(cx, "not the leader"),
                Err(e) => telemetry::fail(cx, e.to_string()),
            }
        }
        attempt
    }

    /// Waits until this replica may serve a read at `consistency`; returns the applied index.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<u64, NodeError> {
        if consistency == Consistency::Stale {
            return Ok(self.applied_index());
        }
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let hint = match self.read_index_local().await? {
                Attempt::Done(_) => return Ok(self.applied_index()),
                Attempt::NotLeader(hint) => hint,
            };
            if let Some(leader) = hint {
                match forward::read_index(&leader).await {
                    Ok(LeaderReply::Done(index)) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.raft
                            .wait(Some(remaining))
                            .applied_index_at_least(Some(index), "linearizable read")
                            .await
                            .map_err(|e| {
                                NodeError::Unavailable(format!(
                                    "catching up to the leader's read index {index}: {e}"
                                ))
                            })?;
                        return Ok(self.applied_index());
                    }
                    Ok(LeaderReply::NotLeader) => {}
                    Err(e) => {
                        tracing::debug!(leader = %leader.addr, error = %e, "asking the leader for a read index failed")
                    }
                }
            }
            wait_or_give_up(deadline, "no leader confirmed a read index").await?;
        }
    }

    /// The leader's half of a read: confirm leadership with a quorum and
    /// return the index a linearizable read must see applied.
    pub async fn read_index_local(&self) -> Result<Attempt<u64>, NodeError> {
        let leader = self.metrics().current_leader;
        if leader != Some(self.id) {
            return Ok(Attempt::NotLeader(self.leader()));
        }
        match self.read_index.confirm().await {
            Ok(index) => Ok(Attempt::Done(index)),
            Err(NotConfirmed::NotLeader(e)) => {
                tracing::debug!(error = %e, "leadership not confirmed for a read");
                Ok(Attempt::NotLeader(None))
            }
            Err(NotConfirmed::Failed(e)) => Err(NodeError::Unavailable(e)),
        }
    }

    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), NodeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let hint = match self.change_membership_local(change.clone()).await? {
                Attempt::Done(()) => return Ok(()),
                Attempt::NotLeader(hint) => hint,
            };
            if let Some(leader) = hint {
                match forward::change_membership(&leader, &change).await {
                    Ok(LeaderReply::Done(Ok(()))) => return Ok(()),
                    Ok(LeaderReply::Done(Err(message))) => {
                        return Err(NodeError::InvalidMembership(message))
                    }
                    Ok(LeaderReply::NotLeader) => {}
                    Err(e) => {
                        tracing::debug!(leader = %leader.addr, error = %e, "forwarding a membership change failed")
                    }
                }
            }
            wait_or_give_up(deadline, "no leader accepted the membership change").await?;
        }
    }

    pub async fn change_membership_local(
        &self,
        change: MembershipChange,
    ) -> Result<Attempt<()>, NodeError> {
        let metrics = self.metrics();
        // Only the leader's membership is current: a follower's copy may lag
        // behind a change just made through another node, and judging the
        // request against it refused valid changes ("not a member" right
        // after an add). A follower judges nothing and forwards.
        if metrics.current_leader != Some(self.id) {
            return Ok(Attempt::NotLeader(self.leader()));
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_member = |id: NodeId| membership.nodes().any(|(n, _)| *n == id);
        let result = match change {
            MembershipChange::AddLearner { node_id, addr } => {
                if voters.contains(&node_id) {
                    return Err(NodeError::InvalidMembership(format!(
                        "node {node_id} is already a voter"
                    )));
                }
                self.raft
                    .add_learner(node_id, BasicNode::new(addr), true)
                    .await
            }
            MembershipChange::Promote { node_id } => {
                if !is_member(node_id) {
                    return Err(NodeError::InvalidMembership(format!(
                        "node {node_id} is not a member; add it as a learner first"
                    )));
                }
                if voters.contains(&node_id) {
                    return Ok(Attempt::Done(()));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
                    .await
            }
            MembershipChange::Remove { node_id } => {
                if !is_member(node_id) {
                    return Err(NodeError::InvalidMembership(format!(
                        "node {node_id} is not a member"
                    )));
                }
                if voters.contains(&node_id) {
                    if voters.len() == 1 {
                        return Err(NodeError::InvalidMembership(format!(
                            "node {node_id} is the only voter; a cluster cannot remove its last voter"
                        )));
                    }
                    self.raft
                        .change_membership(
                            ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                            false,
                        )
                        .await
                } else {
                    self.raft
                        .change_membership(
                            ChangeMembers::RemoveNodes(BTreeSet::from([node_id])),
                            false,
                        )
                        .await
                }
            }
        };
        match result {
            Ok(_) => Ok(Attempt::Done(())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Ok(
                Attempt::NotLeader(Leader::from_hint(f.leader_id, f.leader_node)),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(NodeError::InvalidMembership(e.to_string()))
            }
            Err(e) => Err(NodeError::Unavailable(format!("raft: {e}"))),
        }
    }

    /// The current leader and its address, if known.
    pub fn leader(&self) -> Option<Leader> {
        let metrics = self.metrics();
        let id = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned();
        Leader::from_hint(Some(id), node)
    }
}

fn finish(index: u64, outcome: ApplyOutcome) -> Result<(u64, Vec<u64>), NodeError> {
    outcome
        .0
        .map(|revisions| (index, revisions))
        .map_err(NodeError::Rejected)
}

async fn wait_or_give_up(deadline: Instant, what: &str) -> Result<(), NodeError> {
    if Instant::now() + RETRY_PAUSE > deadline {
        return Err(NodeError::Unavailable(format!(
            "{what} within {}s; is a quorum of the cluster up?",
            LEADER_WAIT.as_secs()
        )));
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

/// A random id for a command that may be sent more than once.
fn new_command_id() -> Result<CommandId, NodeError> {
    let random = ring::rand::generate::<[u8; 16]>(&ring::rand::SystemRandom::new())
        .map_err(|_| NodeError::Unavailable("no randomness for a command id".into()))?;
    Ok(CommandId(u128::from_be_bytes(random.expose())))
}
