//! The progress bar shown on a terminal while a run goes on (stderr, indicatif).
//!
//! Invariant: nothing is drawn when stderr is not a terminal or `--no-progress` is given, so
//! `--json` output and logs stay clean; the bar only reads a shared counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar driven by a shared operation counter.
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts a bar over `total` operations, or over `duration` when no total is known.
    pub fn start(
        label: &str,
        enabled: bool,
        total: Option<u64>,
        duration: Option<Duration>,
        done: Arc<AtomicU64>,
    ) -> Progress {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let (len, by_time) = match (total, duration) {
            (Some(t), _) => (t, false),
            (None, Some(d)) => (d.as_millis() as u64, true),
            (None, None) => (0, false),
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let template = if by_time {
            "{prefix} [{elapsed_precise}] {wide_bar} {msg}"
        } else {
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        bar.set_prefix(label.to_string());
        let task = if bar.is_hidden() {
            None
        } else {
            let bar2 = bar.clone();
            let started = std::time::Instant::now();
            Some(tokio::spawn(async move {
                loop {
                    let n = done.load(Ordering::Relaxed);
                    if by_time {
                        bar2.set_position(started.elapsed().as_millis() as u64);
                        bar2.set_message(format!("{n} ops"));
                    } else {
                        bar2.set_position(n);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }))
        };
        Progress { bar, task }
    }

    /// Removes the bar.
    pub fn finish(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
