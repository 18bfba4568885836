//! Watch: the current objects (from revision 0) or the retained history, then
//! live changes, filtered by kind.

use super::convert::{key_to_pb, resource_to_pb};
use crate::events::{Change, ChangeType, Event, EventHub};
use crate::raft::view::DbView;
use meridian_model::{Kind, Resource, StateView};
use meridian_proto::v1::{watch_event::EventType, WatchEvent};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

pub type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<WatchEvent, Status>>;

pub fn start(
    hub: Arc<EventHub>,
    view: DbView,
    kind: Option<Kind>,
    from_revision: u64,
) -> Result<WatchStream, Status> {
    let kinds: Vec<Kind> = kind.map(|k| vec![k]).unwrap_or_else(|| Kind::ALL.to_vec());
    let (backlog, live) = if from_revision == 0 {
        let (current, live) = hub.list_and_subscribe(|| {
            kinds
                .iter()
                .flat_map(|k| view.list(*k))
                .collect::<Vec<Resource>>()
        });
        let added = current
            .into_iter()
            .map(|resource| Change {
                revision: resource.revision(),
                change: ChangeType::Added,
                key: resource.key(),
                resource: Some(resource),
                // Sent to this watcher only, never kept in the history.
                size: 0,
                trace: None,
            })
            .collect();
        (added, live)
    } else {
        let resume = hub.resume(from_revision).ok_or_else(|| {
            Status::out_of_range(format!(
                "revision {from_revision} is older than the retained history; watch from 0 to list current state"
            ))
        })?;
        (resume.backlog, resume.live)
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(forward(backlog, live, kind, tx));
    Ok(WatchStream::new(rx))
}

async fn forward(
    backlog: Vec<Change>,
    mut live: broadcast::Receiver<Event>,
    kind: Option<Kind>,
    tx: mpsc::Sender<Result<WatchEvent, Status>>,
) {
    let wanted = |c: &Change| kind.is_none_or(|k| c.key.kind == k);
    for change in backlog.iter().filter(|c| wanted(c)) {
        if tx.send(Ok(to_pb(change))).await.is_err() {
            return;
        }
    }
    loop {
        let event = tokio::select! {
            event = live.recv() => event,
            _ = tx.closed() => return,
        };
        let ended = match event {
            Ok(Event::Change(change)) if wanted(&change) => {
                tx.send(Ok(to_pb(&change))).await.is_err()
            }
            Ok(Event::Change(_)) => false,
            Ok(Event::Reset) => {
                let _ = tx
                    .send(Err(Status::aborted(
                        "this node installed a snapshot; watch again from revision 0",
                    )))
                    .await;
                true
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = tx
                    .send(Err(Status::aborted(format!(
                        "the watch fell {n} changes behind; watch again"
                    ))))
                    .await;
                true
            }
            Err(broadcast::error::RecvError::Closed) => true,
        };
        if ended {
            return;
        }
    }
}

fn to_pb(change: &Change) -> WatchEvent {
    let event_type = match change.change {
        ChangeType::Added => EventType::Added,
        ChangeType::Modified => EventType::Modified,
        ChangeType::Deleted => EventType::Deleted,
    };
    WatchEvent {
        r#type: event_type as i32,
        revision: change.revision,
        key: Some(key_to_pb(&change.key)),
        manifest_json: change
            .resource
            .as_ref()
            .map(|r| resource_to_pb(r).manifest_json)
            .unwrap_or_default(),
    }
}
