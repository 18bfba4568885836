//! The agent's connection to the control plane: a full snapshot on every
//! connect, then batched deltas, one batch in flight at a time (changes that
//! arrive meanwhile fold into the next batch), reconnecting with backoff and
//! moving to the next control-plane node on failure.

use crate::{diff, Delta, Source, SourceUpdate, View};
use meridian_identity::{backoff::Backoff, tls::Dialer};
use meridian_proto::v1::{
    federation_client::FederationClient, sync_request::Message, Batch, EndpointSet, Hello,
    ServiceName as PbName, SourceStatus, SyncRequest, SyncResponse,
};
use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// How long a batch may wait for its acknowledgement before the agent reconnects.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    pub agent_id: String,
    /// Control-plane nodes, tried in turn.
    pub control_planes: Vec<String>,
    /// How long changes gather before they are sent as one batch.
    pub batch_interval: Duration,
    /// Mutual TLS with the agent's certificate, or plaintext.
    pub dialer: Dialer,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{0}")]
    Refused(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("no acknowledgement within {}s", ACK_TIMEOUT.as_secs())]
    AckTimeout,
    #[error("the discovery source stopped")]
    SourceGone,
}

/// Runs the source and keeps the control plane in step with it, forever.
pub async fn run(config: AgentConfig, source: Box<dyn Source>) -> AgentError {
    let (updates_tx, mut updates) = mpsc::channel(16);
    let event_name = source.event_name();
    tokio::spawn(source.run(updates_tx));
    let (view_tx, view_rx) = watch::channel::<Option<(View, Observed)>>(None);
    let (error_tx, error_rx) = watch::channel::<Option<String>>(None);
    let cluster = config.cluster.clone();
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            match update {
                SourceUpdate::View(view) => {
                    let _ = error_tx.send(None);
                    let observed = Observed {
                        trace: source_event(event_name, &cluster),
                        unix_ms: unix_ms(),
                    };
                    let _ = view_tx.send(Some((view, observed)));
                }
                SourceUpdate::Error(e) => {
                    let _ = error_tx.send(Some(e));
                }
            }
        }
    });

    let mut backoff = Backoff::default();
    for addr in config.control_planes.iter().cycle() {
        match session(
            &config,
            addr,
            view_rx.clone(),
            error_rx.clone(),
            &mut backoff,
        )
        .await
        {
            AgentError::SourceGone => return AgentError::SourceGone,
            e => tracing::warn!(control_plane = %addr, error = %e, "federation stream ended"),
        }
        backoff.wait().await;
    }
    AgentError::Closed
}

/// When and in which trace the source saw a view.
#[derive(Debug, Clone, Default)]
struct Observed {
    trace: Context,
    unix_ms: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The root of a change's trace: the source saw something new. The span
/// ends at once; what the view leads to (the batch) refers to it.
fn source_event(name: &'static str, cluster: &str) -> Context {
    let cx = telemetry::start(
        name,
        SpanKind::Producer,
        &Context::new(),
        vec![KeyValue::new("meridian.cluster", cluster.to_string())],
    );
    Context::new().with_remote_span_context(cx.span().span_context().clone())
}

fn batch(
    seq: u64,
    full_snapshot: bool,
    delta: &Delta,
    trace: &Context,
    observed_unix_ms: u64,
) -> SyncRequest {
    let upserts = delta
        .upserts
        .iter()
        .map(|(name, endpoints)| EndpointSet {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            spec_json: serde_json::json!({ "endpoints": endpoints }).to_string(),
        })
        .collect();
    let removals = delta
        .removals
        .iter()
        .map(|n| PbName {
            namespace: n.namespace.clone(),
            name: n.name.clone(),
        })
        .collect();
    SyncRequest {
        message: Some(Message::Batch(Batch {
            seq,
            full_snapshot,
            upserts,
            removals,
            trace: telemetry::propagation::to_string(trace).unwrap_or_default(),
            observed_unix_ms,
        })),
    }
}

async fn await_ack(responses: &mut Streaming<SyncResponse>, seq: u64) -> Result<u64, AgentError> {
    loop {
        let reply = tokio::time::timeout(ACK_TIMEOUT, responses.message())
            .await
            .map_err(|_| AgentError::AckTimeout)??
            .ok_or(AgentError::Closed)?;
        if reply.acked_seq == seq {
            return Ok(reply.index);
        }
    }
}

/// One connection: snapshot, then deltas, until something fails.
async fn session(
    config: &AgentConfig,
    addr: &str,
    mut views: watch::Receiver<Option<(View, Observed)>>,
    mut errors: watch::Receiver<Option<String>>,
    backoff: &mut Backoff,
) -> AgentError {
    let channel = match config.dialer.connect(addr).await {
        Ok(channel) => channel,
        Err(e) => {
            return AgentError::Connect {
                addr: addr.to_string(),
                message: e.to_string(),
            }
        }
    };
    let (tx, rx) = mpsc::channel(8);
    let hello = SyncRequest {
        message: Some(Message::Hello(Hello {
            cluster: config.cluster.clone(),
            agent_id: config.agent_id.clone(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return AgentError::Closed;
    }
    let mut responses = match FederationClient::new(channel)
        .sync(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return status.into(),
    };
    // The first view, then the full snapshot that resynchronises the cluster.
    if views.wait_for(Option::is_some).await.is_err() {
        return AgentError::SourceGone;
    }
    let mut acked = View::new();
    let mut seq = 0;
    let mut full = true;
    errors.mark_changed();
    loop {
        let (current, source) = views.borrow_and_update().clone().unwrap_or_default();
        let delta = diff(&acked, &current);
        if full || !delta.is_empty() {
            seq += 1;
            let cx = telemetry::start(
                "federation.batch",
                SpanKind::Client,
                &source.trace,
                vec![
                    KeyValue::new("meridian.cluster", config.cluster.clone()),
                    KeyValue::new("meridian.batch.seq", seq as i64),
                    KeyValue::new("meridian.batch.full", full),
                    KeyValue::new("meridian.batch.upserts", delta.upserts.len() as i64),
                    KeyValue::new("meridian.batch.removals", delta.removals.len() as i64),
                ],
            );
            if tx
                .send(batch(seq, full, &delta, &cx, source.unix_ms))
                .await
                .is_err()
            {
                return AgentError::Closed;
            }
            let acked_at = await_ack(&mut responses, seq).await;
            match &acked_at {
                Ok(index) => cx
                    .span()
                    .set_attribute(KeyValue::new("meridian.raft.index", *index as i64)),
                Err(e) => telemetry::fail(&cx, e.to_string()),
            }
            drop(cx);
            match acked_at {
                Ok(index) => {
                    // A committed batch: the stream works, a later failure starts the backoff over.
                    backoff.reset();
                    tracing::info!(
                        seq,
                        index,
                        upserts = delta.upserts.len(),
                        removals = delta.removals.len(),
                        full,
                        "batch committed"
                    )
                }
                Err(e) => return e,
            }
            acked = current;
            full = false;
            continue;
        }
        tokio::select! {
            changed = views.changed() => {
                if changed.is_err() { return AgentError::SourceGone }
                // Let a burst of changes gather into one batch.
                tokio::time::sleep(config.batch_interval).await;
            }
            changed = errors.changed() => {
                if changed.is_err() { return AgentError::SourceGone }
                let error = errors.borrow_and_update().clone().unwrap_or_default();
                let status = SyncRequest { message: Some(Message::SourceStatus(SourceStatus { error })) };
                if tx.send(status).await.is_err() { return AgentError::Closed }
            }
            reply = responses.message() => {
                return match reply {
                    Ok(Some(_)) => continue,
                    Ok(None) => AgentError::Closed,
                    Err(status) => status.into(),
                };
            }
        }
    }
}
