//! The control's state and every decision it takes (pure: time comes in as
//! milliseconds, messages go out through [`Cluster::drain`]).
//!
//! - this file: apps, tasks, agents; what API calls and agent messages change.
//! - [`converge`]: bringing each app to its definition (scale, rolling
//!   replace honouring `upgradeStrategy`, replacement of lost tasks).
//! - [`vips`]: the cluster VIP table from `VIP_<n>` labels and the tasks'
//!   health, and which VIP names DNS may answer.
//! - [`names`]: the Mesos-DNS view (a master state built from the cluster).
//! - [`autoscale`]: apps scaled by their VIPs' connection rates.
//!
//! Ownership: the cluster owns named VIP addresses (agents following a control
//! never allocate their own); tasks belong to the agent that reported them.
pub mod autoscale;
pub mod converge;
pub mod names;
pub mod vips;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use garrison_proto::named::{Ipv4Range, NamedVipAllocator};
use garrison_proto::{
    AgentResources, ControlMessage, Registration, TaskState, TaskStatus, VipTable,
};
use serde::{Deserialize, Serialize};

use crate::marathon::app::App;

/// Tunables.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often agents heartbeat.
    pub heartbeat_ms: u64,
    /// Silence after which an agent is lost and its tasks are replaced.
    pub agent_timeout_ms: u64,
    /// Named VIP addresses come from here.
    pub vip_range: Ipv4Range,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_ms: 1000,
            agent_timeout_ms: 10_000,
            vip_range: "11.0.0.0/8".parse().expect("valid range"),
        }
    }
}

/// A task the control knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub app_id: String,
    pub agent_id: String,
    pub host: String,
    pub ip: IpAddr,
    pub ports: Vec<u16>,
    /// TASK_KILLING while a kill is pending.
    pub state: TaskState,
    pub healthy: Option<bool>,
    /// The app version the task runs.
    pub version: u64,
    /// Launch order (later = newer).
    pub seq: u64,
    pub staged_at_ms: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

impl TaskRecord {
    pub fn is_killing(&self) -> bool {
        self.state == TaskState::Killing
    }

    /// Running and, when the app has health checks, reported healthy.
    pub fn is_healthy(&self, has_checks: bool) -> bool {
        self.state == TaskState::Running && (!has_checks || self.healthy == Some(true))
    }
}

/// An agent the control knows.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub ip: IpAddr,
    pub resources: AgentResources,
    pub connected: bool,
    pub lost: bool,
    pub last_seen_ms: u64,
    /// The last VIP table revision the agent programmed.
    pub acked_revision: u64,
}

impl AgentRecord {
    pub fn is_live(&self) -> bool {
        !self.lost
    }
}

/// Instances of an app waiting for resources (Marathon's `/v2/queue`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEntry {
    pub count: usize,
    /// Since when some of the app's instances wait.
    pub since_ms: u64,
    /// Why no agent took them in the last pass.
    pub reason: String,
}

/// A deployment in progress (Marathon's `/v2/deployments` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub app_id: String,
    pub version: u64,
    pub started_ms: u64,
    /// The app is being deleted (its tasks are killed).
    pub removing: bool,
}

/// Something to send: an order to an agent or to all, or an event for `/v2/events`.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    ToAgent(String, ControlMessage),
    /// To every agent with an open stream (serialised once: a VIP table to a
    /// thousand agents is one encoding, not a thousand copies).
    Broadcast(ControlMessage),
    Event(serde_json::Value),
}

/// What must be written to the store after a change.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Dirty {
    pub apps: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
    pub meta: bool,
}

/// What the store keeps besides apps and tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub seq: u64,
    pub vip_revision: u64,
    pub vip_allocations: BTreeMap<String, std::net::Ipv4Addr>,
    /// Revision at which each VIP name first appeared.
    pub vip_since: BTreeMap<String, u64>,
    pub deployments: BTreeMap<String, Deployment>,
}

/// The whole state.
#[derive(Debug)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub apps: BTreeMap<String, App>,
    pub tasks: BTreeMap<String, TaskRecord>,
    pub agents: BTreeMap<String, AgentRecord>,
    pub vip_allocator: NamedVipAllocator,
    pub vip_table: VipTable,
    pub meta: Meta,
    /// Distinguishes task ids of this run from earlier runs.
    nonce: u32,
    /// When this process took over (agents get a timeout from here).
    started_ms: u64,
    /// Per agent: connections per VIP key, as last reported.
    counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per app: the keys of its VIPs (from the last table).
    app_vip_keys: BTreeMap<String, Vec<String>>,
    autoscalers: BTreeMap<String, autoscale::AppAutoscaler>,
    /// Apps with instances waiting for resources.
    pub queue: BTreeMap<String, QueueEntry>,
    outbox: Vec<Outgoing>,
    dirty: Dirty,
    /// Bumped by every change DNS answers depend on (tasks, agents, acks,
    /// the VIP table), so the server regenerates records only then.
    dns_epoch: u64,
}

/// Why an API call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("App '{0}' does not exist")]
    UnknownApp(String),
    #[error("An app with id [{0}] already exists.")]
    AppExists(String),
    #[error("App is locked by one or more deployments: {0}")]
    Locked(String),
    #[error("Task '{0}' does not exist")]
    UnknownTask(String),
}

impl Cluster {
    /// A cluster restored from stored apps, tasks and meta.
    pub fn restore(
        config: ClusterConfig,
        apps: Vec<App>,
        tasks: Vec<TaskRecord>,
        meta: Meta,
        nonce: u32,
        now_ms: u64,
    ) -> Self {
        let mut vip_allocator = NamedVipAllocator::new(config.vip_range);
        let json = serde_json::json!({ "allocations": meta.vip_allocations }).to_string();
        if let Ok((restored, dropped)) = NamedVipAllocator::from_json(config.vip_range, &json) {
            vip_allocator = restored;
            for d in dropped {
                tracing::warn!(allocation = %d, "stored named VIP outside the configured range dropped");
            }
        }
        let vip_table = VipTable {
            revision: meta.vip_revision,
            vips: Vec::new(),
        };
        let mut cluster = Cluster {
            config,
            apps: apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            agents: BTreeMap::new(),
            vip_allocator,
            vip_table,
            meta,
            nonce,
            started_ms: now_ms,
            counters: BTreeMap::new(),
            app_vip_keys: BTreeMap::new(),
            autoscalers: BTreeMap::new(),
            queue: BTreeMap::new(),
            outbox: Vec::new(),
            dirty: Dirty::default(),
            dns_epoch: 0,
        };
        // The table the stored tasks imply (sent to agents as they register).
        cluster.vip_table.vips = cluster.compute_vips();
        cluster
    }

    /// Takes the messages and events produced so far.
    pub fn drain(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// Takes the set of changed records.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// Puts back records a failed commit did not write.
    pub fn restore_dirty(&mut self, dirty: Dirty) {
        self.dirty.apps.extend(dirty.apps);
        self.dirty.tasks.extend(dirty.tasks);
        self.dirty.meta |= dirty.meta;
    }

    fn send(&mut self, agent: &str, m: ControlMessage) {
        self.outbox.push(Outgoing::ToAgent(agent.to_string(), m));
    }

    fn outbox_broadcast(&mut self, m: ControlMessage) {
        self.outbox.push(Outgoing::Broadcast(m));
    }

    fn event(&mut self, e: serde_json::Value) {
        self.outbox.push(Outgoing::Event(e));
    }

    fn touch_task(&mut self, id: &str) {
        self.dirty.tasks.insert(id.to_string());
        self.dns_epoch += 1;
    }

    /// Changes whenever what DNS answers may have changed.
    pub fn dns_epoch(&self) -> u64 {
        self.dns_epoch
    }

    fn touch_app(&mut self, id: &str) {
        self.dirty.apps.insert(id.to_string());
    }

    fn touch_meta(&mut self) {
        self.dirty.meta = true;
    }

    // ---- apps (the HTTP API) ----

    /// Creates an app (`POST /v2/apps`); returns the deployment id.
    pub fn create_app(&mut self, mut app: App, now_ms: u64) -> Result<String, ClusterError> {
        if self.apps.contains_key(&app.id) {
            return Err(ClusterError::AppExists(app.id));
        }
        app.version = 1;
        self.assign_service_ports(&mut app, None);
        self.event(serde_json::json!({
            "eventType": "api_post_event", "uri": "/v2/apps", "appDefinition": &app,
            "timestamp": now_ms,
        }));
        let id = app.id.clone();
        self.apps.insert(id.clone(), app);
        self.touch_app(&id);
        Ok(self.start_deployment(&id, false, now_ms))
    }

    /// Replaces or creates an app (`PUT /v2/apps/{id}`). A change of anything
    /// but `instances` is a new version, rolled out by replacing tasks.
    pub fn update_app(&mut self, mut app: App, now_ms: u64) -> Result<String, ClusterError> {
        let Some(old) = self.apps.get(&app.id).cloned() else {
            return self.create_app(app, now_ms);
        };
        self.assign_service_ports(&mut app, Some(&old));
        app.version = old.version;
        let mut probe = app.clone();
        probe.instances = old.instances;
        if probe != old {
            app.version = old.version + 1;
        }
        self.event(serde_json::json!({
            "eventType": "api_post_event", "uri": format!("/v2/apps{}", app.id),
            "appDefinition": &app, "timestamp": now_ms,
        }));
        let id = app.id.clone();
        self.apps.insert(id.clone(), app);
        self.touch_app(&id);
        Ok(self.start_deployment(&id, false, now_ms))
    }

    /// Removes an app (`DELETE /v2/apps/{id}`): its tasks are killed.
    pub fn delete_app(&mut self, id: &str, now_ms: u64) -> Result<String, ClusterError> {
        if self.apps.remove(id).is_none() {
            return Err(ClusterError::UnknownApp(id.to_string()));
        }
        self.touch_app(id);
        Ok(self.start_deployment(id, true, now_ms))
    }

    /// Kills one task of an app (`DELETE /v2/apps/{id}/tasks/{task}`); with
    /// `scale` the app also loses an instance (a deployment id is returned),
    /// without it the task is replaced.
    pub fn kill_app_task(
        &mut self,
        app_id: &str,
        task_id: &str,
        scale: bool,
        now_ms: u64,
    ) -> Result<Option<String>, ClusterError> {
        if !self.apps.contains_key(app_id) {
            return Err(ClusterError::UnknownApp(app_id.to_string()));
        }
        if self.tasks.get(task_id).is_none_or(|t| t.app_id != app_id) {
            return Err(ClusterError::UnknownTask(task_id.to_string()));
        }
        self.kill_task(task_id);
        if !scale {
            return Ok(None);
        }
        if let Some(app) = self.apps.get_mut(app_id) {
            app.instances = app.instances.saturating_sub(1);
        }
        self.touch_app(app_id);
        Ok(Some(self.start_deployment(app_id, false, now_ms)))
    }

    /// Kills every task of an app not already being killed (`DELETE
    /// /v2/apps/{id}/tasks`); the app stays. With `scale` it loses as many
    /// instances as tasks were killed (one deployment id is returned, as
    /// Marathon's `killAndScale`), without it the tasks are replaced.
    pub fn kill_app_tasks(
        &mut self,
        app_id: &str,
        scale: bool,
        now_ms: u64,
    ) -> Result<(Vec<String>, Option<String>), ClusterError> {
        if !self.apps.contains_key(app_id) {
            return Err(ClusterError::UnknownApp(app_id.to_string()));
        }
        let victims: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.app_id == app_id && !t.is_killing())
            .map(|t| t.id.clone())
            .collect();
        for id in &victims {
            self.kill_task(id);
        }
        if !scale {
            return Ok((victims, None));
        }
        if let Some(app) = self.apps.get_mut(app_id) {
            app.instances = app
                .instances
                .saturating_sub(u32::try_from(victims.len()).unwrap_or(u32::MAX));
        }
        self.touch_app(app_id);
        let deployment = self.start_deployment(app_id, false, now_ms);
        Ok((victims, Some(deployment)))
    }

    fn start_deployment(&mut self, app_id: &str, removing: bool, now_ms: u64) -> String {
        self.meta.seq += 1;
        let id = format!("{:08x}-{:04x}-deploy", self.nonce, self.meta.seq);
        let version = self.apps.get(app_id).map_or(0, |a| a.version);
        if let Some(old) = self.meta.deployments.get(app_id).cloned() {
            // Superseded by this one, as a forced Marathon deployment is.
            self.event(serde_json::json!({
                "eventType": "deployment_failed", "id": old.id,
                "plan": {"id": old.id, "original": {"id": old.app_id}, "version": old.version},
                "reason": "superseded by a newer deployment", "timestamp": now_ms,
            }));
        }
        self.meta.deployments.insert(
            app_id.to_string(),
            Deployment {
                id: id.clone(),
                app_id: app_id.to_string(),
                version,
                started_ms: now_ms,
                removing,
            },
        );
        self.touch_meta();
        id
    }

    /// Service ports: kept from the previous version where the port
    /// definition is unchanged, assigned from 10000–20000 for `port: 0`.
    fn assign_service_ports(&self, app: &mut App, old: Option<&App>) {
        let used: BTreeSet<u16> = self
            .apps
            .values()
            .filter(|a| a.id != app.id)
            .flat_map(|a| a.port_definitions.iter().map(|p| p.port))
            .collect();
        let mut taken = used;
        for (i, p) in app.port_definitions.iter_mut().enumerate() {
            if p.port != 0 {
                taken.insert(p.port);
                continue;
            }
            if let Some(prev) = old.and_then(|o| o.port_definitions.get(i))
                && prev.port != 0
                && !taken.contains(&prev.port)
            {
                p.port = prev.port;
            } else if let Some(free) = (10000..=20000).find(|port| !taken.contains(port)) {
                p.port = free;
            }
            taken.insert(p.port);
        }
    }

    // ---- agents (the stream) ----

    /// An agent (re-)registered: its tasks are reconciled (unknown ones
    /// killed, ones it no longer has lost) and it gets the VIP table.
    pub fn agent_registered(&mut self, reg: Registration, now_ms: u64) {
        self.dns_epoch += 1;
        let id = reg.agent_id.clone();
        self.agents.insert(
            id.clone(),
            AgentRecord {
                id: id.clone(),
                hostname: reg.hostname.clone(),
                ip: reg.ip,
                resources: reg.resources.clone(),
                connected: true,
                lost: false,
                last_seen_ms: now_ms,
                acked_revision: 0,
            },
        );
        self.send(
            &id,
            ControlMessage::Registered {
                heartbeat_interval_ms: self.config.heartbeat_ms,
            },
        );
        let reported: BTreeMap<&str, &TaskStatus> =
            reg.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        for status in &reg.tasks {
            if status.state.is_terminal() {
                continue;
            }
            match self.tasks.get(&status.task_id) {
                Some(t) if t.agent_id == id => {}
                _ => {
                    tracing::info!(agent = %id, task = %status.task_id, "agent runs a task this control does not know: killing it");
                    self.send(
                        &id,
                        ControlMessage::Kill {
                            task_id: status.task_id.clone(),
                        },
                    );
                }
            }
        }
        let mine: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.agent_id == id)
            .map(|t| t.id.clone())
            .collect();
        for task_id in mine {
            match reported.get(task_id.as_str()) {
                Some(status) => {
                    self.apply_status(&id, status, now_ms);
                    self.replay_checks(&id, &task_id);
                }
                None => {
                    // Orders sent while the agent was away are replayed; a
                    // task the agent never started is lost.
                    let status = TaskStatus {
                        task_id,
                        state: TaskState::Lost,
                        reason: Some("the agent re-registered without it".into()),
                        healthy: None,
                    };
                    self.apply_status(&id, &status, now_ms);
                }
            }
        }
        // Kill orders the agent may have missed are replayed.
        let killing: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.agent_id == id && t.is_killing())
            .map(|t| t.id.clone())
            .collect();
        for task_id in killing {
            self.send(&id, ControlMessage::Kill { task_id });
        }
        let table = self.vip_table.clone();
        self.send(&id, ControlMessage::VipTable(table));
    }

    /// A task the agent still runs (e.g. re-adopted after the agent
    /// restarted) whose app has health checks and which the agent reports
    /// without a health result: the launch is replayed, which the agent
    /// answers by resuming the task's checks.
    fn replay_checks(&mut self, agent: &str, task_id: &str) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        let Some(app) = self.apps.get(&t.app_id) else {
            return;
        };
        if app.health_checks.is_empty() || t.is_killing() || t.healthy.is_some() {
            return;
        }
        let launch = converge::launch_message(app, task_id, &t.host, &t.ports);
        self.send(agent, ControlMessage::Launch(launch));
    }

    pub fn heartbeat(&mut self, agent: &str, now_ms: u64) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.last_seen_ms = now_ms;
        }
    }

    /// The agent's credential was revoked: lost now (its tasks are replaced
    /// by the next pass). Whether the agent was known.
    pub fn agent_revoked(&mut self, agent: &str) -> bool {
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        if !a.lost {
            a.lost = true;
            a.connected = false;
            self.dns_epoch += 1;
        }
        true
    }

    /// The agent's stream closed; it has the timeout to come back.
    pub fn agent_disconnected(&mut self, agent: &str) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.connected = false;
        }
    }

    pub fn vip_ack(&mut self, agent: &str, revision: u64) {
        if let Some(a) = self.agents.get_mut(agent)
            && revision > a.acked_revision
        {
            a.acked_revision = revision;
            self.dns_epoch += 1;
        }
    }

    /// A status update from an agent.
    pub fn task_status(&mut self, agent: &str, status: &TaskStatus, now_ms: u64) {
        let known = self
            .tasks
            .get(&status.task_id)
            .is_some_and(|t| t.agent_id == agent);
        if !known {
            if !status.state.is_terminal() {
                self.send(
                    agent,
                    ControlMessage::Kill {
                        task_id: status.task_id.clone(),
                    },
                );
            }
            return;
        }
        self.apply_status(agent, status, now_ms);
    }

    fn apply_status(&mut self, agent: &str, status: &TaskStatus, now_ms: u64) {
        let Some(task) = self.tasks.get_mut(&status.task_id) else {
            return;
        };
        let killing = task.is_killing();
        let state_changed =
            task.state != status.state && !(killing && status.state == TaskState::Running);
        let health_changed = task.healthy != status.healthy;
        if state_changed {
            task.state = status.state;
            task.reason = status.reason.clone();
        }
        task.healthy = status.healthy;
        let task = task.clone();
        if state_changed {
            self.event(serde_json::json!({
                "eventType": "status_update_event", "taskId": task.id, "appId": task.app_id,
                "slaveId": agent, "host": task.host, "ports": task.ports,
                "taskStatus": status.state, "message": status.reason.clone().unwrap_or_default(),
                "version": task.version, "timestamp": now_ms,
            }));
        }
        if health_changed && let Some(alive) = status.healthy {
            self.event(serde_json::json!({
                "eventType": "health_status_changed_event", "appId": task.app_id,
                "taskId": task.id, "instanceId": task.id, "alive": alive, "timestamp": now_ms,
            }));
        }
        if task.state.is_terminal() {
            self.tasks.remove(&task.id);
        }
        self.touch_task(&task.id);
    }

    // ---- the periodic pass ----

    /// Times agents out, converges every app, and publishes a new VIP table
    /// when it changed. Call after every change and on a timer.
    pub fn tick(&mut self, now_ms: u64) {
        self.expire_agents(now_ms);
        self.autoscale(now_ms);
        // Drains first: a dead or unhealthy task's weight 0 goes out before
        // its replacement is placed (placement may take a while at scale).
        self.publish_vips();
        self.converge(now_ms);
        self.publish_vips();
    }

    fn expire_agents(&mut self, now_ms: u64) {
        let timeout = self.config.agent_timeout_ms;
        let mut lost_agents = Vec::new();
        for a in self.agents.values_mut() {
            if !a.lost && now_ms.saturating_sub(a.last_seen_ms) > timeout {
                a.lost = true;
                self.dns_epoch += 1;
                a.connected = false;
                lost_agents.push(a.id.clone());
            }
        }
        for id in &lost_agents {
            tracing::warn!(agent = %id, "agent missed its heartbeats: lost, its tasks are replaced");
        }
        // Tasks on lost agents, or (after a restart) on agents that never
        // came back within the timeout plus their longest reconnect wait
        // (a control down for a while finds agents retrying every 5 s).
        let restart_grace = timeout + garrison_proto::RECONNECT_MAX_MS;
        let orphaned: Vec<(String, String)> = self
            .tasks
            .values()
            .filter(|t| match self.agents.get(&t.agent_id) {
                Some(a) => a.lost,
                None => now_ms.saturating_sub(self.started_ms) > restart_grace,
            })
            .map(|t| (t.agent_id.clone(), t.id.clone()))
            .collect();
        for (agent, task_id) in orphaned {
            let status = TaskStatus {
                task_id,
                state: TaskState::Lost,
                reason: Some("agent lost".into()),
                healthy: None,
            };
            self.apply_status(&agent, &status, now_ms);
        }
    }

    /// A task id as Marathon makes them: the app path with `/` → `_`, a dot,
    /// a unique suffix (kept within the agent's 64 characters).
    fn new_task_id(&mut self, app_id: &str) -> (String, u64) {
        self.meta.seq += 1;
        self.touch_meta();
        let safe: String = app_id.trim_start_matches('/').replace('/', "_");
        let safe: String = safe.chars().take(40).collect();
        (
            format!("{safe}.{:08x}-{:06x}", self.nonce, self.meta.seq),
            self.meta.seq,
        )
    }

    /// Live agents that can run tasks.
    pub fn live_agents(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values().filter(|a| a.is_live())
    }
}

#[cfg(test)]
pub(crate) mod tests;
