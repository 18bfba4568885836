//! The mesh as the xDS server sees it: the replica's resources, kept current
//! from the state machine's change events and published as immutable
//! snapshots that every stream can compile from.

use super::distribution::Distribution;
use crate::{
    events::{Event, EventHub},
    raft::view::DbView,
};
use meridian_model::{Kind, StateView};
use meridian_routes::MeshState;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};
use tokio::sync::{broadcast, watch};

/// The mesh at one point of the replicated log.
#[derive(Debug, Default)]
pub struct MeshSnapshot {
    pub state: MeshState,
    /// The revision of the last change this snapshot contains; grows with every change.
    pub revision: u64,
    /// Counts the snapshots published: unlike the revision, never the same
    /// for two different states (a relist may publish a revision that the
    /// next change then carries too), so compiled output is keyed by it.
    pub generation: u64,
    /// The trace context of the latest traced change this snapshot folds in:
    /// compiling and pushing it join that change's trace.
    pub trace: Option<String>,
    /// When this node published it (its latest change applied), to time
    /// each client's ACK of it.
    pub applied_at: Option<std::time::Instant>,
    /// The summary of this snapshot's pushes from this node, when traced.
    pub distribution: std::sync::OnceLock<Arc<Distribution>>,
    /// The last change of any kind folded while this was the latest
    /// snapshot: changes that route nothing (bootstrap tokens) publish no
    /// snapshot, so proxies current with this one hold them too.
    pub through: AtomicU64,
}

impl MeshSnapshot {
    /// The newest revision whose routes are this snapshot's.
    pub fn through(&self) -> u64 {
        self.revision.max(self.through.load(Ordering::Relaxed))
    }

    /// The summary of this (traced) snapshot's pushes on `node`, started by
    /// the first stream that pushes it; nothing when this node exports no
    /// spans (there would be no one to read it).
    pub fn distribution(&self, node: u64) -> Option<&Arc<Distribution>> {
        if !meridian_telemetry::enabled() {
            return None;
        }
        let trace = self.trace.as_deref()?;
        Some(
            self.distribution
                .get_or_init(|| Distribution::start(trace, node)),
        )
    }
}

/// How long changes gather into one snapshot: milliseconds, not Istio's 100 ms.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Starts following the state machine; the receiver always holds the latest snapshot.
pub fn follow(hub: Arc<EventHub>, view: DbView) -> watch::Receiver<Arc<MeshSnapshot>> {
    let (state, revision, events) = list(&hub, &view);
    let (tx, rx) = watch::channel(Arc::new(MeshSnapshot {
        state,
        revision,
        ..Default::default()
    }));
    tokio::spawn(run(hub, view, tx, events));
    rx
}

fn list(hub: &EventHub, view: &DbView) -> (MeshState, u64, broadcast::Receiver<Event>) {
    let (resources, events) = hub.list_and_subscribe(|| {
        Kind::ALL
            .iter()
            .filter(|k| is_routing_input(**k))
            .flat_map(|k| view.list(*k))
            .collect::<Vec<_>>()
    });
    let revision = resources.iter().map(|r| r.revision()).max().unwrap_or(0);
    (MeshState::from_resources(resources), revision, events)
}

/// Bootstrap tokens are no input to routes: their uses recompile nothing.
fn is_routing_input(kind: Kind) -> bool {
    kind != Kind::BootstrapToken
}

async fn run(
    hub: Arc<EventHub>,
    view: DbView,
    tx: watch::Sender<Arc<MeshSnapshot>>,
    mut events: broadcast::Receiver<Event>,
) {
    let (mut state, mut revision, mut generation) = {
        let current = tx.borrow();
        (current.state.clone(), current.revision, current.generation)
    };
    loop {
        let (mut relist, mut changed, mut trace, mut seen) = (false, false, None, 0);
        let mut event = events.recv().await;
        // A short pause lets a burst of applies (an agent's batch next to
        // an operator's write) become one snapshot and one push.
        tokio::time::sleep(DEBOUNCE).await;
        // Fold every change already waiting into one snapshot.
        loop {
            match event {
                Ok(Event::Change(change)) if is_routing_input(change.key.kind) => {
                    match change.resource {
                        Some(resource) => state.put(resource),
                        None => state.remove(&change.key),
                    }
                    revision = revision.max(change.revision);
                    changed = true;
                    if change.trace.is_some() {
                        trace = change.trace;
                    }
                }
                Ok(Event::Change(change)) => seen = seen.max(change.revision),
                Ok(Event::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => relist = true,
                Err(broadcast::error::RecvError::Closed) => return,
            }
            match events.try_recv() {
                Ok(next) => event = Ok(next),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    event = Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        if !changed && !relist {
            tx.borrow().through.fetch_max(seen, Ordering::Relaxed);
            continue;
        }
        if relist {
            let (listed, listed_revision, subscribed) = list(&hub, &view);
            state = listed;
            // Never go backwards: streams compare revisions to decide what is new.
            revision = revision.max(listed_revision) + 1;
            events = subscribed;
        }
        generation += 1;
        if tx
            .send(Arc::new(MeshSnapshot {
                state: state.clone(),
                revision,
                generation,
                trace,
                applied_at: Some(std::time::Instant::now()),
                distribution: Default::default(),
                through: AtomicU64::new(seen),
            }))
            .is_err()
        {
            return;
        }
    }
}
