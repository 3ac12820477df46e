//! `cargo xtask bench dataplane`: a client namespace → three backend namespaces
//! over veth and a bridge ([`crate::lab`]); a load generator of our own makes
//! (a) new TCP connections (connect, small HTTP request, response, close with
//! RST so no TIME_WAIT skews the figures) and (b) requests on kept-alive
//! connections, against the backends directly (the generator spreads over the
//! three itself: like with like) and through a Garrison VIP, alternating peers
//! round by round. Reports medians, spread and VIP/direct ratios per round, and
//! writes the table into docs/benchmarks.md.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{
    cmd, deps,
    lab::{self, BACKEND_PORT, Lab},
};

mod allocator;
mod update;

const VIP: &str = "11.1.2.3:80";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Dataplane,
    Allocator,
}

#[derive(Args, Debug)]
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
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::New => "new connections",
            Workload::Keepalive => "kept-alive requests",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Workload::New => "new",
            Workload::Keepalive => "keepalive",
        }
    }
}

/// One measurement, as printed by `xtask bench-load` (one line of key=value).
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    cpu_secs: f64,
}

impl Measure {
    fn to_line(self) -> String {
        format!(
            "ops_per_sec={:.1} p50_us={:.1} p99_us={:.1} errors={} cpu_secs={:.3}",
            self.ops_per_sec, self.p50_us, self.p99_us, self.errors, self.cpu_secs
        )
    }

    fn parse(line: &str) -> Result<Self> {
        let mut m = Measure::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("bad field {kv:?}"))?;
            match k {
                "ops_per_sec" => m.ops_per_sec = v.parse()?,
                "p50_us" => m.p50_us = v.parse()?,
                "p99_us" => m.p99_us = v.parse()?,
                "errors" => m.errors = v.parse()?,
                "cpu_secs" => m.cpu_secs = v.parse()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

/// Reads one HTTP response (headers + Content-Length body).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn close_with_rst(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a valid linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `xtask bench-load`: runs in the client namespace and the lab cgroup.
pub fn load(
    cgroup: &Path,
    targets: &[SocketAddr],
    workload: Workload,
    seconds: u64,
    concurrency: u32,
) -> Result<()> {
    lab::join_cgroup(cgroup)?;
    if targets.is_empty() {
        bail!("no targets");
    }
    let deadline = Duration::from_secs(seconds);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency as usize)
        .map(|w| {
            let targets = targets.to_vec();
            std::thread::spawn(move || -> (Vec<u32>, u64) {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut buf = Vec::with_capacity(1024);
                let begin = Instant::now();
                let mut i = w;
                let mut conn: Option<TcpStream> = None;
                while begin.elapsed() < deadline {
                    let target = targets[i % targets.len()];
                    i += 1;
                    let t0 = Instant::now();
                    let ok = match workload {
                        Workload::New => (|| {
                            let mut s =
                                TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                            s.set_nodelay(true)?;
                            s.write_all(REQUEST)?;
                            read_response(&mut s, &mut buf)?;
                            close_with_rst(s);
                            std::io::Result::Ok(())
                        })(),
                        Workload::Keepalive => (|| {
                            if conn.is_none() {
                                let s = TcpStream::connect_timeout(
                                    &targets[w % targets.len()],
                                    Duration::from_secs(2),
                                )?;
                                s.set_nodelay(true)?;
                                conn = Some(s);
                            }
                            let s = conn.as_mut().expect("connected");
                            s.write_all(REQUEST)?;
                            read_response(s, &mut buf)
                        })(),
                    };
                    match ok {
                        Ok(()) => {
                            lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                        }
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w
            .join()
            .map_err(|_| anyhow::anyhow!("load worker panicked"))?;
        all.extend(lat);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let m = Measure {
        ops_per_sec: all.len() as f64 / secs,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        errors,
        cpu_secs: cpu_seconds() - cpu0,
    };
    println!("{}", m.to_line());
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Direct,
    Vip,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Direct => "direct (client spreads over 3 backends)",
            Peer::Vip => "Garrison eBPF VIP",
        }
    }
}

struct Row {
    workload: Workload,
    peer: Peer,
    rounds: Vec<Measure>,
    ratios: Vec<f64>,
    p99_ratios: Vec<f64>,
}

fn measure(lab: &Lab, args: &BenchArgs, targets: &str, workload: Workload) -> Result<Measure> {
    let cgroup = lab.cgroup();
    let seconds = args.seconds.to_string();
    let conc = args.concurrency.to_string();
    let out = lab.run_client(&[
        "bench-load",
        "--cgroup",
        cgroup.to_str().context("path")?,
        "--targets",
        targets,
        "--workload",
        workload.arg(),
        "--seconds",
        &seconds,
        "--concurrency",
        &conc,
    ])?;
    let line = out.lines().last().context("bench-load printed nothing")?;
    Measure::parse(line)
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

fn dataplane(args: &BenchArgs) -> Result<()> {
    deps::check_build_prerequisites()?;
    let agent = lab::agent_binary(true)?;
    let mut table = String::new();
    if args.phases.contains(&Phase::Traffic) {
        table.push_str(&traffic(args, &agent)?);
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

fn traffic(args: &BenchArgs, agent: &std::path::Path) -> Result<String> {
    let lab = Lab::new("bench", 3);
    lab.teardown();
    let result = (|| -> Result<Vec<Row>> {
        lab.build()?;
        lab.start_servers()?;
        lab.start_agent_with_file(agent, &lab::vip_file_json(VIP, &lab.node_ips()), VIP)?;
        let direct: Vec<String> = lab
            .node_ips()
            .iter()
            .map(|ip| format!("{ip}:{BACKEND_PORT}"))
            .collect();
        let direct = direct.join(",");
        let mut rows = Vec::new();
        for workload in [Workload::New, Workload::Keepalive] {
            for peer in [Peer::Direct, Peer::Vip] {
                rows.push(Row {
                    workload,
                    peer,
                    rounds: Vec::new(),
                    ratios: Vec::new(),
                    p99_ratios: Vec::new(),
                });
            }
        }
        for round in 1..=args.rounds {
            for workload in [Workload::New, Workload::Keepalive] {
                let d = measure(&lab, args, &direct, workload)?;
                let v = measure(&lab, args, VIP, workload)?;
                println!(
                    "bench: round {round} {:<20} direct {:>9.0}/s p99 {:>6.0} µs | VIP {:>9.0}/s p99 {:>6.0} µs | ratio {:.3}",
                    workload.name(),
                    d.ops_per_sec,
                    d.p99_us,
                    v.ops_per_sec,
                    v.p99_us,
                    v.ops_per_sec / d.ops_per_sec
                );
                for (peer, m) in [(Peer::Direct, d), (Peer::Vip, v)] {
                    let row = rows
                        .iter_mut()
                        .find(|r| r.workload == workload && r.peer == peer)
                        .expect("row");
                    row.rounds.push(m);
                    row.ratios.push(m.ops_per_sec / d.ops_per_sec);
                    row.p99_ratios.push(m.p99_us / d.p99_us.max(1.0));
                }
            }
        }
        Ok(rows)
    })();
    let vips = lab.api_get("/vips").unwrap_or_default();
    lab.teardown();
    let rows = result?;
    let command = format!(
        "cargo xtask bench dataplane --rounds {} --seconds {} --concurrency {}",
        args.rounds, args.seconds, args.concurrency
    );
    if !vips.is_empty() {
        println!("agent /vips after the run: {vips}");
    }
    Ok(render(&rows, args, &command))
}

fn render(rows: &[Row], args: &BenchArgs, command: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!("Command: `{command}`  \n"));
    s.push_str(&format!("Machine: {}  \n", machine()));
    s.push_str(&format!(
        "Date: {}; {} rounds × {} s per peer and workload, {} concurrent connections, peers alternating within each round.\n\n",
        cmd::stdout("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        args.rounds,
        args.seconds,
        args.concurrency
    ));
    s.push_str("| workload | peer | ops/s median (min–max) | p50 µs | p99 µs | errors | client CPU s / 100k ops | ops/s ratio to direct (median of rounds) | p99 ratio to direct |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let ops: Vec<f64> = r.rounds.iter().map(|m| m.ops_per_sec).collect();
        let min = ops.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ops.iter().copied().fold(0.0, f64::max);
        let total_ops: f64 = ops.iter().sum::<f64>() * args.seconds as f64;
        let cpu: f64 = r.rounds.iter().map(|m| m.cpu_secs).sum();
        s.push_str(&format!(
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} | {} | {:.2} | {:.3} | {:.2} |\n",
            r.workload.name(),
            r.peer.name(),
            median(ops.clone()),
            min,
            max,
            median(r.rounds.iter().map(|m| m.p50_us).collect()),
            median(r.rounds.iter().map(|m| m.p99_us).collect()),
            r.rounds.iter().map(|m| m.errors).sum::<u64>(),
            cpu / total_ops.max(1.0) * 100_000.0,
            median(r.ratios.clone()),
            median(r.p99_ratios.clone()),
        ));
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_line_round_trips() {
        let m = Measure {
            ops_per_sec: 1234.5,
            p50_us: 80.0,
            p99_us: 300.0,
            errors: 2,
            cpu_secs: 1.5,
        };
        let back = Measure::parse(&m.to_line()).unwrap();
        assert_eq!(
            (back.ops_per_sec, back.p99_us, back.errors),
            (1234.5, 300.0, 2)
        );
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
