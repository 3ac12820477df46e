//! Scenarios of the NFQUEUE data path (`dataplane = "nfqueue"`): the agent
//! runs in the test's namespace, three backends each in their own namespace
//! joined by veth ([`PeerNs`]); VIPs are routed out of the first veth, so a SYN
//! the agent did not NAT reaches (at most) the first backend namespace.
use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use crate::{
    NetNsGuard, PeerNs, ask_name, cmd_output, http_get, require_root, run_cmd,
    scenarios::AgentProcess, serve_tcp_name, tally, unique,
};

const VIP: &str = "11.1.2.3:80";
/// A VIP listed without backends.
const EMPTY_VIP: &str = "11.1.2.4:80";
/// An IPv6 VIP over the same backends (their IPv6 addresses).
const VIP6: &str = "[fd00:11::3]:80";
/// The DC/OS raw-table rule (IPv4), as `iptables -C` wants it.
const RAW_RULE: &[&str] = &[
    "-p",
    "tcp",
    "-m",
    "set",
    "--match-set",
    "minuteman",
    "dst,dst",
    "-m",
    "tcp",
    "--tcp-flags",
    "FIN,SYN,RST,ACK",
    "SYN",
    "-j",
    "NFQUEUE",
    "--queue-balance",
    "50:58",
    "--queue-bypass",
];

struct NfqRig {
    dir: PathBuf,
    api: SocketAddr,
    args: Vec<String>,
    backends: Vec<SocketAddr>,
    // Drop order: peers (and their veths), then leave the namespace.
    peers: Vec<PeerNs>,
    _ns: NetNsGuard,
}

impl NfqRig {
    fn new(name: &str, extra: &[&str]) -> Self {
        require_root();
        let ns = NetNsGuard::enter_new().expect("netns");
        let peers: Vec<PeerNs> = (0..3)
            .map(|i| PeerNs::new(i).expect("peer namespace"))
            .collect();
        // VIPs leave through the first veth: only namespaces we made.
        run_cmd("ip", &["route", "add", "11.0.0.0/8", "dev", "gv0"]).expect("VIP route");
        run_cmd("ip", &["-6", "route", "add", "fd00:11::/64", "dev", "gv0"]).expect("VIP6 route");
        let serve = |addrs: &dyn Fn(&PeerNs) -> SocketAddr| {
            peers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let l = p.listen_tcp(addrs(p)).expect("backend listener");
                    serve_tcp_name(l, &format!("backend-{i}"))
                })
                .collect::<Vec<_>>()
        };
        let backends = serve(&|p| SocketAddr::from((p.remote, 8080)));
        let backends6 = serve(&|p| SocketAddr::from((p.remote6, 8080)));
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let list = |b: &[SocketAddr]| {
            b.iter()
                .map(|a| format!(r#"{{"ip":"{}","port":{}}}"#, a.ip(), a.port()))
                .collect::<Vec<_>>()
                .join(",")
        };
        let vips = format!(
            r#"[{{"vip":"{VIP}","protocol":"tcp","backend":[{}]}},
               {{"vip":"{VIP6}","protocol":"tcp","backend":[{}]}},
               {{"vip":"{EMPTY_VIP}","protocol":"tcp","backend":[]}}]"#,
            list(&backends),
            list(&backends6)
        );
        std::fs::write(dir.join("vips.json"), vips).unwrap();
        let api = crate::reserved_addr();
        let mut args: Vec<String> = vec![
            "--vips".into(),
            dir.join("vips.json").display().to_string(),
            "--poll-ms".into(),
            "100".into(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--work-dir".into(),
            dir.join("work").display().to_string(),
            "--api".into(),
            api.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        NfqRig {
            dir,
            api,
            args,
            backends,
            peers,
            _ns: ns,
        }
    }

    /// Starts the agent; `--dataplane nfqueue` unless `extra` says otherwise.
    fn start(&self, extra: &[&str]) -> AgentProcess {
        let mut args = self.args.clone();
        if !extra.contains(&"--dataplane") {
            args.extend(["--dataplane".to_string(), "nfqueue".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        AgentProcess::start(&args, self.api, self.dir.join("agent.log"), VIP)
    }

    fn backend_view(&self, backend: SocketAddr) -> serde_json::Value {
        let (_, body) = http_get(self.api, &format!("/backend/{backend}")).expect("API");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json["vips"][VIP].clone()
    }
}

impl Drop for NfqRig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

/// Asserts a connect to `addr` is refused (not timed out).
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{addr}: {e}"),
        Ok(s) => panic!("{addr} accepted a connection (peer {:?})", s.peer_addr()),
    }
}

/// Connects from the fixed local port `port` (SO_REUSEADDR, so the port is
/// reusable right after a close) and reads the server's name.
fn ask_name_from(port: u16, addr: SocketAddr) -> std::io::Result<String> {
    use std::{io::Read, os::fd::FromRawFd};
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: socket/setsockopt/bind/connect on a fresh fd with valid
    // sockaddr_in values; the fd is owned by the TcpStream right after.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        if libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut name = String::new();
        s.read_to_string(&mut name)?;
        name
    };
    Ok(stream.trim().to_string())
}

fn iptables_check(table: &str, chain: &str, rule: &[&str]) -> bool {
    let mut args = vec!["-w", "5", "-t", table, "-C", chain];
    args.extend_from_slice(rule);
    run_cmd("iptables", &args).is_ok()
}

/// TCP through a VIP over three backends in three namespaces; rules and sets
/// present while running, gone after a clean stop; foreign rules untouched;
/// a VIP without backends refused at once.
pub fn nfqueue_balances_across_namespaces_and_cleans_up() {
    let rig = NfqRig::new("nfq-lb", &[]);
    let foreign_raw: &[&str] = &["-p", "udp", "--dport", "9", "-j", "ACCEPT"];
    let foreign_filter: &[&str] = &["-p", "tcp", "--dport", "9", "-j", "ACCEPT"];
    let mut raw = vec!["-w", "5", "-t", "raw", "-A", "OUTPUT"];
    raw.extend_from_slice(foreign_raw);
    run_cmd("iptables", &raw).unwrap();
    let mut filter = vec!["-w", "5", "-A", "OUTPUT"];
    filter.extend_from_slice(foreign_filter);
    run_cmd("iptables", &filter).unwrap();

    // `auto` falls back to NFQUEUE when the eBPF programs cannot be attached
    // (here: the cgroup is a plain file, the pin directory not a bpffs).
    let not_cgroup = rig.dir.join("not-a-cgroup");
    std::fs::write(&not_cgroup, "").unwrap();
    let not_bpffs = rig.dir.join("not-bpffs");
    let mut agent = rig.start(&[
        "--dataplane",
        "auto",
        "--cgroup",
        not_cgroup.to_str().unwrap(),
        "--bpffs",
        not_bpffs.to_str().unwrap(),
    ]);
    let log = agent.log();
    assert!(
        log.contains("falling back to NFQUEUE") && log.contains("dataplane=\"nfqueue\""),
        "{log}"
    );
    assert!(iptables_check("raw", "OUTPUT", RAW_RULE), "raw OUTPUT rule");
    assert!(
        iptables_check("raw", "PREROUTING", RAW_RULE),
        "raw PREROUTING rule"
    );
    let set = cmd_output("ipset", &["list", "minuteman"]).unwrap();
    assert!(
        set.contains("11.1.2.3,tcp:80") && set.contains("11.1.2.4,tcp:80"),
        "{set}"
    );

    let counts = tally(vip(), 60);
    assert_eq!(counts.len(), 3, "every backend chosen: {counts:?}");
    assert!(counts.values().all(|&n| n >= 5), "{counts:?}");
    let s = TcpStream::connect_timeout(&vip(), Duration::from_secs(2)).unwrap();
    assert_eq!(s.peer_addr().unwrap(), vip(), "the client sees the VIP");
    drop(s);
    // IPv6: the second set and the ip6tables rules, NAT over IPv6.
    let set6 = cmd_output("ipset", &["list", "minuteman6"]).unwrap();
    assert!(set6.contains("fd00:11::3,tcp:80"), "{set6}");
    let vip6: SocketAddr = VIP6.parse().unwrap();
    let counts6 = tally(vip6, 30);
    assert_eq!(counts6.len(), 3, "every IPv6 backend chosen: {counts6:?}");
    let s = TcpStream::connect_timeout(&vip6, Duration::from_secs(2)).unwrap();
    assert_eq!(s.peer_addr().unwrap(), vip6, "the client sees the IPv6 VIP");
    drop(s);
    assert_refused(EMPTY_VIP.parse().unwrap());
    // The same client port again and again: each connection's conntrack
    // entry outlives it (TIME_WAIT), and must not refuse the next one.
    let port = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for i in 0..10 {
        let name = ask_name_from(port, vip())
            .unwrap_or_else(|e| panic!("connection {i} from port {port}: {e}"));
        assert!(name.starts_with("backend-"), "{name}");
    }
    let view = rig.backend_view(rig.backends[0]);
    assert!(view["total_sucesses"].as_u64().unwrap() >= 5, "{view}");
    assert_eq!(view["is_healthy"], true, "{view}");

    agent.signal(libc::SIGTERM);
    let log = agent.log();
    assert!(log.contains("rules and sets removed"), "{log}");
    for table in ["raw", "filter", "nat"] {
        let rules = cmd_output("iptables", &["-w", "5", "-t", table, "-S"]).unwrap();
        assert!(
            !rules.contains("minuteman") && !rules.contains("garrison"),
            "{table}: {rules}"
        );
    }
    let sets = cmd_output("ipset", &["list", "-n"]).unwrap();
    assert!(!sets.contains("minuteman"), "{sets}");
    let rules6 = cmd_output("ip6tables", &["-w", "5", "-t", "raw", "-S"]).unwrap();
    assert!(!rules6.contains("minuteman6"), "{rules6}");
    assert!(
        iptables_check("raw", "OUTPUT", foreign_raw),
        "foreign raw rule kept"
    );
    assert!(
        iptables_check("filter", "OUTPUT", foreign_filter),
        "foreign filter rule kept"
    );
}

/// Passive health on the NFQUEUE path: a backend whose traffic is dropped is
/// taken out after the threshold (from conntrack), no longer chosen, and
/// chosen again after the backoff once it answers.
pub fn nfqueue_silent_backend_is_taken_out_and_retried() {
    let rig = NfqRig::new(
        "nfq-health",
        &["--health-max-failures", "3", "--health-backoff-secs", "2"],
    );
    let mut agent = rig.start(&[]);
    let drop_rule: &[&str] = &["-p", "tcp", "--dport", "8080", "-j", "DROP"];
    let mut insert = vec!["-w", "5", "-I", "INPUT"];
    insert.extend_from_slice(drop_rule);
    rig.peers[1].run("iptables", &insert).unwrap();

    // Bounded: each attempt waits at most 2 s.
    let start = Instant::now();
    while !agent.log().contains("taken out of selection")
        && start.elapsed() < Duration::from_secs(40)
    {
        let _ = ask_name(vip());
    }
    let silent = rig.backends[1];
    let view = rig.backend_view(silent);
    assert_eq!(view["is_healthy"], false, "{view}\n{}", agent.log());
    assert_eq!(view["weight"], 0, "{view}");
    let counts = tally(vip(), 30);
    assert!(!counts.contains_key("backend-1"), "{counts:?}");

    let mut delete = vec!["-w", "5", "-D", "INPUT"];
    delete.extend_from_slice(drop_rule);
    rig.peers[1].run("iptables", &delete).unwrap();
    let start = Instant::now();
    let mut chosen = false;
    while !chosen && start.elapsed() < Duration::from_secs(20) {
        chosen = ask_name(vip()).is_ok_and(|n| n == "backend-1");
        thread::sleep(Duration::from_millis(20));
    }
    let log = agent.log();
    assert!(
        chosen,
        "backend-1 never chosen again after the backoff\n{log}"
    );
    assert!(log.contains("retried after backoff"), "{log}");
    assert_eq!(rig.backend_view(silent)["is_healthy"], true);
    agent.signal(libc::SIGTERM);
}

/// The agent is SIGKILLed: with fail-open off, new connections to the VIP are
/// refused at once (not hung); with fail-open on, they continue, unbalanced,
/// to the VIP address (here owned by the first backend namespace).
pub fn nfqueue_agent_killed_fail_closed_refuses_fail_open_continues() {
    let rig = NfqRig::new("nfq-failopen", &[]);
    let p0 = &rig.peers[0];
    p0.run("ip", &["addr", "add", "11.1.2.3/32", "dev", "lo"])
        .unwrap();
    serve_tcp_name(p0.listen_tcp(vip()).unwrap(), "vip-address");

    let mut agent = rig.start(&[]);
    assert!(ask_name(vip()).unwrap().starts_with("backend-"));
    agent.signal(libc::SIGKILL);
    assert_refused(vip());

    let mut agent = rig.start(&["--nfqueue-fail-open"]);
    assert!(ask_name(vip()).unwrap().starts_with("backend-"));
    assert_refused(EMPTY_VIP.parse().unwrap());
    agent.signal(libc::SIGKILL);
    assert_eq!(ask_name(vip()).unwrap(), "vip-address");
}
