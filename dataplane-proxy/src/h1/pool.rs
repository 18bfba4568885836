//! Idle upstream connections of one worker, by the authority they were
//! made to: the most recently used first (LIFO keeps few connections warm
//! and lets the rest age out), at most `MAX_IDLE_PER_HOST` each, none kept
//! longer than `IDLE_TIMEOUT`. Generic over what is kept, so the policy is
//! tested without sockets; the caller says whether a kept one is still
//! usable when it is taken.

use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most idle connections kept per upstream authority: as many as a
/// burst of concurrent requests needs (Envoy's default connection limit),
/// so a steady load of hundreds of streams does not close and reopen them.
pub const MAX_IDLE_PER_HOST: usize = 1024;

/// A worker's pool: its lock is taken only by that worker's thread (and
/// its reaper), so it is never contended.
pub struct Pool<T> {
    idle: Mutex<HashMap<Box<str>, Idle<T>>>,
}

/// The connections kept for one authority, oldest first, each with when it
/// was returned.
type Idle<T> = VecDeque<(Instant, T)>;

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(HashMap::default()),
        }
    }
}

impl<T> Pool<T> {
    /// The most recently returned connection to `key` that `usable` accepts;
    /// expired and unusable ones met on the way are dropped.
    pub fn take(
        &self,
        key: &str,
        now: Instant,
        mut usable: impl FnMut(&mut T) -> bool,
    ) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((since, mut kept)) = list.pop_back() {
            if now.saturating_duration_since(since) >= IDLE_TIMEOUT {
                // The rest are older still.
                list.clear();
                break;
            }
            if usable(&mut kept) {
                return Some(kept);
            }
        }
        idle.remove(key);
        None
    }

    /// Keeps `conn` for `key`, dropping the oldest beyond the cap.
    pub fn put(&self, key: &str, conn: T, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = match idle.get_mut(key) {
            Some(list) => list,
            None => idle.entry(key.into()).or_default(),
        };
        if list.len() >= MAX_IDLE_PER_HOST {
            list.pop_front();
        }
        list.push_back((now, conn));
    }

    /// Drops every connection idle for `IDLE_TIMEOUT` or longer.
    pub fn reap(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            while list
                .front()
                .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= IDLE_TIMEOUT)
            {
                list.pop_front();
            }
            !list.is_empty()
        });
    }

    /// How many connections are kept, for every authority.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_returned_is_taken_first_and_only_for_its_authority() {
        let pool = Pool::default();
        let now = Instant::now();
        pool.put("a:80", 1, now);
        pool.put("a:80", 2, now);
        pool.put("b:80", 3, now);
        assert_eq!(pool.take("a:80", now, |_| true), Some(2));
        assert_eq!(pool.take("a:80", now, |_| true), Some(1));
        assert_eq!(pool.take("a:80", now, |_| true), None);
        assert_eq!(pool.take("c:80", now, |_| true), None);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn unusable_and_expired_connections_are_dropped_when_met() {
        let pool = Pool::default();
        let start = Instant::now();
        pool.put("a:80", 1, start);
        pool.put("a:80", 2, start + Duration::from_secs(30));
        pool.put("a:80", 3, start + Duration::from_secs(40));
        // 3 was closed by its upstream; 2 is the next most recent.
        let later = start + Duration::from_secs(45);
        assert_eq!(pool.take("a:80", later, |c| *c != 3), Some(2));
        assert_eq!(pool.len(), 1);
        // 1 is past its time.
        assert_eq!(pool.take("a:80", start + IDLE_TIMEOUT, |_| true), None);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_cap_drops_the_oldest_and_reaping_drops_the_expired() {
        let pool = Pool::default();
        let start = Instant::now();
        let later = start + Duration::from_secs(30);
        // The first half returned at `start`, the rest 30 s later.
        let total = MAX_IDLE_PER_HOST + 2;
        for n in 0..total {
            pool.put("a:80", n, if n < total / 2 { start } else { later });
        }
        pool.put("b:80", 99, later);
        // The two oldest made room.
        assert_eq!(pool.len(), MAX_IDLE_PER_HOST + 1);
        assert_eq!(pool.take("a:80", later, |_| true), Some(total - 1));
        pool.reap(start + IDLE_TIMEOUT);
        assert_eq!(pool.len(), total - total / 2 - 1 + 1);
        pool.reap(later + IDLE_TIMEOUT);
        assert_eq!(pool.len(), 0);
    }
}
