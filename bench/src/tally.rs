//! Per-client counters a workload bumps during an operation (CAS conflicts, list pages, ...).
//!
//! Invariant: owned by one client task while a phase runs, merged by addition afterwards, so
//! no counter is shared or locked on the hot path.

use std::collections::BTreeMap;

/// Named counters.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    counters: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Tally) {
        for (k, v) in &other.counters {
            self.add(k, *v);
        }
    }

    /// The counters with owned names.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect()
    }
}
