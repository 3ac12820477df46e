//! Health checks of tasks launched for the control (Marathon's semantics).
//!
//! One tokio task per check. The first probe runs after `min(interval, 1 s)`,
//! then every `interval`; a probe that does not succeed within `timeout`
//! fails. Failures before the first success and within the grace period are
//! ignored. The first counted failure makes the task unhealthy (the control
//! drains it at once); `max_consecutive_failures` in a row kill it. HTTP (and
//! MESOS_HTTP): a `GET path` answered 200–399; TCP (and MESOS_TCP): a
//! connection; COMMAND: `sh -c` exits 0. HTTPS and MESOS_HTTPS are not
//! supported (the control refuses them in app definitions): such a probe
//! fails, with a warning.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use garrison_proto::{HealthCheck, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckEvent {
    pub task_id: String,
    pub healthy: bool,
    /// Too many consecutive failures: kill the task.
    pub kill: bool,
}

/// What to probe.
#[derive(Debug, Clone)]
pub struct Target {
    pub task_id: String,
    pub ip: IpAddr,
    pub ports: Vec<u16>,
    /// Runs COMMAND checks as the task runs (its user, sandbox, environment
    /// and cgroups, no privilege); `None` only in unit tests (a plain shell).
    pub launcher: Option<crate::isolation::launcher::Launcher>,
}

async fn probe(check: &HealthCheck, target: &Target) -> bool {
    match check.protocol.probe() {
        Probe::Command => {
            let Some(cmd) = check.command.clone() else {
                return false;
            };
            let (launcher, task_id) = (target.launcher.clone(), target.task_id.clone());
            tokio::task::spawn_blocking(move || {
                let command = match &launcher {
                    Some(l) => l.task_command(&task_id, &cmd),
                    None => {
                        let mut c = std::process::Command::new("/bin/sh");
                        c.arg("-c")
                            .arg(cmd)
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null());
                        Ok(c)
                    }
                };
                command.is_ok_and(|mut c| c.status().is_ok_and(|s| s.success()))
            })
            .await
            .unwrap_or(false)
        }
        Probe::Http { tls: true } => {
            tracing::warn!(task = %target.task_id, protocol = %check.protocol, "HTTPS health checks are not supported: the probe fails");
            false
        }
        probe @ (Probe::Tcp | Probe::Http { tls: false }) => {
            let Some(port) = target.ports.get(check.port_index) else {
                return false;
            };
            let addr = SocketAddr::new(target.ip, *port);
            let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            if probe == Probe::Tcp {
                return true;
            }
            let path = check.path.as_deref().unwrap_or("/");
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: garrison-health\r\nConnection: close\r\n\r\n"
            );
            if conn.write_all(request.as_bytes()).await.is_err() {
                return false;
            }
            let mut head = [0u8; 12];
            if conn.read_exact(&mut head).await.is_err() {
                return false;
            }
            // "HTTP/1.1 200"
            std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|code| (200..400).contains(&code))
        }
    }
}

/// Runs one check until the task is killed for it or `events` closes.
pub async fn run_check(check: HealthCheck, target: Target, events: mpsc::Sender<CheckEvent>) {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(check.interval_seconds.max(0.05));
    let timeout = Duration::from_secs_f64(check.timeout_seconds.max(0.05));
    let grace = Duration::from_secs_f64(check.grace_period_seconds.max(0.0));
    let mut healthy: Option<bool> = None;
    let mut failures = 0u32;
    tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
    loop {
        let ok = tokio::time::timeout(timeout, probe(&check, &target))
            .await
            .unwrap_or(false);
        let mut event = None;
        if ok {
            failures = 0;
            if healthy != Some(true) {
                healthy = Some(true);
                event = Some((true, false));
            }
        } else if healthy.is_some() || start.elapsed() >= grace {
            failures += 1;
            let kill = failures >= check.max_consecutive_failures.max(1);
            if healthy != Some(false) || kill {
                healthy = Some(false);
                event = Some((false, kill));
            }
        }
        if let Some((h, kill)) = event {
            let e = CheckEvent {
                task_id: target.task_id.clone(),
                healthy: h,
                kill,
            };
            if events.send(e).await.is_err() || kill {
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(protocol: garrison_proto::HealthCheckProtocol, failures: u32) -> HealthCheck {
        HealthCheck {
            protocol,
            path: Some("/health".into()),
            port_index: 0,
            command: None,
            grace_period_seconds: 0.0,
            interval_seconds: 0.05,
            timeout_seconds: 0.5,
            max_consecutive_failures: failures,
        }
    }

    #[tokio::test]
    async fn http_check_goes_healthy_then_unhealthy_then_kills() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = answered.clone();
        // Serve two 200s, then close the listener (refused from then on).
        std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut c, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = std::io::Write::write_all(
                    &mut c,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                );
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let (tx, mut rx) = mpsc::channel(8);
        let target = Target {
            task_id: "t".into(),
            ip: "127.0.0.1".parse().unwrap(),
            ports: vec![port],
            launcher: None,
        };
        let task = tokio::spawn(run_check(
            check(garrison_proto::HealthCheckProtocol::Http, 3),
            target,
            tx,
        ));
        let mut got = Vec::new();
        while let Some(e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
        {
            got.push((e.healthy, e.kill));
        }
        task.await.unwrap();
        assert_eq!(got, vec![(true, false), (false, false), (false, true)]);
        assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_in_grace_are_ignored_and_commands_work() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut c = check(garrison_proto::HealthCheckProtocol::Command, 2);
        c.command = Some("test -e /nonexistent-garrison".into());
        c.grace_period_seconds = 0.3;
        let target = Target {
            task_id: "t".into(),
            ip: "127.0.0.1".parse().unwrap(),
            ports: vec![],
            launcher: None,
        };
        let started = Instant::now();
        tokio::spawn(run_check(c, target.clone(), tx));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!first.healthy);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "reported within grace"
        );
        let (tx, mut rx) = mpsc::channel(8);
        let mut ok = check(garrison_proto::HealthCheckProtocol::Command, 2);
        ok.command = Some("true".into());
        tokio::spawn(run_check(ok, target, tx));
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(e.healthy);
    }
}
