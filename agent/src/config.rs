//! The agent's configuration: a TOML file (`--config`), every key also a flag;
//! flags win. Unknown keys and bad values are rejected at start with the key,
//! the value and why. Parsing and validation are pure.
//!
//! ```toml
//! api = "127.0.0.1:61421"          # HTTP API listen address
//! dataplane = "auto"               # auto | ebpf | nfqueue
//! cgroup = "/sys/fs/cgroup/unified" # default: the cgroup2 mount root
//! bpffs = "/sys/fs/bpf/garrison"   # pin directory
//! named_vip_range = "11.0.0.0/8"   # where named VIPs get addresses
//! dns_domain = "l4lb.thisdcos.directory"
//! state_dir = "/var/lib/garrison"  # named VIP allocations survive restarts here
//! api_token_file = "/var/lib/garrison/api-token" # default <state_dir>/api-token; created 0600
//! api_socket = "/var/lib/garrison/agent.sock"    # default <state_dir>/agent.sock; "" for none
//! cleanup_on_exit = false          # true: remove the pinned data plane on exit
//!
//! [sources]
//! vips_file = "/etc/garrison/vips.json"
//! vips_poll_ms = 500
//! mesos_state = ["http://127.0.0.1:5051/state"]
//! mesos_poll_ms = 2000
//! mesos_timeout_ms = 5000
//! grace_secs = 60                  # a failing source keeps its last table this long
//!
//! [health]                         # the passive failure detector
//! timeout_ms = 400                 # a connect unanswered this long is a failure
//! max_failures = 5                 # consecutive failures that take a backend out
//! backoff_secs = 30                # retried this long after its last failure
//!
//! [nfqueue]                        # the NFQUEUE data path (dataplane = "nfqueue")
//! queues = "50:58"                 # --queue-balance range, one worker per queue
//! fail_open = false                # true: SYNs the agent misses go to the VIP address
//!
//! [isolation]                      # tasks (POST /v1/tasks), /monitor/statistics, /state
//! enabled = true
//! work_dir = "/var/lib/garrison"   # sandboxes in <work_dir>/tasks/<id>
//! isolators = ["cpu", "memory", "pids", "disk/du"]
//! disk_watch_ms = 15000            # disk/du: how often sandboxes are measured
//! disk_enforce = true              # disk/du: kill a task over its disk resource
//! cpu_hard_limit = true            # cpu.max / cfs_quota as well as shares
//! pids_max = 4096
//! kill_grace_secs = 3
//! kill_tasks_on_exit = false       # false: tasks outlive the agent and are re-adopted at its restart
//! sandbox_gc_secs = 604800         # ended tasks and their sandboxes are kept this long
//! ports = "[31000-32000]"
//! default_user = "nobody"          # tasks whose request (app `user`) names no user run as this one
//! allow_root_tasks = false         # true: a task may ask for a uid-0 user (it still has no capability)
//! # reserved = { role = "slave_public", cpus = 1, mem = 1024, disk = 0 }
//! # hook_command = "/usr/local/bin/task-hook"  # run as `HOOK pre-launch|post-exit`
//!
//! [control]                        # follow a garrison-control
//! url = "https://10.0.0.1:8080"    # http:// only to a loopback control (or insecure = true)
//! ca_file = "/etc/garrison/control-ca.pem"   # the control's DATA_DIR/tls/ca.pem
//! join_token = "…"                 # first start only: `garrison-control token create --join`
//! # agent_id, hostname, advertise_ip: default to STATE_DIR/agent-id, the host name, the route to the control
//! ```
//!
//! After joining, the agent keeps its own credential in
//! `<state_dir>/control-credential.json` (0600) and uses it from then on.
//!
//! Tasks never run with the agent's privileges: as their user (`default_user`
//! when the request names none; a uid-0 user only with `allow_root_tasks`),
//! with every capability set empty, `no_new_privs`, a clean environment and
//! none of the agent's descriptors. With tasks enabled the agent also keeps
//! this file, `state_dir` and the `bpffs` pin directory unreadable to them
//! (see `isolation::privilege`).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::vip::named::{Ipv4Range, L4LB_ZONE};

/// The file as written (every field optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub api: Option<String>,
    pub dataplane: Option<String>,
    pub cgroup: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub named_vip_range: Option<String>,
    pub dns_domain: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub cleanup_on_exit: Option<bool>,
    pub api_token_file: Option<PathBuf>,
    pub api_socket: Option<PathBuf>,
    #[serde(default)]
    pub sources: RawSources,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub nfqueue: RawNfqueue,
    #[serde(default)]
    pub isolation: RawIsolation,
    #[serde(default)]
    pub control: RawControl,
}

/// `[control]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    pub url: Option<String>,
    pub agent_id: Option<String>,
    pub hostname: Option<String>,
    pub advertise_ip: Option<String>,
    /// The CA that signed the control's certificate (`https://` controls).
    pub ca_file: Option<PathBuf>,
    /// A join token (`garrison-control token create --join`) for the first
    /// connection; afterwards the agent's own credential is used.
    pub join_token: Option<String>,
    /// Allow a plain `http://` control on a non-loopback address.
    pub insecure: Option<bool>,
}

/// The validated `[control]` table: the agent follows a `garrison-control`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// `wss://host:port/v1/agents/stream` (from `https://host:port`), or
    /// `ws://…` from `http://` (loopback only unless `insecure`).
    pub stream_url: String,
    /// The control's CA (required for `https://`).
    pub ca_file: Option<PathBuf>,
    pub join_token: Option<String>,
    /// `None`: read from (or created in) `<state_dir>/agent-id`.
    pub agent_id: Option<String>,
    /// `None`: the system host name.
    pub hostname: Option<String>,
    /// `None`: the local address the control is reached from.
    pub advertise_ip: Option<std::net::IpAddr>,
}

/// Whether `authority` (`host:port`) names a loopback host.
fn loopback_authority(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_control(c: RawControl) -> Result<Option<ControlConfig>, ConfigError> {
    let Some(url) = c.url else {
        return Ok(None);
    };
    const EXPECTED: &str = "expected https://HOST:PORT (or http://127.0.0.1:PORT)";
    let (tls, rest) = if let Some(r) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("wss://"))
    {
        (true, r)
    } else if let Some(r) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
    {
        (false, r)
    } else {
        return Err(invalid("control.url", &url, EXPECTED));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || !authority.contains(':') {
        return Err(invalid("control.url", &url, EXPECTED));
    }
    if !tls && !loopback_authority(authority) && c.insecure != Some(true) {
        return Err(invalid(
            "control.url",
            &url,
            "plain http:// only to a loopback control; use https:// with control.ca_file (or control.insecure = true)",
        ));
    }
    if tls && c.ca_file.is_none() {
        return Err(invalid(
            "control.ca_file",
            "",
            "an https:// control needs the CA that signed its certificate (the control's DATA_DIR/tls/ca.pem)",
        ));
    }
    if let Some(id) = &c.agent_id {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(invalid(
                "control.agent_id",
                id,
                "1 to 64 of a-z A-Z 0-9 - _ .",
            ));
        }
    }
    let advertise_ip = match &c.advertise_ip {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| invalid("control.advertise_ip", s, "not an IP address"))?,
        ),
    };
    Ok(Some(ControlConfig {
        stream_url: format!(
            "{}://{authority}/v1/agents/stream",
            if tls { "wss" } else { "ws" }
        ),
        ca_file: c.ca_file,
        join_token: c.join_token,
        agent_id: c.agent_id,
        hostname: c.hostname,
        advertise_ip,
    }))
}

/// `[isolation]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIsolation {
    pub enabled: Option<bool>,
    pub work_dir: Option<PathBuf>,
    pub isolators: Option<Vec<String>>,
    pub cpu_hard_limit: Option<bool>,
    pub pids_max: Option<u64>,
    pub kill_grace_secs: Option<u64>,
    pub ports: Option<String>,
    pub reserved: Option<crate::isolation::node::Reservation>,
    pub hook_command: Option<PathBuf>,
    pub disk_watch_ms: Option<u64>,
    pub disk_enforce: Option<bool>,
    pub kill_tasks_on_exit: Option<bool>,
    pub sandbox_gc_secs: Option<u64>,
    pub default_user: Option<String>,
    pub allow_root_tasks: Option<bool>,
}

/// The validated `[isolation]` table.
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    pub enabled: bool,
    pub launcher: crate::isolation::launcher::LauncherConfig,
    pub ports: String,
    pub reserved: Option<crate::isolation::node::Reservation>,
    /// Kill every task when the agent stops (default: leave them running; the
    /// next agent on the same work directory re-adopts them).
    pub kill_tasks_on_exit: bool,
}

/// `[nfqueue]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNfqueue {
    pub queues: Option<String>,
    pub fail_open: Option<bool>,
}

/// `[health]` as written: the passive failure detector.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub timeout_ms: Option<u64>,
    pub max_failures: Option<u32>,
    pub backoff_secs: Option<u64>,
}

/// `[sources]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    pub vips_file: Option<PathBuf>,
    pub vips_poll_ms: Option<u64>,
    pub mesos_state: Option<Vec<String>>,
    pub mesos_poll_ms: Option<u64>,
    pub mesos_timeout_ms: Option<u64>,
    pub grace_secs: Option<u64>,
}

/// Which data path programs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneKind {
    /// eBPF when cgroup sock_addr programs can be attached, else NFQUEUE.
    Auto,
    Ebpf,
    Nfqueue,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: SocketAddr,
    pub dataplane: DataplaneKind,
    /// `None`: the cgroup2 mount root, found at start.
    pub cgroup: Option<PathBuf>,
    pub bpffs: PathBuf,
    pub named_vip_range: Ipv4Range,
    pub dns_domain: String,
    pub state_dir: PathBuf,
    pub cleanup_on_exit: bool,
    /// The agent's API token (see `api::credentials`).
    pub api_token_file: PathBuf,
    /// The API's Unix socket (`None`: not served).
    pub api_socket: Option<PathBuf>,
    pub sources: SourcesConfig,
    pub health: crate::health::HealthConfig,
    pub nfqueue: crate::dataplane::NfqueueConfig,
    pub isolation: IsolationConfig,
    /// Following a control (`None`: standalone).
    pub control: Option<ControlConfig>,
}

/// The validated `[sources]` table.
#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub vips_file: Option<PathBuf>,
    pub vips_poll: Duration,
    pub mesos_state: Vec<String>,
    pub mesos_poll: Duration,
    pub mesos_timeout: Duration,
    /// How long a failing source keeps its last good table.
    pub grace: Duration,
}

/// A rejected configuration: which key, which value, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    #[error("config key `{key}` = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

fn validate_isolation(i: RawIsolation) -> Result<IsolationConfig, ConfigError> {
    use crate::isolation::launcher::{ISOLATORS, LauncherConfig};
    let defaults = LauncherConfig::default();
    let isolators = i.isolators.unwrap_or(defaults.isolators);
    for name in &isolators {
        if !ISOLATORS.contains(&name.as_str()) {
            return Err(invalid(
                "isolation.isolators",
                name,
                format!("unknown isolator (known: {})", ISOLATORS.join(", ")),
            ));
        }
    }
    let work_dir = i.work_dir.unwrap_or(defaults.work_dir);
    if !work_dir.is_absolute() {
        return Err(invalid(
            "isolation.work_dir",
            work_dir.display(),
            "must be an absolute path",
        ));
    }
    if let Some(h) = &i.hook_command
        && !h.is_absolute()
    {
        return Err(invalid(
            "isolation.hook_command",
            h.display(),
            "must be an absolute path",
        ));
    }
    let pids_max = i.pids_max.unwrap_or(defaults.pids_max);
    if pids_max == 0 {
        return Err(invalid("isolation.pids_max", 0, "must be at least 1"));
    }
    let ports = i.ports.unwrap_or_else(|| "[31000-32000]".into());
    crate::isolation::node::parse_ports(&ports)
        .map_err(|why| invalid("isolation.ports", &ports, why))?;
    if let Some(r) = &i.reserved
        && (r.role.is_empty() || r.cpus < 0.0 || r.mem < 0.0 || r.disk < 0.0)
    {
        return Err(invalid(
            "isolation.reserved",
            format!("{r:?}"),
            "needs a role and non-negative cpus, mem, disk",
        ));
    }
    let default_user = i.default_user.unwrap_or(defaults.default_user);
    if !garrison_proto::is_plausible_user_name(&default_user) {
        return Err(invalid(
            "isolation.default_user",
            &default_user,
            "not a user name (1 to 32 of A-Z a-z 0-9 _ . -, starting with a letter or _)",
        ));
    }
    let allow_root_tasks = i.allow_root_tasks.unwrap_or(defaults.allow_root_tasks);
    if default_user == "root" && !allow_root_tasks {
        return Err(invalid(
            "isolation.default_user",
            &default_user,
            "root tasks need isolation.allow_root_tasks = true",
        ));
    }
    Ok(IsolationConfig {
        enabled: i.enabled.unwrap_or(true),
        launcher: LauncherConfig {
            work_dir,
            isolators,
            cpu_hard_limit: i.cpu_hard_limit.unwrap_or(defaults.cpu_hard_limit),
            pids_max,
            kill_grace: i
                .kill_grace_secs
                .map_or(defaults.kill_grace, Duration::from_secs),
            hook_command: i.hook_command,
            disk_watch_interval: Duration::from_millis(i.disk_watch_ms.unwrap_or(15_000).max(100)),
            disk_enforce: i.disk_enforce.unwrap_or(true),
            sandbox_gc: i
                .sandbox_gc_secs
                .map_or(defaults.sandbox_gc, Duration::from_secs),
            default_user,
            allow_root_tasks,
        },
        ports,
        reserved: i.reserved,
        kill_tasks_on_exit: i.kill_tasks_on_exit.unwrap_or(false),
    })
}

/// `FIRST:LAST` queue numbers, at most 64 queues (one thread each).
fn parse_queue_range(s: &str) -> Result<(u16, u16), &'static str> {
    let (a, b) = s.split_once(':').unwrap_or((s, s));
    let first: u16 = a
        .trim()
        .parse()
        .map_err(|_| "expected FIRST:LAST queue numbers (0-65535), e.g. 50:58")?;
    let last: u16 = b
        .trim()
        .parse()
        .map_err(|_| "expected FIRST:LAST queue numbers (0-65535), e.g. 50:58")?;
    if last < first {
        return Err("the last queue is below the first");
    }
    if last - first >= 64 {
        return Err("at most 64 queues (one worker thread each)");
    }
    Ok((first, last))
}

fn invalid(key: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses a config file's text; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: origin.to_string(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// Reads and parses a config file.
pub fn load(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text)
}

impl RawConfig {
    /// Overlays `flags` (set fields win) on `self`.
    pub fn overlay(mut self, flags: RawConfig) -> RawConfig {
        macro_rules! take {
            ($($f:ident).+) => {
                if flags.$($f).+.is_some() {
                    self.$($f).+ = flags.$($f).+.clone();
                }
            };
        }
        take!(api);
        take!(dataplane);
        take!(cgroup);
        take!(bpffs);
        take!(named_vip_range);
        take!(dns_domain);
        take!(state_dir);
        take!(cleanup_on_exit);
        take!(api_token_file);
        take!(api_socket);
        take!(sources.vips_file);
        take!(sources.vips_poll_ms);
        take!(sources.mesos_state);
        take!(sources.mesos_poll_ms);
        take!(sources.mesos_timeout_ms);
        take!(sources.grace_secs);
        take!(health.timeout_ms);
        take!(health.max_failures);
        take!(health.backoff_secs);
        take!(nfqueue.queues);
        take!(nfqueue.fail_open);
        take!(isolation.enabled);
        take!(isolation.work_dir);
        take!(isolation.isolators);
        take!(isolation.kill_tasks_on_exit);
        take!(control.url);
        take!(control.agent_id);
        take!(control.hostname);
        take!(control.advertise_ip);
        take!(control.ca_file);
        take!(control.join_token);
        take!(control.insecure);
        self
    }

    /// Applies defaults and validates every value.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let api_s = self.api.unwrap_or_else(|| "127.0.0.1:61421".into());
        let api: SocketAddr = api_s
            .parse()
            .map_err(|_| invalid("api", &api_s, "not ADDRESS:PORT (e.g. 127.0.0.1:61421)"))?;
        let dataplane = match self.dataplane.as_deref().unwrap_or("auto") {
            "auto" => DataplaneKind::Auto,
            "ebpf" => DataplaneKind::Ebpf,
            "nfqueue" => DataplaneKind::Nfqueue,
            other => {
                return Err(invalid(
                    "dataplane",
                    other,
                    "expected auto, ebpf or nfqueue",
                ));
            }
        };
        let queues_s = self.nfqueue.queues.unwrap_or_else(|| "50:58".into());
        let queues = parse_queue_range(&queues_s)
            .map_err(|why| invalid("nfqueue.queues", &queues_s, why))?;
        let isolation = validate_isolation(self.isolation)?;
        let control = validate_control(self.control)?;
        let nfqueue = crate::dataplane::NfqueueConfig {
            queues,
            fail_open: self.nfqueue.fail_open.unwrap_or(false),
        };
        let range_s = self.named_vip_range.unwrap_or_else(|| "11.0.0.0/8".into());
        let named_vip_range: Ipv4Range = range_s
            .parse()
            .map_err(|e| invalid("named_vip_range", &range_s, e))?;
        let dns_domain = self.dns_domain.unwrap_or_else(|| L4LB_ZONE.into());
        validate_domain(&dns_domain).map_err(|why| invalid("dns_domain", &dns_domain, why))?;
        let ms = |key: &'static str,
                  v: Option<u64>,
                  default: u64,
                  min: u64|
         -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v < min {
                return Err(invalid(key, v, format!("must be at least {min}")));
            }
            Ok(Duration::from_millis(v))
        };
        let h = self.health;
        let max_failures = h.max_failures.unwrap_or(5);
        if max_failures == 0 {
            return Err(invalid("health.max_failures", 0, "must be at least 1"));
        }
        let health = crate::health::HealthConfig {
            timeout: ms("health.timeout_ms", h.timeout_ms, 400, 10)?,
            max_failures,
            backoff: Duration::from_secs(h.backoff_secs.unwrap_or(30)),
        };
        let s = self.sources;
        let mesos_state = s.mesos_state.unwrap_or_default();
        for url in &mesos_state {
            if !(url.starts_with("http://") || url.starts_with("file://")) {
                return Err(invalid(
                    "sources.mesos_state",
                    url,
                    "expected an http:// or file:// URL",
                ));
            }
        }
        // An empty api_socket turns the socket off.
        let socket_given = self.api_socket.is_some();
        let api_socket = self.api_socket.filter(|p| !p.as_os_str().is_empty());
        for (key, path) in [
            ("bpffs", &self.bpffs),
            ("cgroup", &self.cgroup),
            ("state_dir", &self.state_dir),
            ("api_token_file", &self.api_token_file),
            ("api_socket", &api_socket),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                return Err(invalid(key, p.display(), "must be an absolute path"));
            }
        }
        // sun_path holds 108 bytes with the terminating NUL.
        if let Some(p) = &api_socket
            && p.as_os_str().len() > 107
        {
            return Err(invalid(
                "api_socket",
                p.display(),
                "a Unix socket path is at most 107 bytes",
            ));
        }
        let state_dir = self.state_dir.unwrap_or_else(|| "/var/lib/garrison".into());
        let api_token_file = self
            .api_token_file
            .unwrap_or_else(|| state_dir.join("api-token"));
        let api_socket = if socket_given {
            api_socket
        } else {
            Some(state_dir.join("agent.sock"))
        };
        Ok(Config {
            api,
            dataplane,
            cgroup: self.cgroup,
            bpffs: self.bpffs.unwrap_or_else(|| "/sys/fs/bpf/garrison".into()),
            named_vip_range,
            dns_domain,
            state_dir,
            api_token_file,
            api_socket,
            cleanup_on_exit: self.cleanup_on_exit.unwrap_or(false),
            health,
            nfqueue,
            isolation,
            control,
            sources: SourcesConfig {
                vips_file: s.vips_file,
                vips_poll: ms("sources.vips_poll_ms", s.vips_poll_ms, 500, 10)?,
                mesos_state,
                mesos_poll: ms("sources.mesos_poll_ms", s.mesos_poll_ms, 2000, 50)?,
                mesos_timeout: ms("sources.mesos_timeout_ms", s.mesos_timeout_ms, 5000, 50)?,
                grace: Duration::from_secs(s.grace_secs.unwrap_or(60)),
            },
        })
    }
}

fn validate_domain(d: &str) -> Result<(), String> {
    if d.is_empty() || d.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("label {label:?} is not a lowercase RFC 1123 label"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_section_is_validated_with_the_key_named() {
        let parse = |toml: &str| -> Result<Config, ConfigError> {
            let raw: RawConfig = toml::from_str(toml).unwrap();
            raw.validate()
        };
        let c = parse("[control]\nurl = \"https://10.0.0.1:8080\"\nca_file = \"/etc/garrison/ca.pem\"\nagent_id = \"node-1\"\nadvertise_ip = \"10.0.0.11\"\n").unwrap();
        let control = c.control.unwrap();
        assert_eq!(control.stream_url, "wss://10.0.0.1:8080/v1/agents/stream");
        let local = parse("[control]\nurl = \"http://127.0.0.1:8080\"\n").unwrap();
        assert_eq!(
            local.control.unwrap().stream_url,
            "ws://127.0.0.1:8080/v1/agents/stream"
        );
        let insecure =
            parse("[control]\nurl = \"http://10.0.0.1:8080\"\ninsecure = true\n").unwrap();
        assert_eq!(
            insecure.control.unwrap().stream_url,
            "ws://10.0.0.1:8080/v1/agents/stream"
        );
        assert_eq!(control.advertise_ip, Some("10.0.0.11".parse().unwrap()));
        assert!(parse("").unwrap().control.is_none());
        for (toml, key) in [
            ("[control]\nurl = \"https://x:1\"\n", "control.ca_file"),
            ("[control]\nurl = \"http://10.0.0.1:1\"\n", "control.url"),
            ("[control]\nurl = \"ftp://x:1\"\n", "control.url"),
            ("[control]\nurl = \"http://nohostport\"\n", "control.url"),
            (
                "[control]\nurl = \"http://127.0.0.1:1\"\nagent_id = \"a/b\"\n",
                "control.agent_id",
            ),
            (
                "[control]\nurl = \"http://localhost:1\"\nadvertise_ip = \"nope\"\n",
                "control.advertise_ip",
            ),
        ] {
            let err = parse(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = toml::from_str::<RawConfig>("[control]\nurll = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn task_users_are_validated_with_the_key_named() {
        let parse = |toml: &str| parse("agent.toml", toml).unwrap().validate();
        let c = parse("").unwrap();
        assert_eq!(c.isolation.launcher.default_user, "nobody");
        assert!(!c.isolation.launcher.allow_root_tasks);
        let c =
            parse("[isolation]\ndefault_user = \"www-data\"\nallow_root_tasks = true\n").unwrap();
        assert_eq!(c.isolation.launcher.default_user, "www-data");
        assert!(c.isolation.launcher.allow_root_tasks);
        for (toml, needle) in [
            ("[isolation]\ndefault_user = \"1000\"\n", "not a user name"),
            ("[isolation]\ndefault_user = \"a b\"\n", "not a user name"),
            ("[isolation]\ndefault_user = \"root\"\n", "allow_root_tasks"),
        ] {
            let e = parse(toml).unwrap_err().to_string();
            assert!(
                e.contains("`isolation.default_user`") && e.contains(needle),
                "{toml}: {e}"
            );
        }
        assert!(parse("[isolation]\ndefault_user = \"root\"\nallow_root_tasks = true\n").is_ok());
        let e = super::parse("agent.toml", "[isolation]\nallow_root_tasks = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_root_tasks"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.api.to_string(), "127.0.0.1:61421");
        assert_eq!(c.dataplane, DataplaneKind::Auto);
        assert_eq!(c.nfqueue.queues, (50, 58));
        assert!(!c.nfqueue.fail_open);
        assert_eq!(c.named_vip_range.to_string(), "11.0.0.0/8");
        assert_eq!(c.dns_domain, "l4lb.thisdcos.directory");
        assert_eq!(c.sources.mesos_poll, Duration::from_secs(2));
        assert_eq!(c.sources.grace, Duration::from_secs(60));
        assert_eq!(
            c.api_token_file,
            PathBuf::from("/var/lib/garrison/api-token")
        );
        assert_eq!(
            c.api_socket,
            Some(PathBuf::from("/var/lib/garrison/agent.sock"))
        );
    }

    #[test]
    fn api_credentials_follow_the_state_dir_and_the_socket_can_be_off() {
        let c = parse("a.toml", "state_dir = \"/srv/g\"\n")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.api_token_file, PathBuf::from("/srv/g/api-token"));
        assert_eq!(c.api_socket, Some(PathBuf::from("/srv/g/agent.sock")));
        let c = parse("a.toml", "api_socket = \"\"\n")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.api_socket, None);
        let e = parse("a.toml", "api_token_file = \"rel/token\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api_token_file") && e.contains("absolute"),
            "{e}"
        );
        let e = parse("a.toml", "[isolation]\napi_token = \"0123456789abcdef\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api_token"),
            "the old key is refused by name: {e}"
        );
    }

    #[test]
    fn file_then_flags() {
        let file = parse(
            "agent.toml",
            "api = \"127.0.0.1:9000\"\n[sources]\nmesos_state = [\"http://10.0.0.1:5051/state\"]\ngrace_secs = 5\n",
        )
        .unwrap();
        let flags = RawConfig {
            api: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        let c = file.overlay(flags).validate().unwrap();
        assert_eq!(c.api.port(), 9001, "flags win");
        assert_eq!(c.sources.mesos_state, ["http://10.0.0.1:5051/state"]);
        assert_eq!(c.sources.grace, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_key_value_and_why() {
        let e = parse("/etc/garrison/agent.toml", "apii = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/garrison/agent.toml") && e.contains("apii"),
            "{e}"
        );
        let e = parse("a.toml", "[sources]\nmesos = []")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mesos"), "{e}");
        let e = parse("a.toml", "api = 5").unwrap_err().to_string();
        assert!(e.contains("api"), "{e}");

        let bad = |raw: RawConfig| raw.validate().unwrap_err().to_string();
        let e = bad(RawConfig {
            api: Some("localhost".into()),
            ..Default::default()
        });
        assert!(
            e.contains("`api`") && e.contains("\"localhost\"") && e.contains("ADDRESS:PORT"),
            "{e}"
        );
        let e = bad(RawConfig {
            dataplane: Some("ipvs".into()),
            ..Default::default()
        });
        assert!(
            e.contains("`dataplane`") && e.contains("auto, ebpf or nfqueue"),
            "{e}"
        );
        let e = bad(RawConfig {
            isolation: RawIsolation {
                isolators: Some(vec!["cpu".into(), "gpu".into()]),
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            e.contains("`isolation.isolators`")
                && e.contains("\"gpu\"")
                && e.contains("unknown isolator"),
            "{e}"
        );
        let e = bad(RawConfig {
            nfqueue: RawNfqueue {
                queues: Some("58:50".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            e.contains("`nfqueue.queues`") && e.contains("\"58:50\"") && e.contains("below"),
            "{e}"
        );
        let e = bad(RawConfig {
            named_vip_range: Some("11.0.0.1/8".into()),
            ..Default::default()
        });
        assert!(
            e.contains("named_vip_range") && e.contains("host bits"),
            "{e}"
        );
        let e = bad(RawConfig {
            dns_domain: Some("L4LB..x".into()),
            ..Default::default()
        });
        assert!(e.contains("dns_domain"), "{e}");
        let e = bad(RawConfig {
            bpffs: Some("relative/pins".into()),
            ..Default::default()
        });
        assert!(e.contains("absolute"), "{e}");
        let mut raw = RawConfig::default();
        raw.sources.mesos_state = Some(vec!["https://leader.mesos/state".into()]);
        assert!(bad(raw).contains("sources.mesos_state"));
        let mut raw = RawConfig::default();
        raw.sources.mesos_poll_ms = Some(0);
        assert!(bad(raw).contains("at least"));
    }
}
