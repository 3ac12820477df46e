//! What `garrison-control` and `garrison-agent` share: their messages, and the pure rules both apply.
//!
//! Messages between `garrison-control` and `garrison-agent`:
//!
//! One WebSocket per agent (`GET /v1/agents/stream` on the control), JSON text
//! frames, each frame one [`AgentMessage`] (agent → control) or
//! [`ControlMessage`] (control → agent), tagged by `"type"`.
//!
//! The flow: the agent connects and sends [`AgentMessage::Register`] with its
//! resources and every task it still runs (so either side may restart); the
//! control answers [`ControlMessage::Registered`], kills what it does not
//! know ([`ControlMessage::Kill`]), sends the current [`ControlMessage::VipTable`]
//! and from then on launch and kill orders and new tables. The agent sends a
//! heartbeat every `heartbeat_interval_ms`, a [`AgentMessage::TaskStatus`] on
//! every task state or health change, and a [`AgentMessage::VipAck`] with the
//! revision of each table once it is programmed. Every message is idempotent:
//! replaying a launch of a running task, a kill of a gone task or an old table
//! changes nothing.
//!
//! Types at every boundary: addresses are [`std::net::IpAddr`] (text on the
//! wire: `"10.0.0.1"`, `"fd00::1"`), task states [`TaskState`] (Mesos' names),
//! VIP protocols [`Protocol`] (`"tcp"`, `"udp"`), health-check protocols
//! [`HealthCheckProtocol`] (Marathon's names); ports are host order numbers.
//! The JSON is the same text as when these were strings. A frame that does
//! not parse — a state, protocol or address outside its type among them — is
//! refused whole: the receiver logs it and skips that frame only (the
//! stream stays up; a refused `register` is the exception: the control closes
//! that stream, as for any unreadable first frame).
//!
//! Also shared, because both sides must compute them the same way:
//! [`named`] (named VIP DNS names and addresses) and [`digest`] (the stable hash).
pub mod digest;
pub mod kinds;
pub mod named;

pub use kinds::{HealthCheckProtocol, Probe, Protocol, TaskState, UnknownName};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest an agent waits between attempts to reach the control (it
/// starts at 100 ms and doubles). A restarted control waits this much longer
/// than the agent timeout before it replaces the tasks of agents that have
/// not come back.
pub const RECONNECT_MAX_MS: u64 = 5_000;

/// Agent → control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    Register(Registration),
    Heartbeat,
    TaskStatus(TaskStatus),
    VipAck {
        revision: u64,
    },
    /// Connections the agent's data path steered per VIP (`ip:port/tcp`,
    /// [`vip_key`]), cumulative since the agent started; sent with
    /// heartbeats when they changed. The control derives rates (autoscale).
    VipCounters {
        counters: BTreeMap<String, u64>,
    },
    /// The answer to a [`ControlMessage::ApiRequest`] (body as text, at
    /// most 8 MiB: the agent's API is JSON).
    ApiResponse {
        request_id: u64,
        status: u16,
        #[serde(default)]
        content_type: Option<String>,
        body: String,
    },
}

/// The key of a VIP in [`AgentMessage::VipCounters`]: `10.0.0.1:80/tcp`,
/// `[fd00::1]:80/udp`.
pub fn vip_key(ip: std::net::IpAddr, port: u16, protocol: Protocol) -> String {
    format!("{}/{protocol}", std::net::SocketAddr::new(ip, port))
}

/// Who the agent is and what it offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Stable across restarts (from the agent's config or work dir).
    pub agent_id: String,
    pub hostname: String,
    /// The address tasks on this agent are reached at.
    pub ip: std::net::IpAddr,
    pub resources: AgentResources,
    /// Tasks the agent runs now (any state it still reports).
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

/// An agent's total resources, as its `/state` reports them; the totals
/// include `reserved` (the rest is unreserved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentResources {
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
    /// Mesos range text: `"[31000-32000]"`.
    pub ports: String,
    /// A static reservation: role and what it holds.
    #[serde(default)]
    pub reserved: Option<Reservation>,
}

/// Resources set aside for one role: in a [`Registration`] and in the
/// agent's configuration (`[isolation.reserved]`), one type for both. Unknown
/// keys are refused (a misspelt key in the configuration must not reserve
/// nothing silently), so a field added here is a wire change both sides need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub role: String,
    #[serde(default)]
    pub cpus: f64,
    /// MB.
    #[serde(default)]
    pub mem: f64,
    /// MB.
    #[serde(default)]
    pub disk: f64,
}

/// A task's state on its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    #[serde(default)]
    pub reason: Option<String>,
    /// Result of the task's health checks (`None`: none defined or none run yet).
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// Control → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    Registered {
        heartbeat_interval_ms: u64,
    },
    Launch(LaunchTask),
    Kill {
        task_id: String,
    },
    VipTable(VipTable),
    /// Sent once, right after a joining agent (one that connected with a
    /// join token) registered: its own secret, bound to `agent_id`. The agent
    /// keeps it (0600) and presents `Authorization: agent <id>:<secret>` from
    /// then on.
    Credential {
        agent_id: String,
        secret: String,
    },
    /// A read of the agent's own API for Admin Router's `/agent/<id>/…`
    /// (GET only; `path` with its query). Answered by
    /// [`AgentMessage::ApiResponse`] with the same `request_id`.
    ApiRequest {
        request_id: u64,
        path: String,
    },
}

/// Start a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchTask {
    pub task_id: String,
    pub app_id: String,
    pub cmd: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    /// Host ports assigned from the agent's range (`PORT0..n`).
    pub ports: Vec<u16>,
    /// The whole environment Marathon would set (app env, PORT0.., HOST, …).
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// The user the task runs as (Marathon's app `user`); `None`: the
    /// agent's `isolation.default_user`. A name, checked by
    /// [`is_plausible_user_name`]; the agent resolves it (and refuses root
    /// unless `isolation.allow_root_tasks`). `None` is not sent: the frame
    /// is what it was before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Whether `name` can be a Unix user name as tasks name their user: 1 to 32
/// of `A-Z a-z 0-9 _ . -`, not starting with `-`, `.` or a digit, with an
/// optional trailing `$` (Samba machine accounts), as `useradd` accepts them.
/// Numeric ids are not names.
pub fn is_plausible_user_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut bytes = body.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && name.len() <= 32 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A health check the agent runs against its task (Marathon's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Marathon's name (`HTTP`, `TCP`, `COMMAND`, …); see [`HealthCheckProtocol::probe`].
    pub protocol: HealthCheckProtocol,
    /// HTTP path (HTTP only).
    #[serde(default)]
    pub path: Option<String>,
    /// The task port checked (HTTP and TCP): an index into `ports`.
    #[serde(default)]
    pub port_index: usize,
    /// Shell command (COMMAND only); exit 0 = healthy.
    #[serde(default)]
    pub command: Option<String>,
    pub grace_period_seconds: f64,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub max_consecutive_failures: u32,
}

/// The cluster's VIPs at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VipTable {
    pub revision: u64,
    pub vips: Vec<Vip>,
}

/// One VIP: address, port, protocol, its name (if named) and backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vip {
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// DNS name (`web.marathon.l4lb.thisdcos.directory`) for named VIPs.
    #[serde(default)]
    pub name: Option<String>,
    pub backends: Vec<VipBackend>,
}

/// A backend of a VIP; weight 0 keeps it known but sends it nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipBackend {
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub weight: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = AgentMessage::VipAck { revision: 7 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"vip_ack","revision":7}"#
        );
        let back: ControlMessage =
            serde_json::from_str(r#"{"type":"kill","task_id":"web.1"}"#).unwrap();
        assert_eq!(
            back,
            ControlMessage::Kill {
                task_id: "web.1".into()
            }
        );
        assert!(serde_json::from_str::<ControlMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn launches_without_a_user_still_parse() {
        let json = r#"{"type":"launch","task_id":"web.1","app_id":"/web","cmd":"true",
            "cpus":0.1,"mem":32,"disk":0,"ports":[],"env":{}}"#;
        let ControlMessage::Launch(l) = serde_json::from_str(json).unwrap() else {
            panic!("a launch");
        };
        assert_eq!(l.user, None);
        assert!(l.health_checks.is_empty());
    }

    #[test]
    fn user_names() {
        for ok in [
            "nobody", "root", "www-data", "_apt", "svc.web", "MACHINE$", "a",
        ] {
            assert!(is_plausible_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "1000",
            "-x",
            ".x",
            "a b",
            "a/b",
            "a:b",
            "$",
            "émile",
            "a$b",
            "abcdefghijklmnopqrstuvwxyz0123456",
        ] {
            assert!(!is_plausible_user_name(bad), "{bad:?}");
        }
    }
}
