//! Marathon's REST API, the supported subset: `/v2/apps` (POST, GET),
//! `/v2/apps/{id}` (GET, PUT, DELETE), `/v2/apps/{id}/tasks` (GET, DELETE),
//! `DELETE /v2/apps/{id}/tasks/{task}[?scale=true]`, `/v2/tasks`, `/v2/queue`,
//! `/v2/deployments`, `/v2/info` and `/v2/events` (server-sent events).
//!
//! Shapes follow Marathon 1.3 where clients parse them strictly (the Python
//! client builds its models from every field it is given): timestamps are
//! ISO-8601 strings, `GET /v2/apps` embeds tasks only for
//! `embed=apps.tasks` (or `app.tasks`, `apps.failures`), boolean query
//! parameters are `true`/`false` in any case (`True` from Python), and
//! `/v2/info` has `marathon_config`, `zookeeper_config` and `http_config`.
//!
//! Errors have Marathon's shapes: `{"message": …}` (404, 409, 401, 503) and
//! `{"message": "Object is not valid", "details": [{"path", "errors"}]}` (422).
//! A refused request changes nothing. `PUT` merges the given fields into the
//! current definition (`{"instances": 5}` scales), as Marathon does.
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::routes::{Access, Routes};
use super::{Control, ControlError};
use crate::cluster::{Cluster, ClusterError, TaskRecord};
use crate::marathon::app::{App, InvalidApp, normalize_id, parse_app};
use crate::marathon::timestamp::iso8601_utc_ms;

pub fn routes(control: &Arc<Control>) -> Routes {
    routes_with_access(control, Access::Session)
}

/// BENCHMARK HOOK, not for serving: the same routes and handlers with
/// `access` instead of [`Access::Session`], so `control/examples/auth_bench.rs`
/// can serve the unauthenticated baseline (`Access::Public`) from the very
/// handlers production serves. The control itself only uses [`routes`].
#[doc(hidden)]
pub fn routes_with_access(control: &Arc<Control>, access: Access) -> Routes {
    use Method as M;
    let s = access;
    Routes::new(control)
        .route(M::GET, "/v2/apps", s, list_apps)
        .route(M::POST, "/v2/apps", s, create_app)
        .route(M::GET, "/v2/apps/{*id}", s, get_app)
        .route(M::PUT, "/v2/apps/{*id}", s, put_app)
        .route(M::DELETE, "/v2/apps/{*id}", s, delete_app)
        .route(M::GET, "/v2/tasks", s, list_tasks)
        .route(M::GET, "/v2/deployments", s, deployments)
        .route(M::GET, "/v2/queue", s, queue)
        .route(M::GET, "/v2/info", s, info)
        .route(M::GET, "/v2/events", s, events)
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

/// Wall-clock milliseconds since the Unix epoch at the cluster's time 0
/// (the cluster counts milliseconds from the control's start).
fn unix_ms_at_zero(now_ms: u64) -> u64 {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    unix_now.saturating_sub(now_ms)
}

/// A task in Marathon's shape; `zero` is [`unix_ms_at_zero`].
fn task_json(t: &TaskRecord, checks: bool, zero: u64) -> Value {
    let mut v = json!({
        "id": t.id, "appId": t.app_id, "host": t.host, "ports": t.ports,
        "slaveId": t.agent_id, "state": t.state, "version": t.version.to_string(),
        "stagedAt": iso8601_utc_ms(zero.saturating_add(t.staged_at_ms)),
        "ipAddresses": [{"ipAddress": t.ip, "protocol": if t.ip.is_ipv6() { "IPv6" } else { "IPv4" }}],
    });
    if checks && let Some(alive) = t.healthy {
        v["healthCheckResults"] = json!([{ "alive": alive, "taskId": t.id }]);
    }
    v
}

/// An app with Marathon's counters and its deployments; `zero` is
/// [`unix_ms_at_zero`].
fn app_json(c: &Cluster, app: &App, embed_tasks: bool, zero: u64) -> Value {
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
        v["tasks"] = tasks.iter().map(|t| task_json(t, checks, zero)).collect();
    }
    v
}

/// Whether `GET /v2/apps?embed=…` asks for tasks: Marathon's prefixes
/// `apps.`, `app.`, `group.apps.` with `tasks` or the deprecated `failures`.
fn embeds_tasks(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "embed")
        .any(|(_, value)| {
            let value = value.replace("%2E", ".").replace("%2e", ".");
            ["apps.", "app.", "group.apps."].iter().any(|prefix| {
                value
                    .strip_prefix(prefix)
                    .is_some_and(|what| what == "tasks" || what == "failures")
            })
        })
}

async fn list_apps(State(control): State<Arc<Control>>, RawQuery(query): RawQuery) -> Response {
    let embed = embeds_tasks(query.as_deref());
    let apps: Vec<Value> = control.read(|c, now| {
        let zero = unix_ms_at_zero(now);
        c.apps
            .values()
            .map(|a| app_json(c, a, embed, zero))
            .collect()
    });
    Json(json!({ "apps": apps })).into_response()
}

async fn create_app(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let app = match parse_app(&body, None) {
        Ok(a) => a,
        Err(e) => return invalid(e),
    };
    let id = app.id.clone();
    match control.mutate(|c, now| c.create_app(app, now)) {
        Ok(Ok(_)) => {
            let v = control.read(|c, now| {
                c.apps
                    .get(&id)
                    .map(|a| app_json(c, a, false, unix_ms_at_zero(now)))
            });
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
    control.read(|c, now| match c.apps.get(&id) {
        None => message(StatusCode::NOT_FOUND, format!("App '{id}' does not exist")),
        Some(app) if tasks => {
            let checks = !app.health_checks.is_empty();
            let zero = unix_ms_at_zero(now);
            let list: Vec<Value> = c
                .tasks
                .values()
                .filter(|t| t.app_id == id)
                .map(|t| task_json(t, checks, zero))
                .collect();
            Json(json!({ "tasks": list })).into_response()
        }
        Some(app) => {
            Json(json!({ "app": app_json(c, app, true, unix_ms_at_zero(now)) })).into_response()
        }
    })
}

async fn put_app(
    State(control): State<Arc<Control>>,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
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

/// `?scale=true` on a task kill (other parameters, such as `force` and
/// `wipe`, are accepted and ignored).
#[derive(serde::Deserialize, Default)]
struct KillQuery {
    #[serde(default, deserialize_with = "query_bool")]
    scale: bool,
}

/// A boolean query parameter as Marathon reads one: `true` in any case is
/// true (Python clients send `True`), anything else false.
fn query_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    Ok(text.eq_ignore_ascii_case("true"))
}

async fn delete_app(
    State(control): State<Arc<Control>>,
    Path(path): Path<String>,
    axum::extract::Query(query): axum::extract::Query<KillQuery>,
) -> Response {
    if let Some((app, task)) = path.split_once("/tasks/") {
        return kill_task(&control, app, task, query.scale);
    }
    let (raw, tasks) = split_tasks(&path);
    if tasks {
        return kill_tasks(&control, &raw, query.scale);
    }
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
    let task_json_now = control.read(|c, now| {
        let checks = c.apps.get(&id).is_some_and(|a| !a.health_checks.is_empty());
        c.tasks
            .get(task)
            .map(|t| task_json(t, checks, unix_ms_at_zero(now)))
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

/// `DELETE /v2/apps/{id}/tasks[?scale=true]`: kills the app's tasks, the app
/// stays. Marathon's answers: the killed tasks, or with `scale` the
/// deployment that lowers `instances`.
fn kill_tasks(control: &Control, app: &str, scale: bool) -> Response {
    let id = normalize_id(app).unwrap_or_else(|_| app.to_string());
    let before = control.read(|c, now| {
        let checks = c.apps.get(&id).is_some_and(|a| !a.health_checks.is_empty());
        let zero = unix_ms_at_zero(now);
        c.tasks
            .values()
            .filter(|t| t.app_id == id)
            .map(|t| (t.id.clone(), task_json(t, checks, zero)))
            .collect::<Vec<_>>()
    });
    match control.mutate(|c, now| c.kill_app_tasks(&id, scale, now)) {
        Ok(Ok((_, Some(deployment)))) => {
            let version = control.read(|c, _| c.apps.get(&id).map_or(0, |a| a.version));
            Json(json!({ "deploymentId": deployment, "version": version.to_string() }))
                .into_response()
        }
        Ok(Ok((killed, None))) => {
            let tasks: Vec<Value> = before
                .into_iter()
                .filter(|(t, _)| killed.contains(t))
                .map(|(_, v)| v)
                .collect();
            Json(json!({ "tasks": tasks })).into_response()
        }
        Ok(Err(e)) => cluster_error(e),
        Err(e) => store_error(e),
    }
}

async fn list_tasks(State(control): State<Arc<Control>>) -> Response {
    let tasks: Vec<Value> = control.read(|c, now| {
        let zero = unix_ms_at_zero(now);
        c.tasks
            .values()
            .map(|t| {
                let checks = c
                    .apps
                    .get(&t.app_id)
                    .is_some_and(|a| !a.health_checks.is_empty());
                task_json(t, checks, zero)
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
        "elected": true,
        "marathon_config": { "mesos_role": "*", "framework_name": "marathon" },
        // No ZooKeeper behind Garrison; clients parse the object all the same.
        "zookeeper_config": {},
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

#[cfg(test)]
mod tests {
    use super::{KillQuery, embeds_tasks};
    use axum::extract::Query;
    use axum::http::Uri;

    #[test]
    fn embed_asks_for_tasks_with_any_of_marathons_prefixes() {
        assert!(embeds_tasks(Some("embed=apps.tasks")));
        assert!(embeds_tasks(Some("embed=app.counts&embed=app.tasks")));
        assert!(embeds_tasks(Some("embed=group.apps.tasks")));
        assert!(embeds_tasks(Some("embed=apps%2Efailures")));
        assert!(!embeds_tasks(Some("embed=apps.counts&tasks=apps.tasks")));
        assert!(!embeds_tasks(Some("embed=apps.tasksx")));
        assert!(!embeds_tasks(None));
    }

    #[test]
    fn boolean_query_parameters_read_as_marathon_reads_them() {
        let scale = |q: &str| {
            let uri: Uri = format!("/v2/apps/a/tasks?{q}").parse().unwrap();
            Query::<KillQuery>::try_from_uri(&uri).unwrap().0.scale
        };
        assert!(scale("scale=true"));
        assert!(scale("scale=True&wipe=False"), "Python's str(True)");
        assert!(scale("force=False&scale=TRUE"));
        assert!(!scale("scale=False"));
        assert!(!scale("scale=1"), "Boolean.valueOf: only true is true");
        assert!(!scale("force=true"));
    }
}
