//! Scenarios of task isolation: real processes in real cgroups (v1
//! hierarchies on hybrid hosts such as this one, v2 in the guests).
use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use std::sync::{Arc, Mutex};

use garrison_agent::isolation::{
    TaskError, TaskInfo, TaskResources, TaskSpec, TaskState,
    hooks::Hook,
    launcher::{Launcher, LauncherConfig},
};

use crate::{require_root, unique};

/// A task request.
fn task(id: &str, cmd: &str, cpus: f64, mem: f64, disk: f64) -> TaskSpec {
    TaskSpec {
        env: Default::default(),
        id: id.into(),
        cmd: cmd.into(),
        resources: TaskResources { cpus, mem, disk },
        user: None,
    }
}

/// A shell command appending 64 KiB lines to `data` (64 MiB at most), running
/// `after_each` after each write (e.g. `|| exit 42`), then `then`.
fn write_64k_lines(after_each: &str, then: &str) -> String {
    format!(
        "x=aaaaaaaaaaaaaaaa; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do x=$x$x; done; \
         i=0; while [ $i -lt 1024 ]; do echo $x >> data {after_each}; i=$((i+1)); done; {then}"
    )
}

/// Waits (at most `secs`) for task `id` to end; returns its last view.
fn wait_end(launcher: &Launcher, id: &str, secs: u64) -> TaskInfo {
    let start = Instant::now();
    loop {
        let info = launcher.get(id).expect("known task");
        if info.state.is_terminal() || start.elapsed() > Duration::from_secs(secs) {
            return info;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

struct Rig {
    launcher: Launcher,
    dir: PathBuf,
}

impl Rig {
    fn new(name: &str) -> Self {
        require_root();
        let dir = std::env::temp_dir().join(unique(name));
        let launcher = Launcher::new(LauncherConfig {
            work_dir: dir.clone(),
            kill_grace: Duration::from_millis(500),
            ..Default::default()
        })
        .expect("launcher (cgroup controllers cpu, memory, pids)");
        Rig { launcher, dir }
    }

    fn launch(&self, id: &str, cmd: &str, cpus: f64, mem: f64) -> TaskInfo {
        self.launcher
            .launch(task(id, cmd, cpus, mem, 0.0))
            .unwrap_or_else(|e| panic!("launching {id}: {e}"))
    }

    /// Waits (at most `secs`) for the task to end.
    fn wait_end(&self, id: &str, secs: u64) -> TaskInfo {
        wait_end(&self.launcher, id, secs)
    }

    fn stats(&self, id: &str) -> garrison_agent::isolation::stats::TaskStatistics {
        self.launcher
            .statistics()
            .into_iter()
            .find(|(i, _)| i.id == id)
            .map(|(_, s)| s)
            .expect("statistics of a running task")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for t in self.launcher.list() {
            let _ = self.launcher.kill(&t.id);
        }
        for t in self.launcher.list() {
            self.wait_end(&t.id, 5);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cgroup_dirs_of(id: &str, launcher: &Launcher) -> Vec<PathBuf> {
    launcher
        .layout()
        .controllers
        .values()
        .map(|h| match h {
            garrison_agent::isolation::cgroups::Hierarchy::V1(p)
            | garrison_agent::isolation::cgroups::Hierarchy::V2(p) => {
                p.join(garrison_agent::isolation::cgroups::PARENT).join(id)
            }
        })
        .collect()
}

/// A busy loop given 0.5 cpus uses 0.5 ± 0.1 of a CPU, and the statistics
/// agree with /proc for the same process.
pub fn task_busy_loop_gets_half_a_cpu() {
    let rig = Rig::new("cpu");
    let id = unique("busy");
    rig.launch(&id, "while :; do :; done", 0.5, 32.0);
    thread::sleep(Duration::from_millis(300));
    let s0 = rig.stats(&id);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(3));
    let s1 = rig.stats(&id);
    let secs = t0.elapsed().as_secs_f64();
    let used = (s1.cpus_user_time_secs + s1.cpus_system_time_secs
        - s0.cpus_user_time_secs
        - s0.cpus_system_time_secs)
        / secs;
    assert!(
        (used - 0.5).abs() <= 0.1,
        "busy loop used {used:.3} CPUs, limit 0.5"
    );
    assert_eq!(s1.cpus_limit, 0.5);
    assert!(s1.cpus_nr_throttled > 0, "{s1:?}");
    assert_eq!(s1.processes, 1, "{s1:?}");
    assert_eq!(s1.mem_limit_bytes, 32 * 1024 * 1024);
    // /proc's view of the one process: utime + stime in ticks.
    let dirs = cgroup_dirs_of(&id, &rig.launcher);
    let pid: i32 = std::fs::read_to_string(dirs[0].join("cgroup.procs"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let proc_secs = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz;
    let s2 = rig.stats(&id);
    let cg_secs = s2.cpus_user_time_secs + s2.cpus_system_time_secs;
    assert!(
        (proc_secs - cg_secs).abs() <= 0.1 + 0.1 * cg_secs,
        "/proc {proc_secs:.2} s against the cgroup's {cg_secs:.2} s"
    );
}

/// A task allocating past its memory limit is OOM-killed and reported
/// FAILED with reason "memory limit".
pub fn task_over_memory_limit_fails_with_memory_limit() {
    let rig = Rig::new("mem");
    let id = unique("hog");
    // tail buffers /dev/zero looking for a newline: memory without bound.
    rig.launch(&id, "tail /dev/zero", 1.0, 32.0);
    let info = rig.wait_end(&id, 30);
    assert_eq!(info.state, TaskState::Failed, "{info:?}");
    assert_eq!(info.reason.as_deref(), Some("memory limit"), "{info:?}");
    for d in cgroup_dirs_of(&id, &rig.launcher) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// A killed task leaves no process and no cgroup; exit statuses and stdout
/// are kept; bad requests change nothing.
pub fn killed_task_leaves_nothing_and_bad_requests_change_nothing() {
    let rig = Rig::new("kill");
    let id = unique("sleepers");
    // Two children that ignore nothing: SIGTERM ends them; `trap` makes the
    // shell itself ignore SIGTERM, so the SIGKILL after the grace is needed.
    rig.launch(&id, "trap '' TERM; sleep 300 & sleep 300 & wait", 0.2, 16.0);
    thread::sleep(Duration::from_millis(300));
    let dirs = cgroup_dirs_of(&id, &rig.launcher);
    let pids: Vec<i32> = std::fs::read_to_string(dirs[0].join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "shell and two sleeps: {pids:?}");
    rig.launcher.kill(&id).unwrap();
    let info = rig.wait_end(&id, 10);
    assert_eq!(info.state, TaskState::Killed, "{info:?}");
    for pid in pids {
        // Gone, or a zombie waiting for its (re)parent to reap it: dead.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().chars().next())
            })
            .flatten();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "process {pid} survived the kill (state {state:?})"
        );
    }
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }

    let ok = unique("ok");
    rig.launch(&ok, "echo hello from $MESOS_TASK_ID", 0.1, 16.0);
    let info = rig.wait_end(&ok, 10);
    assert_eq!(
        (info.state, info.exit_status),
        (TaskState::Finished, Some(0))
    );
    let out = std::fs::read_to_string(PathBuf::from(&info.sandbox).join("stdout")).unwrap();
    assert_eq!(out.trim(), format!("hello from {ok}"));
    let bad = unique("bad");
    rig.launch(&bad, "exit 3", 0.1, 16.0);
    let info = rig.wait_end(&bad, 10);
    assert_eq!(
        (info.state, info.exit_status),
        (TaskState::Failed, Some(3)),
        "{info:?}"
    );

    let before = rig.launcher.list().len();
    let spec = |id: &str, cmd: &str, cpus: f64| task(id, cmd, cpus, 16.0, 0.0);
    assert!(matches!(
        rig.launcher
            .launch(spec("nope", "no-such-command-garrison", 0.1)),
        Err(TaskError::CommandNotFound(_))
    ));
    assert!(matches!(
        rig.launcher.launch(spec("../escape", "true", 0.1)),
        Err(TaskError::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        rig.launcher.launch(spec("neg", "true", -1.0)),
        Err(TaskError::Invalid {
            field: "resources.cpus",
            ..
        })
    ));
    assert!(matches!(
        rig.launcher.launch(spec(&ok, "true", 0.1)),
        Err(TaskError::Exists(_))
    ));
    assert_eq!(
        rig.launcher.list().len(),
        before,
        "refused requests add no task"
    );
    assert!(!rig.dir.join("tasks/nope").exists());
    assert!(!rig.dir.join("escape").exists());
}

/// Records hook calls in a shared journal; refuses tasks named "refused…".
struct Journal {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Hook for Journal {
    fn name(&self) -> &str {
        self.name
    }
    fn pre_launch(&self, task: &TaskInfo) -> Result<(), String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} pre {}", self.name, task.id));
        if task.id.contains("refused") {
            return Err("refused by the test".into());
        }
        Ok(())
    }
    fn post_exit(&self, task: &TaskInfo) {
        let state = serde_json::to_string(&task.state).unwrap();
        self.log
            .lock()
            .unwrap()
            .push(format!("{} post {} {state}", self.name, task.id));
    }
}

/// Hooks run in order (Rust hooks, then the configured command) before the
/// command starts and after the task ended; a refusing pre-launch hook
/// leaves nothing behind.
pub fn hooks_run_in_order_and_can_refuse() {
    require_root();
    let dir = std::env::temp_dir().join(unique("hooks"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("hook.sh");
    let hook_log = dir.join("hook.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"command $1 $GARRISON_TASK_ID $GARRISON_TASK_STATE\" >> {}\n",
            hook_log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let hooks: Vec<Arc<dyn Hook>> = vec![
        Arc::new(Journal {
            name: "a",
            log: log.clone(),
        }),
        Arc::new(Journal {
            name: "b",
            log: log.clone(),
        }),
    ];
    let launcher = Launcher::with_hooks(
        LauncherConfig {
            work_dir: dir.join("work"),
            hook_command: Some(script),
            ..Default::default()
        },
        hooks,
    )
    .expect("launcher");
    let spec = |id: &str| task(id, "true", 0.1, 16.0, 0.0);
    let id = unique("t1");
    launcher.launch(spec(&id)).unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&hook_log).map_or(0, |t| t.lines().count()) < 2
        && start.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            format!("a pre {id}"),
            format!("b pre {id}"),
            format!("a post {id} \"TASK_FINISHED\""),
            format!("b post {id} \"TASK_FINISHED\""),
        ]
    );
    let text = std::fs::read_to_string(&hook_log).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            format!("command pre-launch {id} TASK_STAGING"),
            format!("command post-exit {id} TASK_FINISHED"),
        ]
    );
    let refused = unique("refused");
    match launcher.launch(spec(&refused)) {
        Err(TaskError::Hook { hook, .. }) => assert_eq!(hook, "a"),
        other => panic!("{other:?}"),
    }
    assert!(launcher.get(&refused).is_none());
    assert!(!dir.join("work/tasks").join(&refused).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// disk/du: a task writing past its disk resource is killed with Mesos'
/// message; its usage shows in the statistics before that.
pub fn task_over_disk_quota_is_killed_by_the_du_watcher() {
    require_root();
    let dir = std::env::temp_dir().join(unique("du"));
    let launcher = Launcher::new(LauncherConfig {
        work_dir: dir.clone(),
        disk_watch_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .expect("launcher");
    let id = unique("writer");
    // Appending until the watcher acts.
    launcher
        .launch(task(&id, &write_64k_lines("", "sleep 30"), 0.5, 64.0, 2.0))
        .unwrap();
    let info = wait_end(&launcher, &id, 30);
    assert_eq!(info.state, TaskState::Failed, "{info:?}");
    let reason = info.reason.unwrap_or_default();
    assert!(
        reason.starts_with("Disk usage (") && reason.ends_with(") exceeds quota (2MB)"),
        "{reason}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loop-mounted ext4 image with project quotas enforced (`-O quota,project`,
/// `prjquota`), removed on drop.
struct QuotaFs {
    dir: PathBuf,
    loopdev: String,
    mnt: PathBuf,
}

impl QuotaFs {
    /// `Err` when the kernel cannot mount ext4 with project quotas (built
    /// without quota format support); other failures panic.
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(unique("quota"));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let img_s = img.to_str().unwrap();
        crate::run_cmd(
            "mkfs.ext4",
            &["-q", "-F", "-I", "256", "-O", "quota,project", img_s],
        )
        .expect("mkfs.ext4 -O quota,project");
        let loopdev = crate::cmd_output("losetup", &["--find", "--show", img_s])
            .unwrap()
            .trim()
            .to_string();
        assert!(loopdev.starts_with("/dev/loop"), "losetup: {loopdev:?}");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        // SAFETY: mount(2) with valid C strings.
        let r = unsafe {
            libc::mount(
                c(&loopdev).as_ptr(),
                c(mnt.to_str().unwrap()).as_ptr(),
                c("ext4").as_ptr(),
                0,
                c("prjquota").as_ptr().cast(),
            )
        };
        let err = std::io::Error::last_os_error();
        let fs = QuotaFs { dir, loopdev, mnt };
        if r != 0 {
            return Err(format!("mount ext4 -o prjquota: {err}"));
        }
        Ok(fs)
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.mnt.to_str().unwrap()).unwrap();
        // SAFETY: umount2(2) with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = crate::run_cmd("losetup", &["-d", &self.loopdev]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// disk/quota: on a filesystem with project quotas, writes past the task's
/// disk resource fail (EDQUOT) while the filesystem has room.
/// On a kernel without project quota support (this host's), the fallback is
/// what is checked: `disk/quota` is refused with the reason and `disk` picks
/// the du watcher (whose kill is its own scenario).
pub fn task_past_its_project_quota_gets_edquot() {
    require_root();
    let fs = match QuotaFs::new() {
        Ok(fs) => fs,
        Err(why) => {
            println!("project quotas unavailable on this kernel ({why}): checking the fallback");
            let dir = std::env::temp_dir().join(unique("noquota"));
            let config = |isolator: &str| LauncherConfig {
                work_dir: dir.clone(),
                isolators: vec!["cpu".into(), isolator.into()],
                ..Default::default()
            };
            match Launcher::new(config("disk/quota")) {
                Err(TaskError::Unavailable(msg)) => {
                    assert!(msg.contains("project quotas are not enabled"), "{msg}")
                }
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("disk/quota accepted without project quotas"),
            }
            let auto = Launcher::new(config("disk")).expect("launcher with disk");
            assert_eq!(
                auto.disk_mode(),
                garrison_agent::isolation::launcher::DiskMode::Du
            );
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    println!("project quotas available: checking EDQUOT");
    let launcher = Launcher::new(LauncherConfig {
        work_dir: fs.mnt.join("work"),
        isolators: ["cpu", "memory", "pids", "disk/quota"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    })
    .expect("launcher with disk/quota");
    assert_eq!(
        launcher.disk_mode(),
        garrison_agent::isolation::launcher::DiskMode::Quota
    );
    let id = unique("filler");
    launcher
        .launch(task(
            &id,
            &write_64k_lines("|| exit 42", ""),
            0.5,
            64.0,
            2.0,
        ))
        .unwrap();
    let info = wait_end(&launcher, &id, 30);
    assert_eq!(
        (info.state, info.exit_status),
        (TaskState::Failed, Some(42)),
        "{info:?}"
    );
    let sandbox = PathBuf::from(&info.sandbox);
    let size = std::fs::metadata(sandbox.join("data")).unwrap().len();
    assert!(
        (1024 * 1024..=2 * 1024 * 1024).contains(&size),
        "wrote {size} bytes under a 2 MB quota"
    );
    // The write failed with room left on the filesystem: the quota, not
    // ENOSPC, stopped it (dash reports any failed write as "I/O error").
    let stderr = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
    assert!(!stderr.is_empty(), "the failed write is reported");
    let c = std::ffi::CString::new(fs.mnt.to_str().unwrap()).unwrap();
    // SAFETY: statvfs(3) into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    assert!(
        free > 32 << 20,
        "only {free} bytes free: not a quota failure"
    );
}

/// pids: a task cannot hold more processes than `pids_max`; forks past it fail.
pub fn task_forks_stop_at_the_pids_limit() {
    require_root();
    let dir = std::env::temp_dir().join(unique("pids"));
    let launcher = Launcher::new(LauncherConfig {
        work_dir: dir.clone(),
        pids_max: 4,
        kill_grace: Duration::from_millis(200),
        ..Default::default()
    })
    .expect("launcher");
    let id = unique("forker");
    launcher
        .launch(task(
            &id,
            "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; sleep 5",
            0.2,
            32.0,
            0.0,
        ))
        .unwrap();
    // dash gives up when a fork is refused: the task fails, saying why.
    let info = wait_end(&launcher, &id, 20);
    assert_eq!(info.state, TaskState::Failed, "{info:?}");
    let stderr = std::fs::read_to_string(PathBuf::from(&info.sandbox).join("stderr")).unwrap();
    assert!(stderr.to_lowercase().contains("fork"), "stderr: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new launcher on the same work directory (an agent restarted after a
/// crash) re-adopts the running tasks: their state, resources and cgroups;
/// it can kill them, and sees those that end by themselves end.
pub fn a_restarted_launcher_readopts_running_tasks() {
    use garrison_agent::isolation::cgroups::{Layout, TaskCgroups};
    let rig = Rig::new("readopt");
    let (long, short) = (unique("long"), unique("short"));
    rig.launch(&long, "sleep 300", 0.1, 16.0);
    rig.launch(&short, "sleep 1", 0.1, 16.0);
    let layout = Layout::detect().unwrap();
    // The "restarted agent": a second launcher on the same work directory.
    let restarted = Launcher::new(LauncherConfig {
        work_dir: rig.dir.clone(),
        kill_grace: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("second launcher");
    let t = restarted.get(&long).expect("re-adopted");
    assert_eq!(t.state, TaskState::Running);
    assert_eq!((t.resources.cpus, t.resources.mem), (0.1, 16.0));
    assert!(
        restarted
            .statistics()
            .iter()
            .any(|(i, s)| i.id == long && s.processes >= 1),
        "statistics of the re-adopted task come from its cgroups"
    );
    // The short one ends by itself: seen, with an unknown exit status.
    let end = wait_end(&restarted, &short, 10);
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert!(
        end.reason.as_deref().unwrap_or("").contains("unknown"),
        "{end:?}"
    );
    // The long one is killed through the new launcher.
    restarted.kill(&long).unwrap();
    let end = wait_end(&restarted, &long, 10);
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert!(
        TaskCgroups::existing(&layout, &long).is_none(),
        "its cgroups are gone"
    );
    assert!(
        !rig.dir
            .join("meta/tasks")
            .join(format!("{long}.json"))
            .exists(),
        "its recovery record is gone"
    );
}

/// Ended tasks are forgotten and their sandboxes removed after the
/// garbage-collection delay (checked at the next launch, and at start for
/// sandboxes an earlier agent left).
pub fn ended_tasks_and_their_sandboxes_are_collected() {
    require_root();
    let dir = std::env::temp_dir().join(unique("gc"));
    let config = LauncherConfig {
        work_dir: dir.clone(),
        kill_grace: Duration::from_millis(500),
        sandbox_gc: Duration::from_millis(200),
        ..Default::default()
    };
    let launcher = Launcher::new(config.clone()).expect("launcher");
    let first = unique("first");
    launcher
        .launch(task(&first, "true", 0.1, 16.0, 0.0))
        .unwrap();
    let end = wait_end(&launcher, &first, 5);
    assert_eq!(end.state, TaskState::Finished);
    let sandbox = dir.join("tasks").join(&first);
    assert!(sandbox.is_dir(), "kept while younger than the delay");
    thread::sleep(Duration::from_millis(300));
    let second = unique("second");
    launcher
        .launch(task(&second, "true", 0.1, 16.0, 0.0))
        .unwrap();
    assert!(launcher.get(&first).is_none(), "forgotten");
    assert!(!sandbox.exists(), "sandbox removed");
    wait_end(&launcher, &second, 5);
    // An agent starting later removes what is left once old enough.
    thread::sleep(Duration::from_millis(300));
    let _restarted = Launcher::new(config).expect("launcher");
    assert!(
        !dir.join("tasks").join(&second).exists(),
        "old sandbox removed at start"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
