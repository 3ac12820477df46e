//! The agents' side of the control: `GET /v1/agents/stream` (WebSocket, one
//! per agent, see `garrison_proto`), `GET /v1/agents` and `GET /v1/vips`.
//!
//! With a token configured, the upgrade request needs it (`Authorization:
//! token=T`). A stream must open with a `register` message within 10 s. Orders for the
//! agent are queued per connection; a newer stream of the same agent replaces
//! the older one. A closed stream marks the agent disconnected (it keeps its
//! tasks until the agent timeout).
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use garrison_proto::AgentMessage;
use tokio::sync::mpsc;

use super::Control;

pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/v1/agents/stream", get(stream))
        .route("/v1/agents", get(list))
        .route("/v1/vips", get(vips))
        .with_state(control)
}

async fn stream(
    State(control): State<Arc<Control>>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // Agents receive orders and report tasks: with a token, they need it too.
    if !control.token_ok(&headers) {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"message": "agents need Authorization: token=<token>"})),
        )
            .into_response();
    }
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| serve_agent(control, socket)),
        Err(rejection) => rejection.into_response(),
    }
}

fn parse(msg: &Message) -> Option<Result<AgentMessage, String>> {
    match msg {
        Message::Text(t) => Some(serde_json::from_str(t.as_str()).map_err(|e| e.to_string())),
        Message::Binary(b) => Some(serde_json::from_slice(b).map_err(|e| e.to_string())),
        _ => None,
    }
}

async fn serve_agent(control: Arc<Control>, socket: WebSocket) {
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
    let (tx, mut rx) = mpsc::unbounded_channel::<axum::extract::ws::Utf8Bytes>();
    let conn = control.attach(&agent, tx);
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
