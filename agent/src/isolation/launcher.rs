//! [`Launcher`]: runs a command as a task (`/bin/sh -c CMD`) in its own
//! sandbox (`<work_dir>/tasks/<id>`, stdout and stderr there) and cgroups,
//! with the configured isolators; tracks STAGING → RUNNING → FINISHED /
//! FAILED / KILLED; kills with a grace period (SIGTERM, then SIGKILL to every
//! process in the task's cgroups); removes the cgroups when the task ends.
//! A record per running task (`<work_dir>/meta/tasks/<id>.json`) lets a
//! restarted agent re-adopt it: its cgroups are watched until they empty
//! (the exit status of a task that is no longer our child is unknown).
//! A task runs as its user with no privilege, environment or descriptor of
//! the agent's ([`super::privilege`]); its sandbox is that user's.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    TaskError, TaskInfo, TaskSpec, TaskState,
    cgroups::{Layout, TaskCgroups},
    hooks::{CommandHook, Hook},
    isolators::{CpuIsolator, Isolator, MemoryIsolator, PidsIsolator},
    privilege::{Confinement, TaskUser, UserPolicy},
    stats::TaskStatistics,
};

/// The isolator names the configuration accepts. Disk: `disk/quota`
/// (project quotas: writes past the disk resource fail with EDQUOT; the
/// work directory's filesystem must enforce them), `disk/du` (a watcher
/// measuring each sandbox every `disk_watch_interval`, killing a task over
/// its disk resource when `disk_enforce`), or `disk`: quota where the
/// filesystem supports it, else du.
pub const ISOLATORS: [&str; 6] = ["cpu", "memory", "pids", "disk", "disk/du", "disk/quota"];

/// How disk is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    None,
    Du,
    Quota,
}

/// First project id given to tasks (ids below are left to the operator).
pub const FIRST_PROJECT_ID: u32 = 5000;

/// Launcher settings.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    pub work_dir: PathBuf,
    /// Names from [`ISOLATORS`].
    pub isolators: Vec<String>,
    /// cpu: enforce a hard cap (`cpu.max`), not only shares.
    pub cpu_hard_limit: bool,
    /// pids: processes and threads per task.
    pub pids_max: u64,
    /// SIGTERM → SIGKILL delay of a kill.
    pub kill_grace: Duration,
    /// An external hook command (run after the Rust hooks).
    pub hook_command: Option<PathBuf>,
    /// disk/du: how often sandboxes are measured (Mesos: 15 s).
    pub disk_watch_interval: Duration,
    /// disk/du: kill a task whose sandbox exceeds its disk resource.
    pub disk_enforce: bool,
    /// How long an ended task (its state, its sandbox) is kept (Mesos'
    /// `gc_delay`, one week by default).
    pub sandbox_gc: Duration,
    /// The user of tasks whose request names none (`nobody`).
    pub default_user: String,
    /// Whether a task may run as a user with uid 0 (never by default).
    pub allow_root_tasks: bool,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            work_dir: "/var/lib/garrison".into(),
            isolators: ["cpu", "memory", "pids", "disk"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cpu_hard_limit: true,
            pids_max: 4096,
            kill_grace: Duration::from_secs(3),
            hook_command: None,
            disk_watch_interval: Duration::from_secs(15),
            disk_enforce: true,
            sandbox_gc: Duration::from_secs(7 * 24 * 3600),
            default_user: super::privilege::DEFAULT_USER.into(),
            allow_root_tasks: false,
        }
    }
}

/// The isolators named in `names`; an unknown name is an error.
pub fn isolators(config: &LauncherConfig) -> Result<Vec<Box<dyn Isolator>>, String> {
    config
        .isolators
        .iter()
        .filter_map(|n| -> Option<Result<Box<dyn Isolator>, String>> {
            let i: Box<dyn Isolator> = match n.as_str() {
                "cpu" => Box::new(CpuIsolator {
                    hard_limit: config.cpu_hard_limit,
                }),
                "memory" => Box::new(MemoryIsolator),
                "pids" => Box::new(PidsIsolator {
                    max: config.pids_max,
                }),
                // Not cgroup isolators: the launcher's disk modes.
                "disk" | "disk/du" | "disk/quota" => return None,
                other => {
                    return Some(Err(format!(
                        "unknown isolator {other:?} (known: {})",
                        ISOLATORS.join(", ")
                    )));
                }
            };
            Some(Ok(i))
        })
        .collect()
}

struct Task {
    info: TaskInfo,
    cgroups: Option<TaskCgroups>,
    kill_requested: bool,
    /// Set by the disk watcher when it killed the task.
    limitation: Option<String>,
    /// disk/quota: the sandbox's project id.
    project: Option<u32>,
    disk_used: u64,
    started: Instant,
    /// When it reached its final state (garbage collection counts from here).
    ended: Option<Instant>,
    /// Its whole environment (commands run for it get the same).
    env: BTreeMap<String, String>,
}

struct Inner {
    config: LauncherConfig,
    layout: Layout,
    isolators: Vec<Box<dyn Isolator>>,
    disk: DiskMode,
    hooks: Vec<Arc<dyn Hook>>,
    policy: UserPolicy,
    /// `/proc/sys/kernel/cap_last_cap`, read once.
    last_cap: u32,
    tasks: Mutex<BTreeMap<String, Task>>,
    /// Every state change (RUNNING, and the final state), for subscribers.
    changes: tokio::sync::broadcast::Sender<TaskInfo>,
}

/// What a restarted agent needs to re-adopt a running task, kept in
/// `<work_dir>/meta/tasks/<id>.json` from launch until the task ends.
#[derive(serde::Serialize, serde::Deserialize)]
struct RecoveryRecord {
    spec: TaskSpec,
    started_unix_ms: u64,
    project: Option<u32>,
}

fn meta_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("tasks")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a task's processes ended.
enum Exit {
    /// The shell was our child: its status.
    Known(std::io::Result<std::process::ExitStatus>),
    /// A re-adopted task: its processes are gone, the status is not ours to read.
    Unknown,
}

/// Runs and tracks tasks (cheap to clone: shared state).
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("work_dir", &self.inner.config.work_dir)
            .field("disk", &self.inner.disk)
            .finish_non_exhaustive()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
    let what = what.into();
    move |source| TaskError::Io { what, source }
}

impl Launcher {
    /// Detects the cgroup layout; every configured isolator's controller must
    /// be available.
    pub fn new(config: LauncherConfig) -> Result<Launcher, TaskError> {
        Self::with_hooks(config, Vec::new())
    }

    /// Like [`Launcher::new`] with Rust hooks (run in order, before the
    /// configured hook command).
    pub fn with_hooks(
        config: LauncherConfig,
        mut hooks: Vec<Arc<dyn Hook>>,
    ) -> Result<Launcher, TaskError> {
        if let Some(program) = &config.hook_command {
            hooks.push(Arc::new(CommandHook {
                program: program.clone(),
                timeout: Duration::from_secs(10),
            }));
        }
        let isolators = isolators(&config).map_err(TaskError::Unavailable)?;
        let layout = Layout::detect().map_err(io_err("reading /proc/self/mountinfo"))?;
        for i in &isolators {
            if !layout.controllers.contains_key(i.name()) {
                return Err(TaskError::Unavailable(format!(
                    "isolator {} needs the {} cgroup controller, which this host has on no hierarchy ({})",
                    i.name(),
                    i.name(),
                    layout.describe()
                )));
            }
        }
        let tasks_dir = config.work_dir.join("tasks");
        fs::create_dir_all(&tasks_dir)
            .map_err(io_err(format!("creating {}", config.work_dir.display())))?;
        prepare_work_dir(&config.work_dir)?;
        let wants = |n: &str| config.isolators.iter().any(|i| i == n);
        let disk = if wants("disk/quota") {
            super::quota::supported(&tasks_dir)
                .map_err(|e| TaskError::Unavailable(format!("isolator disk/quota: {e}")))?;
            DiskMode::Quota
        } else if wants("disk") {
            match super::quota::supported(&tasks_dir) {
                Ok(()) => DiskMode::Quota,
                Err(e) => {
                    tracing::info!(reason = %e, "disk isolation: project quotas unavailable, using the du watcher");
                    DiskMode::Du
                }
            }
        } else if wants("disk/du") {
            DiskMode::Du
        } else {
            DiskMode::None
        };
        let policy = UserPolicy {
            default_user: config.default_user.clone(),
            allow_root: config.allow_root_tasks,
        };
        // Every task without a user would fail: say so at start instead.
        super::privilege::resolve_user(&policy.default_user)
            .and_then(|u| policy.check_user(&u))
            .map_err(|e| {
                TaskError::Unavailable(format!(
                    "isolation.default_user {:?}: {e}",
                    policy.default_user
                ))
            })?;
        let launcher = Launcher {
            inner: Arc::new(Inner {
                config,
                layout,
                isolators,
                disk,
                hooks,
                policy,
                last_cap: super::privilege::cap_last_cap(),
                tasks: Mutex::new(BTreeMap::new()),
                changes: tokio::sync::broadcast::channel(1024).0,
            }),
        };
        launcher.recover();
        Ok(launcher)
    }

    /// Re-adopts the tasks an earlier agent (same work directory) left
    /// running: their cgroups, resources and sandboxes, watched until their
    /// processes end. Cgroups of tasks without a record (or with no process
    /// left) are removed, their processes killed.
    fn recover(&self) {
        let layout = &self.inner.layout;
        let tasks_dir = self.inner.config.work_dir.join("tasks");
        let meta = meta_dir(&self.inner.config.work_dir);
        let Ok(entries) = fs::read_dir(&tasks_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            let record_path = meta.join(format!("{id}.json"));
            let record: Option<RecoveryRecord> = fs::read_to_string(&record_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let Some(cg) = TaskCgroups::existing(layout, &id) else {
                // An ended task of an earlier agent: its sandbox goes once it
                // is older than the garbage-collection delay.
                let _ = fs::remove_file(&record_path);
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= self.inner.config.sandbox_gc);
                if old {
                    let _ = fs::remove_dir_all(entry.path());
                }
                continue;
            };
            let record = match record {
                Some(r) if r.spec.id == id && !cg.pids().is_empty() => r,
                _ => {
                    let pids = cg.pids().len();
                    let gone = cg.destroy();
                    let _ = fs::remove_file(&record_path);
                    tracing::warn!(task = %id, processes = pids, cgroups_removed = gone, "leftover task without a recovery record: killed");
                    continue;
                }
            };
            let age = Duration::from_millis(unix_ms().saturating_sub(record.started_unix_ms));
            let sandbox = entry.path();
            let info = TaskInfo {
                id: id.clone(),
                state: TaskState::Running,
                reason: None,
                exit_status: None,
                sandbox: sandbox.display().to_string(),
                resources: record.spec.resources,
                // A record without a user: an agent that ran tasks as root.
                user: record.spec.user.clone().unwrap_or_else(|| "root".into()),
            };
            self.inner.tasks.lock().expect("tasks").insert(
                id.clone(),
                Task {
                    info,
                    cgroups: Some(cg),
                    kill_requested: false,
                    limitation: None,
                    project: record.project,
                    disk_used: 0,
                    started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                    ended: None,
                    env: super::privilege::task_env(&id, &sandbox, &record.spec.env),
                },
            );
            tracing::info!(task = %id, running_secs = age.as_secs(), "task re-adopted");
            let me = self.clone();
            let watched = id.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("task-{id}"))
                .spawn(move || me.watch_readopted(&watched));
            if let Err(e) = spawned {
                tracing::error!(task = %id, error = %e, "cannot watch a re-adopted task");
            }
            if self.inner.disk == DiskMode::Du {
                let me = self.clone();
                let limit = (record.spec.resources.disk * 1024.0 * 1024.0) as u64;
                let watched = id.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("du-{id}"))
                    .spawn(move || me.watch_disk(&watched, &sandbox, limit));
            }
        }
    }

    /// Forgets tasks that ended more than `sandbox_gc` ago and removes their
    /// sandboxes (Mesos' `gc_delay`): a busy agent's memory and disk stay
    /// bounded. Runs at each launch.
    fn collect_garbage(&self) {
        let delay = self.inner.config.sandbox_gc;
        let expired: Vec<(String, String)> = {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            let old: Vec<String> = tasks
                .iter()
                .filter(|(_, t)| t.ended.is_some_and(|e| e.elapsed() >= delay))
                .map(|(id, _)| id.clone())
                .collect();
            old.into_iter()
                .filter_map(|id| tasks.remove(&id).map(|t| (id, t.info.sandbox)))
                .collect()
        };
        for (id, sandbox) in expired {
            if let Err(e) = fs::remove_dir_all(&sandbox)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(task = %id, sandbox = %sandbox, error = %e, "removing an old sandbox");
            }
        }
    }

    /// The task's cgroups while it has them.
    fn cgroups_of(&self, id: &str) -> Option<TaskCgroups> {
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .get(id)
            .and_then(|t| t.cgroups.clone())
    }

    /// A re-adopted task is not our child: its end is its cgroups emptying.
    fn watch_readopted(&self, id: &str) {
        loop {
            match self.cgroups_of(id) {
                Some(cg) if !cg.pids().is_empty() => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        self.finish(id, Exit::Unknown);
    }

    /// State changes from now on (a lagging subscriber should re-read
    /// [`Launcher::list`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TaskInfo> {
        self.inner.changes.subscribe()
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// How this launcher isolates disk.
    pub fn disk_mode(&self) -> DiskMode {
        self.inner.disk
    }

    /// disk/quota: a project id no running task uses.
    fn free_project(&self) -> u32 {
        let tasks = self.inner.tasks.lock().expect("tasks");
        let used: std::collections::HashSet<u32> =
            tasks.values().filter_map(|t| t.project).collect();
        (FIRST_PROJECT_ID..)
            .find(|id| !used.contains(id))
            .expect("a free id")
    }

    /// Starts `spec`; returns once it is RUNNING (or refused: nothing changed).
    /// An unknown user, or root where root tasks are not allowed, is refused
    /// as an invalid `user`.
    pub fn launch(&self, mut spec: TaskSpec) -> Result<TaskInfo, TaskError> {
        spec.validate()?;
        self.collect_garbage();
        let policy = &self.inner.policy;
        let user = super::privilege::resolve_user(policy.name_for(spec.user.as_deref()))?;
        policy.check_user(&user)?;
        // The record keeps who the task runs as.
        spec.user = Some(user.name.clone());
        let sandbox = self.inner.config.work_dir.join("tasks").join(&spec.id);
        let env = super::privilege::task_env(&spec.id, &sandbox, &spec.env);
        if !spec.program_exists(env.get("PATH").map_or("", String::as_str)) {
            return Err(TaskError::CommandNotFound(
                spec.cmd.split_whitespace().next().unwrap_or("").to_string(),
            ));
        }
        {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            if tasks.contains_key(&spec.id) {
                return Err(TaskError::Exists(spec.id));
            }
            tasks.insert(
                spec.id.clone(),
                Task {
                    info: TaskInfo {
                        id: spec.id.clone(),
                        state: TaskState::Staging,
                        reason: None,
                        exit_status: None,
                        sandbox: sandbox.display().to_string(),
                        resources: spec.resources,
                        user: user.name.clone(),
                    },
                    cgroups: None,
                    kill_requested: false,
                    limitation: None,
                    project: None,
                    disk_used: 0,
                    started: Instant::now(),
                    ended: None,
                    env: env.clone(),
                },
            );
        }
        let launch = Launch {
            spec: &spec,
            sandbox: &sandbox,
            user: &user,
            env,
        };
        match self.start(&launch) {
            Ok(info) => Ok(info),
            Err(e) => {
                // Refused: leave nothing behind.
                self.inner.tasks.lock().expect("tasks").remove(&spec.id);
                let _ = fs::remove_dir_all(&sandbox);
                Err(e)
            }
        }
    }

    fn start(&self, launch: &Launch) -> Result<TaskInfo, TaskError> {
        let (spec, sandbox) = (launch.spec, launch.sandbox);
        fs::create_dir_all(sandbox).map_err(io_err(format!("creating {}", sandbox.display())))?;
        if self.inner.disk == DiskMode::Quota {
            let id = self.free_project();
            let bytes = (spec.resources.disk * 1024.0 * 1024.0) as u64;
            super::quota::set_project(sandbox, id)
                .and_then(|()| super::quota::set_limit(sandbox, id, bytes))
                .map_err(io_err(format!(
                    "project quota {id} on {}",
                    sandbox.display()
                )))?;
            if let Some(t) = self.inner.tasks.lock().expect("tasks").get_mut(&spec.id) {
                t.project = Some(id);
            }
        }
        let cg = TaskCgroups::create(&self.inner.layout, &spec.id)
            .map_err(io_err(format!("creating the cgroups of {}", spec.id)))?;
        let prepared = self.inner.isolators.iter().try_for_each(|i| {
            i.prepare(&cg, &spec.resources)
                .map_err(io_err(format!("isolator {}", i.name())))
        });
        if let Err(e) = prepared {
            cg.destroy();
            return Err(e);
        }
        let staging = self.get(&spec.id).expect("inserted by launch");
        for hook in &self.inner.hooks {
            if let Err(why) = hook.pre_launch(&staging) {
                cg.destroy();
                return Err(TaskError::Hook {
                    hook: hook.name().to_string(),
                    why,
                });
            }
        }
        let confinement = Confinement::new(launch.user, self.inner.last_cap);
        let child = match spawn(launch, &cg, confinement) {
            Ok(c) => c,
            Err(e) => {
                cg.destroy();
                return Err(e);
            }
        };
        let info = {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            let t = tasks.get_mut(&spec.id).expect("inserted by launch");
            t.info.state = TaskState::Running;
            t.cgroups = Some(cg);
            t.info.clone()
        };
        let _ = self.inner.changes.send(info.clone());
        self.write_record(spec);
        let me = self.clone();
        let id = spec.id.clone();
        std::thread::Builder::new()
            .name(format!("task-{id}"))
            .spawn(move || me.wait_for(&id, child))
            .map_err(io_err("starting the task's waiter thread"))?;
        if self.inner.disk == DiskMode::Du {
            let me = self.clone();
            let (id, sandbox) = (spec.id.clone(), sandbox.to_path_buf());
            let limit = (spec.resources.disk * 1024.0 * 1024.0) as u64;
            std::thread::Builder::new()
                .name(format!("du-{id}"))
                .spawn(move || me.watch_disk(&id, &sandbox, limit))
                .map_err(io_err("starting the task's disk watcher"))?;
        }
        Ok(info)
    }

    /// disk/du: measures the sandbox every interval until the task ends;
    /// over the quota (and enforcing), kills it with Mesos' message.
    fn watch_disk(&self, id: &str, sandbox: &Path, limit: u64) {
        let interval = self.inner.config.disk_watch_interval;
        loop {
            let deadline = Instant::now() + interval;
            while Instant::now() < deadline {
                if self.get(id).is_none_or(|t| t.state.is_terminal()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50).min(interval));
            }
            let used = super::disk::usage_bytes(sandbox);
            let verdict = super::disk::over_quota(used, limit);
            let cg = {
                let mut tasks = self.inner.tasks.lock().expect("tasks");
                let Some(t) = tasks.get_mut(id) else { return };
                t.disk_used = used;
                match (&verdict, self.inner.config.disk_enforce) {
                    (Some(why), true) if t.limitation.is_none() => {
                        t.limitation = Some(why.clone());
                        t.cgroups.clone()
                    }
                    _ => None,
                }
            };
            if let Some(cg) = cg {
                tracing::warn!(task = id, reason = ?verdict, "killing the task");
                cg.signal_all(libc::SIGKILL);
            }
        }
    }

    /// Keeps what a restarted agent needs to re-adopt the task (a failure
    /// is logged: the task runs, it just would not be re-adopted).
    fn write_record(&self, spec: &TaskSpec) {
        let dir = meta_dir(&self.inner.config.work_dir);
        let project = self
            .inner
            .tasks
            .lock()
            .expect("tasks")
            .get(&spec.id)
            .and_then(|t| t.project);
        let record = RecoveryRecord {
            spec: spec.clone(),
            started_unix_ms: unix_ms(),
            project,
        };
        let path = dir.join(format!("{}.json", spec.id));
        let write = || -> std::io::Result<()> {
            create_private_dir(&dir)?;
            let tmp = path.with_extension("tmp");
            fs::write(
                &tmp,
                serde_json::to_vec(&record).map_err(std::io::Error::other)?,
            )?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(task = %spec.id, error = %e, "cannot write the task's recovery record");
        }
    }

    /// Waits for the task's shell, then finishes it.
    fn wait_for(&self, id: &str, mut child: std::process::Child) {
        let status = child.wait();
        self.finish(id, Exit::Known(status));
    }

    /// Decides the task's final state and cleans up (cgroups, quota, record).
    fn finish(&self, id: &str, exit: Exit) {
        let cg = self.cgroups_of(id);
        let limitation = cg
            .as_ref()
            .and_then(|cg| self.inner.isolators.iter().find_map(|i| i.limitation(cg)));
        let cleaned = cg.as_ref().is_none_or(TaskCgroups::destroy);
        let _ = fs::remove_file(meta_dir(&self.inner.config.work_dir).join(format!("{id}.json")));
        let mut tasks = self.inner.tasks.lock().expect("tasks");
        let Some(t) = tasks.get_mut(id) else { return };
        if t.info.state.is_terminal() {
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match &exit {
            Exit::Known(Ok(s)) => (s.code(), s.signal()),
            _ => (None, None),
        };
        t.info.exit_status = code.or(signal.map(|s| 128 + s));
        (t.info.state, t.info.reason) = if t.kill_requested {
            (TaskState::Killed, Some("killed on request".into()))
        } else if let Some(why) = t.limitation.clone().or(limitation) {
            (TaskState::Failed, Some(why))
        } else if matches!(exit, Exit::Unknown) {
            (
                TaskState::Failed,
                Some("the task's processes ended; their exit status is unknown (re-adopted after an agent restart)".into()),
            )
        } else if code == Some(0) {
            (TaskState::Finished, None)
        } else if let Some(c) = code {
            (
                TaskState::Failed,
                Some(format!("command exited with status {c}")),
            )
        } else {
            (
                TaskState::Failed,
                Some(format!("command killed by signal {}", signal.unwrap_or(0))),
            )
        };
        if !cleaned {
            tracing::error!(task = id, "task cgroups could not be removed");
        }
        t.cgroups = None;
        if let Some(project) = t.project.take() {
            let sandbox = PathBuf::from(&t.info.sandbox);
            if let Err(e) = super::quota::set_limit(&sandbox, project, 0) {
                tracing::warn!(task = id, project, error = %e, "clearing the project quota");
            }
        }
        t.ended = Some(Instant::now());
        tracing::info!(task = id, state = ?t.info.state, reason = ?t.info.reason, secs = t.started.elapsed().as_secs_f64(), "task ended");
        let ended = t.info.clone();
        drop(tasks);
        let _ = self.inner.changes.send(ended.clone());
        for hook in &self.inner.hooks {
            hook.post_exit(&ended);
        }
    }

    /// A command run for a running task (a Marathon COMMAND health check)
    /// the way the task runs: `/bin/sh -c CMD` in its sandbox, as its user,
    /// with its environment, in its cgroups, without any privilege; stdio
    /// on /dev/null.
    pub fn task_command(&self, id: &str, cmd: &str) -> Result<Command, TaskError> {
        let (sandbox, user, env, cg) = {
            let tasks = self.inner.tasks.lock().expect("tasks");
            let t = tasks
                .get(id)
                .filter(|t| !t.info.state.is_terminal())
                .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
            let cg = t
                .cgroups
                .clone()
                .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
            let sandbox = PathBuf::from(&t.info.sandbox);
            (sandbox, t.info.user.clone(), t.env.clone(), cg)
        };
        let user = super::privilege::resolve_user(&user)?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(cmd)
            .current_dir(&sandbox)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        confine(
            &mut command,
            &cg,
            Confinement::new(&user, self.inner.last_cap),
        );
        Ok(command)
    }

    /// Kills a task: SIGTERM to every process, SIGKILL after the grace period.
    pub fn kill(&self, id: &str) -> Result<TaskInfo, TaskError> {
        let (cg, info) = {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            let t = tasks
                .get_mut(id)
                .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
            if t.info.state.is_terminal() {
                return Ok(t.info.clone());
            }
            t.kill_requested = true;
            (t.cgroups.clone(), t.info.clone())
        };
        if let Some(cg) = cg {
            cg.signal_all(libc::SIGTERM);
            let grace = self.inner.config.kill_grace;
            std::thread::spawn(move || {
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline && !cg.pids().is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                cg.signal_all(libc::SIGKILL);
            });
        }
        Ok(info)
    }

    /// Kills every task and waits (up to the grace period and 2 s) for them
    /// to end (`kill_tasks_on_exit`: an agent leaving for good, or a lab).
    /// Returns how many were killed.
    pub fn kill_all(&self) -> usize {
        let running: Vec<String> = self
            .list()
            .into_iter()
            .filter(|t| !t.state.is_terminal())
            .map(|t| t.id)
            .collect();
        for id in &running {
            let _ = self.kill(id);
        }
        let deadline = Instant::now() + self.inner.config.kill_grace + Duration::from_secs(2);
        while Instant::now() < deadline && self.list().iter().any(|t| !t.state.is_terminal()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        running.len()
    }

    pub fn get(&self, id: &str) -> Option<TaskInfo> {
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .get(id)
            .map(|t| t.info.clone())
    }

    pub fn list(&self) -> Vec<TaskInfo> {
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .values()
            .map(|t| t.info.clone())
            .collect()
    }

    /// Statistics of every running task, read from its cgroups.
    pub fn statistics(&self) -> Vec<(TaskInfo, TaskStatistics)> {
        let running: Vec<(TaskInfo, TaskCgroups, u64)> = self
            .inner
            .tasks
            .lock()
            .expect("tasks")
            .values()
            .filter_map(|t| {
                let disk = match t.project {
                    Some(p) => {
                        super::quota::used(Path::new(&t.info.sandbox), p).unwrap_or(t.disk_used)
                    }
                    None => t.disk_used,
                };
                Some((t.info.clone(), t.cgroups.clone()?, disk))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        running
            .into_iter()
            .map(|(info, cg, disk_used)| {
                let mut s = TaskStatistics {
                    timestamp: now,
                    cpus_limit: info.resources.cpus,
                    disk_limit_bytes: (info.resources.disk * 1024.0 * 1024.0) as u64,
                    disk_used_bytes: disk_used,
                    ..Default::default()
                };
                for i in &self.inner.isolators {
                    i.usage(&cg, &mut s);
                }
                (info, s)
            })
            .collect()
    }
}

/// What one launch needs, resolved before anything is created.
struct Launch<'a> {
    spec: &'a TaskSpec,
    sandbox: &'a Path,
    user: &'a TaskUser,
    /// The task's whole environment.
    env: BTreeMap<String, String>,
}

/// `<work_dir>` and `<work_dir>/tasks` traversable but not listable by
/// tasks; `<work_dir>/meta` (recovery records: requests with their env)
/// the agent's alone.
fn prepare_work_dir(work_dir: &Path) -> Result<(), TaskError> {
    use super::privilege::{WORK_DIR_MODE, Wanted, set_mode};
    use std::os::unix::fs::PermissionsExt;
    // The work directory may be shared (an operator's choice): warn, go on.
    if let Err(e) = set_mode(work_dir, Wanted::Mode(WORK_DIR_MODE)) {
        tracing::warn!(work_dir = %work_dir.display(), error = %e, "the work directory's mode is not 0711");
    }
    let tasks = work_dir.join("tasks");
    fs::set_permissions(&tasks, fs::Permissions::from_mode(WORK_DIR_MODE))
        .map_err(io_err(format!("setting the mode of {}", tasks.display())))?;
    let meta = meta_dir(work_dir);
    create_private_dir(&meta).map_err(io_err(format!("creating {}", meta.display())))?;
    // The sandbox is the task's working directory whatever its parents, but
    // its path ($MESOS_SANDBOX) only works through traversable parents.
    let closed = work_dir.ancestors().skip(1).find(|a| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0)
    });
    if let Some(dir) = closed {
        tracing::warn!(dir = %dir.display(), work_dir = %work_dir.display(), "tasks cannot reach their sandboxes by path: a parent of the work directory is not traversable by other users (chmod o+x)");
    }
    Ok(())
}

/// Creates `<work_dir>/meta/tasks` with `meta` mode 0700.
fn create_private_dir(meta_tasks: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(meta_tasks)?;
    let meta = meta_tasks.parent().unwrap_or(meta_tasks);
    fs::set_permissions(
        meta,
        fs::Permissions::from_mode(super::privilege::PRIVATE_DIR_MODE),
    )
}

/// Starts `/bin/sh -c CMD` in the sandbox, given to the task's user, with
/// the task's environment only; the child joins the task's cgroups and its
/// own session, then drops every privilege ([`Confinement::apply`]) before exec.
fn spawn(
    launch: &Launch,
    cg: &TaskCgroups,
    confinement: Confinement,
) -> Result<std::process::Child, TaskError> {
    let (spec, sandbox) = (launch.spec, launch.sandbox);
    let open = |name: &str| {
        fs::File::create(sandbox.join(name)).map_err(io_err(format!("creating {name}")))
    };
    let (stdout, stderr) = (open("stdout")?, open("stderr")?);
    super::privilege::give_sandbox(sandbox, launch.user).map_err(io_err(format!(
        "giving the sandbox to user {}",
        launch.user.name
    )))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.cmd)
        .current_dir(sandbox)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    confine(&mut cmd, cg, confinement);
    cmd.spawn().map_err(io_err(format!(
        "starting /bin/sh -c {:?} as {}",
        spec.cmd, launch.user.name
    )))
}

/// Makes `cmd`'s child start its own session, join the task's cgroups
/// (while still root) and drop every privilege ([`Confinement::apply`])
/// before exec.
fn confine(cmd: &mut Command, cg: &TaskCgroups, confinement: Confinement) {
    let procs: Vec<CString> = cg
        .dirs()
        .iter()
        .map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).expect("no NUL"))
        .collect();
    // SAFETY: between fork and exec only async-signal-safe calls (setsid,
    // open, write, close, and Confinement::apply's prctl and raw credential
    // system calls) on buffers prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            confinement.apply()
        });
    }
}
