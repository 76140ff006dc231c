//! Short-lived child commands run to their end within a time bound, their output captured:
//! `ip` and commands inside a network namespace ([`crate::netns`]), `ballast snapshot restore`,
//! and servers a test expects to refuse to start. (`etcdctl` has its async runner,
//! [`crate::etcdctl`].)
//!
//! Invariants:
//! - The child never outlives the call: at the bound it is killed (SIGKILL) and reaped.
//! - Its stdout and stderr are read while it runs (one thread each), so a child that prints
//!   more than a pipe holds is not stalled. Their reading ends [`OUTPUT_GRACE`] after the child
//!   ends at the latest: a pipe a descendant of it still holds open is an error, not a hang.
//! - Its stdin is `/dev/null`: nothing waits for input.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the output may stay open after the child ended.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How often the child is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// What a bounded command did.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code; `None` when it was killed at its bound (or by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Killed at its bound.
    pub timed_out: bool,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything it printed: stdout, then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the receiver.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output where it stopped (the child is reaped either way).
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// Runs `cmd` (stdin, stdout and stderr set here) and waits for its end, killing it when
/// `bound` has passed ([`Run::timed_out`]). Errors: it could not be spawned or waited for, or
/// its output stayed open past [`OUTPUT_GRACE`].
pub fn run_bounded(cmd: &mut Command, bound: Duration) -> Result<Run> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out) = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {program}"))?
        {
            break (status, false);
        }
        if started.elapsed() >= bound {
            let _ = child.kill();
            break (
                child.wait().with_context(|| format!("reaping {program}"))?,
                true,
            );
        }
        std::thread::sleep(POLL);
    };
    let ended = Instant::now();
    let collect = |rx: mpsc::Receiver<Vec<u8>>| match rx
        .recv_timeout(OUTPUT_GRACE.saturating_sub(ended.elapsed()))
    {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => bail!("{program} ended but its output stayed open for {OUTPUT_GRACE:?}"),
    };
    Ok(Run {
        code: status.code(),
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
        elapsed: started.elapsed(),
        timed_out,
    })
}

/// [`run_bounded`] for a command that must end by itself: reaching `bound` is an error.
pub fn run_to_exit(cmd: &mut Command, bound: Duration) -> Result<Run> {
    let run = run_bounded(cmd, bound)?;
    if run.timed_out {
        bail!("{cmd:?} ran more than {bound:?}");
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn exit_code_and_both_outputs_are_kept() {
        let run = run_to_exit(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .expect("runs");
        assert_eq!(run.code, Some(3));
        assert!(!run.success() && !run.timed_out);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert_eq!(run.output(), "out\nerr\n");
    }

    #[test]
    fn output_larger_than_a_pipe_does_not_stall_the_child() {
        // 1 MiB on stdout and on stderr: far more than a pipe buffers.
        let script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2";
        let run = run_to_exit(&mut sh(script), Duration::from_secs(20)).expect("runs");
        assert!(run.success());
        assert_eq!((run.stdout.len(), run.stderr.len()), (1 << 20, 1 << 20));
    }

    #[test]
    fn a_child_past_its_bound_is_killed() {
        let bound = Duration::from_millis(300);
        let run = run_bounded(&mut sh("echo started; exec sleep 30"), bound).expect("runs");
        assert!(run.timed_out);
        assert_eq!(run.code, None);
        assert_eq!(run.stdout, "started\n");
        assert!(
            run.elapsed >= bound && run.elapsed < Duration::from_secs(10),
            "{run:?}"
        );
        let err = run_to_exit(&mut sh("exec sleep 30"), bound).expect_err("bounded");
        assert!(err.to_string().contains("ran more than"), "{err}");
    }

    #[test]
    fn output_held_open_by_a_descendant_is_an_error_not_a_hang() {
        // The shell exits at once; the sleep it started in the background keeps stdout open.
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'", pid_file.display());
        let started = Instant::now();
        let result = run_bounded(&mut sh(&script), Duration::from_secs(10));
        let waited = started.elapsed();
        let pid = std::fs::read_to_string(&pid_file).expect("the pid of the sleep");
        let _ = Command::new("kill").arg(pid.trim()).status();
        let err = result.expect_err("output stays open");
        assert!(err.to_string().contains("output stayed open"), "{err}");
        assert!(
            waited >= OUTPUT_GRACE && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let err = run_bounded(
            &mut Command::new("/nonexistent/ballast-conformance-no-such-program"),
            Duration::from_secs(5),
        )
        .expect_err("no such program");
        assert!(err.to_string().contains("spawning"), "{err}");
    }
}
