//! The Mesos-DNS view of the cluster (pure): a master state built from the
//! agents and tasks, fed to the same record generator `dns-records` uses, so
//! names are exactly Mesos-DNS's. The control is the leading master and the
//! `marathon` framework's scheduler; a task's Mesos name is Marathon's (the
//! app path reversed: `/web/front` → `front.web`).
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::Cluster;
use crate::dns::records::{GeneratorConfig, RecordSet, generate};
use crate::dns::state::{Agent, Framework, MasterState, Pid, Status, Task, TaskResources};

/// The port agents are published at in `_slave._tcp` (Mesos' agent port).
const AGENT_PORT: u16 = 5051;

/// Marathon's Mesos task name for an app id.
pub fn mesos_task_name(app_id: &str) -> String {
    let parts: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(".")
}

impl Cluster {
    /// The master state Mesos would report for this cluster.
    pub fn master_state(&self, control: SocketAddr) -> MasterState {
        let pid = |id: &str, ip: IpAddr, port: u16| Pid {
            id: id.to_string(),
            host: ip.to_string(),
            port,
        };
        let slaves = self
            .live_agents()
            .map(|a| Agent {
                id: a.id.clone(),
                hostname: a.hostname.clone(),
                pid: Some(pid("slave(1)", a.ip, AGENT_PORT)),
            })
            .collect();
        let tasks = self
            .tasks
            .values()
            .map(|t| Task {
                id: t.id.clone(),
                name: mesos_task_name(&t.app_id),
                slave_id: t.agent_id.clone(),
                state: t.state.as_str().into(),
                statuses: vec![Status {
                    state: t.state.as_str().into(),
                    timestamp: t.staged_at_ms as f64 / 1000.0,
                    ..Status::default()
                }],
                resources: TaskResources {
                    ports: Some(format!(
                        "[{}]",
                        t.ports
                            .iter()
                            .map(|p| format!("{p}-{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                },
                discovery: None,
            })
            .collect();
        MasterState {
            frameworks: vec![Framework {
                name: "marathon".into(),
                hostname: control.ip().to_string(),
                pid: Some(pid("scheduler(1)", control.ip(), control.port())),
                tasks,
            }],
            slaves,
            leader: format!("master@{control}"),
        }
    }

    /// Every record: Mesos-DNS names of tasks, agents, masters, and the VIP
    /// names every live agent has programmed.
    pub fn records(&self, control: SocketAddr, config: &GeneratorConfig) -> RecordSet {
        let state = self.master_state(control);
        let mut records = generate(&state, config, &|_| Vec::new());
        let vips: BTreeMap<String, IpAddr> = self.answerable_vip_names();
        for (name, ip) in vips {
            records.add_ip(&format!("{name}."), ip);
        }
        records
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn task_names_reverse_the_app_path() {
        assert_eq!(super::mesos_task_name("/web/front"), "front.web");
        assert_eq!(super::mesos_task_name("/web"), "web");
    }
}
