//! Ring hash (ketama-style): each host owns points on a ring in proportion to
//! its weight; a key goes to the first point at or after its hash.

use crate::hash::hash64;

pub struct Ring {
    points: Vec<(u64, usize)>,
}

/// Ring points per unit of (normalised) weight.
const POINTS_PER_WEIGHT: usize = 160;

impl Ring {
    /// `hosts`: (stable key, weight) per host index.
    pub fn new(hosts: &[(String, u32)]) -> Self {
        let max_weight = hosts.iter().map(|(_, w)| *w).max().unwrap_or(1).max(1);
        let mut points = Vec::new();
        for (index, (key, weight)) in hosts.iter().enumerate() {
            let count =
                (POINTS_PER_WEIGHT as u64 * u64::from(*weight) / u64::from(max_weight)).max(1);
            for i in 0..count {
                points.push((hash64(format!("{key}_{i}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let at = self.points.partition_point(|(point, _)| *point < hash);
        Some(self.points[at % self.points.len()].1)
    }
}
