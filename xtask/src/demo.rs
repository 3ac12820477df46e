//! `cargo xtask demo`: Garrison balancing real connections.
//!
//! Builds three backend "nodes" and one client as network namespaces joined by
//! a bridge (in a namespace of its own, so the host's networking is never
//! touched), starts a small HTTP server in each node, starts `garrison-agent`
//! in the client namespace with a VIP file declaring 11.1.2.3:80 → the three
//! nodes, then connects from the client to the VIP 30 times, printing which
//! node answered, the agent's /vips table and the distribution. Everything is
//! torn down on exit and on Ctrl-C, unless `--keep`; `--down` removes a kept demo.
//!
//! Addresses: 198.18.0.0/24 (RFC 2544 benchmarking range) inside the demo's
//! own namespaces; the VIP is only ever used from the client namespace.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{cmd, deps};

const PREFIX: &str = "gdemo";
const FABRIC: &str = "gdemo-fabric";
const CLIENT: &str = "gdemo-client";
const NODES: [&str; 3] = ["gdemo-node1", "gdemo-node2", "gdemo-node3"];
const VIP: &str = "11.1.2.3:80";
const BACKEND_PORT: u16 = 8080;
const RUN_DIR: &str = "/run/garrison-demo";
const API: &str = "127.0.0.1:61421";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leave the namespaces and the agent running, and print how to reach them.
    #[arg(long)]
    pub keep: bool,
    /// Remove a demo left running by --keep, and exit.
    #[arg(long)]
    pub down: bool,
    /// Connections to make through the VIP.
    #[arg(long, default_value_t = 30)]
    pub count: u32,
}

fn node_ip(i: usize) -> String {
    format!("198.18.0.{}", 11 + i)
}

const CLIENT_IP: &str = "198.18.0.100";

fn ip(args: &[&str]) -> Result<()> {
    cmd::output("ip", args).map(drop)
}

fn netns_exec(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", ns];
    full.extend(args);
    ip(&full)
}

fn run_dir() -> PathBuf {
    PathBuf::from(RUN_DIR)
}

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == dir.to_str())
}

fn mount(fstype: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if !is_mounted(dir) {
        cmd::output(
            "mount",
            &["-t", fstype, fstype, dir.to_str().context("path")?],
        )?;
    }
    Ok(())
}

/// Removes everything a demo may have left (idempotent, best effort).
fn teardown() {
    let pids = run_dir().join("pids");
    if let Ok(text) = std::fs::read_to_string(&pids) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a pid this demo started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The agent was started with --cleanup; remove pins anyway if it could not.
    let pins = run_dir().join("bpffs/garrison");
    if pins.exists() {
        let _ = std::fs::remove_dir_all(&pins);
    }
    for ns in NODES.iter().chain([&CLIENT, &FABRIC]) {
        let _ = cmd::output("ip", &["netns", "del", ns]);
    }
    let cg = run_dir().join("cgroup2/garrison-demo");
    let _ = std::fs::remove_dir(&cg);
    for m in ["bpffs", "cgroup2"] {
        let dir = run_dir().join(m);
        if is_mounted(&dir) {
            let _ = cmd::output("umount", &[dir.to_str().unwrap_or_default()]);
        }
    }
    let _ = std::fs::remove_dir_all(run_dir());
}

fn build_topology() -> Result<()> {
    for ns in NODES.iter().chain([&CLIENT, &FABRIC]) {
        ip(&["netns", "add", ns])?;
        netns_exec(ns, &["ip", "link", "set", "lo", "up"])?;
    }
    netns_exec(FABRIC, &["ip", "link", "add", "br0", "type", "bridge"])?;
    netns_exec(FABRIC, &["ip", "link", "set", "br0", "up"])?;
    let mut members: Vec<(&str, String)> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, format!("{}/24", node_ip(i))))
        .collect();
    members.push((CLIENT, format!("{CLIENT_IP}/24")));
    for (i, (ns, addr)) in members.iter().enumerate() {
        let outer = format!("{PREFIX}-v{i}");
        ip(&[
            "link", "add", &outer, "netns", FABRIC, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        netns_exec(
            FABRIC,
            &["ip", "link", "set", &outer, "master", "br0", "up"],
        )?;
        netns_exec(ns, &["ip", "addr", "add", addr, "dev", "eth0"])?;
        netns_exec(ns, &["ip", "link", "set", "eth0", "up"])?;
    }
    Ok(())
}

fn record_pid(pid: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir().join("pids"))?;
    writeln!(f, "{pid}")?;
    Ok(())
}

fn spawn_in(ns: &str, program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {} in {ns}", program.display()))?;
    record_pid(child.id())?;
    Ok(child)
}

fn agent_binary() -> Result<PathBuf> {
    cmd::cargo(&["build", "-p", "garrison-agent"])?;
    let bin = cmd::root().join("target/debug/garrison-agent");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

fn write_vips() -> Result<PathBuf> {
    let backends: Vec<String> = (0..NODES.len())
        .map(|i| format!(r#"{{"ip":"{}","port":{BACKEND_PORT}}}"#, node_ip(i)))
        .collect();
    let path = run_dir().join("vips.json");
    std::fs::write(
        &path,
        format!(
            r#"[{{"vip":"{VIP}","protocol":"tcp","backend":[{}]}}]"#,
            backends.join(",")
        ),
    )?;
    Ok(path)
}

fn api_get(path: &str) -> Result<String> {
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            CLIENT,
            "curl",
            "-sS",
            "--max-time",
            "2",
            &format!("http://{API}{path}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn wait_for_agent(log: &Path) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if api_get("/v1/vips").is_ok_and(|b| b.contains(VIP)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the agent did not serve {VIP} within 15 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.down {
        teardown();
        println!("demo: removed");
        return Ok(());
    }
    deps::run()?;
    let agent = agent_binary()?;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    teardown();
    let result = demo(args, &agent);
    if result.is_err() || !args.keep {
        teardown();
        println!("demo: torn down (namespaces, agent, pins, cgroup)");
    }
    result
}

fn demo(args: &DemoArgs, agent: &Path) -> Result<()> {
    std::fs::create_dir_all(run_dir())?;
    println!("demo: building 3 nodes and a client in network namespaces (bridge in {FABRIC})");
    build_topology()?;
    let me = std::env::current_exe()?;
    for (i, ns) in NODES.iter().enumerate() {
        let listen = format!("{}:{BACKEND_PORT}", node_ip(i));
        let name = format!("node{}", i + 1);
        let log = run_dir().join(format!("{name}.log"));
        spawn_in(
            ns,
            &me,
            &["demo-serve", "--name", &name, "--listen", &listen],
            &log,
        )?;
    }
    mount("bpf", &run_dir().join("bpffs"))?;
    mount("cgroup2", &run_dir().join("cgroup2"))?;
    let cgroup = run_dir().join("cgroup2/garrison-demo");
    std::fs::create_dir_all(&cgroup)?;
    let vips = write_vips()?;
    let log = run_dir().join("agent.log");
    let pins = run_dir().join("bpffs/garrison");
    println!("demo: starting garrison-agent in {CLIENT}: VIP {VIP} -> 3 nodes, API on {API}");
    spawn_in(
        CLIENT,
        agent,
        &[
            "run",
            "--api",
            API,
            "--cgroup",
            cgroup.to_str().context("path")?,
            "--bpffs",
            pins.to_str().context("path")?,
            "--vips",
            vips.to_str().context("path")?,
            "--cleanup",
        ],
        &log,
    )?;
    wait_for_agent(&log)?;
    check_interrupted()?;

    println!("demo: {} connections from {CLIENT} to {VIP}:", args.count);
    let count = args.count.to_string();
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            CLIENT,
            me.to_str().context("path")?,
            "demo-client",
            "--cgroup",
            cgroup.to_str().context("path")?,
            "--vip",
            VIP,
            "--count",
            &count,
        ],
    )?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    check_interrupted()?;

    println!("\ndemo: the agent's table (curl {API}/vips in {CLIENT}):");
    let body = api_get("/vips")?;
    print_vips(&body)?;
    if args.keep {
        println!("\ndemo: left running (--keep). Try:");
        println!("  ip netns exec {CLIENT} curl -s {API}/vips");
        println!(
            "  ip netns exec {CLIENT} sh -c 'echo $$ > {}/cgroup.procs; exec curl -s http://{VIP}/'",
            cgroup.display()
        );
        println!("  cargo xtask demo --down    # remove it");
    }
    Ok(())
}

fn print_vips(body: &str) -> Result<()> {
    let json: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("/vips is not JSON: {body}"))?;
    let vips = json["vips"]
        .as_object()
        .context("/vips has no \"vips\" object")?;
    println!(
        "  {:<16} {:<22} {:>10} {:>8}",
        "VIP", "BACKEND", "CONNECTED", "HEALTHY"
    );
    for (vip, backends) in vips {
        for (backend, stats) in backends.as_object().into_iter().flatten() {
            println!(
                "  {:<16} {:<22} {:>10} {:>8}",
                vip,
                backend,
                stats["total_sucesses"].to_string(),
                stats["is_healthy"].to_string()
            );
        }
    }
    Ok(())
}

/// Hidden helper: a tiny HTTP server answering with its node name.
pub fn serve(name: &str, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("{name}\n");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    Ok(())
}

/// Hidden helper run in the client namespace: joins the demo cgroup, then
/// makes `count` HTTP requests to the VIP and prints who answered.
pub fn client(cgroup: &Path, vip: SocketAddr, count: u32) -> Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining {}", cgroup.display()))?;
    let mut tally = std::collections::BTreeMap::<String, u32>::new();
    for i in 1..=count {
        let answer = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n"
            )?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or("?")
                .trim()
                .to_string())
        })();
        let who = answer.unwrap_or_else(|e| format!("FAILED: {e}"));
        println!("  {i:>3}  GET http://{vip}/  ->  {who}");
        *tally.entry(who).or_default() += 1;
    }
    println!("\ndemo: distribution over {count} connections:");
    for (who, n) in &tally {
        println!("  {who:<8} {n:>3}  {}", "#".repeat(*n as usize));
    }
    Ok(())
}
