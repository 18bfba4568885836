//! A test OTLP/gRPC collector: an OpenTelemetry `TraceService` that keeps
//! every span it receives, flattened, for tests to query. It can also stop
//! answering, as a collector that went away.

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};
use tonic::{Request, Response, Status};

/// One span as received, with its ids in hex.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// The exporting process's `service.name` and `service.instance.id`.
    pub service: String,
    pub instance: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// The status message of a failed span.
    pub error: Option<String>,
}

impl CollectedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = map(&resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default());
            let service = resource.get("service.name").cloned().unwrap_or_default();
            let instance = resource
                .get("service.instance.id")
                .cloned()
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let status = span.status.unwrap_or_default();
                received.push(CollectedSpan {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: map(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), map(&e.attributes)))
                        .collect(),
                    // STATUS_CODE_ERROR = 2.
                    error: (status.code == 2).then_some(status.message),
                });
            }
        }
        self.spans.lock().expect("lock").extend(received);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector listening on 127.0.0.1, until dropped.
pub struct OtlpCollector {
    /// `http://127.0.0.1:PORT`, for `--otlp-endpoint`.
    pub endpoint: String,
    collector: Collector,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    pub async fn start() -> OtlpCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let collector = Collector::default();
        let service = collector.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        OtlpCollector {
            endpoint,
            collector,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.collector.spans.lock().expect("lock").clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Stops answering (the port closes), as a collector that went away.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The chain of parents from `span` up to the root of its trace, names
/// only, `span` first; stops at a parent the trace does not hold.
pub fn ancestry(spans: &[CollectedSpan], span: &CollectedSpan) -> Vec<String> {
    let mut chain = vec![span.name.clone()];
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        let Some(next) = spans.iter().find(|s| s.span_id == parent) else {
            chain.push(format!("<missing {parent}>"));
            break;
        };
        chain.push(next.name.clone());
        parent = next.parent_span_id.clone();
    }
    chain
}
