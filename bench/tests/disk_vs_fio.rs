//! The disk probe and fio's etcd job on the same temporary directory, printed side by side.
//! Figures are printed, never asserted against a time; the test checks both produced sane,
//! comparable numbers.

use ballast_bench::disk::fio::run_fio;
use ballast_bench::disk::{run_disk_probe, DiskConfig};
use ballast_bench::output::table::disk_table;

#[test]
fn disk_probe_and_fio_side_by_side() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
    let total: u64 = 2 * 1024 * 1024;
    let mut cfg = DiskConfig::etcd_default(dir.path());
    cfg.total_bytes = total;
    let ours = run_disk_probe(&cfg).expect("probe runs");
    let fio = run_fio(dir.path(), &total.to_string(), cfg.block_size).expect("fio runs");
    println!("{}", disk_table(&ours, Some(&fio)));

    assert_eq!(ours.block_size, 2300);
    assert_eq!(ours.writes, total.div_ceil(2300));
    assert_eq!(ours.fdatasync.count, ours.writes);
    assert!(
        fio.syncs.abs_diff(ours.writes) <= 1,
        "fio {} vs ours {}",
        fio.syncs,
        ours.writes
    );
    for (name, p50, p99, max) in [
        ("ours", ours.p50_ms, ours.p99_ms, ours.max_ms),
        ("fio", fio.p50_ms, fio.p99_ms, fio.max_ms),
    ] {
        assert!(p50 > 0.0 && p50 <= p99, "{name}: p50 {p50} p99 {p99}");
        assert!(p99 <= max * 1.01 + 0.01, "{name}: p99 {p99} max {max}");
        assert!(
            p99 < 10_000.0,
            "{name}: a 10 s fdatasync p99 is not a measurement"
        );
    }
    assert_eq!(ours.pass, ours.p99_ms < 10.0);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("readdir").count(),
        0,
        "both cleaned up"
    );
}
