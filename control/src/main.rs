//! `garrison-control`:
//! - `simulate FILE [--seed N]` runs the allocator on a scenario and prints
//!   JSON (see `garrison_control::simulate`);
//! - `dns-records --mesos-state FILE` prints the Mesos-DNS records of a master
//!   state as `{"A":{…},"AAAA":{…},"SRV":{…}}` (see `garrison_control::dns`).
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use garrison_control::dns::labels::LabelRule;
use garrison_control::dns::records::{GeneratorConfig, generate};
use garrison_control::dns::state::{IpSource, MasterState};

#[derive(Parser)]
#[command(name = "garrison-control", version, about = "Garrison's control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
