//! Following a `garrison-control`: one WebSocket stream (messages in
//! `garrison_proto`), reconnected with backoff (0.1 s doubling to 5 s).
//!
//! - this file: the session — register with resources and every task the
//!   launcher still knows, heartbeat, launch and kill orders (idempotent:
//!   a replayed launch of a known task reports its state, a kill of an unknown
//!   task reports it killed), task states as the launcher changes them, VIP
//!   tables handed to the daemon loop and acknowledged once programmed, and
//!   the data path's per-VIP connection counters with heartbeats (autoscale).
//! - [`table`]: the control's VIP table as a source table (pure).
//! - [`checks`]: the tasks' health checks.
//! - [`api_proxy`]: reads of the agent's API asked over the stream
//!   (the control's `/agent/<id>/…`).
//! - [`credential`]: the agent's credential (join token first, then its own
//!   secret kept 0600 in the state dir).
//!
//! The stream is `wss://` verified against the control's CA (`ca_file`), or
//! `ws://` to a loopback control.
//!
//! Launcher calls block (a launch waits for RUNNING, a kill for the grace
//! period) and run on the blocking pool, never on the loop.
pub mod api_proxy;
pub mod checks;
pub mod credential;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use garrison_proto::{
    AgentMessage, AgentResources, ControlMessage, LaunchTask, Registration, TaskState, TaskStatus,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::daemon::{ControlTable, Shared};
use crate::isolation::launcher::Launcher;
use crate::isolation::node::NodeResources;
use crate::isolation::{TaskInfo, TaskResources, TaskSpec};
use checks::{CheckEvent, Target};

/// Who this agent is to the control.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub stream_url: String,
    pub agent_id: String,
    pub hostname: String,
    pub ip: IpAddr,
    /// Verifies the control (`wss://`); `None` for a loopback `ws://` control.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Used until the agent holds its own credential.
    pub join_token: Option<String>,
    /// Where the agent's own credential is kept.
    pub credential_path: std::path::PathBuf,
}

/// A client configuration trusting only the CA certificates in `ca_pem`.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the CA file".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The WebSocket handshake request with `authorization`.
fn stream_request(
    config: &LinkConfig,
    authorization: &str,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::client::Request,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = config.stream_url.as_str().into_client_request()?;
    let value = authorization.parse().map_err(|_| {
        tokio_tungstenite::tungstenite::Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect(
                "the credential is not a valid header value".into(),
            ),
        )
    })?;
    request.headers_mut().insert("authorization", value);
    Ok(request)
}

/// Connects the stream with the agent's credential (or join token).
async fn connect(config: &LinkConfig) -> Result<Ws, String> {
    let stored =
        credential::load(&config.credential_path, &config.agent_id).map_err(|e| e.to_string())?;
    let authorization = credential::authorization(
        stored.as_ref(),
        config.join_token.as_deref(),
        &config.agent_id,
        &config.credential_path,
    )
    .map_err(|e| e.to_string())?;
    let request = stream_request(config, &authorization).map_err(|e| e.to_string())?;
    let connector = config.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    // No Nagle: a status update or an acknowledgement is one small frame
    // that must not wait for the previous one's ACK (a drain is latency).
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err(format!(
                "the control refused the stream: {} {body}",
                r.status()
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Health state kept across reconnects: the last result and the check tasks.
#[derive(Default)]
struct Health {
    healthy: HashMap<String, Option<bool>>,
    checks: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
}

impl Health {
    fn forget(&mut self, task: &str) {
        self.healthy.remove(task);
        for h in self.checks.remove(task).unwrap_or_default() {
            h.abort();
        }
    }
}

fn status_of(info: &TaskInfo, healthy: Option<bool>) -> TaskStatus {
    TaskStatus {
        task_id: info.id.clone(),
        state: info.state,
        reason: info.reason.clone(),
        healthy,
    }
}

/// Runs the link until the process ends.
pub async fn run(
    config: LinkConfig,
    launcher: Option<Launcher>,
    node: Arc<NodeResources>,
    tables: mpsc::Sender<ControlTable>,
    shared: Arc<Shared>,
    api: axum::Router,
) {
    let (check_tx, mut check_rx) = mpsc::channel::<CheckEvent>(256);
    let mut health = Health::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&config).await {
            Ok(ws) => {
                tracing::info!(url = %config.stream_url, "connected to the control");
                backoff = Duration::from_millis(100);
                let session = Session {
                    config: &config,
                    launcher: launcher.as_ref(),
                    node: &node,
                    tables: &tables,
                    check_tx: &check_tx,
                    shared: &shared,
                    api: &api,
                };
                session.run(ws, &mut health, &mut check_rx).await;
                tracing::warn!(
                    "control stream closed; reconnecting (the last VIP table keeps serving)"
                );
            }
            Err(e) => {
                tracing::warn!(url = %config.stream_url, error = %e, retry_ms = backoff.as_millis() as u64, "cannot reach the control");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(garrison_proto::RECONNECT_MAX_MS));
    }
}

struct Session<'a> {
    config: &'a LinkConfig,
    launcher: Option<&'a Launcher>,
    node: &'a NodeResources,
    tables: &'a mpsc::Sender<ControlTable>,
    check_tx: &'a mpsc::Sender<CheckEvent>,
    shared: &'a Shared,
    /// The agent's own API (reads asked by the control).
    api: &'a axum::Router,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Session<'_> {
    fn registration(&self, health: &Health) -> Registration {
        // An agent that cannot run tasks offers nothing to place.
        let (cpus, mem, disk) = match self.launcher {
            Some(_) => (self.node.cpus, self.node.mem, self.node.disk),
            None => (0.0, 0.0, 0.0),
        };
        Registration {
            agent_id: self.config.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            ip: self.config.ip,
            resources: AgentResources {
                cpus,
                mem,
                disk,
                ports: if self.node.ports.starts_with('[') {
                    self.node.ports.clone()
                } else {
                    format!("[{}]", self.node.ports)
                },
                reserved: self.node.reserved.clone(),
            },
            tasks: self
                .launcher
                .map(|l| l.list())
                .unwrap_or_default()
                .iter()
                .map(|t| status_of(t, health.healthy.get(&t.id).copied().flatten()))
                .collect(),
        }
    }

    async fn run(self, ws: Ws, health: &mut Health, check_rx: &mut mpsc::Receiver<CheckEvent>) {
        let (mut sink, mut source) = ws.split();
        let mut changes = self.launcher.map(Launcher::subscribe);
        let (ack_tx, mut ack_rx) = mpsc::channel::<u64>(64);
        let (done_tx, mut done_rx) = mpsc::channel::<TaskStatus>(64);
        let (api_tx, mut api_rx) = mpsc::channel::<AgentMessage>(16);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut last_counters = BTreeMap::new();
        heartbeat.tick().await;
        let send = |m: AgentMessage| {
            Message::Text(serde_json::to_string(&m).expect("serialisable").into())
        };
        if sink
            .send(send(AgentMessage::Register(self.registration(health))))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let out: Option<AgentMessage> = tokio::select! {
                incoming = source.next() => {
                    let Some(Ok(msg)) = incoming else { return };
                    let text = match &msg {
                        Message::Text(t) => t.as_str().to_string(),
                        Message::Close(frame) => {
                            if let Some(f) = frame {
                                tracing::warn!(code = u16::from(f.code), reason = %f.reason, "the control closed the stream");
                            }
                            return;
                        }
                        _ => continue,
                    };
                    match serde_json::from_str::<ControlMessage>(&text) {
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable control message ignored");
                            None
                        }
                        Ok(ControlMessage::Registered { heartbeat_interval_ms }) => {
                            heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_interval_ms.max(50)));
                            None
                        }
                        Ok(ControlMessage::Launch(l)) => self.launch(l, health, &done_tx),
                        Ok(ControlMessage::Kill { task_id }) => self.kill(task_id, health, &done_tx),
                        Ok(ControlMessage::VipTable(t)) => {
                            self.program(t, &ack_tx).await;
                            None
                        }
                        Ok(ControlMessage::Credential { agent_id, secret }) => {
                            self.keep_credential(agent_id, secret);
                            None
                        }
                        Ok(ControlMessage::ApiRequest { request_id, path }) => {
                            let (router, tx) = (self.api.clone(), api_tx.clone());
                            tokio::spawn(async move {
                                let _ = tx.send(api_proxy::answer(router, request_id, path).await).await;
                            });
                            None
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    // The VIP counters ride on heartbeats when they moved.
                    match self.shared.vip_connections() {
                        Ok(counters) if counters != last_counters => {
                            last_counters = counters.clone();
                            Some(AgentMessage::VipCounters { counters })
                        }
                        Ok(_) => Some(AgentMessage::Heartbeat),
                        Err(e) => {
                            tracing::debug!(error = %e, "reading VIP counters failed");
                            Some(AgentMessage::Heartbeat)
                        }
                    }
                }
                Some(revision) = ack_rx.recv() => Some(AgentMessage::VipAck { revision }),
                Some(status) = done_rx.recv() => Some(AgentMessage::TaskStatus(status)),
                Some(answer) = api_rx.recv() => Some(answer),
                Some(e) = check_rx.recv() => {
                    if !health.checks.contains_key(&e.task_id) {
                        None
                    } else {
                        health.healthy.insert(e.task_id.clone(), Some(e.healthy));
                        if e.kill {
                            tracing::warn!(task = %e.task_id, "health checks failed too often: killing the task");
                            self.kill(e.task_id.clone(), health, &done_tx);
                        }
                        self.launcher
                            .and_then(|l| l.get(&e.task_id))
                            .filter(|t| !t.state.is_terminal())
                            .map(|t| AgentMessage::TaskStatus(status_of(&t, Some(e.healthy))))
                    }
                }
                change = async {
                    match changes.as_mut() {
                        Some(c) => c.recv().await,
                        None => std::future::pending().await,
                    }
                } => match change {
                    Ok(info) => {
                        let healthy = health.healthy.get(&info.id).copied().flatten();
                        if info.state.is_terminal() {
                            health.forget(&info.id);
                        }
                        Some(AgentMessage::TaskStatus(status_of(&info, healthy)))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed changes: re-register, which reports every task.
                        Some(AgentMessage::Register(self.registration(health)))
                    }
                    Err(_) => None,
                },
            };
            if let Some(m) = out
                && sink.send(send(m)).await.is_err()
            {
                return;
            }
        }
    }

    /// Starts a task (or reports the one already known by that id).
    fn launch(
        &self,
        l: LaunchTask,
        health: &mut Health,
        done: &mpsc::Sender<TaskStatus>,
    ) -> Option<AgentMessage> {
        let Some(launcher) = self.launcher else {
            return Some(AgentMessage::TaskStatus(TaskStatus {
                task_id: l.task_id,
                state: TaskState::Failed,
                reason: Some("this agent runs no tasks".into()),
                healthy: None,
            }));
        };
        if let Some(t) = launcher.get(&l.task_id) {
            // A replay. A running task without checks here (re-adopted after
            // this agent restarted) gets its checks back.
            if !t.state.is_terminal()
                && !l.health_checks.is_empty()
                && !health.checks.contains_key(&t.id)
            {
                self.start_checks(&l, health);
            }
            let healthy = health.healthy.get(&t.id).copied().flatten();
            return Some(AgentMessage::TaskStatus(status_of(&t, healthy)));
        }
        let spec = TaskSpec {
            id: l.task_id.clone(),
            cmd: l.cmd.clone(),
            resources: TaskResources {
                cpus: l.cpus,
                mem: l.mem,
                disk: l.disk,
            },
            env: l.env.clone().into_iter().collect::<BTreeMap<_, _>>(),
            user: l.user.clone(),
        };
        self.start_checks(&l, health);
        let launcher = launcher.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            // RUNNING arrives through the launcher's changes; a refusal is reported here.
            if let Err(e) = launcher.launch(spec) {
                tracing::warn!(task = %l.task_id, error = %e, "launch refused");
                let _ = done.blocking_send(TaskStatus {
                    task_id: l.task_id,
                    state: TaskState::Failed,
                    reason: Some(e.to_string()),
                    healthy: None,
                });
            }
        });
        None
    }

    /// Starts the task's health checks (none: nothing to do).
    fn start_checks(&self, l: &LaunchTask, health: &mut Health) {
        let target = Target {
            task_id: l.task_id.clone(),
            ip: self.config.ip,
            ports: l.ports.clone(),
            launcher: self.launcher.cloned(),
        };
        let handles: Vec<_> = l
            .health_checks
            .iter()
            .map(|c| {
                tokio::spawn(checks::run_check(
                    c.clone(),
                    target.clone(),
                    self.check_tx.clone(),
                ))
            })
            .collect();
        if !handles.is_empty() {
            health.checks.insert(l.task_id.clone(), handles);
            health.healthy.insert(l.task_id.clone(), None);
        }
    }

    /// Kills a task (the final state arrives through the launcher's changes).
    fn kill(
        &self,
        task_id: String,
        health: &mut Health,
        done: &mpsc::Sender<TaskStatus>,
    ) -> Option<AgentMessage> {
        let known = self
            .launcher
            .and_then(|l| l.get(&task_id))
            .is_some_and(|t| !t.state.is_terminal());
        if !known {
            health.forget(&task_id);
            let state = self.launcher.and_then(|l| l.get(&task_id));
            return Some(AgentMessage::TaskStatus(match state {
                Some(t) => status_of(&t, None),
                None => TaskStatus {
                    task_id,
                    state: TaskState::Killed,
                    reason: Some("unknown to the agent".into()),
                    healthy: None,
                },
            }));
        }
        // Checks stop at once: a task being killed is not probed further.
        for h in health.checks.remove(&task_id).unwrap_or_default() {
            h.abort();
        }
        let launcher = self.launcher.expect("known implies a launcher").clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = launcher.kill(&task_id) {
                tracing::warn!(task = %task_id, error = %e, "kill failed");
                let _ = done.blocking_send(TaskStatus {
                    task_id,
                    state: TaskState::Lost,
                    reason: Some(format!("kill failed: {e}")),
                    healthy: None,
                });
            }
        });
        None
    }

    /// Keeps the credential the control issued at join (0600).
    fn keep_credential(&self, agent_id: String, secret: String) {
        if agent_id != self.config.agent_id {
            tracing::error!(issued_for = %agent_id, "the control issued a credential for another agent id; ignored");
            return;
        }
        let c = credential::AgentCredential { agent_id, secret };
        match credential::store(&self.config.credential_path, &c) {
            Ok(()) => {
                tracing::info!(path = %self.config.credential_path.display(), "joined the control: credential kept")
            }
            Err(e) => {
                tracing::error!(error = %e, "keeping the credential failed: the next connection needs a join token again")
            }
        }
    }

    /// Hands a table to the daemon loop; acknowledges once it is programmed.
    async fn program(&self, t: garrison_proto::VipTable, acks: &mpsc::Sender<u64>) {
        let table = table::source_table(&t);
        let (tx, rx) = oneshot::channel();
        if self
            .tables
            .send(ControlTable {
                table,
                programmed: tx,
            })
            .await
            .is_err()
        {
            return;
        }
        let acks = acks.clone();
        let revision = t.revision;
        tokio::spawn(async move {
            if rx.await == Ok(true) {
                let _ = acks.send(revision).await;
            } else {
                tracing::error!(
                    revision,
                    "VIP table from the control not programmed; not acknowledged"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_carries_the_credential() {
        let config = LinkConfig {
            stream_url: "wss://127.0.0.1:8080/v1/agents/stream".into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            ip: "127.0.0.1".parse().unwrap(),
            tls: None,
            join_token: None,
            credential_path: "/nonexistent/c.json".into(),
        };
        let r = stream_request(&config, "agent a:s3cret").unwrap();
        assert_eq!(r.headers()["authorization"], "agent a:s3cret");
        assert_eq!(r.uri().path(), "/v1/agents/stream");
        assert!(stream_request(&config, "bad\nvalue").is_err());
        assert!(tls_config(b"not a pem").is_err());
    }
}
