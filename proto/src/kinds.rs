//! The closed sets of names the messages carry, as enums: [`TaskState`]
//! (Mesos' task states), [`Protocol`] (a VIP's L4 protocol) and
//! [`HealthCheckProtocol`] (Marathon's health-check protocols).
//!
//! Each serialises to exactly the text the wire carried before it was typed
//! (`"TASK_RUNNING"`, `"tcp"`, `"HTTP"`). A name outside the set does not
//! parse: the frame carrying it is refused whole (the receiver logs and skips
//! it; see the crate documentation).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task's state, with Mesos' names (`TaskState` in `mesos.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    /// A kill was ordered and has not completed.
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    /// Its agent is unreachable; the task may still run.
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    /// Mesos' own "the master does not know this task" (a state, not a
    /// parse failure: a name outside this set does not parse).
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    /// Every state, in declaration order.
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// Mesos' name: `TASK_RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Whether the state is final (Mesos' `isTerminalState`): the task will
    /// not run again. Unreachable and unknown tasks may come back.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the set (the offending text is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// What was expected: `task state`, `protocol`, `health check protocol`.
    pub what: &'static str,
    pub name: String,
}

impl FromStr for TaskState {
    type Err = UnknownName;
    /// Exactly Mesos' name, as on the wire.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "task state",
                name: s.to_string(),
            })
    }
}

/// A VIP's L4 protocol: `"tcp"` or `"udp"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = UnknownName;
    /// Exactly `tcp` or `udp`, as on the wire.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(UnknownName {
                what: "protocol",
                name: s.to_string(),
            }),
        }
    }
}

/// A health check's protocol, with Marathon's names. The `MESOS_*` variants
/// are Marathon's checks run by the Mesos agent rather than by Marathon; a
/// Garrison agent runs every check itself, so each probes as its plain
/// counterpart ([`HealthCheckProtocol::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
    Command,
    MesosHttp,
    MesosHttps,
    MesosTcp,
}

/// What a health check does, whoever runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET path`, healthy on 200–399; over TLS when `tls`.
    Http { tls: bool },
    /// A TCP connection is accepted.
    Tcp,
    /// A shell command exits 0.
    Command,
}

impl HealthCheckProtocol {
    /// Every protocol, in declaration order.
    pub const ALL: [HealthCheckProtocol; 7] = [
        HealthCheckProtocol::Http,
        HealthCheckProtocol::Https,
        HealthCheckProtocol::Tcp,
        HealthCheckProtocol::Command,
        HealthCheckProtocol::MesosHttp,
        HealthCheckProtocol::MesosHttps,
        HealthCheckProtocol::MesosTcp,
    ];

    /// Marathon's name: `HTTP`, `MESOS_TCP`, …
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckProtocol::Http => "HTTP",
            HealthCheckProtocol::Https => "HTTPS",
            HealthCheckProtocol::Tcp => "TCP",
            HealthCheckProtocol::Command => "COMMAND",
            HealthCheckProtocol::MesosHttp => "MESOS_HTTP",
            HealthCheckProtocol::MesosHttps => "MESOS_HTTPS",
            HealthCheckProtocol::MesosTcp => "MESOS_TCP",
        }
    }

    /// What the check does.
    pub fn probe(self) -> Probe {
        match self {
            HealthCheckProtocol::Http | HealthCheckProtocol::MesosHttp => {
                Probe::Http { tls: false }
            }
            HealthCheckProtocol::Https | HealthCheckProtocol::MesosHttps => {
                Probe::Http { tls: true }
            }
            HealthCheckProtocol::Tcp | HealthCheckProtocol::MesosTcp => Probe::Tcp,
            HealthCheckProtocol::Command => Probe::Command,
        }
    }
}

impl fmt::Display for HealthCheckProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HealthCheckProtocol {
    type Err = UnknownName;
    /// Exactly Marathon's name, as on the wire.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HealthCheckProtocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "health check protocol",
                name: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde and `as_str`/`FromStr` agree on every name, both ways.
    #[test]
    fn serde_names_are_the_as_str_names() {
        for s in TaskState::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
            assert_eq!(
                serde_json::from_str::<TaskState>(&format!("\"{s}\"")).unwrap(),
                s
            );
        }
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        for p in HealthCheckProtocol::ALL {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(p.as_str().parse::<HealthCheckProtocol>(), Ok(p));
            assert_eq!(
                serde_json::from_str::<HealthCheckProtocol>(&format!("\"{p}\"")).unwrap(),
                p
            );
        }
    }

    #[test]
    fn terminal_states_are_mesos() {
        let terminal: Vec<&str> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(TaskState::as_str)
            .collect();
        assert_eq!(
            terminal,
            [
                "TASK_FINISHED",
                "TASK_FAILED",
                "TASK_KILLED",
                "TASK_ERROR",
                "TASK_LOST",
                "TASK_DROPPED",
                "TASK_GONE",
                "TASK_GONE_BY_OPERATOR"
            ]
        );
    }

    #[test]
    fn names_outside_the_set_do_not_parse() {
        assert_eq!(
            "TASK_BOGUS".parse::<TaskState>(),
            Err(UnknownName {
                what: "task state",
                name: "TASK_BOGUS".into()
            })
        );
        assert!("task_running".parse::<TaskState>().is_err());
        assert!(serde_json::from_str::<TaskState>("\"TASK_BOGUS\"").is_err());
        assert!("TCP".parse::<Protocol>().is_err());
        assert!(serde_json::from_str::<Protocol>("\"sctp\"").is_err());
        assert!("http".parse::<HealthCheckProtocol>().is_err());
        assert_eq!(
            HealthCheckProtocol::MesosHttps.probe(),
            Probe::Http { tls: true }
        );
        assert_eq!(HealthCheckProtocol::MesosTcp.probe(), Probe::Tcp);
    }
}
