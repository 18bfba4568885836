//! Passive outlier detection, after Envoy's: a host that fails (a 5xx, or
//! only a gateway error, by the policy; a reset or timeout always)
//! this many times in a row is ejected for the base ejection time times the
//! number of times it has been ejected, unless that would eject more than
//! the maximum share of the cluster or its last host. A host that cannot be
//! connected to (refused, or no answer within the connect timeout) is
//! ejected at once: nothing is listening there, or nothing is there. As in
//! Envoy, an ejection never lasts longer than the maximum ejection time
//! (300 s), and each interval a readmitted host stays in rotation takes one
//! off its multiplier, so a host that was down for a long while and came
//! back is not ejected for minutes at its next hiccup. Time is passed in,
//! so the logic is pure.

use foldhash::HashMap;
use std::{time::Duration, time::Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Count every 5xx as a failure, not only gateway errors (502, 503, 504).
    pub any_5xx: bool,
    /// How often a readmitted host's multiplier goes down by one.
    pub interval: Duration,
    /// The longest one ejection lasts, however many came before.
    pub max_ejection: Duration,
}

/// Envoy's defaults for the fields xDS may leave out.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);

/// How one request to a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The connection was reset or closed before a response, or the try timed out.
    Failed,
    /// No connection could be made: refused, or no answer in time.
    Unreachable,
}

impl OutlierPolicy {
    /// Whether the outcome counts against the host.
    pub fn is_failure(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(status) if self.any_5xx => (500..600).contains(&status),
            Outcome::Status(status) => matches!(status, 502..=504),
            Outcome::Failed | Outcome::Unreachable => true,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct HostState {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Since when the host has been in rotation with its multiplier
    /// unchanged (readmitted, or last decremented).
    calm_since: Option<Instant>,
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
            hosts: HashMap::default(),
            host_count,
        }
    }

    /// A tracker for the cluster's next configuration that keeps this one's
    /// ejections and counts, for the hosts that are still there.
    pub fn carry_over(&self, policy: OutlierPolicy, hosts: &[&str]) -> Self {
        OutlierTracker {
            policy,
            hosts: hosts
                .iter()
                .filter_map(|h| Some((h.to_string(), self.hosts.get(*h)?.clone())))
                .collect(),
            host_count: hosts.len(),
        }
    }

    pub fn policy(&self) -> OutlierPolicy {
        self.policy
    }

    fn ejected(&self) -> usize {
        self.ejected_hosts().count()
    }

    /// The hosts ejected now.
    pub fn ejected_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.ejected_until.is_some())
            .map(|(address, _)| address.as_str())
    }

    /// Records one request's outcome at `host`.
    pub fn record(&mut self, host: &str, outcome: Outcome, now: Instant) -> Option<Verdict> {
        if !self.policy.is_failure(outcome) {
            // The common case, on every request: no allocation, no count.
            if let Some(state) = self.hosts.get_mut(host) {
                state.consecutive = 0;
            }
            return None;
        }
        let max = (self.host_count * self.policy.max_ejection_percent as usize / 100)
            .min(self.host_count.saturating_sub(1));
        let ejected = self.ejected();
        let state = self.hosts.entry(host.to_string()).or_default();
        state.consecutive += 1;
        let enough = outcome == Outcome::Unreachable
            || state.consecutive >= self.policy.consecutive_failures;
        if !enough || state.ejected_until.is_some() || ejected >= max {
            return None;
        }
        state.consecutive = 0;
        state.ejections += 1;
        state.calm_since = None;
        let ejection = (self.policy.base_ejection * state.ejections)
            .min(self.policy.max_ejection.max(self.policy.base_ejection));
        state.ejected_until = Some(now + ejection);
        Some(Verdict::Eject(host.to_string()))
    }

    /// Hosts whose ejection has run out; readmitted hosts that stayed in
    /// rotation for an interval have their multiplier taken down by one.
    pub fn expire(&mut self, now: Instant) -> Vec<Verdict> {
        let mut readmitted = Vec::new();
        let interval = self.policy.interval.max(Duration::from_millis(1));
        for (host, state) in &mut self.hosts {
            if state.ejected_until.is_some_and(|until| until <= now) {
                state.ejected_until = None;
                state.calm_since = Some(now);
                readmitted.push(Verdict::Readmit(host.clone()));
            }
            if let (None, Some(since)) = (state.ejected_until, state.calm_since) {
                // One off per whole interval in rotation, however rarely this runs.
                let intervals =
                    now.saturating_duration_since(since).as_nanos() / interval.as_nanos();
                let off = u32::try_from(intervals)
                    .unwrap_or(u32::MAX)
                    .min(state.ejections);
                if off > 0 {
                    state.ejections -= off;
                    state.calm_since = Some(since + interval * off);
                }
            }
        }
        readmitted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        readmitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Outcome = Outcome::Status(500);
    const OK: Outcome = Outcome::Status(200);

    fn gateway_policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection_percent: 100,
            any_5xx: false,
            interval: Duration::from_secs(1),
            max_ejection: DEFAULT_MAX_EJECTION,
        }
    }

    #[test]
    fn ejections_are_capped_and_the_multiplier_decays_once_back() {
        let policy = OutlierPolicy {
            max_ejection: Duration::from_secs(12),
            ..gateway_policy()
        };
        let mut tracker = OutlierTracker::new(policy, 2);
        let mut now = Instant::now();
        // Down for a long while: 5 s, 10 s, then capped at 12 s.
        for expected in [5, 10, 12, 12] {
            assert_eq!(
                tracker.record("a", Outcome::Unreachable, now),
                Some(Verdict::Eject("a".into()))
            );
            now += Duration::from_secs(expected);
            assert!(tracker.expire(now - Duration::from_millis(1)).is_empty());
            assert_eq!(tracker.expire(now), [Verdict::Readmit("a".into())]);
        }
        // Back and healthy: each interval in rotation takes one ejection off,
        // however rarely the tracker is asked.
        now += Duration::from_millis(3_500);
        tracker.expire(now);
        tracker.record("a", Outcome::Unreachable, now);
        let back_in = tracker.hosts["a"].ejected_until.map(|u| u - now);
        assert_eq!(
            back_in,
            Some(Duration::from_secs(10)),
            "4 - 3 + 1 = 2 ejections"
        );
    }

    #[test]
    fn the_gateway_detector_ignores_application_errors() {
        let policy = gateway_policy();
        assert!(!policy.is_failure(Outcome::Status(500)));
        assert!(policy.is_failure(Outcome::Status(503)));
        assert!(policy.is_failure(Outcome::Failed));
        assert!(!policy.is_failure(Outcome::Status(404)));
    }

    #[test]
    fn an_unreachable_host_is_ejected_at_once_but_never_the_last_one() {
        let mut tracker = OutlierTracker::new(gateway_policy(), 3);
        let now = Instant::now();
        assert_eq!(
            tracker.record("a", Outcome::Unreachable, now),
            Some(Verdict::Eject("a".into()))
        );
        assert_eq!(
            tracker.record("b", Outcome::Unreachable, now),
            Some(Verdict::Eject("b".into()))
        );
        // 100% may be ejected, but one host always stays to take traffic.
        assert_eq!(tracker.record("c", Outcome::Unreachable, now), None);
        assert_eq!(tracker.ejected_hosts().collect::<Vec<_>>().len(), 2);
        assert!(!tracker.ejected_hosts().any(|h| h == "c"));
    }

    #[test]
    fn carry_over_keeps_ejections_of_hosts_still_there() {
        let mut tracker = OutlierTracker::new(gateway_policy(), 3);
        let now = Instant::now();
        tracker.record("a", Outcome::Unreachable, now);
        tracker.record("b", Outcome::Failed, now);
        let next = tracker.carry_over(gateway_policy(), &["a", "c"]);
        assert_eq!(next.ejected_hosts().collect::<Vec<_>>(), ["a"]);
        assert_eq!(next.host_count, 2);
        assert!(!next.hosts.contains_key("b"));
    }

    #[test]
    fn ejects_backs_off_and_respects_the_maximum() {
        let policy = OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection_percent: 50,
            any_5xx: true,
            interval: Duration::from_secs(10),
            max_ejection: DEFAULT_MAX_EJECTION,
        };
        let mut tracker = OutlierTracker::new(policy, 4);
        let t0 = Instant::now();
        assert_eq!(tracker.record("a", FAIL, t0), None);
        assert_eq!(
            tracker.record("a", OK, t0),
            None,
            "a success resets the count"
        );
        tracker.record("a", FAIL, t0);
        tracker.record("a", FAIL, t0);
        assert_eq!(
            tracker.record("a", FAIL, t0),
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
            tracker.record("a", FAIL, t1);
        }
        assert!(tracker.expire(t1 + Duration::from_secs(19)).is_empty());
        assert_eq!(tracker.expire(t1 + Duration::from_secs(20)).len(), 1);
        // At most 50% of 4 hosts: two, not three.
        for host in ["b", "c", "d"] {
            for _ in 0..3 {
                tracker.record(host, FAIL, t1);
            }
        }
        assert_eq!(tracker.ejected(), 2);
    }
}
