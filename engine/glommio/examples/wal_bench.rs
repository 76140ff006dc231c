//! WAL append+fsync latency on a real disk, next to the raw cost of the same disk measured in
//! the same run: one 4 KiB O_DIRECT write into already-written space plus fdatasync (the least
//! a durable append can cost); the same into fallocated space is printed too. Prints
//! p50/p99/p99.9/max for the raw loop, the WAL with 1 appender, and the WAL with 64 concurrent
//! appenders (one glommio executor), and the ratios to raw; for the 1-appender phase also the
//! appends that crossed a segment end (a roll), which is where segment creation shows.
//! The raw baselines run `min(OPS, 5000)` writes. Figures are printed, never asserted.
//!
//! Usage: `cargo run --release -p ballast-engine-glommio --example wal_bench -- [DIR] [OPS]
//! [--segment-mib N] [--payload-bytes N] [--prepare-at PERCENT|off]` (DIR defaults to a
//! temporary directory under the system temp dir, OPS to 2000 per phase, segments to the WAL's
//! default size, payloads to 256 bytes, preparation of the next segment to the WAL's default
//! fill threshold; `off` makes the rolling append create the segment itself). Smaller segments
//! or larger payloads make a run cross several segments.

use std::rc::Rc;
use std::time::Instant;

use ballast_engine::io::{Disk, DiskFile, ALIGN};
use ballast_engine::wal::{Entry, LogIndex, Term, Wal, WalConfig, WalStats};
use ballast_engine_glommio::{executor_builder, GlommioDisk};
use glommio::Placement;
use hdrhistogram::Histogram;

const PAYLOAD_BYTES_DEFAULT: usize = 256;
/// The raw baselines run at most this many writes (the fallocated one costs ~4 ms each here).
const RAW_OPS_MAX: usize = 5000;

struct Options {
    dir: std::path::PathBuf,
    ops: usize,
    segment_bytes: u64,
    payload_bytes: usize,
    prepare_next_at_fill_percent: Option<u8>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn row(name: &str, h: &Histogram<u64>, raw: Option<&Histogram<u64>>, extra: &str) {
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    print!(
        "{name:<22} n={:<6} p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms",
        h.len(),
        q(h, 0.5),
        q(h, 0.99),
        q(h, 0.999),
        h.max() as f64 / 1000.0
    );
    if let Some(r) = raw {
        print!(
            "  ratio to raw p50 {:.2}x p99 {:.2}x p99.9 {:.2}x",
            q(h, 0.5) / q(r, 0.5),
            q(h, 0.99) / q(r, 0.99),
            q(h, 0.999) / q(r, 0.999)
        );
    }
    println!("{extra}");
}

fn entry(index: u64, payload_bytes: usize) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(1),
        kind: 1,
        payload: bytes::Bytes::from(vec![(index % 251) as u8; payload_bytes]),
    }
}

async fn bench(opts: Options) {
    let Options {
        dir,
        ops,
        segment_bytes,
        payload_bytes,
        prepare_next_at_fill_percent,
    } = opts;
    let disk = GlommioDisk::new(&dir).expect("bench dir");
    let existing = disk.list().await.expect("list bench dir");
    assert!(
        existing.iter().all(|n| !n.starts_with("wal-")),
        "{} already holds a WAL ({existing:?}): remove it first, the bench measures a fresh one",
        dir.display()
    );

    // Raw: 4 KiB O_DIRECT writes at sequential offsets + fdatasync, on the same file system,
    // twice: into space written (zeros) and synced beforehand, which is the disk's own cost,
    // and into fallocated space, where each first write of a page also converts an unwritten
    // extent (file-system metadata the fdatasync must persist) as WAL segments do.
    let raw_ops = ops.min(RAW_OPS_MAX);
    let page = vec![0x5Au8; ALIGN];
    let mut raw = hist();
    let mut raw_fallocated = hist();
    for (name, prewrite) in [("raw-written.dat", true), ("raw-fallocated.dat", false)] {
        let f = disk.open(name, true).await.expect("raw file");
        if prewrite {
            let zeros = vec![0u8; 256 * ALIGN];
            for chunk in 0..raw_ops.div_ceil(256) {
                f.write_at((chunk * zeros.len()) as u64, &zeros)
                    .await
                    .expect("prewrite");
            }
        } else {
            // Plain fallocate, as `GlommioDisk::allocate` would do without its zero-fill.
            let dma = glommio::io::OpenOptions::new()
                .write(true)
                .dma_open(dir.join(name))
                .await
                .expect("dma open");
            dma.pre_allocate((raw_ops * ALIGN) as u64, false)
                .await
                .expect("fallocate");
            dma.close().await.expect("close");
        }
        f.sync_data().await.expect("sync");
        let h = if prewrite {
            &mut raw
        } else {
            &mut raw_fallocated
        };
        for i in 0..raw_ops {
            let t = Instant::now();
            f.write_at((i * ALIGN) as u64, &page).await.expect("write");
            f.sync_data().await.expect("fdatasync");
            h.record(t.elapsed().as_micros().max(1) as u64)
                .expect("record");
        }
        drop(f);
        disk.remove(name).await.expect("remove raw file");
    }

    let config = WalConfig {
        segment_bytes,
        record_payload_bytes_max: payload_bytes,
        prepare_next_at_fill_percent,
        ..WalConfig::default()
    };
    config
        .validate()
        .expect("WAL config (segment too small for the payload?)");
    let t = Instant::now();
    let (wal, _) = Wal::open(disk.clone(), config).await.expect("open WAL");
    let create_ms = t.elapsed().as_secs_f64() * 1000.0;

    // One appender: each append waits for its own write + fdatasync. An append during which
    // the roll count grew is one that moved to the next segment; one that overlapped the
    // preparation of the next segment is counted apart too.
    let mut one = hist();
    let mut rolled = hist();
    let mut one_prep = hist();
    let mut next = wal.last().index.0 + 1;
    let started = Instant::now();
    for _ in 0..ops {
        let before = wal.stats();
        let t = Instant::now();
        wal.append(vec![entry(next, payload_bytes)])
            .await
            .expect("append");
        let us = t.elapsed().as_micros().max(1) as u64;
        one.record(us).expect("record");
        let after = wal.stats();
        if after.rolls != before.rolls {
            rolled.record(us).expect("record");
        }
        if overlapped_preparation(&before, &after) {
            one_prep.record(us).expect("record");
        }
        next += 1;
    }
    let one_rate = ops as f64 / started.elapsed().as_secs_f64();
    let s1 = wal.stats();

    // 64 appenders on the same executor: appends that arrive during a sync share the next.
    let appenders = 64usize;
    let per = ops.div_ceil(appenders).max(1) * 2;
    let many = Rc::new(std::cell::RefCell::new(hist()));
    let many_prep = Rc::new(std::cell::RefCell::new(hist()));
    let next = Rc::new(std::cell::Cell::new(next));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (wal, many, many_prep, next) =
            (wal.clone(), many.clone(), many_prep.clone(), next.clone());
        tasks.push(
            glommio::spawn_local(async move {
                for _ in 0..per {
                    let i = next.get();
                    next.set(i + 1);
                    let before = wal.stats();
                    let t = Instant::now();
                    wal.append(vec![entry(i, payload_bytes)])
                        .await
                        .expect("append");
                    let us = t.elapsed().as_micros().max(1) as u64;
                    many.borrow_mut().record(us).expect("record");
                    if overlapped_preparation(&before, &wal.stats()) {
                        many_prep.borrow_mut().record(us).expect("record");
                    }
                }
            })
            .detach(),
        );
    }
    for t in tasks {
        t.await.expect("appender task");
    }
    let total = appenders * per;
    let many_rate = total as f64 / started.elapsed().as_secs_f64();
    let s2 = wal.stats();
    let flushes = s2.flushes - s1.flushes;
    let records = s2.records_flushed - s1.records_flushed;

    let s3 = wal.stats();
    let prepare = match prepare_next_at_fill_percent {
        Some(p) => format!("next segment prepared from {p}% fill"),
        None => "no preparation".to_string(),
    };
    println!(
        "WAL bench: dir {}, {payload_bytes}-byte entries, segments {} MiB preallocated, {prepare}",
        dir.display(),
        segment_bytes >> 20,
    );
    println!(
        "rolls {}: to a prepared segment {} (of which waited for it {}), created inline {}",
        s3.rolls,
        s3.rolls_to_prepared,
        s3.rolls_waited,
        s3.rolls - s3.rolls_to_prepared
    );
    println!("open + create the first segment (fallocate, zero-fill, sync): {create_ms:.1} ms");
    row(
        "raw write+fdatasync",
        &raw,
        None,
        "  (pre-written space: the baseline)",
    );
    row("raw, fallocated space", &raw_fallocated, Some(&raw), "");
    row(
        "wal 1 appender",
        &one,
        Some(&raw),
        &format!("  {one_rate:.0} appends/s"),
    );
    if !rolled.is_empty() {
        row("  appends that rolled", &rolled, Some(&raw), "");
    }
    if !one_prep.is_empty() {
        row("  during a preparation", &one_prep, Some(&raw), "");
    }
    row(
        "wal 64 appenders",
        &many.borrow(),
        Some(&raw),
        &format!(
            "  {many_rate:.0} appends/s, {:.1} records per write+fdatasync",
            records as f64 / flushes.max(1) as f64
        ),
    );
    if !many_prep.borrow().is_empty() {
        row(
            "  during a preparation",
            &many_prep.borrow(),
            Some(&raw),
            "",
        );
    }
}

/// Whether a preparation of the next segment ran at some point between two stats snapshots.
fn overlapped_preparation(before: &WalStats, after: &WalStats) -> bool {
    before.preparations_started > before.segments_prepared
        || after.preparations_started > before.preparations_started
        || after.segments_prepared > before.segments_prepared
}

fn main() {
    let mut positional = Vec::new();
    let mut segment_bytes = WalConfig::default().segment_bytes;
    let mut payload_bytes = PAYLOAD_BYTES_DEFAULT;
    let mut prepare_next_at_fill_percent = WalConfig::default().prepare_next_at_fill_percent;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match a.as_str() {
            "--segment-mib" => segment_bytes = value("--segment-mib") << 20,
            "--payload-bytes" => payload_bytes = value("--payload-bytes") as usize,
            "--prepare-at" => {
                prepare_next_at_fill_percent = match args.next().as_deref() {
                    Some("off") => None,
                    Some(p) => Some(p.parse().expect("--prepare-at takes a percentage or off")),
                    None => panic!("--prepare-at takes a percentage or off"),
                }
            }
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    let tmp;
    let dir = match positional.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let ops: usize = positional
        .next()
        .map(|s| s.parse().expect("OPS is a number"))
        .unwrap_or(2000);
    let opts = Options {
        dir,
        ops,
        segment_bytes,
        payload_bytes,
        prepare_next_at_fill_percent,
    };
    executor_builder(Placement::Unbound)
        .name("wal-bench")
        .spawn(move || bench(opts))
        .expect("spawn executor")
        .join()
        .expect("bench finished");
}
