//! How every Meridian binary starts its logs and its OpenTelemetry traces,
//! and carries trace context from one process to the next.
//!
//! Logs go to stderr, filtered by `MERIDIAN_LOG`. Traces are exported over
//! OTLP/gRPC only when an endpoint is given (`--otlp-endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): then spans are batched by the SDK's batch
//! processor, whose queue is bounded (spans beyond it are dropped, never
//! waited for), so the apply path, xDS pushes and proxied requests never
//! block on a slow or absent collector. With no endpoint no tracer provider
//! is installed and every span is the API's no-op span. The standard
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG` and `OTEL_BSP_*` variables apply.

mod export;
pub mod propagation;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use std::path::PathBuf;

pub use opentelemetry::{
    trace::{Span, SpanKind, Status, TraceContextExt, Tracer},
    Context, KeyValue, Value,
};

/// The tracing flags every binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OtlpArgs {
    /// Export traces over OTLP/gRPC to this collector (`http://HOST:PORT`,
    /// or `https://` for TLS); none by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The CA certificate (PEM) an `https://` collector's certificate must
    /// chain to (the system's roots are not used).
    #[arg(long, env = "MERIDIAN_OTLP_CA", requires = "otlp_endpoint")]
    pub otlp_ca: Option<PathBuf>,
}

impl OtlpArgs {
    /// The settings from the standard variables alone, for a tool without
    /// the flags (the CLI).
    pub fn from_env() -> OtlpArgs {
        OtlpArgs {
            otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
            otlp_ca: std::env::var_os("MERIDIAN_OTLP_CA").map(PathBuf::from),
        }
    }
}

/// What `init` started; dropping it flushes the spans still queued.
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Starts logging to stderr (`MERIDIAN_LOG`, else `default_filter`).
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Starts trace export for `service` (unless `OTEL_SERVICE_NAME` names it
/// otherwise), whose instance is `instance` (a node id, a proxy's name),
/// when `args` give an endpoint. Call it on the runtime the binary runs on:
/// exports are spawned there.
pub fn init(service: &str, instance: &str, args: &OtlpArgs) -> anyhow::Result<Telemetry> {
    let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(Telemetry { provider: None });
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5));
    if endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &args.otlp_ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading --otlp-ca {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder
        .build()
        .with_context(|| format!("the OTLP exporter for {endpoint}"))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(export::OnRuntime::new(
            exporter,
            tokio::runtime::Handle::try_current()
                .context("telemetry::init must run on the binary's Tokio runtime")?,
        ))
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(endpoint, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Meridian's tracer (a no-op one when no endpoint was given).
pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer_provider().tracer("meridian")
}

/// Whether spans are exported at all: callers skip building what only a
/// span would hold when they are not.
pub fn enabled() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts the span `name` as a child of `parent` and returns the context
/// holding it: the span ends when the last clone of that context is
/// dropped. Read or annotate it through `cx.span()`.
pub fn start(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Context {
    let tracer = tracer();
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// Marks `cx`'s span failed with `message`.
pub fn fail(cx: &Context, message: impl Into<std::borrow::Cow<'static, str>>) {
    cx.span().set_status(Status::error(message));
}

/// A new trace's root: the span `name` when spans are exported, else a
/// fresh sampled trace context (so that a trace id can still be handed on
/// and shown).
pub fn root(name: &'static str, kind: SpanKind) -> Context {
    let cx = start(name, kind, &Context::new(), vec![]);
    if cx.span().span_context().is_valid() {
        return cx;
    }
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    Context::new().with_remote_span_context(SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    ))
}
