//! One stream's pushes of changes, waiting for the client's answer: how
//! long a change took from its apply to the client's ACK, and, for a traced
//! change, an `xds.push` span (a child of the change's `xds.distribute`)
//! that records the ACK, or the NACK with its error text, and ends with it
//! (or when a newer push of the type replaces it).

use super::{distribution::Distribution, protocol::Feedback};
use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt};
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

struct Pending {
    /// When the change was applied on this node.
    changed_at: Option<Instant>,
    span: Option<Context>,
    distribution: Option<Arc<Distribution>>,
}

/// The pushes waiting for the client's answer, by type URL.
#[derive(Default)]
pub struct Pushes(HashMap<String, Pending>);

/// What the client said of a push.
pub enum Answer {
    /// ACKed, this long after the change was applied.
    Acked(Option<Duration>),
    Nacked,
}

/// The span of one traced push.
pub fn span(
    trace: &str,
    node: u64,
    proxy: &str,
    type_url: &str,
    version: &str,
    resources: usize,
) -> Context {
    telemetry::start(
        "xds.push",
        SpanKind::Producer,
        &telemetry::propagation::from_string(trace),
        vec![
            KeyValue::new("meridian.node", node as i64),
            KeyValue::new("meridian.proxy", proxy.to_string()),
            KeyValue::new("xds.type_url", type_url.to_string()),
            KeyValue::new("xds.version", version.to_string()),
            KeyValue::new("xds.resources", resources as i64),
        ],
    )
}

impl Pushes {
    /// A response of `type_url` carrying a change applied at `changed_at`
    /// went out, summed up in `distribution` and traced by `span`, if any.
    pub fn sent(
        &mut self,
        type_url: &str,
        changed_at: Option<Instant>,
        distribution: Option<Arc<Distribution>>,
        span: Option<Context>,
    ) {
        let pending = Pending {
            changed_at,
            span,
            distribution,
        };
        if let Some(replaced) = self.0.insert(type_url.to_string(), pending) {
            if let Some(cx) = replaced.span {
                cx.span().add_event("superseded", vec![]);
            }
        }
    }

    /// The client answered for a type; the push's span records it and ends.
    pub fn answered(&mut self, feedback: &Feedback) -> Option<Answer> {
        let (type_url, version) = match feedback {
            Feedback::Ack { type_url, version }
            | Feedback::Nack {
                type_url, version, ..
            } => (type_url, version),
        };
        let pending = self.0.remove(type_url)?;
        let took = pending.changed_at.map(|at| at.elapsed());
        if let Some(distribution) = &pending.distribution {
            distribution.answered(matches!(feedback, Feedback::Ack { .. }), took);
        }
        let version = KeyValue::new("xds.version", version.clone());
        match feedback {
            Feedback::Ack { .. } => {
                if let Some(cx) = &pending.span {
                    cx.span().add_event("ack", vec![version]);
                }
                Some(Answer::Acked(took))
            }
            Feedback::Nack { error, .. } => {
                if let Some(cx) = &pending.span {
                    cx.span().add_event(
                        "nack",
                        vec![version, KeyValue::new("xds.error", error.clone())],
                    );
                    telemetry::fail(cx, format!("NACK: {error}"));
                }
                Some(Answer::Nacked)
            }
        }
    }
}
