//! `garrison-agent`: the per-host daemon.
//!
//! `garrison-agent run [--api ADDR] [--cgroup DIR] [--bpffs DIR] [--vips FILE] [--cleanup]`
//! `garrison-agent cleanup [--bpffs DIR]` removes the pinned data plane.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use garrison_agent::{
    daemon::{RunConfig, Shared, run},
    dataplane::{EbpfConfig, EbpfDataplane, ebpf::remove_pins},
    sys,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "garrison-agent",
    version,
    about = "Garrison's per-host agent: in-kernel L4 VIP load balancing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run(RunArgs),
    /// Detach the programs and remove the pinned maps and links.
    Cleanup {
        #[arg(long, default_value = "/sys/fs/bpf/garrison")]
        bpffs: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:61421")]
    api: SocketAddr,
    /// cgroup v2 directory to attach to (default: the cgroup2 mount root).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Pin directory on a bpffs.
    #[arg(long, default_value = "/sys/fs/bpf/garrison")]
    bpffs: PathBuf,
    /// Static VIP file (JSON, the /v1/vips shape); re-read on change and SIGHUP.
    #[arg(long)]
    vips: Option<PathBuf>,
    /// How often to check the VIP file, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Remove the pinned data plane on exit (default: leave it serving).
    #[arg(long)]
    cleanup: bool,
}

fn main() -> Result<()> {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Run(args) => run_agent(args),
        Command::Cleanup { bpffs } => {
            remove_pins(&bpffs)
                .with_context(|| format!("removing pins under {}", bpffs.display()))?;
            tracing::info!(pins = %bpffs.display(), "data plane removed");
            Ok(())
        }
    }
}

fn run_agent(args: RunArgs) -> Result<()> {
    let cgroup = match args.cgroup {
        Some(c) => c,
        None => sys::find_mount("cgroup2").context("no cgroup2 mount found; pass --cgroup DIR")?,
    };
    if let Some(parent) = args.bpffs.parent()
        && sys::find_mount("bpf").is_none()
    {
        anyhow::bail!(
            "no bpf filesystem is mounted (expected one at {}): mount -t bpf bpf {}",
            parent.display(),
            parent.display()
        );
    }
    let dp = EbpfDataplane::open(EbpfConfig {
        cgroup: cgroup.clone(),
        pin_dir: args.bpffs.clone(),
    })
    .context("starting the eBPF data plane")?;
    tracing::info!(cgroup = %cgroup.display(), pins = %args.bpffs.display(), readopted = dp.readopted(), "data plane ready");
    let initial = dp.programmed_table();
    let shared = Arc::new(Shared::new(Box::new(dp), initial));
    let config = RunConfig {
        vips: args.vips,
        poll_interval: Duration::from_millis(args.poll_ms.max(10)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.api)
            .await
            .with_context(|| format!("binding the API to {}", args.api))?;
        tracing::info!(api = %args.api, "API listening");
        run(listener, shared.clone(), config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    drop(shared);
    if args.cleanup {
        remove_pins(&args.bpffs)?;
        tracing::info!("data plane removed (--cleanup)");
    } else {
        tracing::info!("stopped; the pinned data plane keeps serving");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
