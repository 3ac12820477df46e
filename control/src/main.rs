//! `garrison-control`:
//! - `run` serves the Marathon API, the agents' streams and DNS (see
//!   `garrison_control::server`), over TLS with accounts;
//! - `user add|remove|list` manages accounts in the data dir (control stopped);
//! - `token create --join|--uid` mints a join or session token with the data
//!   dir's key (works while the control runs);
//! - `agent revoke ID` revokes an agent through the running control's API
//!   (or in the store when the control is stopped);
//! - `simulate FILE [--seed N]` runs the allocator on a scenario and prints
//!   JSON (see `garrison_control::simulate`);
//! - `dns-records --mesos-state FILE` prints the Mesos-DNS records of a master
//!   state as `{"A":{…},"AAAA":{…},"SRV":{…}}` (see `garrison_control::dns`).
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use garrison_control::auth::Auth;
use garrison_control::auth::accounts::{Account, AccountRequest};
use garrison_control::auth::keys::{SigningKey, TokenKind, key_path, unix_now};
use garrison_control::cluster::ClusterConfig;
use garrison_control::dns::labels::LabelRule;
use garrison_control::dns::records::{GeneratorConfig, generate};
use garrison_control::dns::state::{IpSource, MasterState};
use garrison_control::server::listener::ApiListener;
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
        /// Certificate chain (PEM) of the API [default: the data dir's own CA issues one].
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Extra names (DNS or IP) for the generated server certificate.
        #[arg(long)]
        tls_san: Vec<String>,
        /// Serve plain HTTP (loopback only, unless --insecure).
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        no_tls: bool,
        /// Allow plain HTTP on a non-loopback address (never in production).
        #[arg(long)]
        insecure: bool,
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
    /// Accounts in the data dir (the control must be stopped; while it runs,
    /// use PUT/DELETE /acs/api/v1/users/{uid}).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[arg(long, default_value = "/var/lib/garrison-control", global = true)]
        data_dir: PathBuf,
    },
    /// Mint a token with the data dir's key (works while the control runs).
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[arg(long, default_value = "/var/lib/garrison-control", global = true)]
        data_dir: PathBuf,
    },
    /// Agents' credentials.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
        #[arg(long, default_value = "/var/lib/garrison-control", global = true)]
        data_dir: PathBuf,
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

#[derive(Subcommand)]
enum UserAction {
    /// Add a user (--password-file) or a service account (--public-key).
    Add {
        uid: String,
        #[arg(
            long,
            conflicts_with = "public_key",
            required_unless_present = "public_key"
        )]
        password_file: Option<PathBuf>,
        /// RSA public key (PEM) of a service account.
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Remove an account.
    Remove { uid: String },
    /// List the accounts (JSON lines).
    List,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Print a new token: a join token for agents (--join) or a session token (--uid).
    Create {
        #[arg(long, conflicts_with = "uid", required_unless_present = "uid")]
        join: bool,
        /// A session token for this account.
        #[arg(long)]
        uid: Option<String>,
        /// Lifetime in seconds [default: 3600 for join tokens, 5 days for sessions].
        #[arg(long)]
        ttl: Option<u64>,
    },
}

#[derive(Subcommand)]
enum AgentAction {
    /// Revoke an agent's credential, end its stream, replace its tasks.
    Revoke {
        id: String,
        /// The running control's API [default: https://127.0.0.1:8080].
        #[arg(long, default_value = "127.0.0.1:8080")]
        api: std::net::SocketAddr,
        /// The account the request is made as (a token is minted for it).
        #[arg(long = "as", default_value = garrison_control::auth::BOOTSTRAP_UID)]
        as_uid: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            listen,
            dns,
            data_dir,
            tls_cert,
            tls_key,
            tls_san,
            no_tls,
            insecure,
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
            let advertise = advertise.unwrap_or(listen);
            if no_tls && !listen.ip().is_loopback() && !insecure {
                anyhow::bail!(
                    "refusing plain HTTP on {listen}: not a loopback address. Drop --no-tls (TLS with the data dir's CA, or --tls-cert/--tls-key), or add --insecure"
                );
            }
            let tls = if no_tls {
                None
            } else if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                Some(garrison_control::tls::server_config(cert, key)?)
            } else {
                let names =
                    garrison_control::tls::server_names(&[listen.ip(), advertise.ip()], &tls_san);
                let files = garrison_control::tls::ensure_own_ca(&data_dir, &names)?;
                tracing::info!(ca = %files.ca_cert.display(), "TLS with the control's own CA");
                Some(garrison_control::tls::server_config(
                    &files.server_cert,
                    &files.server_key,
                )?)
            };
            let store = std::sync::Arc::new(Store::open(&data_dir)?);
            let auth = std::sync::Arc::new(Auth::open(&data_dir, store.clone())?);
            let cluster = ClusterConfig {
                heartbeat_ms: heartbeat_ms.max(50),
                agent_timeout_ms: (agent_timeout_secs * 1000.0) as u64,
                ..ClusterConfig::default()
            };
            let config = ServerConfig {
                advertise,
                tls: tls.is_some(),
                domain: domain.trim_matches('.').to_string(),
                tick: std::time::Duration::from_millis(250),
                dns_forward,
            };
            let control = Control::new(store, auth, cluster, config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let http = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the HTTP API to {listen}"))?;
                let http = ApiListener::new(http, tls)?;
                let udp = tokio::net::UdpSocket::bind(dns)
                    .await
                    .with_context(|| format!("binding DNS (UDP) to {dns}"))?;
                let tcp = tokio::net::TcpListener::bind(dns)
                    .await
                    .with_context(|| format!("binding DNS (TCP) to {dns}"))?;
                tracing::info!(%listen, %dns, data_dir = %data_dir.display(), tls = !no_tls, "garrison-control serving");
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
        Command::User { action, data_dir } => user(action, &data_dir)?,
        Command::Token { action, data_dir } => token(action, &data_dir)?,
        Command::Agent { action, data_dir } => agent(action, &data_dir)?,
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

/// `user add|remove|list` on the store (the control must be stopped).
fn user(action: UserAction, data_dir: &std::path::Path) -> Result<()> {
    let store = Store::open(data_dir).context(
        "accounts are edited in the store while the control is stopped; while it runs, use PUT/DELETE /acs/api/v1/users/{uid}",
    )?;
    match action {
        UserAction::Add {
            uid,
            password_file,
            public_key,
            description,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let req = AccountRequest {
                description: Some(description),
                password: password_file
                    .as_ref()
                    .map(read)
                    .transpose()?
                    .map(|p| p.trim_end_matches(['\r', '\n']).to_string()),
                public_key: public_key.as_ref().map(read).transpose()?,
            };
            if store.load_accounts()?.iter().any(|a| a.uid == uid) {
                anyhow::bail!("account {uid:?} exists (remove it first)");
            }
            let account = Account::from_request(&uid, req)?;
            store.put_account(&account)?;
            println!("{}", account.view());
        }
        UserAction::Remove { uid } => {
            if !store.load_accounts()?.iter().any(|a| a.uid == uid) {
                anyhow::bail!("account {uid:?} does not exist");
            }
            store.delete_account(&uid)?;
        }
        UserAction::List => {
            for a in store.load_accounts()? {
                println!("{}", a.view());
            }
        }
    }
    Ok(())
}

/// `token create`: minted with the key file (no store access).
fn token(action: TokenAction, data_dir: &std::path::Path) -> Result<()> {
    let TokenAction::Create { join, uid, ttl } = action;
    let key = SigningKey::load(&key_path(data_dir))?;
    let token = match uid {
        Some(uid) if !join => key.issue(
            &uid,
            TokenKind::Session,
            unix_now() + ttl.unwrap_or(garrison_control::auth::SESSION_SECS),
        ),
        _ => key.issue(
            "agent-join",
            TokenKind::Join,
            unix_now() + ttl.unwrap_or(garrison_control::auth::JOIN_SECS),
        ),
    };
    println!("{token}");
    Ok(())
}

/// `agent revoke`: through the running control, or the store when stopped.
fn agent(action: AgentAction, data_dir: &std::path::Path) -> Result<()> {
    let AgentAction::Revoke { id, api, as_uid } = action;
    match Store::open(data_dir) {
        Ok(store) => {
            store.delete_agent_credential(&id)?;
            println!("agent {id}: credential deleted (the control was not running)");
            return Ok(());
        }
        Err(garrison_control::store::StoreError::Locked { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let key = SigningKey::load(&key_path(data_dir))?;
    let token = key.issue(&as_uid, TokenKind::Session, unix_now() + 60);
    let ca_path = garrison_control::tls::CaFiles::in_dir(data_dir).ca_cert;
    let client = match std::fs::read(&ca_path) {
        Ok(ca) => garrison_control::client::ApiClient::tls(api, &ca)?,
        Err(_) => garrison_control::client::ApiClient::plain(api),
    }
    .with_token(token);
    let (status, body) = client
        .request("DELETE", &format!("/v1/agents/{id}"), None)
        .with_context(|| format!("asking the control at {api}"))?;
    if status != 200 {
        anyhow::bail!("revoking agent {id}: {status} {body}");
    }
    println!("{body}");
    Ok(())
}

/// The system resolver (getaddrinfo), for PID hosts that are names.
fn system_resolve(host: &str) -> Vec<IpAddr> {
    (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}
