//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! filled from each host's permutation, weighted by giving heavier hosts
//! more turns.

use crate::hash::hash64;

/// A prime table size, as Envoy uses by default.
pub const TABLE_SIZE: usize = 65_537;

pub struct Maglev {
    table: Vec<usize>,
}

impl Maglev {
    pub fn new(hosts: &[(String, u32)]) -> Self {
        if hosts.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let m = TABLE_SIZE as u64;
        let perms: Vec<(u64, u64)> = hosts
            .iter()
            .map(|(key, _)| {
                let offset = hash64(format!("{key}#offset").as_bytes()) % m;
                let skip = hash64(format!("{key}#skip").as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = hosts.iter().map(|(_, w)| *w).max().unwrap_or(1).max(1);
        let mut next = vec![0u64; hosts.len()];
        let mut credit = vec![0u64; hosts.len()];
        let mut table = vec![usize::MAX; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for (i, (_, weight)) in hosts.iter().enumerate() {
                // Weighted turns: a host takes a slot once its credit reaches the max weight.
                credit[i] += u64::from(*weight);
                if credit[i] < u64::from(max_weight) {
                    continue;
                }
                credit[i] -= u64::from(max_weight);
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == usize::MAX {
                        table[slot] = i;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize])
    }
}
