//! Tasks and their isolation: what Mesos calls the agent's containerizer.
//!
//! - [`cgroups`]: where each controller lives (v2, or v1 on hybrid hosts) and
//!   a task's cgroup directories.
//! - [`isolators`]: the [`isolators::Isolator`] trait and the cpu, memory and
//!   pids isolators.
//! - [`disk`]: the `disk/du` isolator's measurement and quota verdict.
//! - [`hooks`]: pre-launch and post-exit hooks (a Rust trait and an external command).
//! - [`launcher`]: [`launcher::Launcher`] runs a command as a task in its own
//!   sandbox and cgroups, tracks its state, kills it with a grace period.
//! - [`stats`]: per-task statistics in the Mesos `/monitor/statistics` shape.
//! - [`privilege`]: the user a task runs as, its clean environment, the
//!   privileges dropped before exec, the agent's files kept from tasks.
//! - [`quota`]: project quotas for the `disk/quota` isolator (EDQUOT past the disk resource).
//! - [`node`]: the node's resources in the Mesos agent `/state` shape.
//!
//! Validation of task requests ([`TaskSpec::validate`]) is pure.
pub mod cgroups;
pub mod disk;
pub mod hooks;
pub mod isolators;
pub mod launcher;
pub mod node;
pub mod privilege;
pub mod quota;
pub mod stats;

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Resources of a task: cpus, and mem and disk in MB (as Mesos).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResources {
    pub cpus: f64,
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
}

impl TaskResources {
    pub fn mem_bytes(&self) -> u64 {
        (self.mem * 1024.0 * 1024.0) as u64
    }
}

/// A task request (`POST /v1/tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub id: String,
    pub cmd: String,
    pub resources: TaskResources,
    /// Added to the task's environment (after `PATH`, `HOME` and Mesos'
    /// variables, which it may override; nothing of the agent's own).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The user the task runs as; `None`: `isolation.default_user`.
    #[serde(default)]
    pub user: Option<String>,
}

/// Task states, named as Mesos names them: the wire's type, so a state goes
/// to the control as it is. The launcher uses Staging, Running, Finished,
/// Failed and Killed.
pub use garrison_proto::TaskState;

/// What the API shows of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub state: TaskState,
    pub reason: Option<String>,
    pub exit_status: Option<i32>,
    pub sandbox: String,
    pub resources: TaskResources,
    /// The user it runs as.
    pub user: String,
}

/// Why a task request or operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid task {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("task {0} exists")]
    Exists(String),
    #[error("no task {0}")]
    NotFound(String),
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("isolation is not available: {0}")]
    Unavailable(String),
    #[error("pre-launch hook {hook} refused the task: {why}")]
    Hook { hook: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: &'static str, why: impl Into<String>) -> TaskError {
    TaskError::Invalid {
        field,
        why: why.into(),
    }
}

impl TaskSpec {
    /// Checks the request without touching anything: the id must be a plain
    /// name (it names the sandbox directory and cgroups: no `/`, no `..`),
    /// the command non-empty, resources finite and positive (mem at least
    /// 4 MB, disk ≥ 0).
    pub fn validate(&self) -> Result<(), TaskError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && !self.id.starts_with('.')
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(invalid(
                "id",
                format!(
                    "{:?}: 1 to 64 of A-Z a-z 0-9 - _ . not starting with '.' (it names the sandbox under the work directory)",
                    self.id
                ),
            ));
        }
        if self.cmd.trim().is_empty() {
            return Err(invalid("cmd", "empty"));
        }
        let r = &self.resources;
        if !(r.cpus.is_finite() && r.cpus > 0.0 && r.cpus <= 1024.0) {
            return Err(invalid(
                "resources.cpus",
                format!("{} (must be > 0)", r.cpus),
            ));
        }
        if !(r.mem.is_finite() && r.mem >= 4.0) {
            return Err(invalid(
                "resources.mem",
                format!("{} MB (must be at least 4)", r.mem),
            ));
        }
        if !(r.disk.is_finite() && r.disk >= 0.0) {
            return Err(invalid(
                "resources.disk",
                format!("{} MB (must be ≥ 0)", r.disk),
            ));
        }
        if let Some(u) = &self.user
            && !garrison_proto::is_plausible_user_name(u)
        {
            return Err(invalid(
                "user",
                format!("{u:?}: 1 to 32 of A-Z a-z 0-9 _ . - starting with a letter or _"),
            ));
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
        {
            return Err(invalid(
                "env",
                format!(
                    "{:?}: names are non-empty without '=' and nothing holds NUL",
                    bad.0
                ),
            ));
        }
        Ok(())
    }

    /// The program the command starts with, if it can be found: a path that
    /// is an executable file, or a name on `path` (the shell's builtins and
    /// keywords are accepted as they are).
    pub fn program_exists(&self, path: &str) -> bool {
        let Some(first) = self.cmd.split_whitespace().next() else {
            return false;
        };
        const SHELL_WORDS: &[&str] = &[
            "while", "for", "if", "exec", "echo", "true", "false", ":", "exit", "set", "cd",
            "read", "test", "[", "{", "(", "trap", "printf", "until", "case", "ulimit",
        ];
        if SHELL_WORDS.contains(&first) || first.contains('=') {
            return true;
        }
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if first.contains('/') {
            return executable(Path::new(first));
        }
        path.split(':')
            .any(|d| executable(&Path::new(d).join(first)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, cpus: f64, mem: f64, disk: f64) -> TaskSpec {
        TaskSpec {
            env: Default::default(),
            id: id.into(),
            cmd: "sleep 1".into(),
            resources: TaskResources { cpus, mem, disk },
            user: None,
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (s, field) in [
            (spec("../x", 1.0, 64.0, 0.0), "id"),
            (spec("a/b", 1.0, 64.0, 0.0), "id"),
            (spec("..", 1.0, 64.0, 0.0), "id"),
            (spec("", 1.0, 64.0, 0.0), "id"),
            (spec("t", -1.0, 64.0, 0.0), "resources.cpus"),
            (spec("t", f64::NAN, 64.0, 0.0), "resources.cpus"),
            (spec("t", 1.0, 1.0, 0.0), "resources.mem"),
            (spec("t", 1.0, 64.0, -5.0), "resources.disk"),
            (
                TaskSpec {
                    user: Some("1000".into()),
                    ..spec("t", 1.0, 64.0, 0.0)
                },
                "user",
            ),
        ] {
            match s.validate() {
                Err(TaskError::Invalid { field: f, .. }) => assert_eq!(f, field, "{s:?}"),
                other => panic!("{s:?}: {other:?}"),
            }
        }
        assert!(spec("web-1.a_b", 0.5, 64.0, 16.0).validate().is_ok());
        let as_www = TaskSpec {
            user: Some("www-data".into()),
            ..spec("t", 1.0, 64.0, 0.0)
        };
        assert!(as_www.validate().is_ok());
        let parsed: TaskSpec = serde_json::from_str(
            r#"{"id":"t","cmd":"true","resources":{"cpus":1,"mem":32},"user":"www-data"}"#,
        )
        .unwrap();
        assert_eq!(parsed.user.as_deref(), Some("www-data"));
    }

    #[test]
    fn commands_are_looked_up_on_the_path() {
        let mut s = spec("t", 1.0, 64.0, 0.0);
        assert!(s.program_exists("/bin:/usr/bin"));
        s.cmd = "no-such-program-garrison --x".into();
        assert!(!s.program_exists("/bin:/usr/bin"));
        s.cmd = "while :; do :; done".into();
        assert!(s.program_exists(""));
        s.cmd = "/nonexistent/prog".into();
        assert!(!s.program_exists("/bin"));
    }

    #[test]
    fn states_serialise_as_mesos() {
        assert_eq!(
            serde_json::to_string(&TaskState::Running).unwrap(),
            "\"TASK_RUNNING\""
        );
        assert!(TaskState::Killed.is_terminal() && !TaskState::Staging.is_terminal());
    }
}
