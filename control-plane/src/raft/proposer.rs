//! Proposing commands to Raft, one entry at a time: the commands that
//! arrive while an entry is on its way share the next one, as long as none
//! writes an object another does (each object's revision stays its own).
//! One entry means one append, one replication and one apply for all of
//! them: under many concurrent writers the leader's work per write falls
//! with the batch. A lone write goes at once, alone. (Two entries on their
//! way at a time were measured too: no faster with 64 writers, the batches
//! smaller; docs/benchmarks.md.)

use super::{ApplyOutcome, NodeId, Proposal, Raft};
use meridian_model::{Command, ResourceKey};
use openraft::{
    error::{ClientWriteError, RaftError},
    BasicNode,
};
use std::collections::BTreeSet;
use tokio::sync::{mpsc, oneshot};

/// The most commands in one entry.
const MAX_COMMANDS: usize = 256;
/// The most bytes (as stored) of the commands of an entry that holds more
/// than one: an entry travels whole in one `AppendEntries`, which must stay
/// under the Raft message limit with many entries in it. A command larger
/// than this still goes, alone.
const MAX_ENTRY_BYTES: usize = 512 * 1024;
/// Commands waiting for an entry, at most; a proposal beyond waits to queue.
const QUEUE: usize = 4096;

/// What proposing one command gives: the entry's index and the command's
/// outcome, or why it was not written.
pub type Proposed = Result<(u64, ApplyOutcome), NotWritten>;

#[derive(Debug, Clone)]
pub enum NotWritten {
    /// This node is not the leader; the one it knows of, if any.
    NotLeader {
        id: Option<NodeId>,
        node: Option<BasicNode>,
    },
    /// Raft failed or stopped.
    Failed(String),
}

struct Waiting {
    command: Command,
    reply: oneshot::Sender<Proposed>,
}

/// The handle of a node's proposing task.
pub struct Proposer {
    queue: mpsc::Sender<Waiting>,
}

impl Proposer {
    /// Starts the task that proposes to `raft`; it ends when this is dropped.
    pub fn start(raft: Raft) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, waiting));
        Proposer { queue }
    }

    /// Proposes `command` and waits until its entry is applied here.
    pub async fn propose(&self, command: Command) -> Proposed {
        let stopped = || NotWritten::Failed("the proposer has stopped".into());
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Waiting { command, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut queue: mpsc::Receiver<Waiting>) {
    // A command that did not fit the last entry: first in the next.
    let mut held: Option<Waiting> = None;
    loop {
        let first = match held.take() {
            Some(waiting) => waiting,
            None => match queue.recv().await {
                Some(waiting) => waiting,
                None => return,
            },
        };
        // Nobody waits for it any more (the caller, a follower forwarding
        // it, gave up): not proposed, so no copy of it turns up late.
        if first.reply.is_closed() {
            continue;
        }
        let mut entry = vec![first];
        // Measured only once a second command waits: a lone write goes as it is.
        let mut room: Option<EntryRoom> = None;
        while entry.len() < MAX_COMMANDS {
            let Ok(next) = queue.try_recv() else { break };
            if next.reply.is_closed() {
                continue;
            }
            let room = room.get_or_insert_with(|| EntryRoom::of(&entry[0].command));
            if !room.admit(&next.command) {
                held = Some(next);
                break;
            }
            entry.push(next);
        }
        // Meanwhile the next entry's commands queue up.
        propose(&raft, entry).await;
    }
}

/// Proposes `entry`'s commands as one entry and answers each.
async fn propose(raft: &Raft, entry: Vec<Waiting>) {
    let (commands, replies): (Vec<Command>, Vec<_>) =
        entry.into_iter().map(|w| (w.command, w.reply)).unzip();
    let written = raft
        .client_write(Proposal { commands })
        .await
        .map_err(not_written);
    for (i, reply) in replies.into_iter().enumerate() {
        let proposed = match &written {
            Ok(response) => match response.data.0.get(i) {
                Some(outcome) => Ok((response.log_id.index, outcome.clone())),
                None => Err(NotWritten::Failed(format!(
                    "entry {} was applied without an outcome for its command {i}",
                    response.log_id.index
                ))),
            },
            Err(e) => Err(e.clone()),
        };
        let _ = reply.send(proposed);
    }
}

fn not_written(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> NotWritten {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NotWritten::NotLeader {
            id: f.leader_id,
            node: f.leader_node,
        },
        e => NotWritten::Failed(format!("raft: {e}")),
    }
}

/// What an entry's commands write and their size, to tell whether one
/// more may join.
#[derive(Debug)]
struct EntryRoom {
    /// None: the entry is closed to others.
    keys: Option<BTreeSet<ResourceKey>>,
    bytes: usize,
}

impl EntryRoom {
    /// The entry that `first` starts; closed to others unless `first` only
    /// puts and deletes objects and leaves room.
    fn of(first: &Command) -> Self {
        let bytes = stored_size(first);
        EntryRoom {
            keys: first.written_keys().filter(|_| bytes < MAX_ENTRY_BYTES),
            bytes,
        }
    }

    /// Adds `command` if it may share the entry: it only puts and deletes,
    /// none of what it writes is written by a command already in it, and
    /// the entry stays within its bytes.
    fn admit(&mut self, command: &Command) -> bool {
        let (Some(keys), Some(more)) = (&mut self.keys, command.written_keys()) else {
            return false;
        };
        if !keys.is_disjoint(&more) {
            return false;
        }
        let bytes = self.bytes + stored_size(command);
        if bytes > MAX_ENTRY_BYTES {
            return false;
        }
        keys.extend(more);
        self.bytes = bytes;
        true
    }
}

/// The bytes of `command` as an entry stores it (JSON), counted without
/// keeping them.
fn stored_size(command: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, command) {
        Ok(()) => count.0,
        // Not storable: let it go alone, where the error shows.
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::{parse_manifests, Op};

    fn put(name: &str) -> Command {
        let text = format!("kind: Cluster\nmetadata: {{name: {name}}}\nspec: {{region: r1}}\n");
        Command::new(
            parse_manifests(&text)
                .expect("valid")
                .into_iter()
                .map(|resource| Op::Put {
                    resource: Box::new(resource),
                    expected_revision: None,
                })
                .collect(),
        )
    }

    #[test]
    fn commands_share_an_entry_only_when_they_write_different_objects() {
        let mut keys = EntryRoom::of(&put("a"));
        assert!(keys.admit(&put("b")));
        assert!(!keys.admit(&put("a")), "a is written already");
        assert!(!keys.admit(&put("b")), "so is b");
        assert!(keys.admit(&put("c")));
        let record = Command::new(vec![Op::RecordBootstrapped { node: 2 }]);
        assert!(
            !keys.admit(&record),
            "anything but puts and deletes goes alone"
        );
        let mut alone = EntryRoom::of(&record);
        assert!(!alone.admit(&put("d")), "and nothing joins it");
    }

    #[test]
    fn an_entry_of_several_commands_stays_within_its_bytes() {
        let large = |name: &str| {
            let mut command = put(name);
            command.trace = Some("x".repeat(MAX_ENTRY_BYTES / 3));
            command
        };
        assert!(stored_size(&large("a")) > MAX_ENTRY_BYTES / 3);
        let mut room = EntryRoom::of(&large("a"));
        assert!(room.admit(&large("b")));
        assert!(!room.admit(&large("c")), "a third would pass the limit");
        assert!(room.admit(&put("d")), "a small one still fits");
        // One larger than the limit goes, alone.
        let mut huge = put("e");
        huge.trace = Some("x".repeat(MAX_ENTRY_BYTES));
        let mut alone = EntryRoom::of(&huge);
        assert!(!alone.admit(&put("f")));
    }
}
