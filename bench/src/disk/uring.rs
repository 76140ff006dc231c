//! The probe loop on io_uring, through tokio-uring's safe API: each write and each fdatasync
//! is one io_uring submission, awaited before the next.
//!
//! Why tokio-uring and not raw `io-uring` submissions: the workspace forbids unsafe code (a
//! `forbid` that no module can relax), and pushing a raw submission entry is unsafe.
//! tokio-uring owns the buffer while the kernel uses it, which is the invariant raw use would
//! have to argue by hand.
//! Invariants: runs on a thread of its own (a tokio-uring runtime cannot start inside another
//! runtime); exactly one operation is in flight at a time, so the timings are per call.

use std::fs::File;
use std::io;
use std::time::Instant;

use tokio_uring::buf::BoundedBuf;

use crate::disk::Timings;

/// Writes `writes` blocks of `block_size` bytes sequentially to `file`, each followed by an
/// fdatasync, timing both. `align` is the buffer alignment (for O_DIRECT).
pub fn probe(file: File, block_size: usize, writes: u64, align: usize) -> io::Result<Timings> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
            rt.block_on(probe_loop(file, block_size, writes, align))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("io_uring probe thread panicked")))
    })
}

async fn probe_loop(
    file: File,
    block_size: usize,
    writes: u64,
    align: usize,
) -> io::Result<Timings> {
    let file = tokio_uring::fs::File::from_std(file);
    let mut raw = vec![0x5au8; block_size + align];
    let start = raw.as_ptr().align_offset(align);
    assert!(
        start < align,
        "an aligned start exists within one alignment unit"
    );
    let mut timings = Timings::default();
    let mut outcome = Ok(());
    for i in 0..writes {
        let offset = i * block_size as u64;
        let t0 = Instant::now();
        let (res, slice) = file
            .write_all_at(raw.slice(start..start + block_size), offset)
            .await;
        raw = slice.into_inner();
        if let Err(e) = res {
            outcome = Err(e);
            break;
        }
        let t1 = Instant::now();
        if let Err(e) = file.sync_data().await {
            outcome = Err(e);
            break;
        }
        timings.sync.record(t1.elapsed());
        timings.write.record(t1 - t0);
    }
    file.close().await?;
    outcome.map(|()| timings)
}

/// Whether this kernel (and sandbox) lets us set up an io_uring.
pub fn available() -> bool {
    std::thread::scope(|s| {
        s.spawn(|| tokio_uring::Runtime::new(&tokio_uring::builder()).is_ok())
            .join()
            .unwrap_or(false)
    })
}
