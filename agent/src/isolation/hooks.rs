//! Hooks around a task's life, as Mesos' agent hooks (slavePrelaunch…Hook,
//! slaveRemoveExecutorHook): [`Hook::pre_launch`] runs after the sandbox and
//! cgroups exist and before the command starts (an error refuses the launch
//! and undoes it); [`Hook::post_exit`] runs once the task ended and its
//! cgroups are gone. Hooks run in the order configured. [`CommandHook`] is
//! the configured external command.
use std::{path::PathBuf, process::Command, time::Duration};

use super::TaskInfo;

pub trait Hook: Send + Sync {
    fn name(&self) -> &str;
    fn pre_launch(&self, _task: &TaskInfo) -> Result<(), String> {
        Ok(())
    }
    fn post_exit(&self, _task: &TaskInfo) {}
}

/// Runs `PROGRAM pre-launch` and `PROGRAM post-exit` with the task in the
/// environment (`GARRISON_TASK_ID`, `GARRISON_TASK_SANDBOX`,
/// `GARRISON_TASK_STATE`, `GARRISON_TASK_REASON`); a non-zero pre-launch exit
/// refuses the task. Bounded: killed after `timeout`.
#[derive(Debug, Clone)]
pub struct CommandHook {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl CommandHook {
    fn run(&self, phase: &str, task: &TaskInfo) -> Result<(), String> {
        let state = task.state.as_str();
        let mut child = Command::new(&self.program)
            .arg(phase)
            .env("GARRISON_TASK_ID", &task.id)
            .env("GARRISON_TASK_SANDBOX", &task.sandbox)
            .env("GARRISON_TASK_STATE", state)
            .env("GARRISON_TASK_REASON", task.reason.as_deref().unwrap_or(""))
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("hook {}: {e}", self.program.display()))?;
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("hook {} {phase}: {s}", self.program.display())),
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "hook {} {phase}: timed out",
                        self.program.display()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("hook {}: {e}", self.program.display())),
            }
        }
    }
}

impl Hook for CommandHook {
    fn name(&self) -> &str {
        "command"
    }

    fn pre_launch(&self, task: &TaskInfo) -> Result<(), String> {
        self.run("pre-launch", task)
    }

    fn post_exit(&self, task: &TaskInfo) {
        if let Err(e) = self.run("post-exit", task) {
            tracing::warn!(task = %task.id, error = %e, "post-exit hook");
        }
    }
}
