//! The parts of a Mesos master `/state.json` that DNS records come from
//! (serde types and pure accessors), and where a task's IP addresses come from.
//!
//! Unknown fields are ignored, missing ones default, so states from Mesos
//! 0.19 to 1.x parse. A PID (`scheduler(1)@1.2.3.11:25501`,
//! `slave(1)@[2001:db8::1]:5051`) that does not parse makes the whole state an
//! error with the field named: records built from half a state would remove
//! names that were working.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// Why a state document was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The document is not the JSON shape of a master state.
    #[error("Mesos state is not a valid master state: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
}

/// A master state: frameworks (with their tasks), agents and the leader.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MasterState {
    #[serde(default)]
    pub frameworks: Vec<Framework>,
    #[serde(default)]
    pub slaves: Vec<Agent>,
    /// `master@ip:port` of the leading master ("" when unknown).
    #[serde(default)]
    pub leader: String,
}

impl MasterState {
    /// Parses a `/state.json` document.
    pub fn parse(text: &str) -> Result<Self, StateError> {
        serde_json::from_str(text).map_err(|e| StateError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// A framework with its running and recent tasks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Framework {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    /// The scheduler's PID; absent for frameworks without one.
    #[serde(default, deserialize_with = "optional_pid")]
    pub pid: Option<Pid>,
    #[serde(default)]
    pub tasks: Vec<Task>,
}

impl Framework {
    /// Host and port the scheduler listens on: the PID's, else the
    /// framework's hostname with no port (as Mesos-DNS does).
    pub fn host_port(&self) -> (&str, Option<u16>) {
        match &self.pid {
            Some(pid) => (&pid.host, Some(pid.port)),
            None => (&self.hostname, None),
        }
    }
}

/// An agent ("slave" in the state document).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Agent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default, deserialize_with = "optional_pid")]
    pub pid: Option<Pid>,
}

/// A libprocess PID: `id@host:port`, the host possibly a bracketed IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pid {
    pub id: String,
    pub host: String,
    pub port: u16,
}

impl Pid {
    /// Parses `id@host:port` (IPv6 hosts in brackets).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, address) = text
            .split_once('@')
            .ok_or_else(|| format!("PID {text:?} has no '@'"))?;
        let (host, port) = split_host_port(address)?;
        if id.is_empty() || host.is_empty() {
            return Err(format!("PID {text:?} needs an id and a host"));
        }
        Ok(Pid {
            id: id.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Splits `host:port` or `[v6]:port` into the bare host and the port.
pub fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{address:?} opens '[' without closing it"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{address:?} has no port after ']'"))?;
        (host, port)
    } else {
        address
            .rsplit_once(':')
            .ok_or_else(|| format!("{address:?} has no ':port'"))?
    };
    let port = port
        .parse()
        .map_err(|_| format!("{address:?}: port {port:?} is not a number from 0 to 65535"))?;
    Ok((host, port))
}

fn optional_pid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pid>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => Pid::parse(t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A task as the master reports it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Task {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slave_id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub resources: TaskResources,
    #[serde(default)]
    pub discovery: Option<DiscoveryInfo>,
}

/// The task's resources; only the port ranges matter for names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskResources {
    /// Mesos' range text, e.g. `"[31354-31354, 31355-31355]"`.
    #[serde(default)]
    pub ports: Option<String>,
}

/// One status update of a task.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub timestamp: f64,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
}

/// A key/value label.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Label {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Container facts of a status: its network interfaces.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub network_infos: Vec<NetworkInfo>,
}

/// One network interface: `ip_addresses` (Mesos ≥ 0.26) or the older single
/// `ip_address`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkInfo {
    #[serde(default)]
    pub ip_addresses: Vec<IpAddressEntry>,
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// One address of an interface.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpAddressEntry {
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A task's DiscoveryInfo: the name and named ports it is published under.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: DiscoveryPorts,
}

/// `{"ports": [...]}` as Mesos nests it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryPorts {
    #[serde(default)]
    pub ports: Vec<DiscoveryPort>,
}

/// One published port.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryPort {
    #[serde(default)]
    pub number: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
}

/// Where a task's IP addresses may come from, in Mesos-DNS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// The latest TASK_RUNNING status' `container_status.network_infos`.
    NetInfo,
    /// The `Docker.NetworkSettings.IPAddress` label of that status.
    Docker,
    /// The `MesosContainerizer.NetworkSettings.IPAddress` label of that status.
    Mesos,
    /// The agent's own address.
    Host,
}

impl std::str::FromStr for IpSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "netinfo" => Ok(IpSource::NetInfo),
            "docker" => Ok(IpSource::Docker),
            "mesos" => Ok(IpSource::Mesos),
            "host" => Ok(IpSource::Host),
            other => Err(format!(
                "unknown IP source {other:?} (netinfo, docker, mesos or host)"
            )),
        }
    }
}

/// Mesos-DNS's default order (its `IPSources` default).
pub const DEFAULT_IP_SOURCES: [IpSource; 3] = [IpSource::NetInfo, IpSource::Mesos, IpSource::Host];

const DOCKER_IP_LABEL: &str = "Docker.NetworkSettings.IPAddress";
const MESOS_IP_LABEL: &str = "MesosContainerizer.NetworkSettings.IPAddress";

impl Task {
    /// Whether the task publishes a DiscoveryInfo name.
    pub fn has_discovery(&self) -> bool {
        self.discovery.as_ref().is_some_and(|d| !d.name.is_empty())
    }

    /// The status with state TASK_RUNNING and the latest timestamp (statuses
    /// come in no promised order).
    pub fn latest_running_status(&self) -> Option<&Status> {
        self.statuses
            .iter()
            .filter(|s| s.state == "TASK_RUNNING")
            .fold(None, |best: Option<&Status>, s| match best {
                Some(b) if b.timestamp >= s.timestamp => Some(b),
                _ => Some(s),
            })
    }

    /// The task's addresses from each source in turn, sources in priority
    /// order (all of them, concatenated; callers take the first of each family).
    pub fn ips(&self, sources: &[IpSource], agent_ips: &[IpAddr]) -> Vec<IpAddr> {
        let status = self.latest_running_status();
        let mut out = Vec::new();
        for source in sources {
            match source {
                IpSource::Host => out.extend_from_slice(agent_ips),
                IpSource::Docker => out.extend(
                    status
                        .into_iter()
                        .flat_map(|s| label_ips(s, DOCKER_IP_LABEL)),
                ),
                IpSource::Mesos => out.extend(
                    status
                        .into_iter()
                        .flat_map(|s| label_ips(s, MESOS_IP_LABEL)),
                ),
                IpSource::NetInfo => out.extend(status.into_iter().flat_map(network_info_ips)),
            }
        }
        out
    }

    /// The task's ports, expanded from its range text (`"[31000-31002, 31005-31005]"`).
    /// A malformed range is skipped, as Mesos-DNS does.
    pub fn ports(&self) -> Vec<u16> {
        self.resources
            .ports
            .as_deref()
            .map(expand_port_ranges)
            .unwrap_or_default()
    }
}

fn label_ips<'a>(status: &'a Status, key: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
    status
        .labels
        .iter()
        .filter(move |l| l.key == key)
        .filter_map(|l| l.value.trim().parse().ok())
}

fn network_info_ips(status: &Status) -> Vec<IpAddr> {
    let Some(container) = &status.container_status else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for info in &container.network_infos {
        if info.ip_addresses.is_empty() {
            out.extend(
                info.ip_address
                    .as_deref()
                    .and_then(|a| a.parse::<IpAddr>().ok()),
            );
        } else {
            out.extend(
                info.ip_addresses
                    .iter()
                    .filter_map(|a| a.ip_address.as_deref()?.parse::<IpAddr>().ok()),
            );
        }
    }
    out
}

/// Expands Mesos' port range text into single ports.
pub fn expand_port_ranges(text: &str) -> Vec<u16> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for range in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) else {
            continue;
        };
        out.extend(lo..=hi);
    }
    out
}

/// At most one IPv4 and one IPv6 address: the first of each in `ips`.
pub fn first_v4_and_v6(ips: &[IpAddr]) -> Vec<IpAddr> {
    let v4 = ips.iter().find(|ip| ip.is_ipv4());
    let v6 = ips.iter().find(|ip| ip.is_ipv6());
    v4.into_iter().chain(v6).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_with_ipv4_ipv6_and_refuse_garbage() {
        let p = Pid::parse("scheduler(1)@1.2.3.11:25501").unwrap();
        assert_eq!(
            (p.id.as_str(), p.host.as_str(), p.port),
            ("scheduler(1)", "1.2.3.11", 25501)
        );
        let p = Pid::parse("slave(1)@[2001:db8::1]:5051").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("2001:db8::1", 5051));
        assert!(Pid::parse("no-at-sign").is_err());
        assert!(Pid::parse("x@host").is_err());
        assert!(Pid::parse("x@[::1:5051").is_err());
        assert!(Pid::parse("x@1.2.3.4:99999").is_err());
    }

    #[test]
    fn port_ranges_expand_and_skip_malformed_parts() {
        assert_eq!(
            expand_port_ranges("[31354-31354, 31355-31355]"),
            vec![31354, 31355]
        );
        assert_eq!(
            expand_port_ranges("[31737-31739]"),
            vec![31737, 31738, 31739]
        );
        assert_eq!(expand_port_ranges("[]"), Vec::<u16>::new());
        assert_eq!(expand_port_ranges("[x-1, 5-6]"), vec![5, 6]);
    }

    #[test]
    fn latest_running_status_wins_whatever_the_order() {
        let t: Task = serde_json::from_str(
            r#"{"statuses":[
              {"state":"TASK_RUNNING","timestamp":2,"labels":[{"key":"Docker.NetworkSettings.IPAddress","value":"10.0.0.2"}]},
              {"state":"TASK_RUNNING","timestamp":3,"labels":[{"key":"Docker.NetworkSettings.IPAddress","value":"10.0.0.3"}]},
              {"state":"TASK_STARTING","timestamp":4,"labels":[{"key":"Docker.NetworkSettings.IPAddress","value":"10.0.0.4"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            t.ips(&[IpSource::Docker], &[]),
            vec!["10.0.0.3".parse::<IpAddr>().unwrap()]
        );
        assert!(t.ips(&[IpSource::Mesos], &[]).is_empty());
    }

    #[test]
    fn a_bad_pid_is_an_error_naming_the_place() {
        let err = MasterState::parse(r#"{"slaves":[{"id":"s1","pid":"slave(1)@1.2.3.4"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("port"), "{err}");
    }
}
