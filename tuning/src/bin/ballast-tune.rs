//! `ballast-tune`: print the capacity profiles, print one as a config file or flag list, and
//! measure this machine (disk, peers, cores, memory) to recommend settings.
//!
//! Invariant: `advise` writes only its probe file inside `--data-dir` (removed afterwards) and
//! only opens TCP connections to the peers it is given, bounded in count and time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use ballast_tuning::advisor::{advise, Goal, Measurements};
use ballast_tuning::machine::{data_dir_bytes, Machine};
use ballast_tuning::probe::{measure_peer_rtt, BenchDiskProbe, DiskProbe, SyncWriteProbe};
use ballast_tuning::profiles::Profile;
use ballast_tuning::render;

#[derive(Parser)]
#[command(
    name = "ballast-tune",
    version,
    about = "Capacity profiles and a measured tuning advisor for Ballast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowFormat {
    Yaml,
    Flags,
}

#[derive(Clone, Copy, ValueEnum)]
enum DiskProbeKind {
    /// The bench crate's disk check (io_uring where available); bounded by --probe-bytes.
    Bench,
    /// Plain write + fdatasync; also bounded by --probe-seconds.
    Std,
}

#[derive(Clone, Copy, ValueEnum)]
enum AdviseFormat {
    Table,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Print the profiles, one row each.
    Profiles,
    /// Print one profile as a config file (for --config-file) or a flag list.
    Show {
        /// small, medium, large or xlarge.
        name: String,
        #[arg(long, value_enum, default_value = "yaml")]
        format: ShowFormat,
    },
    /// Read a config file as `ballast --config-file` would and print the resolved settings.
    Check {
        /// The YAML config file.
        file: PathBuf,
        /// Base profile, as `ballast --profile` (wins over `profile:` in the file).
        #[arg(long)]
        profile: Option<String>,
        /// Refuse keys neither etcd nor Ballast knows (etcd itself ignores them).
        #[arg(long)]
        strict: bool,
    },
    /// Measure disk, peers, cores and memory and recommend settings.
    Advise {
        /// The data directory (its filesystem is probed; its size is counted).
        #[arg(long)]
        data_dir: PathBuf,
        /// Peers as HOST:PORT,... (their peer or client port); RTT from TCP connects.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Size for a Kubernetes cluster of this many nodes.
        #[arg(long, conflicts_with = "rps")]
        nodes: Option<u32>,
        /// Size for this many requests per second.
        #[arg(long)]
        rps: Option<u32>,
        #[arg(long, value_enum, default_value = "table")]
        format: AdviseFormat,
        /// Bytes the disk probe writes (etcd's fio recipe: 22 MiB).
        #[arg(long, default_value_t = 22 * 1024 * 1024)]
        probe_bytes: u64,
        /// Which disk probe to run.
        #[arg(long, value_enum, default_value = "bench")]
        disk_probe: DiskProbeKind,
        /// Longest the `std` disk probe runs, in seconds.
        #[arg(long, default_value_t = 30)]
        probe_seconds: u64,
        /// TCP connects per peer.
        #[arg(long, default_value_t = 10)]
        rtt_samples: u32,
        /// Timeout of one connect, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        rtt_timeout_ms: u64,
        /// Do not probe the disk.
        #[arg(long)]
        skip_disk: bool,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-tune: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Profiles => print!("{}", render::profiles_table(&Profile::all())),
        Command::Show { name, format } => {
            let Some(p) = Profile::by_name(&name) else {
                bail!(
                    "unknown profile {name:?}; known: {}",
                    Profile::names().join(", ")
                );
            };
            let s = p.settings();
            match format {
                ShowFormat::Yaml => print!(
                    "{}",
                    render::settings_yaml(
                        &format!(
                            "Ballast configuration, profile {} ({}; ~{} Kubernetes nodes).\nUse with: ballast --config-file FILE",
                            p.name, p.load, p.kubernetes_nodes
                        ),
                        Some(p.name),
                        &s,
                        |_| None,
                    )
                ),
                ShowFormat::Flags => print!("{}", render::settings_flags(Some(p.name), &s)),
            }
        }
        Command::Check {
            file,
            profile,
            strict,
        } => {
            if strict {
                ballast_tuning::config::from_yaml_file(&file)?.deny_unknown()?;
            }
            let config = ballast_tuning::config::load(profile.as_deref(), Some(&file))?;
            for line in config.startup_report() {
                println!("{line}");
            }
        }
        Command::Advise {
            data_dir,
            peers,
            nodes,
            rps,
            format,
            probe_bytes,
            disk_probe,
            probe_seconds,
            rtt_samples,
            rtt_timeout_ms,
            skip_disk,
        } => {
            let machine = Machine::detect().context("reading cores and memory from /proc")?;
            let data_bytes = data_dir_bytes(&data_dir, 1_000_000)
                .with_context(|| format!("measuring {}", data_dir.display()))?;
            let disk = if skip_disk {
                None
            } else {
                let probe: Box<dyn DiskProbe> = match disk_probe {
                    DiskProbeKind::Bench => Box::new(BenchDiskProbe {
                        total_bytes: probe_bytes,
                        ..BenchDiskProbe::default()
                    }),
                    DiskProbeKind::Std => Box::new(SyncWriteProbe {
                        total_bytes: probe_bytes,
                        max_duration: Duration::from_secs(probe_seconds),
                        ..SyncWriteProbe::default()
                    }),
                };
                std::fs::create_dir_all(&data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                Some(probe.probe(&data_dir)?)
            };
            let peers = peers
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    measure_peer_rtt(p.trim(), rtt_samples, Duration::from_millis(rtt_timeout_ms))
                })
                .collect();
            let goal = match (nodes, rps) {
                (Some(n), _) => Goal::KubernetesNodes(n),
                (None, Some(r)) => Goal::RequestsPerSecond(r),
                (None, None) => Goal::Unspecified,
            };
            let m = Measurements {
                machine,
                data_bytes,
                disk,
                peers,
            };
            let advice = advise(&m, goal);
            match format {
                AdviseFormat::Table => print!("{}", render::advice_table(&advice)),
                AdviseFormat::Yaml => print!("{}", render::advice_yaml(&advice)),
            }
        }
    }
    Ok(())
}
