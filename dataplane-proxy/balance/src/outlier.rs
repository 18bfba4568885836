//! Passive outlier detection, after Envoy's: a host that fails (5xx or
//! connect failure) this many times in a row is ejected for the base
//! ejection time times the number of times it has been ejected, unless that
//! would eject more than the maximum share of the cluster. Time is passed
//! in, so the logic is pure.

use std::{collections::HashMap, time::Duration, time::Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// What the caller should do to the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Eject(String),
    Readmit(String),
}

#[derive(Debug)]
pub struct OutlierTracker {
    policy: OutlierPolicy,
    hosts: HashMap<String, HostState>,
    host_count: usize,
}

impl OutlierTracker {
    pub fn new(policy: OutlierPolicy, host_count: usize) -> Self {
        OutlierTracker {
            policy,
            hosts: HashMap::new(),
            host_count,
        }
    }

    fn ejected(&self) -> usize {
        self.hosts
            .values()
            .filter(|h| h.ejected_until.is_some())
            .count()
    }

    /// Records one request's outcome at `host`.
    pub fn record(&mut self, host: &str, failed: bool, now: Instant) -> Option<Verdict> {
        let max = self.host_count * self.policy.max_ejection_percent as usize / 100;
        let ejected = self.ejected();
        let state = self.hosts.entry(host.to_string()).or_default();
        if !failed {
            state.consecutive = 0;
            return None;
        }
        state.consecutive += 1;
        if state.consecutive < self.policy.consecutive_failures
            || state.ejected_until.is_some()
            || ejected >= max
        {
            return None;
        }
        state.consecutive = 0;
        state.ejections += 1;
        state.ejected_until = Some(now + self.policy.base_ejection * state.ejections);
        Some(Verdict::Eject(host.to_string()))
    }

    /// Hosts whose ejection has run out.
    pub fn expire(&mut self, now: Instant) -> Vec<Verdict> {
        let mut readmitted = Vec::new();
        for (host, state) in &mut self.hosts {
            if state.ejected_until.is_some_and(|until| until <= now) {
                state.ejected_until = None;
                readmitted.push(Verdict::Readmit(host.clone()));
            }
        }
        readmitted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        readmitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_backs_off_and_respects_the_maximum() {
        let policy = OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection_percent: 50,
        };
        let mut tracker = OutlierTracker::new(policy, 4);
        let t0 = Instant::now();
        assert_eq!(tracker.record("a", true, t0), None);
        assert_eq!(
            tracker.record("a", false, t0),
            None,
            "a success resets the count"
        );
        tracker.record("a", true, t0);
        tracker.record("a", true, t0);
        assert_eq!(
            tracker.record("a", true, t0),
            Some(Verdict::Eject("a".into()))
        );
        assert!(tracker.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            tracker.expire(t0 + Duration::from_secs(10)),
            vec![Verdict::Readmit("a".into())]
        );
        // Ejected again: twice as long.
        let t1 = t0 + Duration::from_secs(20);
        for _ in 0..3 {
            tracker.record("a", true, t1);
        }
        assert!(tracker.expire(t1 + Duration::from_secs(19)).is_empty());
        assert_eq!(tracker.expire(t1 + Duration::from_secs(20)).len(), 1);
        // At most 50% of 4 hosts: two, not three.
        for host in ["b", "c", "d"] {
            for _ in 0..3 {
                tracker.record(host, true, t1);
            }
        }
        assert_eq!(tracker.ejected(), 2);
    }
}
