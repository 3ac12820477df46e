//! Admin Router's proxies on the control:
//!
//! - `/service/<name>/…` → a healthy task of the app labelled
//!   `DCOS_SERVICE_NAME=<name>`, on the port of index
//!   `DCOS_SERVICE_PORT_INDEX` (default 0), `DCOS_SERVICE_SCHEME` `http`
//!   (the default; `https` is refused with a clear 502 for now). Streaming
//!   both ways (hyper, one connection per request), request bodies up to
//!   [`MAX_REQUEST_BODY`], [`CONNECT_TIMEOUT`] to connect and
//!   [`RESPONSE_TIMEOUT`] for the response head. The target's path is what
//!   follows the name; `X-Forwarded-*` say where the request came in.
//! - `/agent/<id>/…` → agent `<id>`'s own API (`/state`,
//!   `/monitor/statistics`, `/v1/vips`, …), read-only, through the agent's
//!   stream (the agent API listens on the agent's loopback only):
//!   [`AGENT_TIMEOUT`] for the answer.
//!
//! A target that is gone or silent gives 502 or 504 with a JSON `message`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Control;
use super::routes::{Access, Routes};
use crate::cluster::Cluster;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_REQUEST_BODY: usize = 16 << 20;
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes(control: &Arc<Control>) -> Routes {
    let s = Access::Session;
    Routes::new(control)
        .any("/service/{name}", s, service)
        .any("/service/{name}/", s, service)
        .any("/service/{name}/{*path}", s, service)
        .any("/agent/{id}", s, agent)
        .any("/agent/{id}/", s, agent)
        .any("/agent/{id}/{*path}", s, agent)
}

fn failure(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// `/prefix/<first>/rest?q` → (`first`, `/rest?q`).
pub fn split_target(uri: &Uri, prefix: &str) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix(prefix)?;
    let (first, path) = match rest.split_once('/') {
        Some((f, p)) => (f, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    if first.is_empty() {
        return None;
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some((first.to_string(), format!("{path}{query}")))
}

/// Where `/service/<name>` goes: a healthy task of the app labelled with
/// the name, picked by `turn` among them (round robin).
pub fn service_target(c: &Cluster, name: &str, turn: usize) -> Result<SocketAddr, String> {
    let app = c
        .apps
        .values()
        .find(|a| a.labels.get("DCOS_SERVICE_NAME").is_some_and(|n| n == name))
        .ok_or_else(|| format!("no app is labelled DCOS_SERVICE_NAME={name}"))?;
    let scheme = app
        .labels
        .get("DCOS_SERVICE_SCHEME")
        .map_or("http", String::as_str);
    if scheme != "http" {
        return Err(format!(
            "{}: DCOS_SERVICE_SCHEME={scheme} is not supported (http only)",
            app.id
        ));
    }
    let index: usize = match app.labels.get("DCOS_SERVICE_PORT_INDEX") {
        None => 0,
        Some(i) => i
            .parse()
            .map_err(|_| format!("{}: DCOS_SERVICE_PORT_INDEX={i} is not a number", app.id))?,
    };
    let checks = !app.health_checks.is_empty();
    let mut targets: Vec<SocketAddr> = c
        .tasks
        .values()
        .filter(|t| t.app_id == app.id && t.is_healthy(checks))
        .filter_map(|t| t.ports.get(index).map(|p| SocketAddr::new(t.ip, *p)))
        .collect();
    targets.sort();
    if targets.is_empty() {
        return Err(format!(
            "{}: no healthy task with a port of index {index}",
            app.id
        ));
    }
    Ok(targets[turn % targets.len()])
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !hop_by_hop(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// The request's headers without the caller's Garrison credentials: a
/// service is an app anyone may deploy, and must not receive the session
/// token of whoever opens it (unlike Admin Router, which passed it on).
fn without_credentials(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(header::AUTHORIZATION);
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !kv.starts_with(&format!("{}=", crate::auth::COOKIE)))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
    headers
}

async fn service(State(control): State<Arc<Control>>, req: Request) -> Response {
    let Some((name, path)) = split_target(req.uri(), "/service/") else {
        return failure(StatusCode::NOT_FOUND, "expected /service/<name>/…".into());
    };
    let turn = control.next_turn();
    let target = match control.read(|c, _| service_target(c, &name, turn)) {
        Ok(t) => t,
        Err(why) => return failure(StatusCode::BAD_GATEWAY, format!("service {name}: {why}")),
    };
    match forward(req, target, &path, &name).await {
        Ok(r) => r,
        Err((status, why)) => failure(status, format!("service {name} at {target}: {why}")),
    }
}

/// Sends `req` to `target` at `path` and streams the answer back.
async fn forward(
    req: Request,
    target: SocketAddr,
    path: &str,
    name: &str,
) -> Result<Response, (StatusCode, String)> {
    let gateway = |e: &dyn std::fmt::Display| (StatusCode::BAD_GATEWAY, e.to_string());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|_| (StatusCode::GATEWAY_TIMEOUT, "connect timed out".to_string()))?
        .map_err(|e| gateway(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| gateway(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "proxied connection ended");
        }
    });
    let (parts, body) = req.into_parts();
    let mut headers = without_credentials(forwarded_headers(&parts.headers));
    let host = parts.headers.get(header::HOST).cloned();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&target.to_string()).map_err(|e| gateway(&e))?,
    );
    if let Some(h) = host {
        headers.insert("x-forwarded-host", h);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(prefix) = HeaderValue::from_str(&format!("/service/{name}")) {
        headers.insert("x-forwarded-prefix", prefix);
    }
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(path)
        .body(http_body_util::Limited::new(body, MAX_REQUEST_BODY))
        .map_err(|e| gateway(&e))?;
    *out.headers_mut() = headers;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(out))
        .await
        .map_err(|_| (StatusCode::GATEWAY_TIMEOUT, "no answer in time".to_string()))?
        .map_err(|e| gateway(&e))?;
    let (parts, body) = answer.into_parts();
    let mut response = Response::new(axum::body::Body::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = forwarded_headers(&parts.headers);
    Ok(response)
}

async fn agent(State(control): State<Arc<Control>>, req: Request) -> Response {
    let Some((id, path)) = split_target(req.uri(), "/agent/") else {
        return failure(StatusCode::NOT_FOUND, "expected /agent/<id>/…".into());
    };
    if req.method() != Method::GET {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("/agent/{id}/…: the agents' APIs are read-only through the control (GET)"),
        );
    }
    let Some((call, answer)) = control.ask_agent(&id, &path) else {
        return failure(
            StatusCode::BAD_GATEWAY,
            format!("agent {id:?} is not connected"),
        );
    };
    match tokio::time::timeout(AGENT_TIMEOUT, answer).await {
        Ok(Ok(reply)) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let ctype = reply
                .content_type
                .and_then(|c| HeaderValue::from_str(&c).ok())
                .unwrap_or(HeaderValue::from_static("application/json"));
            (status, [(header::CONTENT_TYPE, ctype)], reply.body).into_response()
        }
        Ok(Err(_)) => failure(
            StatusCode::BAD_GATEWAY,
            format!("agent {id:?}: its stream closed"),
        ),
        Err(_) => {
            control.forget_call(call);
            failure(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "agent {id:?}: no answer within {} s",
                    AGENT_TIMEOUT.as_secs()
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_the_name_and_the_rest_with_the_query() {
        let uri: Uri = "/service/web/a/b?x=1".parse().unwrap();
        assert_eq!(
            split_target(&uri, "/service/"),
            Some(("web".into(), "/a/b?x=1".into()))
        );
        let uri: Uri = "/service/web".parse().unwrap();
        assert_eq!(
            split_target(&uri, "/service/"),
            Some(("web".into(), "/".into()))
        );
        let uri: Uri = "/agent/a1/monitor/statistics".parse().unwrap();
        assert_eq!(
            split_target(&uri, "/agent/"),
            Some(("a1".into(), "/monitor/statistics".into()))
        );
        let uri: Uri = "/service/".parse().unwrap();
        assert_eq!(split_target(&uri, "/service/"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("authorization", "token=x".parse().unwrap());
        h.insert(
            "cookie",
            "a=1; dcos-acs-auth-cookie=secret; b=2".parse().unwrap(),
        );
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 2);
        let out = without_credentials(out);
        assert!(!out.contains_key("authorization"));
        assert_eq!(out["cookie"], "a=1; b=2");
    }
}
