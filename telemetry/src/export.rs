//! The OTLP/gRPC span exporter, driven on the binary's own Tokio runtime.
//!
//! The SDK's batch processor exports from a thread of its own, where tonic
//! finds no Tokio reactor; each export is therefore spawned on the runtime
//! the binary already runs, and the processor thread only waits for it.

use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
    Resource,
};
use std::{sync::Arc, time::Duration};
use tokio::runtime::Handle;

#[derive(Debug)]
pub struct OnRuntime {
    inner: Arc<tokio::sync::Mutex<opentelemetry_otlp::SpanExporter>>,
    runtime: Handle,
}

impl OnRuntime {
    pub fn new(inner: opentelemetry_otlp::SpanExporter, runtime: Handle) -> OnRuntime {
        OnRuntime {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            runtime,
        }
    }
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        let exported = self
            .runtime
            .spawn(async move { inner.lock().await.export(batch).await });
        exported
            .await
            .map_err(|e| OTelSdkError::InternalFailure(format!("the export task failed: {e}")))?
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self.inner.try_lock() {
            Ok(inner) => inner.shutdown_with_timeout(timeout),
            Err(_) => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Ok(mut inner) = self.inner.try_lock() {
            inner.set_resource(resource);
        }
    }
}
