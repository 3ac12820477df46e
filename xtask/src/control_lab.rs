//! A Garrison cluster in the [`Lab`]: `garrison-control` in the client
//! namespace (HTTP on 198.18.0.100:8080, DNS on :8053), one agent per node
//! namespace following it (API on the node's address, port 61421; it runs the
//! tasks), and an agent with tasks disabled in the client namespace, attached
//! to the client's cgroup (it balances the client's connects). Node agents are
//! started with `nsenter --net` so they see the host's cgroup controllers.
//! Used by `cargo xtask demo` and `cargo xtask bench control`.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use garrison_control::client::{ApiClient, http_request};
use serde_json::Value;

use crate::lab::{CLIENT_IP, Lab};

pub const CONTROL_PORT: u16 = 8080;
pub const DNS_PORT: u16 = 8053;
pub const AGENT_PORT: u16 = 61421;
pub const VIP_NAME: &str = "web.marathon.l4lb.thisdcos.directory";

/// The control's HTTP address.
pub fn control_addr() -> SocketAddr {
    SocketAddr::new(CLIENT_IP.parse().expect("literal"), CONTROL_PORT)
}

/// The control's DNS address.
pub fn dns_addr() -> SocketAddr {
    SocketAddr::new(CLIENT_IP.parse().expect("literal"), DNS_PORT)
}

/// Polls `f` every 20 ms until it returns `Some`, at most `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    while start.elapsed() < Duration::from_secs(secs) {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match last_err {
        Some(e) => Err(e.context(format!("{what}: not within {secs} s"))),
        None => bail!("{what}: not within {secs} s"),
    }
}

/// A VIP's backends as an agent holds them: `(ip:port, weight)`.
pub type Backends = Vec<(String, u64)>;

/// A running cluster in a lab.
pub struct ControlLab<'a> {
    pub lab: &'a Lab,
    pub nodes: usize,
    /// The control's API over TLS, logged in as the bootstrap account.
    pub api: ApiClient,
}

/// Logs in to the control at `addr` (from the lab's client namespace) with
/// the bootstrap credentials of `data`, trusting its CA.
fn login(lab: &Lab, data: &Path) -> Result<Option<ApiClient>> {
    let Ok(ca) = std::fs::read(data.join("tls").join("ca.pem")) else {
        return Ok(None);
    };
    let Ok(creds) = std::fs::read(data.join("bootstrap-credentials.json")) else {
        return Ok(None);
    };
    let creds: Value = serde_json::from_slice(&creds)?;
    let (uid, password) = (
        creds["uid"].as_str().context("bootstrap uid")?.to_string(),
        creds["password"]
            .as_str()
            .context("bootstrap password")?
            .to_string(),
    );
    let client = ApiClient::tls(control_addr(), &ca)?;
    let c = client.clone();
    let token = lab.in_ns(&lab.client_ns(), move || c.login(&uid, &password))?;
    Ok(token.ok().map(|t| client.with_token(t)))
}

/// A join token minted by the control's CLI from its data dir.
fn join_token(control: &Path, data: &Path) -> Result<String> {
    let out = std::process::Command::new(control)
        .args(["token", "create", "--join", "--data-dir"])
        .arg(data)
        .output()
        .context("garrison-control token create --join")?;
    if !out.status.success() {
        bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

impl<'a> ControlLab<'a> {
    /// Starts the control and the agents (the lab must be built) and waits
    /// until every agent registered.
    pub fn start(
        lab: &'a Lab,
        nodes: usize,
        agent: &Path,
        control: &Path,
        dataplane: &str,
    ) -> Result<Self> {
        let client = lab.client_ns();
        let run = lab.run_dir().to_path_buf();
        let data = run.join("control-data");
        let listen = control_addr().to_string();
        let dns = dns_addr().to_string();
        let path = |p: &PathBuf| p.to_str().map(str::to_string).context("path");
        lab.spawn_in(
            &client,
            control,
            &[
                "run",
                "--listen",
                &listen,
                "--dns",
                &dns,
                "--data-dir",
                &path(&data)?,
                "--agent-timeout-secs",
                "5",
            ],
            &run.join("control.log"),
        )?;
        let api = wait_for("the control serving (TLS, bootstrap login)", 30, || {
            login(lab, &data)
        })?;
        let me = ControlLab { lab, nodes, api };
        let control_url = format!("https://{listen}");
        let ca_file = path(&data.join("tls").join("ca.pem"))?;
        let join = join_token(control, &data)?;
        // Arguments of an agent named `name` at `ip` attached to `cgroup`.
        let agent_args = |name: &str, ip: &str, cgroup: &Path| -> Result<Vec<String>> {
            let mut args: Vec<String> = [
                "run",
                "--dataplane",
                dataplane,
                "--cleanup",
                "--control",
                &control_url,
                "--control-ca",
                &ca_file,
                "--join-token",
                &join,
                "--agent-id",
                name,
                "--hostname",
                name,
                "--advertise-ip",
                ip,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend([
                "--api".to_string(),
                format!("{ip}:{AGENT_PORT}"),
                "--cgroup".to_string(),
                path(&cgroup.to_path_buf())?,
                "--bpffs".to_string(),
                path(&lab.pins().join(name))?,
                "--state-dir".to_string(),
                path(&run.join(format!("{name}-state")))?,
            ]);
            Ok(args)
        };
        for i in 0..nodes {
            let name = format!("node{}", i + 1);
            let mut args = agent_args(&name, &lab.node_ip(i), &lab.node_cgroup(i))?;
            args.extend([
                "--work-dir".to_string(),
                path(&run.join(format!("{name}-work")))?,
                // The lab's namespaces go with the demo: so do the tasks.
                "--kill-tasks-on-exit".to_string(),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.spawn_in_net(
                &lab.node_ns(i),
                agent,
                &args,
                &run.join(format!("{name}.log")),
            )?;
        }
        // VIPs leave the client through its veth (inside the lab only): the
        // NFQUEUE path sees their SYNs there; the eBPF path never routes them.
        lab.exec_in(
            &client,
            &["ip", "route", "add", "11.0.0.0/8", "dev", "eth0"],
        )?;
        let mut args = agent_args("client", CLIENT_IP, &lab.cgroup())?;
        args.push("--no-tasks".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.spawn_in(&client, agent, &args, &run.join("client-agent.log"))?;
        wait_for("every agent registered", 60, || {
            let agents = me.get("/v1/agents")?;
            let n = agents["agents"].as_array().map_or(0, |a| a.len());
            Ok((n == nodes + 1).then_some(()))
        })
        .with_context(|| me.logs())?;
        Ok(me)
    }

    /// The logs of the control and the agents (for errors).
    pub fn logs(&self) -> String {
        let run = self.lab.run_dir();
        let mut names = vec!["control".to_string(), "client-agent".to_string()];
        names.extend((1..=self.nodes).map(|i| format!("node{i}")));
        names
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(run.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {n}.log (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A request to the control (TLS, as the bootstrap account).
    pub fn control(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let (method, path, body) = (
            method.to_string(),
            path.to_string(),
            body.map(str::to_string),
        );
        let api = self.api.clone();
        let r = self.lab.in_ns(&self.lab.client_ns(), move || {
            api.request(&method, &path, body.as_deref())
        })?;
        r.with_context(|| format!("HTTPS {}", control_addr()))
    }

    /// GET on the control, as JSON (a non-200 is an error).
    pub fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = self.control("GET", path, None)?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
    }

    /// Every agent's API address (nodes, then the client).
    pub fn agent_apis(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = (0..self.nodes)
            .map(|i| SocketAddr::new(self.lab.node_ip(i).parse().expect("literal"), AGENT_PORT))
            .collect();
        v.push(SocketAddr::new(
            CLIENT_IP.parse().expect("literal"),
            AGENT_PORT,
        ));
        v
    }

    /// The backends of the named VIP on every agent (`None` for an agent
    /// that does not have it), asked from the client namespace.
    pub fn vip_everywhere(&self) -> Result<Vec<Option<Backends>>> {
        let apis = self.agent_apis();
        let r = self
            .lab
            .in_ns(&self.lab.client_ns(), move || vip_backends_at(&apis))?;
        Ok(r?)
    }

    /// Resolves `name` through Garrison's DNS from the client namespace.
    pub fn resolve(&self, name: &str) -> Result<Vec<Ipv4Addr>> {
        let name = name.to_string();
        let r = self.lab.in_ns(&self.lab.client_ns(), move || {
            garrison_control::dns::client::query_a(dns_addr(), &name)
        })?;
        Ok(r?.addresses)
    }

    /// Waits until /web has `n` healthy tasks and no deployment; returns the
    /// tasks as (id, host, port).
    pub fn wait_healthy(&self, n: usize, secs: u64) -> Result<Vec<(String, String, u16)>> {
        wait_for(&format!("{n} healthy instances of /web"), secs, || {
            let app = self.get("/v2/apps/web")?;
            let deployments = self.get("/v2/deployments")?;
            let healthy = app["app"]["tasksHealthy"].as_u64().unwrap_or(0) as usize;
            let count = app["app"]["tasks"].as_array().map_or(0, |t| t.len());
            if healthy != n || count != n || !deployments.as_array().is_some_and(|d| d.is_empty()) {
                return Ok(None);
            }
            let tasks = app["app"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    (
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["host"].as_str().unwrap_or_default().to_string(),
                        t["ports"][0].as_u64().unwrap_or(0) as u16,
                    )
                })
                .collect();
            Ok(Some(tasks))
        })
        .with_context(|| self.logs())
    }
}

/// The backends of the named VIP on the agents at `apis` (`None` for an
/// agent that does not have it). Call from a namespace that reaches them.
pub fn vip_backends_at(apis: &[SocketAddr]) -> std::io::Result<Vec<Option<Backends>>> {
    apis.iter()
        .map(|api| {
            let (_, body) = http_request(*api, "GET", "/v1/vips", None)?;
            let v: Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
            Ok(v.as_array().and_then(|list| {
                let vip = list
                    .iter()
                    .find(|e| e["vip"].as_str().is_some_and(|s| s.starts_with(VIP_NAME)))?;
                Some(
                    vip["backend"]
                        .as_array()?
                        .iter()
                        .map(|b| {
                            (
                                format!("{}:{}", b["ip"].as_str().unwrap_or("?"), b["port"]),
                                b["weight"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect(),
                )
            }))
        })
        .collect()
}

/// Where tasks find `xtask`: they run as `nobody`, who may not traverse the
/// directory the build put it in (a checkout under /root is 0700), so it is
/// copied to a root-owned 0755 directory under /run.
fn task_visible_xtask() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new("/run/garrison-task-bin");
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let target = dir.join("xtask");
    let tmp = dir.join(format!(".xtask.{}", std::process::id()));
    std::fs::copy(std::env::current_exe()?, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// The demo's app: `instances` copies of `xtask lab-serve` answering with
/// `<host>:<port>`, behind `VIP_0` `/web:80`, with an HTTP health check.
/// Tasks run as the agents' default user (`nobody`).
pub fn web_app(instances: u32, interval_secs: f64) -> Result<String> {
    let me = task_visible_xtask()?;
    Ok(format!(
        r#"{{"id":"/web","cmd":"{} lab-serve --name $HOST:$PORT0 --listen 0.0.0.0:$PORT0",
  "instances":{instances},"cpus":0.1,"mem":32,
  "portDefinitions":[{{"port":0,"name":"http","labels":{{"VIP_0":"/web:80"}}}}],
  "healthChecks":[{{"protocol":"HTTP","path":"/","gracePeriodSeconds":30,"intervalSeconds":{interval_secs},"timeoutSeconds":2,"maxConsecutiveFailures":3}}]}}"#,
        me.display()
    ))
}

/// SIGKILLs the process of the task serving as `host:port` (a task dying,
/// not an orderly kill). Returns how many processes were signalled.
pub fn kill_task_process(host: &str, port: u16) -> usize {
    let marker = format!("lab-serve\0--name\0{host}:{port}\0");
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&marker) {
            // SAFETY: kill(2) on a task process this lab started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    killed
}
