//! `cargo xtask bench dataplane|allocator|isolation|control`: benchmarks whose figures go into
//! docs/benchmarks.md (never timed assertions in tests).
//!
//! - [`traffic`]: the data-path peer matrix and the VIP scale curve;
//! - [`load`]: the load generator run in the lab's client namespace;
//! - [`update`]: the agent's update latency and cold-start scale;
//! - [`plot`]: the PNG of the peer matrix;
//! - [`isolation`]: task launch and teardown latency per isolator set;
//! - [`allocator`]: the Mesos allocator benchmark scenarios;
//! - [`control`]: deploy and drain latency of the control on the demo cluster,
//!   and (`control-auth`, also the end of `control`) the cost of
//!   authentication and TLS at its API.
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use crate::{cmd, deps, lab};

mod allocator;
pub mod control;
mod isolation;
mod load;
mod plot;
mod traffic;
mod update;

pub use load::load;
use load::median;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Dataplane,
    Allocator,
    Isolation,
    Control,
    /// Only the cost of authentication and TLS at the control's API (the
    /// last part of `control`, in-process, no lab).
    ControlAuth,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Rounds; each round runs every peer once per workload, alternating.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_write: bool,
    /// Phases to run (comma-separated): traffic, update, scale.
    #[arg(long, value_delimiter = ',', default_value = "traffic,update,scale")]
    pub phases: Vec<Phase>,
    /// A short run (about 2 minutes): 2 rounds of 1 s, scale curve at 1 and 10,000 VIPs.
    #[arg(long)]
    pub quick: bool,
}

impl BenchArgs {
    /// The arguments with `--quick` applied.
    fn effective(&self) -> BenchArgs {
        let mut a = self.clone();
        if a.quick {
            a.rounds = 2;
            a.seconds = 1;
        }
        a
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Traffic,
    Update,
    Scale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    New,
    Keepalive,
    /// UDP request/response: one datagram out, one back, per operation.
    Udp,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::New => "new connections",
            Workload::Keepalive => "kept-alive requests",
            Workload::Udp => "UDP request/response",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Workload::New => "new",
            Workload::Keepalive => "keepalive",
            Workload::Udp => "udp",
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = cmd::stdout("uname", &["-r"]).unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("Linux {kernel}, {cores} cores ({cpu})")
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.suite {
        Suite::Dataplane => dataplane(args),
        Suite::Isolation => {
            deps::check_build_prerequisites()?;
            let table = isolation::run()?;
            println!("{table}");
            if !args.no_write {
                write_section_named("isolation", &table)?;
                println!("bench: wrote docs/benchmarks.md");
            }
            Ok(())
        }
        Suite::Control => {
            deps::check_build_prerequisites()?;
            let rounds = if args.quick { 3 } else { args.rounds };
            let table = control::run(rounds)?;
            println!("{table}");
            if !args.no_write {
                write_section_named("control", &table)?;
                println!("bench: wrote docs/benchmarks.md");
            }
            control_auth("control", args)
        }
        Suite::ControlAuth => control_auth("control-auth", args),
        Suite::Allocator => {
            let table = allocator::run()?;
            println!("{table}");
            if !args.no_write {
                write_section_named("allocator", &table)?;
                println!("bench: wrote docs/benchmarks.md");
            }
            Ok(())
        }
    }
}

/// `control-auth`: its own section, right after the control's.
fn control_auth(suite: &str, args: &BenchArgs) -> Result<()> {
    let table = control::auth(suite, args.rounds, args.quick)?;
    println!("{table}");
    if !args.no_write {
        write_section_named("control-auth", &table)?;
        println!("bench: wrote docs/benchmarks.md");
    }
    Ok(())
}

fn dataplane(args: &BenchArgs) -> Result<()> {
    deps::check_build_prerequisites()?;
    let agent = lab::agent_binary(true)?;
    let mut table = String::new();
    let args = &args.effective();
    if args.phases.contains(&Phase::Traffic) {
        let (rows, cost) = traffic::matrix(args, &agent)?;
        let sizes: &[usize] = if args.quick {
            &[1, 10_000]
        } else {
            &[1, 100, 1_000, 10_000]
        };
        let curve = traffic::scale_curve(args, &agent, sizes)?;
        let command = if args.quick {
            "cargo xtask bench dataplane --quick".to_string()
        } else {
            format!(
                "cargo xtask bench dataplane --rounds {} --seconds {} --concurrency {}",
                args.rounds, args.seconds, args.concurrency
            )
        };
        table.push_str(&traffic::render(&rows, &cost, &curve, args, &command));
        if !args.no_write {
            let png = cmd::root().join("docs/benchmarks-dataplane.png");
            match plot::peer_matrix(&rows, &png) {
                Ok(()) => println!("bench: wrote {}", png.display()),
                Err(e) => println!("bench: no plot: {e:#}"),
            }
        }
    }
    let mut updates = Vec::new();
    if args.phases.contains(&Phase::Update) {
        for vips in [1, 1000] {
            let row = update::update_latency(&agent, vips, 100)?;
            println!(
                "bench: update latency, {vips} VIPs: median {:.0} µs, p99 {:.0} µs over {} changes",
                row.median_us, row.p99_us, row.changes
            );
            updates.push(row);
        }
    }
    let mut scale = Vec::new();
    if args.phases.contains(&Phase::Scale) {
        let row = update::scale(&agent, 10_000, 16)?;
        println!(
            "bench: scale 10,000 × 16: programmed in {:.0} ms (start to served {:.0} ms), RSS {:.1} MiB (peak {:.1})",
            row.program_ms, row.wall_ms, row.rss_mib, row.hwm_mib
        );
        scale.push(row);
    }
    if !updates.is_empty() || !scale.is_empty() {
        table.push_str(&update::render(&updates, &scale));
    }
    println!("{table}");
    if !args.no_write {
        write_section(&table)?;
        println!("bench: wrote docs/benchmarks.md");
    }
    Ok(())
}

/// Replaces the text between `<!-- bench:NAME:begin -->` and
/// `<!-- bench:NAME:end -->` in docs/benchmarks.md.
fn write_section_named(name: &str, table: &str) -> Result<()> {
    let path = cmd::root().join("docs/benchmarks.md");
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let new = match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) => format!("{}{begin}\n{table}{}", &doc[..b], &doc[e..]),
        (None, None) => format!("{}\n{begin}\n{table}{end}\n", doc.trim_end()),
        _ => bail!(
            "{} has only one of the {begin} … {end} markers",
            path.display()
        ),
    };
    std::fs::write(&path, new)?;
    Ok(())
}

fn write_section(table: &str) -> Result<()> {
    write_section_named("dataplane", table)
}
