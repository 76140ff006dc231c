//! The process-level crash test: start a server on a data dir, run concurrent writers that
//! record every acknowledged write, `kill -9` the server at a random moment, start it again on
//! the same data dir, and check that every acknowledged write survived and that revisions never
//! went backwards. Repeated for many cycles on one data dir.
//!
//! What is checked after each restart (a [`Violation`] for each failure):
//! - Every write acknowledged in any earlier cycle is present with exactly its value and
//!   `mod_revision`. Most keys are written once (writer, cycle and sequence number are in the
//!   key), so any other answer is a loss or a corruption.
//! - A few hot keys are overwritten by every writer. A hot key's value must be one that was
//!   issued for it, with the revision it was acknowledged at (if it was), at or above the highest
//!   revision acknowledged for that key, and never a value already seen overwritten.
//! - Writes in flight at the kill (not acknowledged) may be present or absent, never partly: a
//!   txn writing two keys leaves both (at one revision) or neither. Once observed after a
//!   restart they count as durable; once observed absent (or overwritten) they must stay so.
//! - The header revision after a restart is at least the highest revision ever acknowledged or
//!   observed; writes acknowledged in a cycle got revisions above it, increasing per writer, and
//!   no two writes ever shared a revision.
//! - Nothing else appears under [`PREFIX`].
//! - Keys of cycles older than [`RETAIN_CYCLES`] are deleted by one DeleteRange per cycle, sent
//!   at a random moment (so it may be in flight at the kill). Acknowledged, it must have deleted
//!   exactly the keys known durable in its range, and they must stay absent; in flight, it is
//!   all or nothing. This bounds the live key set, so a 1,000-cycle run checks a window of about
//!   ten cycles each time instead of a scan that grows without end; each cycle also compacts at
//!   the revision it started from, so the server's history stays bounded too.
//! - Both servers run with `--snapshot-count=1000`, so the kills also land during snapshots
//!   (Ballast's checkpoints, taken in steps while writes and compactions go on).
//!
//! Invariants of the harness: one data dir for the whole run; every RPC, restart and phase is
//! bounded in time; the server process is killed and reaped on every exit path (its
//! [`Server`]'s `Drop`); the seed decides the op mix, value sizes and kill delays, so a failure
//! is reported with the seed (kill timing relative to the server's progress is not replayable).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, CompactionRequest, Compare, DeleteRangeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::server::{Kind, Server};

/// Every key the test writes starts with this. It is one Kubernetes-style resource prefix, so
/// with several shards every key lives in one shard (all the revision checks below hold within
/// a shard), and that shard is not shard 0 with 2, 3 or 4 shards (FNV-1a of `crash-test` gives
/// the last one; tested below): the test then checks a shard other than the one holding the
/// lease table and metadata, while shard 0 only receives the router's revision alignment.
pub const PREFIX: &str = "/registry/crash-test/";
/// Keys written once each: `<PREFIX>k/c<cycle>/w<writer>/s<seq>[/a|/b]`.
const UNIQUE_PREFIX: &str = "/registry/crash-test/k/";
/// Keys every writer overwrites: `<PREFIX>hot/<n>`.
const HOT_PREFIX: &str = "/registry/crash-test/hot/";
/// How many hot keys.
const HOT_KEYS: usize = 4;
/// Keys written in cycle `c` are deleted in cycle `c + RETAIN_CYCLES` (see the module doc).
const RETAIN_CYCLES: u64 = 10;
/// Default concurrent writers (`BALLAST_CRASH_WRITERS`).
const DEFAULT_WRITERS: usize = 8;
/// The kill comes this long after the writers start, drawn uniformly from the seed.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 50..=700;
/// Bound of one write or one Range page.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of one verification (a paginated scan of every key written so far).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long writers may take to notice the kill and return.
const WRITERS_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Keys per Range page in the verification scan.
const SCAN_PAGE: i64 = 2000;
/// Violations of each kind quoted in a report (all are counted).
const REPORT_EXAMPLES: usize = 10;
/// A progress line every this many cycles (seen with `--nocapture`).
const PROGRESS_EVERY: u64 = 50;

/// What a run does; [`CrashConfig::from_env`] reads it from the environment.
#[derive(Debug, Clone)]
pub struct CrashConfig {
    /// How many times the server is killed (each kill is followed by a restart and a check).
    pub cycles: u64,
    /// Decides the op mix, value sizes and kill delays.
    pub seed: u64,
    /// Concurrent writers per cycle, each on its own connection.
    pub writers: usize,
}

impl CrashConfig {
    /// `BALLAST_CRASH_CYCLES` (else `default_cycles`), `BALLAST_CRASH_SEED` (else drawn from the
    /// clock), `BALLAST_CRASH_WRITERS` (else 8).
    pub fn from_env(default_cycles: u64) -> Result<CrashConfig> {
        fn parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| anyhow!("{name}={v:?} is not a number")),
                Err(_) => Ok(None),
            }
        }
        let seed = match parse::<u64>("BALLAST_CRASH_SEED")? {
            Some(s) => s,
            None => {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64
                    % 1_000_000_000
            }
        };
        let cfg = CrashConfig {
            cycles: parse("BALLAST_CRASH_CYCLES")?.unwrap_or(default_cycles),
            seed,
            writers: parse("BALLAST_CRASH_WRITERS")?.unwrap_or(DEFAULT_WRITERS),
        };
        if cfg.cycles == 0 || cfg.writers == 0 {
            bail!("BALLAST_CRASH_CYCLES and BALLAST_CRASH_WRITERS must be at least 1");
        }
        Ok(cfg)
    }
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default)]
pub struct CrashSummary {
    /// Cycles completed: kill, restart and a full check that passed.
    pub cycles: u64,
    /// Write ops (puts and txns) acknowledged over the run.
    pub writes_acked: u64,
    /// Ops whose outcome was unknown at a kill, found applied after the restart.
    pub in_flight_applied: u64,
    /// Ops whose outcome was unknown at a kill, found not applied.
    pub in_flight_absent: u64,
    /// Key checks made: each durable key, once per restart.
    pub key_checks: u64,
    /// Distinct keys known durable at the end.
    pub durable_keys: u64,
    /// Keys deleted by the DeleteRange of old cycles (acknowledged or found applied).
    pub keys_retired: u64,
    /// Highest revision acknowledged or observed.
    pub max_revision: i64,
    /// Writes that failed before the kill of their cycle (outcome then unknown).
    pub errors_before_kill: u64,
    /// The first such error, for the report.
    pub first_error_before_kill: Option<String>,
    /// Restart durations (start to first answered Range).
    pub restart_total: Duration,
    pub restart_max: Duration,
    /// Verification durations.
    pub verify_total: Duration,
    /// Whole run.
    pub elapsed: Duration,
}

impl fmt::Display for CrashSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / self.cycles.max(1) as f64;
        write!(
            f,
            "{} cycles in {:.1} s ({:.0} ms per cycle: restart avg {:.0} ms, max {:.0} ms; verify avg \
             {:.0} ms); {} writes acknowledged, {} in-flight writes found applied and {} absent \
             after restarts; {} key checks, {} keys retired, {} durable keys at the end; max \
             revision {}; {} write errors before a kill",
            self.cycles,
            self.elapsed.as_secs_f64(),
            per(self.elapsed),
            per(self.restart_total),
            self.restart_max.as_secs_f64() * 1000.0,
            per(self.verify_total),
            self.writes_acked,
            self.in_flight_applied,
            self.in_flight_absent,
            self.key_checks,
            self.keys_retired,
            self.durable_keys,
            self.max_revision,
            self.errors_before_kill,
        )?;
        if let Some(e) = &self.first_error_before_kill {
            write!(f, " (first: {e})")?;
        }
        Ok(())
    }
}

/// One broken promise found by the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged (or already observed) write is missing after a restart.
    Lost { key: String, mod_revision: i64 },
    /// A durable key is present with another value or revision.
    Changed {
        key: String,
        expected_revision: i64,
        actual_revision: i64,
        value_ok: bool,
    },
    /// A hot key is older than its newest acknowledged write, or carries a value never issued,
    /// already overwritten, or at a revision other than its acknowledged one.
    HotKey { key: String, detail: String },
    /// A txn in flight at the kill left one of its keys and not the other.
    Torn { detail: String },
    /// A key under the prefix that no write produced (or that was found absent before).
    Phantom { key: String, mod_revision: i64 },
    /// The header revision after a restart is below a revision acknowledged earlier.
    RevisionBackwards { header: i64, max_acked: i64 },
    /// An acknowledgement with a revision at or below an earlier one it must exceed, or shared
    /// with another write.
    RevisionOrder { detail: String },
    /// The DeleteRange of old cycles deleted another number of keys than were known durable.
    DeleteCount {
        end: String,
        deleted: i64,
        known: i64,
    },
}

impl Violation {
    fn kind(&self) -> &'static str {
        match self {
            Violation::Lost { .. } => "acknowledged writes lost",
            Violation::Changed { .. } => "durable keys changed",
            Violation::HotKey { .. } => "hot-key violations",
            Violation::Torn { .. } => "torn txns",
            Violation::Phantom { .. } => "phantom keys",
            Violation::RevisionBackwards { .. } => "revision went backwards",
            Violation::RevisionOrder { .. } => "revision order violations",
            Violation::DeleteCount { .. } => "wrong DeleteRange counts",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { key, mod_revision } => write!(
                f,
                "{key} acknowledged at revision {mod_revision} is missing after the restart"
            ),
            Violation::Changed {
                key,
                expected_revision,
                actual_revision,
                value_ok,
            } => {
                write!(
                f,
                "{key} acknowledged at revision {expected_revision} reads back at mod_revision \
                 {actual_revision}{}",
                if *value_ok { "" } else { " with a different value" }
            )
            }
            Violation::HotKey { key, detail } => write!(f, "{key}: {detail}"),
            Violation::Torn { detail } => write!(f, "{detail}"),
            Violation::Phantom { key, mod_revision } => write!(
                f,
                "{key} (mod_revision {mod_revision}) was never written or was seen absent before"
            ),
            Violation::RevisionBackwards { header, max_acked } => write!(
                f,
                "header revision {header} after the restart is below revision {max_acked}, the \
                 highest acknowledged before"
            ),
            Violation::RevisionOrder { detail } => write!(f, "{detail}"),
            Violation::DeleteCount {
                end,
                deleted,
                known,
            } => write!(
                f,
                "DeleteRange [{UNIQUE_PREFIX}, {end}) deleted {deleted} keys; {known} were known \
                 durable there"
            ),
        }
    }
}

/// One write op a writer issues.
#[derive(Debug, Clone)]
enum Write {
    /// Put of a fresh key.
    Put { key: String },
    /// Put of a hot key with a fresh value.
    HotPut { hot: usize, value: String },
    /// Txn putting two fresh keys (guarded by the first not existing).
    TxnPair { a: String, b: String },
    /// Txn putting a fresh key and a hot key.
    TxnHot {
        a: String,
        hot: usize,
        value: String,
    },
}

impl Write {
    fn hot_value(&self) -> Option<(usize, &str)> {
        match self {
            Write::HotPut { hot, value } | Write::TxnHot { hot, value, .. } => {
                Some((*hot, value.as_str()))
            }
            _ => None,
        }
    }
}

fn hot_key(n: usize) -> String {
    format!("{HOT_PREFIX}{n}")
}

/// The value of a fresh key: the key itself and a padding whose length (0..160) depends on the
/// key, so values vary in size but need not be stored by the model.
fn value_for(key: &str) -> Bytes {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut v = Vec::with_capacity(key.len() + 161);
    v.extend_from_slice(key.as_bytes());
    v.push(b'=');
    v.resize(v.len() + (h % 160) as usize, b'x');
    Bytes::from(v)
}

/// What became of one hot value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HotState {
    /// Issued, outcome unknown.
    Unknown,
    /// Acknowledged (or observed after a restart) at this revision.
    Durable(i64),
    /// Seen not current after a restart while its outcome was unknown: never applied, or
    /// overwritten; it must never be current again.
    Dead,
}

#[derive(Debug, Default)]
struct HotModel {
    values: HashMap<String, HotState>,
    /// The newest durable write: (revision, value).
    newest: Option<(i64, String)>,
}

impl HotModel {
    fn make_durable(&mut self, value: &str, revision: i64) {
        self.values
            .insert(value.to_string(), HotState::Durable(revision));
        if self.newest.as_ref().is_none_or(|(r, _)| *r < revision) {
            self.newest = Some((revision, value.to_string()));
        }
    }
}

/// Everything known about the store's contents.
#[derive(Debug, Default)]
struct Model {
    /// Fresh keys known durable → their `mod_revision`.
    durable: BTreeMap<String, i64>,
    hot: Vec<HotModel>,
    /// Ops whose outcome was unknown at the last kill.
    unknown: Vec<Write>,
    /// The end of a DeleteRange of old cycles whose outcome was unknown at the last kill.
    unknown_delete: Option<String>,
    /// The last compaction revision sent.
    compacted: i64,
    /// Revisions of durable write ops (each op once).
    revisions: HashSet<i64>,
    /// Highest revision acknowledged or observed.
    max_revision: i64,
}

impl Model {
    /// Records that `op` took effect at `revision` (acknowledged, or in flight and found
    /// applied): its keys must be present from now on.
    fn make_durable(&mut self, op: &Write, revision: i64) {
        match op {
            Write::Put { key } => {
                self.durable.insert(key.clone(), revision);
            }
            Write::TxnPair { a, b } => {
                self.durable.insert(a.clone(), revision);
                self.durable.insert(b.clone(), revision);
            }
            Write::HotPut { hot, value } => self.hot[*hot].make_durable(value, revision),
            Write::TxnHot { a, hot, value } => {
                self.durable.insert(a.clone(), revision);
                self.hot[*hot].make_durable(value, revision);
            }
        }
    }

    fn new() -> Model {
        Model {
            hot: (0..HOT_KEYS).map(|_| HotModel::default()).collect(),
            ..Default::default()
        }
    }

    /// Records a durable op's revision: it must be new.
    fn note_revision(&mut self, revision: i64, what: &str, out: &mut Vec<Violation>) {
        if !self.revisions.insert(revision) {
            out.push(Violation::RevisionOrder {
                detail: format!("{what} got revision {revision}, already given to another write"),
            });
        }
        self.max_revision = self.max_revision.max(revision);
    }
}

/// What one writer did in one cycle.
#[derive(Debug, Default)]
struct WriterLog {
    acked: Vec<(Write, i64)>,
    unknown: Vec<Write>,
    errors_before_kill: u64,
    first_error_before_kill: Option<String>,
}

/// The outcome of one request of the maintenance task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked { revision: i64, deleted: i64 },
    Unknown,
}

/// What the maintenance task did in one cycle.
#[derive(Debug, Default)]
struct MaintLog {
    /// The DeleteRange `[UNIQUE_PREFIX, end)` of old cycles, if it was sent.
    delete: Option<(String, Outcome)>,
    /// The compaction revision, if a Compact was sent.
    compacted: Option<i64>,
    errors_before_kill: u64,
    first_error_before_kill: Option<String>,
}

/// Both servers snapshot (Ballast: checkpoint) every this many applied entries, so kills land
/// before, during and after many of them, and Ballast's checkpoints take their changes in
/// several steps with writes applied in between (512 records or keys a step).
const SNAPSHOT_COUNT: &str = "--snapshot-count=1000";

/// Runs the crash test against a server of `kind`. On failure the error carries the seed, the
/// cycle and every violation (examples and counts), and the server's log has been printed.
pub async fn run(kind: Kind, cfg: &CrashConfig) -> Result<CrashSummary> {
    let started = Instant::now();
    let mut server = Server::start_with_args(kind, &[SNAPSHOT_COUNT]).await?;
    let mut model = Model::new();
    let mut summary = CrashSummary::default();
    let result = run_cycles(&mut server, cfg, &mut model, &mut summary).await;
    summary.elapsed = started.elapsed();
    summary.durable_keys = model.durable.len() as u64;
    summary.max_revision = model.max_revision;
    match result {
        Ok(()) => Ok(summary),
        Err(e) => {
            server.print_log();
            Err(anyhow!(
                "crash test against {} failed (BALLAST_CRASH_SEED={}, {} writers): {e:#}\n\
                 progress before the failure: {summary}",
                kind.label(),
                cfg.seed,
                cfg.writers,
            ))
        }
    }
}

async fn run_cycles(
    server: &mut Server,
    cfg: &CrashConfig,
    model: &mut Model,
    summary: &mut CrashSummary,
) -> Result<()> {
    let mut start_revision = verify(server, model, summary)
        .await
        .context("check of the fresh server")?;
    for cycle in 1..=cfg.cycles {
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let kill_after = Duration::from_millis(rng.gen_range(KILL_DELAY_MS));
        let maint = Maintenance {
            delay: Duration::from_millis(rng.gen_range(0..=kill_after.as_millis() as u64 + 100)),
            retire_end: (cycle > RETAIN_CYCLES)
                .then(|| format!("{UNIQUE_PREFIX}c{:05}/", cycle - RETAIN_CYCLES + 1)),
            compact_to: (start_revision > model.compacted.max(1)).then_some(start_revision),
        };
        let (logs, maint_log) = write_then_kill(server, cfg, cycle, kill_after, maint)
            .await
            .with_context(|| {
                format!("cycle {cycle}: writing, then kill -9 after {kill_after:?}")
            })?;
        let mut violations = absorb(model, logs, start_revision, summary);
        violations.extend(absorb_maintenance(
            model,
            maint_log,
            start_revision,
            summary,
        ));
        fail_on(&violations).with_context(|| format!("cycle {cycle}: acknowledgements"))?;
        let t = Instant::now();
        server
            .restart()
            .await
            .with_context(|| format!("cycle {cycle}: restart after kill -9"))?;
        let took = t.elapsed();
        summary.restart_total += took;
        summary.restart_max = summary.restart_max.max(took);
        start_revision = verify(server, model, summary).await.with_context(|| {
            format!("cycle {cycle}: check after kill -9 (at {kill_after:?}) and restart")
        })?;
        summary.cycles = cycle;
        if cycle % PROGRESS_EVERY == 0 && cycle < cfg.cycles {
            eprintln!(
                "crash test: {cycle}/{} cycles, {} writes acknowledged, max revision {}",
                cfg.cycles, summary.writes_acked, model.max_revision
            );
        }
    }
    Ok(())
}

/// What the maintenance task sends in one cycle, after `delay`.
#[derive(Debug, Clone)]
struct Maintenance {
    delay: Duration,
    /// Delete `[UNIQUE_PREFIX, retire_end)`: the keys of cycles older than [`RETAIN_CYCLES`].
    retire_end: Option<String>,
    /// Compact at this revision (the one the cycle started from).
    compact_to: Option<i64>,
}

/// Starts the writers and the maintenance task, kills the server after `kill_after`, and
/// collects their logs.
async fn write_then_kill(
    server: &mut Server,
    cfg: &CrashConfig,
    cycle: u64,
    kill_after: Duration,
    maint: Maintenance,
) -> Result<(Vec<WriterLog>, MaintLog)> {
    let killed = Arc::new(AtomicBool::new(false));
    let maint_task = tokio::spawn(maintenance(
        KvClient::new(server.channel().await?),
        maint,
        killed.clone(),
    ));
    let mut tasks = Vec::with_capacity(cfg.writers);
    for w in 0..cfg.writers {
        let kv = KvClient::new(server.channel().await?);
        let killed = killed.clone();
        let seed = cfg.seed ^ cycle.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ ((w as u64 + 1) << 48);
        tasks.push(tokio::spawn(writer(kv, cycle, w, seed, killed)));
    }
    tokio::time::sleep(kill_after).await;
    // Raised before the signal, so errors caused by the kill are not counted as errors before
    // it; writers only read it between ops, so no op is cut short by it.
    killed.store(true, Ordering::SeqCst);
    let status = server.kill9()?;
    // A server that exited by itself before the kill is a finding of its own.
    if status.code().is_some() {
        bail!("the server had exited before the kill ({status})");
    }
    let mut logs = Vec::with_capacity(tasks.len());
    let deadline = Instant::now() + WRITERS_STOP_TIMEOUT;
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, t).await {
            Ok(log) => logs.push(log.context("a writer task panicked")?),
            Err(_) => bail!("writers did not stop within {WRITERS_STOP_TIMEOUT:?} of the kill"),
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let maint_log = tokio::time::timeout(left, maint_task)
        .await
        .map_err(|_| anyhow!("the maintenance task did not stop within {WRITERS_STOP_TIMEOUT:?}"))?
        .context("the maintenance task panicked")?;
    Ok((logs, maint_log))
}

/// The maintenance task: after its delay, unless the server was killed meanwhile, the
/// DeleteRange of old cycles, then the compaction.
async fn maintenance(
    mut kv: KvClient<Channel>,
    maint: Maintenance,
    killed: Arc<AtomicBool>,
) -> MaintLog {
    let mut log = MaintLog::default();
    tokio::time::sleep(maint.delay).await;
    let note_error = |log: &mut MaintLog, err: String| {
        if !killed.load(Ordering::SeqCst) {
            log.errors_before_kill += 1;
            log.first_error_before_kill.get_or_insert(err);
        }
    };
    if let Some(end) = maint.retire_end {
        if killed.load(Ordering::SeqCst) {
            return log;
        }
        let req = DeleteRangeRequest {
            key: Bytes::from_static(UNIQUE_PREFIX.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            prev_kv: false,
        };
        let outcome = match tokio::time::timeout(RPC_TIMEOUT, kv.delete_range(req)).await {
            Ok(Ok(resp)) => {
                let resp = resp.into_inner();
                match resp.header {
                    Some(h) => Outcome::Acked {
                        revision: h.revision,
                        deleted: resp.deleted,
                    },
                    None => {
                        note_error(&mut log, "DeleteRange response without a header".into());
                        Outcome::Unknown
                    }
                }
            }
            Ok(Err(e)) => {
                note_error(&mut log, format!("DeleteRange: {e}"));
                Outcome::Unknown
            }
            Err(_) => {
                note_error(
                    &mut log,
                    format!("DeleteRange timed out after {RPC_TIMEOUT:?}"),
                );
                Outcome::Unknown
            }
        };
        log.delete = Some((end, outcome));
    }
    if let Some(revision) = maint.compact_to {
        if killed.load(Ordering::SeqCst) {
            return log;
        }
        log.compacted = Some(revision);
        let req = CompactionRequest {
            revision,
            physical: false,
        };
        match tokio::time::timeout(RPC_TIMEOUT, kv.compact(req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => note_error(&mut log, format!("Compact({revision}): {e}")),
            Err(_) => note_error(&mut log, format!("Compact timed out after {RPC_TIMEOUT:?}")),
        }
    }
    log
}

/// One writer: sequential writes until the kill, each recorded as acknowledged (with the
/// revision the server answered) or unknown (error or timeout).
async fn writer(
    mut kv: KvClient<Channel>,
    cycle: u64,
    w: usize,
    seed: u64,
    killed: Arc<AtomicBool>,
) -> WriterLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = WriterLog::default();
    let mut seq = 0u64;
    while !killed.load(Ordering::SeqCst) {
        seq += 1;
        let base = format!("{UNIQUE_PREFIX}c{cycle:05}/w{w:02}/s{seq:06}");
        let hot = rng.gen_range(0..HOT_KEYS);
        let hot_value = format!("c{cycle:05}/w{w:02}/s{seq:06}");
        let op = match rng.gen_range(0..100) {
            0..=49 => Write::Put { key: base },
            50..=69 => Write::TxnPair {
                a: format!("{base}/a"),
                b: format!("{base}/b"),
            },
            70..=84 => Write::HotPut {
                hot,
                value: hot_value,
            },
            _ => Write::TxnHot {
                a: format!("{base}/a"),
                hot,
                value: hot_value,
            },
        };
        match tokio::time::timeout(RPC_TIMEOUT, send(&mut kv, &op)).await {
            Ok(Ok(revision)) => log.acked.push((op, revision)),
            outcome => {
                let err = match outcome {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("timed out after {RPC_TIMEOUT:?}"),
                };
                log.unknown.push(op);
                if killed.load(Ordering::SeqCst) {
                    break;
                }
                log.errors_before_kill += 1;
                log.first_error_before_kill.get_or_insert(err);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    log
}

fn put_op(key: &str, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
            ..Default::default()
        })),
    }
}

/// A txn guarded by `a` not existing yet (always true for a fresh key), so a txn that reports
/// `succeeded: false` means the server saw a key it should not have.
fn fresh_txn(a: &str, ops: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: Bytes::copy_from_slice(a.as_bytes()),
            range_end: Bytes::new(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        }],
        success: ops,
        failure: Vec::new(),
    }
}

/// Sends one write; returns the revision it was acknowledged at.
async fn send(kv: &mut KvClient<Channel>, op: &Write) -> Result<i64> {
    let header = match op {
        Write::Put { key } => {
            kv.put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: value_for(key),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Write::HotPut { hot, value } => {
            kv.put(PutRequest {
                key: Bytes::from(hot_key(*hot)),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Write::TxnPair { a, b } => {
            let resp = kv
                .txn(fresh_txn(
                    a,
                    vec![put_op(a, value_for(a)), put_op(b, value_for(b))],
                ))
                .await?
                .into_inner();
            if !resp.succeeded {
                bail!("txn guarded by {a} not existing answered succeeded: false");
            }
            resp.header
        }
        Write::TxnHot { a, hot, value } => {
            let resp = kv
                .txn(fresh_txn(
                    a,
                    vec![
                        put_op(a, value_for(a)),
                        put_op(&hot_key(*hot), Bytes::copy_from_slice(value.as_bytes())),
                    ],
                ))
                .await?
                .into_inner();
            if !resp.succeeded {
                bail!("txn guarded by {a} not existing answered succeeded: false");
            }
            resp.header
        }
    };
    header
        .map(|h| h.revision)
        .ok_or_else(|| anyhow!("response without a header"))
}

/// Adds one cycle's acknowledgements and unknown ops to the model; checks their revisions.
fn absorb(
    model: &mut Model,
    logs: Vec<WriterLog>,
    start_revision: i64,
    summary: &mut CrashSummary,
) -> Vec<Violation> {
    let mut out = Vec::new();
    // Register every issued hot value first, so the check knows them whatever became of them.
    for log in &logs {
        for op in log.acked.iter().map(|(op, _)| op).chain(&log.unknown) {
            if let Some((hot, value)) = op.hot_value() {
                model.hot[hot]
                    .values
                    .insert(value.to_string(), HotState::Unknown);
            }
        }
    }
    for (w, log) in logs.into_iter().enumerate() {
        summary.errors_before_kill += log.errors_before_kill;
        if summary.first_error_before_kill.is_none() {
            summary.first_error_before_kill = log.first_error_before_kill;
        }
        let mut previous = start_revision;
        for (op, revision) in log.acked {
            summary.writes_acked += 1;
            if revision <= previous {
                out.push(Violation::RevisionOrder {
                    detail: format!(
                        "writer {w}: {op:?} acknowledged at revision {revision}, not above \
                         {previous} (the revision after the restart or the writer's previous \
                         write)"
                    ),
                });
            }
            previous = previous.max(revision);
            model.note_revision(revision, &format!("{op:?}"), &mut out);
            model.make_durable(&op, revision);
        }
        model.unknown.extend(log.unknown);
    }
    out
}

/// Adds the maintenance task's outcome to the model.
fn absorb_maintenance(
    model: &mut Model,
    log: MaintLog,
    start_revision: i64,
    summary: &mut CrashSummary,
) -> Vec<Violation> {
    let mut out = Vec::new();
    summary.errors_before_kill += log.errors_before_kill;
    if summary.first_error_before_kill.is_none() {
        summary.first_error_before_kill = log.first_error_before_kill;
    }
    if let Some(revision) = log.compacted {
        model.compacted = revision;
    }
    match log.delete {
        None => {}
        Some((end, Outcome::Unknown)) => model.unknown_delete = Some(end),
        Some((end, Outcome::Acked { revision, deleted })) => {
            let rest = model.durable.split_off(end.as_str());
            let removed = std::mem::replace(&mut model.durable, rest);
            let known = removed.len() as i64;
            summary.keys_retired += removed.len() as u64;
            if deleted != known {
                out.push(Violation::DeleteCount {
                    end: end.clone(),
                    deleted,
                    known,
                });
            }
            // A DeleteRange that deletes nothing makes no revision.
            if deleted > 0 {
                if revision <= start_revision {
                    out.push(Violation::RevisionOrder {
                        detail: format!(
                            "DeleteRange up to {end} acknowledged at revision {revision}, not \
                             above {start_revision}, the revision after the restart"
                        ),
                    });
                }
                model.note_revision(revision, &format!("DeleteRange up to {end}"), &mut out);
            }
        }
    }
    out
}

/// One key read back: (value, mod_revision).
type ReadBack = (Bytes, i64);

/// Reads every key under [`PREFIX`] at one revision (paginated); returns the header revision,
/// the hot keys and the fresh keys in key order.
async fn scan(server: &Server) -> Result<(i64, Vec<Option<ReadBack>>, Vec<(String, ReadBack)>)> {
    let mut kv = KvClient::new(server.channel().await?);
    let mut hot = vec![None; HOT_KEYS];
    let mut fresh = Vec::new();
    let mut key = Bytes::from_static(PREFIX.as_bytes());
    let mut range_end = PREFIX.as_bytes().to_vec();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let range_end = Bytes::from(range_end);
    let mut revision = 0;
    loop {
        let resp = tokio::time::timeout(
            RPC_TIMEOUT,
            kv.range(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                limit: SCAN_PAGE,
                revision,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| anyhow!("a Range page timed out after {RPC_TIMEOUT:?}"))?
        .context("Range")?
        .into_inner();
        if revision == 0 {
            revision = resp
                .header
                .ok_or_else(|| anyhow!("Range response without a header"))?
                .revision;
        }
        let Some(last) = resp.kvs.last() else { break };
        let mut next = last.key.to_vec();
        next.push(0);
        for kv in resp.kvs {
            let name = String::from_utf8_lossy(&kv.key).into_owned();
            let read = (kv.value, kv.mod_revision);
            match name
                .strip_prefix(HOT_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if n < HOT_KEYS => hot[n] = Some(read),
                _ => fresh.push((name, read)),
            }
        }
        if !resp.more {
            break;
        }
        key = Bytes::from(next);
    }
    // A store at revision 0 or 1 has no key written by the test; keep its header as is.
    Ok((revision, hot, fresh))
}

/// Checks the store against the model after a (re)start; resolves the unknown ops of the last
/// cycle. Returns the header revision.
async fn verify(server: &Server, model: &mut Model, summary: &mut CrashSummary) -> Result<i64> {
    let t = Instant::now();
    let (header, hot, fresh) = tokio::time::timeout(VERIFY_TIMEOUT, scan(server))
        .await
        .map_err(|_| anyhow!("the verification scan took over {VERIFY_TIMEOUT:?}"))??;
    let violations = check(model, header, &hot, &fresh, summary);
    summary.verify_total += t.elapsed();
    fail_on(&violations)?;
    Ok(header)
}

fn check(
    model: &mut Model,
    header: i64,
    hot: &[Option<ReadBack>],
    fresh: &[(String, ReadBack)],
    summary: &mut CrashSummary,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(end) = model.unknown_delete.take() {
        // All or nothing: the durable keys in its range are all present or all gone.
        let below = fresh.partition_point(|(k, _)| k.as_str() < end.as_str());
        let present = fresh[..below]
            .iter()
            .filter(|(k, _)| model.durable.contains_key(k))
            .count();
        let rest = model.durable.split_off(end.as_str());
        let known = model.durable.len();
        if present == 0 {
            summary.keys_retired += known as u64;
            summary.in_flight_applied += u64::from(known > 0);
            model.durable = rest;
        } else {
            model.durable.extend(rest);
            if present == known {
                summary.in_flight_absent += 1;
            } else {
                out.push(Violation::Torn {
                    detail: format!(
                        "in-flight DeleteRange [{UNIQUE_PREFIX}, {end}) left {present} of the \
                         {known} keys it covers"
                    ),
                });
            }
        }
    }
    summary.key_checks +=
        model.durable.len() as u64 + model.hot.iter().filter(|m| m.newest.is_some()).count() as u64;
    if header < model.max_revision {
        out.push(Violation::RevisionBackwards {
            header,
            max_acked: model.max_revision,
        });
    }
    let unknown = std::mem::take(&mut model.unknown);
    // Fresh keys of unknown ops → index of the op.
    let unknown_keys: HashMap<&str, usize> = unknown
        .iter()
        .enumerate()
        .flat_map(|(i, op)| {
            let keys: Vec<&str> = match op {
                Write::Put { key } => vec![key.as_str()],
                Write::TxnPair { a, b } => vec![a.as_str(), b.as_str()],
                Write::TxnHot { a, .. } => vec![a.as_str()],
                Write::HotPut { .. } => vec![],
            };
            keys.into_iter().map(move |k| (k, i))
        })
        .collect();
    let mut observed: HashMap<&str, i64> = HashMap::new();

    // Merge the scan (key order) with the durable keys (key order; ASCII, so the same order).
    let mut durable = model.durable.iter().peekable();
    for (key, (value, mod_revision)) in fresh {
        while let Some((k, r)) = durable.next_if(|(k, _)| k.as_str() < key.as_str()) {
            out.push(Violation::Lost {
                key: k.clone(),
                mod_revision: *r,
            });
        }
        let value_ok = *value == value_for(key);
        if let Some((_, r)) = durable.next_if(|(k, _)| k.as_str() == key.as_str()) {
            if *r != *mod_revision || !value_ok {
                out.push(Violation::Changed {
                    key: key.clone(),
                    expected_revision: *r,
                    actual_revision: *mod_revision,
                    value_ok,
                });
            }
        } else if let Some((k, _)) = unknown_keys.get_key_value(key.as_str()) {
            if !value_ok {
                out.push(Violation::Changed {
                    key: key.clone(),
                    expected_revision: *mod_revision,
                    actual_revision: *mod_revision,
                    value_ok,
                });
            }
            observed.insert(*k, *mod_revision);
        } else {
            out.push(Violation::Phantom {
                key: key.clone(),
                mod_revision: *mod_revision,
            });
        }
    }
    for (k, r) in durable {
        out.push(Violation::Lost {
            key: k.clone(),
            mod_revision: *r,
        });
    }

    // Hot keys against their durable values.
    for (n, read) in hot.iter().enumerate() {
        let key = hot_key(n);
        let m = &model.hot[n];
        match (read, &m.newest) {
            (None, Some((r, v))) => out.push(Violation::Lost {
                key: format!("{key} (value {v})"),
                mod_revision: *r,
            }),
            (None, None) => {}
            (Some((value, mod_revision)), newest) => {
                let value = String::from_utf8_lossy(value).into_owned();
                if let Some((r, v)) = newest {
                    if mod_revision < r {
                        out.push(Violation::HotKey {
                            key: key.clone(),
                            detail: format!(
                                "reads back value {value} at mod_revision {mod_revision}, older \
                                 than value {v} acknowledged at revision {r}"
                            ),
                        });
                    }
                }
                match m.values.get(&value) {
                    None => out.push(Violation::HotKey {
                        key: key.clone(),
                        detail: format!("value {value:?} was never written"),
                    }),
                    Some(HotState::Dead) => out.push(Violation::HotKey {
                        key: key.clone(),
                        detail: format!(
                            "value {value} (mod_revision {mod_revision}) came back after a \
                             restart had shown it overwritten or absent"
                        ),
                    }),
                    Some(HotState::Durable(r)) if r != mod_revision => {
                        out.push(Violation::HotKey {
                            key: key.clone(),
                            detail: format!(
                                "value {value} acknowledged at revision {r} reads back at \
                                 mod_revision {mod_revision}"
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }

    // Resolve the unknown ops: applied entirely or not at all.
    for op in &unknown {
        let applied = match op {
            Write::Put { key } => observed.get(key.as_str()).copied(),
            Write::TxnPair { a, b } => match (observed.get(a.as_str()), observed.get(b.as_str())) {
                (Some(ra), Some(rb)) if ra == rb => Some(*ra),
                (None, None) => None,
                (ra, rb) => {
                    out.push(Violation::Torn {
                        detail: format!(
                            "in-flight txn left {a} at {ra:?} and {b} at {rb:?} (both or \
                                 neither, at one revision)"
                        ),
                    });
                    continue;
                }
            },
            Write::HotPut { hot: n, value } => match &hot[*n] {
                Some((v, r)) if v.as_ref() == value.as_bytes() => Some(*r),
                _ => None,
            },
            Write::TxnHot { a, hot: n, value } => {
                let hot_now = hot[*n]
                    .as_ref()
                    .filter(|(v, _)| v.as_ref() == value.as_bytes())
                    .map(|(_, r)| *r);
                let hot_rev = hot[*n].as_ref().map(|(_, r)| *r).unwrap_or(0);
                match (observed.get(a.as_str()).copied(), hot_now) {
                    (Some(ra), Some(rh)) if ra == rh => Some(ra),
                    // Applied, then the hot key was overwritten by a later write.
                    (Some(ra), None) if hot_rev > ra => Some(ra),
                    (None, None) => None,
                    (ra, rh) => {
                        out.push(Violation::Torn {
                            detail: format!(
                                "in-flight txn left {a} at {ra:?} and {} with its value at {rh:?} \
                                 (hot key now at mod_revision {hot_rev})",
                                hot_key(*n)
                            ),
                        });
                        continue;
                    }
                }
            }
        };
        let Some(revision) = applied else {
            summary.in_flight_absent += 1;
            continue;
        };
        summary.in_flight_applied += 1;
        model.note_revision(revision, &format!("in-flight {op:?}"), &mut out);
        model.make_durable(op, revision);
    }
    // Hot values still unknown are not current now: they must never be current again.
    for m in &mut model.hot {
        for state in m.values.values_mut() {
            if *state == HotState::Unknown {
                *state = HotState::Dead;
            }
        }
    }
    out
}

/// An error listing every violation kind with a count and examples, or Ok when there is none.
fn fail_on(violations: &[Violation]) -> Result<()> {
    if violations.is_empty() {
        return Ok(());
    }
    let mut kinds: Vec<&'static str> = Vec::new();
    for v in violations {
        if !kinds.contains(&v.kind()) {
            kinds.push(v.kind());
        }
    }
    let mut report = String::new();
    for kind in kinds {
        let of_kind: Vec<&Violation> = violations.iter().filter(|v| v.kind() == kind).collect();
        report.push_str(&format!("\n  {}: {kind}", of_kind.len()));
        for v in of_kind.iter().take(REPORT_EXAMPLES) {
            report.push_str(&format!("\n    - {v}"));
        }
        if of_kind.len() > REPORT_EXAMPLES {
            report.push_str(&format!(
                "\n    - ... and {} more",
                of_kind.len() - REPORT_EXAMPLES
            ));
        }
    }
    bail!("{} violations:{report}", violations.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_in_one_shard_and_not_shard_0_with_two_to_four_shards() {
        use crate::partition::shard_of;
        for shards in 2..=4 {
            for key in [UNIQUE_PREFIX, HOT_PREFIX, PREFIX] {
                let key = format!("{key}x");
                assert_eq!(shard_of(key.as_bytes(), shards), shards - 1, "{key}");
            }
        }
    }

    fn summary() -> CrashSummary {
        CrashSummary::default()
    }

    fn no_hot() -> Vec<Option<ReadBack>> {
        vec![None; HOT_KEYS]
    }

    #[test]
    fn lost_and_changed_keys_are_reported_by_name_and_revision() {
        let mut m = Model::new();
        m.durable.insert("crash/k/a".into(), 5);
        m.durable.insert("crash/k/b".into(), 6);
        m.durable.insert("crash/k/c".into(), 7);
        m.max_revision = 7;
        let fresh = vec![("crash/k/b".to_string(), (value_for("crash/k/b"), 9))];
        let v = check(&mut m, 3, &no_hot(), &fresh, &mut summary());
        assert_eq!(
            v,
            vec![
                Violation::RevisionBackwards {
                    header: 3,
                    max_acked: 7
                },
                Violation::Lost {
                    key: "crash/k/a".into(),
                    mod_revision: 5
                },
                Violation::Changed {
                    key: "crash/k/b".into(),
                    expected_revision: 6,
                    actual_revision: 9,
                    value_ok: true
                },
                Violation::Lost {
                    key: "crash/k/c".into(),
                    mod_revision: 7
                },
            ]
        );
        let err = fail_on(&v).unwrap_err().to_string();
        assert!(
            err.contains("crash/k/a acknowledged at revision 5 is missing"),
            "{err}"
        );
    }

    #[test]
    fn in_flight_txn_is_both_or_neither_and_then_durable() {
        let mut m = Model::new();
        m.unknown = vec![
            Write::TxnPair {
                a: "crash/k/1/a".into(),
                b: "crash/k/1/b".into(),
            },
            Write::TxnPair {
                a: "crash/k/2/a".into(),
                b: "crash/k/2/b".into(),
            },
            Write::Put {
                key: "crash/k/3".into(),
            },
        ];
        let fresh = vec![
            ("crash/k/1/a".to_string(), (value_for("crash/k/1/a"), 4)),
            ("crash/k/1/b".to_string(), (value_for("crash/k/1/b"), 4)),
            ("crash/k/2/b".to_string(), (value_for("crash/k/2/b"), 5)),
        ];
        let mut s = summary();
        let v = check(&mut m, 5, &no_hot(), &fresh, &mut s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(&v[0], Violation::Torn { detail } if detail.contains("crash/k/2/a")));
        assert_eq!(m.durable.get("crash/k/1/a"), Some(&4));
        assert_eq!(m.durable.get("crash/k/1/b"), Some(&4));
        assert!(!m.durable.contains_key("crash/k/3"));
        assert_eq!((s.in_flight_applied, s.in_flight_absent), (1, 1));
        // The absent put must stay absent.
        let later = vec![
            ("crash/k/1/a".to_string(), (value_for("crash/k/1/a"), 4)),
            ("crash/k/1/b".to_string(), (value_for("crash/k/1/b"), 4)),
            ("crash/k/3".to_string(), (value_for("crash/k/3"), 6)),
        ];
        let v = check(&mut m, 6, &no_hot(), &later, &mut s);
        assert!(
            matches!(&v[..], [Violation::Phantom { key, .. }] if key == "crash/k/3"),
            "{v:?}"
        );
    }

    #[test]
    fn hot_key_must_not_go_back_nor_resurrect() {
        let mut m = Model::new();
        let mut s = summary();
        let logs = vec![WriterLog {
            acked: vec![
                (
                    Write::HotPut {
                        hot: 0,
                        value: "v1".into(),
                    },
                    2,
                ),
                (
                    Write::HotPut {
                        hot: 0,
                        value: "v2".into(),
                    },
                    3,
                ),
            ],
            unknown: vec![Write::HotPut {
                hot: 0,
                value: "v3".into(),
            }],
            ..Default::default()
        }];
        assert!(absorb(&mut m, logs, 1, &mut s).is_empty());
        let mut hot = vec![None; HOT_KEYS];
        hot[0] = Some((Bytes::from_static(b"v1"), 2));
        let v = check(&mut m, 3, &hot, &[], &mut s);
        assert!(
            matches!(&v[..], [Violation::HotKey { detail, .. }] if detail.contains("older")),
            "{v:?}"
        );
        // v3 was not current after that restart: it is dead from now on.
        hot[0] = Some((Bytes::from_static(b"v3"), 4));
        let v = check(&mut m, 4, &hot, &[], &mut s);
        assert!(
            v.iter().any(
                |x| matches!(x, Violation::HotKey { detail, .. } if detail.contains("came back"))
            ),
            "{v:?}"
        );
    }

    #[test]
    fn retiring_delete_is_counted_and_all_or_nothing() {
        let keys = ["crash/k/c00001/w00/s000001", "crash/k/c00001/w00/s000002"];
        let young = "crash/k/c00002/w00/s000001";
        let model_with_keys = || {
            let mut m = Model::new();
            for (i, k) in keys.iter().chain([&young]).enumerate() {
                m.durable.insert(k.to_string(), i as i64 + 2);
            }
            m.max_revision = 4;
            m
        };
        let end = "crash/k/c00002/".to_string();
        let read = |k: &str, r| (k.to_string(), (value_for(k), r));

        // Acknowledged: the count must match and the keys leave the model.
        let mut m = model_with_keys();
        let mut s = summary();
        let log = MaintLog {
            delete: Some((
                end.clone(),
                Outcome::Acked {
                    revision: 5,
                    deleted: 1,
                },
            )),
            ..Default::default()
        };
        let v = absorb_maintenance(&mut m, log, 4, &mut s);
        assert_eq!(
            v,
            vec![Violation::DeleteCount {
                end: end.clone(),
                deleted: 1,
                known: 2
            }]
        );
        assert_eq!(m.durable.len(), 1);
        assert_eq!(s.keys_retired, 2);

        // In flight and applied: none left, nothing reported, the keys are gone for good.
        let mut m = model_with_keys();
        m.unknown_delete = Some(end.clone());
        let v = check(&mut m, 5, &no_hot(), &[read(young, 4)], &mut s);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(m.durable.keys().collect::<Vec<_>>(), vec![young]);

        // In flight and torn: one of two left.
        let mut m = model_with_keys();
        m.unknown_delete = Some(end.clone());
        let v = check(
            &mut m,
            5,
            &no_hot(),
            &[read(keys[1], 3), read(young, 4)],
            &mut s,
        );
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::Torn { detail } if detail.contains("1 of the 2"))),
            "{v:?}"
        );
    }

    #[test]
    fn acknowledgements_must_move_revisions_forward() {
        let mut m = Model::new();
        let logs = vec![
            WriterLog {
                acked: vec![
                    (
                        Write::Put {
                            key: "crash/k/x".into(),
                        },
                        8,
                    ),
                    (
                        Write::Put {
                            key: "crash/k/y".into(),
                        },
                        7,
                    ),
                ],
                ..Default::default()
            },
            WriterLog {
                acked: vec![(
                    Write::Put {
                        key: "crash/k/z".into(),
                    },
                    8,
                )],
                ..Default::default()
            },
        ];
        let v = absorb(&mut m, logs, 5, &mut summary());
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v
            .iter()
            .all(|x| matches!(x, Violation::RevisionOrder { .. })));
        assert_eq!(m.max_revision, 8);
    }
}
