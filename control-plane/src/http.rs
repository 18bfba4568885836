//! The node's HTTP port: liveness, readiness and Prometheus metrics.

use crate::{metrics::Metrics, node::Node};
use axum::{extract::State, http::StatusCode, routing::get, Router};
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
}

pub fn router(node: Arc<Node>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { node, metrics })
}

/// Ready when a leader is known and this replica has applied all it knows to be committed.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let m = state.node.metrics();
    if let Err(fatal) = &m.running_state {
        // openraft keeps its last leader after stopping; a stopped node is not ready.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        );
    }
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let committed = state.node.committed_index();
    match m.current_leader {
        None => (StatusCode::SERVICE_UNAVAILABLE, "no known leader\n".into()),
        Some(_) if applied < committed => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catching up: applied {applied} of committed {committed}\n"),
        ),
        Some(leader) => (
            StatusCode::OK,
            format!("ready: leader {leader}, applied {applied}\n"),
        ),
    }
}

async fn metrics_text(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.node),
    )
}
