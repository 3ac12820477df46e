//! Scenario of unprivileged tasks: a task launched through a running agent's
//! API runs as `nobody` with every capability set empty, `no_new_privs`, the
//! environment it was given and nothing else, descriptors 0–2 only, and can
//! read neither the agent's config, state, pins and recovery records nor the
//! agent's own /proc entries; root is refused unless the agent allows it, and
//! then runs without any capability either.
//!
//! The probing task uses shell builtins only (the guests ship `sh` and
//! `sleep`, no coreutils) and then `exec sleep`, so the test also reads the
//! task's process from outside, as root.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent_api::{agent_request, api_token},
    http_request,
    scenarios::{AgentProcess, AgentRig, RIG_VIP},
};

/// Debian's `nobody` (and the guests'): the agent's default user.
const NOBODY: u32 = 65534;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// POSTs a task with the agent's API token; (status, body as JSON).
fn post_task(rig: &AgentRig, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let token = api_token(&rig.state_dir());
    let (status, text) = agent_request(
        rig.api,
        "POST",
        "/v1/tasks",
        Some(&token),
        Some(&body.to_string()),
    )
    .expect("agent API");
    (status, json(&text))
}

fn task_request(id: &str, cmd: &str, user: Option<&str>) -> serde_json::Value {
    let mut t = serde_json::json!({
        "id": id,
        "cmd": cmd,
        "resources": {"cpus": 0.1, "mem": 32, "disk": 0},
        "env": {"APP_VAR": "from-the-request"},
    });
    if let Some(u) = user {
        t["user"] = u.into();
    }
    t
}

/// Waits (at most 20 s) for `marker` in the task's stdout; returns stdout.
fn wait_stdout(sandbox: &Path, marker: &str, agent: &AgentProcess) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
        if out.lines().any(|l| l == marker) {
            return out;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let stderr = std::fs::read_to_string(sandbox.join("stderr")).unwrap_or_default();
    panic!(
        "no {marker:?} from the task within 20 s; stderr: {stderr}\nagent log:\n{}",
        agent.log()
    );
}

/// The `pid N` line the probe prints before `exec sleep`.
fn task_pid(stdout: &str) -> u32 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.parse().ok())
        .unwrap_or_else(|| panic!("no pid line: {stdout}"))
}

/// `/proc/<pid>/status` as name → value.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).expect("task status"))
}

fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// No capability in any set, `no_new_privs`, and the uid/gid expected (real,
/// effective, saved and filesystem ids alike).
fn assert_confined(status: &BTreeMap<String, String>, uid: u32, gid: u32, what: &str) {
    let ids = |v: u32| [v; 4].map(|x| x.to_string()).join("\t");
    assert_eq!(status["Uid"], ids(uid), "{what}: {status:?}");
    assert_eq!(status["Gid"], ids(gid), "{what}: {status:?}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status.get(set).map(String::as_str),
            Some("0000000000000000"),
            "{what}: {set}: {status:?}"
        );
    }
    assert_eq!(
        status.get("NoNewPrivs").map(String::as_str),
        Some("1"),
        "{what}"
    );
}

/// The descriptors of a process, each with its target.
fn open_fds(pid: u32) -> BTreeMap<u32, PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd directory")
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?))
        })
        .collect()
}

/// The names in a process's environment.
fn environment_names(pid: u32) -> BTreeSet<String> {
    // A process in the middle of exec (the shell exec'ing its last command)
    // shows an empty environ for a moment (seen in a guest): read again.
    let mut raw = Vec::new();
    for _ in 0..100 {
        raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        if !raw.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map_or(kv.to_string(), |(k, _)| k.to_string())
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// What the probing task tries, with builtins only; every line it prints is
/// one finding. `try NAME FILE` opens a file for reading, `list NAME DIR`
/// lists a directory (a glob over an unreadable one stays literal).
fn probe(paths: &[(&str, &str, PathBuf)]) -> String {
    let mut script = String::from(
        "echo \"pid $$\"\n\
         for f in /proc/self/fd/*; do echo \"fd ${f##*/}\"; done\n\
         while IFS= read -r l; do echo \"status $l\"; done < /proc/self/status\n\
         try() { if (: < \"$2\") 2>/dev/null; then echo \"$1 readable\"; else echo \"$1 refused\"; fi; }\n\
         list() { n=$1; d=$2; set -- \"$d\"/*; if [ \"$1\" = \"$d/*\" ]; then echo \"$n unlisted\"; else echo \"$n listed\"; fi; }\n",
    );
    for (how, name, path) in paths {
        script += &format!("{how} {name} '{}'\n", path.display());
    }
    script += "echo done\nexec sleep 300\n";
    script
}

/// The findings `NAME readable|refused|listed|unlisted` of a probe's stdout.
fn findings(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, verdict) = l.rsplit_once(' ')?;
            ["readable", "refused", "listed", "unlisted"]
                .contains(&verdict)
                .then(|| (name.to_string(), verdict.to_string()))
        })
        .collect()
}

fn kill_and_wait(rig: &AgentRig, id: &str) {
    let token = api_token(&rig.state_dir());
    let (status, _) = agent_request(
        rig.api,
        "DELETE",
        &format!("/v1/tasks/{id}"),
        Some(&token),
        None,
    )
    .expect("agent API");
    assert_eq!(status, 202, "kill {id}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let (_, body) = http_request(rig.api, "GET", &format!("/v1/tasks/{id}"), None).unwrap();
        if json(&body)["state"] == "TASK_KILLED" {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{id} not killed within 10 s");
}

/// A task through the agent's API runs as `nobody` without capabilities,
/// with `no_new_privs`, only its own environment, descriptors 0–2, and can
/// read neither the agent's config, state, pins, recovery records nor the
/// agent's /proc entries; root is refused by default, an unknown user too.
/// With `allow_root_tasks` a root task runs, still without any capability,
/// and an NFQUEUE agent's descriptors (the `nfq` sockets included) are all
/// close-on-exec.
pub fn tasks_run_unprivileged_with_nothing_of_the_agent() {
    let rig = AgentRig::new("privilege", &["--poll-ms", "100"]);
    let config = rig.dir.join("agent.toml");
    std::fs::write(&config, "# the agent's own: tasks must not read it\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = rig.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = state.join("planted");
    std::fs::write(&planted, "state\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let arg = |flag: &str| {
        let i = rig.args.iter().position(|a| a == flag).expect(flag);
        PathBuf::from(&rig.args[i + 1])
    };
    let (work, pins) = (arg("--work-dir"), arg("--bpffs"));
    let mut args = rig.args.clone();
    args.extend(
        [
            "--config",
            config.to_str().unwrap(),
            "--kill-tasks-on-exit",
            "--cleanup",
        ]
        .map(String::from),
    );
    let mut agent = AgentProcess::start(&args, rig.api, rig.dir.join("agent.log"), RIG_VIP);
    let agent_pid = agent.pid();

    // What the agent keeps from tasks, seen from outside.
    assert_eq!(mode(&config), 0o600, "config: no group or other bits");
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&planted), 0o600, "files in the state directory");
    assert_eq!(mode(&pins), 0o700, "pin directory");
    assert_eq!(
        mode(&work),
        0o711,
        "work directory: traversable, not listable"
    );
    assert_eq!(mode(&work.join("tasks")), 0o711);
    assert_eq!(mode(&work.join("meta")), 0o700, "recovery records");

    // Refusals: root without allow_root_tasks, a user the host lacks.
    let (status, body) = post_task(&rig, &task_request("as-root", "true", Some("root")));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_task", "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(message.contains("allow_root_tasks"), "{body}");
    let (status, body) = post_task(
        &rig,
        &task_request("ghost", "true", Some("no-such-user-garrison")),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("no user \"no-such-user-garrison\""),
        "{body}"
    );

    // A first task, so the probe has a recovery record to try.
    let (status, body) = post_task(&rig, &task_request("holder", "sleep 300", None));
    assert_eq!(status, 201, "{body}\n{}", agent.log());
    assert_eq!(body["user"], "nobody", "{body}");
    let record = work.join("meta/tasks/holder.json");
    assert!(record.is_file(), "the holder's recovery record");

    let probe_cmd = probe(&[
        ("try", "config", config.clone()),
        ("try", "state-file", planted.clone()),
        ("list", "state", state.clone()),
        ("list", "work", work.clone()),
        ("try", "record", record.clone()),
        ("list", "pins", pins.clone()),
        ("list", "agent-fds", format!("/proc/{agent_pid}/fd").into()),
        ("try", "agent-log", format!("/proc/{agent_pid}/fd/2").into()),
        (
            "try",
            "agent-environ",
            format!("/proc/{agent_pid}/environ").into(),
        ),
    ]);
    let (status, body) = post_task(&rig, &task_request("probe", &probe_cmd, None));
    assert_eq!(status, 201, "{body}\n{}", agent.log());
    let sandbox = PathBuf::from(body["sandbox"].as_str().unwrap());
    let out = wait_stdout(&sandbox, "done", &agent);

    // The task's own view.
    let inside = parse_status(
        &out.lines()
            .filter_map(|l| l.strip_prefix("status "))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_confined(&inside, NOBODY, NOBODY, "the task's shell, from inside");
    let fds: BTreeSet<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("fd ")?.parse().ok())
        .collect();
    // 0–2, and the directory the glob itself was reading.
    assert_eq!(fds, BTreeSet::from([0, 1, 2, 3]), "{out}");
    let found = findings(&out);
    for (name, verdict) in [
        ("config", "refused"),
        ("state-file", "refused"),
        ("state", "unlisted"),
        ("work", "unlisted"),
        ("record", "refused"),
        ("pins", "unlisted"),
        ("agent-fds", "unlisted"),
        ("agent-log", "refused"),
        ("agent-environ", "refused"),
    ] {
        assert_eq!(
            found.get(name).map(String::as_str),
            Some(verdict),
            "{name}: {out}"
        );
    }
    // The same files are there for root: refused is not "missing".
    for p in [&config, &planted, &record] {
        assert!(std::fs::read(p).is_ok(), "{}", p.display());
    }

    // The task's process from outside (after `exec sleep`).
    let pid = task_pid(&out);
    assert_confined(&proc_status(pid), NOBODY, NOBODY, "the task, from outside");
    let fds = open_fds(pid);
    assert_eq!(
        fds,
        BTreeMap::from([
            (0, PathBuf::from("/dev/null")),
            (1, sandbox.join("stdout")),
            (2, sandbox.join("stderr")),
        ]),
        "only stdin, stdout, stderr"
    );
    // The shell exports its working directory to what it execs: `PWD` is
    // there or not depending on whether the shell already exec'd its last
    // command when /proc is read (it varied between guests), so it is left out.
    let mut names = environment_names(pid);
    names.remove("PWD");
    let expected: BTreeSet<String> = ["APP_VAR", "HOME", "MESOS_SANDBOX", "MESOS_TASK_ID", "PATH"]
        .map(String::from)
        .into();
    assert_eq!(names, expected, "nothing of the agent's environment");
    assert!(
        environment_names(agent_pid).contains("RUST_LOG"),
        "the agent has variables the task must not see"
    );
    let meta = std::fs::metadata(&sandbox).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (NOBODY, NOBODY, 0o750),
        "the sandbox is the task user's"
    );
    assert_eq!(
        std::fs::metadata(sandbox.join("stdout")).unwrap().uid(),
        NOBODY
    );
    kill_and_wait(&rig, "probe");
    kill_and_wait(&rig, "holder");
    agent.signal(libc::SIGTERM);
    drop(agent);

    // Root allowed: uid 0 and still nothing else. An NFQUEUE agent this time:
    // its `nfq` sockets must be close-on-exec like every other descriptor.
    let root_config = rig.dir.join("agent-root.toml");
    std::fs::write(&root_config, "[isolation]\nallow_root_tasks = true\n").unwrap();
    let mut args = rig.args.clone();
    args.extend(
        [
            "--config",
            root_config.to_str().unwrap(),
            "--dataplane",
            "nfqueue",
            "--kill-tasks-on-exit",
        ]
        .map(String::from),
    );
    let mut agent = AgentProcess::start(&args, rig.api, rig.dir.join("agent-root.log"), RIG_VIP);
    let agent_pid = agent.pid();
    assert!(
        agent.log().contains("dataplane=\"nfqueue\""),
        "{}",
        agent.log()
    );
    let probe_cmd = probe(&[
        ("try", "agent-log", format!("/proc/{agent_pid}/fd/2").into()),
        (
            "try",
            "agent-environ",
            format!("/proc/{agent_pid}/environ").into(),
        ),
    ]);
    let (status, body) = post_task(&rig, &task_request("root-probe", &probe_cmd, Some("root")));
    assert_eq!(status, 201, "{body}\n{}", agent.log());
    assert_eq!(body["user"], "root", "{body}");
    let sandbox = PathBuf::from(body["sandbox"].as_str().unwrap());
    let out = wait_stdout(&sandbox, "done", &agent);
    let pid = task_pid(&out);
    assert_confined(&proc_status(pid), 0, 0, "a root task");
    assert_eq!(
        open_fds(pid).keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "a root task has no agent descriptor either"
    );
    let found = findings(&out);
    for name in ["agent-log", "agent-environ"] {
        assert_eq!(
            found.get(name).map(String::as_str),
            Some("refused"),
            "uid 0 without CAP_SYS_PTRACE cannot reach the agent's /proc: {out}"
        );
    }
    let flags: Vec<(u32, String, u32)> = open_fds(agent_pid)
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .filter_map(|(fd, target)| {
            let info = std::fs::read_to_string(format!("/proc/{agent_pid}/fdinfo/{fd}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            let flags = u32::from_str_radix(flags.trim(), 8).expect("octal fdinfo flags");
            Some((fd, target.display().to_string(), flags))
        })
        .collect();
    let sockets = flags
        .iter()
        .filter(|(_, t, _)| t.starts_with("socket:"))
        .count();
    assert!(
        sockets >= 2,
        "an NFQUEUE agent holds netlink sockets (queues, conntrack): {flags:?}"
    );
    let inherited: Vec<_> = flags
        .iter()
        .filter(|(_, _, f)| f & libc::O_CLOEXEC as u32 == 0)
        .collect();
    assert!(
        inherited.is_empty(),
        "agent descriptors without close-on-exec: {inherited:?}"
    );
    kill_and_wait(&rig, "root-probe");
    agent.signal(libc::SIGTERM);
}

/// A COMMAND health check runs the way its task runs: as the task's user,
/// without any capability, with `no_new_privs`, in the task's sandbox and
/// cgroups (what `Launcher::task_command` gives the agent's checks).
pub fn command_checks_run_as_their_task() {
    use garrison_agent::isolation::{
        TaskResources, TaskSpec,
        launcher::{Launcher, LauncherConfig},
    };
    crate::require_root();
    let dir = std::env::temp_dir().join(crate::unique("privilege-check"));
    let launcher = Launcher::new(LauncherConfig {
        work_dir: dir.clone(),
        kill_grace: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("launcher");
    let id = crate::unique("checked");
    let info = launcher
        .launch(TaskSpec {
            id: id.clone(),
            cmd: "sleep 60".into(),
            resources: TaskResources {
                cpus: 0.1,
                mem: 32.0,
                disk: 0.0,
            },
            env: BTreeMap::from([("APP_VAR".to_string(), "x".to_string())]),
            user: None,
        })
        .expect("launch");
    let sandbox = PathBuf::from(&info.sandbox);
    let check = "while IFS= read -r l; do echo \"$l\"; done < /proc/self/status > check-status; \
                 while IFS= read -r l; do echo \"$l\"; done < /proc/self/cgroup > check-cgroup; \
                 test \"$APP_VAR\" = x";
    let status = launcher
        .task_command(&id, check)
        .expect("a command for a running task")
        .status()
        .expect("the check ran");
    assert!(status.success(), "the check sees the task's environment");
    let seen = parse_status(&std::fs::read_to_string(sandbox.join("check-status")).unwrap());
    assert_confined(&seen, NOBODY, NOBODY, "a COMMAND check");
    let cgroups = std::fs::read_to_string(sandbox.join("check-cgroup")).unwrap();
    // Every hierarchy holding task cgroups (all of them on v2; on a hybrid
    // host some v1 ones) shows the task's.
    let tasks_parent = format!("/{}/", garrison_agent::isolation::cgroups::PARENT);
    let task_lines: Vec<&str> = cgroups
        .lines()
        .filter(|l| l.contains(&tasks_parent))
        .collect();
    assert!(
        !task_lines.is_empty() && task_lines.iter().all(|l| l.ends_with(&format!("/{id}"))),
        "the check runs in the task's cgroups: {cgroups}"
    );
    launcher.kill(&id).unwrap();
    let start = Instant::now();
    while !launcher.get(&id).unwrap().state.is_terminal()
        && start.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        matches!(
            launcher.task_command(&id, "true"),
            Err(garrison_agent::isolation::TaskError::NotFound(_))
        ),
        "no command for an ended task"
    );
    // A default user the host lacks: tasks are unavailable, saying why.
    for (user, allow_root, needle) in [
        ("no-such-user-garrison", false, "no user"),
        ("root", false, "allow_root_tasks"),
    ] {
        match Launcher::new(LauncherConfig {
            work_dir: dir.clone(),
            default_user: user.into(),
            allow_root_tasks: allow_root,
            ..Default::default()
        }) {
            Err(garrison_agent::isolation::TaskError::Unavailable(why)) => assert!(
                why.contains("isolation.default_user") && why.contains(needle),
                "{why}"
            ),
            Err(e) => panic!("{user}: {e}"),
            Ok(_) => panic!("default user {user:?} accepted"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
