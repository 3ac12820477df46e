//! The agent API's access rules and VIP sanity, on a running agent:
//!
//! - [`agent_api_needs_its_token_and_refuses_foreign_hosts`]: a mutation
//!   without the token gets 401, a foreign `Host` is refused on every route,
//!   the token (either header form) is accepted, and root over the Unix socket
//!   needs no token; the token file is 0600 and survives a restart.
//! - [`mesos_vip_on_loopback_is_refused_and_good_vips_serve`]: a Mesos state
//!   declaring `VIP_0=127.0.0.1:5051` (and a VIP on the agent's own state
//!   source, and one on a host address) has those refused with the task and
//!   label named, while the good VIP serves real connections.
//!
//! [`agent_request`] and [`api_token`] are for every test that mutates the
//! agent API.
use std::{
    io::{self, ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::{
    StubHttp, ask_name, http_get, mesos_agent_state, run_cmd,
    scenarios::{AgentProcess, AgentRig},
    tally,
};

/// The agent's API token, from its state directory.
pub fn api_token(state_dir: &Path) -> String {
    let path = state_dir.join("api-token");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the agent's API token {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// One HTTP/1.1 exchange on `stream`: `host` (`None`: no Host header),
/// extra `headers`, an optional JSON body; returns (status, body).
fn exchange<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(h) = host {
        head.push_str(&format!("Host: {h}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if json.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    let body = json.unwrap_or("");
    let request = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// A request to the agent API at `api` with `Host` set to that address and
/// the API token (`Authorization: Bearer`) when given: what a caller that
/// mutates the agent API sends.
pub fn agent_request(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> io::Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    exchange(
        tcp(api)?,
        method,
        path,
        Some(&api.to_string()),
        &headers,
        json,
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Waits (at most 10 s) for task `id` to reach `state`.
fn wait_task_state(api: SocketAddr, id: &str, state: &str) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        let (_, body) = http_get(api, &format!("/v1/tasks/{id}")).unwrap();
        last = json(&body)["state"].as_str().unwrap_or("").to_string();
        if last == state {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("task {id} is {last:?}, not {state}");
}

const TASK: &str = r#"{"id":"ID","cmd":"sleep 30","resources":{"cpus":0.1,"mem":32,"disk":8}}"#;

/// Mutations need the agent's token (or root over its Unix socket); a
/// foreign `Host` is refused on every route; reads stay open.
pub fn agent_api_needs_its_token_and_refuses_foreign_hosts() {
    let rig = AgentRig::new("agent-api", &["--poll-ms", "100"]);
    let mut agent = rig.start();
    let state = rig.state_dir();
    let token_file = state.join("api-token");
    let token = api_token(&state);
    assert_eq!(token.len(), 64, "32 random bytes in hex: {token:?}");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    assert!(
        agent.log().contains(token_file.to_str().unwrap()),
        "the log says where the token is:\n{}",
        agent.log()
    );
    let api = rig.api;
    let host = api.to_string();
    let task = |id: &str| TASK.replace("ID", id);
    let send = |method: &str,
                path: &str,
                host: Option<&str>,
                headers: &[(&str, &str)],
                body: Option<&str>| {
        exchange(tcp(api).unwrap(), method, path, host, headers, body).unwrap()
    };

    // No token: 401, naming what is missing; nothing launched.
    let (status, body) = send("POST", "/v1/tasks", Some(&host), &[], Some(&task("t0")));
    assert_eq!(status, 401, "{body}");
    let err = json(&body);
    assert_eq!(err["error"], "unauthorized", "{body}");
    assert!(
        err["message"].as_str().unwrap().contains("api-token"),
        "the error names the token file: {body}"
    );
    let (status, body) = send("DELETE", "/v1/tasks/t0", Some(&host), &[], None);
    assert_eq!(status, 401, "{body}");
    let wrong = format!("Bearer {}", "0".repeat(64));
    let (status, body) = send(
        "POST",
        "/v1/tasks",
        Some(&host),
        &[("Authorization", &wrong)],
        Some(&task("t0")),
    );
    assert_eq!(status, 401, "a wrong token: {body}");
    let (status, body) = http_get(api, "/v1/tasks").unwrap();
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!([])),
        "reads are open; nothing launched"
    );

    // A foreign Host: refused on every route, token or not.
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    for h in [
        "rebind.evil.example:61421",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
    ] {
        let (status, body) = send("POST", "/v1/tasks", Some(h), &auth, Some(&task("t0")));
        assert_eq!(status, 403, "{h}: {body}");
        assert_eq!(json(&body)["error"], "forbidden_host", "{body}");
        for path in ["/v1/vips", "/vips", "/metrics", "/state", "/no-such-route"] {
            let (status, body) = send("GET", path, Some(h), &[], None);
            assert_eq!(status, 403, "GET {path} with Host {h}: {body}");
        }
    }
    let (status, body) = send("GET", "/v1/vips", None, &[], None);
    assert_eq!(status, 400, "HTTP/1.1 without Host: {body}");
    assert_eq!(json(&body)["error"], "missing_host", "{body}");
    let (status, _) = send("GET", "/v1/vips", Some("localhost"), &[], None);
    assert_eq!(status, 200, "Host: localhost is served");

    // The token: accepted in both forms.
    let (status, body) = send("POST", "/v1/tasks", Some(&host), &auth, Some(&task("t1")));
    assert_eq!(status, 201, "{body}\n{}", agent.log());
    let dcos = format!("token={token}");
    let (status, body) = send(
        "DELETE",
        "/v1/tasks/t1",
        Some(&host),
        &[("Authorization", &dcos)],
        None,
    );
    assert_eq!(status, 202, "{body}");
    wait_task_state(api, "t1", "TASK_KILLED");

    // Root over the Unix socket: no token needed; Host must still be literal.
    let socket = state.join("agent.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let unix = |method: &str, path: &str, host: &str, body: Option<&str>| {
        let s = UnixStream::connect(&socket).expect("connect to the agent's socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        exchange(s, method, path, Some(host), &[], body).unwrap()
    };
    let (status, body) = unix("POST", "/v1/tasks", "localhost", Some(&task("t2")));
    assert_eq!(status, 201, "root over the socket: {body}");
    let (status, body) = unix("POST", "/v1/tasks", "evil.example", Some(&task("t3")));
    assert_eq!(status, 403, "{body}");
    let (status, body) = unix("DELETE", "/v1/tasks/t2", "localhost", None);
    assert_eq!(status, 202, "{body}");
    wait_task_state(api, "t2", "TASK_KILLED");
    let (_, body) = http_get(api, "/v1/tasks").unwrap();
    let ids: Vec<String> = json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["t1", "t2"],
        "only the authorised launches happened: {body}"
    );

    // A restart keeps the token; the old socket file is replaced.
    agent.signal(libc::SIGTERM);
    drop(agent);
    let mut agent = rig.start();
    assert_eq!(api_token(&state), token, "the token survives a restart");
    let (status, body) =
        agent_request(api, "POST", "/v1/tasks", Some(&token), Some(&task("t4"))).unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = unix("DELETE", "/v1/tasks/t4", "localhost", None);
    assert_eq!(status, 202, "{body}");
    wait_task_state(api, "t4", "TASK_KILLED");
    agent.signal(libc::SIGTERM);
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// Polls `/v1/vips/refused` until it lists `n` entries, at most 20 s.
fn wait_refused(api: SocketAddr, n: usize) -> serde_json::Value {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok((200, body)) = http_get(api, "/v1/vips/refused") {
            if json(&body).as_array().is_some_and(|a| a.len() == n) {
                return json(&body);
            }
            last = body;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{n} refused VIPs expected; /v1/vips/refused: {last}");
}

/// `VIP_0=127.0.0.1:5051` in a Mesos label is refused with the task and
/// label named; so are a VIP on the agent's own state source and one on an
/// address of the host; the good VIP serves.
pub fn mesos_vip_on_loopback_is_refused_and_good_vips_serve() {
    let rig = AgentRig::new("vip-sanity", &["--no-vips-file", "--mesos-poll-ms", "100"]);
    // An address of this host (in the test's namespace only).
    run_cmd("ip", &["addr", "add", "10.99.0.1/32", "dev", "lo"]).expect("add a host address");
    let b = &rig.backends;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let source = listener.local_addr().unwrap();
    let good = "11.2.3.4:80";
    let state = mesos_agent_state(
        "127.0.0.1",
        &[
            ("bad.1", "TASK_RUNNING", b[0].port(), "127.0.0.1:5051"),
            ("bad.2", "TASK_RUNNING", b[1].port(), &source.to_string()),
            ("host.1", "TASK_RUNNING", b[1].port(), "10.99.0.1:80"),
            ("web.1", "TASK_RUNNING", b[2].port(), good),
        ],
    );
    let stub = StubHttp::serve(listener, 200, state);
    let mut args = rig.args.clone();
    args.extend([
        "--mesos-state".to_string(),
        format!("http://{}/state", stub.addr),
    ]);
    let mut agent = AgentProcess::start(&args, rig.api, rig.dir.join("agent.log"), good);

    // The good VIP serves real connections.
    let vip: SocketAddr = good.parse().unwrap();
    let counts = tally(vip, 20);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["backend-3"],
        "{counts:?}"
    );

    // The bad ones are refused, each named with its task and label.
    let refused = wait_refused(rig.api, 3);
    let by_vip = |v: &str| {
        refused
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["vip"] == v)
            .unwrap_or_else(|| panic!("{v} not listed as refused: {refused}"))
            .clone()
    };
    let r = by_vip("127.0.0.1:5051");
    assert_eq!(r["reason"], "loopback", "{r}");
    assert!(
        r["source"]
            .as_str()
            .unwrap()
            .contains(&stub.addr.to_string()),
        "{r}"
    );
    assert!(
        r["origin"][0]
            .as_str()
            .unwrap()
            .contains("task bad.1 (marathon)"),
        "{r}"
    );
    assert_eq!(by_vip(&source.to_string())["reason"], "loopback");
    assert_eq!(by_vip("10.99.0.1:80")["reason"], "host_address");
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("VIP 127.0.0.1:5051/tcp refused"))
        .unwrap_or_else(|| panic!("no refusal logged for 127.0.0.1:5051:\n{log}"));
    for needle in [
        "task bad.1 (marathon)",
        "VIP_0",
        "loopback",
        &stub.addr.to_string(),
    ] {
        assert!(
            line.contains(needle),
            "the log line names {needle:?}: {line}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("VIP 10.99.0.1:80/tcp refused")
                && l.contains("task host.1")
                && l.contains("address of this host")),
        "{log}"
    );
    let (_, table) = http_get(rig.api, "/v1/vips").unwrap();
    let programmed: Vec<String> = json(&table)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["vip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        programmed,
        [good],
        "refused VIPs are not programmed: {table}"
    );
    let (_, metrics) = http_get(rig.api, "/metrics").unwrap();
    assert!(
        metrics.contains("garrison_vips_refused{reason=\"loopback\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("garrison_vips_refused{reason=\"host_address\"} 1"),
        "{metrics}"
    );

    // Not hijacked: the agent's own fetch of its state source keeps working,
    // and the refused addresses reach what is really there (nothing on
    // 127.0.0.1:5051 and on the host address, the stub at the source).
    let (_, health) = http_get(rig.api, "/healthz").unwrap();
    let health = json(&health);
    let src = format!("mesos http://{}/state", stub.addr);
    assert_eq!(health["sources"][&src]["up"], true, "{health}");
    for addr in ["127.0.0.1:5051", "10.99.0.1:80"] {
        let err = ask_name(addr.parse().unwrap()).expect_err("not a VIP: nothing listens there");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
    let (status, body) = http_get(stub.addr, "/state").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("frameworks"),
        "the stub answers, not a backend: {body}"
    );
    agent.signal(libc::SIGTERM);
}
