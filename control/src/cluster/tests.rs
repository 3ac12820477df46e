//! The cluster's decisions, driven as the server drives them.
use garrison_proto::{AgentResources, ControlMessage, Registration, TaskState, TaskStatus};

use super::*;
use crate::dns::records::GeneratorConfig;
use crate::marathon::app::parse_app;

fn registration(i: usize, tasks: Vec<TaskStatus>) -> Registration {
    Registration {
        agent_id: format!("agent{i}"),
        hostname: format!("node{i}"),
        ip: std::net::Ipv4Addr::new(10, 0, 0, i as u8).into(),
        resources: AgentResources {
            cpus: 2.0,
            mem: 1024.0,
            disk: 1000.0,
            ports: "[31000-31009]".into(),
            reserved: None,
        },
        tasks,
    }
}

fn cluster_with_agents(n: usize) -> Cluster {
    let mut c = Cluster::restore(
        ClusterConfig::default(),
        vec![],
        vec![],
        Meta::default(),
        7,
        0,
    );
    for i in 1..=n {
        c.agent_registered(registration(i, vec![]), 0);
    }
    c.drain();
    c
}

fn launches(out: &[Outgoing]) -> Vec<(String, garrison_proto::LaunchTask)> {
    out.iter()
        .filter_map(|o| match o {
            Outgoing::ToAgent(a, ControlMessage::Launch(l)) => Some((a.clone(), l.clone())),
            _ => None,
        })
        .collect()
}

fn kills(out: &[Outgoing]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outgoing::ToAgent(_, ControlMessage::Kill { task_id }) => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn status(id: &str, state: TaskState, healthy: Option<bool>) -> TaskStatus {
    TaskStatus {
        task_id: id.into(),
        state,
        reason: None,
        healthy,
    }
}

const WEB: &str = r#"{"id":"/web","cmd":"serve","instances":3,"cpus":0.5,"mem":64,
  "constraints":[["hostname","UNIQUE"]],
  "portDefinitions":[{"port":0,"labels":{"VIP_0":"/web:80"}}],
  "healthChecks":[{"protocol":"HTTP","gracePeriodSeconds":5,"intervalSeconds":1}]}"#;

/// Creates /web and brings its 3 tasks to running and healthy.
fn running_web(c: &mut Cluster) -> Vec<(String, garrison_proto::LaunchTask)> {
    c.create_app(parse_app(WEB.as_bytes(), None).unwrap(), 1)
        .unwrap();
    c.tick(1);
    let out = c.drain();
    let l = launches(&out);
    for (agent, t) in &l {
        c.task_status(
            agent,
            &status(&t.task_id, TaskState::Running, Some(true)),
            2,
        );
    }
    c.tick(2);
    l
}

#[test]
fn an_app_is_placed_uniquely_with_env_and_becomes_a_vip() {
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    assert_eq!(l.len(), 3);
    let agents: std::collections::BTreeSet<&str> = l.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(agents.len(), 3, "hostname:UNIQUE");
    let t = &l[0].1;
    assert_eq!(t.env["PORT0"], t.ports[0].to_string());
    assert_eq!(t.env["MARATHON_APP_ID"], "/web");
    assert!(t.task_id.starts_with("web."));
    assert_eq!(t.health_checks[0].path.as_deref(), Some("/"));

    let out = c.drain();
    assert!(
        out.iter()
            .any(|o| matches!(o, Outgoing::Event(e) if e["eventType"] == "deployment_success"))
    );
    let tables: Vec<&garrison_proto::VipTable> = out
        .iter()
        .filter_map(|o| match o {
            Outgoing::Broadcast(ControlMessage::VipTable(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(tables.len(), 1, "one broadcast to every agent");
    let vip = &tables[0].vips[0];
    assert_eq!(
        vip.name.as_deref(),
        Some("web.marathon.l4lb.thisdcos.directory")
    );
    assert!(
        matches!(vip.ip, std::net::IpAddr::V4(a) if a.octets()[0] == 11),
        "{} is not in the named-VIP range",
        vip.ip
    );
    assert_eq!(vip.port, 80);
    assert_eq!(vip.backends.iter().map(|b| b.weight).sum::<u32>(), 3);

    // The name is answered only after every live agent acknowledged it.
    let control: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let generator = GeneratorConfig::default();
    let name = "web.marathon.l4lb.thisdcos.directory.";
    assert!(!c.records(control, &generator).a.contains_key(name));
    let rev = c.vip_table.revision;
    c.vip_ack("agent1", rev);
    c.vip_ack("agent2", rev);
    assert!(!c.records(control, &generator).a.contains_key(name));
    c.vip_ack("agent3", rev);
    let records = c.records(control, &generator);
    assert_eq!(records.a[name].iter().next().unwrap(), &vip.ip.to_string());
    // Mesos-DNS names of the tasks: web.marathon.mesos → the agents.
    assert_eq!(records.a["web.marathon.mesos."].len(), 3);
    assert_eq!(records.srv["_web._tcp.marathon.mesos."].len(), 3);
    assert_eq!(
        records.a["leader.mesos."].iter().next().unwrap(),
        "127.0.0.1"
    );
}

#[test]
fn unhealthy_or_killed_tasks_weigh_zero_at_once_and_are_replaced() {
    let mut c = cluster_with_agents(4);
    let l = running_web(&mut c);
    c.drain();
    let (agent, victim) = (&l[0].0, &l[0].1.task_id);
    c.task_status(agent, &status(victim, TaskState::Running, Some(false)), 3);
    c.tick(3);
    let out = c.drain();
    assert!(out.iter().any(|o| matches!(o, Outgoing::Event(e) if e["eventType"] == "health_status_changed_event" && e["alive"] == false)));
    let weight = |c: &Cluster| {
        c.vip_table.vips[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .sum::<u32>()
    };
    assert_eq!(weight(&c), 2);
    // The agent kills it after maxConsecutiveFailures: replaced elsewhere.
    c.task_status(agent, &status(victim, TaskState::Killed, Some(false)), 4);
    c.tick(4);
    let out = c.drain();
    let new = launches(&out);
    assert_eq!(new.len(), 1);
    assert!(!c.tasks.contains_key(victim.as_str()));
    assert_eq!(c.vip_table.vips[0].backends.len(), 2);
}

#[test]
fn lost_agents_have_their_tasks_replaced_and_scaling_kills_newest() {
    let mut c = cluster_with_agents(4);
    let l = running_web(&mut c);
    c.drain();
    // Heartbeats keep agents 2..4 alive; agent on l[0] goes silent.
    let silent = l[0].0.clone();
    for a in ["agent1", "agent2", "agent3", "agent4"] {
        if a != silent {
            c.heartbeat(a, 20_000);
        }
    }
    c.tick(20_000);
    let out = c.drain();
    assert!(c.agents[&silent].lost);
    let new = launches(&out);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].0, silent);

    // Scale to 1: the two newest of the running three are killed.
    let mut app = c.apps["/web"].clone();
    app.instances = 1;
    c.update_app(app, 20_001).unwrap();
    assert_eq!(c.apps["/web"].version, 1, "scaling is not a new version");
    c.tick(20_001);
    let killed = kills(&c.drain());
    assert_eq!(
        killed.len(),
        2,
        "the staging replacement and the newest running: {killed:?}"
    );
    assert!(killed.contains(&new[0].1.task_id));
}

#[test]
fn unknown_tasks_on_register_are_killed_and_missing_ones_lost() {
    let mut c = cluster_with_agents(1);
    c.create_app(
        parse_app(br#"{"id":"/a","cmd":"x","mem":32,"cpus":0.1}"#, None).unwrap(),
        1,
    )
    .unwrap();
    c.tick(1);
    let l = launches(&c.drain());
    assert_eq!(l.len(), 1);
    // The agent comes back running only a stranger.
    c.agent_registered(
        registration(1, vec![status("stranger.1", TaskState::Running, None)]),
        5,
    );
    let out = c.drain();
    assert_eq!(kills(&out), vec!["stranger.1"]);
    assert!(!c.tasks.contains_key(&l[0].1.task_id), "lost");
    c.tick(6);
    assert_eq!(launches(&c.drain()).len(), 1, "replaced");
}

#[test]
fn deleting_an_app_kills_its_tasks_and_removes_its_vip() {
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    c.drain();
    c.delete_app("/web", 3).unwrap();
    c.tick(3);
    let out = c.drain();
    assert_eq!(kills(&out).len(), 3);
    // The VIP goes with its app, before the tasks are even dead.
    assert!(c.vip_table.vips.is_empty());
    for (agent, t) in &l {
        c.task_status(agent, &status(&t.task_id, TaskState::Killed, None), 4);
    }
    c.tick(4);
    assert!(c.vip_table.vips.is_empty());
    assert!(c.meta.deployments.is_empty());
    assert_eq!(
        c.delete_app("/web", 5),
        Err(ClusterError::UnknownApp("/web".into()))
    );
}

#[test]
fn restore_keeps_tasks_until_their_agents_time_out() {
    let mut c = cluster_with_agents(3);
    running_web(&mut c);
    let apps: Vec<_> = c.apps.values().cloned().collect();
    let tasks: Vec<_> = c.tasks.values().cloned().collect();
    let mut r = Cluster::restore(
        ClusterConfig::default(),
        apps,
        tasks,
        c.meta.clone(),
        8,
        100_000,
    );
    assert_eq!(
        r.vip_table.vips[0].backends.len(),
        3,
        "table rebuilt from stored tasks"
    );
    r.tick(100_500);
    assert!(
        launches(&r.drain()).is_empty(),
        "no replacement while agents may come back"
    );
    // Past the agent timeout (10 s) but within it plus the agents' longest
    // reconnect wait: they may still be on their way back.
    r.tick(100_000 + 10_000 + garrison_proto::RECONNECT_MAX_MS - 500);
    assert_eq!(
        r.tasks.len(),
        3,
        "agents retrying every 5 s still have time"
    );
    r.tick(100_000 + 10_000 + garrison_proto::RECONNECT_MAX_MS + 1_000);
    assert!(r.tasks.is_empty(), "agents never came back: tasks lost");
}

#[test]
fn autoscale_follows_the_vip_connection_rate_reported_by_agents() {
    let mut c = cluster_with_agents(3);
    let app = parse_app(
        br#"{"id":"/web","cmd":"serve","instances":1,"cpus":0.1,"mem":32,
            "portDefinitions":[{"port":0,"labels":{"VIP_0":"/web:80"}}],
            "labels":{"AUTOSCALE_TARGET_RPS":"10","AUTOSCALE_MIN":"1","AUTOSCALE_MAX":"3",
                      "AUTOSCALE_INTERVAL":"1","AUTOSCALE_SAMPLES":"1","AUTOSCALE_INTERVALS":"2",
                      "AUTOSCALE_COOLDOWN":"0","AUTOSCALE_THRESHOLD_INSTANCES":"1"}}"#,
        None,
    )
    .unwrap();
    c.create_app(app, 0).unwrap();
    c.tick(0);
    let key = {
        let v = &c.vip_table.vips[0];
        garrison_proto::vip_key(v.ip, v.port, v.protocol)
    };
    // 25 connections/s spread over two agents' counters.
    let mut total = 0u64;
    for second in 1..=3u64 {
        total += 25;
        c.vip_counters("agent1", [(key.clone(), total - 10 * second)].into());
        c.vip_counters("agent2", [(key.clone(), 10 * second)].into());
        c.heartbeat("agent1", second * 1000);
        c.heartbeat("agent2", second * 1000);
        c.heartbeat("agent3", second * 1000);
        c.tick(second * 1000);
    }
    // Samples at 1 s (25/s: target 3, first interval past), 2 s (second:
    // scale), so by 3 s the app has 3 instances.
    assert_eq!(c.apps["/web"].instances, 3);
    assert_eq!(c.apps["/web"].version, 1, "a scale, not a new version");
    let out = c.drain();
    assert!(
        out.iter()
            .any(|o| matches!(o, Outgoing::Event(e) if e["source"] == "autoscale"))
    );
    // Traffic stops: back to the minimum after two quiet intervals.
    for second in 4..=6u64 {
        for a in ["agent1", "agent2", "agent3"] {
            c.heartbeat(a, second * 1000);
        }
        c.tick(second * 1000);
    }
    assert_eq!(c.apps["/web"].instances, 1);
}

#[test]
fn service_ports_are_assigned_from_10000_and_kept_across_updates() {
    let mut c = cluster_with_agents(1);
    let two_ports = br#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#;
    c.create_app(parse_app(two_ports, None).unwrap(), 0)
        .unwrap();
    let fixed = br#"{"id":"/b","cmd":"x","portDefinitions":[{"port":10002},{"port":0}]}"#;
    c.create_app(parse_app(fixed, None).unwrap(), 0).unwrap();
    let ports = |c: &Cluster, id: &str| -> Vec<u16> {
        c.apps[id].port_definitions.iter().map(|p| p.port).collect()
    };
    assert_eq!(ports(&c, "/a"), vec![10000, 10001]);
    assert_eq!(ports(&c, "/b"), vec![10002, 10003]);
    // A new version of /a with port 0 again keeps its service ports.
    let mut changed = parse_app(two_ports, None).unwrap();
    changed.cmd = "y".into();
    c.update_app(changed, 1).unwrap();
    assert_eq!(ports(&c, "/a"), vec![10000, 10001]);
    assert_eq!(c.apps["/a"].version, 2);
}

#[test]
fn killing_one_task_replaces_it_or_scales_down() {
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    c.drain();
    let victim = l[0].1.task_id.clone();
    assert_eq!(
        c.kill_app_task("/web", "nope", false, 3),
        Err(ClusterError::UnknownTask("nope".into()))
    );
    assert_eq!(c.kill_app_task("/web", &victim, false, 3), Ok(None));
    c.tick(3);
    let out = c.drain();
    assert_eq!(kills(&out), vec![victim.clone()]);
    assert_eq!(launches(&out).len(), 1, "replaced while it is being killed");
    c.task_status(&l[0].0, &status(&victim, TaskState::Killed, None), 4);
    c.tick(4);
    assert!(launches(&c.drain()).is_empty());
    let other = l[1].1.task_id.clone();
    let deployment = c.kill_app_task("/web", &other, true, 5).unwrap();
    assert!(deployment.is_some());
    assert_eq!(c.apps["/web"].instances, 2);
    c.tick(5);
    c.task_status(&l[1].0, &status(&other, TaskState::Killed, None), 6);
    c.tick(6);
    assert!(launches(&c.drain()).is_empty(), "scaled down: not replaced");
}

#[test]
fn killing_all_tasks_of_an_app_keeps_it_and_scales_by_the_killed() {
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    c.drain();
    assert_eq!(
        c.kill_app_tasks("/nope", false, 3),
        Err(ClusterError::UnknownApp("/nope".into()))
    );
    let (killed, deployment) = c.kill_app_tasks("/web", false, 3).unwrap();
    assert_eq!((killed.len(), deployment), (3, None));
    c.tick(3);
    let out = c.drain();
    assert_eq!(kills(&out).len(), 3);
    assert_eq!(
        launches(&out).len(),
        3,
        "replaced while they are being killed"
    );
    assert_eq!(c.apps["/web"].instances, 3, "the app stays as it was");
    // With scale: only the tasks not already being killed count.
    for (agent, t) in launches(&out) {
        c.task_status(
            &agent,
            &status(&t.task_id, TaskState::Running, Some(true)),
            4,
        );
    }
    let (killed, deployment) = c.kill_app_tasks("/web", true, 5).unwrap();
    assert_eq!(
        killed.len(),
        3,
        "the 3 replacements; the 3 killing ones again: no"
    );
    assert!(deployment.is_some());
    assert_eq!(c.apps["/web"].instances, 0);
    assert!(c.apps.contains_key("/web"));
    for (agent, t) in &l {
        c.task_status(agent, &status(&t.task_id, TaskState::Killed, None), 6);
    }
    c.tick(6);
    assert!(
        launches(&c.drain()).is_empty(),
        "scaled to 0: nothing replaced"
    );
}

/// Agent 1 with 2 cpus, 1.5 of them (and 256 MB) reserved for role `db`.
fn reserving_registration(tasks: Vec<TaskStatus>) -> Registration {
    let mut reg = registration(1, tasks);
    reg.resources.cpus = 2.0;
    reg.resources.reserved = Some(garrison_proto::Reservation {
        role: "db".into(),
        cpus: 1.5,
        mem: 256.0,
        disk: 0.0,
    });
    reg
}

#[test]
fn reservations_are_offered_only_to_their_role() {
    let mut c = Cluster::restore(
        ClusterConfig::default(),
        vec![],
        vec![],
        Meta::default(),
        7,
        0,
    );
    c.agent_registered(reserving_registration(vec![]), 0);
    c.drain();
    // 0.5 unreserved CPU: a 1-CPU app in the default role cannot run.
    c.create_app(
        parse_app(br#"{"id":"/web","cmd":"x","cpus":1,"mem":32}"#, None).unwrap(),
        0,
    )
    .unwrap();
    c.tick(0);
    assert!(launches(&c.drain()).is_empty());
    // The reserving role gets its 1.5 CPUs and the unreserved 0.5: two
    // 1-CPU instances of three.
    let db = br#"{"id":"/db","cmd":"x","cpus":1,"mem":32,"role":"db","instances":3}"#;
    c.create_app(parse_app(db, None).unwrap(), 1).unwrap();
    c.tick(1);
    let l = launches(&c.drain());
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|(_, t)| t.app_id == "/db"));
    // Still two after a restore (the running tasks hold what they used).
    for (_, t) in &l {
        c.task_status("agent1", &status(&t.task_id, TaskState::Running, None), 2);
    }
    c.tick(2);
    c.drain();
    let apps: Vec<_> = c.apps.values().cloned().collect();
    let tasks: Vec<_> = c.tasks.values().cloned().collect();
    let mut r = Cluster::restore(ClusterConfig::default(), apps, tasks, c.meta.clone(), 8, 10);
    let running: Vec<TaskStatus> = l
        .iter()
        .map(|(_, t)| status(&t.task_id, TaskState::Running, None))
        .collect();
    let reg = reserving_registration(running);
    r.agent_registered(reg, 10);
    r.tick(10);
    assert!(
        launches(&r.drain()).is_empty(),
        "no second db instance, no web instance"
    );
}

#[test]
fn a_restarted_agent_gets_its_tasks_checks_back_by_a_replayed_launch() {
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    c.drain();
    let (agent, task) = (&l[0].0, &l[0].1);
    let i: usize = agent.trim_start_matches("agent").parse().unwrap();
    // The agent restarted: it re-adopted the task but has no check result.
    c.agent_registered(
        registration(i, vec![status(&task.task_id, TaskState::Running, None)]),
        5,
    );
    let replayed = launches(&c.drain());
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].1.task_id, task.task_id);
    assert_eq!(replayed[0].1.health_checks.len(), 1);
    assert_eq!(replayed[0].1.ports, task.ports);
    // With a result already (e.g. the control restarted instead): no replay.
    c.agent_registered(
        registration(
            i,
            vec![status(&task.task_id, TaskState::Running, Some(true))],
        ),
        6,
    );
    assert!(launches(&c.drain()).is_empty());
}

#[test]
fn instances_no_agent_can_take_wait_in_the_queue_with_the_reason() {
    let mut c = cluster_with_agents(2);
    let big = br#"{"id":"/big","cmd":"x","cpus":3,"mem":32}"#;
    c.create_app(parse_app(big, None).unwrap(), 0).unwrap();
    c.tick(0);
    assert!(launches(&c.drain()).is_empty());
    let q = &c.queue["/big"];
    assert_eq!(q.count, 1);
    assert_eq!(
        q.reason,
        "not enough cpus on any agent: needs 3, at most 2 free"
    );
    c.tick(5);
    assert_eq!(c.queue["/big"].since_ms, 0, "waiting since the first pass");
    // Made feasible: placed, out of the queue.
    let mut app = c.apps["/big"].clone();
    app.cpus = 1.0;
    c.update_app(app, 6).unwrap();
    c.tick(6);
    assert_eq!(launches(&c.drain()).len(), 1);
    assert!(c.queue.is_empty());
}

#[test]
fn launches_carry_the_apps_user() {
    let mut c = cluster_with_agents(1);
    let app = r#"{"id":"/svc","cmd":"serve","instances":1,"cpus":0.1,"mem":32,"user":"www-data"}"#;
    c.create_app(parse_app(app.as_bytes(), None).unwrap(), 1)
        .unwrap();
    c.tick(1);
    let l = launches(&c.drain());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].1.user.as_deref(), Some("www-data"));
    let mut c = cluster_with_agents(3);
    let l = running_web(&mut c);
    assert!(
        l.iter().all(|(_, t)| t.user.is_none()),
        "no user: the agent's default"
    );
}

/// What the control printed at commit 0e71c12, before the wire was typed:
/// `APP`, `TASK` and `META` records as the store writes them, then the last
/// VIP table frame (`control/tests/fixtures/string-typed-control.txt`).
pub(crate) const STRING_TYPED: &str = include_str!("../../tests/fixtures/string-typed-control.txt");

/// The records of one kind in [`STRING_TYPED`].
pub(crate) fn string_typed(kind: &str) -> Vec<&'static str> {
    STRING_TYPED
        .lines()
        .filter_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))
        .collect()
}

/// The scenario that printed [`STRING_TYPED`], replayed: three agents (one
/// IPv6, one reserving), an app with `udp,tcp` and `udp` ports behind a named
/// and an address VIP and HTTP (written `MESOS_HTTP`), TCP and COMMAND
/// checks; one task healthy, one unhealthy, one killed and replaced.
#[test]
fn the_typed_control_decides_and_stores_what_the_string_typed_one_did() {
    let mut c = Cluster::restore(
        ClusterConfig::default(),
        vec![],
        vec![],
        Meta::default(),
        42,
        0,
    );
    let ips: [std::net::IpAddr; 3] = [
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        "fd00::3".parse().unwrap(),
    ];
    for (i, ip) in ips.into_iter().enumerate() {
        let mut reg = registration(i + 1, vec![]);
        reg.ip = ip;
        reg.resources = AgentResources {
            cpus: 4.0,
            mem: 4096.0,
            disk: 1000.0,
            ports: "[31000-31009]".into(),
            reserved: (i == 0).then(|| garrison_proto::Reservation {
                role: "slave_public".into(),
                cpus: 1.0,
                mem: 512.0,
                disk: 0.0,
            }),
        };
        c.agent_registered(reg, 0);
    }
    let app = parse_app(
        br#"{"id":"/web","cmd":"serve $PORT0","instances":3,"cpus":0.5,"mem":64,
      "constraints":[["hostname","UNIQUE"]],
      "portDefinitions":[{"port":0,"protocol":"udp,tcp","name":"http","labels":{"VIP_0":"/web:80"}},{"port":0,"protocol":"udp","labels":{"VIP_1":"10.10.0.1:53"}}],
      "healthChecks":[{"protocol":"MESOS_HTTP","path":"/health","gracePeriodSeconds":5,"intervalSeconds":1},{"protocol":"TCP","portIndex":1},{"protocol":"COMMAND","command":{"value":"true"}}],
      "env":{"A":"b"},"labels":{"team":"x"}}"#,
        None,
    )
    .unwrap();
    c.create_app(app, 1000).unwrap();
    c.tick(1000);
    let ids: Vec<(String, String)> = c
        .tasks
        .values()
        .map(|t| (t.agent_id.clone(), t.id.clone()))
        .collect();
    let mut healthy = status(&ids[0].1, TaskState::Running, Some(true));
    c.task_status(&ids[0].0, &healthy, 2000);
    healthy = status(&ids[1].1, TaskState::Running, Some(false));
    healthy.reason = Some("r".into());
    c.task_status(&ids[1].0, &healthy, 2000);
    c.kill_app_task("/web", &ids[2].1, false, 3000).unwrap();
    c.tick(3000);

    fn text<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("serialisable")
    }
    let apps: Vec<String> = c.apps.values().map(text).collect();
    let tasks: Vec<String> = c.tasks.values().map(text).collect();
    assert_eq!(apps, string_typed("APP"));
    assert_eq!(tasks, string_typed("TASK"));
    assert_eq!(vec![text(&c.meta)], string_typed("META"));
    let table = ControlMessage::VipTable(c.vip_table.clone());
    assert_eq!(vec![text(&table)], string_typed("TABLE"));
}
