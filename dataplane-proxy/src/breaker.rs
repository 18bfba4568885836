//! A cluster's circuit breakers: requests, retries and connection slots in
//! flight. They outlive configuration updates that keep the cluster's limits,
//! so an EDS or route push does not reopen a full breaker.

use crate::config::Limits;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Breaker {
    limits: Option<Limits>,
    /// Requests in flight.
    active: AtomicU32,
    /// Retries in flight, for the retry budget.
    retries: AtomicU32,
    /// Connection slots, when the cluster limits connections.
    slots: Option<Arc<Semaphore>>,
    /// Requests waiting for a connection slot.
    pending: AtomicU32,
}

/// Counts a request while it is in flight.
pub struct InFlight<'a> {
    counter: &'a AtomicU32,
}

/// Retries always allowed in flight, however few requests are: enough that
/// every request caught on a tier that just died can move on (Linkerd's
/// retry budget has the same floor, ten, per second). Envoy's three let the
/// fourth concurrent request of a dead tier fail.
const MIN_RETRY_CONCURRENCY: u32 = 10;

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight<'_> {
    /// Counts one more on `counter` until dropped.
    pub fn enter(counter: &AtomicU32) -> (InFlight<'_>, u32) {
        let previous = counter.fetch_add(1, Ordering::Relaxed);
        (InFlight { counter }, previous)
    }
}

impl Breaker {
    /// The breaker for `limits`: `previous` itself when its limits are the same.
    pub fn for_limits(limits: Option<Limits>, previous: Option<&Arc<Breaker>>) -> Arc<Breaker> {
        if let Some(previous) = previous.filter(|b| b.limits == limits) {
            return previous.clone();
        }
        Arc::new(Breaker {
            limits,
            active: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            slots: limits.map(|l| Arc::new(Semaphore::new(l.max_connections as usize))),
            pending: AtomicU32::new(0),
        })
    }

    /// Admits a request unless `maxRequests` are already in flight.
    pub fn admit(&self) -> Option<InFlight<'_>> {
        let limit = self.limits.map(|l| l.max_requests).unwrap_or(u32::MAX);
        let (admitted, previous) = InFlight::enter(&self.active);
        (previous < limit).then_some(admitted)
    }

    /// Admits a retry unless retries in flight already reach the budget:
    /// a fifth of the requests in flight, and at least
    /// `MIN_RETRY_CONCURRENCY`.
    pub fn admit_retry(&self) -> Option<InFlight<'_>> {
        let budget = (self.active.load(Ordering::Relaxed) / 5).max(MIN_RETRY_CONCURRENCY);
        let (admitted, previous) = InFlight::enter(&self.retries);
        (previous < budget).then_some(admitted)
    }

    /// A connection slot: at once if one of `maxConnections` is free, else
    /// after waiting (at most `wait`) as one of at most `maxPendingRequests`
    /// pending requests; refused beyond that.
    pub async fn connection(
        &self,
        wait: std::time::Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let (Some(slots), Some(limits)) = (&self.slots, self.limits) else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let (_pending, waiting) = InFlight::enter(&self.pending);
        if waiting >= limits.max_pending_requests {
            return Err(());
        }
        match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: u32) -> Option<Limits> {
        Some(Limits {
            max_requests: 2,
            max_connections,
            max_pending_requests: 0,
        })
    }

    #[test]
    fn same_limits_keep_the_counts_in_flight() {
        let first = Breaker::for_limits(limits(1), None);
        let _a = first.admit().expect("first admitted");
        let _b = first.admit().expect("second admitted");
        let kept = Breaker::for_limits(limits(1), Some(&first));
        assert!(kept.admit().is_none(), "still two in flight");
        let changed = Breaker::for_limits(limits(5), Some(&first));
        assert!(changed.admit().is_some(), "new limits start afresh");
    }

    #[tokio::test]
    async fn connections_beyond_slots_and_pending_are_refused() {
        let breaker = Breaker::for_limits(limits(1), None);
        let held = breaker
            .connection(std::time::Duration::from_millis(10))
            .await;
        assert!(matches!(held, Ok(Some(_))));
        let refused = breaker
            .connection(std::time::Duration::from_millis(10))
            .await;
        assert!(refused.is_err());
        drop(held);
        let again = breaker
            .connection(std::time::Duration::from_millis(10))
            .await;
        assert!(matches!(again, Ok(Some(_))));
    }
}
