//! DC/OS IAM's API on the control: `POST /acs/api/v1/auth/login` (public)
//! and the accounts, `GET /acs/api/v1/users`, `PUT/GET/DELETE
//! /acs/api/v1/users/{uid}`; and `POST /v1/agents/join-tokens` (a join token
//! for new agents, `{"ttl_secs"}` → `{"token","exp"}`).
//!
//! Login bodies: `{"uid","password"}` (users) or `{"uid","token"[,"exp"]}`
//! (service accounts: `token` is a JWT they sign RS256 with their private
//! key, claims `uid` and `exp`; `exp` asks for the session's expiry, Unix
//! seconds). The answer is `{"token"}` and the same token in the cookie
//! `dcos-acs-auth-cookie` (marathon-lb reads only the cookie).
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Control;
use super::guard::unauthorized;
use super::routes::{Access, Routes};
use crate::auth::accounts::AccountRequest;
use crate::auth::keys::unix_now;
use crate::auth::{AuthError, COOKIE, JOIN_SECS};

pub fn routes(control: &Arc<Control>) -> Routes {
    Routes::new(control)
        .route(
            Method::POST,
            "/acs/api/v1/auth/login",
            Access::Public,
            login,
        )
        .route(
            Method::GET,
            "/acs/api/v1/users",
            Access::Session,
            list_users,
        )
        .route(
            Method::GET,
            "/acs/api/v1/users/{uid}",
            Access::Session,
            get_user,
        )
        .route(
            Method::PUT,
            "/acs/api/v1/users/{uid}",
            Access::Session,
            put_user,
        )
        .route(
            Method::DELETE,
            "/acs/api/v1/users/{uid}",
            Access::Session,
            delete_user,
        )
        .route(
            Method::POST,
            "/v1/agents/join-tokens",
            Access::Session,
            join_token,
        )
}

fn error(status: StatusCode, code: &str, text: String) -> Response {
    (
        status,
        Json(json!({"title": status.canonical_reason().unwrap_or(""), "description": text, "message": text, "code": code})),
    )
        .into_response()
}

/// A JSON body, or 400 saying `what` was expected and why it is not that.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "ERR_INVALID_DATA",
            format!("{}: {e}", what()),
        ))
    })
}

fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::Missing | AuthError::Refused(_) | AuthError::BadCredentials(_) => {
            unauthorized(&e)
        }
        AuthError::Account(a) => error(StatusCode::BAD_REQUEST, "ERR_INVALID_DATA", a.to_string()),
        AuthError::Exists(_) => error(StatusCode::CONFLICT, "ERR_USER_EXISTS", e.to_string()),
        AuthError::NoSuchAccount(_) => {
            error(StatusCode::NOT_FOUND, "ERR_UNKNOWN_USER_ID", e.to_string())
        }
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR_STORE",
            other.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    uid: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

async fn login(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let req: LoginRequest = match parse_body(&body, || {
        "login body: expected {\"uid\",\"password\"} or {\"uid\",\"token\"[,\"exp\"]}".into()
    }) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let auth = control.auth_handle();
    // Password hashing is slow on purpose: off the runtime.
    let result = tokio::task::spawn_blocking(move || match (&req.password, &req.token) {
        (Some(p), None) => auth.login_password(&req.uid, p),
        (None, Some(t)) => auth.login_service(&req.uid, t, req.exp),
        _ => Err(AuthError::BadCredentials(req.uid.clone())),
    })
    .await;
    match result {
        Ok(Ok((token, exp))) => {
            let max_age = exp.saturating_sub(unix_now());
            let secure = if control.config().tls { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
            );
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({ "token": token })),
            )
                .into_response()
        }
        Ok(Err(e)) => auth_error(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_INTERNAL",
            e.to_string(),
        ),
    }
}

async fn list_users(State(control): State<Arc<Control>>) -> Response {
    let array: Vec<_> = control.auth().accounts().iter().map(|a| a.view()).collect();
    Json(json!({ "array": array })).into_response()
}

async fn get_user(State(control): State<Arc<Control>>, Path(uid): Path<String>) -> Response {
    match control.auth().account(&uid) {
        Some(a) => Json(a.view()).into_response(),
        None => auth_error(AuthError::NoSuchAccount(uid)),
    }
}

async fn put_user(
    State(control): State<Arc<Control>>,
    Path(uid): Path<String>,
    body: Bytes,
) -> Response {
    let req: AccountRequest = match parse_body(&body, || {
        format!(
            "account {uid:?}: expected {{\"description\",\"password\"}} or {{\"description\",\"public_key\"}}"
        )
    }) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let auth = control.auth_handle();
    let created = tokio::task::spawn_blocking(move || auth.create_account(&uid, req)).await;
    match created {
        Ok(Ok(a)) => (StatusCode::CREATED, Json(a.view())).into_response(),
        Ok(Err(e)) => auth_error(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_INTERNAL",
            e.to_string(),
        ),
    }
}

async fn delete_user(State(control): State<Arc<Control>>, Path(uid): Path<String>) -> Response {
    match control.auth().delete_account(&uid) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => auth_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn join_token(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let req: JoinRequest = if body.is_empty() {
        JoinRequest::default()
    } else {
        match parse_body(&body, || "join token request".into()) {
            Ok(r) => r,
            Err(refused) => return *refused,
        }
    };
    let ttl = req.ttl_secs.unwrap_or(JOIN_SECS).clamp(1, 30 * 24 * 3600);
    let token = control.auth().join_token(ttl);
    Json(json!({ "token": token, "exp": unix_now() + ttl })).into_response()
}
