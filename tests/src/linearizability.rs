//! A linearizability checker for a key-value history, after Wing and Gong
//! (with Lowe's memoisation, as porcupine does): each key is a register,
//! checked on its own (linearizability is compositional). An operation has
//! an invocation time and, if the client saw its answer, a completion time;
//! a write whose answer was lost (a timeout, an error) may have taken effect
//! at any time after its invocation, or never.

use std::collections::{BTreeMap, HashSet};

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

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub key: String,
    /// How many operations on that key the search could not order.
    pub operations: usize,
}

/// Checks every key's history; the keys that are not linearizable.
pub fn check(history: &[Operation]) -> Vec<Anomaly> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        // A read without an answer says nothing.
        if matches!(op.kind, Kind::Read(_)) && op.completed.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter(|(_, ops)| !register_is_linearizable(ops))
        .map(|(key, ops)| Anomaly {
            key: key.to_string(),
            operations: ops.len(),
        })
        .collect()
}

/// One register's history: is there an order of its operations, each
/// placed between its invocation and completion, in which every read sees
/// the latest write before it? Writes without an answer may be left out.
fn register_is_linearizable(ops: &[&Operation]) -> bool {
    let mut search = Search {
        ops,
        done: vec![false; ops.len()],
        seen: HashSet::new(),
    };
    search.from(None)
}

struct Search<'a> {
    ops: &'a [&'a Operation],
    /// Which operations are placed so far.
    done: Vec<bool>,
    /// (placed, value) states already explored without success.
    seen: HashSet<(Vec<bool>, Option<String>)>,
}

impl Search<'_> {
    fn from(&mut self, value: Option<String>) -> bool {
        // Done when every operation that completed is placed.
        if self
            .ops
            .iter()
            .zip(&self.done)
            .all(|(op, done)| *done || op.completed.is_none())
        {
            return true;
        }
        if !self.seen.insert((self.done.clone(), value.clone())) {
            return false;
        }
        // Only an operation invoked before every pending one completed can go next.
        let horizon = self
            .ops
            .iter()
            .zip(&self.done)
            .filter(|(_, done)| !**done)
            .filter_map(|(op, _)| op.completed)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            if self.done[i] || self.ops[i].invoked > horizon {
                continue;
            }
            let next = match &self.ops[i].kind {
                Kind::Write(v) => Some(Some(v.clone())),
                Kind::Read(seen) if *seen == value => Some(value.clone()),
                Kind::Read(_) => None,
            };
            if let Some(next) = next {
                self.done[i] = true;
                if self.from(next) {
                    return true;
                }
                self.done[i] = false;
            }
        }
        false
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
    }
}
