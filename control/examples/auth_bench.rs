//! The cost of authentication and TLS at the control's API, in-process
//! (release build), run by `cargo xtask bench control` after its other parts
//! and alone by `cargo xtask bench control-auth`:
//! `auth_bench [--rounds N] [--batch-ms MS] [--slices N]`. Each round's figures go to
//! stderr, the markdown section to stdout.
//!
//! 1. `Auth::authenticate`: uncached (a fresh token each call: RS256
//!    verification, account lookup, cache insert) and cached (one token).
//! 2. `GET /v2/apps` over one kept-alive HTTP/1.1 connection (hyper's client),
//!    100 apps created through the API, 3 running tasks each:
//!    - `plain`: the Marathon routes with no token check
//!      ([`marathon_api::routes_with_access`] with `Access::Public`, the
//!      benchmark hook), plain HTTP: the API as it was before authentication;
//!    - `plain + token`: the production router (`Control::routes`), plain
//!      HTTP (`--insecure` on loopback), one token (cached after its first use);
//!    - `TLS + token`: the production router over TLS, the default setting;
//!    - `TLS + fresh token`: a new token each request (each one verified).
//! 3. A connection per request (a client without keep-alive): TCP + one GET,
//!    TLS with a full handshake (client resumption off) + one GET, TLS
//!    resumed (the client's session cache) + one GET.
//! 4. The agents' stream as a reconnecting agent opens it (its credential,
//!    `Authorization: agent <id>:<secret>`): connect, upgrade, `register`,
//!    until `registered` arrives; ws vs wss.
//!
//! Variants are interleaved within each round: a round's batch of each
//! variant is cut into slices (one connection each, in parts 3 and 4) run in
//! turn with the other variants', the order rotated slice by slice, so a
//! burst of load from elsewhere hits them alike. A round's figure is the
//! variant's time over its operations (parts 1 and 2) or the median of its
//! connections (3 and 4); a figure is the median over rounds with the
//! min–max; a ratio is taken within each round, then its median. The data
//! directory is on /dev/shm when there is one, so the store's fsyncs (agent
//! registrations) do not add the disk's noise to the stream figures.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use garrison_control::auth::keys::{TokenKind, unix_now};
use garrison_control::auth::{Auth, BOOTSTRAP_UID};
use garrison_control::client::ApiClient;
use garrison_control::cluster::ClusterConfig;
use garrison_control::server::listener::ApiListener;
use garrison_control::server::routes::Access;
use garrison_control::server::{Control, ServerConfig, marathon_api};
use garrison_control::store::Store;
use garrison_control::tls;
use garrison_proto::{AgentResources, Registration, TaskState, TaskStatus};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Apps created through the API, and instances of each.
const APPS: usize = 100;
const INSTANCES: usize = 3;
/// Simulated agents the tasks are placed on (no process behind them).
const SIM_AGENTS: usize = 10;
/// New connections per variant per round (parts 3 and 4).
const CONNECTIONS: usize = 30;
/// Fresh tokens per round at most (minting one costs an RSA signature; the
/// verified-token cache holds 10,000).
const MAX_FRESH: usize = 400;
/// Any single network step of the benchmark.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    rounds: usize,
    batch: Duration,
    /// A round's batch of each variant is cut into this many slices, run in
    /// turn with the other variants' (so a burst of load hits them alike).
    slices: usize,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 7,
        batch: Duration::from_millis(500),
        slices: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: expected a number, got {value:?}"));
        match flag.as_str() {
            "--rounds" => a.rounds = (n as usize).max(1),
            "--batch-ms" => a.batch = Duration::from_millis(n.max(10)),
            "--slices" => a.slices = (n as usize).max(1),
            _ => panic!("usage: auth_bench [--rounds N] [--batch-ms MS] [--slices N]"),
        }
    }
    a
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("garrison-auth-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three listeners, served by their own runtime (two workers, as the
/// control runs) on their own thread.
struct Servers {
    /// The Marathon routes without the guard, plain HTTP.
    unguarded: SocketAddr,
    /// The production router, plain HTTP.
    plain: SocketAddr,
    /// The production router, TLS.
    tls: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.set_nonblocking(true).expect("non-blocking");
    l
}

fn serve(control: &Arc<Control>, tls_config: Arc<rustls::ServerConfig>) -> Servers {
    let (unguarded, plain, tls) = (bind(), bind(), bind());
    let addrs = [&unguarded, &plain, &tls].map(|l| l.local_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let control = control.clone();
    let thread = std::thread::Builder::new().name(SERVER_THREAD.into());
    let thread = thread.spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREAD)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let routers = [
                marathon_api::routes_with_access(&control, Access::Public).into_router(),
                control.routes().into_router(),
                control.routes().into_router(),
            ];
            let listeners = [(unguarded, None), (plain, None), (tls, Some(tls_config))];
            let mut served = Vec::new();
            for ((listener, tls), router) in listeners.into_iter().zip(routers) {
                let tcp = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let listener = ApiListener::new(tcp, tls).expect("API listener");
                let mut stopped = stopped.clone();
                served.push(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        })
                        .await
                }));
            }
            let mut stopped = stopped.clone();
            let _ = stopped.wait_for(|s| *s).await;
            for s in served {
                let _ = tokio::time::timeout(IO_TIMEOUT, s).await;
            }
        });
    });
    Servers {
        unguarded: addrs[0],
        plain: addrs[1],
        tls: addrs[2],
        stop: Some(stop),
        thread: Some(thread.expect("the server thread")),
    }
}

/// The name of every thread serving the API (its runtime's included).
const SERVER_THREAD: &str = "ctl-server";

/// CPU time the server's threads have used, ns: the sum of the first field
/// of `/proc/self/task/<tid>/schedstat` (time on a CPU) over the threads
/// named [`SERVER_THREAD`]. What the control spends, whatever the client
/// and the rest of the machine do; 0 where the kernel does not say.
fn server_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == SERVER_THREAD)
        })
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// How long the server's threads are left to go idle before their CPU time
/// is read: a running thread's count is only brought up to date when it is
/// switched out (or at the next tick), so reading it while the thread still
/// runs would miss its last stretch.
const SETTLE: Duration = Duration::from_millis(2);

/// Measures `f`: its wall-clock time, and the server's CPU time from its
/// start until the server is idle again ([`SETTLE`] after it, not timed).
async fn measured<T>(f: impl std::future::Future<Output = T>) -> (T, Duration, Duration) {
    let cpu = server_cpu_ns();
    let t = Instant::now();
    let out = f.await;
    let wall = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let cpu = Duration::from_nanos(server_cpu_ns().saturating_sub(cpu));
    (out, wall, cpu)
}

/// Mints session tokens of the bootstrap account, each one different (its
/// expiry is one second later than the previous one's).
struct Minter {
    auth: Arc<Auth>,
    serial: u64,
}

impl Minter {
    fn next(&mut self) -> String {
        self.serial += 1;
        let exp = unix_now() + 3600 + self.serial;
        self.auth
            .key()
            .issue(BOOTSTRAP_UID, TokenKind::Session, exp)
    }

    fn many(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next()).collect()
    }
}

// ---- statistics -----------------------------------------------------------

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// `median (min–max)` with `decimals`.
fn spread(v: &[f64], decimals: usize) -> String {
    let (lo, hi) = min_max(v);
    format!("{:.d$} ({:.d$}–{:.d$})", median(v), lo, hi, d = decimals)
}

/// Round by round `a[i] / b[i]`.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// The order of `n` variants in round `round`: rotated by one each round.
fn order(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// Time spent on a variant's operations in one round: wall-clock, and the
/// server's CPU time.
#[derive(Clone, Copy, Default)]
struct Timed {
    spent: Duration,
    cpu: Duration,
    ops: usize,
}

impl Timed {
    fn add(&mut self, spent: Duration, ops: usize) {
        self.spent += spent;
        self.ops += ops;
    }

    fn us_per_op(&self) -> f64 {
        self.spent.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }
}

/// A variant's figures, one per round: wall-clock and server CPU.
#[derive(Clone, Default)]
struct Measured {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

/// How many operations of `per_op` fill `batch`, within `lo..=hi`.
fn batch_count(batch: Duration, per_op: Duration, lo: usize, hi: usize) -> usize {
    let n = batch.as_secs_f64() / per_op.as_secs_f64().max(1e-9);
    (n as usize).clamp(lo, hi)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

// ---- part 1: Auth::authenticate -------------------------------------------

/// µs per call, per round: [uncached, cached].
fn authenticate_rounds(a: &Args, auth: &Auth, minter: &mut Minter) -> [Vec<f64>; 2] {
    let token = minter.next();
    auth.authenticate(&token).expect("a fresh token verifies");
    let warm = minter.many(20);
    let t = Instant::now();
    for w in &warm {
        std::hint::black_box(auth.authenticate(w).expect("a fresh token verifies"));
    }
    let fresh_n = batch_count(a.batch, t.elapsed() / 20, 50, MAX_FRESH);
    let t = Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(auth.authenticate(&token).expect("cached"));
    }
    let cached_n = batch_count(a.batch, t.elapsed() / 10_000, 10_000, 10_000_000);
    let (fresh_chunk, cached_chunk) = (fresh_n.div_ceil(a.slices), cached_n.div_ceil(a.slices));
    let mut out = [Vec::new(), Vec::new()];
    for round in 0..a.rounds {
        let fresh = minter.many(fresh_chunk * a.slices);
        let mut spent = [Timed::default(); 2];
        for slice in 0..a.slices {
            for v in order(2, round + slice) {
                let t = Instant::now();
                let n = if v == 0 {
                    for f in &fresh[slice * fresh_chunk..(slice + 1) * fresh_chunk] {
                        std::hint::black_box(auth.authenticate(f).expect("a fresh token verifies"));
                    }
                    fresh_chunk
                } else {
                    for _ in 0..cached_chunk {
                        std::hint::black_box(auth.authenticate(&token).expect("cached"));
                    }
                    cached_chunk
                };
                spent[v].add(t.elapsed(), n);
            }
        }
        for (o, t) in out.iter_mut().zip(spent) {
            o.push(t.us_per_op());
        }
        eprintln!(
            "round={} authenticate uncached_us={:.2} cached_us={:.3}",
            round + 1,
            out[0][round],
            out[1][round]
        );
    }
    out
}

// ---- HTTP client ------------------------------------------------------------

type Sender = SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 connection over `io`, its driver spawned.
async fn open<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// A TLS connection to `addr` (verified against the control's CA) and how
/// its handshake went.
async fn tls_stream(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Option<rustls::HandshakeKind>,
) {
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let s = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp(addr).await))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake");
    let kind = s.get_ref().1.handshake_kind();
    (s, kind)
}

/// `GET /v2/apps` (with `token` if any): the body's length. Anything but
/// 200 stops the benchmark (its figures would measure something else).
async fn get_apps(sender: &mut Sender, token: Option<&str>) -> usize {
    let mut req = hyper::Request::get("/v2/apps").header(hyper::header::HOST, "127.0.0.1");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("token={t}"));
    }
    let req = req.body(Empty::new()).expect("a valid request");
    let exchange = async {
        sender.ready().await.expect("connection alive");
        let resp = sender.send_request(req).await.expect("GET /v2/apps");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        assert_eq!(
            status,
            200,
            "GET /v2/apps: {status} {}",
            String::from_utf8_lossy(&body)
        );
        body.len()
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .expect("GET /v2/apps timed out")
}

// ---- part 2: GET /v2/apps over a kept-alive connection ----------------------

const GET_VARIANTS: [&str; 4] = [
    "plain HTTP, no token check (the API before authentication)",
    "plain HTTP + token (cached)",
    "TLS + token (cached): the default",
    "TLS + a fresh token each request (uncached)",
];

/// µs per request (wall-clock and server CPU), per round, for each of
/// [`GET_VARIANTS`].
async fn get_rounds(
    a: &Args,
    s: &Servers,
    tls: &tokio_rustls::TlsConnector,
    token: &str,
    minter: &mut Minter,
) -> Vec<Measured> {
    let mut conns = [
        open(tcp(s.unguarded).await).await,
        open(tcp(s.plain).await).await,
        open(tls_stream(s.tls, tls).await.0).await,
        open(tls_stream(s.tls, tls).await.0).await,
    ];
    let warm = minter.many(20);
    for (v, c) in conns.iter_mut().enumerate() {
        for w in &warm {
            get_apps(c, (v > 0).then_some(w.as_str())).await;
        }
    }
    let t = Instant::now();
    for _ in 0..50 {
        get_apps(&mut conns[0], None).await;
    }
    let n = batch_count(a.batch, t.elapsed() / 50, 50, 100_000);
    let fresh_n = n.min(MAX_FRESH);
    let (chunk, fresh_chunk) = (n.div_ceil(a.slices), fresh_n.div_ceil(a.slices));
    let mut out = vec![Measured::default(); GET_VARIANTS.len()];
    for round in 0..a.rounds {
        let fresh = minter.many(fresh_chunk * a.slices);
        let mut spent = [Timed::default(); GET_VARIANTS.len()];
        for slice in 0..a.slices {
            for v in order(GET_VARIANTS.len(), round + slice) {
                let c = &mut conns[v];
                let (count, wall, cpu) = measured(async {
                    match v {
                        0 => {
                            for _ in 0..chunk {
                                get_apps(c, None).await;
                            }
                            chunk
                        }
                        1 | 2 => {
                            for _ in 0..chunk {
                                get_apps(c, Some(token)).await;
                            }
                            chunk
                        }
                        _ => {
                            for f in &fresh[slice * fresh_chunk..(slice + 1) * fresh_chunk] {
                                get_apps(c, Some(f)).await;
                            }
                            fresh_chunk
                        }
                    }
                })
                .await;
                spent[v].add(wall, count);
                spent[v].cpu += cpu;
            }
        }
        for (o, t) in out.iter_mut().zip(spent) {
            o.wall.push(t.us_per_op());
            o.cpu.push(t.cpu_us_per_op());
        }
        let line: Vec<String> = out
            .iter()
            .map(|o| format!("{:.1}/{:.1}", o.wall[round], o.cpu[round]))
            .collect();
        eprintln!(
            "round={} get_us(wall/server_cpu) plain={} plain_token={} tls_token={} tls_fresh={}",
            round + 1,
            line[0],
            line[1],
            line[2],
            line[3]
        );
    }
    out
}

// ---- part 3: a connection per request ---------------------------------------

const CONNECT_VARIANTS: [&str; 3] = [
    "TCP",
    "TLS, full handshake",
    "TLS, resumed session (the client's session cache)",
];

/// One new connection and one GET on it: ms of wall-clock and of server
/// CPU. The TLS handshake must be of the variant's kind once `checked`
/// (after the warm-up filled the cache).
async fn one_shot(
    v: usize,
    s: &Servers,
    (full, resume): (&tokio_rustls::TlsConnector, &tokio_rustls::TlsConnector),
    token: &str,
    checked: bool,
) -> (f64, f64) {
    let closed = async {
        drop(connect_and_get(v, s, (full, resume), token, checked).await);
    };
    let ((), wall, cpu) = measured(closed).await;
    (wall.as_secs_f64() * 1e3, cpu.as_secs_f64() * 1e3)
}

async fn connect_and_get(
    v: usize,
    s: &Servers,
    (full, resume): (&tokio_rustls::TlsConnector, &tokio_rustls::TlsConnector),
    token: &str,
    checked: bool,
) -> Sender {
    let mut c = match v {
        0 => open(tcp(s.plain).await).await,
        _ => {
            let (stream, kind) = tls_stream(s.tls, if v == 1 { full } else { resume }).await;
            let want = if v == 1 {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            if checked {
                assert_eq!(kind, Some(want), "{}", CONNECT_VARIANTS[v]);
            }
            open(stream).await
        }
    };
    get_apps(&mut c, Some(token)).await;
    c
}

/// ms per connection (wall-clock: the median of the round's connections;
/// server CPU: their mean), per round.
async fn connect_rounds(
    a: &Args,
    s: &Servers,
    full: &tokio_rustls::TlsConnector,
    resume: &tokio_rustls::TlsConnector,
    token: &str,
) -> Vec<Measured> {
    // Warm up, and fill the resuming client's session cache (the server's
    // tickets arrive with the first answer).
    for v in 0..CONNECT_VARIANTS.len() {
        for _ in 0..5 {
            one_shot(v, s, (full, resume), token, false).await;
        }
    }
    let mut out = vec![Measured::default(); CONNECT_VARIANTS.len()];
    for round in 0..a.rounds {
        let mut times = vec![Measured::default(); CONNECT_VARIANTS.len()];
        for i in 0..CONNECTIONS {
            for v in order(CONNECT_VARIANTS.len(), round + i) {
                let (wall, cpu) = one_shot(v, s, (full, resume), token, true).await;
                times[v].wall.push(wall);
                times[v].cpu.push(cpu);
            }
        }
        for (o, t) in out.iter_mut().zip(&times) {
            o.wall.push(median(&t.wall));
            o.cpu.push(mean(&t.cpu));
        }
        let line: Vec<String> = out
            .iter()
            .map(|o| format!("{:.2}/{:.2}", o.wall[round], o.cpu[round]))
            .collect();
        eprintln!(
            "round={} connect_ms(wall/server_cpu) tcp={} tls_full={} tls_resumed={}",
            round + 1,
            line[0],
            line[1],
            line[2]
        );
    }
    out
}

// ---- part 4: the agents' stream ------------------------------------------------

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens the agents' stream at `addr` (wss with `tls`), registers `id` with
/// `authorization`, and reads until `registered`: the stream and the
/// credential the control sent on the way (a join's).
async fn stream_register(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    authorization: &str,
    id: &str,
) -> (Ws, Option<String>) {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{addr}/v1/agents/stream")
        .into_client_request()
        .expect("a valid URL");
    request.headers_mut().insert(
        "authorization",
        authorization.parse().expect("a header value"),
    );
    let connector = tls.map(|c| tokio_tungstenite::Connector::Rustls(c.clone()));
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    let (mut ws, _) = tokio::time::timeout(IO_TIMEOUT, connecting)
        .await
        .expect("opening the agents' stream timed out")
        .expect("opening the agents' stream");
    // Resources too small for any app: the stand-in agents get no task.
    let register = serde_json::json!({"type": "register", "agent_id": id, "hostname": id,
        "ip": "127.0.0.1", "resources": {"cpus": 0.01, "mem": 1, "disk": 0, "ports": "[31000-31000]"}});
    ws.send(Message::text(register.to_string()))
        .await
        .expect("sending register");
    let mut credential = None;
    for _ in 0..100 {
        let msg = tokio::time::timeout(IO_TIMEOUT, ws.next())
            .await
            .expect("the stream said nothing in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                match v["type"].as_str() {
                    Some("registered") => return (ws, credential),
                    Some("credential") => credential = v["secret"].as_str().map(str::to_string),
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => panic!("agent {id}: stream refused: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("agent {id}: stream ended before registered: {other:?}"),
        }
    }
    panic!("agent {id}: no registered in 100 messages");
}

/// Closes a stream and waits for the control's side to end.
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

const STREAM_VARIANTS: [&str; 2] = ["ws (plain)", "wss (TLS)"];

/// ms from connecting to `registered` (wall-clock: the median of the
/// round's connections; server CPU: their mean), per round, ws and wss.
async fn stream_rounds(
    a: &Args,
    s: &Servers,
    auth: &Auth,
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<Measured> {
    // Each stand-in agent joins once; later connections use its credential,
    // as a restarted agent does. Two pools, each used once a round, so an
    // agent's previous stream is long gone when it reconnects.
    let join = format!("token={}", auth.join_token(3600));
    let mut agents = Vec::new();
    for i in 0..2 * CONNECTIONS {
        let id = format!("bench-agent-{i}");
        let (ws, secret) = stream_register(s.tls, Some(tls), &join, &id).await;
        close(ws).await;
        let secret = secret.expect("a join returns the agent's credential");
        agents.push((id.clone(), format!("agent {id}:{secret}")));
    }
    let mut out = vec![Measured::default(); STREAM_VARIANTS.len()];
    for round in 0..a.rounds {
        let mut times = vec![Measured::default(); STREAM_VARIANTS.len()];
        for i in 0..CONNECTIONS {
            for v in order(STREAM_VARIANTS.len(), round + i) {
                let (addr, tls) = if v == 0 {
                    (s.plain, None)
                } else {
                    (s.tls, Some(tls))
                };
                let (id, authorization) = &agents[v * CONNECTIONS + i];
                let ((ws, _), wall, cpu) =
                    measured(stream_register(addr, tls, authorization, id)).await;
                times[v].wall.push(wall.as_secs_f64() * 1e3);
                times[v].cpu.push(cpu.as_secs_f64() * 1e3);
                close(ws).await;
            }
        }
        for (o, t) in out.iter_mut().zip(&times) {
            o.wall.push(median(&t.wall));
            o.cpu.push(mean(&t.cpu));
        }
        eprintln!(
            "round={} stream_ms(wall/server_cpu) ws={:.2}/{:.2} wss={:.2}/{:.2}",
            round + 1,
            out[0].wall[round],
            out[0].cpu[round],
            out[1].wall[round],
            out[1].cpu[round]
        );
    }
    out
}

// ---- setup ----------------------------------------------------------------------

/// `SIM_AGENTS` agents with no process behind them, registered directly.
fn register_simulated_agents(control: &Control) {
    control
        .mutate(|c, now| {
            for i in 0..SIM_AGENTS {
                c.agent_registered(
                    Registration {
                        agent_id: format!("sim-agent-{i}"),
                        hostname: format!("sim-{i}"),
                        ip: std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1).into(),
                        resources: AgentResources {
                            cpus: 8.0,
                            mem: 16384.0,
                            disk: 10000.0,
                            ports: "[31000-31999]".into(),
                            reserved: None,
                        },
                        tasks: vec![],
                    },
                    now,
                );
            }
        })
        .expect("registering the simulated agents");
}

/// `APPS` apps through the API (over TLS, with `token`), then every task
/// reported running.
fn create_apps(control: &Control, addr: SocketAddr, ca: &[u8], token: &str) {
    let api = ApiClient::tls(addr, ca)
        .expect("a TLS client")
        .with_token(token);
    for i in 0..APPS {
        let app = serde_json::json!({
            "id": format!("/bench/app-{i}"), "cmd": "./serve --port $PORT0",
            "instances": INSTANCES, "cpus": 0.1, "mem": 64,
            "env": {"MODE": "production", "LOG_LEVEL": "info"},
            "labels": {"team": "bench", "tier": "web"},
            "portDefinitions": [{"port": 0, "name": "http", "labels": {"VIP_0": format!("/bench/app-{i}:80")}}],
        });
        let (status, body) = api
            .request("POST", "/v2/apps", Some(&app.to_string()))
            .expect("POST /v2/apps");
        assert_eq!(status, 201, "POST /v2/apps: {body}");
    }
    control
        .mutate(|c, now| {
            let placed: Vec<(String, String)> = c
                .tasks
                .values()
                .map(|t| (t.agent_id.clone(), t.id.clone()))
                .collect();
            for (agent, task_id) in placed {
                let status = TaskStatus {
                    task_id,
                    state: TaskState::Running,
                    reason: None,
                    healthy: None,
                };
                c.task_status(&agent, &status, now);
            }
        })
        .expect("reporting the tasks running");
    let running = control.read(|c, _| {
        c.tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .count()
    });
    assert_eq!(
        running,
        APPS * INSTANCES,
        "every instance placed and running"
    );
}

/// The figures and how they were taken.
struct Results {
    rounds: usize,
    slices: usize,
    body_bytes: usize,
    load: (String, String),
    authenticate: [Vec<f64>; 2],
    get: Vec<Measured>,
    connect: Vec<Measured>,
    stream: Vec<Measured>,
}

/// `median× (min–max) of the ratios` against the first variant.
fn ratio_spread(v: &[f64], base: &[f64]) -> String {
    spread(&ratios(v, base), 2)
}

/// Table rows: name, wall-clock, its ratio, server CPU, its ratio (against
/// the first variant); figures with `decimals`.
fn rows(names: &[&str], m: &[Measured], decimals: usize) -> String {
    let base = &m[0];
    names
        .iter()
        .zip(m)
        .map(|(name, v)| {
            format!(
                "| {name} | {} | {} | {} | {} |\n",
                spread(&v.wall, decimals),
                ratio_spread(&v.wall, &base.wall),
                spread(&v.cpu, decimals),
                ratio_spread(&v.cpu, &base.cpu)
            )
        })
        .collect()
}

fn render(r: &Results) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = format!(
        "\n**Authentication and TLS** (`control/examples/auth_bench.rs`, in-process: the control's routers on a 2-worker runtime, the client on its own thread, loopback; {} rounds; within a round the variants take turns, {} slices each (one connection each in the last two tables), in a rotating order; each figure is the median over the rounds (min–max), each ratio is taken within a round, then its median (min–max)). *Wall* is what the client waits; *server CPU* is the CPU time of the control's threads meanwhile (`/proc/self/task/*/schedstat`), which the client's own work and the machine's other load do not inflate as much. State: {APPS} apps of {INSTANCES} running tasks, created through the API; `GET /v2/apps` answers {:.0} KB. Load average (1 min) at start / end: {} / {} on {cores} cores.\n\n",
        r.rounds,
        r.slices,
        r.body_bytes as f64 / 1000.0,
        r.load.0,
        r.load.1
    );
    let [uncached, cached] = &r.authenticate;
    s.push_str("| `Auth::authenticate` | µs per call |\n|---|---|\n");
    s.push_str(&format!(
        "| uncached: a fresh token (RS256 verification, account lookup, cache insert) | {} |\n",
        spread(uncached, 1)
    ));
    s.push_str(&format!(
        "| cached: the same token | {} |\n\n",
        spread(cached, 2)
    ));

    s.push_str("| `GET /v2/apps`, one kept-alive HTTP/1.1 connection | wall µs per request | × plain | server CPU µs per request | × plain |\n|---|---|---|---|---|\n");
    s.push_str(&rows(&GET_VARIANTS, &r.get, 0));
    let verdict = |v: &[f64], base: &[f64]| {
        let m = median(&ratios(v, base));
        format!("{m:.2}× ({})", if m <= 1.2 { "met" } else { "not met" })
    };
    let (base, base_cpu) = (&r.get[0].wall, &r.get[0].cpu);
    s.push_str(&format!(
        "\nTarget (issue 14): an authenticated `GET /v2/apps` within 1.2× of the unauthenticated one. Wall: plain HTTP + token {}, TLS + token {}; server CPU: plain HTTP + token {}, TLS + token {}. The unauthenticated baseline is served by the same handlers without the guard (`marathon_api::routes_with_access`, a benchmark hook); the token variants by the production router (`Control::routes`).\n\n",
        verdict(&r.get[1].wall, base),
        verdict(&r.get[2].wall, base),
        verdict(&r.get[1].cpu, base_cpu),
        verdict(&r.get[2].cpu, base_cpu)
    ));

    s.push_str("| a new connection per request: connect + one `GET /v2/apps` with a token | wall ms | × TCP | server CPU ms | × TCP |\n|---|---|---|---|---|\n");
    s.push_str(&rows(&CONNECT_VARIANTS, &r.connect, 2));
    s.push_str(&format!(
        "\n{CONNECTIONS} connections per variant per round, the variants alternating (a round's figure: the median of their wall times, the mean of their server CPU). TLS: ECDSA P-256 server certificate, TLS 1.3 (rustls, ring); the wall times include the client's side of the handshake, on the same machine.\n\n"
    ));

    s.push_str("| agents' stream: connect, upgrade, `register` → `registered` (an agent's credential) | wall ms | × ws | server CPU ms | × ws |\n|---|---|---|---|---|\n");
    s.push_str(&rows(&STREAM_VARIANTS, &r.stream, 2));
    s.push_str(&format!(
        "\n{CONNECTIONS} registrations per variant per round. A registration runs the control's pass and commits the agent to the store (on /dev/shm here, so without a disk's fsync); once the stream is open, each message costs TLS record encryption only, not measured apart.\n"
    ));
    s
}

fn main() {
    let a = args();
    let load_start = load_average();
    let dir = TempDir::new();
    let names = tls::server_names(&["127.0.0.1".parse().expect("an address")], &[]);
    let files = tls::ensure_own_ca(&dir.0, &names).expect("the control's CA");
    let server_tls =
        tls::server_config(&files.server_cert, &files.server_key).expect("server TLS config");
    let ca = std::fs::read(&files.ca_cert).expect("the CA certificate");
    let client_tls = tls::client_config(&ca).expect("client TLS config");
    let mut no_resumption = (*client_tls).clone();
    no_resumption.resumption = rustls::client::Resumption::disabled();
    let full = tokio_rustls::TlsConnector::from(Arc::new(no_resumption));
    let resume = tokio_rustls::TlsConnector::from(client_tls.clone());

    let store = Arc::new(Store::open(&dir.0).expect("the store"));
    let auth = Arc::new(Auth::open(&dir.0, store.clone()).expect("accounts"));
    // Simulated agents never heartbeat: they must not be lost mid-run.
    let cluster = ClusterConfig {
        agent_timeout_ms: 24 * 3600 * 1000,
        ..ClusterConfig::default()
    };
    let config = ServerConfig {
        advertise: "127.0.0.1:0".parse().expect("an address"),
        tls: true,
        domain: "mesos".into(),
        tick: Duration::from_millis(250),
        dns_forward: None,
    };
    let control = Control::new(store, auth.clone(), cluster, config).expect("the control");
    register_simulated_agents(&control);
    let servers = serve(&control, server_tls);
    let mut minter = Minter {
        auth: auth.clone(),
        serial: 0,
    };
    let token = minter.next();
    create_apps(&control, servers.tls, &ca, &token);
    eprintln!("setup: {APPS} apps × {INSTANCES} tasks running; measuring");

    let authenticate = authenticate_rounds(&a, &auth, &mut minter);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let (body_bytes, get, connect, stream) = rt.block_on(async {
        let mut c = open(tcp(servers.unguarded).await).await;
        let body_bytes = get_apps(&mut c, None).await;
        drop(c);
        let get = get_rounds(&a, &servers, &full, &token, &mut minter).await;
        let connect = connect_rounds(&a, &servers, &full, &resume, &token).await;
        let stream = stream_rounds(&a, &servers, &auth, &client_tls).await;
        (body_bytes, get, connect, stream)
    });
    drop(rt);
    drop(servers);
    let results = Results {
        rounds: a.rounds,
        slices: a.slices,
        body_bytes,
        load: (load_start, load_average()),
        authenticate,
        get,
        connect,
        stream,
    };
    print!("{}", render(&results));
}
