//! The agents' side of the control: `GET /v1/agents/stream` (WebSocket, one
//! per agent, see `garrison_proto`), `GET /v1/agents` and `GET /v1/vips`.
//!
//! The upgrade request carries the agent's own credential
//! (`Authorization: agent <id>:<secret>`) or, the first time, a join token
//! (`Authorization: token=<JWT>`, from `garrison-control token create --join`
//! or `POST /v1/agents/join-tokens`). A joining agent receives its credential
//! (`credential` message, right after it registers), bound to the id it
//! registered with; from then on the control accepts registrations for that
//! id only with that credential, and one live stream per agent.
//! `DELETE /v1/agents/{id}` revokes the credential, ends the stream and
//! declares the agent lost (its tasks are replaced).
//! A stream must open with a `register` message within 10 s. Orders for the
//! agent are queued per connection; a newer stream of the same agent replaces
//! the older one. A closed stream marks the agent disconnected (it keeps its
//! tasks until the agent timeout).
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use garrison_proto::AgentMessage;
use tokio::sync::mpsc;

use super::Control;
use super::routes::{Access, Routes};

pub fn routes(control: &Arc<Control>) -> Routes {
    // The stream checks its own credentials (join token or agent secret).
    Routes::new(control)
        .route(Method::GET, "/v1/agents/stream", Access::Public, stream)
        .route(Method::GET, "/v1/agents", Access::Session, list)
        .route(Method::DELETE, "/v1/agents/{id}", Access::Session, revoke)
        .route(Method::GET, "/v1/vips", Access::Session, vips)
}

/// How a stream proved itself.
#[derive(Debug, Clone, PartialEq)]
enum StreamAuth {
    /// A join token: the agent gets a credential for the id it registers.
    Join,
    /// Agent `id`'s own credential.
    Agent(String),
}

/// The stream's credentials from its upgrade request's headers.
fn stream_auth(control: &Control, headers: &axum::http::HeaderMap) -> Result<StreamAuth, String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("agents need Authorization: agent <id>:<secret>, or token=<join token> to join")?;
    if let Some(rest) = value.strip_prefix("agent ") {
        let (id, secret) = rest
            .trim()
            .split_once(':')
            .ok_or("expected Authorization: agent <id>:<secret>")?;
        return if control.auth().agent_secret_ok(id, secret) {
            Ok(StreamAuth::Agent(id.to_string()))
        } else {
            Err(format!(
                "agent {id:?}: unknown or revoked credential (join again with a join token after `garrison-control agent revoke {id}`)"
            ))
        };
    }
    let token = super::guard::presented_token(headers).ok_or("expected a join token")?;
    control
        .auth()
        .verify_join(&token)
        .map(|()| StreamAuth::Join)
        .map_err(|e| format!("join token: {e}"))
}

async fn stream(
    State(control): State<Arc<Control>>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let auth = match stream_auth(&control, &headers) {
        Ok(a) => a,
        Err(why) => {
            tracing::warn!(%why, "agent stream refused");
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "oauthjwt")],
                Json(serde_json::json!({ "message": why })),
            )
                .into_response();
        }
    };
    match ws {
        Ok(ws) => ws
            .max_message_size(MAX_FRAME)
            .on_upgrade(move |socket| serve_agent(control, socket, auth)),
        Err(rejection) => rejection.into_response(),
    }
}

/// Largest message an agent may send (a registration with many tasks).
const MAX_FRAME: usize = 16 << 20;

/// `DELETE /v1/agents/{id}`: revoke its credential, end its stream, declare it lost.
async fn revoke(State(control): State<Arc<Control>>, Path(id): Path<String>) -> Response {
    let had = match control.auth().revoke_agent(&id) {
        Ok(had) => had,
        Err(e) => {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "message": e.to_string() })),
            )
                .into_response();
        }
    };
    let connected = control.disconnect(&id);
    let known = control.mutate(|c, _| c.agent_revoked(&id)).unwrap_or(false);
    if !(had || connected || known) {
        return (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "message": format!("agent {id:?} is not known") })),
        )
            .into_response();
    }
    tracing::warn!(agent = %id, "agent revoked: credential deleted, stream closed, tasks to be replaced");
    Json(serde_json::json!({ "agent": id, "credential_revoked": had, "stream_closed": connected }))
        .into_response()
}

/// Closes a stream with a reason the agent logs.
async fn refuse(sink: &mut futures_util::stream::SplitSink<WebSocket, Message>, why: String) {
    tracing::warn!(%why, "agent stream refused");
    let _ = sink
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1008,
            reason: why.into(),
        })))
        .await;
}

fn parse(msg: &Message) -> Option<Result<AgentMessage, String>> {
    match msg {
        Message::Text(t) => Some(serde_json::from_str(t.as_str()).map_err(|e| e.to_string())),
        Message::Binary(b) => Some(serde_json::from_slice(b).map_err(|e| e.to_string())),
        _ => None,
    }
}

async fn serve_agent(control: Arc<Control>, socket: WebSocket, auth: StreamAuth) {
    let (mut sink, mut source) = socket.split();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = source.next().await {
            if let Some(parsed) = parse(&msg) {
                return Some(parsed);
            }
        }
        None
    })
    .await;
    let registration = match first {
        Ok(Some(Ok(AgentMessage::Register(r)))) => r,
        Ok(Some(Ok(other))) => {
            tracing::warn!(?other, "agent stream did not start with register; closed");
            return;
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "agent stream sent an unreadable message; closed");
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let agent = registration.agent_id.clone();
    if let StreamAuth::Agent(id) = &auth
        && *id != agent
    {
        refuse(
            &mut sink,
            format!("the credential of agent {id:?} cannot register agent {agent:?}"),
        )
        .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<axum::extract::ws::Utf8Bytes>();
    let Some(conn) = control.attach(&agent, tx) else {
        refuse(
            &mut sink,
            format!("agent {agent:?} already has a live stream"),
        )
        .await;
        return;
    };
    if auth == StreamAuth::Join {
        match control.auth().issue_agent_credential(&agent) {
            Ok(secret) => {
                let m = garrison_proto::ControlMessage::Credential {
                    agent_id: agent.clone(),
                    secret,
                };
                if sink.send(Message::Text(super::encode(&m))).await.is_err() {
                    control.detach(&agent, conn);
                    return;
                }
                tracing::info!(%agent, "agent joined: credential issued");
            }
            Err(e) => {
                control.detach(&agent, conn);
                refuse(&mut sink, e.to_string()).await;
                return;
            }
        }
    }
    tracing::info!(%agent, ip = %registration.ip, tasks = registration.tasks.len(), "agent registered");
    if let Err(e) = control.mutate(|c, now| c.agent_registered(registration, now)) {
        tracing::error!(error = %e, "committing a registration failed");
    }
    let (_, mut stopping) = control.subscribe();
    loop {
        tokio::select! {
            // Shutting down: close the stream (agents reconnect to the next control).
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
            order = rx.recv() => {
                let Some(text) = order else { break };
                if sink.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
            incoming = source.next() => {
                let Some(Ok(msg)) = incoming else { break };
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                // An agent declared lost while its stream stayed open (a
                // partition) must re-register: its tasks were replaced, and
                // registration is where the stale ones get killed.
                if control.read(|c, _| c.agents.get(&agent).is_some_and(|a| a.lost)) {
                    tracing::warn!(%agent, "message from an agent marked lost: closing its stream to make it re-register");
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                match parse(&msg) {
                    None => {}
                    Some(Err(e)) => tracing::warn!(%agent, error = %e, "unreadable agent message ignored"),
                    Some(Ok(m)) => handle(&control, &agent, m),
                }
            }
        }
    }
    if control.detach(&agent, conn) {
        tracing::warn!(%agent, "agent stream closed");
        let _ = control.mutate(|c, _| c.agent_disconnected(&agent));
    }
}

fn handle(control: &Control, agent: &str, m: AgentMessage) {
    let result = match m {
        AgentMessage::Heartbeat => control.note(|c, now| c.heartbeat(agent, now)),
        AgentMessage::TaskStatus(s) => control.mutate(|c, now| {
            c.heartbeat(agent, now);
            c.task_status(agent, &s, now)
        }),
        AgentMessage::VipAck { revision } => control.note(|c, now| {
            c.heartbeat(agent, now);
            c.vip_ack(agent, revision)
        }),
        AgentMessage::VipCounters { counters } => control.note(|c, now| {
            c.heartbeat(agent, now);
            c.vip_counters(agent, counters)
        }),
        AgentMessage::Register(_) => {
            tracing::warn!(%agent, "second register on one stream ignored");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(%agent, error = %e, "committing an agent message failed");
    }
}

async fn list(State(control): State<Arc<Control>>) -> impl IntoResponse {
    let agents = control.read(|c, now| {
        c.agents
            .values()
            .map(|a| {
                // What its tasks hold, by their apps' resources.
                let (mut cpus, mut mem, mut disk, mut tasks) = (0.0, 0.0, 0.0, 0);
                for t in c.tasks.values().filter(|t| t.agent_id == a.id) {
                    if let Some(app) = c.apps.get(&t.app_id) {
                        (cpus, mem, disk) = (cpus + app.cpus, mem + app.mem, disk + app.disk);
                    }
                    tasks += 1;
                }
                serde_json::json!({
                    "id": a.id, "hostname": a.hostname, "ip": a.ip,
                    "resources": a.resources, "connected": a.connected, "lost": a.lost,
                    "used": {"cpus": cpus, "mem": mem, "disk": disk, "tasks": tasks},
                    "last_seen_ms_ago": now.saturating_sub(a.last_seen_ms),
                    "acked_revision": a.acked_revision,
                })
            })
            .collect::<Vec<_>>()
    });
    Json(serde_json::json!({ "agents": agents }))
}

async fn vips(State(control): State<Arc<Control>>) -> impl IntoResponse {
    let table = control.read(|c, _| c.vip_table.clone());
    Json(table)
}
