//! The traced pushes of one stream: each response that carries a traced
//! change is an `xds.push` span, a child of the change's apply, that ends
//! when the proxy ACKs or NACKs that type (a NACK with its error text), or
//! when a newer push of the type replaces it.

use super::protocol::Feedback;
use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt};
use std::collections::HashMap;

/// The pushes waiting for the proxy's answer, by type URL.
#[derive(Default)]
pub struct Pushes(HashMap<String, Context>);

impl Pushes {
    /// A response of `type_url` at `version` went to `proxy` for the change
    /// traced by `trace`.
    pub fn sent(
        &mut self,
        trace: &str,
        node: u64,
        proxy: &str,
        type_url: &str,
        version: &str,
        resources: usize,
    ) {
        let cx = telemetry::start(
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
        );
        if let Some(replaced) = self.0.insert(type_url.to_string(), cx) {
            replaced.span().add_event("superseded", vec![]);
        }
    }

    /// The proxy answered for a type: its push span records the ACK or
    /// NACK and ends.
    pub fn answered(&mut self, feedback: Option<&Feedback>) {
        let Some(feedback) = feedback else { return };
        let (type_url, version) = match feedback {
            Feedback::Ack { type_url, version }
            | Feedback::Nack {
                type_url, version, ..
            } => (type_url, version),
        };
        let Some(cx) = self.0.remove(type_url) else {
            return;
        };
        let span = cx.span();
        match feedback {
            Feedback::Ack { .. } => {
                span.add_event("ack", vec![KeyValue::new("xds.version", version.clone())])
            }
            Feedback::Nack { error, .. } => {
                span.add_event(
                    "nack",
                    vec![
                        KeyValue::new("xds.version", version.clone()),
                        KeyValue::new("xds.error", error.clone()),
                    ],
                );
                telemetry::fail(&cx, format!("NACK: {error}"));
            }
        }
    }
}
