//! Authentication of API requests, as DC/OS Admin Router does it: a token in
//! `Authorization: token=<JWT>` (DC/OS), `Authorization: Bearer <JWT>`, or
//! the `dcos-acs-auth-cookie` cookie. Anything else is 401 with
//! `WWW-Authenticate: oauthjwt`.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Control;
use crate::auth::{AuthError, COOKIE};

/// Who made a request (in the request's extensions once authenticated).
#[derive(Debug, Clone)]
pub struct Principal(pub String);

/// The token a request presents: the Authorization header first, then the cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("token=")
            .or_else(|| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if token.is_some() {
            return token.map(str::to_string);
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}

/// 401 with DC/OS's challenge; the body says what was wrong (Marathon
/// clients read `message`, DC/OS ones `description`).
pub fn unauthorized(e: &AuthError) -> Response {
    let code = match e {
        AuthError::Missing => "ERR_MISSING_AUTH_TOKEN",
        AuthError::BadCredentials(_) => "ERR_INVALID_CREDENTIALS",
        _ => "ERR_INVALID_TOKEN",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "oauthjwt")],
        axum::Json(json!({
            "title": "Unauthorized",
            "description": e.to_string(),
            "message": e.to_string(),
            "code": code,
        })),
    )
        .into_response()
}

/// The middleware of every [`super::routes::Access::Session`] route.
pub async fn require_session(
    State(control): State<Arc<Control>>,
    mut req: Request,
    next: Next,
) -> Response {
    let refused = match presented_token(req.headers()) {
        None => AuthError::Missing,
        Some(token) => match control.auth().authenticate(&token) {
            Ok(uid) => {
                req.extensions_mut().insert(Principal(uid));
                return next.run(req).await;
            }
            Err(e) => e,
        },
    };
    // Read what the client sent first: closing a connection with unread
    // bytes makes the kernel send RST, which can destroy the 401 before the
    // client reads it (seen with the Python client's POST over TLS).
    let _ = tokio::time::timeout(
        DRAIN_TIMEOUT,
        axum::body::to_bytes(req.into_body(), DRAIN_LIMIT),
    )
    .await;
    unauthorized(&refused)
}

/// At most this much of a refused request's body is read (and dropped).
const DRAIN_LIMIT: usize = 1 << 20;
/// For at most this long.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_come_from_the_dcos_header_bearer_or_cookie() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "token=abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[(
                "cookie",
                "x=1; dcos-acs-auth-cookie=abc; y=2"
            )]))
            .as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic Zm9v")])),
            None
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "token=")])),
            None
        );
        assert_eq!(presented_token(&headers(&[("cookie", "other=abc")])), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }
}
