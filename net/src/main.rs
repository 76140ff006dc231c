//! The `ballast` binary: parses etcd's flags, sets up logging, runs the server until SIGTERM or
//! SIGINT.

#![forbid(unsafe_code)]

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Offline admin: `ballast snapshot restore FILE ...` (migrating from etcd).
    if args.get(1).map(String::as_str) == Some("snapshot") {
        return ballast_net::restore::main(&args);
    }
    let cl = match ballast_net::flags::parse(std::env::args()) {
        Ok(cl) => cl,
        Err(ballast_net::flags::CliError::Clap(err)) => err.exit(),
        Err(err) => {
            eprintln!("ballast: {err}");
            std::process::exit(2);
        }
    };
    let level = if cl.flags.debug {
        "debug"
    } else {
        cl.flags.log_level.as_str()
    };
    let level = match level {
        "panic" | "fatal" | "dpanic" => "error",
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for flag in &cl.set_but_not_built {
        tracing::warn!(flag = %flag, "flag accepted but its feature is not built yet; it has no effect");
    }
    warn_unknown_etcd_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ballast-edge")
        .build()?;
    let result = runtime.block_on(ballast_net::server::run(cl, shutdown_signal()));
    // `run` returns once the shards stopped; a blocking task still running (a peer address
    // lookup, say) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// etcd warns about `ETCD_*` variables that name no flag; so does Ballast.
fn warn_unknown_etcd_env() {
    let cmd = ballast_net::flags::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for (name, _) in std::env::vars() {
        if name.starts_with("ETCD_") && !known.contains(&name) {
            tracing::warn!(variable = %name, "unrecognized environment variable");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
