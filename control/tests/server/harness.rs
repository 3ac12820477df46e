//! A control run as production runs it, on ephemeral loopback ports: TLS
//! with the data directory's own CA, accounts (the `bootstrap` account made
//! at first start), DNS on UDP and TCP; and the clients that talk to it.
//! Every socket read has a timeout; temporary directories go when dropped.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use garrison_control::auth::Auth;
use garrison_control::client::ApiClient;
use garrison_control::cluster::ClusterConfig;
use garrison_control::server::listener::ApiListener;
use garrison_control::server::{Control, ServerConfig, run};
use garrison_control::store::Store;
use garrison_control::tls;

/// How long any socket read or process may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory under the system's temporary one, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("garrison-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running control; stopped (and its thread joined) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub dns: SocketAddr,
    /// The data dir's CA certificate (PEM), as agents and clients get it.
    pub ca: Vec<u8>,
    pub auth: Arc<Auth>,
    pub control: Arc<Control>,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let joined = t.join();
            if !std::thread::panicking() {
                joined.expect("the control's thread ended cleanly");
            }
        }
    }
}

/// Starts a control on `dir` (zone `mesos`, no DNS forwarder).
pub fn start(dir: &Path) -> Server {
    start_dns(dir, "mesos", None)
}

/// Starts a control on `dir` with the DNS zone and forwarder given.
pub fn start_dns(dir: &Path, domain: &str, dns_forward: Option<SocketAddr>) -> Server {
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = udp.local_addr().unwrap();
    let dns_tcp = std::net::TcpListener::bind(dns).unwrap();
    for s in [&http, &dns_tcp] {
        s.set_nonblocking(true).unwrap();
    }
    udp.set_nonblocking(true).unwrap();

    let names = tls::server_names(&[addr.ip()], &[]);
    let files = tls::ensure_own_ca(dir, &names).unwrap();
    let tls_config = tls::server_config(&files.server_cert, &files.server_key).unwrap();
    let ca = std::fs::read(&files.ca_cert).unwrap();

    let store = Arc::new(Store::open(dir).unwrap());
    let auth = Arc::new(Auth::open(dir, store.clone()).unwrap());
    let config = ServerConfig {
        advertise: addr,
        tls: true,
        domain: domain.into(),
        tick: Duration::from_millis(50),
        dns_forward,
    };
    let control = Control::new(store, auth.clone(), ClusterConfig::default(), config).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = control.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = tokio::net::TcpListener::from_std(http).unwrap();
            let http = ApiListener::new(http, Some(tls_config)).unwrap();
            let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
            let dns_tcp = tokio::net::TcpListener::from_std(dns_tcp).unwrap();
            run(serving, http, udp, dns_tcp, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    Server {
        addr,
        dns,
        ca,
        auth,
        control,
        data_dir: dir.to_path_buf(),
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

impl Server {
    /// A client over TLS (the data dir's CA), without a token.
    pub fn anonymous(&self) -> ApiClient {
        ApiClient::tls(self.addr, &self.ca).unwrap()
    }

    /// The bootstrap password the first start wrote.
    pub fn bootstrap_password(&self) -> String {
        let path = garrison_control::auth::bootstrap_path(&self.data_dir);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["uid"], garrison_control::auth::BOOTSTRAP_UID);
        v["password"].as_str().unwrap().to_string()
    }

    /// A client logged in with the bootstrap credentials.
    pub fn client(&self) -> ApiClient {
        let anonymous = self.anonymous();
        let token = anonymous
            .login(
                garrison_control::auth::BOOTSTRAP_UID,
                &self.bootstrap_password(),
            )
            .unwrap();
        anonymous.with_token(token)
    }

    /// A TLS connection to the API verified against the CA, reads bounded.
    pub fn tls_stream(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
        let conn =
            rustls::ClientConnection::new(tls::client_config(&self.ca).unwrap(), name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }

    /// `method path` with `headers` and no body: the status and headers
    /// (lowercase names) only, so endless answers (`/v2/events`) end too.
    pub fn head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>) {
        let mut s = self.tls_stream();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        s.flush().unwrap();
        let head = read_head(&mut s);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers)
    }
}

/// Reads up to the blank line ending an HTTP head (at most 64 KiB).
fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading an HTTP head: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The value of header `name` (lowercase) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The output of a finished process.
pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `garrison-control` with `args`, killed (and the test
/// failed) if it runs longer than [`IO_TIMEOUT`]. Its output goes through
/// files in `scratch`, so a full pipe can never block it.
pub fn run_cli(scratch: &Path, args: &[&str]) -> Finished {
    std::fs::create_dir_all(scratch).unwrap();
    let out_path = scratch.join("cli.stdout");
    let err_path = scratch.join("cli.stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_garrison-control"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("garrison-control {args:?} still running after {IO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding, as JWTs carry their parts.
pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The bytes of unpadded base64url text.
pub fn b64url_decode(text: &str) -> Vec<u8> {
    let (mut bits, mut held, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let v = B64URL
            .iter()
            .position(|&b| b == c)
            .unwrap_or_else(|| panic!("{c:?} is not base64url in {text:?}"));
        bits = (bits << 6) | v as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    out
}

/// The claims of a JWT, read without verifying it.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&b64url_decode(payload)).unwrap()
}

/// `token` with one character of its payload changed (signature untouched).
pub fn tampered(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    payload[5] = if payload[5] == 'A' { 'B' } else { 'A' };
    parts[1] = payload.into_iter().collect();
    parts.join(".")
}

#[test]
fn base64url_round_trips() {
    for text in ["", "a", "ab", "abc", "abcd", "{\"uid\":\"x\"}\u{ff}"] {
        assert_eq!(
            b64url_decode(&b64url_encode(text.as_bytes())),
            text.as_bytes()
        );
    }
    assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
}
