//! The published Python Marathon client (`marathon` on PyPI, pinned in
//! tests/python/requirements.txt) against a real `garrison-control`:
//! tests/python/marathon_client.py run with the virtualenv that `cargo xtask
//! deps` makes in `<target>/pyenv`. Host only: the QEMU guests have no Python.
//!
//! - [`venv_python`], [`marathon_client_script`]: where they are.
//! - [`run_marathon_client`]: runs the harness (bounded) and returns its
//!   steps, one JSON object per line.
//! - [`python_marathon_client_runs_an_app_on_the_control`]: the scenario, a
//!   control and one agent in a network namespace of the test's own.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::ControlProcess;
use crate::scenarios::{AgentProcess, task_binary};
use crate::{NetNsGuard, TestCgroup, TestPins, require_root, unique};

/// The virtualenv's interpreter: `GARRISON_PYTHON`, else `<target>/pyenv/bin/python`
/// beside the profile directory this test binary was built into (where
/// `cargo xtask deps` puts it for the same `CARGO_TARGET_DIR`).
pub fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("GARRISON_PYTHON") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a test binary under <target>/<profile>/deps");
    let python = target.join("pyenv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `cargo xtask deps` (it makes the virtualenv with the pinned \
         Python Marathon client), or set GARRISON_PYTHON to an interpreter that has it",
        python.display()
    );
    python
}

/// tests/python/marathon_client.py.
pub fn marathon_client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/marathon_client.py")
}

/// The harness' command line (see the script's `--help`).
pub struct MarathonClientArgs<'a> {
    /// `http://…` or `https://…`.
    pub url: String,
    /// PEM CA bundle to verify the control with (`--ca`).
    pub ca: Option<&'a Path>,
    /// Sent as `Authorization: token=…` (`auth_token=`).
    pub token: &'a str,
    pub app_id: &'a str,
    /// The app's command.
    pub cmd: &'a str,
    /// No agent runs tasks: the waits are skipped.
    pub no_agents: bool,
    /// The control guards only mutations with a static token (reads open,
    /// no `WWW-Authenticate`): those checks are skipped.
    pub legacy_auth: bool,
    /// Seconds each wait in the harness may take.
    pub wait_secs: u64,
}

/// What the harness printed.
#[derive(Debug)]
pub struct ClientRun {
    pub success: bool,
    /// One object per line: `{"step", "ok", …}`.
    pub steps: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// The names of the steps that passed, in order.
    pub fn passed(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s["ok"] == true)
            .filter_map(|s| s["step"].as_str())
            .collect()
    }

    pub fn step(&self, name: &str) -> Option<&serde_json::Value> {
        self.steps.iter().find(|s| s["step"] == name)
    }
}

/// Runs the harness with [`venv_python`]; killed (and the test failed) if it
/// outlives `limit`. Output goes through files in `dir`.
pub fn run_marathon_client(args: &MarathonClientArgs, dir: &Path, limit: Duration) -> ClientRun {
    let out_path = dir.join("marathon_client.out");
    let err_path = dir.join("marathon_client.err");
    let mut cmd = Command::new(venv_python());
    cmd.arg(marathon_client_script())
        .args(["--url", &args.url, "--token", args.token])
        .args(["--app-id", args.app_id, "--cmd", args.cmd])
        .args(["--timeout", &args.wait_secs.to_string()]);
    if let Some(ca) = args.ca {
        cmd.arg("--ca").arg(ca);
    }
    if args.no_agents {
        cmd.arg("--no-agents");
    }
    if args.legacy_auth {
        cmd.arg("--legacy-auth");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("harness stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("harness stderr file"))
        .spawn()
        .expect("start the Python harness");
    let status = wait_bounded(&mut child, limit);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "marathon_client.py still running after {limit:?}: killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    let steps = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("harness line {l:?}: {e}\n{stderr}"))
        })
        .collect();
    ClientRun {
        success: status.success(),
        steps,
        stdout,
        stderr,
    }
}

/// Waits for `child` at most `limit`; kills it past that (`None`).
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// One agent following the control (eBPF data path in its own cgroup and pins).
fn start_agent(
    dir: &Path,
    control: &ControlProcess,
    cg: &TestCgroup,
    pins: &TestPins,
) -> AgentProcess {
    let api = crate::reserved_addr();
    let config = dir.join("agent.toml");
    std::fs::write(&config, "[isolation]\nports = \"[31000-31999]\"\n").unwrap();
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let args: Vec<String> = vec![
        "--config".into(),
        path(&config),
        "--api".into(),
        api.to_string(),
        "--dataplane".into(),
        "ebpf".into(),
        "--cgroup".into(),
        path(cg.path()),
        "--bpffs".into(),
        path(pins.path()),
        "--state-dir".into(),
        path(&dir.join("agent-state")),
        "--work-dir".into(),
        path(&dir.join("agent-work")),
        "--cleanup".into(),
        "--kill-tasks-on-exit".into(),
        "--control".into(),
        format!("https://{}", control.api),
        "--control-ca".into(),
        path(&control.ca_file()),
        "--join-token".into(),
        control.join_token(),
        "--agent-id".into(),
        "agent-py".into(),
        "--hostname".into(),
        "node-py".into(),
        "--advertise-ip".into(),
        "127.0.0.1".into(),
    ];
    AgentProcess::start(&args, api, dir.join("agent.log"), "[")
}

/// The control, one agent and their namespace; the agent gets SIGTERM first
/// (it kills its tasks), then fields drop in order.
struct Rig {
    dir: PathBuf,
    agent: Option<AgentProcess>,
    control: ControlProcess,
    _pins: TestPins,
    _cg: TestCgroup,
    _ns: NetNsGuard,
}

impl Rig {
    fn new() -> (Self, SocketAddr) {
        let ns = NetNsGuard::enter_new().expect("netns");
        let dir = std::env::temp_dir().join(unique("python-client"));
        std::fs::create_dir_all(&dir).unwrap();
        let api = crate::reserved_addr();
        let control = ControlProcess::start(&dir, api, crate::reserved_addr());
        let cg = TestCgroup::new("python-client").expect("cgroup");
        let pins = TestPins::new("python-client").expect("pins");
        let agent = start_agent(&dir, &control, &cg, &pins);
        let rig = Rig {
            dir,
            agent: Some(agent),
            control,
            _pins: pins,
            _cg: cg,
            _ns: ns,
        };
        (rig, api)
    }

    fn logs(&self) -> String {
        format!(
            "--- control log\n{}\n--- agent log\n{}",
            self.control.log(),
            self.agent.as_ref().map(|a| a.log()).unwrap_or_default()
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.signal(libc::SIGTERM);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Python Marathon client, unchanged, drives the control with
/// `auth_token=`: info, 401 without or with a bad token (nothing created),
/// create an app with a `VIP_0` label, list (with embedded tasks), get, wait
/// for its task on a real agent, list tasks, scale to 2, deployments, kill a
/// task with scale, kill the app's tasks with scale (the app stays), delete.
pub fn python_marathon_client_runs_an_app_on_the_control() {
    require_root();
    let python = venv_python();
    let (rig, api) = Rig::new();
    let token = rig.control.client.token.clone().expect("logged in");
    let ca = rig.control.ca_file();
    let serve = task_binary("garrison-test-serve", "GARRISON_TEST_SERVE_BIN");
    let cmd = format!("{} $PORT0 $MESOS_TASK_ID", serve.display());
    let run = run_marathon_client(
        &MarathonClientArgs {
            url: format!("https://{api}"),
            ca: Some(&ca),
            token: &token,
            app_id: "/python-client",
            cmd: &cmd,
            no_agents: false,
            // Every route needs the token, 401s carry `oauthjwt`.
            legacy_auth: false,
            wait_secs: 60,
        },
        &rig.dir,
        Duration::from_secs(400),
    );
    let diagnostics = || {
        format!(
            "python {}\nstdout:\n{}\nstderr:\n{}\n{}",
            python.display(),
            run.stdout,
            run.stderr,
            rig.logs()
        )
    };
    println!("{}", run.stdout);
    assert!(run.success, "the harness failed\n{}", diagnostics());
    let expected = [
        "info",
        "unauthenticated",
        "create_app",
        "list_apps",
        "get_app",
        "wait_running_1",
        "list_apps_embed_tasks",
        "list_tasks",
        "scale_app",
        "wait_running_2",
        "list_tasks_2",
        "list_deployments",
        "kill_task",
        "kill_tasks",
        "delete_app",
        "done",
    ];
    assert_eq!(run.passed(), expected, "{}", diagnostics());
    let tasks = &run.step("list_tasks").expect("list_tasks")["tasks"];
    assert!(
        tasks[0]["staged_at"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "the client parsed stagedAt as a date: {tasks}"
    );
}
