//! The data-path peer matrix on the lab topology (client namespace → 3 backend
//! namespaces over veth and a bridge), every peer set up and torn down by the
//! bench inside the lab's namespaces (the host's own tables are never touched):
//!
//! - direct: the client spreads its connections over the 3 backends itself;
//! - Garrison eBPF: the agent's socket-level VIP (11.1.2.3:80);
//! - Garrison NFQUEUE: a second agent with `dataplane = "nfqueue"` (11.1.2.6:80);
//! - iptables DNAT with `-m statistic --mode random` (kube-proxy iptables mode, 11.1.2.4:80);
//! - nftables DNAT with `numgen random mod 3` (kube-proxy nftables mode, 11.1.2.5:80);
//! - haproxy in TCP mode in the client namespace (marathon-lb's engine, 127.0.0.1:8081).
//!
//! Workloads: new TCP connections, requests on kept-alive connections, and UDP
//! request/response (not carried by the NFQUEUE path or haproxy's TCP mode).
//! Peers alternate within each round; ratios to direct are per round. System
//! CPU seconds (all of /proc/stat: client, servers, softirq, haproxy) are
//! measured around each run. The scale curve compares Garrison eBPF and
//! iptables DNAT with 1 to 10,000 VIPs programmed (the last VIP is measured).
use std::path::Path;

use anyhow::{Context, Result};

use super::{BenchArgs, Workload, load::Measure, load::median, machine};
use crate::{
    cmd,
    lab::{self, BACKEND_PORT, Lab},
};

const EBPF_VIP: &str = "11.1.2.3:80";
const IPT_VIP: &str = "11.1.2.4:80";
const NFT_VIP: &str = "11.1.2.5:80";
const HAPROXY: &str = "127.0.0.1:8081";
const NFQ_VIP: &str = "11.1.2.6:80";
/// API of the second (NFQUEUE) agent in the client namespace.
const NFQ_API: &str = "127.0.0.1:61422";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Direct,
    Ebpf,
    Nfqueue,
    Iptables,
    Nftables,
    Haproxy,
}

impl Peer {
    pub const ALL: [Peer; 6] = [
        Peer::Direct,
        Peer::Ebpf,
        Peer::Nfqueue,
        Peer::Iptables,
        Peer::Nftables,
        Peer::Haproxy,
    ];

    /// Whether the peer serves `workload` (the NFQUEUE path and haproxy's
    /// TCP mode do not carry UDP).
    pub fn serves(self, workload: Workload) -> bool {
        workload != Workload::Udp || !matches!(self, Peer::Nfqueue | Peer::Haproxy)
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Direct => "direct (client spreads over 3 backends)",
            Peer::Ebpf => "Garrison eBPF VIP",
            Peer::Nfqueue => "Garrison NFQUEUE VIP (Minuteman path)",
            Peer::Iptables => "iptables DNAT, statistic random",
            Peer::Nftables => "nftables DNAT, numgen random",
            Peer::Haproxy => "haproxy, TCP mode",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Peer::Direct => "direct",
            Peer::Ebpf => "garrison-ebpf",
            Peer::Nfqueue => "garrison-nfqueue",
            Peer::Iptables => "iptables",
            Peer::Nftables => "nftables",
            Peer::Haproxy => "haproxy",
        }
    }

    fn target(self, lab: &Lab) -> String {
        match self {
            Peer::Direct => lab
                .node_ips()
                .iter()
                .map(|ip| format!("{ip}:{BACKEND_PORT}"))
                .collect::<Vec<_>>()
                .join(","),
            Peer::Ebpf => EBPF_VIP.into(),
            Peer::Nfqueue => NFQ_VIP.into(),
            Peer::Iptables => IPT_VIP.into(),
            Peer::Nftables => NFT_VIP.into(),
            Peer::Haproxy => HAPROXY.into(),
        }
    }
}

/// `iptables-restore` input: one chain per VIP spreading over `backends` at
/// random, for TCP (and UDP when `udp`).
fn iptables_rules(vips: &[String], backends: &[String], udp: bool) -> String {
    let protos: &[&str] = if udp { &["tcp", "udp"] } else { &["tcp"] };
    let mut s = String::from("*nat\n");
    for (i, _) in vips.iter().enumerate() {
        for p in protos {
            s.push_str(&format!(":GB-VIP-{i}-{p} - [0:0]\n"));
        }
    }
    for (i, vip) in vips.iter().enumerate() {
        let (ip, port) = vip.rsplit_once(':').expect("ip:port");
        for p in protos {
            s.push_str(&format!(
                "-A OUTPUT -d {ip}/32 -p {p} -m {p} --dport {port} -j GB-VIP-{i}-{p}\n"
            ));
            let n = backends.len();
            for (k, b) in backends.iter().enumerate() {
                if k + 1 < n {
                    s.push_str(&format!(
                        "-A GB-VIP-{i}-{p} -p {p} -m statistic --mode random --probability {:.5} -j DNAT --to-destination {b}\n",
                        1.0 / (n - k) as f64
                    ));
                } else {
                    s.push_str(&format!(
                        "-A GB-VIP-{i}-{p} -p {p} -j DNAT --to-destination {b}\n"
                    ));
                }
            }
        }
    }
    s.push_str("COMMIT\n");
    s
}

fn nft_rules(vip: &str, backends: &[String]) -> String {
    let (ip, port) = vip.rsplit_once(':').expect("ip:port");
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (bip, bport) = b.rsplit_once(':').expect("ip:port");
            format!("{i} : {bip} . {bport}")
        })
        .collect();
    format!(
        "table ip gbench {{\n  chain out {{\n    type nat hook output priority -100; policy accept;\n    ip daddr {ip} meta l4proto {{ tcp, udp }} th dport {port} dnat ip to numgen random mod {} map {{ {} }}\n  }}\n}}\n",
        backends.len(),
        map.join(", ")
    )
}

fn haproxy_config(backends: &[String]) -> String {
    let mut s = format!(
        "global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend fe\n  bind {HAPROXY}\n  default_backend be\nbackend be\n  balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        s.push_str(&format!("  server n{i} {b}\n"));
    }
    s
}

fn backends(lab: &Lab) -> Vec<String> {
    lab.node_ips()
        .iter()
        .map(|ip| format!("{ip}:{BACKEND_PORT}"))
        .collect()
}

/// The agents' pids.
struct Agents {
    ebpf: u32,
    nfqueue: u32,
}

/// Sets up every peer in the lab (both agents included).
fn setup_peers(lab: &Lab, agent: &Path) -> Result<Agents> {
    let client = lab.client_ns();
    let ebpf_vips = format!(
        "[{},{}]",
        lab::vip_entry_json(EBPF_VIP, &lab.node_ips()),
        lab::vip_entry_json_proto(EBPF_VIP, "udp", &lab.node_ips())
    );
    let (_, pid) = lab.start_agent_with_file(agent, &ebpf_vips, EBPF_VIP)?;
    let nfq_file = lab.write_file(
        "vips-nfqueue.json",
        &lab::vip_file_json(NFQ_VIP, &lab.node_ips()),
    )?;
    let (_, nfq_pid) = lab.start_agent_at(
        agent,
        NFQ_API,
        "agent-nfqueue",
        &[
            "--dataplane",
            "nfqueue",
            "--vips",
            nfq_file.to_str().context("path")?,
        ],
        "/v1/vips",
        NFQ_VIP,
    )?;
    // DNAT peers need a route for their VIPs (inside the lab only).
    lab.exec_in(
        &client,
        &["ip", "route", "add", "11.0.0.0/8", "dev", "eth0"],
    )?;
    let b = backends(lab);
    let ipt = lab.write_file(
        "iptables.rules",
        &iptables_rules(&[IPT_VIP.to_string()], &b, true),
    )?;
    lab.exec_in(
        &client,
        &[
            "iptables-restore",
            "--noflush",
            ipt.to_str().context("path")?,
        ],
    )?;
    let nft = lab.write_file("nft.rules", &nft_rules(NFT_VIP, &b))?;
    lab.exec_in(&client, &["nft", "-f", nft.to_str().context("path")?])?;
    let cfg = lab.write_file("haproxy.cfg", &haproxy_config(&b))?;
    let log = lab.write_file("haproxy.log", "")?;
    lab.spawn_in(
        &client,
        Path::new("/usr/sbin/haproxy"),
        &["-f", cfg.to_str().context("path")?, "-db"],
        &log,
    )?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Agents {
        ebpf: pid,
        nfqueue: nfq_pid,
    })
}

/// Busy CPU seconds of the whole machine (all of /proc/stat but idle and iowait).
fn system_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return 0.0;
    }
    let total: f64 = v.iter().sum();
    let idle = v[3] + v[4];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (total - idle) / hz.max(1.0)
}

fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; index 11 and 12 after the comm.
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0)
}

fn rss_mib(pid: u32) -> f64 {
    super::update::status_kib(pid, "VmRSS:").unwrap_or(0.0) / 1024.0
}

/// One run of the load generator against `targets`, with system CPU around it.
fn measure(
    lab: &Lab,
    args: &BenchArgs,
    targets: &str,
    workload: Workload,
) -> Result<(Measure, f64)> {
    let cgroup = lab.cgroup();
    let seconds = args.seconds.to_string();
    let conc = args.concurrency.to_string();
    let cpu0 = system_cpu_seconds();
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
    let cpu = system_cpu_seconds() - cpu0;
    let line = out.lines().last().context("bench-load printed nothing")?;
    Ok((Measure::parse(line)?, cpu))
}

/// The workloads of the matrix, in the order they run.
const WORKLOADS: [Workload; 3] = [Workload::New, Workload::Keepalive, Workload::Udp];

/// Every round of one (workload, peer).
pub struct Row {
    pub workload: Workload,
    pub peer: Peer,
    pub rounds: Vec<Measure>,
    pub system_cpu: Vec<f64>,
    pub ratios: Vec<f64>,
    pub p99_ratios: Vec<f64>,
    /// CPU seconds of the peer's own userspace process (the NFQUEUE agent)
    /// during each round; empty for peers without one measured.
    pub agent_cpu: Vec<f64>,
}

impl Row {
    pub fn median_ops(&self) -> f64 {
        median(self.rounds.iter().map(|m| m.ops_per_sec).collect())
    }
    pub fn median_p99(&self) -> f64 {
        median(self.rounds.iter().map(|m| m.p99_us).collect())
    }
}

/// The agents' own cost during the matrix.
pub struct AgentCost {
    pub cpu_secs: f64,
    pub rss_mib: f64,
    pub nfqueue_cpu_secs: f64,
    pub nfqueue_rss_mib: f64,
}

/// Runs the matrix; returns the rows and the agent's cost.
pub fn matrix(args: &BenchArgs, agent: &Path) -> Result<(Vec<Row>, AgentCost)> {
    let lab = Lab::new("bench", 3);
    lab.teardown();
    let result = (|| -> Result<(Vec<Row>, AgentCost)> {
        lab.build()?;
        lab.start_servers()?;
        let agents = setup_peers(&lab, agent)?;
        let agent_cpu0 = process_cpu_seconds(agents.ebpf);
        let nfq_cpu0 = process_cpu_seconds(agents.nfqueue);
        let mut rows = Vec::new();
        for workload in WORKLOADS {
            for peer in Peer::ALL.into_iter().filter(|p| p.serves(workload)) {
                rows.push(Row {
                    workload,
                    peer,
                    rounds: Vec::new(),
                    system_cpu: Vec::new(),
                    ratios: Vec::new(),
                    p99_ratios: Vec::new(),
                    agent_cpu: Vec::new(),
                });
            }
        }
        for round in 1..=args.rounds {
            for workload in WORKLOADS {
                let mut direct: Option<Measure> = None;
                let mut line = format!("bench: round {round} {:<20}", workload.name());
                for peer in Peer::ALL.into_iter().filter(|p| p.serves(workload)) {
                    let own0 = process_cpu_seconds(agents.nfqueue);
                    let (m, cpu) = measure(&lab, args, &peer.target(&lab), workload)?;
                    let own = process_cpu_seconds(agents.nfqueue) - own0;
                    let d = *direct.get_or_insert(m);
                    line.push_str(&format!(
                        " | {} {:.0}/s {:.3}×",
                        peer.short(),
                        m.ops_per_sec,
                        m.ops_per_sec / d.ops_per_sec
                    ));
                    let row = rows
                        .iter_mut()
                        .find(|r| r.workload == workload && r.peer == peer)
                        .expect("row");
                    row.rounds.push(m);
                    row.system_cpu.push(cpu);
                    row.ratios.push(m.ops_per_sec / d.ops_per_sec);
                    row.p99_ratios.push(m.p99_us / d.p99_us.max(1.0));
                    if peer == Peer::Nfqueue {
                        row.agent_cpu.push(own);
                    }
                }
                println!("{line}");
            }
        }
        let cost = AgentCost {
            cpu_secs: process_cpu_seconds(agents.ebpf) - agent_cpu0,
            rss_mib: rss_mib(agents.ebpf),
            nfqueue_cpu_secs: process_cpu_seconds(agents.nfqueue) - nfq_cpu0,
            nfqueue_rss_mib: rss_mib(agents.nfqueue),
        };
        Ok((rows, cost))
    })();
    lab.teardown();
    result
}

/// One point of the scale curve.
pub struct ScalePoint {
    pub vips: usize,
    pub ebpf: Measure,
    pub iptables: Measure,
}

fn scale_vip(prefix: u8, i: usize) -> String {
    let n = i + 1;
    format!("11.{prefix}.{}.{}:80", (n >> 8) & 0xff, n & 0xff)
}

/// New connections to the last of N VIPs, Garrison eBPF against iptables DNAT.
pub fn scale_curve(args: &BenchArgs, agent: &Path, sizes: &[usize]) -> Result<Vec<ScalePoint>> {
    let lab = Lab::new("bcurve", 3);
    lab.teardown();
    let result = (|| -> Result<Vec<ScalePoint>> {
        lab.build()?;
        lab.start_servers()?;
        let client = lab.client_ns();
        lab.exec_in(
            &client,
            &["ip", "route", "add", "11.0.0.0/8", "dev", "eth0"],
        )?;
        let b = backends(&lab);
        let ip_list: Vec<String> = lab.node_ips();
        let entry = |vip: &str| lab::vip_entry_json(vip, &ip_list);
        let first: Vec<String> = (0..1).map(|i| entry(&scale_vip(20, i))).collect();
        let file = lab.write_file("vips.json", &format!("[{}]", first.join(",")))?;
        lab.start_agent(
            agent,
            &["--vips", file.to_str().context("path")?, "--poll-ms", "100"],
            &scale_vip(20, 0),
        )?;
        let mut points = Vec::new();
        for &n in sizes {
            let entries: Vec<String> = (0..n).map(|i| entry(&scale_vip(20, i))).collect();
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, format!("[{}]", entries.join(",")))?;
            std::fs::rename(&tmp, &file)?;
            let start = std::time::Instant::now();
            while !lab
                .api_get("/healthz")
                .is_ok_and(|b| b.contains(&format!("\"vips\":{n}")))
            {
                anyhow::ensure!(
                    start.elapsed().as_secs() < 60,
                    "the agent did not program {n} VIPs"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            // Each peer is measured alone: iptables' nat OUTPUT chain is walked by
            // every new connection in the namespace, the eBPF-steered ones too.
            let vips: Vec<String> = (0..n).map(|i| scale_vip(30, i)).collect();
            let rules =
                lab.write_file("iptables-scale.rules", &iptables_rules(&vips, &b, false))?;
            let empty = lab.write_file("iptables-empty.rules", "*nat\nCOMMIT\n")?;
            let restore = |file: &std::path::Path| -> Result<()> {
                lab.exec_in(
                    &client,
                    &["iptables-restore", file.to_str().context("path")?],
                )
            };
            let mut e = Vec::new();
            let mut t = Vec::new();
            for _ in 0..args.rounds.min(3) {
                restore(&empty)?;
                e.push(measure(&lab, args, &scale_vip(20, n - 1), Workload::New)?.0);
                restore(&rules)?;
                t.push(measure(&lab, args, &scale_vip(30, n - 1), Workload::New)?.0);
            }
            restore(&empty)?;
            let pick = |v: &[Measure]| {
                let mut v = v.to_vec();
                v.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                v[v.len() / 2]
            };
            let point = ScalePoint {
                vips: n,
                ebpf: pick(&e),
                iptables: pick(&t),
            };
            println!(
                "bench: scale {n} VIPs: eBPF {:.0}/s p99 {:.0} µs | iptables {:.0}/s p99 {:.0} µs",
                point.ebpf.ops_per_sec,
                point.ebpf.p99_us,
                point.iptables.ops_per_sec,
                point.iptables.p99_us
            );
            points.push(point);
        }
        Ok(points)
    })();
    lab.teardown();
    result
}

/// Markdown of the matrix, the agent's cost and the scale curve.
pub fn render(
    rows: &[Row],
    cost: &AgentCost,
    curve: &[ScalePoint],
    args: &BenchArgs,
    command: &str,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("Command: `{command}`  \n"));
    s.push_str(&format!("Machine: {}  \n", machine()));
    s.push_str(&format!(
        "Date: {}; {} rounds × {} s per peer and workload, {} concurrent connections, peers alternating within each round. Plot: [benchmarks-dataplane.png](benchmarks-dataplane.png).\n\n",
        cmd::stdout("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        args.rounds,
        args.seconds,
        args.concurrency
    ));
    s.push_str("| workload | peer | ops/s median (min–max) | ratio to direct | p50 µs | p99 µs | p99 ratio | errors | system CPU s / 100k ops |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let ops: Vec<f64> = r.rounds.iter().map(|m| m.ops_per_sec).collect();
        let min = ops.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ops.iter().copied().fold(0.0, f64::max);
        let total_ops: f64 = ops.iter().sum::<f64>() * args.seconds as f64;
        let cpu: f64 = r.system_cpu.iter().sum();
        s.push_str(&format!(
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.3} | {:.0} | {:.0} | {:.2} | {} | {:.1} |\n",
            r.workload.name(),
            r.peer.name(),
            r.median_ops(),
            min,
            max,
            median(r.ratios.clone()),
            median(r.rounds.iter().map(|m| m.p50_us).collect()),
            r.median_p99(),
            median(r.p99_ratios.clone()),
            r.rounds.iter().map(|m| m.errors).sum::<u64>(),
            cpu / total_ops.max(1.0) * 100_000.0,
        ));
    }
    s.push_str(
        "\nUDP rows: the NFQUEUE path (as Minuteman) and haproxy in TCP mode do not carry UDP.\n",
    );
    s.push_str(&format!(
        "\nThe eBPF agent during the matrix: {:.2} CPU s in total, RSS {:.1} MiB at the end. The NFQUEUE agent: {:.2} CPU s, RSS {:.1} MiB.\n",
        cost.cpu_secs, cost.rss_mib, cost.nfqueue_cpu_secs, cost.nfqueue_rss_mib
    ));
    if let Some(r) = rows
        .iter()
        .find(|r| r.peer == Peer::Nfqueue && r.workload == Workload::New)
    {
        let conns: f64 = r.rounds.iter().map(|m| m.ops_per_sec).sum::<f64>() * args.seconds as f64;
        let cpu: f64 = r.agent_cpu.iter().sum();
        let us = cpu / conns.max(1.0) * 1e6;
        s.push_str(&format!(
            "\n**NFQUEUE cost per new connection**: {us:.1} µs of agent CPU (queue receive, backend choice, conntrack entry over ctnetlink, verdict, conntrack events), so one core saturates at about {:.0} new connections/s; the whole machine spent {:.1} CPU s per 100k NFQUEUE connections against {:.1} for direct.\n",
            1e6 / us.max(0.001),
            r.system_cpu.iter().sum::<f64>() / conns.max(1.0) * 100_000.0,
            rows.iter()
                .find(|d| d.peer == Peer::Direct && d.workload == Workload::New)
                .map_or(0.0, |d| {
                    let n: f64 = d.rounds.iter().map(|m| m.ops_per_sec).sum::<f64>() * args.seconds as f64;
                    d.system_cpu.iter().sum::<f64>() / n.max(1.0) * 100_000.0
                }),
        ));
    }
    if !curve.is_empty() {
        s.push_str("\n**Scale curve** (new connections to the last of N VIPs; target: Garrison at 10,000 VIPs within 5 % of 1 VIP):\n\n");
        s.push_str("| VIPs | Garrison eBPF ops/s | p99 µs | iptables DNAT ops/s | p99 µs |\n|---|---|---|---|---|\n");
        for p in curve {
            s.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                p.vips,
                p.ebpf.ops_per_sec,
                p.ebpf.p99_us,
                p.iptables.ops_per_sec,
                p.iptables.p99_us
            ));
        }
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            s.push_str(&format!(
                "\nGarrison at {} VIPs / at {} VIP: {:.3}; iptables: {:.3}.\n",
                last.vips,
                first.vips,
                last.ebpf.ops_per_sec / first.ebpf.ops_per_sec,
                last.iptables.ops_per_sec / first.iptables.ops_per_sec
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_spread_evenly() {
        let r = iptables_rules(
            &["11.1.2.4:80".into()],
            &["a:1".into(), "b:1".into(), "c:1".into()],
            true,
        );
        assert!(
            r.contains("--probability 0.33333 -j DNAT --to-destination a:1"),
            "{r}"
        );
        assert!(
            r.contains("--probability 0.50000 -j DNAT --to-destination b:1"),
            "{r}"
        );
        assert!(
            r.contains("-A GB-VIP-0-tcp -p tcp -j DNAT --to-destination c:1"),
            "{r}"
        );
        assert!(
            r.contains("-A OUTPUT -d 11.1.2.4/32 -p udp -m udp --dport 80 -j GB-VIP-0-udp"),
            "{r}"
        );
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
    }

    #[test]
    fn nft_and_haproxy_configs() {
        let n = nft_rules(
            "11.1.2.5:80",
            &["198.18.0.11:8080".into(), "198.18.0.12:8080".into()],
        );
        assert!(
            n.contains(
                "meta l4proto { tcp, udp } th dport 80 dnat ip to numgen random mod 2 map { 0 : 198.18.0.11 . 8080, 1 : 198.18.0.12 . 8080 }"
            ),
            "{n}"
        );
        let h = haproxy_config(&["198.18.0.11:8080".into()]);
        assert!(
            h.contains("mode tcp") && h.contains("server n0 198.18.0.11:8080"),
            "{h}"
        );
    }
}
