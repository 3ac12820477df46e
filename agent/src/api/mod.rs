//! The agent's HTTP API (Minuteman-compatible), served on 127.0.0.1:61421 by
//! default and on a Unix socket (`<state_dir>/agent.sock`). Every error is
//! JSON. Who may call what is [`auth`]'s: a `Host` that is an IP literal or
//! `localhost` on every route, the API token (or root over the Unix socket)
//! for every mutation; [`credentials`] keeps the token file and the socket.
//!
//! - `GET /vips` — every VIP with its backends and counters (Minuteman shape)
//! - `GET /vip/{ip:port}` — one VIP's backends; 404 `no_backends`, 400 `invalid_vip`
//! - `GET /backend/{ip:port}` — one backend in every VIP; 404 `no_backends`, 400 `invalid_backend`
//! - `GET /v1/vips` — the programmed table (dcos-net shape), with `ETag` / `If-None-Match`
//! - `GET /v1/vips/refused` — VIPs refused for their address, with source and reason
//! - `GET /metrics` — Prometheus text
//! - `GET /healthz` — 200 when the data plane answers, 503 otherwise
//! - tasks, `/monitor/statistics`, `/state`: see [`tasks`]
//!
//! [`views`] and [`metrics`] build the bodies (pure); this module routes and
//! reads state.
pub mod auth;
pub mod credentials;
pub mod metrics;
pub mod tasks;
pub mod views;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::daemon::Shared;

/// The router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/vips", get(all_vips))
        .route("/vip/{vip}", get(one_vip))
        .route("/backend/{backend}", get(one_backend))
        .route("/v1/vips", get(v1_vips))
        .route("/v1/vips/refused", get(refused_vips))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(shared)
}

/// Everything the agent serves (the task endpoints when `tasks` is given),
/// every route behind [`auth::guard`]: the one router both listeners serve.
pub fn app(
    shared: Arc<Shared>,
    tasks: Option<tasks::TasksApi>,
    access: Arc<auth::ApiAccess>,
) -> Router {
    let mut app = router(shared);
    if let Some(tasks) = tasks {
        app = app.merge(tasks::router(tasks));
    }
    app.layer(axum::middleware::from_fn_with_state(access, auth::guard))
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

fn internal(e: crate::dataplane::DataplaneError) -> Response {
    tracing::error!(error = %e, "reading data-plane counters");
    error(StatusCode::INTERNAL_SERVER_ERROR, "counters_unavailable")
}

async fn all_vips(State(shared): State<Arc<Shared>>) -> Response {
    match shared.snapshot() {
        Ok(s) => Json(views::vips(&s)).into_response(),
        Err(e) => internal(e),
    }
}

async fn one_vip(State(shared): State<Arc<Shared>>, Path(vip): Path<String>) -> Response {
    let Some(key) = views::parse_vip_key(&vip) else {
        return error(StatusCode::BAD_REQUEST, "invalid_vip");
    };
    match shared.snapshot() {
        Ok(s) => match views::vip(&s, &key) {
            Some(v) => Json(v).into_response(),
            None => error(StatusCode::NOT_FOUND, "no_backends"),
        },
        Err(e) => internal(e),
    }
}

async fn one_backend(State(shared): State<Arc<Shared>>, Path(backend): Path<String>) -> Response {
    let Ok(addr) = backend.parse() else {
        return error(StatusCode::BAD_REQUEST, "invalid_backend");
    };
    match shared.snapshot() {
        Ok(s) => match views::backend(&s, addr) {
            Some(v) => Json(v).into_response(),
            None => error(StatusCode::NOT_FOUND, "no_backends"),
        },
        Err(e) => internal(e),
    }
}

/// A digest of the body: a strong validator for this representation.
fn etag(body: &[u8]) -> String {
    format!("\"{:016x}\"", crate::digest::fnv1a(body))
}

async fn v1_vips(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let table = shared.table();
    let body = serde_json::to_vec(&crate::vip::file::to_entries(&table)).expect("serialisable");
    let tag = etag(&body);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let tag_value = HeaderValue::from_str(&tag).expect("ASCII");
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag_value)]).into_response();
    }
    (
        [
            (header::ETAG, tag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn refused_vips(State(shared): State<Arc<Shared>>) -> Response {
    Json(views::refused(&shared.metrics().refused)).into_response()
}

async fn prometheus(State(shared): State<Arc<Shared>>) -> Response {
    match shared.snapshot() {
        Ok(s) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            metrics::render(&s, &shared.metrics()),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.health() {
        Ok(vips) => {
            let m = shared.metrics();
            let sources: serde_json::Map<String, serde_json::Value> = m
                .sources
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({ "up": v.up, "error": v.last_error }),
                    )
                })
                .collect();
            Json(serde_json::json!({ "status": "ok", "vips": vips, "sources": sources }))
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "health check: data plane unreadable");
            error(StatusCode::SERVICE_UNAVAILABLE, "dataplane_unavailable")
        }
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found")
}
