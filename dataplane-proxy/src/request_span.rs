//! The span of one proxied request: a child of the caller's W3C trace
//! context when it sent one, passed on to the upstream in its place (the
//! upstream sees the same trace id and this span as its parent), with the
//! HTTP semantic-convention attributes and Meridian's route, cluster,
//! endpoint, locality and retries. Nothing at all when traces are not
//! exported.

use hyper::{HeaderMap, Method, StatusCode};
use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt, Value};
use std::net::SocketAddr;

pub struct RequestSpan(Option<Context>);

impl RequestSpan {
    /// `kind` is Client for outbound requests, Server for `--inbound`.
    pub fn start(
        kind: SpanKind,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        peer: SocketAddr,
    ) -> RequestSpan {
        if !telemetry::enabled() {
            return RequestSpan(None);
        }
        let parent = telemetry::propagation::extract_headers(headers);
        let cx = telemetry::start(
            "proxy.request",
            kind,
            &parent,
            vec![
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_string()),
                KeyValue::new("client.address", peer.ip().to_string()),
            ],
        );
        RequestSpan(Some(cx))
    }

    /// Sets an attribute; `value` is built only when the request is traced,
    /// so an untraced request allocates nothing for its span.
    pub fn set<V: Into<Value>>(&self, key: &'static str, value: impl FnOnce() -> V) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value()));
        }
    }

    /// Puts this span's trace context in the upstream request's headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(cx) = &self.0 {
            headers.remove("tracestate");
            telemetry::propagation::inject_headers(cx, headers);
        }
    }

    /// Ends the span with the status the client gets.
    pub fn finish(self, status: StatusCode) {
        let Some(cx) = self.0 else { return };
        cx.span().set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            telemetry::fail(&cx, status.to_string());
        }
    }
}
