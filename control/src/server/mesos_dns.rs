//! Mesos-DNS's faces of the control: the DNS server (UDP and TCP, answering
//! through [`crate::dns::answer`]; names outside its zones are refused, or
//! forwarded to `--dns-forward` when set) and its HTTP API: `/v1/version`,
//! `/v1/config`, `/v1/hosts/{host}` → `[{"host","ip"}]`,
//! `/v1/services/{service}` → `[{"service","host","ip","port"}]`. Unknown
//! names give Mesos-DNS's single empty entry.
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::IntoResponse;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::Control;
use super::routes::{Access, Routes};
use crate::dns::answer::{answer, is_foreign};

pub fn routes(control: &Arc<Control>) -> Routes {
    let s = Access::Session;
    Routes::new(control)
        .route(Method::GET, "/v1/version", s, version)
        .route(Method::GET, "/v1/config", s, config)
        .route(Method::GET, "/v1/hosts/{host}", s, hosts)
        .route(Method::GET, "/v1/services/{service}", s, services)
}

fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

async fn version() -> impl IntoResponse {
    Json(json!({
        "Service": "Mesos-DNS",
        "Version": format!("garrison-control {}", env!("CARGO_PKG_VERSION")),
        "URL": "https://example.invalid/garrison",
    }))
}

async fn config(State(control): State<Arc<Control>>) -> impl IntoResponse {
    let c = control.config();
    Json(json!({
        "Domain": c.domain, "IPSources": ["host"], "EnforceRFC952": false,
        "RecurseOn": false, "Masters": [c.advertise.to_string()],
    }))
}

async fn hosts(State(control): State<Arc<Control>>, Path(host): Path<String>) -> impl IntoResponse {
    let name = fqdn(&host);
    let auth = control.authority();
    let ips = auth.records.addresses(&name);
    if ips.is_empty() {
        return Json(json!([{ "host": "", "ip": "" }]));
    }
    Json(
        ips.iter()
            .map(|ip| json!({ "host": name, "ip": ip.to_string() }))
            .collect(),
    )
}

async fn services(
    State(control): State<Arc<Control>>,
    Path(service): Path<String>,
) -> impl IntoResponse {
    let name = fqdn(&service);
    let auth = control.authority();
    let mut out = Vec::new();
    for value in auth.records.srv.get(&name).into_iter().flatten() {
        let Some((target, port)) = value.rsplit_once(':') else {
            continue;
        };
        for ip in auth.records.addresses(target) {
            out.push(
                json!({ "service": name, "host": target, "ip": ip.to_string(), "port": port }),
            );
        }
    }
    if out.is_empty() {
        out.push(json!({ "service": "", "host": "", "ip": "", "port": "" }));
    }
    Json(out)
}

/// The reply for one query: ours, or the upstream's for a foreign name when
/// forwarding is on (2 s timeout; SERVFAIL-free: no answer on timeout).
async fn reply(control: &Control, query: &[u8]) -> Option<Vec<u8>> {
    let auth = control.authority();
    match control.config().dns_forward {
        Some(upstream) if is_foreign(query, &auth) => forward(upstream, query).await,
        _ => answer(query, &auth),
    }
}

async fn forward(upstream: std::net::SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let bind = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.send_to(query, upstream).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let fut = sock.recv_from(&mut buf);
    let (n, from) = tokio::time::timeout(std::time::Duration::from_secs(2), fut)
        .await
        .ok()?
        .ok()?;
    (from == upstream).then(|| buf[..n].to_vec())
}

/// Answers DNS over UDP until `stop`.
pub async fn serve_udp(
    control: Arc<Control>,
    socket: tokio::net::UdpSocket,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            got = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = got else { continue };
                if let Some(mut reply) = reply(&control, &buf[..n]).await {
                    if reply.len() > 512 {
                        // Too big for plain UDP: header with TC set, no records.
                        reply.truncate(12);
                        reply[2] |= 0x02;
                        reply[4..12].fill(0);
                    }
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        }
    }
}

/// Answers DNS over TCP (two-byte length prefix) until `stop`.
pub async fn serve_tcp(
    control: Arc<Control>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            accepted = listener.accept() => {
                let Ok((mut conn, _)) = accepted else { continue };
                let control = control.clone();
                tokio::spawn(async move {
                    let serve = async {
                        loop {
                            let len = conn.read_u16().await? as usize;
                            let mut msg = vec![0u8; len];
                            conn.read_exact(&mut msg).await?;
                            let Some(reply) = reply(&control, &msg).await else {
                                return Ok::<(), std::io::Error>(());
                            };
                            conn.write_u16(reply.len() as u16).await?;
                            conn.write_all(&reply).await?;
                        }
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), serve).await;
                });
            }
        }
    }
}
