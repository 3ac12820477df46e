//! `cargo xtask bench allocator`: the Mesos allocator benchmark scenarios
//! (control/examples/allocator_bench.rs, release build), next to the figures
//! Mesos published for the same scenarios.
use anyhow::{Context, Result};

use crate::cmd;

const CYCLES: &str = "5";

fn run_one(args: &[&str]) -> Result<std::collections::BTreeMap<String, String>> {
    let bin = cmd::root().join("target/release/examples/allocator_bench");
    let mut full = vec![CYCLES];
    full.splice(0..0, [args[0]]);
    full.extend(&args[1..]);
    let out = cmd::stdout(bin.to_str().context("path")?, &full)?;
    println!("bench: {out}");
    Ok(out
        .split_whitespace()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

fn ms(m: &std::collections::BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Runs every scenario and renders the markdown section.
pub fn run() -> Result<String> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "garrison-control",
        "--example",
        "allocator_bench",
    ])?;
    let mut s = String::new();
    s.push_str("Command: `cargo xtask bench allocator` (5 timed cycles per row, release build, one core).\n\n");
    s.push_str("**(a) decline offers**: agents `cpus:24;mem:4096;disk:4096;ports:[31000-32000]` with 16 cpus of each in use, frameworks in one role declining every offer with a long filter.\n\n");
    s.push_str("| agents × frameworks | median cycle ms | p99 ms | peak RSS MiB | Mesos 1.8 (published) |\n|---|---|---|---|---|\n");
    let mut base = None;
    let mut growth = Vec::new();
    for agents in ["1000", "10000", "50000"] {
        for fws in ["100", "1000", "6000"] {
            let m = run_one(&["a", agents, fws])?;
            let mesos = if agents == "10000" && fws == "1000" {
                "≈ 1,100 ms"
            } else {
                ""
            };
            s.push_str(&format!(
                "| {agents} × {fws} | {:.1} | {:.1} | {:.0} | {mesos} |\n",
                ms(&m, "median_ms"),
                ms(&m, "p99_ms"),
                ms(&m, "rss_mib")
            ));
            let a: f64 = agents.parse()?;
            let f: f64 = fws.parse()?;
            let cost = ms(&m, "median_ms");
            let model = a * f.log2();
            let b = *base.get_or_insert((cost, model));
            growth.push(format!(
                "{agents}×{fws}: {:.2}",
                (cost / b.0) / (model / b.1)
            ));
        }
    }
    s.push_str(&format!(
        "\nGrowth against agents × log₂(frameworks), normalised to 1000 × 100 (≤ 1 means no worse than that model): {}.\n\n",
        growth.join(", ")
    ));
    let m = run_one(&["b", "3000", "3000"])?;
    s.push_str("**(b) quota**: 3,000 agents, 3,000 roles each with a quota of cpus 1 and mem 256, one framework per role.\n\n");
    s.push_str("| agents × roles × frameworks | median cycle ms | p99 ms | peak RSS MiB | Mesos (published) |\n|---|---|---|---|---|\n");
    s.push_str(&format!(
        "| 3000 × 3000 × 3000 | {:.1} | {:.1} | {:.0} | ≈ 15,000 ms |\n",
        ms(&m, "median_ms"),
        ms(&m, "p99_ms"),
        ms(&m, "rss_mib")
    ));
    s.push_str("\nTargets (issue 8): 10k × 1k ≤ 50 ms per cycle; (b) ≤ 200 ms.\n");
    Ok(s)
}
