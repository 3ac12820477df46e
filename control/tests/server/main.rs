//! The control server on real sockets (loopback), run as production runs it:
//! TLS with the data directory's own CA and accounts, every client logged in
//! with the bootstrap credentials.
//!
//! - this file: the store across a restart (apps, VIP addresses, accounts,
//!   tokens), 409/422 answers, the queue's reason, `/v2/events` over TLS,
//!   DNS refusal and forwarding;
//! - [`auth`]: the route table walked without and with every kind of bad
//!   token, users and service accounts logging in;
//! - [`agents`]: the agents' stream (join tokens, per-agent credentials, one
//!   live stream per agent, revocation);
//! - [`cli`]: the binary's safety refusal and its token, user and agent
//!   commands next to a running control.
mod agents;
mod auth;
mod cli;
mod harness;

use harness::{TempDir, start, start_dns};

const APP: &str = r#"{"id":"/web","cmd":"sleep 100","portDefinitions":[{"port":0,"labels":{"VIP_0":"/web:80"}}]}"#;

#[test]
fn apps_survive_a_restart_and_bad_json_changes_nothing() {
    let dir = TempDir::new("restart");
    let server = start(dir.path());
    let api = server.client();
    let (status, body) = api.request("POST", "/v2/apps", Some(APP)).unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.request("POST", "/v2/apps", Some(APP)).unwrap();
    assert_eq!(status, 409, "{body}");
    let (status, body) = api
        .request("PUT", "/v2/apps/web", Some(r#"{"cpus":"lots"}"#))
        .unwrap();
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["details"][0]["path"], "/cpus");
    let (_, before) = api.request("GET", "/v1/vips", None).unwrap();
    // No agent: the instance waits in the queue, with the reason.
    let (status, body) = api.request("GET", "/v2/queue", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let q: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(q["queue"][0]["app"]["id"], "/web", "{body}");
    assert_eq!(q["queue"][0]["count"], 1);
    assert_eq!(
        q["queue"][0]["reason"],
        "no connected agent offers resources"
    );
    let ca_before = server.ca.clone();
    drop(server);

    let server = start(dir.path());
    assert_eq!(server.ca, ca_before, "the CA is kept across a restart");
    // The signing key is kept too: a session from before the restart works.
    let api = server.anonymous().with_token(api.token.clone().unwrap());
    let (status, body) = api.request("GET", "/v2/apps/web", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["app"]["cpus"], 1.0, "the refused PUT changed nothing");
    assert_eq!(v["app"]["portDefinitions"][0]["port"], 10000);
    let (_, after) = api.request("GET", "/v1/vips", None).unwrap();
    let ip = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["vips"][0]["ip"].clone()
    };
    assert_eq!(ip(&before), ip(&after), "the named VIP kept its address");
    assert!(ip(&after).as_str().unwrap().starts_with("11."));
    // The bootstrap account is not made again: the same password logs in.
    server.client();
    drop(server);
}

#[test]
fn events_stream_api_posts_and_deployments() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new("events");
    let server = start(dir.path());
    let api = server.client();
    let mut sse = server.tls_stream();
    write!(
        sse,
        "GET /v2/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: token={}\r\n\r\n",
        server.addr,
        api.token.as_deref().unwrap()
    )
    .unwrap();
    sse.flush().unwrap();
    let mut reader = BufReader::new(sse);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // No instances can run (no agents), so only the POST's event comes.
    let app = r#"{"id":"/quiet","cmd":"sleep 1","instances":0}"#;
    let (status, _) = api.request("POST", "/v2/apps", Some(app)).unwrap();
    assert_eq!(status, 201);
    let mut events = Vec::new();
    while events.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(e) = line.trim().strip_prefix("event: ") {
            events.push(e.to_string());
        }
    }
    // An app of 0 instances is deployed at once.
    assert_eq!(events, vec!["api_post_event", "deployment_success"]);
    // Shutdown completes with the event stream still open.
    drop(server);
    drop(reader);
}

#[test]
fn foreign_names_are_refused_or_forwarded_when_asked() {
    use garrison_control::dns::client::query_a;
    use hickory_proto::op::ResponseCode;
    let (dir_up, dir, dir_plain) = (
        TempDir::new("upstream"),
        TempDir::new("forwarder"),
        TempDir::new("plain"),
    );
    // The "upstream" is another control, authoritative for `up.`.
    let up = start_dns(dir_up.path(), "up", None);
    let forwarder = start_dns(dir.path(), "mesos", Some(up.dns));
    let plain = start_dns(dir_plain.path(), "mesos", None);
    let forwarded = query_a(forwarder.dns, "leader.up").unwrap();
    assert_eq!(forwarded.rcode, ResponseCode::NoError);
    assert_eq!(forwarded.addresses, vec![std::net::Ipv4Addr::LOCALHOST]);
    assert_eq!(
        query_a(plain.dns, "leader.up").unwrap().rcode,
        ResponseCode::Refused
    );
    // Our own zone is still answered locally.
    assert_eq!(
        query_a(forwarder.dns, "leader.mesos").unwrap().addresses,
        vec![std::net::Ipv4Addr::LOCALHOST]
    );
}
