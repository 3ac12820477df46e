//! Helpers for Garrison's privileged tests, shared by the host tests (tests/tests)
//! and the guest suite (vm-tests).
//!
//! - [`require_root`]: a privileged test that cannot run fails loudly.
//! - [`NetNsGuard`]: puts the current thread in a fresh network namespace with
//!   loopback up, and back on drop. `!Send`: never hold it across an `.await`.
//! - [`TestCgroup`]: a child cgroup v2 holding this process while it lives.
//! - [`TestPins`]: a private pin directory on a bpffs, removed on drop.
//! - [`serve_tcp_name`]: a tiny TCP server answering with its name.
//! - [`PeerNs`]: a named namespace joined to the caller's by a veth pair.
//! - [`scenarios`]: the test bodies, shared by host tests and the guest runner;
//!   [`nfqueue`]: those of the NFQUEUE data path; [`agent_api`]: the agent
//!   API's access rules and VIP sanity, with [`agent_api::agent_request`]
//!   for callers that mutate the agent API; [`privilege`]: what a task
//!   keeps of the agent's privileges (nothing).
//! - [`python`]: the published Python Marathon client against the control
//!   (host only: the guests have no Python).
pub mod agent_api;
pub mod control;
pub mod isolation;
pub mod nfqueue;
pub mod privilege;
pub mod python;
pub mod scenarios;

use garrison_agent::sys;
use std::{
    fs,
    io::{self, Read, Write},
    marker::PhantomData,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

static SEQ: AtomicU32 = AtomicU32::new(0);
static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20_000);

/// A port for a server a test starts (an agent's API, a control, a stub),
/// unique in this process and below the kernel's ephemeral range
/// (32768–60999), so inside the test's own namespace nothing else takes it.
/// (Binding port 0 and releasing it races: the next `bind(0)` may get the
/// same port — it did, in CI.)
pub fn reserved_port() -> u16 {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    assert!(port < 30_000, "reserved_port: ran out of test ports");
    port
}

/// `127.0.0.1:<reserved_port()>`.
pub fn reserved_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], reserved_port()))
}

/// A name unique to this process and call, for cgroups and pin directories.
pub fn unique(prefix: &str) -> String {
    format!(
        "garrison-test-{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails the test unless running as root: privileged tests never pass silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this privileged test needs root (run it through `cargo xtask test`)"
    );
}

fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// The current thread in a fresh network namespace (loopback up) until drop.
pub struct NetNsGuard {
    original: OwnedFd,
    netns: OwnedFd,
    _not_send: PhantomData<*const ()>,
}

fn open_ns(path: &str) -> io::Result<OwnedFd> {
    Ok(fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?
        .into())
}

impl NetNsGuard {
    /// Unshares the network namespace of the calling thread only.
    pub fn enter_new() -> io::Result<Self> {
        let original = open_ns("/proc/thread-self/ns/net")?;
        // SAFETY: unshare affects only the calling thread's network namespace.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            "unshare(CLONE_NEWNET)",
        )?;
        let netns = open_ns("/proc/thread-self/ns/net")?;
        let guard = NetNsGuard {
            original,
            netns,
            _not_send: PhantomData,
        };
        set_link_up("lo")?;
        Ok(guard)
    }

    /// A handle on the namespace, to enter it from another thread.
    pub fn handle(&self) -> io::Result<OwnedFd> {
        self.netns.try_clone()
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        // SAFETY: setns with a namespace fd we opened.
        let ret = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if ret != 0 {
            panic!(
                "setns back to the original network namespace failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Enters the namespace `ns` on the calling thread (for server threads).
pub fn enter_netns(ns: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns with a valid namespace fd.
    check(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
        "setns",
    )
}

/// Sets an interface up with SIOCSIFFLAGS in the current namespace.
pub fn set_link_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq with a NUL-terminated name.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(fd, "socket")?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        let r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if r < 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(io::Error::new(
                e.kind(),
                format!("SIOCGIFFLAGS {name}: {e}"),
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(io::Error::new(
                e.kind(),
                format!("SIOCSIFFLAGS {name}: {e}"),
            ));
        }
    }
    Ok(())
}

fn mount(fstype: &str, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let target = c(dir.to_str().expect("utf-8 path"));
    // SAFETY: mount with valid C strings.
    check(
        unsafe {
            libc::mount(
                c(fstype).as_ptr(),
                target.as_ptr(),
                c(fstype).as_ptr(),
                0,
                std::ptr::null(),
            )
        },
        &format!("mount -t {fstype} {}", dir.display()),
    )
}

/// The cgroup v2 mount point, mounting one under /run if the host has none
/// (`ip netns exec` remounts /sys, so a test never relies on /sys/fs/cgroup).
pub fn cgroup2_root() -> io::Result<PathBuf> {
    if let Some(dir) = sys::find_mount("cgroup2") {
        return Ok(dir);
    }
    let dir = PathBuf::from("/run/garrison-test-cgroup2");
    mount("cgroup2", &dir)?;
    Ok(dir)
}

/// A bpffs directory, mounting one under /run if /sys/fs/bpf is not bpffs.
pub fn bpffs_root() -> io::Result<PathBuf> {
    if sys::is_mount_of(Path::new("/sys/fs/bpf"), "bpf") {
        return Ok(PathBuf::from("/sys/fs/bpf"));
    }
    if let Some(dir) = sys::find_mount("bpf") {
        return Ok(dir);
    }
    let dir = PathBuf::from("/run/garrison-test-bpffs");
    mount("bpf", &dir)?;
    Ok(dir)
}

fn own_cgroup(root: &Path) -> io::Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 line in /proc/self/cgroup"))?;
    Ok(root.join(rel.trim_start_matches('/')))
}

/// A child cgroup v2 that holds this whole process until drop (cgroup v2
/// membership is per process: run such tests with `--test-threads=1`).
pub struct TestCgroup {
    path: PathBuf,
    original: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> io::Result<Self> {
        let root = cgroup2_root()?;
        let original = own_cgroup(&root)?;
        let path = root.join(unique(name));
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        let cg = TestCgroup { path, original };
        cg.join()?;
        Ok(cg)
    }

    /// Moves this process into the cgroup.
    pub fn join(&self) -> io::Result<()> {
        fs::write(
            self.path.join("cgroup.procs"),
            std::process::id().to_string(),
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::write(
            self.original.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = fs::remove_dir(&self.path);
    }
}

/// A private pin directory; its pins are removed on drop.
pub struct TestPins {
    path: PathBuf,
}

impl TestPins {
    pub fn new(name: &str) -> io::Result<Self> {
        Ok(TestPins {
            path: bpffs_root()?.join(unique(name)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        let _ = garrison_agent::dataplane::ebpf::remove_pins(&self.path);
    }
}

/// Serves TCP on `listener` (already bound in the namespace wanted): each
/// connection gets `name` followed by a newline. Runs until the process ends.
pub fn serve_tcp_name(listener: TcpListener, name: &str) -> SocketAddr {
    let addr = listener.local_addr().expect("bound");
    let name = format!("{name}\n");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.write_all(name.as_bytes());
        }
    });
    addr
}

/// Connects with a deadline and reads one line (the server's name).
pub fn ask_name(addr: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf.trim().to_string())
}

/// Serves UDP on `socket`: every datagram is answered with `name`.
pub fn serve_udp_name(socket: std::net::UdpSocket, name: &str) -> SocketAddr {
    let addr = socket.local_addr().expect("bound");
    let name = name.to_string();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let Ok((_, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let _ = socket.send_to(name.as_bytes(), from);
        }
    });
    addr
}

/// Asks `addr` for its name `n` times (one connection each) and counts answers.
pub fn tally(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        let name =
            ask_name(addr).unwrap_or_else(|e| panic!("connection {i} to {addr} failed: {e}"));
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// A minimal HTTP/1.1 GET returning (status, body), for the agent API.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    http_request(addr, "GET", path, None)
}

/// A minimal HTTP/1.1 request with an optional JSON body; (status, body).
pub use garrison_control::client::http_request;

/// Everything a data-path scenario needs, torn down in the right order on
/// drop: data plane, namespace, pins, cgroup. Not `Send` (holds the namespace).
pub struct LbFixture {
    pub dp: garrison_agent::dataplane::EbpfDataplane,
    pub ns: NetNsGuard,
    pub pins: TestPins,
    pub cg: TestCgroup,
}

impl LbFixture {
    pub fn new(name: &str) -> Self {
        require_root();
        let cg = TestCgroup::new(name).expect("test cgroup");
        let pins = TestPins::new(name).expect("pin dir");
        let ns = NetNsGuard::enter_new().expect("netns");
        let dp =
            garrison_agent::dataplane::EbpfDataplane::open(garrison_agent::dataplane::EbpfConfig {
                cgroup: cg.path().to_path_buf(),
                pin_dir: pins.path().to_path_buf(),
            })
            .expect("load and attach the eBPF data plane");
        LbFixture { dp, ns, pins, cg }
    }
}

/// A Mesos agent `/state` document (the shape `garrison-agent` polls): the
/// agent at `agent_ip`, framework `marathon`, one task per entry
/// `(task id, state, discovery port number, VIP label value)`.
pub fn mesos_agent_state(agent_ip: &str, tasks: &[(&str, &str, u16, &str)]) -> String {
    let tasks: Vec<String> = tasks
        .iter()
        .map(|(id, state, port, vip)| {
            format!(
                r#"{{"id":"{id}","name":"{id}","framework_id":"fw-1","slave_id":"agent-1","state":"{state}",
"resources":{{"ports":"[{port}-{port}]"}},
"statuses":[{{"state":"{state}","timestamp":1700000000.0}}],
"discovery":{{"name":"{id}","visibility":"FRAMEWORK","ports":{{"ports":[{{"number":{port},"name":"http","protocol":"tcp",
"labels":{{"labels":[{{"key":"VIP_0","value":"{vip}"}}]}}}}]}}}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"id":"agent-1","pid":"slave(1)@{agent_ip}:5051","hostname":"{agent_ip}",
"frameworks":[{{"id":"fw-1","name":"marathon","executors":[{{"id":"ex-1","tasks":[{}]}}]}}]}}"#,
        tasks.join(",")
    )
}

/// A tiny HTTP server answering every request with the current `(status, body)`.
pub struct StubHttp {
    pub addr: SocketAddr,
    content: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
}

impl StubHttp {
    /// Serves on `listener` (bound in the namespace wanted).
    pub fn serve(listener: TcpListener, status: u16, body: String) -> Self {
        let addr = listener.local_addr().expect("bound");
        let content = std::sync::Arc::new(std::sync::Mutex::new((status, body)));
        let shared = content.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = shared.lock().expect("stub lock").clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        StubHttp { addr, content }
    }

    pub fn set(&self, status: u16, body: String) {
        *self.content.lock().expect("stub lock") = (status, body);
    }
}

/// Runs `program args` from a thread inside `ns` (the child inherits the
/// thread's network namespace); fails with the command and its stderr.
pub fn run_in_netns(ns: &OwnedFd, program: &str, args: &[&str]) -> io::Result<()> {
    let ns = ns.try_clone()?;
    let (program, args): (String, Vec<String>) =
        (program.into(), args.iter().map(|s| s.to_string()).collect());
    thread::spawn(move || {
        enter_netns(&ns)?;
        run_cmd(
            &program,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .join()
    .expect("command thread")
}

/// Runs `program args` in the calling thread's namespace; fails with the
/// command and its stderr.
pub fn run_cmd(program: &str, args: &[&str]) -> io::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Output of `program args` in the calling thread's namespace.
pub fn cmd_output(program: &str, args: &[&str]) -> io::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace joined to the calling thread's namespace by a
/// veth pair: `10.77.<n>.1/24` and `fd77:<n>::1/64` on the caller's side
/// (`gv<n>`), `10.77.<n>.2/24` and `fd77:<n>::2/64` inside (`eth0`). Deleted (with its veth) on drop. Traffic stays between the
/// two namespaces: neither has a route anywhere else.
pub struct PeerNs {
    pub name: String,
    pub fd: OwnedFd,
    /// The caller's address on the link.
    pub local: std::net::Ipv4Addr,
    /// The peer's address.
    pub remote: std::net::Ipv4Addr,
    pub local6: std::net::Ipv6Addr,
    pub remote6: std::net::Ipv6Addr,
}

impl PeerNs {
    pub fn new(n: u8) -> io::Result<Self> {
        let name = unique(&format!("peer{n}"));
        run_cmd("ip", &["netns", "add", &name])?;
        let fd = fs::File::open(format!("/run/netns/{name}"))?.into();
        let peer = PeerNs {
            name,
            fd,
            local: std::net::Ipv4Addr::new(10, 77, n, 1),
            remote: std::net::Ipv4Addr::new(10, 77, n, 2),
            local6: std::net::Ipv6Addr::new(0xfd77, u16::from(n), 0, 0, 0, 0, 0, 1),
            remote6: std::net::Ipv6Addr::new(0xfd77, u16::from(n), 0, 0, 0, 0, 0, 2),
        };
        let dev = format!("gv{n}");
        let ns = peer.name.as_str();
        let (l6, r6) = (
            format!("{}/64", peer.local6),
            format!("{}/64", peer.remote6),
        );
        let via6 = peer.local6.to_string();
        let steps: [&[&str]; 10] = [
            &[
                "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
            &["addr", "add", &format!("{}/24", peer.local), "dev", &dev],
            &["link", "set", &dev, "up"],
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", peer.remote),
                "dev",
                "eth0",
            ],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &[
                "-n",
                ns,
                "route",
                "add",
                "10.77.0.0/16",
                "via",
                &peer.local.to_string(),
            ],
            // No duplicate address detection: usable at once.
            &["-6", "addr", "add", &l6, "dev", &dev, "nodad"],
            &["-n", ns, "-6", "addr", "add", &r6, "dev", "eth0", "nodad"],
            &["-n", ns, "-6", "route", "add", "fd77::/16", "via", &via6],
        ];
        for args in steps {
            run_cmd("ip", args)?;
        }
        Ok(peer)
    }

    /// A TCP listener bound to `addr` inside the namespace.
    pub fn listen_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let ns = self.fd.try_clone()?;
        thread::spawn(move || {
            enter_netns(&ns)?;
            TcpListener::bind(addr)
        })
        .join()
        .expect("listener thread")
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        run_in_netns(&self.fd, program, args)
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}
