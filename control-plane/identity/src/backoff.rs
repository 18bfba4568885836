//! How a workload (meridian-agent, meridian-proxy) waits before dialling the
//! control plane again: exponential from 100 ms to 5 s, and back to the
//! start once a stream has worked, so a control plane that restarts after a
//! long outage is not then waited on for the maximum at every later blip.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the one after, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Waits out the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// A stream worked: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn doubles_to_the_maximum_and_starts_over_after_a_good_stream() {
        let mut backoff = Backoff::default();
        let mut waited = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            backoff.wait().await;
            waited.push(started.elapsed().as_millis());
        }
        assert_eq!(waited, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        let started = Instant::now();
        backoff.wait().await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }
}
