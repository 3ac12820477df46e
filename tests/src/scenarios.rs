//! Test scenarios that run both on the host (tests/tests/*.rs) and in the QEMU
//! guests (vm-tests). Each is a plain function that panics on failure; each
//! makes its own network namespace (loopback only: nothing can leave), its own
//! child cgroup and its own pin directory.
use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use garrison_agent::{
    dataplane::Dataplane,
    vip::{Backend, Protocol, VipKey, VipTable},
};

pub use crate::agent_api::{
    agent_api_needs_its_token_and_refuses_foreign_hosts,
    mesos_vip_on_loopback_is_refused_and_good_vips_serve,
};
pub use crate::control::{
    control_autoscales_an_app_from_vip_connection_rates,
    control_restart_loses_nothing_and_lost_agents_are_replaced,
    control_runs_an_app_behind_a_named_vip_and_drains_failures,
};
pub use crate::isolation::{
    a_restarted_launcher_readopts_running_tasks, ended_tasks_and_their_sandboxes_are_collected,
    hooks_run_in_order_and_can_refuse, killed_task_leaves_nothing_and_bad_requests_change_nothing,
    task_busy_loop_gets_half_a_cpu, task_forks_stop_at_the_pids_limit,
    task_over_disk_quota_is_killed_by_the_du_watcher,
    task_over_memory_limit_fails_with_memory_limit, task_past_its_project_quota_gets_edquot,
};
pub use crate::nfqueue::{
    nfqueue_agent_killed_fail_closed_refuses_fail_open_continues,
    nfqueue_balances_across_namespaces_and_cleans_up,
    nfqueue_silent_backend_is_taken_out_and_retried,
};
pub use crate::privilege::{
    command_checks_run_as_their_task, tasks_run_unprivileged_with_nothing_of_the_agent,
};
use crate::{
    LbFixture, NetNsGuard, StubHttp, TestCgroup, TestPins,
    agent_api::{agent_request, api_token},
    ask_name, enter_netns, http_get, mesos_agent_state, require_root, serve_tcp_name,
    serve_udp_name, tally, unique,
};

/// Calls macro `$m` with the name of every scenario: the one list both the
/// guest runner ([`ALL`]) and the host tests (tests/tests/dataplane.rs) use.
#[macro_export]
macro_rules! with_scenarios {
    ($m:ident) => {
        $m!(
            tcp_vip_reaches_backend_and_other_addresses_are_untouched,
            tcp_backends_share_by_weight,
            removed_backend_is_never_chosen_and_empty_vip_refuses,
            getpeername_returns_the_vip,
            udp_replies_come_from_the_vip_and_stick_to_one_backend,
            ipv6_tcp_and_udp_vips,
            agent_sigkill_and_restart_lose_no_connection,
            agent_reloads_on_sighup_and_keeps_table_on_bad_file,
            agent_serves_named_vip_from_mesos_state,
            mesos_vip_on_loopback_is_refused_and_good_vips_serve,
            failing_backend_is_taken_out_and_retried_after_backoff,
            silent_backend_is_taken_out_by_the_timeout,
            nfqueue_balances_across_namespaces_and_cleans_up,
            nfqueue_silent_backend_is_taken_out_and_retried,
            nfqueue_agent_killed_fail_closed_refuses_fail_open_continues,
            task_busy_loop_gets_half_a_cpu,
            task_over_memory_limit_fails_with_memory_limit,
            killed_task_leaves_nothing_and_bad_requests_change_nothing,
            task_api_launches_reports_and_kills,
            agent_api_needs_its_token_and_refuses_foreign_hosts,
            hooks_run_in_order_and_can_refuse,
            task_over_disk_quota_is_killed_by_the_du_watcher,
            task_past_its_project_quota_gets_edquot,
            task_forks_stop_at_the_pids_limit,
            a_restarted_launcher_readopts_running_tasks,
            ended_tasks_and_their_sandboxes_are_collected,
            tasks_run_unprivileged_with_nothing_of_the_agent,
            command_checks_run_as_their_task,
            control_runs_an_app_behind_a_named_vip_and_drains_failures,
            control_restart_loses_nothing_and_lost_agents_are_replaced,
            control_autoscales_an_app_from_vip_connection_rates
        );
    };
}

macro_rules! scenario_table {
    ($($name:ident),*) => {
        /// Every scenario by name, for the guest runner.
        pub const ALL: &[(&str, fn())] = &[$((stringify!($name), $name)),*];
    };
}
with_scenarios!(scenario_table);

fn vip(addr: &str, protocol: Protocol) -> VipKey {
    VipKey {
        addr: addr.parse().expect("VIP literal"),
        protocol,
    }
}

fn weighted(backends: &[(SocketAddr, u32)]) -> Vec<Backend> {
    backends
        .iter()
        .map(|&(addr, weight)| Backend {
            addr,
            weight,
            healthy: true,
        })
        .collect()
}

fn one_vip_table(key: VipKey, backends: &[(SocketAddr, u32)]) -> VipTable {
    let mut t = VipTable::new();
    t.insert(key, weighted(backends)).expect("valid table");
    t
}

fn tcp_backends(ip: &str, n: usize) -> Vec<SocketAddr> {
    (1..=n)
        .map(|i| {
            serve_tcp_name(
                TcpListener::bind((ip, 0)).expect("bind backend"),
                &format!("backend-{i}"),
            )
        })
        .collect()
}

fn udp_backends(ip: &str, n: usize) -> Vec<SocketAddr> {
    (1..=n)
        .map(|i| {
            serve_udp_name(
                UdpSocket::bind((ip, 0)).expect("bind backend"),
                &format!("backend-{i}"),
            )
        })
        .collect()
}

fn assert_near(counts: &std::collections::BTreeMap<String, usize>, name: &str, expected: f64) {
    let got = counts.get(name).copied().unwrap_or(0) as f64;
    // A plain bound of ±35 % of the expectation: over ≥100 expected picks
    // that is more than 3.5 standard deviations of a fair binomial.
    assert!(
        (got - expected).abs() <= 0.35 * expected,
        "{name}: {got} picks, expected about {expected}; all: {counts:?}"
    );
}

/// A TCP connect to a VIP reaches its backend; other addresses are untouched.
pub fn tcp_vip_reaches_backend_and_other_addresses_are_untouched() {
    let mut f = LbFixture::new("connect");
    let backend = tcp_backends("127.0.0.1", 1)[0];
    let key = vip("11.1.2.3:80", Protocol::Tcp);
    f.dp.apply(&one_vip_table(key, &[(backend, 1)]))
        .expect("apply");

    for _ in 0..5 {
        assert_eq!(
            ask_name(key.addr).expect("connect through the VIP"),
            "backend-1"
        );
    }
    // Not a VIP: untouched, so it fails (no route in a fresh namespace).
    let err = ask_name("11.1.2.4:80".parse().unwrap())
        .expect_err("a non-VIP address must not be rewritten");
    assert_ne!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "untouched, not refused by us: {err}"
    );
    assert!(
        ask_name("11.1.2.3:81".parse().unwrap()).is_err(),
        "same IP, other port: not a VIP"
    );
    assert_eq!(
        ask_name(backend).unwrap(),
        "backend-1",
        "direct traffic untouched"
    );

    let selected: u64 = f.dp.counters().unwrap().values().map(|c| c.selected).sum();
    assert_eq!(selected, 5, "the kernel counted every steered connect");
    let pins = f.pins.path().to_path_buf();
    let LbFixture {
        dp,
        ns,
        pins: p,
        cg,
    } = f;
    dp.cleanup().expect("cleanup");
    assert!(!pins.exists(), "cleanup removes the pin directory");
    drop((ns, p, cg));
}

/// Three backends are each chosen, in proportion to their weights.
pub fn tcp_backends_share_by_weight() {
    let mut f = LbFixture::new("weights");
    let b = tcp_backends("127.0.0.1", 3);
    let key = vip("11.1.2.3:80", Protocol::Tcp);

    f.dp.apply(&one_vip_table(key, &[(b[0], 1), (b[1], 1), (b[2], 1)]))
        .unwrap();
    let counts = tally(key.addr, 300);
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert_near(&counts, name, 100.0);
    }

    f.dp.apply(&one_vip_table(key, &[(b[0], 1), (b[1], 2), (b[2], 3)]))
        .unwrap();
    let counts = tally(key.addr, 600);
    assert_near(&counts, "backend-1", 100.0);
    assert_near(&counts, "backend-2", 200.0);
    assert_near(&counts, "backend-3", 300.0);

    let total: u64 = f.dp.counters().unwrap().values().map(|c| c.selected).sum();
    assert_eq!(
        total, 900,
        "kernel counters agree with the connections made"
    );
}

/// A removed backend is never chosen again; a VIP with no backend refuses at
/// once (ECONNREFUSED); a VIP removed from the table is no longer touched.
pub fn removed_backend_is_never_chosen_and_empty_vip_refuses() {
    let mut f = LbFixture::new("remove");
    let b = tcp_backends("127.0.0.1", 3);
    let key = vip("11.1.2.3:80", Protocol::Tcp);
    f.dp.apply(&one_vip_table(key, &[(b[0], 1), (b[1], 1), (b[2], 1)]))
        .unwrap();
    assert_eq!(tally(key.addr, 60).len(), 3);

    f.dp.apply(&one_vip_table(key, &[(b[0], 1), (b[1], 1)]))
        .unwrap();
    let counts = tally(key.addr, 200);
    assert!(
        !counts.contains_key("backend-3"),
        "removed backend chosen: {counts:?}"
    );

    f.dp.apply(&one_vip_table(key, &[])).unwrap();
    let err = TcpStream::connect_timeout(&key.addr, Duration::from_secs(2))
        .expect_err("no backend: must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(f.dp.events().unwrap()["no_backend"] >= 1);

    // Weight 0 everywhere is the same as no backend.
    f.dp.apply(&one_vip_table(key, &[(b[0], 0)])).unwrap();
    let err = TcpStream::connect_timeout(&key.addr, Duration::from_secs(2))
        .expect_err("drained: must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    f.dp.apply(&VipTable::new()).unwrap();
    let err = TcpStream::connect_timeout(&key.addr, Duration::from_secs(2)).expect_err("no route");
    assert_ne!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "a removed VIP is not ours any more: {err}"
    );
}

/// `getpeername()` on a steered TCP socket returns the VIP.
pub fn getpeername_returns_the_vip() {
    let mut f = LbFixture::new("peername");
    let b = tcp_backends("127.0.0.1", 1);
    let key = vip("11.1.2.3:80", Protocol::Tcp);
    f.dp.apply(&one_vip_table(key, &[(b[0], 1)])).unwrap();
    let s = TcpStream::connect_timeout(&key.addr, Duration::from_secs(2)).unwrap();
    assert_eq!(s.peer_addr().unwrap(), key.addr);
    let direct = TcpStream::connect_timeout(&b[0], Duration::from_secs(2)).unwrap();
    assert_eq!(
        direct.peer_addr().unwrap(),
        b[0],
        "direct sockets untouched"
    );
}

fn udp_ask(socket: &UdpSocket, to: Option<SocketAddr>) -> (String, SocketAddr) {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match to {
        Some(addr) => socket.send_to(b"who", addr).expect("sendto VIP"),
        None => socket.send(b"who").expect("send on connected socket"),
    };
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf).expect("UDP reply");
    (String::from_utf8_lossy(&buf[..n]).to_string(), from)
}

/// UDP: replies appear to come from the VIP; one socket sticks to one backend;
/// different sockets spread; connected UDP works and its peer is the VIP.
pub fn udp_replies_come_from_the_vip_and_stick_to_one_backend() {
    let mut f = LbFixture::new("udp");
    let b = udp_backends("127.0.0.1", 3);
    let key = vip("11.1.2.3:53", Protocol::Udp);
    f.dp.apply(&one_vip_table(key, &[(b[0], 1), (b[1], 1), (b[2], 1)]))
        .unwrap();

    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (first, from) = udp_ask(&s, Some(key.addr));
    assert_eq!(from, key.addr, "the reply must appear to come from the VIP");
    for _ in 0..9 {
        let (name, from) = udp_ask(&s, Some(key.addr));
        assert_eq!(
            (name.as_str(), from),
            (first.as_str(), key.addr),
            "one socket, one backend"
        );
    }

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        seen.insert(udp_ask(&s, Some(key.addr)).0);
    }
    assert_eq!(seen.len(), 3, "sockets spread over every backend: {seen:?}");

    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(key.addr).expect("connect UDP to the VIP");
    assert_eq!(c.peer_addr().unwrap(), key.addr);
    let (_, from) = udp_ask(&c, None);
    assert_eq!(from, key.addr);
}

/// IPv6 VIPs for TCP and UDP.
pub fn ipv6_tcp_and_udp_vips() {
    let mut f = LbFixture::new("ipv6");
    let tb = tcp_backends("::1", 2);
    let ub = udp_backends("::1", 2);
    let tkey = vip("[fd00::1]:80", Protocol::Tcp);
    let ukey = vip("[fd00::1]:53", Protocol::Udp);
    let mut t = VipTable::new();
    t.insert(tkey, weighted(&[(tb[0], 1), (tb[1], 1)])).unwrap();
    t.insert(ukey, weighted(&[(ub[0], 1), (ub[1], 1)])).unwrap();
    f.dp.apply(&t).unwrap();

    let counts = tally(tkey.addr, 100);
    assert_eq!(counts.len(), 2, "both IPv6 backends chosen: {counts:?}");
    let s = TcpStream::connect_timeout(&tkey.addr, Duration::from_secs(2)).unwrap();
    assert_eq!(s.peer_addr().unwrap(), tkey.addr);
    let u = UdpSocket::bind("[::1]:0").unwrap();
    let (name, from) = udp_ask(&u, Some(ukey.addr));
    assert!(name.starts_with("backend-"), "{name}");
    assert_eq!(from, ukey.addr);
}

/// The agent binary: `$GARRISON_AGENT_BIN`, else next to the test binary's
/// directory (target/<profile>/garrison-agent, built by `cargo xtask test`).
pub fn agent_binary() -> PathBuf {
    sibling_binary("garrison-agent", "GARRISON_AGENT_BIN")
}

/// A workspace binary: `$<env>`, else target/<profile>/<name> next to the
/// test binary's directory (built by `cargo xtask test`).
pub fn sibling_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("target layout");
    assert!(
        candidate.is_file(),
        "{name} binary not found at {} (build it: cargo build -p garrison-agent -p garrison-control -p garrison-tests --bins, or set {env})",
        candidate.display()
    );
    candidate
}

/// A workspace binary that tasks run: tasks run as `nobody`, who may not
/// traverse the target directory (a checkout under /root is 0700), so
/// [`sibling_binary`] is copied into a root-owned 0755 directory under the
/// temporary directory (`$<env>` is used as it is: the guests ship their
/// binaries in /bin).
pub fn task_binary(name: &str, env: &str) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let source = sibling_binary(name, env);
    if std::env::var_os(env).is_some() {
        return source;
    }
    let dir = std::env::temp_dir().join("garrison-task-bin");
    match std::fs::create_dir(&dir) {
        Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the task binary directory"),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => panic!("creating {}: {e}", dir.display()),
    }
    // A shared temporary directory: use it only if it is ours alone.
    let meta = std::fs::symlink_metadata(&dir).expect("task binary directory");
    assert!(
        meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0,
        "{} must be a directory owned by root and writable by root only",
        dir.display()
    );
    let target = dir.join(name);
    let tmp = dir.join(format!(".{}", unique(name)));
    std::fs::copy(&source, &tmp).expect("copying a task binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, &target).expect("placing a task binary");
    target
}

pub(crate) struct AgentProcess {
    child: Child,
    api: SocketAddr,
    log: PathBuf,
}

impl AgentProcess {
    pub(crate) fn start(args: &[String], api: SocketAddr, log: PathBuf, ready_when: &str) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let child = Command::new(agent_binary())
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start garrison-agent");
        let mut agent = AgentProcess { child, api, log };
        agent.wait_until(|body| body.contains(ready_when));
        agent
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls /v1/vips until `ready(body)`, at most 20 s.
    pub(crate) fn wait_until(&mut self, ready: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early ({status}); log:\n{}", self.log());
            }
            if let Ok((200, body)) = http_get(self.api, "/v1/vips")
                && ready(&body)
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("agent not ready within 20 s; log:\n{}", self.log());
    }

    /// SIGHUP: re-read sources (the agent keeps running).
    fn hup(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
    }

    pub(crate) fn signal(&mut self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running-agent test bed: namespace, cgroup, pins, three TCP backends and
/// a VIP file; the agent is started from it as a separate process.
pub(crate) struct AgentRig {
    pub(crate) dir: PathBuf,
    vips: PathBuf,
    pub(crate) api: SocketAddr,
    pub(crate) args: Vec<String>,
    pub(crate) backends: Vec<SocketAddr>,
    // Field order is drop order: leave the namespace, then unpin, then the cgroup.
    pub(crate) ns: NetNsGuard,
    _pins: TestPins,
    _cg: TestCgroup,
}

pub(crate) const RIG_VIP: &str = "11.1.2.3:80";

impl AgentRig {
    /// `extra` flags are added; `--no-vips-file` leaves out the VIP file.
    pub(crate) fn new(name: &str, extra: &[&str]) -> Self {
        require_root();
        let cg = TestCgroup::new(name).expect("cgroup");
        let pins = TestPins::new(name).expect("pins");
        let ns = NetNsGuard::enter_new().expect("netns");
        let backends = tcp_backends("127.0.0.1", 3);
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let vips = dir.join("vips.json");
        let api = crate::reserved_addr();
        let mut args: Vec<String> = [
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--api",
            &api.to_string(),
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--bpffs",
            pins.path().to_str().unwrap(),
            "--work-dir",
            dir.join("work").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--no-vips-file") {
            args.extend(["--vips".to_string(), vips.to_str().unwrap().to_string()]);
        }
        args.extend(
            extra
                .iter()
                .filter(|a| **a != "--no-vips-file")
                .map(|s| s.to_string()),
        );
        let rig = AgentRig {
            dir,
            vips,
            api,
            args,
            backends,
            ns,
            _pins: pins,
            _cg: cg,
        };
        rig.write_vips(&rig.backends.clone());
        rig
    }

    /// Writes the VIP file: RIG_VIP over `backends` (atomically, by rename).
    fn write_vips(&self, backends: &[SocketAddr]) {
        let list: Vec<String> = backends
            .iter()
            .map(|a| format!(r#"{{"ip":"{}","port":{}}}"#, a.ip(), a.port()))
            .collect();
        let text = format!(
            r#"[{{"vip":"{RIG_VIP}","protocol":"tcp","backend":[{}]}}]"#,
            list.join(",")
        );
        self.write_raw(&text);
    }

    fn write_raw(&self, text: &str) {
        let tmp = self.dir.join("vips.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.vips).unwrap();
    }

    pub(crate) fn start(&self) -> AgentProcess {
        self.start_waiting_for(RIG_VIP)
    }

    /// The agent's state directory (its API token and Unix socket).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Starts the agent and waits until /v1/vips mentions `needle`.
    pub(crate) fn start_waiting_for(&self, needle: &str) -> AgentProcess {
        AgentProcess::start(&self.args, self.api, self.dir.join("agent.log"), needle)
    }

    /// Backends listed for RIG_VIP by /v1/vips.
    fn listed_backends(&self) -> usize {
        let (_, body) = http_get(self.api, "/v1/vips").expect("API");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json[0]["backend"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for AgentRig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent is SIGKILLed while a client opens connections in a loop: no
/// connection fails, and a restarted agent re-adopts the pinned data plane
/// with its counters.
pub fn agent_sigkill_and_restart_lose_no_connection() {
    let rig = AgentRig::new("restart", &["--poll-ms", "100"]);
    let mut agent = rig.start();
    let vip: SocketAddr = RIG_VIP.parse().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let netns = rig.ns.handle().unwrap();
        thread::spawn(move || {
            enter_netns(&netns).expect("client enters the test namespace");
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                match ask_name(vip) {
                    Ok(name) if name.starts_with("backend-") => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let wait_for_more = |from: u64| {
        let start = Instant::now();
        while ok.load(Ordering::Relaxed) < from + 20 && start.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_more(0);
    agent.signal(libc::SIGKILL);
    let at_kill = ok.load(Ordering::Relaxed);
    wait_for_more(at_kill);
    assert!(
        ok.load(Ordering::Relaxed) >= at_kill + 20,
        "connections continue while no agent runs"
    );
    drop(agent);

    let mut agent = rig.start();
    wait_for_more(ok.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} connections failed across the restart",
        ok + failed
    );
    assert!(
        agent.log().contains("readopted=true"),
        "restarted agent re-adopted the pins:\n{}",
        agent.log()
    );

    let (status, body) = http_get(rig.api, "/vips").unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let total: u64 = json["vips"][RIG_VIP]
        .as_object()
        .expect("VIP listed")
        .values()
        .map(|b| b["total_sucesses"].as_u64().unwrap())
        .sum();
    assert_eq!(total, ok, "kernel counters span both agent lifetimes");
    let (status, body) = http_get(rig.api, "/vip/11.9.9.9:80").unwrap();
    assert_eq!((status, body.as_str()), (404, r#"{"error":"no_backends"}"#));
    let (status, body) = http_get(rig.api, "/vip/not-a-vip").unwrap();
    assert_eq!((status, body.as_str()), (400, r#"{"error":"invalid_vip"}"#));

    agent.signal(libc::SIGTERM);
    assert!(
        agent.log().contains("pinned data plane keeps serving"),
        "{}",
        agent.log()
    );
}

/// The VIP file is re-read on SIGHUP (polling is off here); a malformed file
/// is reported with its path and changes nothing that is programmed.
pub fn agent_reloads_on_sighup_and_keeps_table_on_bad_file() {
    let rig = AgentRig::new("reload", &["--poll-ms", "3600000"]);
    let mut agent = rig.start();
    let vip: SocketAddr = RIG_VIP.parse().unwrap();
    assert_eq!(rig.listed_backends(), 3);

    rig.write_vips(&rig.backends[..1]);
    agent.hup();
    agent.wait_until(|body| body.matches("\"ip\"").count() == 1);
    let counts = tally(vip, 30);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["backend-1"],
        "{counts:?}"
    );

    rig.write_raw(
        r#"[{"vip":"11.1.2.3:80","protocol":"tcp","backend":[{"ip":"not-an-ip","port":1}]}]"#,
    );
    agent.hup();
    let start = Instant::now();
    while !agent.log().contains("VIP file rejected") && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    let log = agent.log();
    assert!(
        log.contains("VIP file rejected"),
        "bad file reported:\n{log}"
    );
    assert!(
        log.contains("vips.json") && log.contains("not-an-ip"),
        "report names file and value:\n{log}"
    );
    assert_eq!(rig.listed_backends(), 1, "a bad file changes nothing");
    assert_eq!(
        tally(vip, 10).len(),
        1,
        "still served by the last good table"
    );
    agent.signal(libc::SIGTERM);
}

fn named_vip_address(api: SocketAddr, name: &str) -> Option<SocketAddr> {
    let (_, body) = http_get(api, "/v1/vips").ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json.as_array()?
        .iter()
        .find(|e| e["vip"] == name)
        .and_then(|e| e["address"].as_str()?.parse().ok())
}

/// Backends come from a Mesos agent's /state: a named VIP gets a stable address
/// in 11.0.0.0/8 and its DNS name; a TASK_KILLING task is drained at once; bad
/// state JSON changes nothing; a source failing past its grace period is
/// withdrawn; the address survives an agent restart (state file).
pub fn agent_serves_named_vip_from_mesos_state() {
    // The rig enters its namespace first; backends and the state stub bind in it.
    let rig = AgentRig::new(
        "mesos",
        &[
            "--no-vips-file",
            "--mesos-poll-ms",
            "100",
            "--source-grace-secs",
            "2",
        ],
    );
    let b = &rig.backends;
    let name = "web.marathon.l4lb.thisdcos.directory:80";
    let running = |state2: &str| {
        mesos_agent_state(
            "127.0.0.1",
            &[
                ("web.1", "TASK_RUNNING", b[0].port(), "/web:80"),
                ("web.2", state2, b[1].port(), "/web:80"),
            ],
        )
    };
    let stub = StubHttp::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        200,
        running("TASK_RUNNING"),
    );
    let mut rig_args = rig.args.clone();
    rig_args.extend([
        "--mesos-state".to_string(),
        format!("http://{}/state", stub.addr),
    ]);
    let start =
        |args: &[String]| AgentProcess::start(args, rig.api, rig.dir.join("agent.log"), name);
    let mut agent = start(&rig_args);

    let vip = named_vip_address(rig.api, name).expect("named VIP listed with its address");
    assert!(vip.ip().to_string().starts_with("11."), "{vip}");
    assert_eq!(vip.port(), 80);
    let counts = tally(vip, 60);
    assert_eq!(counts.len(), 2, "both tasks serve: {counts:?}");
    let (_, vips) = http_get(rig.api, "/vips").unwrap();
    assert!(vips.contains(name), "/vips names the VIP: {vips}");

    // Task 2 is being killed: drained at once.
    stub.set(200, running("TASK_KILLING"));
    agent.wait_until(|body| body.contains(r#""weight":0"#));
    let counts = tally(vip, 40);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["backend-1"],
        "{counts:?}"
    );

    // Garbage from the source: reported, table kept while within grace.
    stub.set(200, "{not json".into());
    let t = Instant::now();
    while !agent.log().contains("source failing") && t.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.log().contains("not JSON"), "{}", agent.log());
    assert_eq!(
        tally(vip, 5).len(),
        1,
        "still served within the grace period"
    );

    // Back to good, then restart: same address from the state file.
    stub.set(200, running("TASK_RUNNING"));
    agent.wait_until(|body| !body.contains(r#""weight":0"#));
    agent.signal(libc::SIGTERM);
    drop(agent);
    let mut agent = start(&rig_args);
    assert_eq!(
        named_vip_address(rig.api, name),
        Some(vip),
        "address stable across restarts"
    );

    // The source fails for longer than the grace period: withdrawn.
    stub.set(503, "busy".into());
    agent.wait_until(|body| body.trim() == "[]");
    assert!(
        agent.log().contains("VIPs are withdrawn"),
        "{}",
        agent.log()
    );
    let err = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
        .expect_err("withdrawn VIP is not ours");
    assert_ne!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    agent.signal(libc::SIGTERM);
}

/// Passive health on the eBPF path: a backend that refuses connections is
/// taken out after 5 consecutive failures (the kernel's sockops counts them),
/// /vips shows it unhealthy with its failures, connections then all succeed,
/// and it is retried after the backoff (and taken out again).
pub fn failing_backend_is_taken_out_and_retried_after_backoff() {
    let rig = AgentRig::new(
        "health",
        &[
            "--poll-ms",
            "100",
            "--health-backoff-secs",
            "2",
            "--health-max-failures",
            "5",
        ],
    );
    // A port nobody listens on: connects are refused at once.
    let dead = crate::reserved_addr();
    rig.write_vips(&[rig.backends[0], rig.backends[1], dead]);
    let mut agent = rig.start_waiting_for(&dead.port().to_string());
    let vip: SocketAddr = RIG_VIP.parse().unwrap();

    let start = Instant::now();
    while !agent.log().contains("taken out of selection")
        && start.elapsed() < Duration::from_secs(20)
    {
        let _ = ask_name(vip);
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        agent.log().contains("taken out of selection"),
        "{}",
        agent.log()
    );
    let (_, body) = http_get(rig.api, &format!("/backend/{dead}")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let view = &json["vips"][RIG_VIP];
    assert_eq!(view["is_healthy"], false, "{body}");
    assert_eq!(view["weight"], 0, "{body}");
    assert!(view["total_failures"].as_u64().unwrap() >= 5, "{body}");
    // The live backends serve: with the dead one out, 30 requests all reach
    // backend 0 or 1 (until then the loop may have sent backend 0 none: a
    // few random picks over three — it happened in a guest).
    for _ in 0..30 {
        let _ = ask_name(vip);
    }
    let (_, body) = http_get(rig.api, &format!("/backend/{}", rig.backends[0])).unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        json["vips"][RIG_VIP]["total_sucesses"].as_u64().unwrap() > 0,
        "{body}"
    );

    // Taken out: every connection now succeeds (within the backoff).
    let counts = tally(vip, 40);
    assert!(
        counts.keys().all(|k| k.starts_with("backend-")),
        "{counts:?}"
    );

    // After the backoff it is tried again, fails, and goes out again.
    let start = Instant::now();
    while agent.log().matches("taken out of selection").count() < 2
        && start.elapsed() < Duration::from_secs(20)
    {
        let _ = ask_name(vip);
        thread::sleep(Duration::from_millis(5));
    }
    let log = agent.log();
    assert!(log.contains("retried after backoff"), "{log}");
    assert!(log.matches("taken out of selection").count() >= 2, "{log}");
    agent.signal(libc::SIGTERM);
}

/// A listening socket that never answers: backlog 0, accept queue filled by
/// direct connects, so further SYNs are dropped by the kernel.
fn silent_backend() -> (std::os::fd::OwnedFd, SocketAddr, Vec<TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh fd; addresses are valid sockaddr_in.
    let (fd, addr) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        libc::getsockname(fd, (&mut got as *mut libc::sockaddr_in).cast(), &mut glen);
        let port = u16::from_be(got.sin_port);
        (
            std::os::fd::OwnedFd::from_raw_fd(fd),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    };
    // Fill the accept queue: once full, a connect gets no answer.
    let mut held = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => return (fd, addr, held),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

/// Passive health, timeout path: a backend that never answers is taken out
/// once connects stay unanswered past the threshold (400 ms), counted by the
/// agent from the kernel's in-flight connect map.
pub fn silent_backend_is_taken_out_by_the_timeout() {
    let rig = AgentRig::new(
        "silent",
        &[
            "--poll-ms",
            "100",
            "--health-max-failures",
            "3",
            "--health-backoff-secs",
            "600",
        ],
    );
    let (_listener, silent, _held) = silent_backend();
    rig.write_vips(&[rig.backends[0], silent]);
    let mut agent = rig.start_waiting_for(&silent.port().to_string());
    let vip: SocketAddr = RIG_VIP.parse().unwrap();

    // Clients wait up to 3 s: the agent's 400 ms threshold, not the client,
    // must be what counts these as failures.
    let start = Instant::now();
    while !agent.log().contains("taken out of selection")
        && start.elapsed() < Duration::from_secs(30)
    {
        let netns = rig.ns.handle().unwrap();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let netns = netns.try_clone().unwrap();
                thread::spawn(move || {
                    enter_netns(&netns).unwrap();
                    let _ = TcpStream::connect_timeout(&vip, Duration::from_secs(3));
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(700));
        drop(clients);
    }
    let log = agent.log();
    assert!(log.contains("taken out of selection"), "{log}");
    let (_, body) = http_get(rig.api, &format!("/backend/{silent}")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let view = &json["vips"][RIG_VIP];
    assert_eq!(view["is_healthy"], false, "{body}");
    assert!(view["total_failures"].as_u64().unwrap() >= 3, "{body}");
    let counts = tally(vip, 20);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["backend-1"],
        "{counts:?}"
    );
    agent.signal(libc::SIGTERM);
}

/// The task endpoints of a running agent: launch, read back, statistics,
/// node resources, kill; bad requests get a 4xx and change nothing.
pub fn task_api_launches_reports_and_kills() {
    let rig = AgentRig::new("tasks-api", &["--poll-ms", "100"]);
    let mut agent = rig.start();
    let token = api_token(&rig.state_dir());
    let post =
        |body: &str| agent_request(rig.api, "POST", "/v1/tasks", Some(&token), Some(body)).unwrap();
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).expect("JSON") };
    let (status, body) =
        post(r#"{"id":"api-1","cmd":"sleep 30","resources":{"cpus":0.2,"mem":32,"disk":8}}"#);
    assert_eq!(status, 201, "{body}\n{}", agent.log());
    let t = json(&body);
    assert_eq!(t["state"], "TASK_RUNNING", "{body}");
    assert!(
        t["sandbox"]
            .as_str()
            .unwrap()
            .ends_with("/work/tasks/api-1"),
        "{body}"
    );

    let (_, body) = http_get(rig.api, "/monitor/statistics").unwrap();
    let stats = json(&body);
    let s = &stats[0]["statistics"];
    assert_eq!(stats[0]["executor_id"], "api-1", "{body}");
    assert_eq!(s["mem_limit_bytes"], 32 * 1024 * 1024, "{body}");
    assert_eq!(s["cpus_limit"], 0.2, "{body}");
    assert!(s["processes"].as_u64().unwrap() >= 1, "{body}");
    let (_, body) = http_get(rig.api, "/state").unwrap();
    let state = json(&body);
    assert!(
        state["resources"]["cpus"].as_f64().unwrap() >= 1.0,
        "{body}"
    );
    assert_eq!(state["resources"]["ports"], "[31000-32000]", "{body}");

    for (bad, code) in [
        (
            r#"{"id":"n","cmd":"true","resources":{"cpus":-1,"mem":32}}"#,
            "invalid_task",
        ),
        (
            r#"{"id":"../x","cmd":"true","resources":{"cpus":1,"mem":32}}"#,
            "invalid_task",
        ),
        (
            r#"{"id":"u","cmd":"true","resources":{"cpus":1,"mem":32},"x":1}"#,
            "invalid_task",
        ),
        (
            r#"{"id":"c","cmd":"no-such-cmd-garrison","resources":{"cpus":1,"mem":32}}"#,
            "command_not_found",
        ),
        ("not json", "invalid_task"),
    ] {
        let (status, body) = post(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(json(&body)["error"], code, "{bad}: {body}");
    }
    let (status, _) = post(r#"{"id":"api-1","cmd":"true","resources":{"cpus":1,"mem":32}}"#);
    assert_eq!(status, 409);
    let (_, body) = http_get(rig.api, "/v1/tasks").unwrap();
    assert_eq!(json(&body).as_array().unwrap().len(), 1, "{body}");

    let (status, _) =
        agent_request(rig.api, "DELETE", "/v1/tasks/api-1", Some(&token), None).unwrap();
    assert_eq!(status, 202);
    let start = Instant::now();
    let mut state = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        let (_, body) = http_get(rig.api, "/v1/tasks/api-1").unwrap();
        state = json(&body)["state"].as_str().unwrap_or("").to_string();
        if state == "TASK_KILLED" {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state, "TASK_KILLED");
    let (status, _) = http_get(rig.api, "/v1/tasks/nope").unwrap();
    assert_eq!(status, 404);
    agent.signal(libc::SIGTERM);
}
