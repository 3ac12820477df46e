//! The task endpoints (Mesos agent-like):
//!
//! - `POST /v1/tasks` `{"id","cmd","resources":{"cpus","mem","disk"},"env","user"}` → 201 with
//!   the task (`user` optional: the agent's `default_user`; an unknown user, or root
//!   without `allow_root_tasks`, is a 400 `invalid_task`)
//! - `GET /v1/tasks`, `GET /v1/tasks/{id}` → `{"id","state","reason","exit_status","sandbox","resources","user"}`
//! - `DELETE /v1/tasks/{id}` → 202: killed with the grace period
//! - `GET /monitor/statistics` → `[{"executor_id","framework_id","statistics":{…}}]`
//! - `GET /state` → the node's `resources`, `reserved_resources`, `unreserved_resources`
//!
//! Mutating requests need the agent's API token or root over the Unix socket
//! (see [`super::auth`], applied to every route before these handlers).
//! Errors are `{"error": code, "message": why}` with a 4xx status, and a
//! refused request changes nothing.
// Handlers' helpers return a ready response as their error: it is returned
// to axum at once, never stored or propagated far.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::isolation::{TaskError, TaskSpec, launcher::Launcher, node::NodeResources};

/// What the task endpoints serve from.
#[derive(Clone)]
pub struct TasksApi {
    /// The launcher, or why tasks cannot run on this host.
    pub launcher: Result<Launcher, Arc<String>>,
    pub node: Arc<NodeResources>,
}

impl std::fmt::Debug for TasksApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TasksApi")
            .field("available", &self.launcher.is_ok())
            .field("node", &self.node)
            .finish()
    }
}

pub fn router(api: TasksApi) -> Router {
    Router::new()
        .route("/v1/tasks", get(list).post(create))
        .route("/v1/tasks/{id}", get(one).delete(kill))
        .route("/monitor/statistics", get(statistics))
        .route("/state", get(state))
        .with_state(api)
}

fn error(status: StatusCode, code: &str, message: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

fn launcher(api: &TasksApi) -> Result<&Launcher, Response> {
    api.launcher.as_ref().map_err(|why| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "isolation_unavailable",
            why,
        )
    })
}

fn task_error(e: TaskError) -> Response {
    let (status, code) = match &e {
        TaskError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_task"),
        TaskError::CommandNotFound(_) => (StatusCode::BAD_REQUEST, "command_not_found"),
        TaskError::Exists(_) => (StatusCode::CONFLICT, "task_exists"),
        TaskError::NotFound(_) => (StatusCode::NOT_FOUND, "no_task"),
        TaskError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "isolation_unavailable"),
        TaskError::Hook { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "hook_refused"),
        TaskError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "launch_failed"),
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "task request");
    }
    error(status, code, e)
}

async fn create(
    State(api): State<TasksApi>,
    body: Result<Json<TaskSpec>, JsonRejection>,
) -> Response {
    let Json(spec) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_task", e.body_text()),
    };
    let l = match launcher(&api) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    // Launching forks and writes cgroup files: off the async thread.
    match tokio::task::spawn_blocking(move || l.launch(spec)).await {
        Ok(Ok(info)) => (StatusCode::CREATED, Json(info)).into_response(),
        Ok(Err(e)) => task_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "launch_failed", e),
    }
}

async fn list(State(api): State<TasksApi>) -> Response {
    match launcher(&api) {
        Ok(l) => Json(l.list()).into_response(),
        Err(r) => r,
    }
}

async fn one(State(api): State<TasksApi>, Path(id): Path<String>) -> Response {
    match launcher(&api) {
        Ok(l) => match l.get(&id) {
            Some(t) => Json(t).into_response(),
            None => task_error(TaskError::NotFound(id)),
        },
        Err(r) => r,
    }
}

async fn kill(State(api): State<TasksApi>, Path(id): Path<String>) -> Response {
    match launcher(&api) {
        Ok(l) => match l.kill(&id) {
            Ok(t) => (StatusCode::ACCEPTED, Json(t)).into_response(),
            Err(e) => task_error(e),
        },
        Err(r) => r,
    }
}

async fn statistics(State(api): State<TasksApi>) -> Response {
    let l = match launcher(&api) {
        Ok(l) => l.clone(),
        Err(r) => return r,
    };
    let stats = tokio::task::spawn_blocking(move || l.statistics())
        .await
        .unwrap_or_default();
    let body: Vec<serde_json::Value> = stats
        .into_iter()
        .map(|(t, s)| {
            serde_json::json!({
                "executor_id": t.id,
                "executor_name": t.id,
                "framework_id": "garrison",
                "source": t.id,
                "statistics": s,
            })
        })
        .collect();
    Json(body).into_response()
}

async fn state(State(api): State<TasksApi>) -> Response {
    Json(api.node.state_json()).into_response()
}
