//! The Mesos allocator benchmark scenarios, run by `cargo xtask bench allocator`
//! (release build). Prints one line per measurement:
//! `scenario=a agents=N frameworks=M cycles=K median_ms=… p99_ms=… max_ms=… rss_mib=…`.
//!
//! (a) "decline offers": agents `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`
//!     with 16 cpus of each already used (allocated to a framework that keeps
//!     them), frameworks all in one role declining every offer with a long
//!     filter; one cycle is timed at a time, offers declined in between.
//! (b) "quota": 3,000 agents, 3,000 roles each with a small quota
//!     (cpus 1, mem 256), one framework per role that keeps what it gets.
use std::time::{Duration, Instant};

mod support;
use support::{percentile, rss_mib};

use garrison_control::{
    allocator::{Allocator, ManualClock, Quota},
    resources::{Quantity, Resources},
};

fn stats(ms: Vec<f64>) -> (f64, f64, f64) {
    (
        percentile(ms.clone(), 0.5),
        percentile(ms.clone(), 0.99),
        percentile(ms, 1.0),
    )
}

/// `agents` agents of `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`.
fn cluster(agents: usize) -> Allocator<ManualClock> {
    let mut alloc = Allocator::with_clock(ManualClock::default());
    let total = Resources::parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]").unwrap();
    for i in 0..agents {
        alloc
            .add_agent(&format!("agent-{i}"), total.clone())
            .unwrap();
    }
    alloc
}

/// Times `cycles` allocation cycles; every offer is declined with a long filter.
fn timed_cycles(alloc: &mut Allocator<ManualClock>, cycles: usize) -> Vec<f64> {
    let mut times = Vec::new();
    for _ in 0..cycles {
        let t = Instant::now();
        let offers = alloc.allocate();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        for o in &offers {
            alloc.recover(o, Some(Duration::from_secs(86_400))).unwrap();
        }
    }
    times
}

fn scenario_a(agents: usize, frameworks: usize, cycles: usize) -> Vec<f64> {
    let mut alloc = cluster(agents);
    // 16 cpus of each agent in use: a lone framework is offered every agent,
    // keeps 16 cpus of each and returns the rest.
    alloc.add_framework("holder", &["used"]).unwrap();
    let offers = alloc.allocate();
    assert_eq!(offers.len(), agents);
    for o in &offers {
        let mut keep = Resources::default();
        keep.unreserved
            .scalars
            .insert("cpus".into(), Quantity::from_milli(16_000));
        let mut rest = o.resources.clone();
        rest.subtract(&keep).unwrap();
        alloc
            .recover(
                &garrison_control::allocator::Offer {
                    resources: rest,
                    ..o.clone()
                },
                None,
            )
            .unwrap();
    }
    alloc.suppress("holder").unwrap();
    for f in 0..frameworks {
        alloc.add_framework(&format!("fw-{f}"), &["role"]).unwrap();
    }
    timed_cycles(&mut alloc, cycles)
}

fn scenario_b(agents: usize, roles: usize, cycles: usize) -> Vec<f64> {
    let mut alloc = cluster(agents);
    for r in 0..roles {
        let role = format!("role-{r}");
        alloc
            .add_framework(&format!("fw-{r}"), &[role.as_str()])
            .unwrap();
        alloc
            .set_quota(
                &role,
                Quota {
                    guarantee: [
                        ("cpus".to_string(), Quantity::from_milli(1_000)),
                        ("mem".to_string(), Quantity::from_milli(256_000)),
                    ]
                    .into(),
                    limit: None,
                },
            )
            .unwrap();
    }
    timed_cycles(&mut alloc, cycles)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cycles: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    match args.get(1).map(String::as_str) {
        Some("a") => {
            let agents: usize = args[3].parse().unwrap();
            let frameworks: usize = args[4].parse().unwrap();
            let (m, p, x) = stats(scenario_a(agents, frameworks, cycles));
            println!(
                "scenario=a agents={agents} frameworks={frameworks} cycles={cycles} median_ms={m:.2} p99_ms={p:.2} max_ms={x:.2} rss_mib={:.1}",
                rss_mib()
            );
        }
        Some("b") => {
            let agents: usize = args[3].parse().unwrap();
            let roles: usize = args[4].parse().unwrap();
            let (m, p, x) = stats(scenario_b(agents, roles, cycles));
            println!(
                "scenario=b agents={agents} roles={roles} frameworks={roles} cycles={cycles} median_ms={m:.2} p99_ms={p:.2} max_ms={x:.2} rss_mib={:.1}",
                rss_mib()
            );
        }
        _ => eprintln!("usage: allocator_bench a|b CYCLES AGENTS FRAMEWORKS"),
    }
}
