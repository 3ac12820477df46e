//! Reading VIPs out of a Mesos agent `/state` or master `/state` document, as
//! DC/OS Minuteman did:
//!
//! - tasks in `TASK_RUNNING` are backends; `TASK_KILLING` tasks are listed
//!   drained (weight 0) at once; a task whose latest status says
//!   `"healthy": false` is listed unhealthy (never chosen); other states are ignored;
//! - discovery port labels whose key contains `VIP` or `vip` with value
//!   `HOST:PORT`: an IPv4 host is an address VIP, anything else a named VIP of
//!   the task's framework (a leading `/` dropped). The backend is the agent's IP
//!   and the port's number, or the task's container IP when the port carries
//!   the label `network-scope: container`;
//! - legacy task labels `VIP_PORT<i>` (any case) = `tcp://IP:PORT` or
//!   `udp://IP:PORT`: backend at the agent's IP and the task's i-th port.
//!
//! The agent IP comes from the agent's `pid` (`slave(1)@IP:PORT`), or in a
//! master state from the `slaves` entry of the task's `slave_id`. A bad label
//! skips that label only, with a warning naming the task, the label and why.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use serde_json::Value;

use super::{SourceTable, SourceVip, VipRef};
use crate::vip::{Backend, Protocol};

/// Why a document is not a Mesos state at all (label problems are warnings).
#[derive(Debug, thiserror::Error)]
pub enum MesosStateError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a Mesos agent or master state: no \"frameworks\" list")]
    NoFrameworks,
}

/// VIPs found and what was skipped.
#[derive(Debug, Default)]
pub struct ParsedState {
    pub vips: SourceTable,
    pub warnings: Vec<String>,
}

/// `slave(1)@10.0.0.243:5051` → 10.0.0.243.
fn ip_of_pid(pid: &str) -> Option<IpAddr> {
    let (_, host_port) = pid.split_once('@')?;
    let (host, _) = host_port.rsplit_once(':')?;
    host.parse().ok()
}

fn labels(v: &Value) -> Vec<(&str, &str)> {
    // Mesos writes labels as {"labels":[{key,value}]} on ports and as a plain
    // [{key,value}] list on tasks.
    let list = v.get("labels").unwrap_or(v);
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    Some((
                        l.get("key")?.as_str()?,
                        l.get("value").and_then(Value::as_str).unwrap_or(""),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Expands a Mesos ports range string `"[31000-31002, 31005-31005]"`.
fn expand_ports(s: &str) -> Vec<u16> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        })
        .flat_map(|(a, b)| a..=b)
        .collect()
}

fn latest_status(task: &Value) -> Option<&Value> {
    task.get("statuses")?.as_array()?.iter().max_by(|a, b| {
        let t = |s: &Value| s.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
        t(a).total_cmp(&t(b))
    })
}

fn container_ip(task: &Value) -> Option<IpAddr> {
    let status = latest_status(task)?;
    status
        .get("container_status")?
        .get("network_infos")?
        .as_array()?
        .iter()
        .flat_map(|n| {
            n.get("ip_addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find_map(|a| a.get("ip_address")?.as_str()?.parse().ok())
}

/// A discovery-label VIP value `HOST:PORT`.
fn parse_vip_value(value: &str) -> Result<(Result<Ipv4Addr, String>, u16), String> {
    let (host, port) = value.rsplit_once(':').ok_or("not HOST:PORT")?;
    if host.is_empty() || host.contains(':') {
        return Err("not HOST:PORT".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0".into());
    }
    Ok((
        host.parse::<Ipv4Addr>()
            .map_err(|_| host.trim_start_matches('/').to_string()),
        port,
    ))
}

/// A legacy label value `tcp://IP:PORT` / `udp://IP:PORT`.
fn parse_legacy_value(value: &str) -> Result<(Protocol, SocketAddr), String> {
    let (protocol, rest) = if let Some(r) = value.strip_prefix("tcp://") {
        (Protocol::Tcp, r)
    } else if let Some(r) = value.strip_prefix("udp://") {
        (Protocol::Udp, r)
    } else {
        return Err("expected tcp://IP:PORT or udp://IP:PORT".into());
    };
    let addr: SocketAddr = rest
        .parse()
        .map_err(|_| format!("{rest:?} is not IPv4:PORT"))?;
    if !addr.is_ipv4() || addr.port() == 0 {
        return Err(format!("{rest:?} is not IPv4:PORT"));
    }
    Ok((protocol, addr))
}

/// A VIP's backends and the task labels that declare it.
#[derive(Default)]
struct Declared {
    backends: BTreeSet<Backend>,
    origin: BTreeSet<String>,
}

#[derive(Default)]
struct Collector {
    vips: BTreeMap<(VipRef, Protocol), Declared>,
    warnings: Vec<String>,
}

impl Collector {
    /// `origin` names the task and label, as errors about the VIP quote it.
    fn add(&mut self, vip: VipRef, protocol: Protocol, backend: Backend, origin: String) {
        let d = self.vips.entry((vip, protocol)).or_default();
        d.backends.insert(backend);
        d.origin.insert(origin);
    }
}

/// How errors name a task's label: `task web.1 (marathon): label VIP_0="…"`.
fn label_origin(t: &TaskCtx, key: &str, value: &str) -> String {
    format!("task {} ({}): label {key}={value:?}", t.id, t.framework)
}

struct TaskCtx<'a> {
    task: &'a Value,
    id: &'a str,
    framework: &'a str,
    agent_ip: Option<IpAddr>,
    weight: u32,
    healthy: bool,
}

fn discovery_vips(c: &mut Collector, t: &TaskCtx) {
    let ports = t
        .task
        .pointer("/discovery/ports/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for port in ports {
        let port_labels = port.get("labels").map(labels).unwrap_or_default();
        let number = port
            .get("number")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok());
        let protocol = match port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("tcp")
            .parse()
        {
            Ok(p) => p,
            Err(_) => continue,
        };
        let container = port_labels
            .iter()
            .any(|(k, v)| *k == "network-scope" && *v == "container");
        for (key, value) in port_labels
            .iter()
            .filter(|(k, _)| k.contains("VIP") || k.contains("vip"))
        {
            let warn = |c: &mut Collector, why: &str| {
                c.warnings
                    .push(format!("{}: {why}", label_origin(t, key, value)));
            };
            let (host, vip_port) = match parse_vip_value(value) {
                Ok(v) => v,
                Err(why) => {
                    warn(c, &why);
                    continue;
                }
            };
            let Some(number) = number.filter(|n| *n > 0) else {
                warn(c, "the discovery port has no number");
                continue;
            };
            let ip = if container {
                container_ip(t.task)
            } else {
                t.agent_ip
            };
            let Some(ip) = ip else {
                warn(
                    c,
                    if container {
                        "no container IP in the task's status"
                    } else {
                        "agent IP unknown"
                    },
                );
                continue;
            };
            let vip = match host {
                Ok(v4) => VipRef::Ip {
                    addr: SocketAddr::new(IpAddr::V4(v4), vip_port),
                    name: None,
                },
                Err(name) => VipRef::Named {
                    name,
                    framework: t.framework.to_string(),
                    port: vip_port,
                },
            };
            let backend = Backend {
                addr: SocketAddr::new(ip, number),
                weight: t.weight,
                healthy: t.healthy,
            };
            c.add(vip, protocol, backend, label_origin(t, key, value));
        }
    }
}

fn legacy_vips(c: &mut Collector, t: &TaskCtx) {
    let task_labels = t.task.get("labels").map(labels).unwrap_or_default();
    let ports = t
        .task
        .pointer("/resources/ports")
        .and_then(Value::as_str)
        .map(expand_ports)
        .unwrap_or_default();
    for (key, value) in task_labels {
        let Some(index) = key
            .to_ascii_uppercase()
            .strip_prefix("VIP_PORT")
            .map(str::to_string)
        else {
            continue;
        };
        let origin = label_origin(t, key, value);
        let mut warn = |why: String| c.warnings.push(format!("{origin}: {why}"));
        let Ok(index) = index.parse::<usize>() else {
            warn(format!("{key:?} does not end in a port index"));
            continue;
        };
        let (protocol, vip) = match parse_legacy_value(value) {
            Ok(v) => v,
            Err(why) => {
                warn(why);
                continue;
            }
        };
        let Some(&port) = ports.get(index) else {
            warn(format!("the task has no port number {index}"));
            continue;
        };
        let Some(ip) = t.agent_ip else {
            warn("agent IP unknown".into());
            continue;
        };
        c.add(
            VipRef::Ip {
                addr: vip,
                name: None,
            },
            protocol,
            Backend {
                addr: SocketAddr::new(ip, port),
                weight: t.weight,
                healthy: t.healthy,
            },
            origin,
        );
    }
}

/// Parses a Mesos agent or master state document.
pub fn parse_state(text: &str) -> Result<ParsedState, MesosStateError> {
    let doc: Value = serde_json::from_str(text)?;
    let frameworks = doc
        .get("frameworks")
        .and_then(Value::as_array)
        .ok_or(MesosStateError::NoFrameworks)?;
    let own_ip = doc.get("pid").and_then(Value::as_str).and_then(ip_of_pid);
    let agents: BTreeMap<&str, IpAddr> = doc
        .get("slaves")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s.get("id")?.as_str()?;
            let ip = s
                .get("pid")
                .and_then(Value::as_str)
                .and_then(ip_of_pid)
                .or_else(|| s.get("hostname")?.as_str()?.parse().ok())?;
            Some((id, ip))
        })
        .collect();
    let is_master = doc.get("slaves").is_some();
    let mut c = Collector::default();
    for fw in frameworks {
        let framework = fw.get("name").and_then(Value::as_str).unwrap_or("");
        let executor_tasks = fw
            .get("executors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|e| {
                e.get("tasks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            });
        let tasks = fw
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(executor_tasks);
        for task in tasks {
            let (weight, healthy) = match task.get("state").and_then(Value::as_str) {
                Some("TASK_RUNNING") => (1, true),
                Some("TASK_KILLING") => (0, true),
                _ => continue,
            };
            let healthy = healthy
                && latest_status(task)
                    .and_then(|s| s.get("healthy"))
                    .and_then(Value::as_bool)
                    != Some(false);
            let agent_ip = if is_master {
                task.get("slave_id")
                    .and_then(Value::as_str)
                    .and_then(|id| agents.get(id).copied())
            } else {
                own_ip
            };
            let ctx = TaskCtx {
                task,
                id: task.get("id").and_then(Value::as_str).unwrap_or("?"),
                framework,
                agent_ip,
                weight,
                healthy,
            };
            discovery_vips(&mut c, &ctx);
            legacy_vips(&mut c, &ctx);
        }
    }
    let vips = c
        .vips
        .into_iter()
        .map(|((vip, protocol), d)| SourceVip {
            vip,
            protocol,
            backends: dedupe(d.backends),
            origin: d.origin.into_iter().collect(),
        })
        .collect();
    Ok(ParsedState {
        vips,
        warnings: c.warnings,
    })
}

/// One entry per backend address: a backend listed twice (say running and
/// killing) keeps its most conservative weight and health.
fn dedupe(backends: BTreeSet<Backend>) -> Vec<Backend> {
    let mut by_addr: BTreeMap<SocketAddr, Backend> = BTreeMap::new();
    for b in backends {
        by_addr
            .entry(b.addr)
            .and_modify(|e| {
                e.weight = e.weight.min(b.weight);
                e.healthy &= b.healthy;
            })
            .or_insert(b);
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_expand() {
        assert_eq!(
            expand_ports("[31000-31002, 31005-31005]"),
            vec![31000, 31001, 31002, 31005]
        );
        assert!(expand_ports("[]").is_empty());
    }

    #[test]
    fn vip_values() {
        assert_eq!(
            parse_vip_value("1.2.3.4:5000").unwrap(),
            (Ok("1.2.3.4".parse().unwrap()), 5000)
        );
        assert_eq!(
            parse_vip_value("/merp:80").unwrap(),
            (Err("merp".into()), 80)
        );
        assert!(parse_vip_value("missing-port").is_err());
        assert!(parse_vip_value("invalid-port::1234").is_err());
        assert!(parse_vip_value("x:99999").is_err());
        assert!(parse_legacy_value("tcp://1.2.3.4:5000").is_ok());
        assert!(parse_legacy_value("http://1.2.3.4:5000").is_err());
        assert!(parse_legacy_value("tcp://name:5000").is_err());
    }

    #[test]
    fn each_vip_names_the_task_labels_that_declare_it() {
        let task = |id: &str, port: u16, vip: &str| {
            format!(
                r#"{{"id":"{id}","state":"TASK_RUNNING","discovery":{{"ports":{{"ports":[{{"number":{port},"protocol":"tcp","labels":{{"labels":[{{"key":"VIP_0","value":"{vip}"}}]}}}}]}}}}}}"#
            )
        };
        let doc = format!(
            r#"{{"pid":"slave(1)@10.0.0.1:5051","frameworks":[{{"name":"marathon","tasks":[{},{},{}]}}]}}"#,
            task("bad.1", 31000, "127.0.0.1:5051"),
            task("web.1", 31001, "11.2.3.4:80"),
            task("web.2", 31002, "11.2.3.4:80"),
        );
        let parsed = parse_state(&doc).unwrap();
        let origin = |addr: &str| {
            parsed
                .vips
                .iter()
                .find(|v| {
                    v.vip
                        == VipRef::Ip {
                            addr: addr.parse().unwrap(),
                            name: None,
                        }
                })
                .unwrap()
                .origin
                .clone()
        };
        assert_eq!(
            origin("127.0.0.1:5051"),
            ["task bad.1 (marathon): label VIP_0=\"127.0.0.1:5051\""]
        );
        assert_eq!(origin("11.2.3.4:80").len(), 2, "both tasks named");
    }

    #[test]
    fn not_a_state() {
        assert!(matches!(parse_state("{"), Err(MesosStateError::Json(_))));
        assert!(matches!(
            parse_state("{\"x\":1}"),
            Err(MesosStateError::NoFrameworks)
        ));
    }
}
