//! `cargo xtask bench isolation`: task launch latency (request → RUNNING) and
//! teardown latency (kill → final state, cgroups removed) through the agent's
//! launcher (`garrison-agent bench-tasks`, release build), for each isolator
//! set, on this host's cgroup layout.
use anyhow::{Context, Result};

use crate::{cmd, lab};

const SETS: &[&str] = &[
    "",
    "cpu",
    "memory",
    "pids",
    "cpu,memory,pids",
    "cpu,memory,pids,disk/du",
];
const COUNT: &str = "200";

struct Row {
    set: &'static str,
    fields: std::collections::BTreeMap<String, f64>,
}

fn parse(line: &str) -> std::collections::BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Runs every set and returns the markdown section.
pub fn run() -> Result<String> {
    let agent = lab::agent_binary(true)?;
    let mut rows = Vec::new();
    for set in SETS {
        let work =
            std::env::temp_dir().join(format!("garrison-bench-tasks-{}", std::process::id()));
        let out = std::process::Command::new(&agent)
            .args(["bench-tasks", "--work-dir"])
            .arg(&work)
            .args(["--isolators", set, "--count", COUNT])
            .env("RUST_LOG", "warn")
            .output()
            .context("running garrison-agent bench-tasks")?;
        anyhow::ensure!(
            out.status.success(),
            "bench-tasks {set:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().context("no output")?;
        println!("bench: isolators [{set}]: {line}");
        rows.push(Row {
            set,
            fields: parse(line),
        });
    }
    let layout =
        cmd::stdout("sh", &["-c", "grep -c ' - cgroup ' /proc/self/mountinfo"]).unwrap_or_default();
    let mut s = format!(
        "Command: `cargo xtask bench isolation` ({COUNT} sequential `sleep 30` tasks per set, each launched then killed; release build)  \nMachine: {}; cgroup v1 hierarchies mounted: {layout} (0: pure v2)\n\n",
        super::machine()
    );
    s.push_str("| isolators | launch p50 ms | launch p99 ms | teardown p50 ms | teardown p99 ms |\n|---|---|---|---|---|\n");
    for r in &rows {
        let f = |k: &str| r.fields.get(k).copied().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            if r.set.is_empty() { "(none)" } else { r.set },
            f("launch_p50_ms"),
            f("launch_p99_ms"),
            f("teardown_p50_ms"),
            f("teardown_p99_ms"),
        ));
    }
    s.push_str("\nTarget: launch p99 under 20 ms with cpu+memory+pids.\n");
    Ok(s)
}
