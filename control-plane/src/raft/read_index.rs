//! Confirming leadership for linearizable reads, one round for many: every
//! read waiting when a round of heartbeats to a quorum starts is served by
//! that round's read index. A read that arrives while a round is on its
//! way waits for the next one, since only a confirmation that began after
//! the read arrived proves no newer leader had taken writes before it.

use super::Raft;
use openraft::error::RaftError;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Reads waiting for a round, at most; more wait to queue.
const QUEUE: usize = 4096;

/// The index a linearizable read must see applied, or why there is none.
pub type Confirmed = Result<u64, NotConfirmed>;

#[derive(Debug, Clone)]
pub enum NotConfirmed {
    /// This node is not the leader (or stopped being it during the round).
    NotLeader(String),
    /// Raft failed, or no quorum answered within the wait.
    Failed(String),
}

/// The handle of a node's read-index task.
pub struct ReadIndex {
    queue: mpsc::Sender<oneshot::Sender<Confirmed>>,
}

impl ReadIndex {
    /// Starts the task that confirms leadership with `raft`, each round
    /// given `wait` at most; it ends when this is dropped.
    pub fn start(raft: Raft, wait: Duration) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, wait, waiting));
        ReadIndex { queue }
    }

    /// Waits for the next round that starts after this call, and its read
    /// index (applied on this node by the time it is returned).
    pub async fn confirm(&self) -> Confirmed {
        let stopped = || NotConfirmed::Failed("the read-index task has stopped".into());
        let (reply, confirmed) = oneshot::channel();
        self.queue.send(reply).await.map_err(|_| stopped())?;
        confirmed.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, wait: Duration, mut queue: mpsc::Receiver<oneshot::Sender<Confirmed>>) {
    while let Some(first) = queue.recv().await {
        // Everything queued now arrived before this round starts.
        let mut waiting = vec![first];
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        let confirmed = match tokio::time::timeout(wait, raft.ensure_linearizable()).await {
            Ok(Ok(read_log_id)) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(e))) => Err(NotConfirmed::NotLeader(e.to_string())),
            Ok(Err(e)) => Err(NotConfirmed::Failed(format!("raft: {e}"))),
            Err(_) => Err(NotConfirmed::Failed(
                "a quorum did not confirm leadership in time".into(),
            )),
        };
        for reply in waiting {
            let _ = reply.send(confirmed.clone());
        }
    }
}
