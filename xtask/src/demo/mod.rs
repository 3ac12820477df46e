//! `cargo xtask demo`: Garrison as a small datacenter OS, then balancing.
//!
//! The default demo ([`control_demo`]): three node namespaces and a client
//! namespace joined by a bridge ([`crate::lab`]); `garrison-control` in the
//! client namespace; an agent in every node namespace following it, and one
//! with tasks disabled in the client namespace ([`crate::control_lab`]). It
//! posts a Marathon app (3 instances of `xtask lab-serve`, `VIP_0` `/web:80`,
//! an HTTP health check), waits until healthy, resolves
//! `web.marathon.l4lb.thisdcos.directory` through Garrison's DNS from the
//! client namespace, connects to the VIP 30 times showing the spread, scales
//! to 5, kills one task (SIGKILL) and shows it drained and replaced, deletes
//! the app and shows the VIP gone on every agent.
//!
//! `--mesos` runs the earlier demo instead: a generated Mesos master `/state`
//! (one marathon task per node labelled `VIP_0=/web:80`) polled by one agent
//! in the client namespace, Minuteman-style; `--dataplane nfqueue` runs it on
//! the NFQUEUE path. Everything is torn down on exit and on Ctrl-C, unless
//! `--keep`; `--down` removes a kept demo. VIPs are only ever used from the
//! client namespace.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    deps,
    lab::{self, API, Lab},
};

mod control;
use control::control_demo;

const VIP_NAME: &str = "web.marathon.l4lb.thisdcos.directory:80";
const MESOS_STATE: &str = "127.0.0.1:5051";

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
    /// The agent's data path: auto, ebpf or nfqueue (the Minuteman path).
    #[arg(long, default_value = "auto")]
    pub dataplane: String,
    /// The earlier demo: one agent polling a Mesos master state, no control.
    #[arg(long)]
    pub mesos: bool,
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
    let lab = Lab::new("demo", 3);
    if args.down {
        lab.teardown();
        println!("demo: removed");
        return Ok(());
    }
    deps::run()?;
    let agent = lab::agent_binary(false)?;
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
    lab.teardown();
    let result = if args.mesos {
        demo(&lab, args, &agent)
    } else {
        lab::workspace_binary("garrison-control", false)
            .and_then(|control| control_demo(&lab, args, &agent, &control))
    };
    if result.is_err() || !args.keep {
        lab.teardown();
        println!("demo: torn down (namespaces, agent, pins, cgroup)");
    }
    result
}

fn demo(lab: &Lab, args: &DemoArgs, agent: &Path) -> Result<()> {
    let client = lab.client_ns();
    println!(
        "demo: building 3 nodes and a client ({client}) in network namespaces joined by a bridge"
    );
    lab.build()?;
    lab.start_servers()?;
    let state = lab.write_file(
        "mesos-state.json",
        &lab::mesos_master_state(&lab.node_ips(), "/web:80"),
    )?;
    let me = std::env::current_exe()?;
    lab.spawn_in(
        &client,
        &me,
        &[
            "lab-serve-file",
            "--listen",
            MESOS_STATE,
            "--file",
            state.to_str().context("path")?,
        ],
        &lab.write_file("mesos.log", "")?,
    )?;
    println!(
        "demo: Mesos master state on {MESOS_STATE} in {client}: 3 marathon tasks labelled VIP_0=/web:80"
    );
    println!(
        "demo: starting garrison-agent in {client} (API on {API}), polling that state every 2 s"
    );
    // VIPs are routed out of the client's veth (inside the lab only): the
    // NFQUEUE path sees SYNs on their way out; the eBPF path never needs it.
    lab.exec_in(
        &client,
        &["ip", "route", "add", "11.0.0.0/8", "dev", "eth0"],
    )?;
    let url = format!("http://{MESOS_STATE}/state");
    lab.start_agent(
        agent,
        &["--mesos-state", &url, "--dataplane", &args.dataplane],
        VIP_NAME,
    )?;
    println!("demo: data path: {}", args.dataplane);
    let vip = named_vip_address(&lab.api_get("/v1/vips")?)?;
    println!("demo: named VIP {VIP_NAME} -> {vip}");
    check_interrupted()?;

    println!("demo: {} connections from {client} to {vip}:", args.count);
    let cgroup = lab.cgroup();
    let count = args.count.to_string();
    let out = lab.run_client(&[
        "demo-client",
        "--cgroup",
        cgroup.to_str().context("path")?,
        "--vip",
        &vip,
        "--count",
        &count,
    ])?;
    print!("{out}");
    check_interrupted()?;

    // And once with a real curl, as a user would (it must join the cgroup the
    // agent attached to, like every task on a Garrison host is in it).
    let join_and_curl = format!(
        "echo $$ > {}/cgroup.procs && exec curl -sS --max-time 2 http://{vip}/",
        cgroup.display()
    );
    let out = crate::cmd::output(
        "ip",
        &["netns", "exec", &client, "sh", "-c", &join_and_curl],
    )?;
    println!(
        "\ndemo: curl http://{vip}/ from {client} -> {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    println!("\ndemo: the agent's table (curl {API}/vips in {client}):");
    print_vips(&lab.api_get("/vips")?)?;
    if args.keep {
        println!("\ndemo: left running (--keep). Try:");
        println!("  ip netns exec {client} curl -s {API}/vips");
        println!(
            "  ip netns exec {client} sh -c 'echo $$ > {}/cgroup.procs; exec curl -s http://{vip}/'",
            cgroup.display()
        );
        println!("  cargo xtask demo --down    # remove it");
    }
    Ok(())
}

/// The address of the demo's named VIP in a `/v1/vips` body.
fn named_vip_address(body: &str) -> Result<String> {
    let json: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("/v1/vips is not JSON: {body}"))?;
    json.as_array()
        .into_iter()
        .flatten()
        .find(|e| e["vip"] == VIP_NAME)
        .and_then(|e| e["address"].as_str().map(str::to_string))
        .with_context(|| format!("/v1/vips lists no {VIP_NAME}: {body}"))
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

/// Hidden helper run in the client namespace: joins the demo cgroup, then
/// makes `count` HTTP requests to the VIP and prints who answered.
pub fn client(cgroup: &Path, vip: SocketAddr, count: u32) -> Result<()> {
    lab::join_cgroup(cgroup)?;
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
    let failed: u32 = tally
        .iter()
        .filter(|(who, _)| who.starts_with("FAILED"))
        .map(|(_, n)| n)
        .sum();
    if failed > 0 {
        bail!("{failed} of {count} connections through the VIP failed");
    }
    Ok(())
}
