//! The agents' stream over wss:// as agents open it (tokio-tungstenite,
//! rustls, the data dir's CA): no credential, no upgrade; a join token buys
//! a credential bound to the registered id; one live stream per agent; a
//! credential registers only its own agent; revocation ends the stream and
//! the credential, and a new join works afterwards.
use futures_util::{SinkExt, StreamExt};
use garrison_control::client::ApiClient;
use garrison_control::tls;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::harness::{IO_TIMEOUT, Server, TempDir, start};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the agents' stream with `authorization` (if any), as an agent does.
pub async fn connect(server: &Server, authorization: Option<&str>) -> Result<Ws, WsError> {
    let mut request = format!("wss://{}/v1/agents/stream", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(a) = authorization {
        request
            .headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    let connector = Connector::Rustls(tls::client_config(&server.ca).unwrap());
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
    match tokio::time::timeout(IO_TIMEOUT, connecting).await {
        Ok(result) => result.map(|(ws, _)| ws),
        Err(_) => panic!("connecting to the agents' stream timed out"),
    }
}

/// The HTTP status of a refused upgrade.
pub fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => {
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("oauthjwt")
            );
            response.status().as_u16()
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the stream opened"),
    }
}

/// Sends agent `id`'s registration.
pub async fn register(ws: &mut Ws, id: &str) {
    let m = json!({"type": "register", "agent_id": id, "hostname": "h", "ip": "127.0.0.1",
        "resources": {"cpus": 1, "mem": 128, "disk": 0, "ports": "[31000-31010]"}});
    ws.send(Message::text(m.to_string())).await.unwrap();
}

/// How a stream went on.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Closed(Option<CloseFrame>),
    /// The connection ended without a close frame.
    Ended,
}

/// The next message, close frame or end of the stream (pings skipped).
pub async fn next(ws: &mut Ws) -> Next {
    loop {
        let item = tokio::time::timeout(IO_TIMEOUT, ws.next())
            .await
            .expect("the stream said nothing in time");
        match item {
            Some(Ok(Message::Text(t))) => return Next::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Next::Closed(frame),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Next::Ended,
        }
    }
}

/// The next message of `type`, skipping others (VIP tables and the like).
pub async fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..100 {
        match next(ws).await {
            Next::Json(v) if v["type"] == kind => return v,
            Next::Json(_) => continue,
            other => panic!("waiting for {kind:?}: {other:?}"),
        }
    }
    panic!("no {kind:?} message in 100");
}

/// Reads until the stream closes or ends: whether it did with a close frame.
pub async fn until_end(ws: &mut Ws) -> Option<CloseFrame> {
    for _ in 0..100 {
        match next(ws).await {
            Next::Json(_) => continue,
            Next::Closed(frame) => return frame,
            Next::Ended => return None,
        }
    }
    panic!("the stream kept talking");
}

/// Joins as `id` with `authorization`: the secret the control issued, once
/// the control has registered the agent.
pub async fn join(server: &Server, authorization: &str, id: &str) -> (Ws, String) {
    let mut ws = connect(server, Some(authorization)).await.unwrap();
    register(&mut ws, id).await;
    let credential = match next(&mut ws).await {
        Next::Json(v) if v["type"] == "credential" => v,
        other => panic!("expected the credential first, got {other:?}"),
    };
    assert_eq!(credential["agent_id"], id);
    let secret = credential["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "{credential}");
    next_of_type(&mut ws, "registered").await;
    (ws, secret)
}

/// Asserts the stream is refused with a policy close whose reason has `why`.
pub async fn assert_policy_close(ws: &mut Ws, why: &str) {
    match next(ws).await {
        Next::Closed(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
            assert!(
                frame.reason.contains(why),
                "{:?} lacks {why:?}",
                frame.reason
            );
        }
        other => panic!("expected a 1008 close saying {why:?}, got {other:?}"),
    }
}

/// A blocking API call off the async runtime.
pub async fn call(api: &ApiClient, method: &'static str, path: String) -> (u16, String) {
    let api = api.clone();
    tokio::task::spawn_blocking(move || api.request(method, &path, None).unwrap())
        .await
        .unwrap()
}

/// Closes our side and waits for the control to end the stream (it forgets
/// the stream before the connection closes).
pub async fn close(mut ws: Ws) {
    ws.send(Message::Close(None)).await.unwrap();
    let _ = until_end(&mut ws).await;
}

#[tokio::test]
async fn agents_join_once_then_use_their_own_credential_until_revoked() {
    let dir = TempDir::new("agents");
    let server = start(dir.path());
    let admin = server.client();

    assert_eq!(refused_status(connect(&server, None).await), 401);
    assert_eq!(
        refused_status(connect(&server, Some("token=garbage")).await),
        401
    );
    assert_eq!(
        refused_status(connect(&server, Some("agent a1:00112233")).await),
        401,
        "an agent without a credential"
    );

    let (status, body) = call(&admin, "POST", "/v1/agents/join-tokens".into()).await;
    assert_eq!(status, 200, "{body}");
    let join_token: Value = serde_json::from_str(&body).unwrap();
    let join_auth = format!("token={}", join_token["token"].as_str().unwrap());
    let (mut first, secret) = join(&server, &join_auth, "a1").await;
    let own = format!("agent a1:{secret}");

    // A second live stream of a1, even with its own credential: refused.
    let mut second = connect(&server, Some(&own)).await.unwrap();
    register(&mut second, "a1").await;
    assert_policy_close(&mut second, "already has a live stream").await;
    // A join token cannot take a1 over either.
    let mut again = connect(&server, Some(&join_auth)).await.unwrap();
    register(&mut again, "a1").await;
    assert_policy_close(&mut again, "already has a live stream").await;
    // a1's credential registers a1 only.
    let mut other = connect(&server, Some(&own)).await.unwrap();
    register(&mut other, "a2").await;
    assert_policy_close(&mut other, "cannot register agent \"a2\"").await;
    // A wrong secret for a1.
    let wrong = format!("agent a1:{}", "0".repeat(secret.len()));
    assert_eq!(refused_status(connect(&server, Some(&wrong)).await), 401);

    let (status, body) = call(&admin, "GET", "/v1/agents".into()).await;
    assert_eq!(status, 200, "{body}");
    let agents: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a1"], "the refused streams registered nothing");
    assert_eq!(agents["agents"][0]["connected"], true);

    // Revocation: the stream ends, the credential is refused.
    let (status, body) = call(&admin, "DELETE", "/v1/agents/a1".into()).await;
    assert_eq!(status, 200, "{body}");
    let revoked: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(revoked["credential_revoked"], true, "{body}");
    assert_eq!(revoked["stream_closed"], true, "{body}");
    until_end(&mut first).await;
    assert_eq!(refused_status(connect(&server, Some(&own)).await), 401);

    // A join token for a1 again: a new credential, which then works alone.
    let (rejoined, new_secret) = join(&server, &join_auth, "a1").await;
    assert_ne!(new_secret, secret);
    close(rejoined).await;
    let mut back = connect(&server, Some(&format!("agent a1:{new_secret}")))
        .await
        .unwrap();
    register(&mut back, "a1").await;
    loop {
        match next(&mut back).await {
            Next::Json(v) if v["type"] == "registered" => break,
            Next::Json(v) => assert_ne!(v["type"], "credential", "a known agent gets no new one"),
            other => panic!("a1 with its new credential: {other:?}"),
        }
    }
    close(back).await;
}

#[tokio::test]
async fn two_agents_joining_with_one_id_at_once_get_one_stream() {
    let dir = TempDir::new("agents-race");
    let server = start(dir.path());
    let join_auth = format!("token={}", server.auth.join_token(60));
    for round in 0..5 {
        let id = format!("twin{round}");
        let (mut a, mut b) = (
            connect(&server, Some(&join_auth)).await.unwrap(),
            connect(&server, Some(&join_auth)).await.unwrap(),
        );
        tokio::join!(register(&mut a, &id), register(&mut b, &id));
        let (first_a, first_b) = tokio::join!(next(&mut a), next(&mut b));
        let (mut winner, refusal) = match (first_a, first_b) {
            (Next::Json(v), refusal) if v["type"] == "credential" => (a, refusal),
            (refusal, Next::Json(v)) if v["type"] == "credential" => (b, refusal),
            other => panic!("round {round}: no stream got the credential: {other:?}"),
        };
        match refusal {
            Next::Closed(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Policy, "round {round}: {frame:?}");
                assert!(
                    frame.reason.contains("already has a live stream"),
                    "round {round}: {:?}",
                    frame.reason
                );
            }
            other => panic!("round {round}: the other stream: {other:?}"),
        }
        // The winner's stream is the agent's: it is registered and stays.
        next_of_type(&mut winner, "registered").await;
        let (status, body) = call(&server.client(), "GET", "/v1/agents".into()).await;
        assert_eq!(status, 200, "{body}");
        let agents: Value = serde_json::from_str(&body).unwrap();
        let me = agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {body}"));
        assert_eq!(me["connected"], true, "{body}");
        close(winner).await;
    }
}

/// A frame whose task state is not a Mesos state is skipped (logged) and
/// the stream lives on; a registration carrying one is refused whole.
#[tokio::test]
async fn a_frame_with_an_unknown_task_state_is_skipped_and_the_stream_lives_on() {
    let dir = TempDir::new("unknown-state");
    let server = start(dir.path());
    let admin = server.client();
    let (status, body) = call(&admin, "POST", "/v1/agents/join-tokens".into()).await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let join_auth = format!("token={}", token["token"].as_str().unwrap());
    let (mut ws, _) = join(&server, &join_auth, "a1").await;
    let send = |text: &'static str| Message::text(text);
    ws.send(send(
        r#"{"type":"task_status","task_id":"web.1","state":"TASK_PAUSED","reason":null,"healthy":null}"#,
    ))
    .await
    .unwrap();
    // The next frames are read: the ack lands, and a status of a task the
    // control does not know (a known state) is answered with a kill.
    ws.send(send(r#"{"type":"vip_ack","revision":7}"#))
        .await
        .unwrap();
    ws.send(send(
        r#"{"type":"task_status","task_id":"web.2","state":"TASK_RUNNING","reason":null,"healthy":null}"#,
    ))
    .await
    .unwrap();
    let kill = next_of_type(&mut ws, "kill").await;
    assert_eq!(kill["task_id"], "web.2", "{kill}");
    let mut acked = Value::Null;
    for _ in 0..100 {
        let (_, body) = call(&admin, "GET", "/v1/agents".into()).await;
        acked = serde_json::from_str(&body).unwrap();
        if acked["agents"][0]["acked_revision"] == 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(acked["agents"][0]["acked_revision"], 7, "{acked}");
    assert_eq!(acked["agents"][0]["connected"], true, "{acked}");
    // A registration with an unknown state: that stream ends, a2 is not listed.
    let mut refused = connect(&server, Some(&join_auth)).await.unwrap();
    let m = json!({"type": "register", "agent_id": "a2", "hostname": "h", "ip": "127.0.0.1",
        "resources": {"cpus": 1, "mem": 128, "disk": 0, "ports": "[31000-31010]"},
        "tasks": [{"task_id": "t", "state": "TASK_PAUSED"}]});
    refused.send(Message::text(m.to_string())).await.unwrap();
    let _ = until_end(&mut refused).await;
    let (_, body) = call(&admin, "GET", "/v1/agents".into()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["agents"].as_array().map(Vec::len), Some(1), "{v}");
    close(ws).await;
}
