//! A lab of network namespaces for the demo and the benchmarks: N backend nodes
//! and one client, joined by a bridge that lives in a namespace of its own (the
//! host's networking is never touched), plus a bpffs and cgroup2 mounted under
//! the lab's run directory (`ip netns exec` remounts /sys, /run survives), a
//! cgroup for the client, and the processes started in it. Addresses are in
//! 198.18.0.0/24 (RFC 2544's benchmarking range) and exist only inside the lab.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

pub const CLIENT_IP: &str = "198.18.0.100";
pub const BACKEND_PORT: u16 = 8080;
pub const API: &str = "127.0.0.1:61421";

/// One lab, named by a short prefix (namespaces `<prefix>-node1`, …).
pub struct Lab {
    prefix: String,
    nodes: usize,
    run_dir: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::output("ip", args).map(drop)
}

fn netns_exec(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", ns];
    full.extend(args);
    ip(&full)
}

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == dir.to_str())
}

fn mount(fstype: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if !is_mounted(dir) {
        cmd::output(
            "mount",
            &["-t", fstype, fstype, dir.to_str().context("path")?],
        )?;
    }
    Ok(())
}

/// Builds the agent binary (debug or release) and returns its path.
pub fn agent_binary(release: bool) -> Result<PathBuf> {
    workspace_binary("garrison-agent", release)
}

/// Builds package `name`'s binary of the same name and returns its path.
pub fn workspace_binary(name: &str, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", name];
    if release {
        args.push("--release");
    }
    cmd::cargo(&args)?;
    let bin = cmd::target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name);
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// One VIP file entry: `vip` over the backend port of every address in `ips`.
pub fn vip_entry_json(vip: &str, ips: &[String]) -> String {
    vip_entry_json_proto(vip, "tcp", ips)
}

/// Like [`vip_entry_json`] for `protocol` ("tcp" or "udp").
pub fn vip_entry_json_proto(vip: &str, protocol: &str, ips: &[String]) -> String {
    let list: Vec<String> = ips
        .iter()
        .map(|ip| format!(r#"{{"ip":"{ip}","port":{BACKEND_PORT}}}"#))
        .collect();
    format!(
        r#"{{"vip":"{vip}","protocol":"{protocol}","backend":[{}]}}"#,
        list.join(",")
    )
}

/// The VIP file for `vip` over every node's backend port.
pub fn vip_file_json(vip: &str, ips: &[String]) -> String {
    format!("[{}]", vip_entry_json(vip, ips))
}

impl Lab {
    pub fn new(prefix: &str, nodes: usize) -> Self {
        Lab {
            prefix: prefix.to_string(),
            nodes,
            run_dir: PathBuf::from(format!("/run/garrison-{prefix}")),
        }
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-node{}", self.prefix, i + 1)
    }

    pub fn client_ns(&self) -> String {
        format!("{}-client", self.prefix)
    }

    fn fabric_ns(&self) -> String {
        format!("{}-fabric", self.prefix)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("198.18.0.{}", 11 + i)
    }

    pub fn node_ips(&self) -> Vec<String> {
        (0..self.nodes).map(|i| self.node_ip(i)).collect()
    }

    /// The lab's run directory (logs, state, mounts).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Node `i`'s own cgroup (a sibling of the client's): a node agent
    /// attaches there.
    pub fn node_cgroup(&self, i: usize) -> PathBuf {
        self.run_dir.join(format!("cgroup2/garrison-node{}", i + 1))
    }

    /// The cgroup the agent attaches to and the client joins.
    pub fn cgroup(&self) -> PathBuf {
        self.run_dir.join("cgroup2/garrison-lab")
    }

    pub fn pins(&self) -> PathBuf {
        self.run_dir.join("bpffs/garrison")
    }

    fn all_ns(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.nodes).map(|i| self.node_ns(i)).collect();
        v.push(self.client_ns());
        v.push(self.fabric_ns());
        v
    }

    /// Removes everything the lab may have left (idempotent, best effort).
    pub fn teardown(&self) {
        if let Ok(text) = std::fs::read_to_string(self.run_dir.join("pids")) {
            let pids: Vec<i32> = text
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect();
            for &pid in &pids {
                // SAFETY: kill(2) on a pid this lab started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            // Agents kill their tasks on SIGTERM (grace period included):
            // wait for every process to go before the namespaces do.
            let deadline = Instant::now() + Duration::from_secs(15);
            std::thread::sleep(Duration::from_millis(100));
            while Instant::now() < deadline
                && pids
                    .iter()
                    .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let pins = self.pins();
        if pins.exists() {
            let _ = std::fs::remove_dir_all(&pins);
        }
        for ns in self.all_ns() {
            let _ = cmd::output("ip", &["netns", "del", &ns]);
        }
        let _ = std::fs::remove_dir(self.cgroup());
        for i in 0..self.nodes {
            let _ = std::fs::remove_dir(self.node_cgroup(i));
        }
        for m in ["bpffs", "cgroup2"] {
            let dir = self.run_dir.join(m);
            if is_mounted(&dir) {
                let _ = cmd::output("umount", &[dir.to_str().unwrap_or_default()]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }

    /// Creates namespaces, veths, the bridge, the mounts and the cgroup.
    pub fn build(&self) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir)?;
        let fabric = self.fabric_ns();
        for ns in self.all_ns() {
            ip(&["netns", "add", &ns])?;
            netns_exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        netns_exec(&fabric, &["ip", "link", "add", "br0", "type", "bridge"])?;
        netns_exec(&fabric, &["ip", "link", "set", "br0", "up"])?;
        let mut members: Vec<(String, String)> = (0..self.nodes)
            .map(|i| (self.node_ns(i), format!("{}/24", self.node_ip(i))))
            .collect();
        members.push((self.client_ns(), format!("{CLIENT_IP}/24")));
        for (i, (ns, addr)) in members.iter().enumerate() {
            let outer = format!("{}-v{i}", self.prefix);
            ip(&[
                "link", "add", &outer, "netns", &fabric, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            netns_exec(
                &fabric,
                &["ip", "link", "set", &outer, "master", "br0", "up"],
            )?;
            netns_exec(ns, &["ip", "addr", "add", addr, "dev", "eth0"])?;
            netns_exec(ns, &["ip", "link", "set", "eth0", "up"])?;
        }
        mount("bpf", &self.run_dir.join("bpffs"))?;
        mount("cgroup2", &self.run_dir.join("cgroup2"))?;
        std::fs::create_dir_all(self.cgroup())?;
        for i in 0..self.nodes {
            std::fs::create_dir_all(self.node_cgroup(i))?;
        }
        Ok(())
    }

    fn record_pid(&self, pid: u32) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.join("pids"))?;
        writeln!(f, "{pid}")?;
        Ok(())
    }

    /// Starts `program args` in namespace `ns`, output to `log`; torn down with the lab.
    pub fn spawn_in(&self, ns: &str, program: &Path, args: &[&str], log: &Path) -> Result<Child> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        self.spawn_logged(cmd, ns, program, args, log)
    }

    /// Like [`Lab::spawn_in`], but entering only the network namespace
    /// (`nsenter --net`): the host's mounts stay visible, so an agent there
    /// finds the host's cgroup controllers to isolate tasks with
    /// (`ip netns exec` remounts /sys).
    pub fn spawn_in_net(
        &self,
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<Child> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"));
        self.spawn_logged(cmd, ns, program, args, log)
    }

    /// `launcher program args`, output to `log`, its pid recorded.
    fn spawn_logged(
        &self,
        mut launcher: Command,
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<Child> {
        let out = std::fs::File::create(log)?;
        let child = launcher
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} in {ns}", program.display()))?;
        self.record_pid(child.id())?;
        Ok(child)
    }

    /// Runs `f` on a thread inside namespace `ns` (never the caller's
    /// thread: namespace membership must not leak into the rest of xtask).
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let handle = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this new thread only; the fd is open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
            .with_context(|| format!("entering {ns}"))
    }

    /// Starts an HTTP server (`xtask lab-serve`) on every node.
    pub fn start_servers(&self) -> Result<()> {
        let me = std::env::current_exe()?;
        for i in 0..self.nodes {
            let listen = format!("{}:{BACKEND_PORT}", self.node_ip(i));
            let name = format!("node{}", i + 1);
            let log = self.run_dir.join(format!("{name}.log"));
            self.spawn_in(
                &self.node_ns(i),
                &me,
                &["lab-serve", "--name", &name, "--listen", &listen],
                &log,
            )?;
        }
        Ok(())
    }

    /// Writes `content` to a file in the lab's run directory.
    pub fn write_file(&self, name: &str, content: &str) -> Result<PathBuf> {
        let path = self.run_dir.join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }

    /// Starts the agent in the client namespace with `source_args` (e.g.
    /// `--vips FILE` or `--mesos-state URL`) and waits until its `/v1/vips`
    /// mentions `ready`. Returns the agent's log path and pid.
    pub fn start_agent(
        &self,
        agent: &Path,
        source_args: &[&str],
        ready: &str,
    ) -> Result<(PathBuf, u32)> {
        self.start_agent_until(agent, source_args, "/v1/vips", ready)
    }

    /// Like [`Lab::start_agent`], polling `path` for `ready` (`/healthz` is
    /// cheap for a huge table: `"vips":10000`).
    pub fn start_agent_until(
        &self,
        agent: &Path,
        source_args: &[&str],
        path: &str,
        ready: &str,
    ) -> Result<(PathBuf, u32)> {
        self.start_agent_at(agent, API, "agent", source_args, path, ready)
    }

    /// Starts an agent with its API on `api`, its log and state named by
    /// `name` (a second agent, e.g. the NFQUEUE one next to the eBPF one).
    pub fn start_agent_at(
        &self,
        agent: &Path,
        api: &str,
        name: &str,
        source_args: &[&str],
        path: &str,
        ready: &str,
    ) -> Result<(PathBuf, u32)> {
        let log = self.run_dir.join(format!("{name}.log"));
        let cgroup = self.cgroup();
        let pins = self.pins();
        let state = self.run_dir.join(format!("{name}-state"));
        let work = self.run_dir.join(format!("{name}-work"));
        let mut args = vec![
            "run",
            "--api",
            api,
            "--cgroup",
            cgroup.to_str().context("path")?,
            "--bpffs",
            pins.to_str().context("path")?,
            "--state-dir",
            state.to_str().context("path")?,
            "--work-dir",
            work.to_str().context("path")?,
            "--cleanup",
        ];
        args.extend(source_args);
        // `ip netns exec` execs the agent: the child's pid is the agent's.
        let pid = self.spawn_in(&self.client_ns(), agent, &args, &log)?.id();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.api_get_at(api, path).is_ok_and(|b| b.contains(ready)) {
                return Ok((log, pid));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the agent did not serve {ready} within 60 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    /// Starts the agent with a VIP file holding `vips_json`.
    pub fn start_agent_with_file(
        &self,
        agent: &Path,
        vips_json: &str,
        vip: &str,
    ) -> Result<(PathBuf, u32)> {
        let vips = self.write_file("vips.json", vips_json)?;
        self.start_agent(agent, &["--vips", vips.to_str().context("path")?], vip)
    }

    /// GET on the agent API from inside the client namespace.
    pub fn api_get(&self, path: &str) -> Result<String> {
        self.api_get_at(API, path)
    }

    /// GET `path` from the agent API at `api` (inside the client namespace).
    pub fn api_get_at(&self, api: &str, path: &str) -> Result<String> {
        let url = format!("http://{api}{path}");
        let client = self.client_ns();
        let out = cmd::output(
            "ip",
            &[
                "netns",
                "exec",
                &client,
                "curl",
                "-sS",
                "--max-time",
                "2",
                &url,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Runs `args` in namespace `ns` (e.g. `ip route add …`, `iptables-restore …`).
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Result<()> {
        netns_exec(ns, args)
    }

    /// Runs `xtask ARGS` in the client namespace and returns its stdout.
    pub fn run_client(&self, args: &[&str]) -> Result<String> {
        let me = std::env::current_exe()?;
        let client = self.client_ns();
        let mut full = vec!["netns", "exec", &client, me.to_str().context("path")?];
        full.extend(args);
        let out = cmd::output("ip", &full)?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

/// Whether `pid` has exited but not been reaped.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Joins a cgroup v2 directory (the client side of the lab).
pub fn join_cgroup(cgroup: &Path) -> Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining {}", cgroup.display()))
}

/// A Mesos master `/state` document: one agent per node (`slave(1)@IP:5051`)
/// and one running `marathon` task per node, serving `BACKEND_PORT` with the
/// discovery label `VIP_0` = `vip_label` (e.g. `/web:80`).
pub fn mesos_master_state(node_ips: &[String], vip_label: &str) -> String {
    let slaves: Vec<String> = node_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            format!(r#"{{"id":"agent-{i}","pid":"slave(1)@{ip}:5051","hostname":"{ip}"}}"#)
        })
        .collect();
    let tasks: Vec<String> = node_ips
        .iter()
        .enumerate()
        .map(|(i, _)| {
            format!(
                r#"{{"id":"web.{i}","name":"web","slave_id":"agent-{i}","state":"TASK_RUNNING","resources":{{"ports":"[{BACKEND_PORT}-{BACKEND_PORT}]"}},"statuses":[{{"state":"TASK_RUNNING","timestamp":1700000000.0}}],"discovery":{{"name":"web","visibility":"FRAMEWORK","ports":{{"ports":[{{"number":{BACKEND_PORT},"name":"http","protocol":"tcp","labels":{{"labels":[{{"key":"VIP_0","value":"{vip_label}"}}]}}}}]}}}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"pid":"master@127.0.0.1:5050","slaves":[{}],"frameworks":[{{"id":"marathon-1","name":"marathon","tasks":[{}]}}]}}"#,
        slaves.join(","),
        tasks.join(",")
    )
}

/// `xtask lab-serve-file`: serves `path` (re-read per request) over HTTP/1.1.
pub fn serve_file(listen: SocketAddr, path: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (status, body) = match std::fs::read_to_string(path) {
            Ok(b) => ("200 OK", b),
            Err(e) => (
                "500 Internal Server Error",
                format!("{{\"error\":\"{e}\"}}"),
            ),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

/// `xtask lab-serve`: an HTTP/1.1 server answering every request with its
/// name; keeps connections alive unless asked to close. A fixed pool of
/// threads accepts, so thread creation is not part of the measured cost.
pub fn serve(name: &str, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    // UDP on the same port: every datagram is answered with the name.
    let udp = std::net::UdpSocket::bind(listen).with_context(|| format!("binding UDP {listen}"))?;
    let udp_name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(udp_name.as_bytes(), from);
            }
        }
    });
    let body = format!("{name}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            let response = response.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    serve_connection(conn, response.as_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn serve_connection(mut conn: std::net::TcpStream, response: &[u8]) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut pending = Vec::new();
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            pending.drain(..end + 4);
            if conn.write_all(response).is_err() {
                return;
            }
            if head.contains("connection: close") {
                return;
            }
        }
        if pending.len() > 64 * 1024 {
            return;
        }
    }
}
