//! The probe loop on plain syscalls (`pwrite`, `fdatasync`), used where io_uring is refused
//! or asked for with `--engine sync`.
//!
//! Invariant: same loop and timing points as `uring::probe`, so the two are comparable.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use crate::disk::aligned::AlignedBuf;
use crate::disk::Timings;

/// Writes `writes` blocks of `block_size` bytes sequentially, each followed by an fdatasync.
pub fn probe(file: File, block_size: usize, writes: u64, align: usize) -> io::Result<Timings> {
    let mut buf = AlignedBuf::new(block_size, align);
    buf.fill_pattern(0x5a);
    let mut timings = Timings::default();
    for i in 0..writes {
        let offset = i * block_size as u64;
        let t0 = Instant::now();
        file.write_all_at(buf.as_slice(), offset)?;
        let t1 = Instant::now();
        file.sync_data()?;
        timings.sync.record(t1.elapsed());
        timings.write.record(t1 - t0);
    }
    Ok(timings)
}
