//! `cargo xtask bench control`: the control's two latencies, on the demo's
//! cluster ([`crate::control_lab`]: control, three node agents, a client agent;
//! release builds):
//!
//! - **deploy**: from `POST /v2/apps` (3 instances, HTTP health checks every
//!   100 ms) until all three are healthy at the control, the VIP name resolves
//!   through Garrison's DNS and every instance answered through the VIP;
//! - **drain**: from a task's death (SIGKILL) until its backend weighs 0 (or
//!   is gone) on every agent (3 nodes and the client).
//!
//! Then the decision cost at scale, in-process (`control/examples/cluster_bench.rs`),
//! and the cost of authentication and TLS at the API ([`auth`],
//! `control/examples/auth_bench.rs`; alone: `cargo xtask bench control-auth`).
//!
//! Both latencies are measured by `xtask bench-control-client`, run inside the client
//! namespace and cgroup (so it reaches the control, the agents and the VIP as
//! a task there would); each round deploys, kills one task, then deletes the
//! app and waits for the VIP to be gone everywhere.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use garrison_control::client::{ApiClient, http_request};
use serde_json::Value;

use crate::control_lab::{
    self, ControlLab, VIP_NAME, control_addr, dns_addr, kill_task_process, vip_backends_at, web_app,
};
use crate::lab::{self, Lab};

/// Runs the benchmark; returns the markdown section.
pub fn run(rounds: u32) -> Result<String> {
    let agent = lab::workspace_binary("garrison-agent", true)?;
    let control = lab::workspace_binary("garrison-control", true)?;
    let lab = Lab::new("bctl", 3);
    lab.teardown();
    let result = (|| -> Result<String> {
        lab.build()?;
        let cl = ControlLab::start(&lab, 3, &agent, &control, "ebpf")?;
        let apis: Vec<String> = cl.agent_apis().iter().map(|a| a.to_string()).collect();
        let cgroup = lab.cgroup();
        let out = lab.run_client(&[
            "bench-control-client",
            "--cgroup",
            cgroup.to_str().context("path")?,
            "--rounds",
            &rounds.to_string(),
            "--agents",
            &apis.join(","),
            "--ca",
            lab.run_dir()
                .join("control-data/tls/ca.pem")
                .to_str()
                .context("path")?,
            "--token",
            cl.api.token.as_deref().context("logged in")?,
        ]);
        let out = out.with_context(|| cl.logs())?;
        render(&out, rounds)
    })();
    lab.teardown();
    let mut section = result?;
    section.push_str(&scale()?);
    Ok(section)
}

/// Builds the control's example `name` in release mode: its binary.
fn release_example(name: &str) -> Result<std::path::PathBuf> {
    crate::cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "garrison-control",
        "--example",
        name,
    ])?;
    Ok(crate::cmd::target_dir().join("release/examples").join(name))
}

/// The decision cost at scale (`control/examples/cluster_bench.rs`): no
/// processes, the cluster's own passes over simulated agents and tasks.
fn scale() -> Result<String> {
    let bin = release_example("cluster_bench")?;
    let mut s = String::from(
        "\n**Decision cost at scale** (`control/examples/cluster_bench.rs`, in-process: agents of 4 cpus / 8 GB, apps of 0.1 cpu / 32 MB with a named VIP each; one core):\n\n| agents × apps × instances | place all ms | periodic pass p50 / p99 ms | task death → replacement + VIP table ms (p50) | peak RSS MiB |\n|---|---|---|---|---|\n",
    );
    for (agents, apps, instances) in [
        ("100", "100", "3"),
        ("1000", "300", "10"),
        ("5000", "1000", "10"),
    ] {
        let line = crate::cmd::stdout(bin.to_str().context("path")?, &[agents, apps, instances])?;
        println!("bench: {line}");
        let f = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}="))?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        s.push_str(&format!(
            "| {agents} × {apps} × {instances} | {:.1} | {:.2} / {:.2} | {:.1} | {:.0} |\n",
            f("place_ms"),
            f("pass_p50_ms"),
            f("pass_p99_ms"),
            f("status_pass_p50_ms"),
            f("rss_mib")
        ));
    }
    s.push_str(
        "\nThe periodic pass runs every 250 ms; heartbeats, counters and acks do not run it.\n",
    );
    Ok(s)
}

/// How long each variant of the auth benchmark runs in a round, ms.
const AUTH_BATCH_MS: u64 = 500;

/// The cost of authentication and TLS at the API
/// (`control/examples/auth_bench.rs`, in-process): the markdown section of
/// docs/benchmarks.md after the control's (`bench:control-auth`); `suite`
/// is what ran it (`control` or `control-auth`), for the command shown.
pub fn auth(suite: &str, rounds: u32, quick: bool) -> Result<String> {
    let bin = release_example("auth_bench")?;
    let shown = if quick {
        format!("cargo xtask bench {suite} --quick")
    } else {
        format!("cargo xtask bench {suite} --rounds {rounds}")
    };
    let rounds = rounds.max(5).to_string();
    let batch = if quick { 200 } else { AUTH_BATCH_MS }.to_string();
    let args = ["--rounds", rounds.as_str(), "--batch-ms", batch.as_str()];
    println!("+ {} {}", bin.display(), args.join(" "));
    // Each round's figures (stderr) show as they come; the section is stdout.
    let out = std::process::Command::new(&bin)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", bin.display(), out.status);
    }
    let body = String::from_utf8(out.stdout).context("auth_bench's output")?;
    let alone = if suite == "control" {
        " (this part alone: `cargo xtask bench control-auth`)"
    } else {
        ""
    };
    Ok(format!(
        "Command: `{shown}`{alone}, which runs `auth_bench {}` (release build)  \nMachine: {}\n{body}",
        args.join(" "),
        super::machine()
    ))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn render(out: &str, rounds: u32) -> Result<String> {
    let mut deploy = Vec::new();
    let mut healthy = Vec::new();
    let mut drain = Vec::new();
    let mut replaced = Vec::new();
    for line in out.lines().filter(|l| l.starts_with("round=")) {
        println!("bench: {line}");
        let field = |k: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}="))?.parse().ok())
        };
        deploy.extend(field("deploy_ms"));
        healthy.extend(field("healthy_ms"));
        drain.extend(field("drain_ms"));
        replaced.extend(field("replaced_ms"));
    }
    if drain.len() != rounds as usize {
        bail!("expected {rounds} rounds, got {}:\n{out}", drain.len());
    }
    let mut s = format!(
        "Command: `cargo xtask bench control --rounds {rounds}` (release builds; control + 3 node agents + a client agent in lab namespaces, eBPF path; 3 instances of `xtask lab-serve` with HTTP checks every 100 ms)  \nMachine: {}\n\n",
        super::machine()
    );
    s.push_str("| measure | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n");
    for (name, v) in [
        ("POST → 3 healthy at the control", &healthy),
        (
            "POST → healthy, name resolves, every instance answered through the VIP",
            &deploy,
        ),
        ("task death (SIGKILL) → weight 0 on all 4 agents", &drain),
        ("task death → replacement healthy", &replaced),
    ] {
        s.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.1} |\n",
            percentile(v.clone(), 0.5),
            percentile(v.clone(), 0.99),
            percentile(v.clone(), 1.0)
        ));
    }
    s.push_str(&format!(
        "\n{rounds} rounds. Target: drain under 100 ms (DC/OS polled Mesos every 2 s). Deploy time is bounded below by the first health check (100 ms after start).\n"
    ));
    Ok(s)
}

fn get(api: &ApiClient, path: &str) -> Result<Value> {
    let (status, body) = api.request("GET", path, None)?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Who answered one GET through the VIP.
fn ask(vip: SocketAddr) -> Option<String> {
    http_request(vip, "GET", "/", None)
        .ok()
        .filter(|r| r.0 == 200)
        .map(|r| r.1.trim().to_string())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Hidden helper in the client namespace: the measured rounds.
pub fn client(
    cgroup: &Path,
    rounds: u32,
    agents: &[SocketAddr],
    ca: &Path,
    token: &str,
) -> Result<()> {
    lab::join_cgroup(cgroup)?;
    let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let api = ApiClient::tls(control_addr(), &ca)?.with_token(token);
    let app = web_app(3, 0.1)?;
    for round in 1..=rounds {
        let t0 = Instant::now();
        let (status, body) = api.request("POST", "/v2/apps", Some(&app))?;
        if status != 201 {
            bail!("POST /v2/apps: {status} {body}");
        }
        let mut healthy_ms = None;
        let mut seen = BTreeSet::new();
        let deadline = t0 + Duration::from_secs(60);
        let deploy_ms = loop {
            if Instant::now() > deadline {
                bail!("round {round}: not deployed within 60 s");
            }
            if healthy_ms.is_none() {
                let a = get(&api, "/v2/apps/web")?;
                if a["app"]["tasksHealthy"] == 3 {
                    healthy_ms = Some(ms(t0));
                }
            }
            if healthy_ms.is_some() {
                let ips = garrison_control::dns::client::query_a(dns_addr(), VIP_NAME)?.addresses;
                if let Some(ip) = ips.first() {
                    if let Some(who) = ask(SocketAddr::new((*ip).into(), 80)) {
                        seen.insert(who);
                    }
                    if seen.len() == 3 {
                        break ms(t0);
                    }
                    continue;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let tasks = get(&api, "/v2/apps/web")?;
        let victim = &tasks["app"]["tasks"][0];
        let host = victim["host"].as_str().context("task host")?.to_string();
        let port = victim["ports"][0].as_u64().context("task port")? as u16;
        let ip = victim["ipAddresses"][0]["ipAddress"]
            .as_str()
            .context("task ip")?;
        let target = format!("{ip}:{port}");
        let t1 = Instant::now();
        if kill_task_process(&host, port) == 0 {
            bail!("round {round}: no process for {host}:{port}");
        }
        let drain_ms = loop {
            if t1.elapsed() > Duration::from_secs(10) {
                bail!("round {round}: {target} not drained within 10 s");
            }
            let all = vip_backends_at(agents)?;
            let drained = all.iter().all(|v| {
                v.as_ref()
                    .is_none_or(|b| b.iter().all(|(a, w)| a != &target || *w == 0))
            });
            if drained {
                break ms(t1);
            }
        };
        let replaced_ms = control_lab::wait_for("replacement healthy", 60, || {
            let a = get(&api, "/v2/apps/web")?;
            let ok = a["app"]["tasksHealthy"] == 3
                && a["app"]["tasks"].as_array().is_some_and(|t| t.len() == 3);
            Ok(ok.then(|| ms(t1)))
        })?;
        let (status, body) = api.request("DELETE", "/v2/apps/web", None)?;
        if status != 200 {
            bail!("DELETE: {status} {body}");
        }
        control_lab::wait_for("the app gone", 60, || {
            let gone = vip_backends_at(agents)?.iter().all(Option::is_none)
                && get(&api, "/v2/tasks")?["tasks"]
                    .as_array()
                    .is_some_and(|t| t.is_empty())
                && get(&api, "/v2/deployments")?
                    .as_array()
                    .is_some_and(|d| d.is_empty());
            Ok(gone.then_some(()))
        })?;
        println!(
            "round={round} healthy_ms={:.1} deploy_ms={deploy_ms:.1} drain_ms={drain_ms:.1} replaced_ms={replaced_ms:.1}",
            healthy_ms.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
