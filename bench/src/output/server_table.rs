//! Plain-text tables for `restart` and `memory`: one column per server, then Ballast/etcd.
//!
//! Invariant: pure formatting; every figure shown is a field of the JSON form, that field in
//! MiB, or the quotient of two such fields, so table and JSON never disagree.

use std::fmt::Write;

use crate::server_bench::memory::MemoryOutput;
use crate::server_bench::restart::{RestartOutput, ServerRestarts};

const MIB: f64 = (1u64 << 20) as f64;

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn load_average(start: Option<f64>, end: Option<f64>) -> String {
    let f = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |x| format!("{x:.2}"));
    format!(
        "load average (1 min) {} at start, {} at end",
        f(start),
        f(end)
    )
}

struct Table {
    names: Vec<String>,
    with_ratio: bool,
    text: String,
}

impl Table {
    fn new(names: Vec<String>) -> Table {
        let with_ratio = names.iter().any(|n| n == "etcd") && names.iter().any(|n| n == "ballast");
        let mut t = Table {
            names,
            with_ratio,
            text: String::new(),
        };
        let mut head = format!("{:<34}", "");
        for n in &t.names {
            let _ = write!(head, "{n:>18}");
        }
        if t.with_ratio {
            let _ = write!(head, "{:>18}", "ballast/etcd");
        }
        let _ = writeln!(t.text, "{}", head.trim_end());
        t
    }

    fn row(&mut self, label: &str, cells: Vec<String>, ratio: Option<f64>) {
        let mut line = format!("{label:<34}");
        for c in &cells {
            let _ = write!(line, "{c:>18}");
        }
        if self.with_ratio {
            let _ = write!(line, "{:>18}", ratio_cell(ratio));
        }
        let _ = writeln!(self.text, "{}", line.trim_end());
    }

    fn heading(&mut self, text: &str) {
        let _ = writeln!(self.text, "{text}");
    }
}

/// The `restart` table.
pub fn restart_table(o: &RestartOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restart: {} keys of {} B, values of {} B ({} MiB of values); {}",
        o.keys,
        o.key_size,
        o.val_size,
        mib(o.value_bytes),
        load_average(o.load_average_start, o.load_average_end)
    );
    let names: Vec<String> = o.servers.iter().map(|x| x.server.clone()).collect();
    let mut t = Table::new(names);
    let per =
        |f: &dyn Fn(&ServerRestarts) -> f64| -> Vec<f64> { o.servers.iter().map(f).collect() };
    let pair = |vals: &[f64]| -> Option<f64> {
        let i = |n: &str| o.servers.iter().position(|x| x.server == n);
        crate::ratio::ratio(vals[i("etcd")?], vals[i("ballast")?])
    };
    let load_s = per(&|x| x.load.duration_s);
    t.row(
        "load s",
        load_s.iter().map(|v| format!("{v:.2}")).collect(),
        pair(&load_s),
    );
    let load_rate = per(&|x| x.load.keys_per_s);
    t.row(
        "load keys/s",
        load_rate.iter().map(|v| format!("{v:.0}")).collect(),
        pair(&load_rate),
    );
    let stops = o
        .servers
        .iter()
        .map(|x| x.restarts.len())
        .min()
        .unwrap_or(0);
    for i in 0..stops {
        let stop = &o.servers[0].restarts[i].stop;
        let ratios = o.ratios.iter().find(|r| &r.stop == stop);
        t.heading(match stop.as_str() {
            "kill" => "after kill -9, then start:",
            _ => "after SIGTERM, then start:",
        });
        let runs: Vec<_> = o.servers.iter().map(|x| &x.restarts[i]).collect();
        let stop_s: Vec<f64> = runs.iter().map(|r| r.stop_s).collect();
        t.row(
            "  stop took s",
            runs.iter()
                .map(|r| {
                    format!(
                        "{:.3}{}",
                        r.stop_s,
                        if r.stop_forced { " (forced)" } else { "" }
                    )
                })
                .collect(),
            pair(&stop_s),
        );
        t.row(
            "  WAL at stop MiB (files)",
            runs.iter()
                .map(|r| format!("{} ({})", mib(r.wal.bytes), r.wal.files))
                .collect(),
            ratios.and_then(|r| r.wal_bytes),
        );
        t.row(
            "  data dir MiB (allocated)",
            runs.iter()
                .map(|r| {
                    format!(
                        "{} ({})",
                        mib(r.data_dir.bytes),
                        mib(r.data_dir.allocated_bytes)
                    )
                })
                .collect(),
            ratios.and_then(|r| r.data_dir_bytes),
        );
        t.row(
            "  first linearizable Range s",
            runs.iter()
                .map(|r| format!("{:.3}", r.first_range_s))
                .collect(),
            ratios.and_then(|r| r.first_range_s),
        );
        t.row(
            "  /health true s",
            runs.iter().map(|r| format!("{:.3}", r.health_s)).collect(),
            ratios.and_then(|r| r.health_s),
        );
        t.row(
            "  keys after restart",
            runs.iter().map(|r| r.keys_after.to_string()).collect(),
            None,
        );
        t.row(
            "  VmRSS once serving MiB",
            runs.iter().map(|r| mib(r.vm_rss_bytes)).collect(),
            ratios.and_then(|r| r.vm_rss_bytes),
        );
    }
    s.push_str(&t.text);
    s
}

/// The `memory` table.
pub fn memory_table(o: &MemoryOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "memory: {} keys of {} B, values of {} B, read {:.0} s after the load; {}",
        o.keys,
        o.key_size,
        o.val_size,
        o.settle_s,
        load_average(o.load_average_start, o.load_average_end)
    );
    let names: Vec<String> = o.servers.iter().map(|x| x.server.clone()).collect();
    let mut t = Table::new(names);
    let r = o.ratios.clone().unwrap_or_default();
    let srv = &o.servers;
    t.row(
        "load s",
        srv.iter()
            .map(|x| format!("{:.2}", x.load.duration_s))
            .collect(),
        None,
    );
    t.row(
        "keys held after the load",
        srv.iter().map(|x| x.keys_held.to_string()).collect(),
        None,
    );
    t.row(
        "VmRSS before the load MiB",
        srv.iter().map(|x| mib(x.baseline.vm_rss_bytes)).collect(),
        None,
    );
    t.row(
        "VmRSS after MiB",
        srv.iter().map(|x| mib(x.loaded.vm_rss_bytes)).collect(),
        None,
    );
    t.row(
        "  of it RssAnon MiB",
        srv.iter().map(|x| mib(x.loaded.rss_anon_bytes)).collect(),
        None,
    );
    t.row(
        "  of it RssFile MiB",
        srv.iter().map(|x| mib(x.loaded.rss_file_bytes)).collect(),
        None,
    );
    t.row(
        "VmHWM MiB",
        srv.iter().map(|x| mib(x.loaded.vm_hwm_bytes)).collect(),
        None,
    );
    t.row(
        "VmRSS bytes per key",
        srv.iter()
            .map(|x| format!("{:.0}", x.rss_bytes_per_key))
            .collect(),
        r.rss_bytes_per_key,
    );
    t.row(
        "VmRSS above baseline per key",
        srv.iter()
            .map(|x| format!("{:.0}", x.rss_delta_bytes_per_key))
            .collect(),
        r.rss_delta_bytes_per_key,
    );
    t.row(
        "RssAnon bytes per key",
        srv.iter()
            .map(|x| format!("{:.0}", x.anon_bytes_per_key))
            .collect(),
        r.anon_bytes_per_key,
    );
    t.row(
        "VmHWM bytes per key",
        srv.iter()
            .map(|x| format!("{:.0}", x.hwm_bytes_per_key))
            .collect(),
        r.hwm_bytes_per_key,
    );
    t.row(
        "data dir MiB",
        srv.iter().map(|x| mib(x.data_dir.bytes)).collect(),
        r.data_dir_bytes,
    );
    s.push_str(&t.text);
    s
}
