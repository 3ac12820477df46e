//! `garrison-control`:
//! - `run` serves the Marathon API, the agents' streams and DNS (see
//!   `garrison_control::server`);
//! - `simulate FILE [--seed N]` runs the allocator on a scenario and prints
//!   JSON (see `garrison_control::simulate`);
//! - `dns-records --mesos-state FILE` prints the Mesos-DNS records of a master
//!   state as `{"A":{…},"AAAA":{…},"SRV":{…}}` (see `garrison_control::dns`).
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use garrison_control::cluster::ClusterConfig;
use garrison_control::dns::labels::LabelRule;
use garrison_control::dns::records::{GeneratorConfig, generate};
use garrison_control::dns::state::{IpSource, MasterState};
use garrison_control::server::{Control, ServerConfig};
use garrison_control::store::Store;

#[derive(Parser)]
#[command(name = "garrison-control", version, about = "Garrison's control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control server: Marathon API, agent streams, DNS.
    Run {
        /// HTTP API (Marathon, Mesos-DNS HTTP, agent streams).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// DNS server, UDP and TCP.
        #[arg(long, default_value = "127.0.0.1:8053")]
        dns: std::net::SocketAddr,
        /// Where the store lives.
        #[arg(long, default_value = "/var/lib/garrison-control")]
        data_dir: PathBuf,
        /// Mutations need `Authorization: token=<TOKEN>` when set.
        #[arg(long, env = "GARRISON_CONTROL_TOKEN")]
        token: Option<String>,
        /// The address published as leader/master (default: --listen).
        #[arg(long)]
        advertise: Option<std::net::SocketAddr>,
        /// The Mesos-DNS zone.
        #[arg(long, default_value = "mesos")]
        domain: String,
        /// Silence after which an agent is lost and its tasks are replaced.
        #[arg(long, default_value_t = 10.0)]
        agent_timeout_secs: f64,
        /// How often agents heartbeat.
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Forward names outside our zones to this DNS server (default: refuse them).
        #[arg(long)]
        dns_forward: Option<std::net::SocketAddr>,
    },
    /// Run the DRF allocator on a scenario file and print the outcome as JSON.
    Simulate {
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print the Mesos-DNS records of a Mesos master state file.
    DnsRecords {
        /// A master `/state.json` document.
        #[arg(long)]
        mesos_state: PathBuf,
        /// The zone the names live under.
        #[arg(long, default_value = "mesos")]
        domain: String,
        /// Where task addresses come from, highest priority first.
        #[arg(long, default_value = "netinfo,mesos,host", value_delimiter = ',')]
        ip_sources: Vec<IpSource>,
        /// Label rule for task and framework names.
        #[arg(long, default_value = "rfc1123")]
        label_rule: LabelRule,
        /// Fallback masters (`ip:port`), numbered master0, master1, … in order.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            listen,
            dns,
            data_dir,
            token,
            advertise,
            domain,
            agent_timeout_secs,
            heartbeat_ms,
            dns_forward,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            if !(agent_timeout_secs.is_finite() && agent_timeout_secs > 0.0) {
                anyhow::bail!("--agent-timeout-secs must be a positive number");
            }
            let store = Store::open(&data_dir)?;
            let cluster = ClusterConfig {
                heartbeat_ms: heartbeat_ms.max(50),
                agent_timeout_ms: (agent_timeout_secs * 1000.0) as u64,
                ..ClusterConfig::default()
            };
            let config = ServerConfig {
                advertise: advertise.unwrap_or(listen),
                token,
                domain: domain.trim_matches('.').to_string(),
                tick: std::time::Duration::from_millis(250),
                dns_forward,
            };
            let control = Control::new(store, cluster, config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let http = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the HTTP API to {listen}"))?;
                let udp = tokio::net::UdpSocket::bind(dns)
                    .await
                    .with_context(|| format!("binding DNS (UDP) to {dns}"))?;
                let tcp = tokio::net::TcpListener::bind(dns)
                    .await
                    .with_context(|| format!("binding DNS (TCP) to {dns}"))?;
                tracing::info!(%listen, %dns, data_dir = %data_dir.display(), "garrison-control serving");
                let shutdown = async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("SIGTERM handler");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    tracing::info!("shutting down");
                };
                garrison_control::server::run(control, http, udp, tcp, shutdown).await?;
                Ok::<(), anyhow::Error>(())
            })?;
        }
        Command::Simulate { file, seed } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let result = garrison_control::simulate::simulate(&text, seed)
                .with_context(|| format!("simulating {}", file.display()))?;
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::DnsRecords {
            mesos_state,
            domain,
            ip_sources,
            label_rule,
            masters,
        } => {
            let text = std::fs::read_to_string(&mesos_state)
                .with_context(|| format!("reading {}", mesos_state.display()))?;
            let state = MasterState::parse(&text)
                .with_context(|| format!("parsing {}", mesos_state.display()))?;
            let config = GeneratorConfig {
                domain: domain.trim_matches('.').to_string(),
                ip_sources,
                label_rule,
                masters,
                ..GeneratorConfig::default()
            };
            let records = generate(&state, &config, &system_resolve);
            println!("{}", serde_json::to_string_pretty(&records)?);
        }
    }
    Ok(())
}

/// The system resolver (getaddrinfo), for PID hosts that are names.
fn system_resolve(host: &str) -> Vec<IpAddr> {
    (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}
