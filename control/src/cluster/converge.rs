//! Bringing every app to its definition (pure decisions on [`Cluster`]).
//!
//! Per app, with `n = instances`:
//! - tasks of a deleted app are killed;
//! - no old-version tasks: launch up to `n`, or kill the surplus (unhealthy
//!   and staging first, then the newest);
//! - a rolling replace (old-version tasks remain): new tasks are launched
//!   while the app stays within `n + ⌊n × maximumOverCapacity⌋` tasks, and old
//!   ones are killed while at least `⌈n × minimumHealthCapacity⌉` healthy
//!   tasks remain (unhealthy old tasks are always killed first). When neither
//!   is possible (over capacity 0 and health capacity 1) one old task is
//!   killed so the deployment can progress, as Marathon does.
//!
//! A deployment succeeds when the app has `n` tasks of its version, all
//! healthy, and none of an older version; a delete succeeds when its tasks are
//! gone. Placement of new tasks is [`crate::marathon::placement`]'s.
use std::collections::{BTreeSet, HashMap};

use garrison_proto::{ControlMessage, HealthCheck as WireCheck, LaunchTask, TaskState};

use super::{Cluster, TaskRecord};
use crate::marathon::app::{App, Constraint};
use crate::marathon::env::task_env;
use crate::marathon::placement::{self, AgentSlot, Need, UsedBy};
use crate::resources::Resources;

/// What one app needs this pass.
struct Plan {
    launch: usize,
    kill: Vec<String>,
}

/// The decision for one app (pure).
fn plan_app(app: &App, tasks: &[&TaskRecord]) -> Plan {
    let has_checks = !app.health_checks.is_empty();
    let n = app.instances as usize;
    let active: Vec<&&TaskRecord> = tasks.iter().filter(|t| !t.is_killing()).collect();
    let (current, old): (Vec<&&TaskRecord>, Vec<&&TaskRecord>) =
        active.iter().partition(|t| t.version >= app.version);
    // Unhealthy first, then newest first.
    let kill_order = |list: &[&&TaskRecord]| -> Vec<String> {
        let mut v: Vec<&&TaskRecord> = list.to_vec();
        v.sort_by_key(|t| (t.is_healthy(has_checks), std::cmp::Reverse(t.seq)));
        v.iter().map(|t| t.id.clone()).collect()
    };
    if old.is_empty() {
        if current.len() >= n {
            let surplus = current.len() - n;
            return Plan {
                launch: 0,
                kill: kill_order(&current).into_iter().take(surplus).collect(),
            };
        }
        return Plan {
            launch: n - current.len(),
            kill: Vec::new(),
        };
    }
    let strategy = app.upgrade_strategy;
    let max_total = n + (n as f64 * strategy.maximum_over_capacity).floor() as usize;
    let min_healthy = (n as f64 * strategy.minimum_health_capacity).ceil() as usize;
    let launch = n
        .saturating_sub(current.len())
        .min(max_total.saturating_sub(active.len()));
    let healthy = active.iter().filter(|t| t.is_healthy(has_checks)).count();
    let mut kill = Vec::new();
    let mut healthy_left = healthy;
    for id in kill_order(&old) {
        let t = old.iter().find(|t| t.id == id).expect("listed");
        if !t.is_healthy(has_checks) {
            kill.push(id);
        } else if healthy_left > min_healthy {
            healthy_left -= 1;
            kill.push(id);
        }
    }
    // Surplus new tasks (scaled down mid-deployment).
    if current.len() > n {
        kill.extend(kill_order(&current).into_iter().take(current.len() - n));
    }
    if launch == 0 && kill.is_empty() && current.len() < n {
        kill.extend(kill_order(&old).into_iter().take(1));
    }
    Plan { launch, kill }
}

/// The launch order of task `task_id` of `app` on host `host` with `ports`
/// (also replayed to an agent that re-registers with the task, so it resumes
/// the task's health checks).
pub(super) fn launch_message(app: &App, task_id: &str, host: &str, ports: &[u16]) -> LaunchTask {
    LaunchTask {
        task_id: task_id.to_string(),
        app_id: app.id.clone(),
        cmd: app.cmd.clone(),
        cpus: app.cpus,
        mem: app.mem,
        disk: app.disk,
        ports: ports.to_vec(),
        env: task_env(app, host, ports),
        user: app.user.clone(),
        health_checks: app
            .health_checks
            .iter()
            .map(|h| WireCheck {
                protocol: h.protocol,
                path: h.path.clone(),
                port_index: h.port_index,
                command: h.command.as_ref().map(|c| c.value.clone()),
                grace_period_seconds: h.grace_period_seconds,
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                max_consecutive_failures: h.max_consecutive_failures,
            })
            .collect(),
    }
}

impl Cluster {
    /// One convergence pass over every app.
    pub(super) fn converge(&mut self, now_ms: u64) {
        // Tasks of deleted apps.
        let orphans: Vec<String> = self
            .tasks
            .values()
            .filter(|t| !self.apps.contains_key(&t.app_id) && !t.is_killing())
            .map(|t| t.id.clone())
            .collect();
        for id in orphans {
            self.kill_task(&id);
        }
        // Decide every app first (tasks indexed by app once: O(tasks), not
        // O(apps × tasks)), then act.
        let mut by_app: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
        for t in self.tasks.values() {
            by_app.entry(t.app_id.as_str()).or_default().push(t);
        }
        let mut needs = Vec::new();
        let mut kills = Vec::new();
        for app in self.apps.values() {
            let tasks = by_app
                .get(app.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let plan = plan_app(app, tasks);
            kills.extend(plan.kill);
            if plan.launch == 0 {
                continue;
            }
            let on_agents: BTreeSet<String> = tasks
                .iter()
                .filter(|t| !t.is_killing())
                .map(|t| t.agent_id.clone())
                .collect();
            let constraints = app.constraints();
            needs.push(Need {
                app_id: app.id.clone(),
                role: app.role.clone(),
                cpus: app.cpus,
                mem: app.mem,
                disk: app.disk,
                ports: app.port_definitions.len(),
                count: plan.launch,
                unique_hosts: constraints.contains(&Constraint::HostnameUnique),
                only_host: constraints.iter().find_map(|c| match c {
                    Constraint::HostnameCluster(h) => Some(h.clone()),
                    _ => None,
                }),
                on_agents,
            });
        }
        for id in kills {
            self.kill_task(&id);
        }
        let unplaced = if needs.is_empty() {
            Vec::new()
        } else {
            self.launch_needs(&needs, now_ms)
        };
        self.update_queue(unplaced, now_ms);
        self.finish_deployments(now_ms);
    }

    /// `/v2/queue`: apps with instances no agent could take this pass, and why.
    fn update_queue(&mut self, unplaced: Vec<(String, usize, String)>, now_ms: u64) {
        let mut queue = std::collections::BTreeMap::new();
        for (app_id, count, reason) in unplaced {
            let since_ms = self.queue.get(&app_id).map_or(now_ms, |q| q.since_ms);
            if self.queue.get(&app_id).is_none_or(|q| q.reason != reason) {
                tracing::info!(app = %app_id, count, %reason, "instances waiting for resources");
            }
            queue.insert(
                app_id,
                super::QueueEntry {
                    count,
                    since_ms,
                    reason,
                },
            );
        }
        self.queue = queue;
    }

    /// Places and launches what it can; returns (app, instances, why) for
    /// what it could not.
    fn launch_needs(&mut self, needs: &[Need], now_ms: u64) -> Vec<(String, usize, String)> {
        let slots: Vec<AgentSlot> = self
            .agents
            .values()
            .filter(|a| a.connected && !a.lost)
            .filter_map(|a| {
                let r = &a.resources;
                // Totals include the reservation: the rest is unreserved.
                let (rc, rm, rd) = r.reserved.as_ref().map_or((0.0, 0.0, 0.0), |x| (x.cpus, x.mem, x.disk));
                let mut text = format!(
                    "cpus:{};mem:{};disk:{};ports:{}",
                    (r.cpus - rc).max(0.0),
                    (r.mem - rm).max(0.0),
                    (r.disk - rd).max(0.0),
                    r.ports
                );
                if let Some(res) = &r.reserved {
                    text.push_str(&format!(
                        ";cpus({role}):{};mem({role}):{};disk({role}):{}",
                        res.cpus,
                        res.mem,
                        res.disk,
                        role = res.role
                    ));
                }
                match Resources::parse(&text) {
                    Ok(total) => Some(AgentSlot {
                        id: a.id.clone(),
                        hostname: a.hostname.clone(),
                        total,
                    }),
                    Err(e) => {
                        tracing::warn!(agent = %a.id, error = %e, "agent resources unusable for placement");
                        None
                    }
                }
            })
            .collect();
        let used: Vec<UsedBy> = self
            .tasks
            .values()
            .map(|t| {
                let app = self.apps.get(&t.app_id);
                UsedBy {
                    agent: t.agent_id.clone(),
                    role: app.map_or("*".into(), |a| a.role.clone()),
                    cpus: app.map_or(0.0, |a| a.cpus),
                    mem: app.map_or(0.0, |a| a.mem),
                    disk: app.map_or(0.0, |a| a.disk),
                    ports: t.ports.clone(),
                }
            })
            .collect();
        let placements = match placement::place(&slots, &used, needs) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "placement failed");
                return needs
                    .iter()
                    .map(|n| (n.app_id.clone(), n.count, format!("placement failed: {e}")))
                    .collect();
            }
        };
        let unplaced: Vec<(String, usize, String)> = needs
            .iter()
            .filter_map(|n| {
                let placed = placements.iter().filter(|p| p.app_id == n.app_id).count();
                (placed < n.count).then(|| {
                    let why = placement::why_unplaced(&slots, &used, &placements, n);
                    (n.app_id.clone(), n.count - placed, why)
                })
            })
            .collect();
        for p in placements {
            let Some(app) = self.apps.get(&p.app_id).cloned() else {
                continue;
            };
            let Some(agent) = self.agents.get(&p.agent).cloned() else {
                continue;
            };
            let (task_id, seq) = self.new_task_id(&app.id);
            let task = TaskRecord {
                id: task_id.clone(),
                app_id: app.id.clone(),
                agent_id: agent.id.clone(),
                host: agent.hostname.clone(),
                ip: agent.ip,
                ports: p.ports.clone(),
                state: TaskState::Staging,
                healthy: None,
                version: app.version,
                seq,
                staged_at_ms: now_ms,
                reason: None,
            };
            self.tasks.insert(task_id.clone(), task);
            self.touch_task(&task_id);
            let launch = launch_message(&app, &task_id, &agent.hostname, &p.ports);
            self.send(&agent.id, ControlMessage::Launch(launch));
        }
        unplaced
    }

    /// Orders a kill (idempotent); the task weighs 0 in every VIP from now.
    pub(super) fn kill_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if t.is_killing() {
            return;
        }
        t.state = TaskState::Killing;
        let agent = t.agent_id.clone();
        self.touch_task(id);
        self.send(
            &agent,
            ControlMessage::Kill {
                task_id: id.to_string(),
            },
        );
    }

    fn finish_deployments(&mut self, now_ms: u64) {
        let done: Vec<String> = self
            .meta
            .deployments
            .values()
            .filter(|d| {
                let tasks: Vec<&TaskRecord> = self
                    .tasks
                    .values()
                    .filter(|t| t.app_id == d.app_id)
                    .collect();
                match self.apps.get(&d.app_id) {
                    None => tasks.is_empty(),
                    Some(app) => {
                        let checks = !app.health_checks.is_empty();
                        tasks.len() == app.instances as usize
                            && tasks
                                .iter()
                                .all(|t| t.version >= app.version && t.is_healthy(checks))
                    }
                }
            })
            .map(|d| d.app_id.clone())
            .collect();
        for app_id in done {
            if let Some(d) = self.meta.deployments.remove(&app_id) {
                self.touch_meta();
                self.event(serde_json::json!({
                    "eventType": "deployment_success", "id": d.id,
                    "plan": {"id": d.id, "original": {"id": d.app_id}, "version": d.version},
                    "timestamp": now_ms,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::app::parse_app;

    fn task(
        id: &str,
        version: u64,
        state: TaskState,
        healthy: Option<bool>,
        seq: u64,
    ) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            app_id: "/web".into(),
            agent_id: "a1".into(),
            host: "h".into(),
            ip: [10, 0, 0, 1].into(),
            ports: vec![31000],
            state,
            healthy,
            version,
            seq,
            staged_at_ms: 0,
            reason: None,
        }
    }

    fn app(instances: u32, version: u64, json_extra: &str) -> App {
        let mut a = parse_app(
            format!(r#"{{"id":"/web","cmd":"x","instances":{instances}{json_extra}}}"#).as_bytes(),
            None,
        )
        .unwrap();
        a.version = version;
        a
    }

    #[test]
    fn scale_up_and_down_kills_unhealthy_then_newest() {
        let a = app(3, 1, "");
        let t1 = task("t1", 1, TaskState::Running, None, 1);
        let t2 = task("t2", 1, TaskState::Running, None, 2);
        assert_eq!(plan_app(&a, &[&t1, &t2]).launch, 1);
        let a = app(1, 1, "");
        let t3 = task("t3", 1, TaskState::Staging, None, 3);
        let p = plan_app(&a, &[&t1, &t2, &t3]);
        assert_eq!(p.kill, vec!["t3", "t2"]);
    }

    #[test]
    fn rolling_replace_keeps_minimum_health_capacity() {
        let checks = r#","healthChecks":[{"protocol":"TCP"}]"#;
        // Defaults: min health 1, over capacity 1 → start all new first.
        let a = app(2, 2, checks);
        let o1 = task("o1", 1, TaskState::Running, Some(true), 1);
        let o2 = task("o2", 1, TaskState::Running, Some(true), 2);
        let p = plan_app(&a, &[&o1, &o2]);
        assert_eq!((p.launch, p.kill.len()), (2, 0));
        // One new healthy: one old may go (3 healthy, 2 needed).
        let n1 = task("n1", 2, TaskState::Running, Some(true), 3);
        let n2 = task("n2", 2, TaskState::Staging, None, 4);
        let p = plan_app(&a, &[&o1, &o2, &n1, &n2]);
        assert_eq!((p.launch, p.kill), (0, vec!["o2".to_string()]));
        // min health 0.5, over capacity 0: kill one old first, then launch.
        let a = app(
            2,
            2,
            r#","upgradeStrategy":{"minimumHealthCapacity":0.5,"maximumOverCapacity":0}"#,
        );
        let p = plan_app(&a, &[&o1, &o2]);
        assert_eq!((p.launch, p.kill), (0, vec!["o2".to_string()]));
        // min health 1, over capacity 0: stuck without a forced kill.
        let a = app(
            2,
            2,
            r#","upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0}"#,
        );
        let p = plan_app(&a, &[&o1, &o2]);
        assert_eq!((p.launch, p.kill.len()), (0, 1));
    }
}
