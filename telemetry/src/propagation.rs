//! W3C trace context (`traceparent`, `tracestate`) carried across the
//! boundaries a change or a request crosses: gRPC metadata, HTTP headers,
//! and a string stored in a Raft entry or a federation batch.

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

struct Headers<'a>(&'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct ReadHeaders<'a>(&'a http::HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes `cx`'s trace context into HTTP headers (or gRPC metadata's
/// headers), replacing what was there; nothing when `cx` holds no span.
pub fn inject_headers(cx: &Context, headers: &mut http::HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut Headers(headers));
    }
}

/// The trace context in HTTP headers; an empty context when there is none
/// or it is malformed.
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&ReadHeaders(headers))
}

/// Writes `cx`'s trace context into a request's gRPC metadata.
pub fn inject_grpc<T>(cx: &Context, request: &mut tonic::Request<T>) {
    let mut headers = std::mem::take(request.metadata_mut()).into_headers();
    inject_headers(cx, &mut headers);
    *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
}

/// The trace context of a gRPC request (its caller's span).
pub fn extract_grpc(metadata: &tonic::metadata::MetadataMap) -> Context {
    // MetadataMap keeps its entries as HTTP headers; read them as such.
    let mut headers = http::HeaderMap::new();
    for key in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = metadata.get(key) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(key, value);
            }
        }
    }
    extract_headers(&headers)
}

/// `cx`'s trace context as one string (`traceparent`, then `;` and the
/// `tracestate` if any), to store in a Raft entry or a message; `None` when
/// `cx` holds no span.
pub fn to_string(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut fields);
    let parent = fields.remove(TRACEPARENT)?;
    Some(match fields.remove(TRACESTATE).filter(|s| !s.is_empty()) {
        Some(state) => format!("{parent};{state}"),
        None => parent,
    })
}

/// The context a [`to_string`] string names; an empty context for anything
/// else (the string came from outside and may be anything).
pub fn from_string(text: &str) -> Context {
    let (parent, state) = text.split_once(';').unwrap_or((text, ""));
    let mut fields = HashMap::new();
    fields.insert(TRACEPARENT.to_string(), parent.to_string());
    if !state.is_empty() {
        fields.insert(TRACESTATE.to_string(), state.to_string());
    }
    TraceContextPropagator::new().extract(&fields)
}

/// The trace id of `cx`'s span, as 32 hex digits; `None` when it has none.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn context() -> Context {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "x")]).unwrap_or_default(),
        );
        Context::new().with_remote_span_context(span)
    }

    #[test]
    fn a_context_survives_a_string() {
        let text = to_string(&context()).expect("a valid context");
        assert_eq!(
            text,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01;vendor=x"
        );
        let back = from_string(&text);
        assert_eq!(back.span().span_context(), context().span().span_context());
    }

    #[test]
    fn a_context_survives_headers_and_grpc_metadata() {
        let mut headers = http::HeaderMap::new();
        inject_headers(&context(), &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut request = tonic::Request::new(());
        inject_grpc(&context(), &mut request);
        let back = extract_grpc(request.metadata());
        assert_eq!(
            trace_id(&back).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn garbage_is_no_context() {
        for text in [
            "",
            "00-zz-yy-01",
            "not a traceparent;at all",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(&from_string(text)), None, "{text}");
        }
        assert_eq!(to_string(&Context::new()), None);
    }
}
