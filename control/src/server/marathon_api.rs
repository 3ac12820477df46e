//! Marathon's REST API, the supported subset: `/v2/apps` (POST, GET),
//! `/v2/apps/{id}` (GET, PUT, DELETE), `/v2/apps/{id}/tasks`,
//! `DELETE /v2/apps/{id}/tasks/{task}[?scale=true]`, `/v2/tasks`, `/v2/queue`,
//! `/v2/deployments`, `/v2/info` and `/v2/events` (server-sent events).
//!
//! Errors have Marathon's shapes: `{"message": …}` (404, 409, 401, 503) and
//! `{"message": "Object is not valid", "details": [{"path", "errors"}]}` (422).
//! A refused request changes nothing. `PUT` merges the given fields into the
//! current definition (`{"instances": 5}` scales), as Marathon does.
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Control, ControlError};
use crate::cluster::{Cluster, ClusterError, TaskRecord};
use crate::marathon::app::{App, InvalidApp, normalize_id, parse_app};

pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*id}",
            get(get_app).put(put_app).delete(delete_app),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/deployments", get(deployments))
        .route("/v2/queue", get(queue))
        .route("/v2/info", get(info))
        .route("/v2/events", get(events))
        .with_state(control)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

fn invalid(e: InvalidApp) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "message": e.to_string(), "details": e.details })),
    )
        .into_response()
}

fn cluster_error(e: ClusterError) -> Response {
    let status = match e {
        ClusterError::UnknownApp(_) | ClusterError::UnknownTask(_) => StatusCode::NOT_FOUND,
        ClusterError::AppExists(_) | ClusterError::Locked(_) => StatusCode::CONFLICT,
    };
    message(status, e.to_string())
}

fn store_error(e: ControlError) -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the change is not stored yet: {e}"),
    )
}

/// Mutations need the token when one is configured.
fn authorized(control: &Control, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if control.token_ok(headers) {
        Ok(())
    } else {
        Err(Box::new(message(
            StatusCode::UNAUTHORIZED,
            "mutations need Authorization: token=<token>",
        )))
    }
}

/// A task in Marathon's shape.
fn task_json(t: &TaskRecord, checks: bool) -> Value {
    let mut v = json!({
        "id": t.id, "appId": t.app_id, "host": t.host, "ports": t.ports,
        "slaveId": t.agent_id, "state": t.state, "version": t.version.to_string(),
        "stagedAt": t.staged_at_ms, "ipAddresses": [{"ipAddress": t.ip, "protocol": "IPv4"}],
    });
    if checks && let Some(alive) = t.healthy {
        v["healthCheckResults"] = json!([{ "alive": alive, "taskId": t.id }]);
    }
    v
}

/// An app with Marathon's counters and its deployments.
fn app_json(c: &Cluster, app: &App, embed_tasks: bool) -> Value {
    let checks = !app.health_checks.is_empty();
    let tasks: Vec<&TaskRecord> = c.tasks.values().filter(|t| t.app_id == app.id).collect();
    let count = |f: &dyn Fn(&&TaskRecord) -> bool| tasks.iter().filter(|t| f(t)).count();
    let mut v = serde_json::to_value(app).expect("serialisable");
    v["tasksRunning"] = json!(count(&|t| t.state == garrison_proto::TaskState::Running));
    v["tasksStaged"] = json!(count(&|t| t.state == garrison_proto::TaskState::Staging));
    v["tasksHealthy"] = json!(if checks {
        count(&|t| t.is_healthy(true))
    } else {
        0
    });
    v["tasksUnhealthy"] = json!(count(&|t| t.healthy == Some(false)));
    v["deployments"] = json!(
        c.meta
            .deployments
            .get(&app.id)
            .map(|d| vec![json!({ "id": d.id })])
            .unwrap_or_default()
    );
    if embed_tasks {
        v["tasks"] = tasks.iter().map(|t| task_json(t, checks)).collect();
    }
    v
}

async fn list_apps(State(control): State<Arc<Control>>) -> Response {
    let apps: Vec<Value> =
        control.read(|c, _| c.apps.values().map(|a| app_json(c, a, false)).collect());
    Json(json!({ "apps": apps })).into_response()
}

async fn create_app(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&control, &headers) {
        return *r;
    }
    let app = match parse_app(&body, None) {
        Ok(a) => a,
        Err(e) => return invalid(e),
    };
    let id = app.id.clone();
    match control.mutate(|c, now| c.create_app(app, now)) {
        Ok(Ok(_)) => {
            let v = control.read(|c, _| c.apps.get(&id).map(|a| app_json(c, a, false)));
            (
                StatusCode::CREATED,
                [("location", format!("/v2/apps{id}"))],
                Json(v),
            )
                .into_response()
        }
        Ok(Err(e)) => cluster_error(e),
        Err(e) => store_error(e),
    }
}

/// `{id}` or `{id}/tasks`.
fn split_tasks(path: &str) -> (String, bool) {
    match path.strip_suffix("/tasks") {
        Some(id) => (format!("/{}", id.trim_start_matches('/')), true),
        None => (format!("/{}", path.trim_start_matches('/')), false),
    }
}

async fn get_app(State(control): State<Arc<Control>>, Path(path): Path<String>) -> Response {
    let (raw, tasks) = split_tasks(&path);
    let Ok(id) = normalize_id(&raw) else {
        return message(StatusCode::NOT_FOUND, format!("App '{raw}' does not exist"));
    };
    control.read(|c, _| match c.apps.get(&id) {
        None => message(StatusCode::NOT_FOUND, format!("App '{id}' does not exist")),
        Some(app) if tasks => {
            let checks = !app.health_checks.is_empty();
            let list: Vec<Value> = c
                .tasks
                .values()
                .filter(|t| t.app_id == id)
                .map(|t| task_json(t, checks))
                .collect();
            Json(json!({ "tasks": list })).into_response()
        }
        Some(app) => Json(json!({ "app": app_json(c, app, true) })).into_response(),
    })
}

async fn put_app(
    State(control): State<Arc<Control>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&control, &headers) {
        return *r;
    }
    let (raw, _) = split_tasks(&path);
    let id = match normalize_id(&raw) {
        Ok(id) => id,
        Err(e) => {
            return invalid(InvalidApp {
                details: vec![crate::marathon::app::FieldError {
                    path: "/id".into(),
                    errors: vec![e],
                }],
            });
        }
    };
    // Merge the given fields into the current definition.
    let merged = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(given)) => {
            let current = control.read(|c, _| c.apps.get(&id).cloned());
            let mut base = current
                .map(|a| serde_json::to_value(a).expect("serialisable"))
                .unwrap_or_else(|| json!({}));
            if let Some(obj) = base.as_object_mut() {
                obj.remove("version");
                for (k, v) in given {
                    obj.insert(k, v);
                }
            }
            serde_json::to_vec(&base).expect("serialisable")
        }
        _ => body.to_vec(),
    };
    let app = match parse_app(&merged, Some(&id)) {
        Ok(a) => a,
        Err(e) => return invalid(e),
    };
    match control.mutate(|c, now| {
        let version = c.apps.get(&app.id).map_or(1, |a| a.version);
        c.update_app(app, now).map(|d| (d, version))
    }) {
        Ok(Ok((deployment, _))) => {
            let version = control.read(|c, _| c.apps.get(&id).map_or(0, |a| a.version));
            Json(json!({ "deploymentId": deployment, "version": version.to_string() }))
                .into_response()
        }
        Ok(Err(e)) => cluster_error(e),
        Err(e) => store_error(e),
    }
}

/// `?scale=true` on a task kill.
#[derive(serde::Deserialize, Default)]
struct KillQuery {
    #[serde(default)]
    scale: bool,
}

async fn delete_app(
    State(control): State<Arc<Control>>,
    Path(path): Path<String>,
    axum::extract::Query(query): axum::extract::Query<KillQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&control, &headers) {
        return *r;
    }
    if let Some((app, task)) = path.split_once("/tasks/") {
        return kill_task(&control, app, task, query.scale);
    }
    let (raw, _) = split_tasks(&path);
    let id = normalize_id(&raw).unwrap_or(raw);
    match control.mutate(|c, now| c.delete_app(&id, now)) {
        Ok(Ok(deployment)) => Json(json!({ "deploymentId": deployment })).into_response(),
        Ok(Err(e)) => cluster_error(e),
        Err(e) => store_error(e),
    }
}

/// `DELETE /v2/apps/{id}/tasks/{task}[?scale=true]`.
fn kill_task(control: &Control, app: &str, task: &str, scale: bool) -> Response {
    let id = normalize_id(app).unwrap_or_else(|_| app.to_string());
    let task_json_now = control.read(|c, _| {
        let checks = c.apps.get(&id).is_some_and(|a| !a.health_checks.is_empty());
        c.tasks.get(task).map(|t| task_json(t, checks))
    });
    match control.mutate(|c, now| c.kill_app_task(&id, task, scale, now)) {
        Ok(Ok(Some(deployment))) => {
            let version = control.read(|c, _| c.apps.get(&id).map_or(0, |a| a.version));
            Json(json!({ "deploymentId": deployment, "version": version.to_string() }))
                .into_response()
        }
        Ok(Ok(None)) => Json(json!({ "task": task_json_now })).into_response(),
        Ok(Err(e)) => cluster_error(e),
        Err(e) => store_error(e),
    }
}

async fn list_tasks(State(control): State<Arc<Control>>) -> Response {
    let tasks: Vec<Value> = control.read(|c, _| {
        c.tasks
            .values()
            .map(|t| {
                let checks = c
                    .apps
                    .get(&t.app_id)
                    .is_some_and(|a| !a.health_checks.is_empty());
                task_json(t, checks)
            })
            .collect()
    });
    Json(json!({ "tasks": tasks })).into_response()
}

async fn deployments(State(control): State<Arc<Control>>) -> Response {
    let list: Vec<Value> = control.read(|c, _| {
        c.meta
            .deployments
            .values()
            .map(|d| {
                json!({
                    "id": d.id, "version": d.version.to_string(), "affectedApps": [d.app_id],
                    "currentActions": [{
                        "action": if d.removing { "StopApplication" } else { "ScaleApplication" },
                        "app": d.app_id,
                    }],
                })
            })
            .collect()
    });
    Json(Value::Array(list)).into_response()
}

/// Apps with instances no agent could take, and why (Marathon's shape, with
/// Garrison's `reason`).
async fn queue(State(control): State<Arc<Control>>) -> Response {
    let list: Vec<Value> = control.read(|c, now| {
        c.queue
            .iter()
            .map(|(app, q)| {
                json!({
                    "app": {"id": app}, "count": q.count,
                    "delay": {"overdue": false, "timeLeftSeconds": 0},
                    "waitingMs": now.saturating_sub(q.since_ms), "reason": q.reason,
                })
            })
            .collect()
    });
    Json(json!({ "queue": list })).into_response()
}

async fn info(State(control): State<Arc<Control>>) -> Response {
    let c = control.config();
    Json(json!({
        "name": "garrison-control",
        "version": env!("CARGO_PKG_VERSION"),
        "leader": c.advertise.to_string(),
        "frameworkId": "garrison-marathon",
        "marathon_config": { "mesos_role": "*", "framework_name": "marathon" },
        "http_config": { "http_port": c.advertise.port() },
    }))
    .into_response()
}

async fn events(
    State(control): State<Arc<Control>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let subscription = control.subscribe();
    let stream = futures_util::stream::unfold(subscription, |(mut rx, mut stopping)| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                // The server is stopping: end the stream so shutdown completes.
                _ = stopping.wait_for(|s| *s) => return None,
            };
            match received {
                Ok(v) => {
                    let kind = v["eventType"].as_str().unwrap_or("event").to_string();
                    let event = Event::default().event(kind).data(v.to_string());
                    return Some((Ok(event), (rx, stopping)));
                }
                // A slow reader skips what it missed, as Marathon's event bus does.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
