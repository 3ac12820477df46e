//! Garrison without Mesos: a `garrison-control` and two agents following it,
//! in a network namespace of the test's own (loopback only). The agents use
//! the eBPF path, each attached to its own child cgroup with its own pins and
//! port range; the test joins agent A's cgroup, so its connects to a VIP are
//! balanced by agent A's programs. Tasks are `garrison-test-serve`, run as
//! `nobody` from a copy it can reach ([`task_binary`]).
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scenarios::{AgentProcess, sibling_binary, task_binary};
use crate::{NetNsGuard, TestCgroup, TestPins, http_request, require_root, unique};
use garrison_control::client::ApiClient;

const VIP_NAME: &str = "web.marathon.l4lb.thisdcos.directory";

/// Polls `f` every 50 ms until it returns `Some`, at most `secs`.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {secs} s");
}

fn json(api: &ApiClient, path: &str) -> serde_json::Value {
    let (status, body) = api.request("GET", path, None).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// An A query over UDP: (rcode, addresses).
pub fn dns_a(server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let a = garrison_control::dns::client::query_a(server, name).expect("DNS answer");
    (u16::from(a.rcode) as u8, a.addresses)
}

/// The control process (TLS with its own CA, accounts on), and a client
/// logged in as the bootstrap account.
pub(crate) struct ControlProcess {
    child: Child,
    pub(crate) api: SocketAddr,
    pub(crate) client: ApiClient,
    dns: SocketAddr,
    data: PathBuf,
    log: PathBuf,
}

impl ControlProcess {
    pub(crate) fn start(dir: &Path, api: SocketAddr, dns: SocketAddr) -> Self {
        let data = dir.join("control-data");
        let log = dir.join("control.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(sibling_binary("garrison-control", "GARRISON_CONTROL_BIN"))
            .args([
                "run",
                "--listen",
                &api.to_string(),
                "--dns",
                &dns.to_string(),
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(["--agent-timeout-secs", "3", "--heartbeat-ms", "200"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start garrison-control");
        let client = wait_for("the control serving (TLS, bootstrap login)", 90, || {
            let ca = std::fs::read(data.join("tls").join("ca.pem")).ok()?;
            let creds: serde_json::Value = serde_json::from_slice(
                &std::fs::read(data.join("bootstrap-credentials.json")).ok()?,
            )
            .ok()?;
            let client = ApiClient::tls(api, &ca).ok()?;
            let token = client
                .login(creds["uid"].as_str()?, creds["password"].as_str()?)
                .ok()?;
            Some(client.with_token(token))
        });
        ControlProcess {
            child,
            api,
            client,
            dns,
            data,
            log,
        }
    }

    /// The control's CA certificate file (agents verify the control with it).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.data.join("tls").join("ca.pem")
    }

    /// A fresh join token, minted by the CLI from the data dir.
    pub(crate) fn join_token(&self) -> String {
        let out = Command::new(sibling_binary("garrison-control", "GARRISON_CONTROL_BIN"))
            .args(["token", "create", "--join", "--data-dir"])
            .arg(&self.data)
            .output()
            .expect("garrison-control token create");
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One agent following the control.
struct RigAgent {
    process: Option<AgentProcess>,
    api: SocketAddr,
    work: PathBuf,
    /// How it was started (to restart it).
    args: Vec<String>,
    log: PathBuf,
    _pins: TestPins,
    _cg: TestCgroup,
}

/// The control and two agents (A on ports 31000–31999, B on 32000–32999).
struct ControlRig {
    dir: PathBuf,
    control: Option<ControlProcess>,
    /// The control's API as the bootstrap account.
    api: ApiClient,
    dns: SocketAddr,
    agents: Vec<RigAgent>,
    _ns: NetNsGuard,
}

impl ControlRig {
    fn new(name: &str) -> Self {
        require_root();
        let ns = NetNsGuard::enter_new().expect("netns");
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let api: SocketAddr = crate::reserved_addr();
        let dns: SocketAddr = crate::reserved_addr();
        let control = ControlProcess::start(&dir, api, dns);
        // B first: the test process stays in the last cgroup made (A's).
        let mut agents: Vec<RigAgent> = ["b", "a"]
            .iter()
            .map(|which| Self::agent(&dir, name, which, &control))
            .collect();
        agents.reverse();
        let rig = ControlRig {
            dir,
            api: control.client.clone(),
            control: Some(control),
            dns,
            agents,
            _ns: ns,
        };
        wait_for("both agents registered", 20, || {
            let agents = json(&rig.api, "/v1/agents");
            (agents["agents"].as_array()?.len() == 2).then_some(())
        });
        rig
    }

    fn agent(dir: &Path, name: &str, which: &str, control: &ControlProcess) -> RigAgent {
        let cg = TestCgroup::new(&format!("{name}-{which}")).expect("cgroup");
        let pins = TestPins::new(&format!("{name}-{which}")).expect("pins");
        let api: SocketAddr = crate::reserved_addr();
        let work = dir.join(format!("work-{which}"));
        let config = dir.join(format!("agent-{which}.toml"));
        let ports = if which == "a" {
            "[31000-31999]"
        } else {
            "[32000-32999]"
        };
        std::fs::write(&config, format!("[isolation]\nports = \"{ports}\"\n")).unwrap();
        let args: Vec<String> = [
            "--config",
            config.to_str().unwrap(),
            "--api",
            &api.to_string(),
            "--dataplane",
            "ebpf",
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--bpffs",
            pins.path().to_str().unwrap(),
            "--state-dir",
            dir.join(format!("state-{which}")).to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cleanup",
            "--kill-tasks-on-exit",
            "--control",
            &format!("https://{}", control.api),
            "--control-ca",
            control.ca_file().to_str().unwrap(),
            "--join-token",
            &control.join_token(),
            "--agent-id",
            &format!("agent-{which}"),
            "--hostname",
            &format!("node-{which}"),
            "--advertise-ip",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.join(format!("agent-{which}.log"));
        let process = AgentProcess::start(&args, api, log.clone(), "[");
        RigAgent {
            process: Some(process),
            api,
            work,
            args,
            log,
            _pins: pins,
            _cg: cg,
        }
    }

    fn control(&self) -> &ControlProcess {
        self.control.as_ref().expect("control running")
    }

    fn post_app(&self, body: &str) -> (u16, String) {
        self.api.request("POST", "/v2/apps", Some(body)).unwrap()
    }

    /// Tasks of /web as (id, agent, port, healthy).
    fn tasks(&self) -> Vec<(String, String, u16, Option<bool>)> {
        let v = json(&self.api, "/v2/apps/web/tasks");
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["slaveId"].as_str().unwrap().to_string(),
                    t["ports"][0].as_u64().unwrap() as u16,
                    t["healthCheckResults"][0]["alive"].as_bool(),
                )
            })
            .collect()
    }

    /// Waits until /web has `n` running tasks (healthy when it has checks)
    /// and no deployment.
    fn wait_steady(&self, n: usize, secs: u64) -> Vec<(String, String, u16, Option<bool>)> {
        wait_for(&format!("{n} healthy /web tasks"), secs, || {
            let deployments = json(&self.api, "/v2/deployments");
            let app = json(&self.api, "/v2/apps/web");
            let healthy = app["app"]["tasksHealthy"].as_u64()?;
            let running = app["app"]["tasksRunning"].as_u64()?;
            let checks = !app["app"]["healthChecks"].as_array()?.is_empty();
            let ok = deployments.as_array()?.is_empty()
                && running as usize == n
                && (!checks || healthy as usize == n);
            ok.then(|| self.tasks())
        })
    }

    /// The VIP as agent `i` programmed it: (address, [(port, weight)]).
    fn agent_vip(&self, i: usize) -> Option<(String, Vec<(u16, u32)>)> {
        let (status, body) = http_request(self.agents[i].api, "GET", "/v1/vips", None).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let vip = v
            .as_array()?
            .iter()
            .find(|e| e["vip"].as_str().is_some_and(|s| s.starts_with(VIP_NAME)))?;
        let backends = vip["backend"]
            .as_array()?
            .iter()
            .map(|b| {
                (
                    b["port"].as_u64().unwrap() as u16,
                    b["weight"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        Some((vip["address"].as_str()?.to_string(), backends))
    }

    /// GETs `/` through the VIP `n` times; the task names that answered.
    fn spread(&self, vip: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
        let addr: SocketAddr = vip.parse().unwrap();
        let mut out = std::collections::BTreeMap::new();
        for _ in 0..n {
            let (status, body) =
                http_request(addr, "GET", "/", None).expect("request through the VIP");
            assert_eq!(status, 200);
            *out.entry(body).or_insert(0) += 1;
        }
        out
    }

    fn diagnostics(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.control {
            s += &format!("--- control log\n{}\n", c.log());
        }
        for (i, a) in self.agents.iter().enumerate() {
            if let Some(p) = &a.process {
                s += &format!("--- agent {i} log\n{}\n", p.log());
            }
        }
        s
    }
}

impl Drop for ControlRig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        // Agents first: SIGTERM kills their tasks.
        for a in &mut self.agents {
            if let Some(mut p) = a.process.take() {
                p.signal(libc::SIGTERM);
            }
        }
        self.control.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn web_app(health_checks: &str) -> String {
    let serve = task_binary("garrison-test-serve", "GARRISON_TEST_SERVE_BIN");
    format!(
        r#"{{"id":"/web","cmd":"{} $PORT0 $MESOS_TASK_ID","instances":2,"cpus":0.1,"mem":32,
            "portDefinitions":[{{"port":0,"name":"http","labels":{{"VIP_0":"/web:80"}}}}],
            "healthChecks":[{health_checks}],"labels":{{"DCOS_SERVICE_NAME":"web"}}}}"#,
        serve.display()
    )
}

const HTTP_CHECK: &str = r#"{"protocol":"HTTP","path":"/health","gracePeriodSeconds":20,
    "intervalSeconds":0.2,"timeoutSeconds":1,"maxConsecutiveFailures":3}"#;

/// An app goes from POST to healthy instances behind a named VIP that DNS
/// answers; an unhealthy task weighs 0 on every agent at once and is replaced;
/// bad JSON changes nothing; DELETE removes the VIP everywhere.
pub fn control_runs_an_app_behind_a_named_vip_and_drains_failures() {
    let rig = ControlRig::new("ctl-app");

    // Bad input: 422 with details, nothing created.
    let (status, body) = rig.post_app(r#"{"id":"/Web","instances":-1}"#);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("\"path\":\"/id\"") && body.contains("\"path\":\"/cmd\""),
        "{body}"
    );
    assert_eq!(json(&rig.api, "/v2/apps")["apps"], serde_json::json!([]));

    let (status, body) = rig.post_app(&web_app(HTTP_CHECK));
    assert_eq!(status, 201, "{body}");
    let tasks = rig.wait_steady(2, 30);
    let agents: std::collections::BTreeSet<&str> = tasks.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(agents.len(), 2, "one instance per agent: {tasks:?}");

    // The name resolves (once both agents programmed it) to the VIP the agents hold.
    let (vip_addr, _) = wait_for("both agents programmed the VIP", 10, || {
        let a = rig.agent_vip(0)?;
        let b = rig.agent_vip(1)?;
        (a.1.iter().filter(|x| x.1 == 1).count() == 2 && b.1.len() == 2).then_some(a)
    });
    let vip_ip = vip_addr.split(':').next().unwrap().to_string();
    let (rcode, ips) = wait_for("DNS answers the VIP name", 10, || {
        let r = dns_a(rig.dns, VIP_NAME);
        (!r.1.is_empty()).then_some(r)
    });
    assert_eq!((rcode, ips[0].to_string()), (0, vip_ip.clone()));
    let (rcode, ips) = dns_a(rig.dns, "web.marathon.mesos");
    assert_eq!(
        (rcode, ips.len()),
        (0, 1),
        "both tasks on 127.0.0.1: one address"
    );
    assert_eq!(dns_a(rig.dns, "nope.marathon.mesos").0, 3, "NXDOMAIN");
    assert_eq!(dns_a(rig.dns, "example.com").0, 5, "REFUSED");

    let seen = rig.spread(&vip_addr, 20);
    assert_eq!(seen.len(), 2, "both tasks answer through the VIP: {seen:?}");

    // Admin Router's routes: /service/web/… reaches a task (round robin),
    // /agent/<id>/… an agent's own API through its stream; both need a token.
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = rig.api.request("GET", "/service/web/", None).unwrap();
        assert_eq!(status, 200, "/service/web/: {body}");
        answered.insert(body);
    }
    assert_eq!(
        answered.len(),
        2,
        "both tasks behind /service/web: {answered:?}"
    );
    let (status, body) = rig.api.request("GET", "/service/web/health", None).unwrap();
    assert_eq!((status, body.trim()), (200, "ok"), "/service/web/health");
    let (status, body) = rig.api.request("GET", "/service/nope/", None).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("DCOS_SERVICE_NAME=nope"), "{body}");
    let (status, _) = rig
        .api
        .anonymous()
        .request("GET", "/service/web/", None)
        .unwrap();
    assert_eq!(status, 401);
    let stats = json(&rig.api, "/agent/agent-a/monitor/statistics");
    assert!(
        stats.as_array().is_some(),
        "/agent/agent-a/monitor/statistics: {stats}"
    );
    let (status, body) = rig.api.request("GET", "/agent/nope/state", None).unwrap();
    assert_eq!(status, 502, "{body}");
    let (status, _) = rig
        .api
        .request("DELETE", "/agent/agent-a/v1/tasks/x", None)
        .unwrap();
    assert_eq!(status, 405, "read-only through the control");

    // Drain: task 0 turns unhealthy.
    let (victim, victim_agent, victim_port, _) = tasks[0].clone();
    let work = if victim_agent == "agent-a" {
        &rig.agents[0].work
    } else {
        &rig.agents[1].work
    };
    std::fs::write(work.join("tasks").join(&victim).join("unhealthy"), "").unwrap();
    let drained = Instant::now();
    wait_for("weight 0 on every agent", 10, || {
        let zero = |i| {
            rig.agent_vip(i).is_some_and(|(_, b)| {
                b.iter().any(|&(p, w)| p == victim_port && w == 0)
                    || !b.iter().any(|&(p, _)| p == victim_port)
            })
        };
        (zero(0) && zero(1)).then_some(())
    });
    eprintln!(
        "drained on both agents {:?} after the task turned unhealthy",
        drained.elapsed()
    );
    let seen = rig.spread(&vip_addr, 10);
    assert!(
        !seen.contains_key(&victim),
        "a drained task got traffic: {seen:?}"
    );

    // Killed after 3 failures and replaced.
    let tasks = rig.wait_steady(2, 30);
    assert!(tasks.iter().all(|t| t.0 != victim), "{tasks:?}");
    let events_ok = json(&rig.api, "/v2/tasks")["tasks"]
        .as_array()
        .unwrap()
        .len()
        == 2;
    assert!(events_ok);

    // DELETE: tasks killed, the VIP gone from every agent, the name gone.
    let (status, body) = rig.api.request("DELETE", "/v2/apps/web", None).unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("VIP removed everywhere and tasks gone", 15, || {
        let gone = rig.agent_vip(0).is_none() && rig.agent_vip(1).is_none();
        let no_tasks = json(&rig.api, "/v2/tasks")["tasks"].as_array()?.is_empty();
        (gone && no_tasks).then_some(())
    });
    assert_eq!(dns_a(rig.dns, VIP_NAME).0, 3, "the VIP name is gone");
}

/// The control restarts mid-flight and loses nothing (same tasks, same VIP;
/// the agents keep serving meanwhile); an agent that crashes and restarts
/// re-adopts its tasks (none relaunched, checks resumed); an agent that goes
/// away has its task replaced on the other one.
pub fn control_restart_loses_nothing_and_lost_agents_are_replaced() {
    let mut rig = ControlRig::new("ctl-restart");
    let tcp_check = r#"{"protocol":"TCP","gracePeriodSeconds":20,"intervalSeconds":0.2}"#;
    let (status, body) = rig.post_app(&web_app(tcp_check));
    assert_eq!(status, 201, "{body}");
    let before = rig.wait_steady(2, 30);
    let (vip_addr, _) = wait_for("the VIP programmed", 10, || {
        rig.agent_vip(0).filter(|v| v.1.len() == 2)
    });

    // The control dies; the agents keep the VIP working.
    let (api, dns, data) = {
        let c = rig.control();
        (c.api, c.dns, c.data.clone())
    };
    rig.control.take();
    assert_eq!(
        rig.spread(&vip_addr, 24).len(),
        2,
        "VIP serves while the control is down"
    );
    let restarted = ControlProcess::start(&rig.dir, api, dns);
    assert!(data.exists());
    rig.control = Some(restarted);
    wait_for("agents back", 20, || {
        let agents = json(&rig.api, "/v1/agents");
        let list = agents["agents"].as_array()?;
        (list.len() == 2 && list.iter().all(|a| a["connected"] == true)).then_some(())
    });
    let after = rig.wait_steady(2, 20);
    let ids = |v: &[(String, String, u16, Option<bool>)]| {
        let mut ids: Vec<String> = v.iter().map(|t| t.0.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before), "the same tasks, none relaunched");
    let vips = json(&rig.api, "/v1/vips");
    assert_eq!(
        format!("{}:80", vips["vips"][0]["ip"].as_str().unwrap()),
        vip_addr,
        "the named VIP kept its address"
    );

    // Agent A crashes (SIGKILL: its tasks keep running) and comes back: it
    // re-adopts them, the control keeps them, their checks resume.
    let a_tasks: Vec<String> = after
        .iter()
        .filter(|t| t.1 == "agent-a")
        .map(|t| t.0.clone())
        .collect();
    if let Some(mut p) = rig.agents[0].process.take() {
        p.signal(libc::SIGKILL);
    }
    let agent_a_connected = |rig: &ControlRig| -> Option<bool> {
        let agents = json(&rig.api, "/v1/agents");
        let a = agents["agents"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == "agent-a")?
            .clone();
        a["connected"].as_bool()
    };
    // The control sees the stream close before the agent comes back (so
    // what follows is the new registration, not the old state).
    wait_for("the control saw agent A go", 10, || {
        (agent_a_connected(&rig) == Some(false)).then_some(())
    });
    let (args, api_a, log_a) = (
        rig.agents[0].args.clone(),
        rig.agents[0].api,
        rig.agents[0].log.clone(),
    );
    rig.agents[0].process = Some(AgentProcess::start(&args, api_a, log_a, "["));
    wait_for("agent A registered again", 20, || {
        (agent_a_connected(&rig) == Some(true)).then_some(())
    });
    let readopted = wait_for("re-adopted tasks healthy again", 20, || {
        let tasks = rig.tasks();
        let healthy = a_tasks
            .iter()
            .all(|id| tasks.iter().any(|t| &t.0 == id && t.3 == Some(true)));
        (healthy && tasks.len() == 2).then_some(tasks)
    });
    assert_eq!(ids(&readopted), ids(&before), "re-adopted, not relaunched");
    wait_for("agent A's VIP back to 2 healthy backends", 10, || {
        rig.agent_vip(0)
            .filter(|(_, b)| b.len() == 2 && b.iter().all(|&(_, w)| w == 1))
    });
    assert_eq!(
        rig.spread(&vip_addr, 24).len(),
        2,
        "both tasks answer after the agent restart"
    );

    // Agent B goes away (SIGTERM: it kills its tasks and closes its stream).
    let b_task = before
        .iter()
        .find(|t| t.1 == "agent-b")
        .expect("a task on B")
        .0
        .clone();
    if let Some(mut p) = rig.agents[1].process.take() {
        p.signal(libc::SIGTERM);
    }
    wait_for("agent B lost", 15, || {
        let agents = json(&rig.api, "/v1/agents");
        agents["agents"]
            .as_array()?
            .iter()
            .any(|a| a["id"] == "agent-b" && a["lost"] == true)
            .then_some(())
    });
    let replaced = rig.wait_steady(2, 20);
    assert!(
        replaced.iter().all(|t| t.1 == "agent-a" && t.0 != b_task),
        "{replaced:?}"
    );
    wait_for("agent A's VIP has the replacement", 10, || {
        rig.agent_vip(0).filter(|(_, b)| {
            b.len() == 2
                && b.iter()
                    .all(|&(p, w)| (31000..32000).contains(&p) && w == 1)
        })
    });
}

/// An app with autoscale labels is scaled by the connection rate its VIP
/// sees on the agents (marathon-lb-autoscale's rule), up under load and back
/// down when it stops.
pub fn control_autoscales_an_app_from_vip_connection_rates() {
    let rig = ControlRig::new("ctl-autoscale");
    let serve = task_binary("garrison-test-serve", "GARRISON_TEST_SERVE_BIN");
    let app = format!(
        r#"{{"id":"/web","cmd":"{} $PORT0 $MESOS_TASK_ID","instances":1,"cpus":0.1,"mem":32,
            "portDefinitions":[{{"port":0,"labels":{{"VIP_0":"/web:80"}}}}],
            "healthChecks":[{{"protocol":"TCP","gracePeriodSeconds":20,"intervalSeconds":0.2}}],
            "labels":{{"AUTOSCALE_TARGET_RPS":"5","AUTOSCALE_MIN":"1","AUTOSCALE_MAX":"2",
              "AUTOSCALE_INTERVAL":"0.5","AUTOSCALE_SAMPLES":"1","AUTOSCALE_INTERVALS":"2",
              "AUTOSCALE_COOLDOWN":"0","AUTOSCALE_THRESHOLD_INSTANCES":"1"}}}}"#,
        serve.display()
    );
    let (status, body) = rig.post_app(&app);
    assert_eq!(status, 201, "{body}");
    rig.wait_steady(1, 30);
    let (vip_addr, _) = wait_for("the VIP programmed on A", 10, || {
        rig.agent_vip(0).filter(|v| v.1.iter().any(|b| b.1 == 1))
    });
    // About 40 connections/s (8× the target per instance) until it scales.
    // The load stays on until both instances are healthy: without it the
    // rule scales back down about a second later, which in a slow guest came
    // before the second instance was up.
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not scaled up to 2 healthy instances within 60 s"
        );
        rig.spread(&vip_addr, 2);
        std::thread::sleep(Duration::from_millis(50));
        let app = json(&rig.api, "/v2/apps/web");
        if app["app"]["instances"] == 2 && app["app"]["tasksHealthy"] == 2 {
            break;
        }
    }
    // Quiet: back to the minimum.
    wait_for("scaled back to 1", 20, || {
        (json(&rig.api, "/v2/apps/web")["app"]["instances"] == 1).then_some(())
    });
    rig.wait_steady(1, 30);
}
