//! Active health checking's thresholds: a host goes down after so many
//! failed checks in a row and comes back after so many passed. Hosts start
//! up, so a new endpoint takes traffic before its first check. Pure.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub unhealthy: u32,
    pub healthy: u32,
}

#[derive(Debug, Default)]
struct HostState {
    down: bool,
    streak: u32,
}

#[derive(Debug)]
pub struct HealthTracker {
    thresholds: Thresholds,
    hosts: HashMap<String, HostState>,
}

impl HealthTracker {
    pub fn new(thresholds: Thresholds) -> Self {
        HealthTracker {
            thresholds,
            hosts: HashMap::new(),
        }
    }

    /// Records a check; returns the host's new state (`true` = up) when it changes.
    pub fn record(&mut self, host: &str, passed: bool) -> Option<bool> {
        let state = self.hosts.entry(host.to_string()).or_default();
        // A result that agrees with the current state resets the streak toward the other.
        if passed != state.down {
            state.streak = 0;
            return None;
        }
        state.streak += 1;
        let needed = if state.down {
            self.thresholds.healthy
        } else {
            self.thresholds.unhealthy
        };
        if state.streak < needed.max(1) {
            return None;
        }
        state.down = !state.down;
        state.streak = 0;
        Some(!state.down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_in_both_directions() {
        let mut tracker = HealthTracker::new(Thresholds {
            unhealthy: 3,
            healthy: 2,
        });
        assert_eq!(tracker.record("a", false), None);
        assert_eq!(tracker.record("a", false), None);
        assert_eq!(
            tracker.record("a", true),
            None,
            "a pass resets the failure streak"
        );
        for _ in 0..2 {
            assert_eq!(tracker.record("a", false), None);
        }
        assert_eq!(tracker.record("a", false), Some(false));
        assert_eq!(tracker.record("a", true), None);
        assert_eq!(tracker.record("a", true), Some(true));
        assert_eq!(tracker.record("a", true), None);
    }
}
