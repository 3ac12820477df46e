//! Mesos-DNS record generation from a master state (pure).
//!
//! The names, for domain `mesos`, framework `marathon`, task `web`:
//! - `web.marathon.mesos.` A/AAAA → the task's first IPv4/IPv6 (from the IP
//!   sources in order), `web.marathon.slave.mesos.` → the agent's address;
//!   the same under the canonical `web-<hash>-<agent>.marathon.mesos.` where
//!   hash is the first 5 z-base-32 characters of SHA-1(task id) and agent is
//!   the last `-` field of the agent id.
//! - SRV `_web._tcp.marathon.slave.mesos.` (and `_udp`) → the canonical slave
//!   name at each resource port; tasks without DiscoveryInfo also get them
//!   without `.slave`. DiscoveryInfo ports give `_web._<proto>.marathon.mesos.`
//!   and, when named, `_<port name>._web._<proto>.marathon.mesos.` → canonical
//!   task name at the published port.
//! - `marathon.mesos.` → the scheduler's address, `_framework._tcp.marathon.mesos.`;
//!   `slave.mesos.` → every agent, `_slave._tcp.mesos.`; `leader.mesos.`,
//!   `master.mesos.`, `masterN.mesos.`, `_leader._tcp/_udp.mesos.`; the name
//!   server's own name → the listener address.
//!
//! Only TASK_RUNNING tasks on a known agent get names. Differences from
//! Mesos-DNS, on purpose: the "legacy" records under a task's raw (unsanitised)
//! DiscoveryInfo name are not made (they are not valid host names), and an
//! agent whose PID host is not an IP address gets no A record holding a host
//! name (Mesos-DNS issue 509).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use sha1::{Digest, Sha1};

use super::labels::{LabelRule, domain_fragment, label};
use super::state::{IpSource, MasterState, Task, first_v4_and_v6, split_host_port};

/// A name → values map; values kept sorted and unique.
pub type RecordMap = BTreeMap<String, BTreeSet<String>>;

/// The generated records, keyed by fully-qualified name (trailing dot).
/// SRV values are `target:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    #[serde(rename = "A")]
    pub a: RecordMap,
    #[serde(rename = "AAAA")]
    pub aaaa: RecordMap,
    #[serde(rename = "SRV")]
    pub srv: RecordMap,
}

impl RecordSet {
    /// Adds an address record (A or AAAA by family); false if already there.
    pub fn add_ip(&mut self, name: &str, ip: IpAddr) -> bool {
        let map = if ip.is_ipv4() {
            &mut self.a
        } else {
            &mut self.aaaa
        };
        insert(map, name, ip.to_string())
    }

    /// Adds an SRV record to `target:port`.
    pub fn add_srv(&mut self, name: &str, target: &str, port: u16) -> bool {
        insert(&mut self.srv, name, format!("{target}:{port}"))
    }

    /// The addresses of `name` (A then AAAA).
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        [&self.a, &self.aaaa]
            .into_iter()
            .filter_map(|m| m.get(name))
            .flatten()
            .filter_map(|v| v.parse().ok())
            .collect()
    }

    /// Number of values of every kind.
    pub fn len(&self) -> usize {
        [&self.a, &self.aaaa, &self.srv]
            .iter()
            .flat_map(|m| m.values())
            .map(BTreeSet::len)
            .sum()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn insert(map: &mut RecordMap, name: &str, value: String) -> bool {
    map.entry(name.to_string()).or_default().insert(value)
}

/// How records are made.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// The zone, without dots at either end (`mesos`).
    pub domain: String,
    /// Where task addresses come from, highest priority first.
    pub ip_sources: Vec<IpSource>,
    pub label_rule: LabelRule,
    /// Fallback masters (`ip:port`), in the order `masterN` numbers them.
    pub masters: Vec<String>,
    /// The leader (`id@ip:port`); `None` takes the state's `leader`.
    pub leader: Option<String>,
    /// The name server's own name (fully qualified) and listen address.
    pub name_server: Option<(String, IpAddr)>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            domain: "mesos".to_string(),
            ip_sources: super::state::DEFAULT_IP_SOURCES.to_vec(),
            label_rule: LabelRule::Rfc1123,
            masters: Vec::new(),
            leader: None,
            name_server: None,
        }
    }
}

/// The first 5 z-base-32 characters of SHA-1(`s`): the hash in canonical names.
pub fn task_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let digest = Sha1::digest(s.as_bytes());
    // 5 characters × 5 bits = the first 25 bits.
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (0..5)
        .map(|i| ALPHABET[((bits >> (27 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// The last `-` field of an agent id, lowercased (`…-2410-S0` → `s0`).
pub fn agent_id_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Builds every record for `state`. `resolve` turns a host name that is not
/// an IP literal into addresses (the system resolver in the CLI, a fixed
/// table in tests).
pub fn generate(
    state: &MasterState,
    config: &GeneratorConfig,
    resolve: &dyn Fn(&str) -> Vec<IpAddr>,
) -> RecordSet {
    let mut records = RecordSet::default();
    let host_ips = |host: &str| -> Vec<IpAddr> {
        match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => first_v4_and_v6(&resolve(host)),
        }
    };
    let tail = format!(".{}.", config.domain);

    for framework in &state.frameworks {
        let (host, port) = framework.host_port();
        let ips = host_ips(host);
        if ips.is_empty() {
            continue;
        }
        let name = format!(
            "{}{tail}",
            domain_fragment(&framework.name, config.label_rule)
        );
        for ip in ips {
            records.add_ip(&name, ip);
        }
        if let Some(port) = port {
            records.add_srv(&format!("_framework._tcp.{name}"), &name, port);
        }
    }

    let mut agent_ips: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let slave_name = format!("slave{tail}");
    for agent in &state.slaves {
        let Some(pid) = &agent.pid else { continue };
        let ips = host_ips(&pid.host);
        for ip in &ips {
            records.add_ip(&slave_name, *ip);
        }
        if !ips.is_empty() {
            records.add_srv(&format!("_slave._tcp{tail}"), &slave_name, pid.port);
        }
        agent_ips.insert(&agent.id, ips);
    }

    if let Some((name, ip)) = &config.name_server {
        records.add_ip(name, *ip);
    }
    let leader = config.leader.as_deref().unwrap_or(&state.leader);
    master_records(&mut records, &config.domain, &config.masters, leader);

    for framework in &state.frameworks {
        let fname = domain_fragment(&framework.name, config.label_rule);
        for task in &framework.tasks {
            let Some(ips) = agent_ips.get(task.slave_id.as_str()) else {
                continue;
            };
            if task.state != "TASK_RUNNING" {
                continue;
            }
            task_records(&mut records, task, &fname, ips, config);
        }
    }
    records
}

/// `leader.`, `master.`, `masterN.` and `_leader._tcp/_udp.` records. The
/// masters are numbered in the order given; a leader missing from the list
/// gets the next number.
fn master_records(records: &mut RecordSet, domain: &str, masters: &[String], leader: &str) {
    let Some((_, leader_address)) = leader.split_once('@') else {
        return;
    };
    let Ok((leader_host, leader_port)) = split_host_port(leader_address) else {
        return;
    };
    let Ok(leader_ip) = leader_host.parse::<IpAddr>() else {
        return;
    };
    let leader_name = format!("leader.{domain}.");
    let all = format!("master.{domain}.");
    records.add_ip(&leader_name, leader_ip);
    records.add_ip(&all, leader_ip);
    for proto in ["tcp", "udp"] {
        records.add_srv(
            &format!("_leader._{proto}.{domain}."),
            &leader_name,
            leader_port,
        );
    }

    let mut index = 0;
    let mut leader_numbered = false;
    for master in masters {
        let Some(ip) = split_host_port(master)
            .ok()
            .and_then(|(h, _)| h.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let is_leader = master == leader_address;
        if !is_leader && !records.add_ip(&all, ip) {
            continue; // a duplicate master
        }
        if is_leader && leader_numbered {
            continue;
        }
        records.add_ip(&format!("master{index}.{domain}."), ip);
        index += 1;
        leader_numbered |= is_leader;
    }
    if !leader_numbered {
        records.add_ip(&format!("master{index}.{domain}."), leader_ip);
    }
}

fn task_records(
    records: &mut RecordSet,
    task: &Task,
    fname: &str,
    agent_ips: &[IpAddr],
    config: &GeneratorConfig,
) {
    let rule = config.label_rule;
    let tail = format!(".{}.", config.domain);
    let task_name = match &task.discovery {
        Some(d) if !d.name.is_empty() => label(&d.name, rule),
        _ => label(&task.name, rule),
    };
    let canonical = format!(
        "{task_name}-{}-{}.{fname}",
        task_hash(&task.id),
        agent_id_tail(&task.slave_id)
    );
    let short = format!("{task_name}.{fname}");

    for ip in first_v4_and_v6(&task.ips(&config.ip_sources, agent_ips)) {
        records.add_ip(&format!("{short}{tail}"), ip);
        records.add_ip(&format!("{canonical}{tail}"), ip);
    }
    for ip in first_v4_and_v6(agent_ips) {
        records.add_ip(&format!("{short}.slave{tail}"), ip);
        records.add_ip(&format!("{canonical}.slave{tail}"), ip);
    }

    // Resource ports: SRV under `.slave`, and bare too unless DiscoveryInfo
    // publishes the task's ports itself.
    let slave_target = format!("{canonical}.slave{tail}");
    let subdomains: &[&str] = if task.has_discovery() {
        &[".slave"]
    } else {
        &[".slave", ""]
    };
    for port in task.ports() {
        for proto in ["tcp", "udp"] {
            for sub in subdomains {
                let name = format!("_{task_name}._{proto}.{fname}{sub}{tail}");
                records.add_srv(&name, &slave_target, port);
            }
        }
    }

    let Some(discovery) = task.discovery.as_ref().filter(|d| !d.name.is_empty()) else {
        return;
    };
    let target = format!("{canonical}{tail}");
    for port in &discovery.ports.ports {
        let proto = label(&port.protocol.to_ascii_lowercase(), rule);
        let protos: Vec<&str> = if proto.is_empty() {
            vec!["tcp", "udp"]
        } else {
            vec![proto.as_str()]
        };
        let port_name = label(&port.name, rule);
        for proto in protos {
            let base = format!("_{task_name}._{proto}.{fname}{tail}");
            records.add_srv(&base, &target, port.number);
            if !port_name.is_empty() {
                records.add_srv(&format!("_{port_name}.{base}"), &target, port.number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_hash_matches_mesos_dns() {
        // Mesos-DNS's own expectation: hashString("test") == "iffe9".
        assert_eq!(task_hash("test"), "iffe9");
        assert_eq!(
            task_hash("liquor-store.b8db9f73-562f-11e4-a088-c20493233aa5"),
            "4dfjd"
        );
    }

    #[test]
    fn agent_tail_is_the_last_field_lowercased() {
        assert_eq!(agent_id_tail("20140803-125133-3041283216-5050-2410-0"), "0");
        assert_eq!(agent_id_tail("a8f2-S12"), "s12");
    }

    fn rr(records: &RecordSet) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (kind, map) in [
            ("A", &records.a),
            ("AAAA", &records.aaaa),
            ("SRV", &records.srv),
        ] {
            for (name, values) in map {
                for v in values {
                    out.push((format!("{kind} {name}"), v.clone()));
                }
            }
        }
        out
    }

    // Mesos-DNS's TestMasterRecord table (records/generator_test.go).
    #[test]
    fn master_records_follow_mesos_dns() {
        type Case<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], "", &[]),
            (&[], "@", &[]),
            (&[], "1@", &[]),
            (&[], "@2", &[]),
            (&[], "3@4", &[]),
            (
                &[],
                "5@0.0.0.6:7",
                &[
                    ("A leader.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.6"),
                    ("A master0.foo.com.", "0.0.0.6"),
                ],
            ),
            (
                &[],
                "5@[2001:db8::1]:7",
                &[
                    ("AAAA leader.foo.com.", "2001:db8::1"),
                    ("AAAA master.foo.com.", "2001:db8::1"),
                    ("AAAA master0.foo.com.", "2001:db8::1"),
                ],
            ),
            (
                &["0.0.0.8:9"],
                "5@0.0.0.6:7",
                &[
                    ("A leader.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.8"),
                    ("A master1.foo.com.", "0.0.0.6"),
                    ("A master0.foo.com.", "0.0.0.8"),
                ],
            ),
            (
                &["0.0.0.8:9", "0.0.0.8:9"],
                "5@0.0.0.6:7",
                &[
                    ("A leader.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.8"),
                    ("A master1.foo.com.", "0.0.0.6"),
                    ("A master0.foo.com.", "0.0.0.8"),
                ],
            ),
            (
                &["0.0.0.8:9", "0.0.0.6:7", "0.0.0.6:7"],
                "5@0.0.0.6:7",
                &[
                    ("A leader.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.8"),
                    ("A master1.foo.com.", "0.0.0.6"),
                    ("A master0.foo.com.", "0.0.0.8"),
                ],
            ),
            (
                &["0.0.0.8:9", "0.0.0.6:7", "[2001:db8::1]:0"],
                "5@0.0.0.6:7",
                &[
                    ("A leader.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.6"),
                    ("A master.foo.com.", "0.0.0.8"),
                    ("AAAA master.foo.com.", "2001:db8::1"),
                    ("A master0.foo.com.", "0.0.0.8"),
                    ("A master1.foo.com.", "0.0.0.6"),
                    ("AAAA master2.foo.com.", "2001:db8::1"),
                ],
            ),
        ];
        for (i, (masters, leader, expect)) in cases.iter().enumerate() {
            let mut records = RecordSet::default();
            let masters: Vec<String> = masters.iter().map(|m| m.to_string()).collect();
            master_records(&mut records, "foo.com", &masters, leader);
            let mut want: Vec<(String, String)> = expect
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            if !expect.is_empty() {
                for proto in ["tcp", "udp"] {
                    want.push((
                        format!("SRV _leader._{proto}.foo.com."),
                        "leader.foo.com.:7".into(),
                    ));
                }
            }
            want.sort();
            let mut got = rr(&records);
            got.sort();
            assert_eq!(got, want, "case {}", i + 1);
        }
    }
}
