//! `garrison-agent`: the per-host daemon.
//!
//! `garrison-agent run [--config FILE] [flags]` — every config key is also a
//! flag, and flags win (see `garrison_agent::config`).
//! `garrison-agent cleanup [--bpffs DIR]` removes the pinned data plane.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use garrison_agent::{
    api::{auth::ApiAccess, credentials},
    config::{
        self, Config, DataplaneKind, RawConfig, RawHealth, RawIsolation, RawNfqueue, RawSources,
    },
    daemon::{NamedVips, RunConfig, Shared, run},
    dataplane::{Dataplane, EbpfConfig, EbpfDataplane, NfqueueDataplane, ebpf::remove_pins},
    sys,
    vip::VipTable,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "garrison-agent",
    version,
    about = "Garrison's per-host agent: in-kernel L4 VIP load balancing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Detach the programs and remove the pinned maps and links.
    Cleanup {
        #[arg(long, default_value = "/sys/fs/bpf/garrison")]
        bpffs: PathBuf,
    },
    /// (benchmark) launch and kill COUNT `sleep` tasks with the given
    /// isolators through the launcher; prints one line of latencies.
    #[command(hide = true)]
    BenchTasks {
        #[arg(long)]
        work_dir: PathBuf,
        /// Comma-separated; empty for none.
        #[arg(long, default_value = "")]
        isolators: String,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file; flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:61421].
    #[arg(long)]
    api: Option<String>,
    /// Data path: auto, ebpf or nfqueue [default: auto].
    #[arg(long)]
    dataplane: Option<String>,
    /// cgroup v2 directory to attach to [default: the cgroup2 mount root].
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Pin directory on a bpffs [default: /sys/fs/bpf/garrison].
    #[arg(long)]
    bpffs: Option<PathBuf>,
    /// Range for named VIP addresses [default: 11.0.0.0/8].
    #[arg(long)]
    named_vip_range: Option<String>,
    /// DNS zone of named VIPs [default: l4lb.thisdcos.directory].
    #[arg(long)]
    dns_domain: Option<String>,
    /// Directory for persistent state (named VIP allocations) [default: /var/lib/garrison].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The API token's file, created 0600 at first start [default: STATE_DIR/api-token].
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// The API's Unix socket; root over it may mutate without the token;
    /// "" for none [default: STATE_DIR/agent.sock].
    #[arg(long)]
    api_socket: Option<String>,
    /// Static VIP file (JSON, the /v1/vips shape); re-read on change and SIGHUP.
    #[arg(long)]
    vips: Option<PathBuf>,
    /// How often to check the VIP file, ms [default: 500].
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Mesos agent or master state URL (http:// or file://); repeatable.
    #[arg(long)]
    mesos_state: Vec<String>,
    /// Mesos state poll interval, ms [default: 2000].
    #[arg(long)]
    mesos_poll_ms: Option<u64>,
    /// Mesos state request timeout, ms [default: 5000].
    #[arg(long)]
    mesos_timeout_ms: Option<u64>,
    /// Seconds a failing source keeps its last good table [default: 60].
    #[arg(long)]
    source_grace_secs: Option<u64>,
    /// A connect unanswered this long is a failure, ms [default: 400].
    #[arg(long)]
    health_timeout_ms: Option<u64>,
    /// Consecutive failures that take a backend out [default: 5].
    #[arg(long)]
    health_max_failures: Option<u32>,
    /// Seconds after its last failure before a backend is retried [default: 30].
    #[arg(long)]
    health_backoff_secs: Option<u64>,
    /// Remove the pinned data plane on exit (default: leave it serving).
    #[arg(long)]
    cleanup: bool,
    /// NFQUEUE path: queue numbers FIRST:LAST [default: 50:58].
    #[arg(long)]
    nfqueue_queues: Option<String>,
    /// NFQUEUE path: SYNs the agent does not see go to the VIP address
    /// unbalanced instead of being refused.
    #[arg(long)]
    nfqueue_fail_open: bool,
    /// Task sandboxes live under DIR/tasks [default: /var/lib/garrison].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Isolators, comma-separated: cpu, memory, pids [default: all].
    #[arg(long, value_delimiter = ',')]
    isolators: Option<Vec<String>>,
    /// Do not serve the task endpoints.
    #[arg(long)]
    no_tasks: bool,
    /// Kill every task when the agent stops (default: tasks keep running and
    /// the next agent on the same work directory re-adopts them).
    #[arg(long)]
    kill_tasks_on_exit: bool,
    /// Follow a garrison-control at https://HOST:PORT (http:// for a
    /// loopback one): register, run its tasks, program its VIP table.
    #[arg(long)]
    control: Option<String>,
    /// This agent's id at the control [default: kept in STATE_DIR/agent-id].
    #[arg(long)]
    agent_id: Option<String>,
    /// Host name reported to the control [default: the system's].
    #[arg(long)]
    hostname: Option<String>,
    /// Address tasks on this agent are reached at [default: the local
    /// address the control is reached from].
    #[arg(long)]
    advertise_ip: Option<String>,
    /// The CA that signed the control's certificate (its DATA_DIR/tls/ca.pem).
    #[arg(long)]
    control_ca: Option<PathBuf>,
    /// A join token for the first connection (`garrison-control token create --join`).
    #[arg(long, env = "GARRISON_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
}

impl RunArgs {
    fn as_raw(&self) -> RawConfig {
        RawConfig {
            api: self.api.clone(),
            dataplane: self.dataplane.clone(),
            cgroup: self.cgroup.clone(),
            bpffs: self.bpffs.clone(),
            named_vip_range: self.named_vip_range.clone(),
            dns_domain: self.dns_domain.clone(),
            state_dir: self.state_dir.clone(),
            cleanup_on_exit: self.cleanup.then_some(true),
            api_token_file: self.api_token_file.clone(),
            api_socket: self.api_socket.as_ref().map(PathBuf::from),
            sources: RawSources {
                vips_file: self.vips.clone(),
                vips_poll_ms: self.poll_ms,
                mesos_state: (!self.mesos_state.is_empty()).then(|| self.mesos_state.clone()),
                mesos_poll_ms: self.mesos_poll_ms,
                mesos_timeout_ms: self.mesos_timeout_ms,
                grace_secs: self.source_grace_secs,
            },
            isolation: RawIsolation {
                enabled: self.no_tasks.then_some(false),
                work_dir: self.work_dir.clone(),
                isolators: self.isolators.clone(),
                kill_tasks_on_exit: self.kill_tasks_on_exit.then_some(true),
                ..Default::default()
            },
            nfqueue: RawNfqueue {
                queues: self.nfqueue_queues.clone(),
                fail_open: self.nfqueue_fail_open.then_some(true),
            },
            control: garrison_agent::config::RawControl {
                url: self.control.clone(),
                agent_id: self.agent_id.clone(),
                hostname: self.hostname.clone(),
                advertise_ip: self.advertise_ip.clone(),
                ca_file: self.control_ca.clone(),
                join_token: self.join_token.clone(),
                insecure: None,
            },
            health: RawHealth {
                timeout_ms: self.health_timeout_ms,
                max_failures: self.health_max_failures,
                backoff_secs: self.health_backoff_secs,
            },
        }
    }
}

fn main() -> Result<()> {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            let file = match &args.config {
                Some(path) => config::load(path)?,
                None => RawConfig::default(),
            };
            let config = file.overlay(args.as_raw()).validate()?;
            run_agent(config, args.config.clone())
        }
        Command::BenchTasks {
            work_dir,
            isolators,
            count,
        } => bench_tasks(work_dir, &isolators, count),
        Command::Cleanup { bpffs } => {
            remove_pins(&bpffs)
                .with_context(|| format!("removing pins under {}", bpffs.display()))?;
            tracing::info!(pins = %bpffs.display(), "data plane removed");
            Ok(())
        }
    }
}

type BoxedDataplane = Box<dyn Dataplane + Send>;

/// An opened data path, the table it holds already, and whether it keeps
/// serving from pins after the agent exits (the eBPF path) or removes its
/// rules on a clean exit (the NFQUEUE path).
struct Opened {
    dataplane: BoxedDataplane,
    initial: VipTable,
    pinned: bool,
}

fn open_ebpf(config: &Config) -> Result<Opened> {
    let cgroup = match &config.cgroup {
        Some(c) => c.clone(),
        None => sys::find_mount("cgroup2")
            .context("no cgroup2 mount found; set `cgroup` (--cgroup DIR)")?,
    };
    if sys::find_mount("bpf").is_none() {
        anyhow::bail!("no bpf filesystem is mounted: mount -t bpf bpf /sys/fs/bpf");
    }
    let dp = EbpfDataplane::open(EbpfConfig {
        cgroup: cgroup.clone(),
        pin_dir: config.bpffs.clone(),
    })
    .context("starting the eBPF data plane")?;
    tracing::info!(dataplane = "ebpf", cgroup = %cgroup.display(), pins = %config.bpffs.display(), readopted = dp.readopted(), "data plane ready");
    Ok(Opened {
        initial: dp.programmed_table(),
        dataplane: Box::new(dp),
        pinned: true,
    })
}

fn open_nfqueue(config: &Config) -> Result<Opened> {
    let dp = NfqueueDataplane::open(config.nfqueue).context("starting the NFQUEUE data plane")?;
    let (first, last) = config.nfqueue.queues;
    tracing::info!(dataplane = "nfqueue", queues = %format!("{first}:{last}"), fail_open = config.nfqueue.fail_open, "data plane ready");
    Ok(Opened {
        dataplane: Box::new(dp),
        initial: VipTable::new(),
        pinned: false,
    })
}

fn run_agent(config: Config, config_file: Option<PathBuf>) -> Result<()> {
    // Nothing the agent was given is for the programs it starts.
    garrison_agent::isolation::privilege::close_on_exec_above_stdio()
        .context("marking inherited descriptors close-on-exec")?;
    if config.isolation.enabled {
        // What the agent creates (state, pins, records) is its own.
        garrison_agent::isolation::privilege::private_files_by_default();
    }
    let opened = match config.dataplane {
        DataplaneKind::Ebpf => open_ebpf(&config)?,
        DataplaneKind::Nfqueue => open_nfqueue(&config)?,
        DataplaneKind::Auto => match open_ebpf(&config) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the eBPF data plane cannot start; falling back to NFQUEUE (dataplane = auto)"
                );
                open_nfqueue(&config)?
            }
        },
    };
    let pinned = opened.pinned;
    if config.isolation.enabled {
        keep_agent_files_from_tasks(&config, config_file, pinned);
    }
    let shared = Arc::new(Shared::with_health(
        opened.dataplane,
        opened.initial,
        config.health,
    ));
    let api: SocketAddr = config.api;
    let access = Arc::new(api_access(&config)?);
    let tasks = config.isolation.enabled.then(|| tasks_api(&config));
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
    let link = match &config.control {
        None => None,
        Some(c) => Some(link_config(&config, c)?),
    };
    let mut run_config = RunConfig {
        access,
        unix: None,
        control: link.is_some().then_some(control_rx),
        tasks: tasks.clone(),
        sources: config.sources.clone(),
        named: NamedVips {
            range: config.named_vip_range,
            zone: config.dns_domain.clone(),
            state_file: Some(config.state_dir.join("named-vips.json")),
        },
    };
    // One thread: the loop and the API are light, and a single malloc arena
    // keeps the agent's footprint small and predictable on every host.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(api)
            .await
            .with_context(|| format!("binding the API to {api}"))?;
        tracing::info!(%api, "API listening");
        if let Some(path) = &config.api_socket {
            run_config.unix = Some(credentials::bind_socket(path)?);
            tracing::info!(socket = %path.display(), "API listening on the Unix socket (root may mutate without the token)");
        }
        if let Some(link) = link {
            let launcher = tasks.as_ref().and_then(|t| t.launcher.as_ref().ok().cloned());
            let node = match &tasks {
                Some(t) => t.node.clone(),
                None => Arc::new(node_resources(&config)),
            };
            tracing::info!(agent_id = %link.agent_id, hostname = %link.hostname, ip = %link.ip, control = %link.stream_url, runs_tasks = launcher.is_some(), "following the control");
            let api = garrison_agent::api::app(
                shared.clone(),
                run_config.tasks.clone(),
                run_config.access.clone(),
            );
            tokio::spawn(garrison_agent::control_link::run(
                link,
                launcher,
                node,
                control_tx,
                shared.clone(),
                api,
            ));
        }
        run(listener, shared.clone(), run_config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // Tasks holding the shared state end with the runtime; then the data
    // plane is dropped (the NFQUEUE path removes its rules and sets).
    drop(runtime);
    if let Some(path) = &config.api_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(Ok(launcher)) = tasks.as_ref().map(|t| &t.launcher) {
        if config.isolation.kill_tasks_on_exit {
            let killed = launcher.kill_all();
            if killed > 0 {
                tracing::info!(
                    tasks = killed,
                    "tasks killed at shutdown (kill_tasks_on_exit)"
                );
            }
        } else {
            let running = launcher
                .list()
                .iter()
                .filter(|t| !t.state.is_terminal())
                .count();
            if running > 0 {
                tracing::info!(
                    tasks = running,
                    "tasks left running; the next agent on this work directory re-adopts them"
                );
            }
        }
    }
    if !pinned {
        tracing::info!("stopped; rules and sets removed");
    } else if config.cleanup_on_exit {
        remove_pins(&config.bpffs)?;
        tracing::info!("data plane removed (cleanup_on_exit)");
    } else {
        tracing::info!("stopped; the pinned data plane keeps serving");
    }
    Ok(())
}

/// Tasks must not read the config, the state or the pins (the work directory
/// is the launcher's to prepare).
fn keep_agent_files_from_tasks(config: &Config, config_file: Option<PathBuf>, pinned: bool) {
    use garrison_agent::isolation::privilege::{AgentFiles, protect_agent_files};
    let problems = protect_agent_files(&AgentFiles {
        config: config_file,
        state_dir: config.state_dir.clone(),
        pins: pinned.then(|| config.bpffs.clone()),
        work_dir: Some(config.isolation.launcher.work_dir.clone()),
    });
    for p in problems {
        tracing::warn!(problem = %p, "cannot keep an agent file away from tasks");
    }
}

/// Launch latency (request → RUNNING) and teardown latency (kill → final
/// state, cgroups removed) of `count` sequential `sleep` tasks.
fn bench_tasks(work_dir: PathBuf, isolators: &str, count: u32) -> Result<()> {
    use garrison_agent::isolation::{
        TaskResources, TaskSpec,
        launcher::{Launcher, LauncherConfig},
    };
    use std::time::{Duration, Instant};
    let launcher = Launcher::new(LauncherConfig {
        work_dir: work_dir.clone(),
        isolators: isolators
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        kill_grace: Duration::from_secs(2),
        ..Default::default()
    })?;
    let (mut launch, mut teardown) = (Vec::new(), Vec::new());
    for i in 0..count {
        let id = format!("bench-{}-{i}", std::process::id());
        let t0 = Instant::now();
        launcher.launch(TaskSpec {
            env: Default::default(),
            id: id.clone(),
            cmd: "sleep 30".into(),
            resources: TaskResources {
                cpus: 0.1,
                mem: 32.0,
                disk: 16.0,
            },
            user: None,
        })?;
        launch.push(t0.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        launcher.kill(&id)?;
        while !launcher.get(&id).is_some_and(|t| t.state.is_terminal()) {
            anyhow::ensure!(
                t1.elapsed() < Duration::from_secs(10),
                "task {id} did not end"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        teardown.push(t1.elapsed().as_secs_f64() * 1e3);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    println!(
        "launch_p50_ms={:.3} launch_p99_ms={:.3} teardown_p50_ms={:.3} teardown_p99_ms={:.3}",
        pct(&mut launch, 0.5),
        pct(&mut launch, 0.99),
        pct(&mut teardown, 0.5),
        pct(&mut teardown, 0.99)
    );
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}

/// The task endpoints: a launcher, or why this host cannot run tasks (the
/// endpoints then answer 503 with that reason; VIPs are served regardless).
fn tasks_api(config: &Config) -> garrison_agent::api::tasks::TasksApi {
    use garrison_agent::isolation::launcher::Launcher;
    let iso = &config.isolation;
    let launcher = Launcher::new(iso.launcher.clone()).map_err(|e| {
        tracing::error!(error = %e, "tasks cannot run on this host");
        Arc::new(e.to_string())
    });
    if let Ok(l) = &launcher {
        tracing::info!(work_dir = %iso.launcher.work_dir.display(), isolators = ?iso.launcher.isolators, cgroups = %l.layout().describe(), "task isolation ready");
    }
    garrison_agent::api::tasks::TasksApi {
        launcher,
        node: Arc::new(node_resources(config)),
    }
}

/// The API token (read, or created at first start) and where callers find
/// it and the socket.
fn api_access(config: &Config) -> Result<ApiAccess> {
    let path = &config.api_token_file;
    let (token, created) = credentials::load_or_create_token(path)?;
    if created {
        tracing::info!(file = %path.display(), "API token created (mutations need it, or root over the Unix socket)");
    } else {
        tracing::info!(file = %path.display(), "API token read (mutations need it, or root over the Unix socket)");
    }
    Ok(ApiAccess::new(
        token,
        path.clone(),
        config.api_socket.clone(),
    ))
}

fn node_resources(config: &Config) -> garrison_agent::isolation::node::NodeResources {
    let iso = &config.isolation;
    garrison_agent::isolation::node::NodeResources::detect(
        &iso.launcher.work_dir,
        &iso.ports,
        iso.reserved.clone(),
    )
}

/// Resolves who this agent is to the control: the id (kept in
/// `<state_dir>/agent-id` across restarts), host name and advertised address.
fn link_config(
    config: &Config,
    c: &garrison_agent::config::ControlConfig,
) -> Result<garrison_agent::control_link::LinkConfig> {
    let agent_id = match &c.agent_id {
        Some(id) => id.clone(),
        None => {
            let path = config.state_dir.join("agent-id");
            match std::fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
                _ => {
                    let id = format!(
                        "agent-{:016x}",
                        garrison_agent::digest::fnv1a(
                            format!("{:?}{}", std::time::SystemTime::now(), std::process::id())
                                .as_bytes()
                        )
                    );
                    std::fs::create_dir_all(&config.state_dir)?;
                    std::fs::write(&path, &id)
                        .with_context(|| format!("writing {}", path.display()))?;
                    id
                }
            }
        }
    };
    let hostname = match &c.hostname {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
    };
    let ip = match c.advertise_ip {
        Some(ip) => ip,
        None => {
            // The local address a packet to the control would leave from.
            let authority = c
                .stream_url
                .trim_start_matches("ws://")
                .trim_start_matches("wss://")
                .split('/')
                .next()
                .unwrap_or_default();
            let target = std::net::ToSocketAddrs::to_socket_addrs(authority)
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("resolving the control address {authority}"))?;
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = std::net::UdpSocket::bind(bind)?;
            sock.connect(target)?;
            sock.local_addr()?.ip()
        }
    };
    let tls = match &c.ca_file {
        Some(path) if c.stream_url.starts_with("wss://") => {
            let pem = std::fs::read(path)
                .with_context(|| format!("control.ca_file: reading {}", path.display()))?;
            Some(
                garrison_agent::control_link::tls_config(&pem)
                    .map_err(|e| anyhow::anyhow!("control.ca_file {}: {e}", path.display()))?,
            )
        }
        _ => None,
    };
    Ok(garrison_agent::control_link::LinkConfig {
        tls,
        join_token: c.join_token.clone(),
        credential_path: config.state_dir.join("control-credential.json"),
        stream_url: c.stream_url.clone(),
        agent_id,
        hostname,
        ip,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
