//! `cargo xtask`: the project's own commands.
//!
//! - `deps`     install what a fresh machine lacks (idempotent)
//! - `build`    build the workspace (kernel programs included)
//! - `test`     THE test command: deps, fmt, clippy, unit, privileged host, VM tests
//! - `vm-test`  run the guest suite in QEMU on pinned Debian kernels
//! - `demo`     show a VIP balancing real connections in network namespaces
//! - `bench`    benchmarks whose figures go into docs/benchmarks.md
mod bench;
mod cmd;
mod control_lab;
mod demo;
mod deps;
mod lab;
mod test;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Garrison's build, test and demo commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install missing Debian packages, toolchain pieces, bpf-linker and the Python test venv.
    Deps,
    /// Build the workspace, kernel programs included.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run everything: deps, fmt, clippy, unit, privileged host tests, VM tests.
    Test {
        /// Skip the QEMU part (for quick local iterations; CI never passes this).
        #[arg(long)]
        no_vm: bool,
    },
    /// Run the guest test suite in QEMU.
    VmTest(vm::VmTestArgs),
    /// Run the demo: three backend nodes and a client in namespaces, one VIP.
    Demo(demo::DemoArgs),
    /// Benchmarks (not tests): `bench dataplane` writes docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// (bench helper) load generator run in the client namespace.
    #[command(hide = true)]
    BenchLoad {
        #[arg(long)]
        cgroup: std::path::PathBuf,
        #[arg(long, value_delimiter = ',')]
        targets: Vec<std::net::SocketAddr>,
        #[arg(long, value_enum)]
        workload: bench::Workload,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        concurrency: u32,
    },
    /// (lab helper) serves a file over HTTP (the demo's Mesos state).
    #[command(hide = true)]
    LabServeFile {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// (lab helper) HTTP server answering with its name.
    #[command(hide = true)]
    LabServe {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// (bench helper) the measured rounds of `bench control`, run in the
    /// lab's client namespace.
    #[command(hide = true)]
    BenchControlClient {
        #[arg(long)]
        cgroup: std::path::PathBuf,
        #[arg(long)]
        rounds: u32,
        #[arg(long, value_delimiter = ',')]
        agents: Vec<std::net::SocketAddr>,
        /// The control's CA certificate.
        #[arg(long)]
        ca: std::path::PathBuf,
        /// A session token for the control.
        #[arg(long)]
        token: String,
    },
    /// (demo helper) client making requests to the VIP from the demo cgroup.
    #[command(hide = true)]
    DemoClient {
        #[arg(long)]
        cgroup: std::path::PathBuf,
        #[arg(long)]
        vip: std::net::SocketAddr,
        #[arg(long)]
        count: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Deps => deps::run(),
        Command::Build { release } => {
            deps::check_build_prerequisites()?;
            let mut args = vec!["build", "--workspace"];
            if release {
                args.push("--release");
            }
            cmd::cargo(&args)
        }
        Command::Test { no_vm } => test::run(!no_vm),
        Command::VmTest(args) => {
            let summary = vm::run(&args)?;
            println!("{} passed, {} failed", summary.passed, summary.failed);
            if summary.failed > 0 {
                anyhow::bail!("{} guest test(s) failed", summary.failed);
            }
            Ok(())
        }
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::BenchLoad {
            cgroup,
            targets,
            workload,
            seconds,
            concurrency,
        } => bench::load(&cgroup, &targets, workload, seconds, concurrency),
        Command::LabServe { name, listen } => lab::serve(&name, listen),
        Command::LabServeFile { listen, file } => lab::serve_file(listen, &file),
        Command::DemoClient { cgroup, vip, count } => demo::client(&cgroup, vip, count),
        Command::BenchControlClient {
            cgroup,
            rounds,
            agents,
            ca,
            token,
        } => bench::control::client(&cgroup, rounds, &agents, &ca, &token),
    }
}
