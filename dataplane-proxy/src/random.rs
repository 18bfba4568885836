//! Uniform random numbers for the request path (a weighted route's
//! cluster, a host by weight, priority or P2C): each thread has its own
//! generator (wyrand), seeded from the OS's randomness, so one worker's
//! picks write no memory another worker reads.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64));
}

/// A uniform random number.
pub fn next() -> u64 {
    STATE.with(|state| {
        let x = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(x);
        let product = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        (product >> 64) as u64 ^ product as u64
    })
}

/// Three, for a host pick.
pub fn three() -> [u64; 3] {
    [next(), next(), next()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_fall_evenly_into_buckets() {
        let mut buckets = [0u32; 16];
        for _ in 0..160_000 {
            buckets[(next() % 16) as usize] += 1;
        }
        // 10,000 expected in each; a 5% band is over 12 standard deviations.
        for (bucket, count) in buckets.iter().enumerate() {
            assert!(
                (9_500..=10_500).contains(count),
                "bucket {bucket}: {count} of 160,000"
            );
        }
        // And the high bits too (a weighted pick scales the whole range).
        let high = (0..100_000).filter(|_| next() >> 63 == 1).count();
        assert!(
            (48_000..=52_000).contains(&high),
            "{high} of 100,000 with the top bit set"
        );
    }

    #[test]
    fn each_thread_draws_its_own_sequence() {
        let here: Vec<u64> = (0..4).map(|_| next()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| next()).collect::<Vec<u64>>())
            .join()
            .expect("the other thread");
        assert_ne!(here, there);
    }
}
