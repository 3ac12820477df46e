//! Reads of this agent's own API asked by the control over the stream
//! (Admin Router's `/agent/<id>/…`): the request goes through the same
//! router and guard as a local client's (as `Host: localhost`, GET only), in
//! process; the answer's body is capped at [`MAX_BODY`].
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use garrison_proto::AgentMessage;
use tower::ServiceExt;

/// The largest answer sent back over the stream.
pub const MAX_BODY: usize = 8 << 20;

/// `GET path` on `router`, as the stream's answer to `request_id`.
pub async fn answer(router: Router, request_id: u64, path: String) -> AgentMessage {
    let reply = |status: StatusCode, content_type: Option<String>, body: String| {
        AgentMessage::ApiResponse {
            request_id,
            status: status.as_u16(),
            content_type,
            body,
        }
    };
    let request = match Request::get(path.as_str())
        .header(header::HOST, "localhost")
        .body(Body::empty())
    {
        Ok(r) if path.starts_with('/') => r,
        _ => {
            return reply(
                StatusCode::BAD_REQUEST,
                None,
                format!("{{\"error\":\"invalid path {path:?}\"}}"),
            );
        }
    };
    let response = match router.oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match axum::body::to_bytes(response.into_body(), MAX_BODY).await {
        Ok(bytes) => reply(
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        ),
        Err(_) => reply(
            StatusCode::BAD_GATEWAY,
            None,
            format!("{{\"error\":\"the answer exceeds {MAX_BODY} bytes\"}}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_go_through_the_router_and_bad_paths_are_refused() {
        let router = Router::new().route("/state", axum::routing::get(|| async { "{\"ok\":1}" }));
        match answer(router.clone(), 7, "/state".into()).await {
            AgentMessage::ApiResponse {
                request_id,
                status,
                body,
                ..
            } => {
                assert_eq!((request_id, status, body.as_str()), (7, 200, "{\"ok\":1}"));
            }
            other => panic!("{other:?}"),
        }
        match answer(router, 8, "state".into()).await {
            AgentMessage::ApiResponse { status, .. } => assert_eq!(status, 400),
            other => panic!("{other:?}"),
        }
    }
}
