//! The control server on real sockets (loopback): token checks on the API and
//! the agents' stream, 422 details, the store across a restart, `/v2/events`,
//! DNS refusal and forwarding.
use std::net::SocketAddr;
use std::sync::Arc;

use garrison_control::client::http_request;
use garrison_control::cluster::ClusterConfig;
use garrison_control::server::{Control, ServerConfig, run};
use garrison_control::store::Store;

type Stop = tokio::sync::oneshot::Sender<()>;
type Handle = std::thread::JoinHandle<()>;

/// Runs a control on ephemeral loopback ports until the returned sender is dropped.
fn start(dir: &std::path::Path, token: Option<&str>) -> (SocketAddr, Handle, Stop) {
    let (addr, _, handle, stop) = start_dns(dir, token, "mesos", None);
    (addr, handle, stop)
}

/// Like [`start`], with the DNS zone and forwarder; also returns the DNS address.
fn start_dns(
    dir: &std::path::Path,
    token: Option<&str>,
    domain: &str,
    dns_forward: Option<SocketAddr>,
) -> (SocketAddr, SocketAddr, Handle, Stop) {
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = udp.local_addr().unwrap();
    let dns_tcp = std::net::TcpListener::bind(dns).unwrap();
    for s in [&http, &dns_tcp] {
        s.set_nonblocking(true).unwrap();
    }
    udp.set_nonblocking(true).unwrap();
    let store = Store::open(dir).unwrap();
    let config = ServerConfig {
        advertise: addr,
        token: token.map(str::to_string),
        domain: domain.into(),
        tick: std::time::Duration::from_millis(50),
        dns_forward,
    };
    let control: Arc<Control> = Control::new(store, ClusterConfig::default(), config).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = tokio::net::TcpListener::from_std(http).unwrap();
            let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
            let dns_tcp = tokio::net::TcpListener::from_std(dns_tcp).unwrap();
            run(control, http, udp, dns_tcp, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    (addr, dns, handle, stop_tx)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("garrison-control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const APP: &str = r#"{"id":"/web","cmd":"sleep 100","portDefinitions":[{"port":0,"labels":{"VIP_0":"/web:80"}}]}"#;

#[test]
fn the_token_guards_mutations_and_the_agents_stream() {
    let dir = temp_dir("token");
    let (addr, handle, stop) = start(&dir, Some("s3cret"));
    let (status, body) = http_request(addr, "POST", "/v2/apps", Some(APP)).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = http_request(addr, "GET", "/v1/agents/stream", None).unwrap();
    assert_eq!(
        status, 401,
        "an agent without the token is refused before the upgrade"
    );
    let (status, body) = http_request(addr, "GET", "/v2/apps", None).unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"apps":[]}"#),
        "reads need no token; nothing was created"
    );
    drop(stop);
    handle.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apps_survive_a_restart_and_bad_json_changes_nothing() {
    let dir = temp_dir("restart");
    let (addr, handle, stop) = start(&dir, None);
    let (status, body) = http_request(addr, "POST", "/v2/apps", Some(APP)).unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = http_request(addr, "POST", "/v2/apps", Some(APP)).unwrap();
    assert_eq!(status, 409, "{body}");
    let (status, body) =
        http_request(addr, "PUT", "/v2/apps/web", Some(r#"{"cpus":"lots"}"#)).unwrap();
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["details"][0]["path"], "/cpus");
    let (_, before) = http_request(addr, "GET", "/v1/vips", None).unwrap();
    // No agent: the instance waits in the queue, with the reason.
    let (status, body) = http_request(addr, "GET", "/v2/queue", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let q: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(q["queue"][0]["app"]["id"], "/web", "{body}");
    assert_eq!(q["queue"][0]["count"], 1);
    assert_eq!(
        q["queue"][0]["reason"],
        "no connected agent offers resources"
    );
    drop(stop);
    handle.join().unwrap();

    let (addr, handle, stop) = start(&dir, None);
    let (status, body) = http_request(addr, "GET", "/v2/apps/web", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["app"]["cpus"], 1.0, "the refused PUT changed nothing");
    assert_eq!(v["app"]["portDefinitions"][0]["port"], 10000);
    let (_, after) = http_request(addr, "GET", "/v1/vips", None).unwrap();
    let ip = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["vips"][0]["ip"].clone()
    };
    assert_eq!(ip(&before), ip(&after), "the named VIP kept its address");
    assert!(ip(&after).as_str().unwrap().starts_with("11."));
    drop(stop);
    handle.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn events_stream_api_posts_and_deployments() {
    use std::io::{BufRead, BufReader, Write};
    let dir = temp_dir("events");
    let (addr, handle, stop) = start(&dir, None);
    let mut sse = std::net::TcpStream::connect(addr).unwrap();
    sse.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        sse,
        "GET /v2/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(sse);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // No instances can run (no agents), so only the POST's event comes.
    let app = r#"{"id":"/quiet","cmd":"sleep 1","instances":0}"#;
    let (status, _) = http_request(addr, "POST", "/v2/apps", Some(app)).unwrap();
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
    drop(stop);
    handle.join().unwrap();
    drop(reader);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_names_are_refused_or_forwarded_when_asked() {
    use garrison_control::dns::client::query_a;
    use hickory_proto::op::ResponseCode;
    let (dir_up, dir, dir_plain) = (
        temp_dir("upstream"),
        temp_dir("forwarder"),
        temp_dir("plain"),
    );
    // The "upstream" is another control, authoritative for `up.`.
    let (_, up_dns, up_handle, up_stop) = start_dns(&dir_up, None, "up", None);
    let (_, dns, handle, stop) = start_dns(&dir, None, "mesos", Some(up_dns));
    let (_, plain_dns, plain_handle, plain_stop) = start_dns(&dir_plain, None, "mesos", None);
    let forwarded = query_a(dns, "leader.up").unwrap();
    assert_eq!(forwarded.rcode, ResponseCode::NoError);
    assert_eq!(forwarded.addresses, vec![std::net::Ipv4Addr::LOCALHOST]);
    assert_eq!(
        query_a(plain_dns, "leader.up").unwrap().rcode,
        ResponseCode::Refused
    );
    // Our own zone is still answered locally.
    assert_eq!(
        query_a(dns, "leader.mesos").unwrap().addresses,
        vec![std::net::Ipv4Addr::LOCALHOST]
    );
    for (s, h) in [
        (stop, handle),
        (up_stop, up_handle),
        (plain_stop, plain_handle),
    ] {
        drop(s);
        h.join().unwrap();
    }
    for d in [dir, dir_up, dir_plain] {
        let _ = std::fs::remove_dir_all(&d);
    }
}
