//! The pushes of one traced change from this node, summed up: an
//! `xds.distribute` span (a child of the change's apply) that parents each
//! proxy's `xds.push` span, up to [`MAX_TRACED_PUSHES`] of them, and ends
//! with how many pushes went out, were ACKed and NACKed, and the slowest
//! ACK, once every push is answered (or after [`LIMIT`]). With thousands of
//! proxies the trace stays readable: the summary covers them all.

use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt};
use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// The most pushes of one change traced per node, each a span of its own.
pub const MAX_TRACED_PUSHES: usize = 100;
/// How long the summary waits for the last answer.
const LIMIT: Duration = Duration::from_secs(30);
/// How long after the last push or answer the summary closes, when every
/// push is answered.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Distribution {
    cx: Context,
    /// `cx` as a trace context string, for the push spans' parent.
    trace: Option<String>,
    started: Instant,
    pushed: AtomicUsize,
    acked: AtomicUsize,
    nacked: AtomicUsize,
    slowest_ms: AtomicU64,
    /// Milliseconds after `started` of the last push or answer.
    last_ms: AtomicU64,
}

impl Distribution {
    /// Starts the summary of the change traced by `trace` on node `node`,
    /// and the task that closes it.
    pub fn start(trace: &str, node: u64) -> Arc<Distribution> {
        let cx = telemetry::start(
            "xds.distribute",
            SpanKind::Internal,
            &telemetry::propagation::from_string(trace),
            vec![KeyValue::new("meridian.node", node as i64)],
        );
        let distribution = Arc::new(Distribution {
            trace: telemetry::propagation::to_string(&cx),
            cx,
            started: Instant::now(),
            pushed: AtomicUsize::new(0),
            acked: AtomicUsize::new(0),
            nacked: AtomicUsize::new(0),
            slowest_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        });
        tokio::spawn(close_when_answered(distribution.clone()));
        distribution
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// A push of this change went out; its span, while under the limit.
    pub fn pushed(
        &self,
        node: u64,
        proxy: &str,
        type_url: &str,
        version: &str,
        resources: usize,
    ) -> Option<Context> {
        let n = self.pushed.fetch_add(1, Ordering::Relaxed);
        self.touch();
        let trace = self.trace.as_deref().filter(|_| n < MAX_TRACED_PUSHES)?;
        Some(super::push::span(
            trace, node, proxy, type_url, version, resources,
        ))
    }

    /// A push of this change was ACKed after `took`, or NACKed.
    pub fn answered(&self, acked: bool, took: Option<Duration>) {
        if acked {
            self.acked.fetch_add(1, Ordering::Relaxed);
            let ms = took.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
            self.slowest_ms.fetch_max(ms, Ordering::Relaxed);
        } else {
            self.nacked.fetch_add(1, Ordering::Relaxed);
        }
        self.touch();
    }

    fn settled(&self) -> bool {
        let pushed = self.pushed.load(Ordering::Relaxed);
        let answered = self.acked.load(Ordering::Relaxed) + self.nacked.load(Ordering::Relaxed);
        let quiet_since = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        pushed > 0 && answered >= pushed && self.started.elapsed() >= quiet_since + QUIET
    }

    fn close(&self) {
        let span = self.cx.span();
        let load = |n: &AtomicUsize| n.load(Ordering::Relaxed) as i64;
        span.set_attribute(KeyValue::new("xds.pushed", load(&self.pushed)));
        span.set_attribute(KeyValue::new("xds.acked", load(&self.acked)));
        span.set_attribute(KeyValue::new("xds.nacked", load(&self.nacked)));
        span.set_attribute(KeyValue::new(
            "xds.slowest_ack_ms",
            self.slowest_ms.load(Ordering::Relaxed) as i64,
        ));
        if self.nacked.load(Ordering::Relaxed) > 0 {
            telemetry::fail(&self.cx, "a proxy NACKed the change");
        }
        span.end();
    }
}

async fn close_when_answered(distribution: Arc<Distribution>) {
    while !distribution.settled() && distribution.started.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    distribution.close();
}
