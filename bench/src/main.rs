//! The `ballast-bench` binary: parses the command line and dispatches; mimalloc is the global
//! allocator. All logic lives in the library.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use ballast_bench::cli::{Cli, Command, DiskArgs, ReportArgs, WorkloadCmd};
use ballast_bench::disk::{self, fio, DiskConfig};
use ballast_bench::output::{hdr_log, server_table, table};
use ballast_bench::{compare, report, runner, server_bench};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let tty = std::io::stderr().is_terminal();
    match cli.command {
        Command::Workload(cmd) => workload(&cmd, tty).await,
        Command::Disk(args) => disk_check(&args).await,
        Command::Compare(args) => {
            let out = compare::run_compare(&args, tty).await?;
            if args.json || args.workload.common().json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", table::compare_table(&out));
            }
            Ok(())
        }
        Command::Report(args) => report_page(&args),
        Command::Restart(args) => {
            let out =
                server_bench::until_interrupted(server_bench::restart::run_restart(&args, true))
                    .await?;
            if args.servers.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", server_table::restart_table(&out));
            }
            Ok(())
        }
        Command::Memory(args) => {
            let out =
                server_bench::until_interrupted(server_bench::memory::run_memory(&args, true))
                    .await?;
            if args.servers.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", server_table::memory_table(&out));
            }
            Ok(())
        }
    }
}

async fn workload(cmd: &WorkloadCmd, tty: bool) -> Result<()> {
    let out = runner::run(cmd, None, "", tty, &[]).await?;
    let c = cmd.common();
    if let Some(path) = &c.hdr_log {
        let d = std::time::Duration::from_secs_f64(out.result.duration_s);
        hdr_log::write_hdr_log(path, &out.latency, d, &out.result.workload)?;
    }
    if c.json {
        println!("{}", serde_json::to_string(&out.result)?);
    } else {
        print!("{}", table::result_table(&out.result));
    }
    Ok(())
}

async fn disk_check(args: &DiskArgs) -> Result<()> {
    let cfg = DiskConfig {
        dir: args.dir.clone(),
        block_size: args.block_size,
        total_bytes: args.total_bytes,
        direct: args.direct,
        engine: args.engine.into(),
    };
    let report = tokio::task::spawn_blocking(move || disk::run_disk_probe(&cfg)).await??;
    let fio_report = if args.fio {
        let (dir, size, bs) = (
            args.dir.clone(),
            format!("{}", args.total_bytes),
            args.block_size,
        );
        Some(tokio::task::spawn_blocking(move || fio::run_fio(&dir, &size, bs)).await??)
    } else {
        None
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(f) = &fio_report {
            v["fio"] = serde_json::to_value(f)?;
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{}", table::disk_table(&report, fio_report.as_ref()));
    }
    Ok(())
}

fn report_page(args: &ReportArgs) -> Result<()> {
    let results = report::load_results(&args.inputs)?;
    let html = report::render_page(&args.title, &results);
    std::fs::write(&args.out, html).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} ({} results)", args.out.display(), results.len());
    Ok(())
}
