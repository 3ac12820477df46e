//! The control's decision cost at scale, run by `cargo xtask bench control`
//! (release build): `cluster_bench AGENTS APPS INSTANCES` registers AGENTS
//! agents (4 cpus, 8 GB, 1,000 ports each), creates APPS apps of INSTANCES
//! instances (0.1 cpu, 32 MB, one port, a named VIP each), and prints one line:
//! `agents=… apps=… tasks=… place_ms=… pass_p50_ms=… pass_p99_ms=… status_pass_p50_ms=… rss_mib=…`.
//!
//! - `place_ms`: the pass that places every instance (one deployment per app);
//! - `pass_*`: a periodic pass with nothing to change (what the timer costs);
//! - `status_pass_*`: a task dying (TASK_FAILED) and the pass it triggers
//!   (replacement placed, VIP table recomputed and sent).
use std::time::Instant;

mod support;
use support::{percentile, rss_mib};

use garrison_control::cluster::{Cluster, ClusterConfig, Meta, Outgoing};
use garrison_control::marathon::app::parse_app;
use garrison_proto::{AgentResources, ControlMessage, Registration, TaskState, TaskStatus};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("AGENTS APPS INSTANCES"))
        .collect();
    let (agents, apps, instances) = (args[0], args[1], args[2]);
    let mut c = Cluster::restore(
        ClusterConfig::default(),
        vec![],
        vec![],
        Meta::default(),
        1,
        0,
    );
    for i in 0..agents {
        c.agent_registered(
            Registration {
                agent_id: format!("agent-{i}"),
                hostname: format!("node-{i}"),
                ip: std::net::Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0x00ff_ffff)).into(),
                resources: AgentResources {
                    cpus: 4.0,
                    mem: 8192.0,
                    disk: 10000.0,
                    ports: "[31000-31999]".into(),
                    reserved: None,
                },
                tasks: vec![],
            },
            0,
        );
    }
    for a in 0..apps {
        let body = format!(
            r#"{{"id":"/app-{a}","cmd":"serve","instances":{instances},"cpus":0.1,"mem":32,
                "portDefinitions":[{{"port":0,"labels":{{"VIP_0":"/app-{a}:80"}}}}]}}"#
        );
        c.create_app(parse_app(body.as_bytes(), None).unwrap(), 0)
            .unwrap();
    }
    c.drain();
    let t = Instant::now();
    c.tick(1);
    let place_ms = t.elapsed().as_secs_f64() * 1000.0;
    let launches: Vec<(String, String)> = c
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::ToAgent(agent, ControlMessage::Launch(l)) => Some((agent, l.task_id)),
            _ => None,
        })
        .collect();
    assert_eq!(launches.len(), apps * instances, "every instance placed");
    for (agent, task) in &launches {
        let s = TaskStatus {
            task_id: task.clone(),
            state: TaskState::Running,
            reason: None,
            healthy: None,
        };
        c.task_status(agent, &s, 2);
    }
    c.tick(2);
    c.drain();
    let mut idle = Vec::new();
    for n in 0..20 {
        for i in 0..agents {
            c.heartbeat(&format!("agent-{i}"), 3 + n);
        }
        let t = Instant::now();
        c.tick(3 + n);
        idle.push(t.elapsed().as_secs_f64() * 1000.0);
        c.drain();
    }
    let mut status = Vec::new();
    for (n, (agent, task)) in launches.iter().take(20).enumerate() {
        let s = TaskStatus {
            task_id: task.clone(),
            state: TaskState::Failed,
            reason: None,
            healthy: None,
        };
        let t = Instant::now();
        c.task_status(agent, &s, 100 + n as u64);
        c.tick(100 + n as u64);
        status.push(t.elapsed().as_secs_f64() * 1000.0);
        c.drain();
    }
    println!(
        "agents={agents} apps={apps} tasks={} place_ms={place_ms:.1} pass_p50_ms={:.2} pass_p99_ms={:.2} status_pass_p50_ms={:.2} rss_mib={:.0}",
        launches.len(),
        percentile(idle.clone(), 0.5),
        percentile(idle, 0.99),
        percentile(status, 0.5),
        rss_mib()
    );
}
