//! How often an agent's source status may become a Raft entry: at most once
//! per interval. A change that comes sooner is held back and written at the
//! interval's end (the newest state wins); a status that went out with a
//! batch counts. So a source that flaps cannot fill every node's log.

use std::time::{Duration, Instant};

/// One status write per this long, per agent stream.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct StatusPacer {
    interval: Duration,
    last: Option<Instant>,
    held_back: bool,
}

impl StatusPacer {
    pub fn new(interval: Duration) -> Self {
        StatusPacer {
            interval,
            last: None,
            held_back: false,
        }
    }

    /// A status change at `now`: true if it may be written now; if not, it
    /// is held back until [`StatusPacer::due`].
    pub fn offer(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.held_back = true;
            return false;
        }
        self.written(now);
        true
    }

    /// When a held-back change is to be written, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.last
            .filter(|_| self.held_back)
            .map(|last| last + self.interval)
    }

    /// The status went out at `now` (when due, or with a batch).
    pub fn written(&mut self, now: Instant) {
        self.last = Some(now);
        self.held_back = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_interval_and_the_rest_held_back() {
        let mut pacer = StatusPacer::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(pacer.offer(t0));
        assert_eq!(pacer.due(), None);
        // A flapping source: ten changes within the second write nothing now.
        for ms in 1..=10 {
            assert!(!pacer.offer(t0 + Duration::from_millis(ms * 50)));
        }
        assert_eq!(pacer.due(), Some(t0 + Duration::from_secs(1)));
        pacer.written(t0 + Duration::from_secs(1));
        assert_eq!(pacer.due(), None);
        assert!(pacer.offer(t0 + Duration::from_millis(2_100)));
    }
}
