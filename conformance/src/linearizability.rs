//! A linearizability checker for the etcd KV API, for histories recorded by the conformance
//! tests (one server now, a cluster under failover and partitions later).
//!
//! - [`history`]: operations (client, invoke and return times, [`Call`], [`Outcome`]), unknown
//!   outcomes, printing.
//! - [`model`]: etcd's semantics: one global revision, per-key create/mod revision and version,
//!   txn compares.
//! - [`check`](mod@check): the Wing–Gong search with Lowe's memo, ordered by revision;
//!   bounded, answering [`Verdict::Unknown`] rather than guessing when the budget runs out.
//! - [`shrink`](mod@shrink): delta debugging of a rejected history down to a small core that
//!   fails the same way.
//! - [`record`]: a recorder that times tonic calls and files their results.
//!
//! [`report`] puts it together for a test: the verdict, and for a violation the shrunk cores
//! printed with what the model expected. Recording and checking, in a test:
//!
//! ```no_run
//! # async fn demo(server: &ballast_conformance::Server) -> anyhow::Result<()> {
//! use ballast_conformance::linearizability::{
//!     check, report, Budget, Recorder, ShrinkLimits, Verdict,
//! };
//! use ballast_proto::etcdserverpb::kv_client::KvClient;
//!
//! // The store's revision now; the keys the clients use are absent.
//! let recorder = Recorder::new(1);
//! let mut client = recorder.client(0, KvClient::new(server.channel().await?));
//! // Errors are filed too (as unknown outcomes unless etcd guarantees nothing happened).
//! let _ = client.put(b"/lin/x", b"1").await;
//! let _ = client.get(b"/lin/x").await;
//! let history = recorder.history();
//! let c = check(&history, &Budget::default());
//! let limits = ShrinkLimits::default();
//! assert!(c.verdict == Verdict::Linearizable, "{}", report(&history, &c, &limits));
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: a history is called linearizable only when the search found an order for every
//! operation with a known outcome; a core is printed only if it was itself checked and
//! rejected.

pub mod check;
pub mod history;
pub mod model;
pub mod record;
pub mod shrink;
#[cfg(test)]
mod tests;

pub use check::{check, check_mode, Budget, Check, Mode, Problem, Verdict, Violation};
pub use history::{
    Call, ClientId, Compare, CompareResult, CompareTarget, History, Kv, Nanos, OpResult, Operation,
    Outcome, TxnOp,
};
pub use record::{definitely_failed, Recorder, RecordingClient};
pub use shrink::{shrink, shrink_from_state, ShrinkLimits, Shrunk};

/// The verdict on `history` in words. For a violation: where the search got stuck and why;
/// the core from the store's state there ([`shrink_from_state`], with the ops that wrote the
/// live keys it shows); and the smallest sub-history from the empty store that fails the same
/// way ([`shrink()`], within `limits`).
pub fn report(history: &History, check: &Check, limits: &ShrinkLimits) -> String {
    let mut clients: Vec<_> = history.ops.iter().map(|o| o.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut out = format!(
        "{} operations from {} clients: {} ({} search steps, {:?})",
        history.ops.len(),
        clients.len(),
        check.verdict,
        check.states,
        check.elapsed
    );
    let Verdict::NotLinearizable(v) = &check.verdict else {
        return out;
    };
    out.push_str(&format!(
        "\n\nin the full history, {}\n",
        v.describe(history)
    ));

    let near = shrink_from_state(history, v, limits);
    out.push_str(&format!(
        "\ncore from the store as the placed operations left it: {} operation(s){}:\n{}",
        near.history.ops.len(),
        if near.minimal {
            ""
        } else {
            " (not fully shrunk)"
        },
        render_with_ids(&near)
    ));
    for (key, kv) in &near.history.initial_keys {
        let writer = history
            .ops
            .iter()
            .position(|o| o.outcome.changed() && o.outcome.revision() == Some(kv.mod_revision));
        if let Some(w) = writer {
            out.push_str(&format!(
                "  {} was last written by op {w}: {}\n",
                history::Show(key),
                history.ops[w]
            ));
        }
    }

    let small = shrink(history, v, limits);
    let mode = match small.mode {
        Mode::Strict => "strict",
        Mode::GapTolerant => "gap-tolerant (revisions of dropped writes may be skipped)",
    };
    if small.minimal {
        out.push_str(&format!(
            "\nsmallest failing sub-history: {} of {} operations (no single operation can be \
             dropped; {} checks; rejected by the {mode} model):\n{}{}",
            small.history.ops.len(),
            history.ops.len(),
            small.checks,
            render_with_ids(&small),
            small.violation.describe(&small.history),
        ));
    } else {
        out.push_str(&format!(
            "\nno small failing sub-history within the shrink limits ({} checks; {} of {} \
             operations left)",
            small.checks,
            small.history.ops.len(),
            history.ops.len()
        ));
    }
    out
}

/// The core's operations, labelled by their index in the core and in the full history.
fn render_with_ids(shrunk: &Shrunk) -> String {
    shrunk
        .history
        .render_labeled(&|i| format!("#{i} (op {})", shrunk.original[i]))
}

/// Panics with [`report`] unless `history` is linearizable.
pub fn assert_linearizable(history: &History, budget: &Budget) -> Check {
    let c = check(history, budget);
    if c.verdict != Verdict::Linearizable {
        panic!("{}", report(history, &c, &ShrinkLimits::default()));
    }
    c
}

/// [`assert_linearizable`], returning a line of figures for a test to print: operations,
/// unknown outcomes, time and search steps.
pub fn assert_linearizable_figures(history: &History, budget: &Budget) -> String {
    let unknown = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    let c = assert_linearizable(history, budget);
    format!(
        "history of {} ops ({unknown} unknown outcomes): {} in {:?} ({} search steps)",
        history.ops.len(),
        c.verdict,
        c.elapsed,
        c.states
    )
}
