//! The agent's HTTP API (Minuteman-compatible), served on 127.0.0.1:61421 by
//! default. GET only.
//!
//! - `GET /vips` — every VIP with its backends and counters (Minuteman shape)
//! - `GET /vip/{ip:port}` — one VIP's backends; 404 `no_backends`, 400 `invalid_vip`
//! - `GET /v1/vips` — the programmed table in the dcos-net / VIP file shape
//!
//! [`views`] builds the JSON from the table and counters (pure); this module
//! only routes and reads state.
pub mod views;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::daemon::Shared;

/// The router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/vips", get(all_vips))
        .route("/vip/{vip}", get(one_vip))
        .route("/v1/vips", get(v1_vips))
        .fallback(not_found)
        .with_state(shared)
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

fn internal(e: crate::dataplane::EbpfError) -> Response {
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

async fn v1_vips(State(shared): State<Arc<Shared>>) -> Response {
    let table = shared.table();
    Json(crate::vip::file::to_entries(&table)).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found")
}
