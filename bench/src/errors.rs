//! Failed operations counted by gRPC status code name (`Unavailable`, `DeadlineExceeded`, ...).
//!
//! Invariant: `total()` equals the number of `add` calls; names are tonic's `Code` names, plus
//! the few client-side failure names this crate defines (`Timeout`, `RetriesExhausted`).

use std::collections::BTreeMap;

use tonic::{Code, Status};

/// Client-side: the per-request deadline passed before the server answered.
pub const TIMEOUT: &str = "Timeout";
/// Client-side: a compare-and-swap loop gave up after its retry bound.
pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";

/// Error counts by name.
pub type ErrorCounts = BTreeMap<String, u64>;

/// The name an error is counted under.
pub fn code_name(status: &Status) -> String {
    match status.code() {
        Code::Unknown if status.message() == RETRIES_EXHAUSTED => RETRIES_EXHAUSTED.to_string(),
        code => format!("{code:?}"),
    }
}

/// Adds one error named `name`.
pub fn add(counts: &mut ErrorCounts, name: &str) {
    *counts.entry(name.to_string()).or_default() += 1;
}

/// Adds every count of `other` into `into`.
pub fn merge(into: &mut ErrorCounts, other: &ErrorCounts) {
    for (name, n) in other {
        *into.entry(name.clone()).or_default() += n;
    }
}

/// Sum of all counts.
pub fn total(counts: &ErrorCounts) -> u64 {
    counts.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_totals() {
        let mut c = ErrorCounts::new();
        add(&mut c, &code_name(&Status::unavailable("x")));
        add(&mut c, &code_name(&Status::unavailable("y")));
        add(&mut c, &code_name(&Status::unknown(RETRIES_EXHAUSTED)));
        let mut d = ErrorCounts::new();
        add(&mut d, TIMEOUT);
        merge(&mut c, &d);
        assert_eq!(c.get("Unavailable"), Some(&2));
        assert_eq!(c.get(RETRIES_EXHAUSTED), Some(&1));
        assert_eq!(c.get(TIMEOUT), Some(&1));
        assert_eq!(total(&c), 4);
    }
}
