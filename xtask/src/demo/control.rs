//! The control demo (see the module docs of `demo`): the steps, printed as a
//! user would run them by hand with curl and dig.
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{DemoArgs, check_interrupted};
use crate::control_lab::{
    ControlLab, VIP_NAME, control_addr, dns_addr, kill_task_process, wait_for, web_app,
};
use crate::lab::Lab;

/// Connects to the VIP `count` times from the client's cgroup (through the
/// `demo-client` helper) and prints who answered.
fn spread(lab: &Lab, vip: &str, count: u32) -> Result<()> {
    let cgroup = lab.cgroup();
    let out = lab.run_client(&[
        "demo-client",
        "--cgroup",
        cgroup.to_str().context("path")?,
        "--vip",
        &format!("{vip}:80"),
        "--count",
        &count.to_string(),
    ])?;
    // The per-connection lines are long; the distribution says it all.
    let summary: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("distribution"))
        .collect();
    println!("{}", summary.join("\n"));
    Ok(())
}

/// `dig +short` against Garrison's DNS, from the client namespace.
fn dig(lab: &Lab, name: &str, kind: &str) -> Result<String> {
    let server = format!("@{}", dns_addr().ip());
    let port = dns_addr().port().to_string();
    let client = lab.client_ns();
    let out = crate::cmd::output(
        "ip",
        &[
            "netns", "exec", &client, "dig", &server, "-p", &port, "+short", "+tries=1", name, kind,
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn show_vip(cl: &ControlLab) -> Result<()> {
    let names: Vec<String> = (1..=cl.nodes)
        .map(|i| format!("node{i}"))
        .chain(["client".to_string()])
        .collect();
    for (name, vip) in names.iter().zip(cl.vip_everywhere()?) {
        match vip {
            None => println!("  {name:<7} (no {VIP_NAME})"),
            Some(backends) => {
                let list: Vec<String> =
                    backends.iter().map(|(b, w)| format!("{b} w={w}")).collect();
                println!("  {name:<7} {}", list.join("  "));
            }
        }
    }
    Ok(())
}

pub(super) fn control_demo(lab: &Lab, args: &DemoArgs, agent: &Path, control: &Path) -> Result<()> {
    let client = lab.client_ns();
    println!("demo: 3 node namespaces and a client ({client}) joined by a bridge");
    lab.build()?;
    println!(
        "demo: garrison-control on {} (DNS on {}) in {client}; an agent in every node, and one in {client} (no tasks)",
        control_addr(),
        dns_addr()
    );
    let cl = ControlLab::start(lab, 3, agent, control, &args.dataplane)?;
    check_interrupted()?;

    let app = web_app(3, 1.0)?;
    println!(
        "\ndemo: every request is authenticated over TLS (the control's own CA, DATA_DIR/tls/ca.pem):\n  TOKEN=$(curl -s --cacert ca.pem -X POST https://{0}/acs/api/v1/auth/login -d '{{\"uid\":\"bootstrap\",\"password\":\"…\"}}' | jq -r .token)\n  (the bootstrap password is in DATA_DIR/bootstrap-credentials.json; agents joined with `garrison-control token create --join`)",
        control_addr()
    );
    println!(
        "\ndemo: curl --cacert ca.pem -H \"Authorization: token=$TOKEN\" -X POST https://{}/v2/apps -d @web.json   # 3 × lab-serve, VIP_0 /web:80, HTTP health",
        control_addr()
    );
    let posted = Instant::now();
    let (status, body) = cl.control("POST", "/v2/apps", Some(&app))?;
    if status != 201 {
        bail!("POST /v2/apps: {status} {body}");
    }
    let tasks = cl.wait_healthy(3, 60)?;
    println!(
        "demo: 3 instances healthy after {:.2} s:",
        posted.elapsed().as_secs_f64()
    );
    for (id, host, port) in &tasks {
        println!("  {id:<28} {host}:{port}");
    }
    check_interrupted()?;

    let vip = wait_for("the VIP name resolving", 20, || {
        Ok(cl.resolve(VIP_NAME)?.first().map(|ip| ip.to_string()))
    })?;
    for name in [VIP_NAME, "web.marathon.mesos", "_web._tcp.marathon.mesos"] {
        let kind = if name.starts_with('_') { "SRV" } else { "A" };
        println!(
            "\ndemo: dig @{} -p {} +short {name} {kind}   (in {client})",
            dns_addr().ip(),
            dns_addr().port()
        );
        println!("{}", dig(lab, name, kind)?.trim_end());
    }
    println!(
        "\ndemo: {} connections from {client} to http://{vip}:80/",
        args.count
    );
    spread(lab, &vip, args.count)?;
    check_interrupted()?;

    println!(
        "\ndemo: curl … -X PUT https://{}/v2/apps/web -d '{{\"instances\":5}}'",
        control_addr()
    );
    let (status, body) = cl.control("PUT", "/v2/apps/web", Some(r#"{"instances":5}"#))?;
    if status != 200 {
        bail!("PUT /v2/apps/web: {status} {body}");
    }
    let tasks = cl.wait_healthy(5, 60)?;
    println!("demo: 5 instances healthy; the VIP on every agent:");
    show_vip(&cl)?;
    spread(lab, &vip, args.count)?;
    check_interrupted()?;

    let (victim, host, port) = tasks[0].clone();
    println!("\ndemo: kill -9 the task {victim} ({host}:{port})");
    let killed_at = Instant::now();
    if kill_task_process(&host, port) == 0 {
        bail!("no process found for {host}:{port}");
    }
    let target = format!(
        "{}:{port}",
        lab.node_ip(host.trim_start_matches("node").parse::<usize>()? - 1)
    );
    wait_for("the dead task drained on every agent", 10, || {
        let drained = cl.vip_everywhere()?.iter().all(|v| {
            v.as_ref()
                .is_none_or(|b| b.iter().all(|(addr, w)| addr != &target || *w == 0))
        });
        Ok(drained.then_some(()))
    })?;
    println!(
        "demo: drained on every agent {:.0} ms after it died",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    let tasks = cl.wait_healthy(5, 60)?;
    let new: Vec<&(String, String, u16)> = tasks.iter().filter(|t| !t.0.is_empty()).collect();
    if new.iter().any(|t| t.0 == victim) {
        bail!("the dead task is still listed");
    }
    println!(
        "demo: replaced; 5 healthy again after {:.2} s:",
        killed_at.elapsed().as_secs_f64()
    );
    show_vip(&cl)?;
    check_interrupted()?;

    println!(
        "\ndemo: curl … -X DELETE https://{}/v2/apps/web",
        control_addr()
    );
    let (status, body) = cl.control("DELETE", "/v2/apps/web", None)?;
    if status != 200 {
        bail!("DELETE /v2/apps/web: {status} {body}");
    }
    wait_for("the VIP gone from every agent", 30, || {
        Ok(cl
            .vip_everywhere()?
            .iter()
            .all(Option::is_none)
            .then_some(()))
    })?;
    println!("demo: the VIP is gone from every agent:");
    show_vip(&cl)?;
    let left = cl.resolve(VIP_NAME)?;
    if !left.is_empty() {
        bail!("{VIP_NAME} still resolves to {left:?}");
    }
    println!("demo: dig +short {VIP_NAME} -> (nothing: NXDOMAIN)");
    if args.keep {
        println!("\ndemo: left running (--keep). Try, from {client}:");
        println!(
            "  ip netns exec {client} curl -s --cacert {}/control-data/tls/ca.pem -H \"Authorization: token=$TOKEN\" https://{}/v2/apps",
            lab.run_dir().display(),
            control_addr()
        );
        println!(
            "  ip netns exec {client} dig @{} -p {} +short {VIP_NAME}",
            dns_addr().ip(),
            dns_addr().port()
        );
        println!("  cargo xtask demo --down    # remove it");
    }
    Ok(())
}
