//! A linearizability checker for a key-value history, after Wing and Gong
//! (with Lowe's memoisation, as porcupine does): each key is a register,
//! checked on its own (linearizability is compositional). An operation has
//! an invocation time and, if the client saw its answer, a completion time;
//! a write whose answer was lost (a timeout, an error) may have taken effect
//! at any time after its invocation, or never.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Sets the key's value.
    Write(String),
    /// Read the key's value (`None`: absent).
    Read(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub key: String,
    pub kind: Kind,
    /// When the client sent it (nanoseconds since the history began).
    pub invoked: u64,
    /// When the client saw its answer; `None` if it never did.
    pub completed: Option<u64>,
}

/// Why a key's history is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub key: String,
    /// How many operations on that key the search could not order.
    pub operations: usize,
    /// No order exists (`false`: the search gave up, undecided).
    pub proven: bool,
}

/// How many states the search of one key may explore before it gives up:
/// a history that is not linearizable can take exponentially long to
/// refute, and a test must end.
const MAX_STATES: usize = 1_000_000;

/// Checks every key's history; the keys that are not linearizable.
pub fn check(history: &[Operation]) -> Vec<Anomaly> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        // A read without an answer says nothing.
        if matches!(op.kind, Kind::Read(_)) && op.completed.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| {
            let ops = bound_unanswered_writes(ops);
            let ops: Vec<&Operation> = ops.iter().collect();
            let verdict = register_is_linearizable(&ops);
            (verdict != Some(true)).then(|| Anomaly {
                key: key.to_string(),
                operations: ops.len(),
                proven: verdict == Some(false),
            })
        })
        .collect()
}

/// Writes without an answer are what makes the search explode: each may be
/// placed at any point after its invocation, or never. For a value written
/// once, two rewrites keep exactly the same verdict:
///
/// - if no read saw the value, the write is left out: in any order that
///   places it, no read falls between it and the next write (or the end),
///   so the order without it is as good;
/// - if reads saw it, it took effect before the first of them completed:
///   it gets that completion time, and must be placed like any answered write.
fn bound_unanswered_writes(ops: Vec<Operation>) -> Vec<Operation> {
    let mut writes: HashMap<&str, usize> = HashMap::new();
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for op in &ops {
        match (&op.kind, op.completed) {
            (Kind::Write(v), _) => *writes.entry(v).or_default() += 1,
            (Kind::Read(Some(v)), Some(done)) => {
                let seen = first_seen.entry(v).or_insert(done);
                *seen = (*seen).min(done);
            }
            _ => {}
        }
    }
    let bounded: Vec<Option<Operation>> = ops
        .iter()
        .map(|op| match (&op.kind, op.completed) {
            (Kind::Write(v), None) if writes.get(v.as_str()) == Some(&1) => {
                first_seen.get(v.as_str()).map(|&seen| Operation {
                    completed: Some(seen),
                    ..op.clone()
                })
            }
            _ => Some(op.clone()),
        })
        .collect();
    bounded.into_iter().flatten().collect()
}

/// One register's history: is there an order of its operations, each
/// placed between its invocation and completion, in which every read sees
/// the latest write before it? Writes without an answer may be left out.
/// A depth-first search with an explicit stack (histories run to thousands
/// of operations), remembering the states already explored. `None` when
/// it explored `MAX_STATES` states without deciding.
fn register_is_linearizable(ops: &[&Operation]) -> Option<bool> {
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let is_placed = |placed: &[u64], i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
    let flip = |placed: &mut [u64], i: usize| placed[i / 64] ^= 1 << (i % 64);
    let must_place = ops.iter().filter(|op| op.completed.is_some()).count();
    let mut placed_count = 0;
    let mut value: Option<String> = None;
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Each level: the operation placed there and the value before it.
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    // The next candidate to try at the current level; 0 when first arriving.
    let mut next = 0;
    loop {
        if placed_count == must_place {
            return Some(true);
        }
        if seen.len() > MAX_STATES {
            return None;
        }
        let arrived = next == 0;
        let fresh = !arrived || seen.insert((placed.clone(), value.clone()));
        let mut chosen = None;
        if fresh {
            // Only an operation invoked before every unplaced one completed can go next.
            let horizon = (0..ops.len())
                .filter(|&i| !is_placed(&placed, i))
                .filter_map(|i| ops[i].completed)
                .min()
                .unwrap_or(u64::MAX);
            chosen = (next..ops.len()).find_map(|i| {
                if is_placed(&placed, i) || ops[i].invoked > horizon {
                    return None;
                }
                match &ops[i].kind {
                    Kind::Write(v) => Some((i, Some(v.clone()))),
                    Kind::Read(seen) if *seen == value => Some((i, value.clone())),
                    Kind::Read(_) => None,
                }
            });
        }
        match chosen {
            Some((i, after)) => {
                flip(&mut placed, i);
                if ops[i].completed.is_some() {
                    placed_count += 1;
                }
                stack.push((i, std::mem::replace(&mut value, after)));
                next = 0;
            }
            None => {
                // Back up one level and try its next candidate.
                let Some((i, before)) = stack.pop() else {
                    return Some(false);
                };
                flip(&mut placed, i);
                if ops[i].completed.is_some() {
                    placed_count -= 1;
                }
                value = before;
                next = i + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: &str, invoked: u64, completed: Option<u64>) -> Operation {
        Operation {
            key: "k".into(),
            kind: Kind::Write(value.into()),
            invoked,
            completed,
        }
    }

    fn read(value: Option<&str>, invoked: u64, completed: u64) -> Operation {
        Operation {
            key: "k".into(),
            kind: Kind::Read(value.map(str::to_string)),
            invoked,
            completed: Some(completed),
        }
    }

    #[test]
    fn accepts_concurrent_operations_in_some_order() {
        // The read overlaps the write: it may see either value.
        let history = [
            write("a", 0, Some(10)),
            write("b", 20, Some(40)),
            read(Some("a"), 25, 30),
            read(Some("b"), 50, 60),
        ];
        assert!(check(&history).is_empty());
    }

    #[test]
    fn rejects_a_stale_read_and_a_lost_write() {
        // b completed before the read began; the read still saw a.
        let stale = [
            write("a", 0, Some(10)),
            write("b", 20, Some(30)),
            read(Some("a"), 40, 50),
        ];
        assert_eq!(check(&stale).len(), 1);
        // An acknowledged write that no later read sees.
        let lost = [write("a", 0, Some(10)), read(None, 20, 30)];
        assert_eq!(check(&lost).len(), 1);
        // A value never written.
        let invented = [read(Some("z"), 0, 10)];
        assert_eq!(check(&invented).len(), 1);
    }

    #[test]
    fn a_write_without_an_answer_may_or_may_not_have_happened() {
        let took_effect = [write("a", 0, None), read(Some("a"), 50, 60)];
        assert!(check(&took_effect).is_empty());
        let did_not = [write("a", 0, None), read(None, 50, 60)];
        assert!(check(&did_not).is_empty());
        // But not un-happen: once seen, it stays.
        let flicker = [
            write("a", 0, None),
            read(Some("a"), 50, 60),
            read(None, 70, 80),
        ];
        assert_eq!(check(&flicker).len(), 1);
        // Seen, it took effect before the read that saw it: not after a
        // write that the read preceded... nor between b and a later read of b.
        let seen_then_overwritten = [
            write("a", 0, None),
            write("b", 0, Some(10)),
            read(Some("a"), 20, 30),
            read(Some("b"), 40, 50),
        ];
        assert_eq!(check(&seen_then_overwritten).len(), 1);
    }

    #[test]
    fn many_writes_without_an_answer_are_decided() {
        // Forty writes that timed out during a partition, all overlapping,
        // read by nobody, between acknowledged writes and reads: every
        // subset of them is a state of the plain search, beyond its limit.
        let mut history = vec![write("x", 0, Some(5))];
        for i in 0..40 {
            history.push(write(&format!("lost-{i}"), 10 + i, None));
        }
        for i in 0..40 {
            history.push(read(Some("x"), 100 + 10 * i, 105 + 10 * i));
        }
        history.push(write("y", 600, Some(610)));
        history.push(read(Some("y"), 620, 630));
        assert!(check(&history).is_empty());
        // One of them read: it happened, after x (read until 495) and
        // before y (acknowledged at 610, then read).
        history.push(read(Some("lost-7"), 500, 510));
        assert!(check(&history).is_empty());
        // Read after y was: not linearizable, and decided.
        history.push(read(Some("lost-7"), 640, 650));
        assert_eq!(
            check(&history),
            vec![Anomaly {
                key: "k".into(),
                operations: 46,
                proven: true
            }]
        );
    }
}
