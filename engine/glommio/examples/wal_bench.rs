//! WAL append+fsync latency on a real disk, next to the raw cost of the same disk measured in
//! the same run: one 4 KiB O_DIRECT write into already-written space plus fdatasync (the least
//! a durable append can cost); the same into fallocated space is printed too. Prints p50/p99/p99.9 for the raw loop, the WAL with 1 appender,
//! and the WAL with 64 concurrent appenders (one glommio executor), and the ratios to raw.
//! Figures are printed, never asserted.
//!
//! Usage: `cargo run --release -p ballast-engine-glommio --example wal_bench -- [DIR] [OPS]`
//! (DIR defaults to a temporary directory under the system temp dir, OPS to 2000 per phase).

use std::rc::Rc;
use std::time::Instant;

use ballast_engine::io::{Disk, DiskFile, ALIGN};
use ballast_engine::wal::{Entry, LogIndex, Term, Wal, WalConfig};
use ballast_engine_glommio::{executor_builder, GlommioDisk};
use glommio::Placement;
use hdrhistogram::Histogram;

const PAYLOAD_BYTES: usize = 256;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn row(name: &str, h: &Histogram<u64>, raw: Option<&Histogram<u64>>, extra: &str) {
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    print!(
        "{name:<22} n={:<6} p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms",
        h.len(),
        q(h, 0.5),
        q(h, 0.99),
        q(h, 0.999)
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

fn entry(index: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(1),
        kind: 1,
        payload: bytes::Bytes::from(vec![(index % 251) as u8; PAYLOAD_BYTES]),
    }
}

async fn bench(dir: std::path::PathBuf, ops: usize) {
    let disk = GlommioDisk::new(&dir).expect("bench dir");

    // Raw: 4 KiB O_DIRECT writes at sequential offsets + fdatasync, on the same file system,
    // twice: into space written (zeros) and synced beforehand, which is the disk's own cost,
    // and into fallocated space, where each first write of a page also converts an unwritten
    // extent (file-system metadata the fdatasync must persist) as WAL segments do.
    let page = vec![0x5Au8; ALIGN];
    let mut raw = hist();
    let mut raw_fallocated = hist();
    for (name, prewrite) in [("raw-written.dat", true), ("raw-fallocated.dat", false)] {
        let f = disk.open(name, true).await.expect("raw file");
        if prewrite {
            let zeros = vec![0u8; 256 * ALIGN];
            for chunk in 0..ops.div_ceil(256) {
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
            dma.pre_allocate((ops * ALIGN) as u64, false)
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
        for i in 0..ops {
            let t = Instant::now();
            f.write_at((i * ALIGN) as u64, &page).await.expect("write");
            f.sync_data().await.expect("fdatasync");
            h.record(t.elapsed().as_micros().max(1) as u64)
                .expect("record");
        }
        drop(f);
        disk.remove(name).await.expect("remove raw file");
    }

    let config = WalConfig::default();
    let t = Instant::now();
    let (wal, _) = Wal::open(disk.clone(), config).await.expect("open WAL");
    let create_ms = t.elapsed().as_secs_f64() * 1000.0;

    // One appender: each append waits for its own write + fdatasync.
    let mut one = hist();
    let mut next = wal.last().index.0 + 1;
    let started = Instant::now();
    for _ in 0..ops {
        let t = Instant::now();
        wal.append(vec![entry(next)]).await.expect("append");
        one.record(t.elapsed().as_micros().max(1) as u64)
            .expect("record");
        next += 1;
    }
    let one_rate = ops as f64 / started.elapsed().as_secs_f64();
    let s1 = wal.stats();

    // 64 appenders on the same executor: appends that arrive during a sync share the next.
    let appenders = 64usize;
    let per = ops.div_ceil(appenders).max(1) * 2;
    let many = Rc::new(std::cell::RefCell::new(hist()));
    let next = Rc::new(std::cell::Cell::new(next));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (wal, many, next) = (wal.clone(), many.clone(), next.clone());
        tasks.push(
            glommio::spawn_local(async move {
                for _ in 0..per {
                    let i = next.get();
                    next.set(i + 1);
                    let t = Instant::now();
                    wal.append(vec![entry(i)]).await.expect("append");
                    many.borrow_mut()
                        .record(t.elapsed().as_micros().max(1) as u64)
                        .expect("record");
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

    println!(
        "WAL bench: dir {}, {PAYLOAD_BYTES}-byte entries, segments {} MiB preallocated",
        dir.display(),
        WalConfig::default().segment_bytes >> 20
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
    row(
        "wal 64 appenders",
        &many.borrow(),
        Some(&raw),
        &format!(
            "  {many_rate:.0} appends/s, {:.1} records per write+fdatasync",
            records as f64 / flushes.max(1) as f64
        ),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let ops: usize = args
        .next()
        .map(|s| s.parse().expect("OPS is a number"))
        .unwrap_or(2000);
    executor_builder(Placement::Unbound)
        .name("wal-bench")
        .spawn(move || bench(dir, ops))
        .expect("spawn executor")
        .join()
        .expect("bench finished");
}
